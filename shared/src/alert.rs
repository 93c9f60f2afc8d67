//! Reconcile's alerts: one short message per run that found something, posted to
//! `ALERT_WEBHOOK_URL` as `{"text": ..., "content": ...}`. Slack's incoming webhooks read
//! `text`; Discord's read `content` (and refuse a message without it); each ignores the
//! other key. The message names counts and likely causes, never a secret or a URL.

use crate::config::Secret;
use std::sync::OnceLock;
use std::time::Duration;

/// How long connecting to the alert webhook may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one alert may take in all.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Discord's limit for `content`.
const MAX_CHARS: usize = 2000;

/// Why an alert was not delivered. Messages carry no URL.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// No answer in time, or no connection.
    #[error("the alert webhook did not answer: {0}")]
    Unreachable(&'static str),
    /// It answered with an error status (or a redirect, which is not followed).
    #[error("the alert webhook refused the message (HTTP {0})")]
    Refused(u16),
}

/// Posts alerts to one webhook, with a client that follows no redirect.
pub struct Alerts {
    url: Secret,
    // Built with the first alert (most runs send none). None when it could not be built:
    // each send then fails with an error.
    http: OnceLock<Option<reqwest::Client>>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").finish_non_exhaustive()
    }
}

#[derive(serde::Serialize)]
struct Message<'a> {
    text: &'a str,
    content: &'a str,
}

impl Alerts {
    /// A client for the webhook at `url`; nothing is built or sent until the first alert.
    pub fn new(url: Secret) -> Alerts {
        Alerts {
            url,
            http: OnceLock::new(),
        }
    }

    fn http(&self) -> Option<&reqwest::Client> {
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(SEND_TIMEOUT)
                    .user_agent(concat!("replicate-webhooks/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .ok()
            })
            .as_ref()
    }

    /// Posts `text` (cut to Discord's 2000 characters).
    pub async fn send(&self, text: &str) -> Result<(), AlertError> {
        let http = self.http().ok_or(AlertError::Unreachable(
            "the HTTP client could not be built",
        ))?;
        let text = match text.char_indices().nth(MAX_CHARS) {
            Some((end, _)) => &text[..end],
            None => text,
        };
        let response = http
            .post(self.url.expose())
            .json(&Message {
                text,
                content: text,
            })
            .send()
            .await
            .map_err(|e| AlertError::Unreachable(crate::upstream::no_answer(&e)))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(AlertError::Refused(status.as_u16()))
        }
    }
}
