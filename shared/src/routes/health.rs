//! `GET /api/health`: configuration and dependency checks, run in parallel with short
//! timeouts. Names what is missing or unreachable; never a secret, key or URL.
//!
//! With `Authorization: Bearer $CRON_SECRET` the answer adds `recent`: what has been
//! happening (deliveries, refused requests, stuck, reconciled and expired jobs), from one
//! database call. Without it (or with another bearer) that call is not made.

use crate::config::{ConfigError, Env, HealthConfig, bearer_token};
use crate::error::ApiError;
use crate::logging::LogFields;
use crate::platform::{Handler, Reply, SMALL_BODY_LIMIT};
use crate::respond;
use crate::storage::Storage;
use crate::store::{Recent, Store};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde::Serialize;
use std::sync::OnceLock;
use std::time::Duration;

/// How long each dependency check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The window of `recent`'s delivery and refusal counts.
pub const RECENT_WINDOW_SECONDS: u32 = 3600;

/// How long a job that is not terminal may go unchanged before `recent` counts it stuck:
/// reconcile checks a job after `RECONCILE_AFTER_SECONDS` (120) and moves it when it is
/// still running, so a job unchanged for 10 minutes is one reconcile is not finishing.
pub const STUCK_AFTER_SECONDS: u32 = 600;

/// The health route's handler.
#[derive(Debug)]
pub struct Health {
    config: HealthConfig,
    store: OnceLock<Store>,
    storage: OnceLock<Storage>,
}

/// Why a part is not working.
enum Problem {
    /// A variable it needs is missing or invalid.
    NotConfigured(ConfigError),
    /// It is configured but did not answer well.
    Unreachable(String),
}

impl Problem {
    fn state(&self) -> &'static str {
        match self {
            Problem::NotConfigured(_) => "not configured",
            Problem::Unreachable(_) => "unreachable",
        }
    }

    fn why(&self) -> String {
        match self {
            Problem::NotConfigured(e) => e.to_string(),
            Problem::Unreachable(why) => why.clone(),
        }
    }
}

/// Health's answer.
#[derive(Serialize)]
struct Report {
    status: &'static str,
    webhook: &'static str,
    database: &'static str,
    storage: &'static str,
    email: &'static str,
    reconcile: &'static str,
    version: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<String>,
    /// Only for the cron bearer; `null` when it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    recent: Option<Option<Recent>>,
}

/// Reconcile is optional: it is `not configured` while any of its variables is missing,
/// which leaves the deployment healthy; a variable set to something invalid is a fault.
fn reconcile_state(errors: &[ConfigError], problems: &mut Vec<String>) -> (&'static str, bool) {
    problems.extend(errors.iter().map(|e| format!("reconcile: {e}")));
    if errors
        .iter()
        .any(|e| matches!(e, ConfigError::Invalid { .. }))
    {
        ("invalid", false)
    } else if errors.is_empty() {
        ("configured", true)
    } else {
        ("not configured", true)
    }
}

impl Health {
    /// A handler configured from `env`; clients are built on the first request.
    pub fn new(env: &impl Env) -> Health {
        Health {
            config: HealthConfig::from_env(env),
            store: OnceLock::new(),
            storage: OnceLock::new(),
        }
    }

    async fn database(&self) -> Result<(), Problem> {
        let config = self.config.database.as_ref().map_err(not_configured)?;
        let store = self.store.get_or_init(|| Store::new(config, CHECK_TIMEOUT));
        store
            .ping()
            .await
            .map_err(|e| Problem::Unreachable(e.to_string()))
    }

    /// Recent activity, for a request bearing `CRON_SECRET`; `None` for any other request
    /// (nothing is asked of the database then).
    async fn recent(&self, req: &Request<Bytes>) -> Option<Result<Recent, String>> {
        let secret = self.config.cron_secret.as_ref()?;
        let offered = bearer_token(req.headers())?;
        if !secret.matches(offered) {
            return None;
        }
        let Ok(config) = self.config.database.as_ref() else {
            return Some(Err("the database is not configured".into()));
        };
        let store = self.store.get_or_init(|| Store::new(config, CHECK_TIMEOUT));
        Some(
            store
                .recent_activity(RECENT_WINDOW_SECONDS, STUCK_AFTER_SECONDS)
                .await
                .map_err(|e| e.to_string()),
        )
    }

    async fn storage(&self) -> Result<(), Problem> {
        let config = self.config.storage.as_ref().map_err(not_configured)?;
        let storage = self.storage.get_or_init(|| Storage::new(config));
        storage
            .ping(CHECK_TIMEOUT)
            .await
            .map_err(|e| Problem::Unreachable(e.to_string()))
    }
}

fn not_configured(e: &ConfigError) -> Problem {
    Problem::NotConfigured(e.clone())
}

impl Handler for Health {
    fn name(&self) -> &'static str {
        "health"
    }

    fn body_limit(&self) -> Option<usize> {
        Some(SMALL_BODY_LIMIT)
    }

    fn config_error(&self) -> Option<&ConfigError> {
        // Health reports configuration problems; it is never unconfigured itself.
        None
    }

    // Nothing to add to the log line: the answer names every problem.
    async fn handle(&self, req: Request<Bytes>, _log: &mut LogFields) -> Reply {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
        }
        let (database, storage, recent) =
            tokio::join!(self.database(), self.storage(), self.recent(&req));
        let webhook = match self.config.webhook.first() {
            None => Ok(()),
            Some(first) => Err(Problem::NotConfigured(first.clone())),
        };
        let email = match &self.config.email {
            Ok(true) => Ok("configured"),
            Ok(false) => Ok("disabled"),
            Err(e) => Err(Problem::NotConfigured(e.clone())),
        };

        let mut problems = Vec::new();
        let mut failed = false;
        let mut state = |name: &str, result: Result<&'static str, Problem>| match result {
            Ok(good) => good,
            Err(problem) => {
                failed = true;
                problems.push(format!("{name}: {}", problem.why()));
                problem.state()
            }
        };
        let webhook = state("webhook", webhook.map(|()| "configured"));
        let database = state("database", database.map(|()| "reachable"));
        let storage = state("storage", storage.map(|()| "reachable"));
        let email = state("email", email);
        // Every webhook problem is listed, not only the first.
        problems.extend(
            self.config
                .webhook
                .iter()
                .skip(1)
                .map(|e| format!("webhook: {e}")),
        );
        let (reconcile, reconcile_ok) = reconcile_state(&self.config.reconcile, &mut problems);
        // Not being able to read the activity is named, but is no fault of the deployment.
        let recent = recent.map(|read| {
            read.map_err(|why| problems.push(format!("recent: {why}")))
                .ok()
        });
        let healthy = !failed && reconcile_ok;
        let report = Report {
            status: if healthy { "healthy" } else { "degraded" },
            webhook,
            database,
            storage,
            email,
            reconcile,
            version: env!("CARGO_PKG_VERSION"),
            problems,
            recent,
        };
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        Ok(respond::json(status, &report))
    }
}
