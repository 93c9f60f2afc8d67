//! `/api/cron/reconcile`: finishes jobs whose webhook never came.
//!
//! Replicate retries only the terminal webhook, for about a minute, and deletes files after
//! about an hour. On a schedule (or with `Authorization: Bearer $CRON_SECRET`), this asks
//! Replicate's API about jobs that have been quiet too long and applies what it says through
//! the same path as a webhook: files copied, refund once, outcome `reconciled`.
//!
//! Every charged job settles: a success whose outputs are gone ends failed and refunded; a
//! job that never got a Replicate id, or that Replicate still does not know once it is old,
//! ends aborted and refunded; a check that fails backs the job off (growing delays) instead
//! of heading every batch; and a run stops taking jobs before the function's time limit.
//!
//! Each run also deletes a batch of `webhook_events` rows and rejection counts older than
//! `EVENTS_RETENTION_DAYS`, and, with `ALERT_WEBHOOK_URL` set, a run that found something
//! (lost webhooks, expired outputs, jobs that never started, failed checks) posts one
//! message saying so.

use crate::alert::Alerts;
use crate::apply::Services;
use crate::config::{ConfigError, Env, ReconcileConfig, ReconcileLimits, Secret, bearer_token};
use crate::deadline::Deadline;
use crate::error::ApiError;
use crate::job::{JobRef, Outcome};
use crate::logging::{self, LogFields};
use crate::platform::{Handler, Reply, SMALL_BODY_LIMIT, Scheduled};
use crate::replicate::{Delivery, Output, Status};
use crate::replicate_api::{Lookup, ReplicateApi};
use crate::respond;
use crate::signature::SignatureError;
use crate::store::{ApplyEvent, Pruned, QuietJob};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde::Serialize;
use std::time::Instant;
use time::format_description::well_known::Rfc3339;

/// The error a job ends with when Replicate deleted its files before we stored them.
pub const EXPIRED: &str = "outputs expired before they were stored";

/// The error a job ends with when it never got a Replicate id, or Replicate still does not
/// know it after `RECONCILE_MAX_AGE_SECONDS`.
pub const NEVER_STARTED: &str = "never started on Replicate";

/// The most rows of each table one run's retention deletes.
pub const RETENTION_BATCH: u32 = 5000;

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
    alerts: Option<Alerts>,
    retention_days: u32,
}

/// Which list a job came from, which decides what Replicate's 404 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Age {
    /// Younger than `RECONCILE_MAX_AGE_SECONDS`: a 404 may still pass (look again later).
    Young,
    /// Older: Replicate has had all the time it needs, so a 404 ends the job.
    Old,
}

/// What one job's check came to.
enum Checked {
    /// The job was settled by this run.
    Reconciled(Settled),
    /// Nothing to change yet; the job waits another quiet period.
    Unchanged,
    /// The check did not work (API, files, store): the job backs off; the run goes on.
    Failed(String),
    /// Replicate asked us to slow down: the run ends here.
    RateLimited,
}

/// How a job this run settled ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// As Replicate reports it: its webhook was lost.
    Finished,
    /// Failed and refunded: its outputs were gone before they were stored.
    Expired,
    /// Aborted and refunded: it never started on Replicate.
    Aborted,
}

/// A run's answer.
#[derive(Debug, Default, Serialize)]
struct Summary {
    ok: bool,
    checked: u32,
    /// Jobs settled, whichever way.
    reconciled: u32,
    /// Of those, failed because their outputs expired.
    expired: u32,
    /// Of those, aborted because they never started on Replicate.
    aborted: u32,
    failed: u32,
    rate_limited: bool,
    out_of_time: bool,
    /// What retention deleted; `null` when it could not run.
    deleted: Option<Pruned>,
}

