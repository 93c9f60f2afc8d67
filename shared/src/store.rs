//! Job state in Supabase, through PostgREST.
//!
//! Every delivery's database effects happen inside one SQL function
//! (`apply_replicate_event`, in `supabase/migrations/`), called with one RPC round trip, so
//! concurrent deliveries cannot interleave and a refund happens at most once.

use crate::config::DatabaseConfig;
use crate::replicate::{Delivery, Status};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// Which table a job lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// A training, in `models`.
    Model,
    /// A prediction, in `predictions`.
    Prediction,
}

impl JobKind {
    /// The storage folder and table name.
    pub fn table(self) -> &'static str {
        match self {
            JobKind::Model => "models",
            JobKind::Prediction => "predictions",
        }
    }

    /// The table of a job the SQL functions describe as `model`, `prediction` or
    /// `upscale` (an upscale is a prediction).
    pub fn of_job(job: &str) -> JobKind {
        if job == "model" {
            JobKind::Model
        } else {
            JobKind::Prediction
        }
    }

    /// The singular name used in answers (`model`, `prediction`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Model => "model",
            JobKind::Prediction => "prediction",
        }
    }
}

/// How a delivery names its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobRef {
    /// By our id and its owner (train and predict routes).
    Owned {
        /// Which table.
        kind: JobKind,
        /// Our row id.
        id: Uuid,
        /// The owner the URL names.
        user_id: Uuid,
    },
    /// By the Replicate id in the body (unified, completed and reconcile).
    ByReplicateId,
}

/// What a delivery does to a job, for the RPC call.
#[derive(Debug, Clone)]
pub struct EventToApply<'a> {
    /// The dedup key: the delivery's `webhook-id`.
    pub webhook_id: &'a str,
    /// The route that received it.
    pub route: &'a str,
    /// Which job.
    pub job: JobRef,
    /// The parsed body.
    pub delivery: &'a Delivery,
    /// The output to store (Replicate's, or rewritten to stored URLs).
    pub output: OutputJson<'a>,
    /// Stored file URLs in order, when files were copied.
    pub output_urls: Option<&'a [String]>,
    /// A training's stored weights.
    pub weights_url: Option<&'a str>,
    /// A training's new version.
    pub version: Option<&'a str>,
    /// `applied`, or `reconciled` when reconcile applies it.
    pub applied_outcome: &'a str,
}

/// The output a call stores: Replicate's JSON text passed through untouched, or the tree
/// rewritten to the stored files' URLs.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum OutputJson<'a> {
    /// As received (`None` for null).
    Received(Option<&'a RawValue>),
    /// Rewritten after its files were copied.
    Rewritten(&'a Value),
}

/// The outcome the database recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The event changed the job.
    Applied,
    /// Reconcile applied what Replicate's API reported.
    Reconciled,
    /// This webhook id was already applied, or the job already has this terminal status.
    Duplicate,
    /// The event is older than what is stored; nothing changed.
    Stale,
    /// No job has that id.
    NotFound,
}

impl Outcome {
    /// The name used in answers and `webhook_events`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Reconciled => "reconciled",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
            Outcome::NotFound => "not_found",
        }
    }
}

/// What `apply_replicate_event` answers.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Applied {
    /// What happened.
    pub outcome: Outcome,
    /// `model`, `prediction` or `upscale`.
    pub job: Option<String>,
    /// Our row id.
    pub job_id: Option<Uuid>,
    /// The job's owner.
    pub user_id: Option<Uuid>,
    /// The status stored after the call.
    pub status: Option<String>,
    /// Whether this call wrote the refund.
    #[serde(default)]
    pub refunded: bool,
}

impl Applied {
    /// The answer when no job matches.
    pub fn not_found() -> Applied {
        Applied {
            outcome: Outcome::NotFound,
            job: None,
            job_id: None,
            user_id: None,
            status: None,
            refunded: false,
        }
    }
}

/// A job as found by `find_replicate_job`, before any change.
#[derive(Debug, Clone, Deserialize)]
pub struct FoundJob {
    /// `model`, `prediction` or `upscale`.
    pub job: String,
    /// Our row id.
    pub job_id: Uuid,
    /// The job's owner.
    pub user_id: Uuid,
    /// The stored status.
    pub status: String,
}

