//! Replicate's HTTP API, as reconcile uses it: fetch one prediction or training.

use crate::config::ReplicateApiConfig;
use crate::job::JobKind;
use crate::replicate::ApiAnswer;
use crate::upstream::{ReadError, read_at_most};

/// The most of a job object read from the API.
const ANSWER_LIMIT: usize = 16 * 1024 * 1024;
use std::sync::OnceLock;
use std::time::Duration;

/// What the API said about a job.
#[derive(Debug)]
pub enum Lookup {
    /// The job object, the same JSON a webhook carries.
    Found(ApiAnswer),
    /// Replicate does not know this id.
    NotFound,
    /// Too many requests: stop for now.
    RateLimited,
}

/// Why a lookup failed. Never carries the token or a body.
#[derive(Debug, thiserror::Error)]
pub enum ApiCallError {
    /// No answer.
    #[error("Replicate's API did not answer: {0}")]
    Unreachable(&'static str),
    /// An unexpected status.
    #[error("Replicate's API answered HTTP {0}")]
    Status(u16),
    /// A redirect, which is not followed.
    #[error("Replicate's API answered with a redirect (HTTP {0}), which is not followed")]
    Redirected(u16),
}

/// A client for Replicate's API.
#[derive(Debug, Clone)]
pub struct ReplicateApi {
    // Built on the first lookup, so a cold start builds no TLS client for a run that asks
    // Replicate nothing. None when it could not be built: each lookup then fails with an
    // error instead of the process panicking, as `Client::default()` would.
    http: OnceLock<Option<reqwest::Client>>,
    config: ReplicateApiConfig,
}

impl ReplicateApi {
    /// A client for `config`; nothing is built or sent yet.
    pub fn new(config: ReplicateApiConfig) -> ReplicateApi {
        ReplicateApi {
            http: OnceLock::new(),
            config,
        }
    }

    fn http(&self) -> Option<&reqwest::Client> {
        self.http
            .get_or_init(|| {
                // No redirects: the token would follow one to whatever host it names.
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(Duration::from_secs(3))
                    .timeout(Duration::from_secs(10))
                    .build()
                    .ok()
            })
            .as_ref()
    }

    /// `GET /v1/predictions/{id}` or `/v1/trainings/{id}`.
    pub async fn get(&self, kind: JobKind, id: &str) -> Result<Lookup, ApiCallError> {
        let collection = match kind {
            JobKind::Model => "trainings",
            JobKind::Prediction => "predictions",
        };
        let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let url = format!("{}/v1/{collection}/{id}", self.config.base_url);
        let http = self.http().ok_or(ApiCallError::Unreachable(
            "the HTTP client could not be built",
        ))?;
        let response = http
            .get(url)
            .bearer_auth(self.config.token.expose())
            .send()
            .await
            .map_err(|e| {
                ApiCallError::Unreachable(if e.is_timeout() {
                    "timed out"
                } else {
                    "request failed"
                })
            })?;
        match response.status().as_u16() {
            // A job object with long logs is a few MB at most (a webhook body is capped at
            // 6 MB); anything much larger is not one.
            200 => read_at_most(response, ANSWER_LIMIT)
                .await
                .map(|body| Lookup::Found(ApiAnswer(body)))
                .map_err(|e| match e {
                    ReadError::TooLarge(_) => ApiCallError::Unreachable("answer too large"),
                    ReadError::Interrupted => ApiCallError::Unreachable("body interrupted"),
                }),
            404 => Ok(Lookup::NotFound),
            429 => Ok(Lookup::RateLimited),
            redirect @ 300..=399 => Err(ApiCallError::Redirected(redirect)),
            other => Err(ApiCallError::Status(other)),
        }
    }
}