impl Summary {
    /// The alert for this run: `None` when it found nothing worth telling.
    fn alert(&self) -> Option<String> {
        let plural = |n: u32, one: &str, many: &str| {
            if n == 1 {
                format!("1 {one}")
            } else {
                format!("{n} {many}")
            }
        };
        let mut lines = Vec::new();
        let lost = self.reconciled.saturating_sub(self.aborted);
        if lost > 0 {
            lines.push(format!(
                "{} only through reconcile: {} never arrived. Likely causes: a wrong \
                 webhook URL passed to Replicate, deployment protection (e.g. Vercel \
                 Authentication) answering Replicate's deliveries, a redirect (a domain \
                 that redirects elsewhere; deliveries do not follow it), or the webhook \
                 function down. GET /api/health with the cron secret shows recent \
                 deliveries and refused requests.",
                plural(lost, "job finished", "jobs finished"),
                if lost == 1 {
                    "its webhook"
                } else {
                    "their webhooks"
                },
            ));
        }
        if self.expired > 0 {
            lines.push(format!(
                "{} before they were stored, so {} failed and refunded.",
                plural(
                    self.expired,
                    "job's outputs expired",
                    "jobs' outputs expired"
                ),
                if self.expired == 1 {
                    "it ended"
                } else {
                    "they ended"
                },
            ));
        }
        if self.aborted > 0 {
            lines.push(format!(
                "{} on Replicate (no Replicate id after ORPHAN_AFTER_SECONDS, or unknown \
                 to Replicate after RECONCILE_MAX_AGE_SECONDS): aborted and refunded.",
                plural(self.aborted, "job never started", "jobs never started"),
            ));
        }
        if self.failed > 0 {
            lines.push(format!(
                "{} (Replicate's API, the output files or the database); those jobs are \
                 checked again after growing delays, and reconcile's log lines say why.",
                plural(self.failed, "check failed", "checks failed"),
            ));
        }
        if lines.is_empty() {
            return None;
        }
        if self.rate_limited || self.out_of_time {
            lines.push(
                "The run stopped early (rate limited, or near its time limit); the rest \
                 waits for the next run."
                    .into(),
            );
        }
        Some(format!(
            "Replicate webhooks, reconcile: {}",
            lines.join(" ")
        ))
    }
}

impl Reconcile {
    /// A handler configured from `env`; builds no client yet.
    pub fn new(env: &impl Env) -> Reconcile {
        let ready = ReconcileConfig::from_env(env).map(|c| Ready {
            cron_secret: c.cron_secret,
            limits: c.limits,
            api: ReplicateApi::new(c.replicate_api),
            services: Services::new(c.apply),
            alerts: c.alert_url.map(Alerts::new),
            retention_days: c.retention_days,
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
        let limit = Deadline::of_request(req.extensions(), self.time_limit());
        ready.run(log, limit).await
    }
}

impl Ready {
    /// One run: the batch of quiet jobs, each checked with Replicate and applied.
    async fn run(&self, log: &mut LogFields, limit: Deadline) -> Result<Response<Bytes>, ApiError> {
        let limits = self.limits;
        let deadline = Instant::now() + limits.time_budget;
        let mut summary = Summary {
            ok: true,
            ..Summary::default()
        };

        // Lost webhooks first: their files expire within the hour. Orphans and old jobs,
        // which have waited a day or more already, take what is left of the batch.
        let store = self.services.store();
        let jobs = store
            .quiet_jobs(limits.after_seconds, limits.max_age_seconds, limits.batch)
            .await?;
        let go_on = self
            .check_all(&jobs, Age::Young, (deadline, limit), &mut summary)
            .await;
        let left = limits.batch.saturating_sub(summary.checked);
        if go_on && left > 0 {
            let lost = store
                .lost_jobs(
                    limits.after_seconds,
                    limits.max_age_seconds,
                    limits.orphan_after_seconds,
                    left,
                )
                .await?;
            self.check_all(&lost, Age::Old, (deadline, limit), &mut summary)
                .await;
        }
        summary.deleted = self.prune().await;
        if let Some(text) = summary.alert() {
            self.alert(&text).await;
        }
        log.outcome = Some(format!(
            "checked {}, reconciled {}, failed {}{}",
            summary.checked,
            summary.reconciled,
            summary.failed,
            if summary.out_of_time {
                ", stopped before the time limit"
            } else {
                ""
            }
        ));
        Ok(respond::json(StatusCode::OK, &summary))
    }

    fn authorize(&self, req: &Request<Bytes>) -> Result<(), ApiError> {
        let offered = bearer_token(req.headers()).ok_or(ApiError::Unauthorized(
            SignatureError::MissingHeader("authorization"),
        ))?;
        if self.cron_secret.matches(offered) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized(SignatureError::NoMatch))
        }
    }

