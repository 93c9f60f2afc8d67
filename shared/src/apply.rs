//! What a delivery does, whichever way it arrived (a webhook, or reconcile asking
//! Replicate's API): copy a succeeded job's files to S3 first, then apply the event in one
//! database transaction.

use crate::config::{ConfigError, Settings};
use crate::email::Mailer;
use crate::error::ApiError;
use crate::logging;
use crate::outputs::copy::{Copier, Destination};
use crate::replicate::{Delivery, Status};
use crate::storage::{Storage, StorageError};
use crate::store::{Applied, EventToApply, JobKind, JobRef, Outcome, OutputJson, Store};
use serde_json::Value;
use std::sync::OnceLock;

/// The clients a delivery may need, each built on first use (so a cold start that only
/// sees `processing` events never builds an S3 client).
#[derive(Debug)]
pub struct Services {
    settings: Settings,
    store: OnceLock<Result<Store, ConfigError>>,
    copier: OnceLock<Result<Copier, ApiError>>,
    mailer: OnceLock<Option<Mailer>>,
}

/// One event to apply.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// Dedup key: the `webhook-id`, or reconcile's own id.
    pub webhook_id: &'a str,
    /// Route name recorded in `webhook_events`.
    pub route: &'a str,
    /// Which job.
    pub job: JobRef,
    /// What Replicate reported.
    pub delivery: &'a Delivery,
    /// The outcome recorded when it changes the job: `applied` or `reconciled`.
    pub applied_outcome: Outcome,
}

impl Services {
    /// Services configured by `settings`; builds nothing yet.
    pub fn new(settings: Settings) -> Services {
        Services {
            settings,
            store: OnceLock::new(),
            copier: OnceLock::new(),
            mailer: OnceLock::new(),
        }
    }

    /// The configuration these services were built from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The PostgREST client.
    pub fn store(&self) -> Result<&Store, ApiError> {
        self.store
            .get_or_init(|| {
                let config = self.settings.database.as_ref().map_err(Clone::clone)?;
                Ok(Store::new(config, self.settings.upstream_timeout))
            })
            .as_ref()
            .map_err(|e| ApiError::Config(e.clone()))
    }

    fn copier(&self) -> Result<&Copier, ApiError> {
        self.copier
            .get_or_init(|| {
                let storage = self.settings.storage.as_ref().map_err(Clone::clone)?;
                let hosts = self.settings.output_hosts.as_ref().map_err(Clone::clone)?;
                Copier::new(
                    Storage::new(storage),
                    hosts.clone(),
                    storage.prefix.clone(),
                    storage.public_base_url.clone(),
                )
                .map_err(|_| {
                    ApiError::Storage(StorageError::Unavailable(
                        "the download client could not be built".into(),
                    ))
                })
            })
            .as_ref()
            .map_err(clone_error)
    }

    /// Applies one event: files first (a succeeded job is never recorded with Replicate's
    /// expiring URLs), then the database, in one transaction; then tells the owner of a
    /// model that just finished.
    pub async fn apply(&self, event: Event<'_>) -> Result<Applied, ApiError> {
        let applied = self.apply_quietly(event).await?;
        self.notify(event.route, &applied).await;
        Ok(applied)
    }

    async fn apply_quietly(&self, event: Event<'_>) -> Result<Applied, ApiError> {
        let store = self.store()?;
        let d = event.delivery;
        let as_received = OutputJson::Received(d.output.raw());
        let output = match d.output.tree() {
            Some(tree) if d.status == Status::Succeeded && !d.output.files().is_empty() => tree,
            _ => {
                return Ok(store
                    .apply(&to_apply(event, as_received, None, None))
                    .await?);
            }
        };
        let Some(found) = store.find(&d.id, event.job).await? else {
            return Ok(Applied::not_found());
        };
        if found.is_terminal() {
            // Nothing will change; record the duplicate or stale delivery without copying.
            return Ok(store
                .apply(&to_apply(event, as_received, None, None))
                .await?);
        }
        let kind = found.kind();
        let stored = self
            .copier()?
            .copy_all(
                Destination {
                    kind,
                    user_id: found.user_id,
                    replicate_id: &d.id,
                },
                output,
            )
            .await?;
        let weights = match kind {
            JobKind::Model => stored.output.get("weights").and_then(Value::as_str),
            JobKind::Prediction => None,
        };
        let rewritten = OutputJson::Rewritten(&stored.output);
        let apply = to_apply(event, rewritten, Some(&stored.urls), weights);
        Ok(store.apply(&apply).await?)
    }
}

impl Services {
    /// Emails the owner when this call moved a model to a terminal status. The database
    /// makes that move once per job, so the email goes once; a failure is only logged.
    async fn notify(&self, route: &str, applied: &Applied) {
        let changed = matches!(applied.outcome, Outcome::Applied | Outcome::Reconciled);
        let status = applied.status.as_deref().and_then(Status::parse);
        let (Some(status), Some(model), Some(user)) = (status, applied.job_id, applied.user_id)
        else {
            return;
        };
        if !changed || applied.job.as_deref() != Some("model") || !status.is_terminal() {
            return;
        }
        let Some(mailer) = self
            .mailer
            .get_or_init(|| self.settings.email.clone().map(Mailer::new))
        else {
            return;
        };
        let Ok(store) = self.store() else { return };
        let message = match store.profile_email(user).await {
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

fn to_apply<'a>(
    event: Event<'a>,
    output: OutputJson<'a>,
    output_urls: Option<&'a [String]>,
    weights_url: Option<&'a str>,
) -> EventToApply<'a> {
    EventToApply {
        webhook_id: event.webhook_id,
        route: event.route,
        job: event.job,
        delivery: event.delivery,
        output,
        output_urls,
        weights_url,
        // A finished training reports the new model version in its output.
        version: event.delivery.output.field("version"),
        applied_outcome: event.applied_outcome.as_str(),
    }
}

fn clone_error(error: &ApiError) -> ApiError {
    match error {
        ApiError::Config(e) => ApiError::Config(e.clone()),
        ApiError::Storage(e) => ApiError::Storage(e.clone()),
        other => ApiError::Storage(StorageError::Unavailable(other.to_string())),
    }
}
