//! Replicate's prediction and training objects, as they arrive in a webhook body.
//!
//! Parsing turns the raw body into a [`Delivery`] whose fields are known to be usable, so
//! the rest of the code never re-checks them.

use crate::outputs::{file_references, may_reference_files};
use crate::signature::Verified;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::fmt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A job's status, in Replicate's vocabulary plus `pending` (created, nothing heard yet).
/// It crosses the PostgREST boundary as this enum (serde), both ways; the order of
/// statuses and what each one does to a job are the database's rules
/// (`supabase/migrations/`), mirrored here only where the code must act before the
/// database is asked (a `completed` route ignoring non-terminal events, a copy skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created by the app; Replicate has not reported yet. Never sent by Replicate.
    Pending,
    /// Replicate accepted the job.
    Starting,
    /// Running; output and logs may grow.
    Processing,
    /// Finished with output.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Canceled by the user.
    Canceled,
    /// Its deadline passed before it ran.
    Aborted,
}

impl Status {
    /// Every status, in rank order.
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Starting,
        Status::Processing,
        Status::Succeeded,
        Status::Failed,
        Status::Canceled,
        Status::Aborted,
    ];

    /// The name Replicate and the database use.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Starting => "starting",
            Status::Processing => "processing",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
            Status::Aborted => "aborted",
        }
    }

    /// Parses a status name.
    pub fn parse(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Progress order: pending < starting < processing < every terminal status.
    pub fn rank(self) -> u8 {
        match self {
            Status::Pending => 0,
            Status::Starting => 1,
            Status::Processing => 2,
            Status::Succeeded | Status::Failed | Status::Canceled | Status::Aborted => 3,
        }
    }

    /// After a terminal status nothing changes.
    pub fn is_terminal(self) -> bool {
        self.rank() == 3
    }

    /// Failed, canceled and aborted jobs give their credits back.
    pub fn refunds(self) -> bool {
        matches!(self, Status::Failed | Status::Canceled | Status::Aborted)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified webhook body, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Replicate's prediction or training id.
    pub id: String,
    /// The status it reports.
    pub status: Status,
    /// Replicate's output, as sent.
    pub output: Output,
    /// The error message of a failed job.
    pub error: Option<String>,
    /// `metrics`, kept whole (Replicate adds keys over time).
    pub metrics: Option<Value>,
    /// When the job started running.
    pub started_at: Option<OffsetDateTime>,
    /// When the job finished.
    pub completed_at: Option<OffsetDateTime>,
    /// Whether Replicate has already deleted the job's files.
    pub data_removed: bool,
}

/// Why a body is not a usable prediction or training object.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DeliveryError {
    /// Not JSON, or not an object.
    #[error("body is not a JSON object")]
    NotJson,
    /// A required field is absent, null or empty.
    #[error("body has no `{0}`")]
    Missing(&'static str),
    /// A field has the wrong type.
    #[error("`{0}` has the wrong type")]
    WrongType(&'static str),
    /// `status` is not one Replicate sends.
    #[error("unknown status")]
    UnknownStatus,
    /// `id` is not what Replicate's ids look like; it would reach storage keys and logs.
    #[error("`id` must be 1 to 64 ASCII letters, digits, `-` or `_`")]
    BadId,
    /// `output` could not be read as JSON.
    #[error("`output` is not readable JSON")]
    BadOutput,
    /// A timestamp is not RFC 3339.
    #[error("`{0}` is not an RFC 3339 timestamp")]
    BadTimestamp(&'static str),
}

// The wire shape: every field optional and loosely typed, so each problem gets its own
// message instead of serde's.
#[derive(Deserialize)]
struct Wire {
    id: Option<Value>,
    status: Option<Value>,
    #[serde(default)]
    output: Option<Box<RawValue>>,
    #[serde(default)]
    error: Value,
    #[serde(default)]
    metrics: Value,
    #[serde(default)]
    started_at: Value,
    #[serde(default)]
    completed_at: Value,
    #[serde(default)]
    data_removed: Value,
}

/// A job object as Replicate's API answered it (reconcile): trusted like a verified
/// delivery, since it came over TLS from Replicate with our token. Only
/// [`crate::replicate_api`] makes one.
#[derive(Clone)]
pub struct ApiAnswer(pub(crate) bytes::Bytes);

impl fmt::Debug for ApiAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiAnswer({} bytes)", self.0.len())
    }
}

impl Delivery {
    /// Parses a verified webhook body.
    pub fn parse(verified: &Verified<'_>) -> Result<Delivery, DeliveryError> {
        Delivery::read(verified.body())
    }

    /// Parses what Replicate's API answered about a job.
    pub fn from_api(answer: &ApiAnswer) -> Result<Delivery, DeliveryError> {
        Delivery::read(&answer.0)
    }

    fn read(body: &[u8]) -> Result<Delivery, DeliveryError> {
        let wire: Wire = serde_json::from_slice(body).map_err(|_| DeliveryError::NotJson)?;
        let id = match wire.id {
            Some(Value::String(s)) if is_replicate_id(&s) => s,
            Some(Value::String(s)) if !s.trim().is_empty() => return Err(DeliveryError::BadId),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                return Err(DeliveryError::Missing("id"));
            }
            Some(_) => return Err(DeliveryError::WrongType("id")),
        };
        let status = match wire.status {
            Some(Value::String(s)) => Status::parse(&s)
                // `pending` is ours; Replicate never reports it.
                .filter(|s| *s != Status::Pending)
                .ok_or(DeliveryError::UnknownStatus)?,
            None | Some(Value::Null) => return Err(DeliveryError::Missing("status")),
            Some(_) => return Err(DeliveryError::WrongType("status")),
        };
        let error = match wire.error {
            Value::Null => None,
            Value::String(s) => Some(without_nul(s)),
            // Some models report structured errors; keep them readable.
            mut other => {
                strip_nul(&mut other);
                Some(other.to_string())
            }
        };
        let metrics = match wire.metrics {
            Value::Null => None,
            mut m @ Value::Object(_) => {
                strip_nul(&mut m);
                Some(m)
            }
            _ => return Err(DeliveryError::WrongType("metrics")),
        };
        Ok(Delivery {
            id,
            status,
            output: Output::read(wire.output)?,
            error,
            metrics,
            started_at: timestamp(wire.started_at, "started_at")?,
            completed_at: timestamp(wire.completed_at, "completed_at")?,
            data_removed: matches!(wire.data_removed, Value::Bool(true)),
        })
    }
}