impl FoundJob {
    /// The table the job is in.
    pub fn kind(&self) -> JobKind {
        JobKind::of_job(&self.job)
    }

    /// Whether the stored status is terminal (then no event changes it).
    pub fn is_terminal(&self) -> bool {
        Status::parse(&self.status).is_some_and(Status::is_terminal)
    }
}

/// A job reconcile should ask Replicate about.
#[derive(Debug, Clone, Deserialize)]
pub struct QuietJob {
    /// `model`, `prediction` or `upscale`.
    pub job: String,
    /// Our row id.
    pub job_id: Uuid,
    /// The job's owner.
    pub user_id: Uuid,
    /// Replicate's id.
    pub replicate_id: String,
    /// The stored status.
    pub status: String,
}

impl QuietJob {
    /// The table the job is in.
    pub fn kind(&self) -> JobKind {
        JobKind::of_job(&self.job)
    }
}

/// Why a store call failed. Messages carry no URL, key or upstream body.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer in time, or no connection.
    #[error("database did not answer: {0}")]
    Unreachable(&'static str),
    /// PostgREST answered with an error status.
    #[error("database refused the call (HTTP {status}, code {code})")]
    Rejected {
        /// HTTP status from PostgREST.
        status: u16,
        /// PostgREST's or PostgreSQL's error code.
        code: String,
    },
    /// The answer was not what the SQL function returns.
    #[error("database answered in an unexpected shape")]
    Decode,
}

/// PostgREST client, built once per cold start.
#[derive(Clone)]
pub struct Store {
    client: postgrest::Postgrest,
    timeout: Duration,
}

#[derive(Serialize)]
struct ApplyArgs<'a> {
    p_webhook_id: &'a str,
    p_route: &'a str,
    p_replicate_id: &'a str,
    p_status: &'a str,
    p_job_kind: Option<JobKind>,
    p_job_id: Option<Uuid>,
    p_user_id: Option<Uuid>,
    p_output: OutputJson<'a>,
    p_output_urls: Option<&'a [String]>,
    p_weights_url: Option<&'a str>,
    p_version: Option<&'a str>,
    p_error: Option<&'a str>,
    p_metrics: Option<&'a Value>,
    #[serde(with = "time::serde::rfc3339::option")]
    p_started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    p_completed_at: Option<OffsetDateTime>,
    p_outcome: &'a str,
}

