//! One JSON line per request on stdout, which CloudWatch and Vercel both ingest. Every line
//! has an RFC 3339 `timestamp` and a `level` (`info`, `warn`, `error`), so Lambda's JSON log
//! format can filter by level; the runtimes' own warnings and errors (an event Lambda's
//! runtime cannot read, a Runtime API failure) are written the same way ([`RuntimeLog`]).
//!
//! Only identifiers, statuses and timings are logged: never a secret, a signature or a body.

use serde::Serialize;
use std::io::Write as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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
    timestamp: String,
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
        timestamp: now(),
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
        timestamp: String,
        level: &'static str,
        route: &'a str,
        message: &'a str,
    }
    emit(&Event {
        timestamp: now(),
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

/// Now, in RFC 3339 (UTC, to the millisecond).
fn now() -> String {
    let now = OffsetDateTime::now_utc();
    let now = now.replace_millisecond(now.millisecond()).unwrap_or(now);
    now.format(&Rfc3339).unwrap_or_default()
}

/// A `tracing` subscriber for what the platform runtimes report themselves (they log
/// through `tracing`; without a subscriber their errors would vanish): each warning or
/// error becomes one line of this module's shape. Only the event's message is written: its
/// fields can quote the event the runtime failed to read.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeLog;

impl RuntimeLog {
    /// Installs the subscriber for the whole process (once; later calls change nothing).
    pub fn install() {
        let _ = tracing::subscriber::set_global_default(RuntimeLog);
    }
}

impl tracing::Subscriber for RuntimeLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let level = if *event.metadata().level() == tracing::Level::ERROR {
            "error"
        } else {
            "warn"
        };
        self::event(level, "runtime", message.0.trim_matches('"'));
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Collects an event's `message` field.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}
