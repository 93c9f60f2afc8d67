//! Every way a request can fail, mapped once to an HTTP answer.

use crate::config::ConfigError;
use crate::outputs::copy::CopyError;
use crate::signature::SignatureError;
use crate::storage::StorageError;
use crate::store::StoreError;
use http::StatusCode;

/// A failed request. `Display` is the message the caller sees: never a secret, a signature,
/// SQL, an upstream body or a stack trace.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The route does not take this method.
    #[error("method not allowed; use {allow}")]
    MethodNotAllowed {
        /// Value for the `Allow` header.
        allow: &'static str,
    },
    /// The body is over `MAX_BODY_BYTES`.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The signature headers are missing or do not verify.
    #[error("{0}")]
    Unauthorized(#[from] SignatureError),
    /// The query string lacks or garbles a required parameter.
    #[error("{0}")]
    BadQuery(String),
    /// The body is not a Replicate prediction or training object.
    #[error("{0}")]
    BadBody(String),
    /// train/predict name a job that does not exist for that user.
    #[error("no {kind} with that id for that user")]
    JobNotFound {
        /// `model` or `prediction`.
        kind: &'static str,
    },
    /// A variable the route needs is missing or invalid.
    #[error("server is not configured: {0}")]
    Config(#[from] ConfigError),
    /// PostgREST could not be reached or refused the call.
    #[error("database unavailable; the delivery was not recorded")]
    Store(#[from] StoreError),
    /// The bucket could not be used.
    #[error("{0}; the output files were not stored")]
    Storage(#[from] StorageError),
    /// The work for a delivery stopped unexpectedly (a panic in a dependency).
    #[error("the delivery could not be processed")]
    Interrupted,
    /// An output file could not be copied; the job was not marked succeeded.
    #[error("{0}; the job was not marked succeeded")]
    Copy(#[from] CopyError),
    /// Another delivery (Replicate's retry, or reconcile) is copying this job's files now.
    #[error("the job's output files are being copied by another delivery; try again later")]
    CopyInProgress,
    /// The work did not finish inside the function's time limit; it stopped cleanly.
    #[error("the delivery could not be finished within the function's time limit; try again later")]
    OutOfTime {
        /// What was left undone, for the log line.
        left: &'static str,
    },
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::BadQuery(_) | Self::BadBody(_) => StatusCode::BAD_REQUEST,
            Self::JobNotFound { .. } => StatusCode::NOT_FOUND,
            // A missing variable is an outage of this deployment, not a bug: 503 makes
            // Replicate retry the terminal event, which then lands once it is fixed.
            Self::Config(_)
            | Self::Store(_)
            | Self::Storage(_)
            | Self::Copy(_)
            | Self::CopyInProgress
            | Self::OutOfTime { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Interrupted => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// For the log line: what failed below a generic answer (an upstream error kind,
    /// never a body, URL or key).
    pub fn detail(&self) -> Option<String> {
        match self {
            Self::Store(e) => Some(e.to_string()),
            Self::Copy(e) => Some(e.to_string()),
            Self::OutOfTime { left } => Some(format!("left undone: {left}")),
            _ => None,
        }
    }
}