    /// Checks `jobs` in order until the list ends, Replicate rate-limits us or the time is
    /// up; returns whether the run may go on.
    async fn check_all(
        &self,
        jobs: &[QuietJob],
        age: Age,
        (deadline, limit): (Instant, Deadline),
        summary: &mut Summary,
    ) -> bool {
        for job in jobs {
            // A check can take a while (copying files); none starts that might not end
            // before the platform stops the function.
            if Instant::now() >= deadline {
                summary.out_of_time = true;
                return false;
            }
            summary.checked += 1;
            match self.check(job, age, limit).await {
                Checked::Reconciled(how) => {
                    summary.reconciled += 1;
                    match how {
                        Settled::Finished => {}
                        Settled::Expired => summary.expired += 1,
                        Settled::Aborted => summary.aborted += 1,
                    }
                }
                Checked::Unchanged => {}
                Checked::Failed(reason) => {
                    summary.failed += 1;
                    self.back_off(job, &reason).await;
                }
                Checked::RateLimited => {
                    summary.rate_limited = true;
                    return false;
                }
            }
        }
        true
    }

    async fn check(&self, job: &QuietJob, age: Age, limit: Deadline) -> Checked {
        let Some(replicate_id) = job.replicate_id.as_deref() else {
            // Charged, but creating it on Replicate failed: nothing will ever report on it.
            return self.abort(job, limit).await;
        };
        let found = match self.api.get(job.job.kind(), replicate_id).await {
            Ok(Lookup::Found(body)) => body,
            Ok(Lookup::RateLimited) => return Checked::RateLimited,
            Ok(Lookup::NotFound) if age == Age::Old => return self.abort(job, limit).await,
            Ok(Lookup::NotFound) => {
                self.note(
                    job,
                    "Replicate does not know this job; checking again later",
                );
                self.wait_longer(job).await;
                return Checked::Unchanged;
            }
            Err(e) => return Checked::Failed(e.to_string()),
        };
        let delivery = match Delivery::from_api(&found) {
            Ok(d) if d.id == replicate_id => d,
            Ok(_) => return Checked::Failed("Replicate answered with another job's id".into()),
            Err(e) => return Checked::Failed(format!("Replicate's answer is unusable: {e}")),
        };
        let owned = job.owned();
        // data_removed on a success means its outputs are gone, whatever `output` still
        // holds (null, or URLs that no longer answer): never a success with nothing stored.
        let files_gone = delivery.status == Status::Succeeded && delivery.data_removed;
        let result = if files_gone {
            self.expire(owned, &delivery, limit).await
        } else {
            match self.apply(owned, &delivery, limit).await {
                Err(ApiError::Copy(e)) if e.is_gone() => self.expire(owned, &delivery, limit).await,
                other => other.map(|outcome| (outcome, Settled::Finished)),
            }
        };
        match result {
            Ok((Outcome::Reconciled, how)) if delivery.status.is_terminal() => {
                Checked::Reconciled(how)
            }
            Ok(_) => {
                // Still running (or settled by a webhook meanwhile): look again after
                // another quiet period.
                self.wait_longer(job).await;
                Checked::Unchanged
            }
            Err(e) => Checked::Failed(e.to_string()),
        }
    }

    async fn apply(
        &self,
        job: JobRef,
        delivery: &Delivery,
        limit: Deadline,
    ) -> Result<Outcome, ApiError> {
        let id = format!("reconcile:{}:{}", delivery.id, delivery.status);
        let event = ApplyEvent::new(&id, "reconcile", job, delivery, Outcome::Reconciled);
        Ok(self.services.apply(event, limit).await?.outcome)
    }

    /// The job succeeded but its files are gone: it ends failed, and is refunded.
    async fn expire(
        &self,
        job: JobRef,
        delivery: &Delivery,
        limit: Deadline,
    ) -> Result<(Outcome, Settled), ApiError> {
        let failed = Delivery {
            status: Status::Failed,
            output: Output::none(),
            error: Some(EXPIRED.into()),
            ..delivery.clone()
        };
        Ok((self.apply(job, &failed, limit).await?, Settled::Expired))
    }