/// Replicate's `output`, kept as the JSON text it arrived in, with its file references
/// found once, when it is parsed.
///
/// Most deliveries only pass their output on to the database, and a language model's token
/// list can be tens of kilobytes of short strings: building it into a tree cost several
/// times the rest of the parse (docs/performance.md). So the tree is built only when the
/// output is an object (a training's `version` and `weights`) or its text could hold a file.
#[derive(Debug, Clone, Default)]
pub struct Output {
    raw: Option<Box<RawValue>>,
    tree: Option<Value>,
    files: Vec<String>,
}

impl Output {
    /// No output (JSON null).
    pub fn none() -> Output {
        Output::default()
    }

    fn read(raw: Option<Box<RawValue>>) -> Result<Output, DeliveryError> {
        let raw = match raw {
            // PostgreSQL's jsonb cannot hold U+0000 (JSON spells it `\u0000`): such an
            // output is rebuilt without it, the rest unchanged. Rare, so the common path
            // stays a scan of the text.
            Some(r) if r.get().contains("\\u0000") => {
                let mut tree: Value =
                    serde_json::from_str(r.get()).map_err(|_| DeliveryError::BadOutput)?;
                strip_nul(&mut tree);
                Some(serde_json::value::to_raw_value(&tree).map_err(|_| DeliveryError::BadOutput)?)
            }
            other => other,
        };
        let tree: Option<Value> = match &raw {
            Some(r) if r.get().starts_with('{') || may_reference_files(r.get()) => {
                Some(serde_json::from_str(r.get()).map_err(|_| DeliveryError::BadOutput)?)
            }
            _ => None,
        };
        let files = tree
            .as_ref()
            .map(|t| file_references(t).into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        Ok(Output { raw, tree, files })
    }

    /// The JSON text as received; `None` when the output is null or absent.
    pub fn raw(&self) -> Option<&RawValue> {
        self.raw.as_deref()
    }

    /// The output as a tree, when it is an object or could hold files; `None` otherwise.
    pub fn tree(&self) -> Option<&Value> {
        self.tree.as_ref()
    }

    /// Every file reference in the output, in document order (found once, at parse time).
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// A string field of an object output, such as a finished training's `version`.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.tree.as_ref()?.get(key)?.as_str()
    }
}

