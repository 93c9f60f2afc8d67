//! Job state in Supabase, through PostgREST.
//!
//! Every delivery's database effects happen inside one SQL function
//! (`apply_replicate_event`, in `supabase/migrations/`), called with one RPC round trip, so
//! concurrent deliveries cannot interleave and a refund happens at most once.

use crate::config::DatabaseConfig;
use crate::job::{Job, JobKind, JobRef, Outcome};
use crate::replicate::{Delivery, Status};
use crate::upstream::{no_answer, read_at_most};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// One event to apply, serialised as the arguments of `apply_replicate_event`.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyEvent<'a> {
    /// What Replicate reported, for the steps before the call (which files to copy).
    #[serde(skip)]
    pub delivery: &'a Delivery,
    /// The dedup key: the delivery's `webhook-id`, or reconcile's own id.
    #[serde(rename = "p_webhook_id")]
    pub webhook_id: &'a str,
    /// The route recorded in `webhook_events`.
    #[serde(rename = "p_route")]
    pub route: &'a str,
    /// Replicate's id for the job; `None` for a job that never got one (reconcile ends
    /// such orphans).
    #[serde(rename = "p_replicate_id")]
    pub replicate_id: Option<&'a str>,
    /// The status Replicate reported.
    #[serde(rename = "p_status")]
    pub status: Status,
    /// Which job (`p_job_kind`, `p_job_id`, `p_user_id`).
    #[serde(flatten)]
    pub job: JobRef,
    /// The output to store: Replicate's, or rewritten to the stored files.
    #[serde(rename = "p_output")]
    pub output: OutputJson<'a>,
    /// Stored file URLs in order, when files were copied.
    #[serde(rename = "p_output_urls")]
    pub output_urls: Option<&'a [String]>,
    /// A training's stored weights.
    #[serde(rename = "p_weights_url")]
    pub weights_url: Option<&'a str>,
    /// A finished training's new model version.
    #[serde(rename = "p_version")]
    pub version: Option<&'a str>,
    /// The job's error message.
    #[serde(rename = "p_error")]
    pub error: Option<&'a str>,
    /// Replicate's metrics.
    #[serde(rename = "p_metrics")]
    pub metrics: Option<&'a Value>,
    /// When the job started.
    #[serde(rename = "p_started_at", with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When the job finished.
    #[serde(rename = "p_completed_at", with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
    /// The outcome recorded when the event changes the job: `applied`, or `reconciled`.
    #[serde(rename = "p_outcome")]
    pub outcome: Outcome,
}

impl<'a> ApplyEvent<'a> {
    /// The event `delivery` describes, with its output as received.
    pub fn new(
        webhook_id: &'a str,
        route: &'a str,
        job: JobRef,
        delivery: &'a Delivery,
        outcome: Outcome,
    ) -> ApplyEvent<'a> {
        ApplyEvent {
            delivery,
            webhook_id,
            route,
            replicate_id: Some(&delivery.id),
            status: delivery.status,
            job,
            output: OutputJson::Received(delivery.output.raw()),
            output_urls: None,
            weights_url: None,
            // A finished training reports the new model version in its output.
            version: delivery.output.field("version"),
            error: delivery.error.as_deref(),
            metrics: delivery.metrics.as_ref(),
            started_at: delivery.started_at,
            completed_at: delivery.completed_at,
            outcome,
        }
    }
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

/// What `apply_replicate_event` answers.
#[derive(Debug, Clone, Deserialize)]
pub struct Applied {
    /// What happened.
    pub outcome: Outcome,
    /// The job, when one matched.
    pub job: Option<Job>,
    /// Our row id.
    pub job_id: Option<Uuid>,
    /// The job's owner.
    pub user_id: Option<Uuid>,
    /// The status stored after the call.
    pub status: Option<Status>,
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
    /// Which job.
    pub job: Job,
    /// Our row id.
    pub job_id: Uuid,
    /// The job's owner.
    pub user_id: Uuid,
    /// The stored status.
    pub status: Status,
    /// The Replicate id stored on the row, if any yet.
    pub replicate_id: Option<String>,
}

impl FoundJob {
    /// Whether an event about `replicate_id` is about another run of this job (train and
    /// predict name our row; the row already follows a different Replicate job), which
    /// the database will record as stale.
    pub fn belongs_to_another_run(&self, replicate_id: &str) -> bool {
        self.replicate_id
            .as_deref()
            .is_some_and(|stored| stored != replicate_id)
    }
}

