//! What a delivery does, whichever way it arrived (a webhook, or reconcile asking
//! Replicate's API): copy a succeeded job's files to S3 first, then apply the event in one
//! database transaction, then tell the owner.

use crate::config::ApplyConfig;
use crate::deadline::Deadline;
use crate::email::Mailer;
use crate::error::ApiError;
use crate::job::{Job, JobKind};
use crate::logging;
use crate::outputs::copy::{Copier, Destination};
use crate::replicate::Status;
use crate::storage::{Storage, StorageError};
use crate::store::{Applied, ApplyEvent, OutputJson, Store};
use serde_json::Value;
use std::sync::OnceLock;

/// The clients a delivery may need, each built on first use (so a cold start that only
/// sees `processing` events never builds an S3 client).
#[derive(Debug)]
pub struct Services {
    config: ApplyConfig,
    store: OnceLock<Store>,
    copier: OnceLock<Result<Copier, StorageError>>,
    mailer: OnceLock<Option<Mailer>>,
}

impl Services {
    /// Services configured by `config`; builds nothing yet.
    pub fn new(config: ApplyConfig) -> Services {
        Services {
            config,
            store: OnceLock::new(),
            copier: OnceLock::new(),
            mailer: OnceLock::new(),
        }
    }

    /// The PostgREST client.
    pub fn store(&self) -> &Store {
        self.store
            .get_or_init(|| Store::new(&self.config.database, self.config.upstream_timeout))
    }

    fn copier(&self) -> Result<&Copier, StorageError> {
        self.copier
            .get_or_init(|| {
                let storage = &self.config.storage;
                Copier::new(
                    Storage::new(storage),
                    self.config.output_hosts.clone(),
                    storage.prefix.clone(),
                    storage.public_base_url.clone(),
                )
                .map_err(|_| {
                    StorageError::Unavailable("the download client could not be built".into())
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Applies one event: files first (a succeeded job is never recorded with Replicate's
    /// expiring URLs), then the database, in one transaction; then tells the owner of a
    /// model that just finished.
    /// Nothing runs past `deadline`'s working time.
    pub async fn apply(
        &self,
        event: ApplyEvent<'_>,
        deadline: Deadline,
    ) -> Result<Applied, ApiError> {
        let route = event.route;
        let applied = self.apply_quietly(event, deadline).await?;
        self.notify(route, &applied).await;
        Ok(applied)
    }

    async fn apply_quietly(
        &self,
        event: ApplyEvent<'_>,
        deadline: Deadline,
    ) -> Result<Applied, ApiError> {
        let store = self.store();
        let d = event.delivery;
        let output = match d.output.tree() {
            Some(tree) if d.status == Status::Succeeded && !d.output.files().is_empty() => tree,
            _ => return Ok(store.apply(&event).await?),
        };
        let Some(found) = store.find(&d.id, event.job).await? else {
            return Ok(Applied::not_found());
        };
        if found.status.is_terminal() || found.belongs_to_another_run(&d.id) {
            // Nothing will change (the database records the duplicate or stale delivery):
            // fetch nothing for it.
            return Ok(store.apply(&event).await?);
        }
        let kind = found.job.kind();
        // One copy per job at a time: a retry arriving during a long copy answers 503 at
        // once (Replicate tries again later and then finds the job done) instead of
        // downloading everything a second time. The lease ends with this invocation's time,
        // so a function killed mid-copy holds nobody back for long.
        let holder = format!("{}:{}", event.route, uuid::Uuid::new_v4());
        let lease = deadline.remaining().as_secs().saturating_add(5);
        let lease = u32::try_from(lease).unwrap_or(u32::MAX);
        if !store.claim_copy(kind, found.job_id, &holder, lease).await? {
            return Err(ApiError::CopyInProgress);
        }
        let destination = Destination {
            kind,
            user_id: found.user_id,
            replicate_id: &d.id,
        };
        let stored = match self.copier() {
            Ok(copier) => copier
                .copy_all(destination, output, d.output.files(), deadline.work_until())
                .await
                .map_err(ApiError::from),
            Err(e) => Err(e.into()),
        };
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                // Give the job back at once, so a retry need not wait for the lease.
                let _ = store.release_copy(kind, found.job_id, &holder).await;
                return Err(e);
            }
        };
        // A new binding, whose borrows may be as short as `stored`'s.
        let mut event = event;
        event.output = OutputJson::Rewritten(&stored.output);
        event.output_urls = Some(&stored.urls);
        // Only stored weights: a URL kept as received will expire with Replicate's files.
        event.weights_url = match kind {
            JobKind::Model => stored
                .output
                .get("weights")
                .and_then(Value::as_str)
                .filter(|w| stored.urls.iter().any(|u| u == w)),
            JobKind::Prediction => None,
        };
        let applied = store.apply(&event).await?;
        if applied.outcome.changed() && !stored.kept.is_empty() {
            self.note_kept(&event, &stored.kept).await;
        }
        Ok(applied)
    }

    /// Records in the event's `webhook_events` row which outputs were kept as received
    /// and why. The job's state is already stored, so a failure here is only logged.
    async fn note_kept(&self, event: &ApplyEvent<'_>, kept: &[String]) {
        let note = format!("not stored: {}", kept.join("; "));
        if let Err(e) = self.store().note(event.webhook_id, &note).await {
            logging::event("warn", event.route, &format!("{note} (not recorded: {e})"));
        }
    }

    /// Emails the owner when this call moved a model to a terminal status. The database
    /// makes that move once per job, so the email goes once; a failure is only logged.
    async fn notify(&self, route: &str, applied: &Applied) {
        let (Some(Job::Model), Some(status), Some(model), Some(user)) =
            (applied.job, applied.status, applied.job_id, applied.user_id)
        else {
            return;
        };
        if !applied.outcome.changed() || !status.is_terminal() {
            return;
        }
        let Some(mailer) = self
            .mailer
            .get_or_init(|| self.config.email.clone().map(Mailer::new))
        else {
            return;
        };
        let message = match self.store().profile_email(user).await {
            Ok(Some(to)) => match mailer.model_finished(&to, model, status).await {
                Ok(()) => return,
                Err(e) => format!("email for model {model} not sent: {e}"),
            },
            Ok(None) => format!("email for model {model} not sent: the profile has no address"),
            Err(e) => format!("email for model {model} not sent: {e}"),
        };
        logging::event("warn", route, &message);
    }
}