impl PartialEq for Output {
    fn eq(&self, other: &Output) -> bool {
        self.raw().map(RawValue::get) == other.raw().map(RawValue::get)
    }
}

/// Replicate's ids are lowercase letters and digits; this allows a little more, and nothing
/// that could change the meaning of an S3 key or a log line.
fn is_replicate_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `s` without U+0000, which PostgreSQL's `text` and `jsonb` cannot store.
fn without_nul(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "")
    } else {
        s
    }
}

/// Removes U+0000 from every string (and object key) in `value`.
fn strip_nul(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', ""),
        Value::Array(items) => items.iter_mut().for_each(strip_nul),
        Value::Object(map) if map.keys().any(|k| k.contains('\0')) => {
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                strip_nul(&mut item);
                map.insert(without_nul(key), item);
            }
        }
        Value::Object(map) => map.values_mut().for_each(strip_nul),
        _ => {}
    }
}

fn timestamp(value: Value, name: &'static str) -> Result<Option<OffsetDateTime>, DeliveryError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => OffsetDateTime::parse(&s, &Rfc3339)
            .map(Some)
            .map_err(|_| DeliveryError::BadTimestamp(name)),
        _ => Err(DeliveryError::BadTimestamp(name)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Delivery, DeliveryError> {
        Delivery::read(v.to_string().as_bytes())
    }

    #[test]
    fn parses_a_realistic_prediction() {
        let d = parse(json!({
            "id": "ufawqhfynnddngldkgtslldrkq",
            "model": "stability-ai/sdxl",
            "version": "hidden",
            "status": "succeeded",
            "output": ["https://replicate.delivery/xezq/abc/out-0.png"],
            "error": null,
            "logs": "",
            "metrics": {"predict_time": 2.1, "total_time": 2.4, "image_count": 1},
            "created_at": "2024-05-01T10:00:00.127Z",
            "started_at": "2024-05-01T10:00:01.383588891Z",
            "completed_at": "2024-05-01T10:00:03Z",
            "urls": {"get": "https://api.replicate.com/v1/predictions/u", "cancel": "c"}
        }))
        .unwrap();
        assert_eq!(d.id, "ufawqhfynnddngldkgtslldrkq");
        assert_eq!(d.status, Status::Succeeded);
        assert_eq!(d.started_at.unwrap().nanosecond(), 383_588_891);
        assert_eq!(d.metrics.unwrap()["image_count"], 1);
    }

    #[test]
    fn refuses_what_is_not_a_job() {
        assert_eq!(Delivery::read(b"not json"), Err(DeliveryError::NotJson));
        assert_eq!(Delivery::read(b"[1]"), Err(DeliveryError::NotJson));
        assert_eq!(
            parse(json!({"status": "failed"})),
            Err(DeliveryError::Missing("id"))
        );
        assert_eq!(
            parse(json!({"id": "", "status": "failed"})),
            Err(DeliveryError::Missing("id"))
        );
        assert_eq!(
            parse(json!({"id": "x"})),
            Err(DeliveryError::Missing("status"))
        );
        assert_eq!(
            parse(json!({"id": 3, "status": "failed"})),
            Err(DeliveryError::WrongType("id"))
        );
        for id in [
            "../../etc/passwd",
            "a b",
            "a/b",
            "x\ny",
            "ü",
            &"a".repeat(65),
        ] {
            assert_eq!(
                parse(json!({"id": id, "status": "failed"})),
                Err(DeliveryError::BadId),
                "{id}"
            );
        }
        assert!(parse(json!({"id": "a".repeat(64), "status": "failed"})).is_ok());
        assert_eq!(
            parse(json!({"id": "x", "status": "done"})),
            Err(DeliveryError::UnknownStatus)
        );
        assert_eq!(
            parse(json!({"id": "x", "status": "pending"})),
            Err(DeliveryError::UnknownStatus)
        );
        assert_eq!(
            parse(json!({"id": "x", "status": "failed", "completed_at": "yesterday"})),
            Err(DeliveryError::BadTimestamp("completed_at"))
        );
    }

    #[test]
    fn status_order_and_kinds() {
        assert!(Status::Starting.rank() < Status::Processing.rank());
        assert!(Status::Processing.rank() < Status::Aborted.rank());
        assert!(Status::Aborted.is_terminal() && Status::Aborted.refunds());
        assert!(Status::Succeeded.is_terminal() && !Status::Succeeded.refunds());
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn output_is_kept_as_sent_and_built_only_when_it_may_hold_files() {
        let tokens = parse(json!({"id": "x", "status": "succeeded", "output": ["Hi", " there"]}))
            .unwrap()
            .output;
        assert_eq!(tokens.raw().unwrap().get(), r#"["Hi"," there"]"#);
        assert!(tokens.tree().is_none() && tokens.files().is_empty());

        let files = parse(json!({"id": "x", "status": "succeeded",
            "output": ["https://replicate.delivery/a/0.png", "text"]}))
        .unwrap()
        .output;
        assert_eq!(files.files(), ["https://replicate.delivery/a/0.png"]);

        let training = parse(json!({"id": "x", "status": "succeeded",
            "output": {"version": "owner/model:abc", "weights": null}}))
        .unwrap()
        .output;
        assert_eq!(training.field("version"), Some("owner/model:abc"));

        for absent in [
            json!({"id": "x", "status": "starting"}),
            json!({"id": "x", "status": "starting", "output": null}),
        ] {
            let output = parse(absent).unwrap().output;
            assert!(output.raw().is_none() && output.files().is_empty());
            assert_eq!(output, Output::none());
        }
    }

    #[test]
    fn nul_characters_are_removed_and_nothing_else() {
        let d = parse(json!({"id": "x", "status": "failed",
            "error": "bad\u{0}input",
            "metrics": {"note\u{0}": "a\u{0}b", "predict_time": 1.5},
            "output": ["tok\u{0}en", {"k": "v\u{0}"}, "plain"]}))
        .unwrap();
        assert_eq!(d.error.as_deref(), Some("badinput"));
        assert_eq!(
            d.metrics.unwrap(),
            json!({"note": "ab", "predict_time": 1.5})
        );
        assert_eq!(
            d.output.raw().unwrap().get(),
            r#"["token",{"k":"v"},"plain"]"#
        );
        // An escaped backslash followed by "u0000" is text, and stays.
        let literal =
            parse(json!({"id": "x", "status": "succeeded", "output": "a\\u0000b"})).unwrap();
        assert_eq!(literal.output.raw().unwrap().get(), r#""a\\u0000b""#);
    }

    #[test]
    fn structured_errors_are_kept_as_text() {
        let d = parse(json!({"id": "x", "status": "failed", "error": {"code": "E1"}})).unwrap();
        assert_eq!(d.error.unwrap(), r#"{"code":"E1"}"#);
    }
}
