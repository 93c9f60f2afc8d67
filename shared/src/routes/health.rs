//! `GET /api/health`: configuration and dependency checks, run in parallel with short
//! timeouts. Names what is missing or unreachable; never a secret, key or URL.

use crate::config::{ConfigError, Env, HealthConfig};
use crate::error::ApiError;
use crate::logging::LogFields;
use crate::platform::{Handler, SMALL_BODY_LIMIT};
use crate::respond;
use crate::storage::Storage;
use crate::store::Store;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde::Serialize;
use std::sync::OnceLock;
use std::time::Duration;

/// How long each dependency check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

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

    async fn handle(&self, req: Request<Bytes>, log: &mut LogFields) -> Response<Bytes> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return respond::error(&ApiError::MethodNotAllowed { allow: "GET, HEAD" }, log);
        }
        let (database, storage) = tokio::join!(self.database(), self.storage());
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
        };
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        respond::json(status, &report)
    }
}