#[derive(Serialize)]
struct FindArgs<'a> {
    p_replicate_id: &'a str,
    p_job_kind: Option<JobKind>,
    p_job_id: Option<Uuid>,
    p_user_id: Option<Uuid>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds the service key in its headers: show nothing of it.
        f.debug_struct("Store")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Builds the client; no connection is made until the first call.
    pub fn new(config: &DatabaseConfig, timeout: Duration) -> Store {
        let key = config.service_key.expose();
        let client = postgrest::Postgrest::new(config.rest_url.clone())
            .insert_header("apikey", key)
            .insert_header("Authorization", format!("Bearer {key}"));
        Store { client, timeout }
    }

    /// Applies a delivery in one transaction and returns what was recorded.
    pub async fn apply(&self, event: &EventToApply<'_>) -> Result<Applied, StoreError> {
        let (kind, id, user) = match event.job {
            JobRef::Owned { kind, id, user_id } => (Some(kind), Some(id), Some(user_id)),
            JobRef::ByReplicateId => (None, None, None),
        };
        let d = event.delivery;
        let args = ApplyArgs {
            p_webhook_id: event.webhook_id,
            p_route: event.route,
            p_replicate_id: &d.id,
            p_status: d.status.as_str(),
            p_job_kind: kind,
            p_job_id: id,
            p_user_id: user,
            p_output: event.output,
            p_output_urls: event.output_urls,
            p_weights_url: event.weights_url,
            p_version: event.version,
            p_error: d.error.as_deref(),
            p_metrics: d.metrics.as_ref(),
            p_started_at: d.started_at,
            p_completed_at: d.completed_at,
            p_outcome: event.applied_outcome,
        };
        self.rpc("apply_replicate_event", &args).await
    }

    /// Finds a job without changing it (`None` when no row matches).
    pub async fn find(
        &self,
        replicate_id: &str,
        job: JobRef,
    ) -> Result<Option<FoundJob>, StoreError> {
        let (kind, id, user) = match job {
            JobRef::Owned { kind, id, user_id } => (Some(kind), Some(id), Some(user_id)),
            JobRef::ByReplicateId => (None, None, None),
        };
        let args = FindArgs {
            p_replicate_id: replicate_id,
            p_job_kind: kind,
            p_job_id: id,
            p_user_id: user,
        };
        self.rpc("find_replicate_job", &args).await
    }

    /// Jobs with a Replicate id, not terminal, quiet for `after_seconds` and younger than
    /// `max_age_seconds`, oldest first.
    pub async fn quiet_jobs(
        &self,
        after_seconds: u32,
        max_age_seconds: u32,
        limit: u32,
    ) -> Result<Vec<QuietJob>, StoreError> {
        #[derive(Serialize)]
        struct Args {
            p_older_than_seconds: u32,
            p_max_age_seconds: u32,
            p_limit: u32,
        }
        let args = Args {
            p_older_than_seconds: after_seconds,
            p_max_age_seconds: max_age_seconds,
            p_limit: limit,
        };
        self.rpc("stale_replicate_jobs", &args).await
    }

    /// Moves a job's `updated_at` to now, so reconcile waits another quiet period.
    pub async fn touch(&self, kind: JobKind, id: Uuid) -> Result<(), StoreError> {
        #[derive(Serialize)]
        struct Args {
            p_job_kind: JobKind,
            p_job_id: Uuid,
        }
        let body = serde_json::to_string(&Args {
            p_job_kind: kind,
            p_job_id: id,
        })
        .map_err(|_| StoreError::Decode)?;
        let request = self.client.rpc("touch_replicate_job", body).build();
        check_status(self.send(request).await?).await.map(drop)
    }

    /// The email address of a user's profile, if any.
    pub async fn profile_email(&self, user_id: Uuid) -> Result<Option<String>, StoreError> {
        #[derive(Deserialize)]
        struct Profile {
            email: Option<String>,
        }
        let request = self
            .client
            .from("profiles")
            .select("email")
            .eq("id", user_id.to_string())
            .build();
        let response = check_status(self.send(request).await?).await?;
        let rows: Vec<Profile> = response.json().await.map_err(|_| StoreError::Decode)?;
        Ok(rows.into_iter().next().and_then(|p| p.email))
    }

    /// Checks PostgREST answers and reaches the schema, for the health route.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let request = self
            .client
            .from("webhook_events")
            .select("webhook_id")
            .limit(1)
            .build();
        let response = self.send(request).await?;
        check_status(response).await.map(drop)
    }

    async fn rpc<T: serde::de::DeserializeOwned>(
        &self,
        function: &str,
        args: &impl Serialize,
    ) -> Result<T, StoreError> {
        let body = serde_json::to_string(args).map_err(|_| StoreError::Decode)?;
        let request = self.client.rpc(function, body).build();
        let response = check_status(self.send(request).await?).await?;
        response.json::<T>().await.map_err(|_| StoreError::Decode)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, StoreError> {
        request.timeout(self.timeout).send().await.map_err(|e| {
            StoreError::Unreachable(if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection refused or failed"
            } else {
                "request failed"
            })
        })
    }
}

async fn check_status(response: reqwest::Response) -> Result<reqwest::Response, StoreError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    #[derive(Deserialize)]
    struct PgrstError {
        code: Option<String>,
    }
    // Only PostgREST's error code is kept: its message may quote data or SQL.
    let code = response
        .json::<PgrstError>()
        .await
        .ok()
        .and_then(|e| e.code)
        .unwrap_or_else(|| "none".into());
    Err(StoreError::Rejected {
        status: status.as_u16(),
        code,
    })
}
