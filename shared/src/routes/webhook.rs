//! The four webhook routes: train, predict, unified and completed.
//!
//! Checks run in the contract's order: method, size, signature, query, body, job. Nothing
//! from an unverified body is parsed, stored or logged.

use crate::apply::{Event, Services};
use crate::config::Settings;
use crate::error::ApiError;
use crate::logging::LogFields;
use crate::platform::{BodyTooLarge, Handler};
use crate::replicate::Delivery;
use crate::respond;
use crate::signature::ID_HEADER;
use crate::store::{Applied, JobKind, JobRef, Outcome};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde_json::json;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// Which webhook route a handler serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookRoute {
    /// `/api/replicate/webhooks/train?user_id=U&model_id=M`
    Train,
    /// `/api/replicate/webhooks/predict?user_id=U&prediction_id=P`
    Predict,
    /// `/api/webhooks/replicate`: the job is found by the Replicate id in the body.
    Unified,
    /// `/api/webhooks/replicate/completed`: as unified, terminal statuses only.
    Completed,
}

impl WebhookRoute {
    /// The route's name, as its binary is called.
    pub fn name(self) -> &'static str {
        match self {
            WebhookRoute::Train => "train",
            WebhookRoute::Predict => "predict",
            WebhookRoute::Unified => "unified",
            WebhookRoute::Completed => "completed",
        }
    }
}

/// A webhook route's handler: its configuration, and clients made on first use.
#[derive(Debug)]
pub struct Webhook {
    route: WebhookRoute,
    services: Arc<Services>,
}

impl Webhook {
    /// A handler for `route`, configured by `settings`; builds no client yet.
    pub fn new(route: WebhookRoute, settings: Settings) -> Webhook {
        Webhook {
            route,
            services: Arc::new(Services::new(settings)),
        }
    }

    async fn process(
        &self,
        req: Request<Bytes>,
        log: &mut LogFields,
    ) -> Result<Response<Bytes>, ApiError> {
        if req.method() != Method::POST {
            return Err(ApiError::MethodNotAllowed { allow: "POST" });
        }
        let settings = self.services.settings();
        let limit = settings.max_body_bytes.clone()?;
        if req.extensions().get::<BodyTooLarge>().is_some() || req.body().len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let webhook = settings
            .webhook
            .as_ref()
            .map_err(|e| ApiError::Config(e.clone()))?;
        webhook
            .verifier
            .verify(req.headers(), req.body(), unix_now())?;
        let webhook_id = req
            .headers()
            .get(ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        log.webhook_id = Some(webhook_id.clone());

        let job = self.job_ref(req.uri().query().unwrap_or_default())?;
        let delivery = Delivery::parse(req.body()).map_err(|e| ApiError::BadBody(e.to_string()))?;
        log.replicate_id = Some(delivery.id.clone());
        log.status = Some(delivery.status.to_string());

        if self.route == WebhookRoute::Completed && !delivery.status.is_terminal() {
            return Ok(ignored("status is not terminal"));
        }

        // The copy and the transaction run on their own task: if Replicate gives up waiting
        // and the platform drops this request, the work still finishes (and Replicate's
        // retry then finds it done) instead of stopping halfway.
        let services = Arc::clone(&self.services);
        let route = self.route.name();
        let work = tokio::spawn(async move {
            services
                .apply(Event {
                    webhook_id: &webhook_id,
                    route,
                    job,
                    delivery: &delivery,
                    applied_outcome: Outcome::Applied,
                })
                .await
        });
        let applied = work.await.map_err(|_| ApiError::Interrupted)??;
        if applied.outcome == Outcome::NotFound {
            return self.not_found(job);
        }
        Ok(answer(&applied))
    }

    fn not_found(&self, job: JobRef) -> Result<Response<Bytes>, ApiError> {
        match job {
            JobRef::Owned { kind, .. } => Err(ApiError::JobNotFound {
                kind: kind.as_str(),
            }),
            // Account-wide webhooks deliver every job, including ones this app did not start.
            JobRef::ByReplicateId => Ok(ignored("no job has this id")),
        }
    }

    fn job_ref(&self, query: &str) -> Result<JobRef, ApiError> {
        let (kind, id_param) = match self.route {
            WebhookRoute::Train => (JobKind::Model, "model_id"),
            WebhookRoute::Predict => (JobKind::Prediction, "prediction_id"),
            WebhookRoute::Unified | WebhookRoute::Completed => return Ok(JobRef::ByReplicateId),
        };
        Ok(JobRef::Owned {
            kind,
            id: uuid_param(query, id_param)?,
            user_id: uuid_param(query, "user_id")?,
        })
    }
}

impl Handler for Webhook {
    fn name(&self) -> &'static str {
        self.route.name()
    }

    fn body_limit(&self) -> usize {
        self.services.settings().body_limit()
    }

    async fn handle(&self, req: Request<Bytes>) -> Response<Bytes> {
        let mut log = LogFields::default();
        let response = match self.process(req, &mut log).await {
            Ok(response) => response,
            Err(err) => {
                // The answer's message is generic; the log line says what went wrong below it.
                log.detail = match &err {
                    ApiError::Store(e) => Some(e.to_string()),
                    ApiError::Copy(e) => Some(e.to_string()),
                    _ => None,
                };
                respond::error(&err)
            }
        };
        respond::with_log(response, log)
    }
}

fn uuid_param(query: &str, name: &'static str) -> Result<Uuid, ApiError> {
    let value = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .ok_or_else(|| ApiError::BadQuery(format!("query parameter `{name}` is required")))?;
    Uuid::parse_str(&value)
        .map_err(|_| ApiError::BadQuery(format!("query parameter `{name}` must be a UUID")))
}

fn ignored(reason: &str) -> Response<Bytes> {
    let response = respond::json(
        StatusCode::OK,
        &json!({ "ok": true, "outcome": "ignored", "reason": reason }),
    );
    respond::with_log(
        response,
        LogFields {
            outcome: Some("ignored".into()),
            ..LogFields::default()
        },
    )
}

fn answer(applied: &Applied) -> Response<Bytes> {
    let response = respond::json(
        StatusCode::OK,
        &json!({
            "ok": true,
            "outcome": applied.outcome.as_str(),
            "job": applied.job,
            "job_id": applied.job_id,
            "status": applied.status,
            "refunded": applied.refunded,
        }),
    );
    respond::with_log(
        response,
        LogFields {
            outcome: Some(applied.outcome.as_str().into()),
            ..LogFields::default()
        },
    )
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