    /// The job never ran on Replicate (no id, or unknown there long after): it ends
    /// aborted, and is refunded, through the same call as any event (refund at most once).
    async fn abort(&self, job: &QuietJob, limit: Deadline) -> Checked {
        let replicate_id = job.replicate_id.as_deref();
        let aborted = Delivery {
            id: replicate_id.unwrap_or_default().to_owned(),
            status: Status::Aborted,
            output: Output::none(),
            error: Some(NEVER_STARTED.into()),
            metrics: None,
            started_at: None,
            completed_at: None,
            data_removed: false,
        };
        let id = match replicate_id {
            Some(rid) => format!("reconcile:{rid}:aborted"),
            None => format!("reconcile:orphan:{}:aborted", job.job_id),
        };
        let mut event =
            ApplyEvent::new(&id, "reconcile", job.owned(), &aborted, Outcome::Reconciled);
        event.replicate_id = replicate_id;
        match self.services.apply(event, limit).await {
            Ok(applied) if applied.outcome == Outcome::Reconciled => {
                Checked::Reconciled(Settled::Aborted)
            }
            Ok(_) => Checked::Unchanged,
            Err(e) => Checked::Failed(e.to_string()),
        }
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

    /// Logs a failed check and delays the job's next one, so it cannot fill later batches.
    async fn back_off(&self, job: &QuietJob, reason: &str) {
        let backoff = self
            .services
            .store()
            .check_failed(job.job.kind(), job.job_id)
            .await;
        let then = match backoff {
            Ok(Some(b)) => format!(
                "attempt {}, next check after {}",
                b.attempts,
                b.next_check_at
                    .format(&Rfc3339)
                    .unwrap_or_else(|_| "a delay".into())
            ),
            Ok(None) => "the job is gone".into(),
            Err(e) => format!("backoff not recorded: {e}"),
        };
        self.note(job, &format!("check failed: {reason}; {then}"));
    }

    /// Deletes a batch of history older than the retention; a failure is logged and
    /// changes nothing else.
    async fn prune(&self) -> Option<Pruned> {
        let pruned = self
            .services
            .store()
            .prune_history(self.retention_days, RETENTION_BATCH)
            .await;
        pruned
            .map_err(|e| logging::event("warn", "reconcile", &format!("retention: {e}")))
            .ok()
    }

    /// Posts the run's alert, when one is configured; a failure is logged and changes
    /// nothing else.
    async fn alert(&self, text: &str) {
        let Some(alerts) = &self.alerts else {
            return;
        };
        if let Err(e) = alerts.send(text).await {
            logging::event("warn", "reconcile", &format!("alert not sent: {e}"));
        }
    }

    fn note(&self, job: &QuietJob, message: &str) {
        logging::event(
            "warn",
            "reconcile",
            &format!(
                "job {} ({}): {message}",
                job.job_id,
                job.replicate_id.as_deref().unwrap_or("no Replicate id")
            ),
        );
    }
}

impl Scheduled for Reconcile {
    async fn on_schedule(&self, limit: Deadline, log: &mut LogFields) -> Reply {
        match self.ready.as_ref() {
            Ok(ready) => ready.run(log, limit).await,
            Err(e) => Err(ApiError::Config(e.clone())),
        }
    }
}

impl Handler for Reconcile {
    fn name(&self) -> &'static str {
        "reconcile"
    }

    fn time_limit(&self) -> std::time::Duration {
        self.ready.as_ref().map_or_else(
            |_| crate::routes::table::max_duration(self.name()),
            |r| r.limits.time_limit,
        )
    }

    fn body_limit(&self) -> Option<usize> {
        Some(SMALL_BODY_LIMIT)
    }

    fn config_error(&self) -> Option<&ConfigError> {
        self.ready.as_ref().err()
    }

    async fn handle(&self, req: Request<Bytes>, log: &mut LogFields) -> Reply {
        self.run(req, log).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_found_nothing_says_nothing() {
        let quiet = Summary {
            ok: true,
            checked: 3,
            rate_limited: true,
            ..Summary::default()
        };
        assert_eq!(quiet.alert(), None);
    }

    #[test]
    fn the_alert_names_what_was_found_and_the_likely_causes() {
        let found = Summary {
            ok: true,
            checked: 6,
            reconciled: 4,
            expired: 1,
            aborted: 1,
            failed: 2,
            ..Summary::default()
        };
        let text = found.alert().unwrap_or_default();
        for part in [
            "3 jobs finished only through reconcile",
            "wrong webhook URL",
            "deployment protection",
            "redirect",
            "function down",
            "1 job's outputs expired",
            "1 job never started",
            "2 checks failed",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(text.chars().count() <= 2000);
        let one = Summary {
            reconciled: 1,
            ..Summary::default()
        };
        let text = one.alert().unwrap_or_default();
        assert!(
            text.contains("1 job finished only through reconcile: its webhook"),
            "{text}"
        );
    }
}
