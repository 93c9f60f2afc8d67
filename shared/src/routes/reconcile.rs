//! `/api/cron/reconcile`: finishes jobs whose webhook never came.
//!
//! Replicate retries only the terminal webhook, for about a minute, and deletes files after
//! about an hour. On a schedule (or with `Authorization: Bearer $CRON_SECRET`), this asks
//! Replicate's API about jobs that have been quiet too long and applies what it says through
//! the same path as a webhook: files copied, refund once, outcome `reconciled`.

use crate::apply::Services;
use crate::config::{ConfigError, Env, ReconcileConfig, ReconcileLimits, Secret};
use crate::error::ApiError;
use crate::job::{JobRef, Outcome};
use crate::logging::{self, LogFields};
use crate::platform::{Handler, SMALL_BODY_LIMIT, Scheduled};
use crate::replicate::{Delivery, Output, Status};
use crate::replicate_api::{Lookup, ReplicateApi};
use crate::respond;
use crate::signature::SignatureError;
use crate::store::{ApplyEvent, QuietJob};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use serde::Serialize;

/// The error a job ends with when Replicate deleted its files before we stored them.
pub const EXPIRED: &str = "outputs expired before they were stored";

/// The reconcile route's handler.
#[derive(Debug)]
pub struct Reconcile {
    ready: Result<Ready, ConfigError>,
}

/// A configured reconcile route.
#[derive(Debug)]
struct Ready {
    cron_secret: Secret,
    limits: ReconcileLimits,
    api: ReplicateApi,
    services: Services,
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

/// A run's answer.
#[derive(Serialize)]
struct Summary {
    ok: bool,
    checked: u32,
    reconciled: u32,
    rate_limited: bool,
}

impl Reconcile {
    /// A handler configured from `env`; builds no client yet.
    pub fn new(env: &impl Env) -> Reconcile {
        let ready = ReconcileConfig::from_env(env).map(|c| Ready {
            cron_secret: c.cron_secret,
            limits: c.limits,
            api: ReplicateApi::new(c.replicate_api),
            services: Services::new(c.apply),
        });
        Reconcile { ready }
    }

    async fn run(
        &self,
        req: Request<Bytes>,
        log: &mut LogFields,
    ) -> Result<Response<Bytes>, ApiError> {
        if req.method() != Method::GET && req.method() != Method::POST {
            return Err(ApiError::MethodNotAllowed { allow: "GET, POST" });
        }
        let ready = self
            .ready
            .as_ref()
            .map_err(|e| ApiError::Config(e.clone()))?;
        ready.authorize(&req)?;
        ready.run(log).await
    }
}

impl Ready {
    /// One run: the batch of quiet jobs, each checked with Replicate and applied.
    async fn run(&self, log: &mut LogFields) -> Result<Response<Bytes>, ApiError> {
        let ready = self;
        let limits = ready.limits;
        let jobs = ready
            .services
            .store()
            .quiet_jobs(limits.after_seconds, limits.max_age_seconds, limits.batch)
            .await?;

        let mut summary = Summary {
            ok: true,
            checked: 0,
            reconciled: 0,
            rate_limited: false,
        };
        for job in &jobs {
            summary.checked += 1;
            match ready.check(job).await {
                Checked::Reconciled => summary.reconciled += 1,
                Checked::Unchanged => {}
                Checked::RateLimited => {
                    summary.rate_limited = true;
                    break;
                }
            }
        }
        log.outcome = Some(format!(
            "checked {}, reconciled {}",
            summary.checked, summary.reconciled
        ));
        Ok(respond::json(StatusCode::OK, &summary))
    }

    fn authorize(&self, req: &Request<Bytes>) -> Result<(), ApiError> {
        let offered = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized(SignatureError::MissingHeader(
                "authorization",
            )))?;
        if constant_time_eq(
            offered.trim().as_bytes(),
            self.cron_secret.expose().as_bytes(),
        ) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized(SignatureError::NoMatch))
        }
    }

    async fn check(&self, job: &QuietJob) -> Checked {
        let found = match self.api.get(job.job.kind(), &job.replicate_id).await {
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
        let delivery = match Delivery::from_api(&found) {
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
        let owned = job.owned();
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
        let event = ApplyEvent::new(&id, "reconcile", job, delivery, Outcome::Reconciled);
        Ok(self.services.apply(event).await?.outcome)
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
        let touched = self
            .services
            .store()
            .touch(job.job.kind(), job.job_id)
            .await;
        if let Err(why) = touched {
            self.note(job, &why.to_string());
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

impl Scheduled for Reconcile {
    async fn on_schedule(&self, log: &mut LogFields) -> Response<Bytes> {
        let run = match self.ready.as_ref() {
            Ok(ready) => ready.run(log).await,
            Err(e) => Err(ApiError::Config(e.clone())),
        };
        run.unwrap_or_else(|e| respond::error(&e, log))
    }
}

impl Handler for Reconcile {
    fn name(&self) -> &'static str {
        "reconcile"
    }

    fn body_limit(&self) -> Option<usize> {
        Some(SMALL_BODY_LIMIT)
    }

    fn config_error(&self) -> Option<&ConfigError> {
        self.ready.as_ref().err()
    }

    async fn handle(&self, req: Request<Bytes>, log: &mut LogFields) -> Response<Bytes> {
        match self.run(req, log).await {
            Ok(response) => response,
            Err(e) => respond::error(&e, log),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Length is not secret; the contents are compared without an early exit.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
