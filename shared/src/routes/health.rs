//! `GET /api/health`: configuration and dependency checks, run in parallel with short
//! timeouts. Names what is missing or unreachable; never a secret, key or URL.

use crate::config::Settings;
use crate::error::ApiError;
use crate::platform::Handler;
use crate::respond;
use crate::storage::Storage;
use crate::store::Store;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use std::sync::OnceLock;
use std::time::Duration;

/// How long each dependency check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The health route's handler.
#[derive(Debug)]
pub struct Health {
    settings: Settings,
    store: OnceLock<Option<Store>>,
    storage: OnceLock<Option<Storage>>,
}

impl Health {
    /// A handler reading `settings`; clients are built on the first request.
    pub fn new(settings: Settings) -> Health {
        Health {
            settings,
            store: OnceLock::new(),
            storage: OnceLock::new(),
        }
    }

    async fn database(&self) -> Result<(), String> {
        let config = self.settings.database.as_ref().map_err(|e| e.to_string())?;
        let store = self
            .store
            .get_or_init(|| Some(Store::new(config, CHECK_TIMEOUT)))
            .as_ref()
            .ok_or("not configured")?;
        store.ping().await.map_err(|e| e.to_string())
    }

    async fn storage(&self) -> Result<(), String> {
        let config = self.settings.storage.as_ref().map_err(|e| e.to_string())?;
        let storage = self
            .storage
            .get_or_init(|| Some(Storage::new(config)))
            .as_ref()
            .ok_or("not configured")?;
        storage.ping(CHECK_TIMEOUT).await.map_err(|e| e.to_string())
    }
}

impl Handler for Health {
    fn name(&self) -> &'static str {
        "health"
    }

    fn body_limit(&self) -> usize {
        self.settings.body_limit()
    }

    async fn handle(&self, req: Request<Bytes>) -> Response<Bytes> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return respond::error(&ApiError::MethodNotAllowed { allow: "GET, HEAD" });
        }
        let (database, storage) = tokio::join!(self.database(), self.storage());
        let webhook = self
            .settings
            .webhook
            .as_ref()
            .map(drop)
            .map_err(|e| e.to_string());

        let mut body = Map::new();
        let mut problems = Vec::new();
        let mut report = |name: &str, result: Result<(), String>, good: &str| {
            let value = match result {
                Ok(()) => good.to_owned(),
                Err(why) => {
                    problems.push(Value::String(format!("{name}: {why}")));
                    if why.ends_with(" is not set") || why.contains(" is invalid") {
                        "not configured".to_owned()
                    } else {
                        "unreachable".to_owned()
                    }
                }
            };
            body.insert(name.to_owned(), Value::String(value));
        };
        report("webhook", webhook, "configured");
        report("database", database, "reachable");
        report("storage", storage, "reachable");

        let healthy = problems.is_empty();
        body.insert(
            "status".into(),
            json!(if healthy { "healthy" } else { "degraded" }),
        );
        body.insert(
            "email".into(),
            json!(if self.settings.email.is_some() {
                "configured"
            } else {
                "disabled"
            }),
        );
        body.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        if !healthy {
            body.insert("problems".into(), Value::Array(problems));
        }
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        respond::json(status, &Value::Object(body))
    }
}
