//! Telling a user their model finished, through Resend's HTTP API. A failed email is logged
//! and never fails the delivery that triggered it.

use crate::config::EmailConfig;
use crate::replicate::Status;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// Why an email was not sent.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// Resend did not answer.
    #[error("email API did not answer")]
    Unreachable,
    /// The HTTP client could not be built (its TLS backend did not start).
    #[error("email client could not be built")]
    NoClient,
    /// Resend refused the message.
    #[error("email API answered HTTP {0}")]
    Refused(u16),
    /// Resend answered with a redirect, which is not followed.
    #[error("email API answered with a redirect (HTTP {0}), which is not followed")]
    Redirected(u16),
}

/// Sends emails through Resend.
#[derive(Debug, Clone)]
pub struct Mailer {
    // None when the client could not be built: each email then fails with an error instead
    // of the process panicking, as `Client::default()` would.
    http: Option<reqwest::Client>,
    config: EmailConfig,
}

impl Mailer {
    /// A mailer for `config`; no request is made.
    pub fn new(config: EmailConfig) -> Mailer {
        // No redirects: the API key would follow one to whatever host it names.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .build()
            .ok();
        Mailer { http, config }
    }

    /// Emails `to` that model `model_id` ended with `status`.
    pub async fn model_finished(
        &self,
        to: &str,
        model_id: Uuid,
        status: Status,
    ) -> Result<(), EmailError> {
        let (subject, text) = match status {
            Status::Succeeded => (
                "Your model is ready".to_owned(),
                format!("Training finished: model {model_id} is ready to use."),
            ),
            other => (
                format!("Your model training {other}"),
                format!(
                    "Training for model {model_id} {other}. Any credits it cost have been returned to your account."
                ),
            ),
        };
        let http = self.http.as_ref().ok_or(EmailError::NoClient)?;
        let response = http
            .post(format!("{}/emails", self.config.api_url))
            .bearer_auth(self.config.api_key.expose())
            .json(&json!({
                "from": self.config.from,
                "to": [to],
                "subject": subject,
                "text": text,
            }))
            .send()
            .await
            .map_err(|_| EmailError::Unreachable)?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            Err(EmailError::Redirected(status.as_u16()))
        } else {
            Err(EmailError::Refused(status.as_u16()))
        }
    }
}