/// A job reconcile should ask Replicate about.
#[derive(Debug, Clone, Deserialize)]
pub struct QuietJob {
    /// Which job.
    pub job: Job,
    /// Our row id.
    pub job_id: Uuid,
    /// The job's owner.
    pub user_id: Uuid,
    /// Replicate's id; `None` for an orphan (charged, never started on Replicate).
    pub replicate_id: Option<String>,
    /// The stored status.
    pub status: Status,
}

/// What a failed check left on the job: reconcile looks again after `next_check_at`.
#[derive(Debug, Clone, Deserialize)]
pub struct Backoff {
    /// Failed checks in a row.
    pub attempts: u32,
    /// No check before then.
    #[serde(with = "time::serde::rfc3339")]
    pub next_check_at: OffsetDateTime,
}

impl QuietJob {
    /// The job as train/predict would name it: by our id and its owner.
    pub fn owned(&self) -> JobRef {
        JobRef::Owned {
            kind: self.job.kind(),
            id: self.job_id,
            user_id: self.user_id,
        }
    }
}

/// What has been happening lately, as `recent_activity` answers it: health's `recent`
/// block (see the migration for what each number counts).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recent {
    /// The window `deliveries` and `rejected` cover.
    pub window_seconds: u32,
    /// When the newest delivery from Replicate was recorded.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_delivery_at: Option<OffsetDateTime>,
    /// Deliveries in the window, by outcome.
    pub deliveries: BTreeMap<String, u64>,
    /// Refused requests in the window, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Jobs not terminal whose row has not changed for the stuck period.
    pub stuck_jobs: u64,
    /// Jobs reconcile finished in the last 24 hours.
    pub reconciled_24h: u64,
    /// Jobs failed in the last 24 hours because their outputs expired first.
    pub expired_outputs_24h: u64,
}

/// What one retention call deleted.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pruned {
    /// `webhook_events` rows.
    pub webhook_events: u64,
    /// Rejection count rows (one per route, reason and minute).
    pub rejections: u64,
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
    /// The API answered with a redirect, which a client carrying the service key never
    /// follows: the key would go to whatever host it names.
    #[error("database answered with a redirect (HTTP {0}), which is not followed")]
    Redirected(u16),
}

/// The `User-Agent` of every call to Supabase.
const SERVER_AGENT: &str = concat!("replicate-webhooks/", env!("CARGO_PKG_VERSION"));

/// PostgREST client, built once per cold start.
#[derive(Clone)]
pub struct Store {
    client: Rest,
    timeout: Duration,
}

/// PostgREST's base URL, the key's headers and an HTTP client that follows no redirect;
/// requests are built with the `postgrest` crate's query builder. (`postgrest::Postgrest`
/// itself follows redirects and panics on a header value it cannot use.)
#[derive(Clone)]
struct Rest {
    url: String,
    headers: reqwest::header::HeaderMap,
    // None when the client could not be built (its TLS backend did not start): each call
    // then fails with an error instead of the process panicking.
    http: Option<reqwest::Client>,
}

impl Rest {
    fn new(config: &DatabaseConfig) -> Rest {
        use crate::config::ServiceKey;
        use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, USER_AGENT};
        let mut headers = HeaderMap::new();
        // Supabase refuses secret keys from browsers; say plainly what this is.
        headers.insert(USER_AGENT, HeaderValue::from_static(SERVER_AGENT));
        // Configuration refuses control characters, so these always parse; a key that did
        // not would be left out and PostgREST would answer 401, named in the error.
        let (key, bearer) = match &config.service_key {
            ServiceKey::Secret(key) => (key.expose(), false),
            ServiceKey::LegacyJwt(key) => (key.expose(), true),
        };
        if let Ok(mut value) = HeaderValue::from_str(key) {
            value.set_sensitive(true);
            headers.insert("apikey", value);
        }
        if bearer && let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {key}")) {
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(3))
            .build()
            .ok();
        Rest {
            url: config.rest_url.clone(),
            headers,
            http,
        }
    }

    fn builder(&self, path: &str) -> Result<postgrest::Builder, StoreError> {
        let http = self.http.clone().ok_or(StoreError::Unreachable(
            "the HTTP client could not be built",
        ))?;
        Ok(postgrest::Builder::new(
            format!("{}/{path}", self.url),
            None,
            self.headers.clone(),
            http,
        ))
    }

    fn from(&self, table: &str) -> Result<postgrest::Builder, StoreError> {
        self.builder(table)
    }

    fn rpc(&self, function: &str, params: String) -> Result<postgrest::Builder, StoreError> {
        Ok(self.builder(&format!("rpc/{function}"))?.rpc(params))
    }
}

