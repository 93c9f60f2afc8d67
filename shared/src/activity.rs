//! Rejected requests, counted: why a webhook route refused a request ([`Rejection`]), and
//! [`Counted`], which makes a route record each refusal in the database (per route, reason
//! and minute) for health's `recent` block.
//!
//! The platform layer asks a handler to record a refusal after its answer is built, with a
//! short time limit ([`crate::platform`]); a failure to record is logged, never answered.

use crate::config::{ConfigError, DatabaseConfig, Env};
use crate::logging::LogFields;
use crate::platform::{Handler, Reply};
use crate::store::{Store, StoreError};
use bytes::Bytes;
use http::{Request, StatusCode};
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

/// How long recording one refusal may take.
pub const RECORD_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a webhook route refused a request: the reasons health counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// 405: not a POST.
    Method,
    /// 413: a body over `MAX_BODY_BYTES`.
    TooLarge,
    /// 401: a missing, invalid, stale or future signature.
    Signature,
    /// 400: bad query parameters or a body that is not a Replicate object.
    BadRequest,
    /// 404: train/predict name no job of that user.
    NotFound,
    /// 503: the database, the bucket or the configuration failed.
    Unavailable,
}

impl Rejection {
    /// The reason an answer with `status` stands for; `None` for an answer not counted
    /// (a success, or a 500).
    pub fn from_status(status: StatusCode) -> Option<Rejection> {
        match status {
            StatusCode::METHOD_NOT_ALLOWED => Some(Rejection::Method),
            StatusCode::PAYLOAD_TOO_LARGE => Some(Rejection::TooLarge),
            StatusCode::UNAUTHORIZED => Some(Rejection::Signature),
            StatusCode::BAD_REQUEST => Some(Rejection::BadRequest),
            StatusCode::NOT_FOUND => Some(Rejection::NotFound),
            StatusCode::SERVICE_UNAVAILABLE => Some(Rejection::Unavailable),
            _ => None,
        }
    }

    /// The reason's name, as stored and as health shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Method => "method",
            Rejection::TooLarge => "too_large",
            Rejection::Signature => "signature",
            Rejection::BadRequest => "bad_request",
            Rejection::NotFound => "not_found",
            Rejection::Unavailable => "unavailable",
        }
    }
}

/// A route that counts the requests it refuses; everything else is the wrapped route's.
///
/// The counts go to the database the environment names, through a client of their own
/// built on the first refusal (with [`RECORD_TIMEOUT`]); without a usable database
/// configuration nothing is counted. Forwards every [`Handler`] method: one added to the
/// trait must be forwarded here too.
#[derive(Debug)]
pub struct Counted<H> {
    inner: H,
    database: Option<DatabaseConfig>,
    store: OnceLock<Store>,
}

impl<H: Handler> Counted<H> {
    /// Wraps `inner`, reading where the counts go from `env`.
    pub fn new(inner: H, env: &impl Env) -> Counted<H> {
        Counted {
            inner,
            database: DatabaseConfig::from_env(env).ok(),
            store: OnceLock::new(),
        }
    }
}

impl<H: Handler> Handler for Counted<H> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn body_limit(&self) -> Option<usize> {
        self.inner.body_limit()
    }

    fn config_error(&self) -> Option<&ConfigError> {
        self.inner.config_error()
    }

    fn time_limit(&self) -> std::time::Duration {
        self.inner.time_limit()
    }

    fn handle(
        &self,
        req: Request<Bytes>,
        log: &mut LogFields,
    ) -> impl Future<Output = Reply> + Send {
        self.inner.handle(req, log)
    }

    fn counts_rejections(&self) -> bool {
        self.database.is_some()
    }

    async fn record_rejection(&self, reason: Rejection) -> Result<(), StoreError> {
        let Some(config) = &self.database else {
            return Ok(());
        };
        let store = self
            .store
            .get_or_init(|| Store::new(config, RECORD_TIMEOUT));
        store.record_rejection(self.inner.name(), reason).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_status_has_its_reason() {
        let cases = [
            (405, Some("method")),
            (413, Some("too_large")),
            (401, Some("signature")),
            (400, Some("bad_request")),
            (404, Some("not_found")),
            (503, Some("unavailable")),
            (200, None),
            (500, None),
            (429, None),
        ];
        for (code, reason) in cases {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            assert_eq!(
                Rejection::from_status(status).map(Rejection::as_str),
                reason,
                "{code}"
            );
        }
    }
}
