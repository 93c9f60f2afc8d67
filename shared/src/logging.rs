//! One JSON line per request on stdout, which CloudWatch and Vercel both ingest.
//!
//! Only identifiers, statuses and timings are logged: never a secret, a signature or a body.

use serde::Serialize;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a handler learned about a request. The adapter makes one per request, lends it to
/// the handler, and writes it in the request's log line: the one path these fields take.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogFields {
    /// The delivery's `webhook-id` (only once verified).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
    /// The prediction or training id from the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicate_id: Option<String>,
    /// The job status the delivery carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `applied`, `duplicate`, `stale`, `ignored`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The error message answered, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Extra detail for operators (an upstream error kind, never a body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Serialize)]
struct Line<'a> {
    ts_ms: u128,
    level: &'static str,
    request_id: &'a str,
    route: &'a str,
    method: &'a str,
    http_status: u16,
    duration_ms: f64,
    #[serde(flatten)]
    fields: &'a LogFields,
}

/// Describes a finished request for [`request`].
#[derive(Debug)]
pub struct RequestSummary<'a> {
    /// The `x-request-id` answered.
    pub request_id: &'a str,
    /// The route's name (`train`, `health`, ...).
    pub route: &'a str,
    /// The HTTP method.
    pub method: &'a str,
    /// The status answered.
    pub http_status: u16,
    /// Time spent, in milliseconds.
    pub duration_ms: f64,
}

/// Writes the request's log line.
pub fn request(summary: &RequestSummary<'_>, fields: &LogFields) {
    let level = match summary.http_status {
        500.. => "error",
        400.. => "warn",
        _ => "info",
    };
    let line = Line {
        ts_ms: now_ms(),
        level,
        request_id: summary.request_id,
        route: summary.route,
        method: summary.method,
        http_status: summary.http_status,
        duration_ms: (summary.duration_ms * 1000.0).round() / 1000.0,
        fields,
    };
    emit(&line);
}

/// Writes a line about something that is not a request (start-up problems).
pub fn event(level: &'static str, route: &str, message: &str) {
    #[derive(Serialize)]
    struct Event<'a> {
        ts_ms: u128,
        level: &'static str,
        route: &'a str,
        message: &'a str,
    }
    emit(&Event {
        ts_ms: now_ms(),
        level,
        route,
        message,
    });
}

fn emit(value: &impl Serialize) {
    if let Ok(mut text) = serde_json::to_vec(value) {
        text.push(b'\n');
        // A closed stdout must not take the request down with it.
        let _ = std::io::stdout().lock().write_all(&text);
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}