#[derive(Serialize)]
struct FindArgs<'a> {
    p_replicate_id: &'a str,
    #[serde(flatten)]
    job: JobRef,
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
        Store {
            client: Rest::new(config),
            timeout,
        }
    }

    /// Applies an event in one transaction and returns what was recorded.
    pub async fn apply(&self, event: &ApplyEvent<'_>) -> Result<Applied, StoreError> {
        self.rpc("apply_replicate_event", event).await
    }

    /// Finds a job without changing it (`None` when no row matches).
    pub async fn find(
        &self,
        replicate_id: &str,
        job: JobRef,
    ) -> Result<Option<FoundJob>, StoreError> {
        let args = FindArgs {
            p_replicate_id: replicate_id,
            job,
        };
        self.rpc("find_replicate_job", &args).await
    }

    /// Takes the copy lease of a job for `seconds` (false: another holder's runs, or the job
    /// is finished).
    pub async fn claim_copy(
        &self,
        kind: JobKind,
        id: Uuid,
        holder: &str,
        seconds: u32,
    ) -> Result<bool, StoreError> {
        #[derive(Serialize)]
        struct Args<'a> {
            p_job_kind: JobKind,
            p_job_id: Uuid,
            p_holder: &'a str,
            p_seconds: u32,
        }
        let args = Args {
            p_job_kind: kind,
            p_job_id: id,
            p_holder: holder,
            p_seconds: seconds,
        };
        self.rpc("claim_copy", &args).await
    }

    /// Gives back the copy lease `holder` took.
    pub async fn release_copy(
        &self,
        kind: JobKind,
        id: Uuid,
        holder: &str,
    ) -> Result<(), StoreError> {
        #[derive(Serialize)]
        struct Args<'a> {
            p_job_kind: JobKind,
            p_job_id: Uuid,
            p_holder: &'a str,
        }
        self.call(
            "release_copy",
            &Args {
                p_job_kind: kind,
                p_job_id: id,
                p_holder: holder,
            },
        )
        .await
    }

    /// Adds `note` to the detail of the `webhook_events` row of `webhook_id`.
    pub async fn note(&self, webhook_id: &str, note: &str) -> Result<(), StoreError> {
        #[derive(Serialize)]
        struct Args<'a> {
            p_webhook_id: &'a str,
            p_note: &'a str,
        }
        self.call(
            "note_replicate_event",
            &Args {
                p_webhook_id: webhook_id,
                p_note: note,
            },
        )
        .await
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

    /// Reconcile's second list: orphans (no Replicate id) created more than
    /// `orphan_after_seconds` ago, and jobs with a Replicate id created `max_age_seconds` ago
    /// or earlier and quiet for `after_seconds`; not terminal, next check due, oldest first.
    pub async fn lost_jobs(
        &self,
        after_seconds: u32,
        max_age_seconds: u32,
        orphan_after_seconds: u32,
        limit: u32,
    ) -> Result<Vec<QuietJob>, StoreError> {
        #[derive(Serialize)]
        struct Args {
            p_older_than_seconds: u32,
            p_max_age_seconds: u32,
            p_orphan_after_seconds: u32,
            p_limit: u32,
        }
        let args = Args {
            p_older_than_seconds: after_seconds,
            p_max_age_seconds: max_age_seconds,
            p_orphan_after_seconds: orphan_after_seconds,
            p_limit: limit,
        };
        self.rpc("lost_replicate_jobs", &args).await
    }

    /// Records a failed check: one more attempt, and no check before a growing delay
    /// (`None` when the job is gone).
    pub async fn check_failed(
        &self,
        kind: JobKind,
        id: Uuid,
    ) -> Result<Option<Backoff>, StoreError> {
        #[derive(Serialize)]
        struct Args {
            p_job_kind: JobKind,
            p_job_id: Uuid,
        }
        let args = Args {
            p_job_kind: kind,
            p_job_id: id,
        };
        self.rpc("reconcile_check_failed", &args).await
    }

    /// Moves a job's `updated_at` to now, so reconcile waits another quiet period, and
    /// clears its backoff (the check worked).
    pub async fn touch(&self, kind: JobKind, id: Uuid) -> Result<(), StoreError> {
        #[derive(Serialize)]
        struct Args {
            p_job_kind: JobKind,
            p_job_id: Uuid,
        }
        self.call(
            "touch_replicate_job",
            &Args {
                p_job_kind: kind,
                p_job_id: id,
            },
        )
        .await
    }

    /// Adds one to the current minute's count of `route` refusing a request for `reason`.
    pub async fn record_rejection(
        &self,
        route: &str,
        reason: crate::activity::Rejection,
    ) -> Result<(), StoreError> {
        #[derive(Serialize)]
        struct Args<'a> {
            p_route: &'a str,
            p_reason: &'a str,
        }
        let args = Args {
            p_route: route,
            p_reason: reason.as_str(),
        };
        self.call("record_webhook_rejection", &args).await
    }

    /// What has been happening: deliveries and refusals in the last `window_seconds`, jobs
    /// unchanged for `stuck_after_seconds`, and the last day's reconciled and expired jobs.
    pub async fn recent_activity(
        &self,
        window_seconds: u32,
        stuck_after_seconds: u32,
    ) -> Result<Recent, StoreError> {
        #[derive(Serialize)]
        struct Args {
            p_window_seconds: u32,
            p_stuck_after_seconds: u32,
        }
        let args = Args {
            p_window_seconds: window_seconds,
            p_stuck_after_seconds: stuck_after_seconds,
        };
        self.rpc("recent_activity", &args).await
    }

    /// Deletes `webhook_events` rows and rejection counts older than `retention_days`, the
    /// oldest first, at most `batch` of each.
    pub async fn prune_history(
        &self,
        retention_days: u32,
        batch: u32,
    ) -> Result<Pruned, StoreError> {
        #[derive(Serialize)]
        struct Args {
            p_retention_days: u32,
            p_batch: u32,
        }
        let args = Args {
            p_retention_days: retention_days,
            p_batch: batch,
        };
        self.rpc("prune_webhook_history", &args).await
    }

    /// The email address of a user's profile, if any.
    pub async fn profile_email(&self, user_id: Uuid) -> Result<Option<String>, StoreError> {
        #[derive(Deserialize)]
        struct Profile {
            email: Option<String>,
        }
        let request = self
            .client
            .from("profiles")?
            .select("email")
            .eq("id", user_id.to_string())
            .build();
        let response = check_status(self.send(request).await?).await?;
        let rows: Vec<Profile> = decode(response).await?;
        Ok(rows.into_iter().next().and_then(|p| p.email))
    }

    /// Checks PostgREST answers and reaches the schema, for the health route.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let request = self
            .client
            .from("webhook_events")?
            .select("webhook_id")
            .limit(1)
            .build();
        let response = self.send(request).await?;
        check_status(response).await.map(drop)
    }

    /// Calls a SQL function that returns nothing.
    async fn call(&self, function: &str, args: &impl Serialize) -> Result<(), StoreError> {
        let body = serde_json::to_string(args).map_err(|_| StoreError::Decode)?;
        let request = self.client.rpc(function, body)?.build();
        check_status(self.send(request).await?).await.map(drop)
    }

    async fn rpc<T: serde::de::DeserializeOwned>(
        &self,
        function: &str,
        args: &impl Serialize,
    ) -> Result<T, StoreError> {
        let body = serde_json::to_string(args).map_err(|_| StoreError::Decode)?;
        let request = self.client.rpc(function, body)?.build();
        let response = check_status(self.send(request).await?).await?;
        decode(response).await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, StoreError> {
        request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| StoreError::Unreachable(no_answer(&e)))
    }
}

/// The most of a successful answer read: the SQL functions answer a few hundred bytes.
const ANSWER_LIMIT: usize = 1024 * 1024;
/// The most of an error answer read, for its code.
const ERROR_LIMIT: usize = 64 * 1024;

/// A successful answer's JSON, read up to [`ANSWER_LIMIT`].
async fn decode<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, StoreError> {
    let body = read_at_most(response, ANSWER_LIMIT)
        .await
        .map_err(|_| StoreError::Decode)?;
    serde_json::from_slice(&body).map_err(|_| StoreError::Decode)
}

async fn check_status(response: reqwest::Response) -> Result<reqwest::Response, StoreError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status.is_redirection() {
        return Err(StoreError::Redirected(status.as_u16()));
    }
    #[derive(Deserialize)]
    struct PgrstError {
        code: Option<String>,
    }
    // Only PostgREST's error code is kept: its message may quote data or SQL.
    let code = read_at_most(response, ERROR_LIMIT)
        .await
        .ok()
        .and_then(|body| serde_json::from_slice::<PgrstError>(&body).ok())
        .and_then(|e| e.code)
        .unwrap_or_else(|| "none".into());
    Err(StoreError::Rejected {
        status: status.as_u16(),
        code,
    })
}
