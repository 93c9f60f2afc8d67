//! `/api/cron/reconcile`: finishes jobs whose webhook never came.
//!
//! Replicate retries only the terminal webhook, for about a minute, and deletes files after
//! about an hour. On a schedule (or with `Authorization: Bearer $CRON_SECRET`), this asks
//! Replicate's API about jobs that have been quiet too long and applies what it says through
//! the same path as a webhook: files copied, refund once, outcome `reconciled`.

use crate::apply::{Event, Services};
use crate::config::{ConfigError, Settings};
use crate::error::ApiError;
use crate::logging::{self, LogFields};
use crate::platform::Handler;
use crate::replicate::{Delivery, Output, Status};
use crate::replicate_api::{Lookup, ReplicateApi};
use crate::respond;
use crate::signature::SignatureError;
use crate::store::{JobRef, Outcome, QuietJob};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use serde_json::json;
use std::sync::OnceLock;

/// The error a job ends with when Replicate deleted its files before we stored them.
pub const EXPIRED: &str = "outputs expired before they were stored";

/// The reconcile route's handler.
#[derive(Debug)]
pub struct Reconcile {
    services: Services,
    api: OnceLock<Result<ReplicateApi, ConfigError>>,
}

/// What one job's check came to.
enum Checked {
    /// Replicate's state was applied and changed the job.
    Reconciled,
    /// Nothing to change, or a problem that was logged; the run goes on.
    Unchanged,
    /// Replicate asked us to slow down: the run ends here.
    RateLimited,
}

impl Reconcile {
    /// A handler configured by `settings`; builds no client yet.
    pub fn new(settings: Settings) -> Reconcile {
        Reconcile {
            services: Services::new(settings),
            api: OnceLock::new(),
        }
    }

    fn api(&self) -> Result<&ReplicateApi, ApiError> {
        self.api
            .get_or_init(|| {
                let config = self.services.settings().replicate_api.as_ref();
                config
                    .map(|c| ReplicateApi::new(c.clone()))
                    .map_err(Clone::clone)
            })
            .as_ref()
            .map_err(|e| ApiError::Config(e.clone()))
    }

    fn authorize(&self, req: &Request<Bytes>) -> Result<(), ApiError> {
        let settings = self.services.settings();
        let secret = settings
            .cron_secret
            .as_ref()
            .map_err(|e| ApiError::Config(e.clone()))?;
        let offered = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized(SignatureError::MissingHeader(
                "authorization",
            )))?;
        if constant_time_eq(offered.trim().as_bytes(), secret.expose().as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized(SignatureError::NoMatch))
        }
    }

    async fn run(&self, req: Request<Bytes>) -> Result<Response<Bytes>, ApiError> {
        if req.method() != Method::GET && req.method() != Method::POST {
            return Err(ApiError::MethodNotAllowed { allow: "GET, POST" });
        }
        self.authorize(&req)?;
        let config = self.services.settings().reconcile.clone()?;
        let api = self.api()?;
        let jobs = self
            .services
            .store()?
            .quiet_jobs(config.after_seconds, config.max_age_seconds, config.batch)
            .await?;

        let (mut checked, mut reconciled, mut rate_limited) = (0, 0, false);
        for job in &jobs {
            checked += 1;
            match self.check(api, job).await {
                Checked::Reconciled => reconciled += 1,
                Checked::Unchanged => {}
                Checked::RateLimited => {
                    rate_limited = true;
                    break;
                }
            }
        }
        let response = respond::json(
            StatusCode::OK,
            &json!({ "ok": true, "checked": checked, "reconciled": reconciled, "rate_limited": rate_limited }),
        );
        Ok(respond::with_log(
            response,
            LogFields {
                outcome: Some(format!("checked {checked}, reconciled {reconciled}")),
                ..LogFields::default()
            },
        ))
    }

    async fn check(&self, api: &ReplicateApi, job: &QuietJob) -> Checked {
        let kind = job.kind();
        let found = match api.get(kind, &job.replicate_id).await {
            Ok(Lookup::Found(body)) => body,
            Ok(Lookup::RateLimited) => return Checked::RateLimited,
            Ok(Lookup::NotFound) => {
                self.note(
                    job,
                    "Replicate does not know this job; checking again later",
                );
                self.wait_longer(job).await;
                return Checked::Unchanged;
            }
            Err(e) => {
                self.note(job, &e.to_string());
                return Checked::Unchanged;
            }
        };
        let delivery = match Delivery::parse(&found) {
            Ok(d) if d.id == job.replicate_id => d,
            Ok(_) => {
                self.note(job, "Replicate answered with another job's id");
                self.wait_longer(job).await;
                return Checked::Unchanged;
            }
            Err(e) => {
                self.note(job, &format!("Replicate's answer is unusable: {e}"));
                self.wait_longer(job).await;
                return Checked::Unchanged;
            }
        };
        let owned = JobRef::Owned {
            kind,
            id: job.job_id,
            user_id: job.user_id,
        };
        let files_gone = delivery.status == Status::Succeeded
            && delivery.data_removed
            && !delivery.output.files().is_empty();
        let result = if files_gone {
            self.expire(owned, &delivery).await
        } else {
            match self.apply(owned, &delivery).await {
                Err(ApiError::Copy(e)) if e.is_gone() => self.expire(owned, &delivery).await,
                other => other,
            }
        };
        match result {
            Ok(Outcome::Reconciled) if delivery.status.is_terminal() => Checked::Reconciled,
            Ok(_) => {
                // Still running (or nothing new): look again after another quiet period.
                self.wait_longer(job).await;
                Checked::Unchanged
            }
            Err(e) => {
                self.note(job, &e.to_string());
                Checked::Unchanged
            }
        }
    }

    async fn apply(&self, job: JobRef, delivery: &Delivery) -> Result<Outcome, ApiError> {
        let id = format!("reconcile:{}:{}", delivery.id, delivery.status);
        let applied = self
            .services
            .apply(Event {
                webhook_id: &id,
                route: "reconcile",
                job,
                delivery,
                applied_outcome: Outcome::Reconciled,
            })
            .await?;
        Ok(applied.outcome)
    }

    /// The job succeeded but its files are gone: it ends failed, and is refunded.
    async fn expire(&self, job: JobRef, delivery: &Delivery) -> Result<Outcome, ApiError> {
        let failed = Delivery {
            status: Status::Failed,
            output: Output::none(),
            error: Some(EXPIRED.into()),
            ..delivery.clone()
        };
        self.apply(job, &failed).await
    }

    async fn wait_longer(&self, job: &QuietJob) {
        let touched = match self.services.store() {
            Ok(store) => store
                .touch(job.kind(), job.job_id)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = touched {
            self.note(job, &why);
        }
    }

    fn note(&self, job: &QuietJob, message: &str) {
        logging::event(
            "warn",
            "reconcile",
            &format!("job {} ({}): {message}", job.job_id, job.replicate_id),
        );
    }
}

impl Handler for Reconcile {
    fn name(&self) -> &'static str {
        "reconcile"
    }

    fn body_limit(&self) -> usize {
        self.services.settings().body_limit()
    }

    async fn handle(&self, req: Request<Bytes>) -> Response<Bytes> {
        match self.run(req).await {
            Ok(response) => response,
            Err(e) => respond::error(&e),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Length is not secret; the contents are compared without an early exit.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
