//! The four webhook routes: train, predict, unified and completed.
//!
//! Checks run in the contract's order: method, size, signature, query, body, job. Nothing
//! from an unverified body is parsed, stored or logged.

use crate::apply::Services;
use crate::config::{self, ConfigError, Env, WebhookConfig};
use crate::deadline::Deadline;
use crate::error::ApiError;
use crate::job::{Job, JobKind, JobRef, Outcome};
use crate::logging::LogFields;
use crate::platform::{Background, BodyTooLarge, Handler, Reply};
use crate::replicate::{Delivery, Status};
use crate::respond;
use crate::signature::Verifier;
use crate::store::{Applied, ApplyEvent};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
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
    ready: Result<Ready, ConfigError>,
    time_limit: Duration,
}

/// A configured webhook route.
#[derive(Debug)]
struct Ready {
    max_body_bytes: usize,
    verifier: Verifier,
    services: Arc<Services>,
}

impl Webhook {
    /// A handler for `route`, configured from `env`; builds no client yet.
    pub fn new(route: WebhookRoute, env: &impl Env) -> Webhook {
        let time_limit = config::function_timeout(env, route.name());
        let ready = WebhookConfig::from_env(env).and_then(|c| {
            time_limit.as_ref().map_err(Clone::clone)?;
            Ok(Ready {
                max_body_bytes: c.max_body_bytes,
                verifier: c.verifier,
                services: Arc::new(Services::new(c.apply)),
            })
        });
        let time_limit =
            time_limit.unwrap_or_else(|_| crate::routes::table::max_duration(route.name()));
        Webhook {
            route,
            ready,
            time_limit,
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
        let ready = self
            .ready
            .as_ref()
            .map_err(|e| ApiError::Config(e.clone()))?;
        if req.extensions().get::<BodyTooLarge>().is_some() {
            return Err(ApiError::PayloadTooLarge {
                limit: ready.max_body_bytes,
            });
        }
        let verified = ready
            .verifier
            .verify(req.headers(), req.body(), unix_now())?;
        log.webhook_id = Some(verified.id().to_owned());

        let job = self.job_ref(req.uri().query().unwrap_or_default())?;
        let delivery = Delivery::parse(&verified).map_err(|e| ApiError::BadBody(e.to_string()))?;
        log.replicate_id = Some(delivery.id.clone());
        log.status = Some(delivery.status.to_string());

        if self.route == WebhookRoute::Completed && !delivery.status.is_terminal() {
            return Ok(ignored("status is not terminal", log));
        }

        // The copy and the transaction run on their own task: if Replicate gives up waiting
        // and the platform drops this request, the work still finishes (and Replicate's
        // retry then finds it done) instead of stopping halfway.
        let services = Arc::clone(&ready.services);
        let route = self.route.name();
        let webhook_id = verified.id().to_owned();
        let background = req
            .extensions()
            .get::<Background>()
            .cloned()
            .unwrap_or_default();
        let deadline = Deadline::of_request(req.extensions(), self.time_limit);
        let work = background.spawn(async move {
            let event = ApplyEvent::new(&webhook_id, route, job, &delivery, Outcome::Applied);
            services.apply(event, deadline).await
        });
        // The work stops itself at its working time (aborting uploads); this answers even
        // if something below it does not, before the platform's limit.
        let applied = tokio::time::timeout_at(deadline.answer_by().into(), work)
            .await
            .map_err(|_| ApiError::OutOfTime {
                left: "copying output files and recording the delivery",
            })?
            .map_err(|_| ApiError::Interrupted)??;
        if applied.outcome == Outcome::NotFound {
            return match job {
                JobRef::Owned { kind, .. } => Err(ApiError::JobNotFound {
                    kind: kind.as_str(),
                }),
                // Account-wide webhooks deliver every job, including ones this app did not
                // start.
                JobRef::ByReplicateId => Ok(ignored("no job has this id", log)),
            };
        }
        log.outcome = Some(applied.outcome.as_str().into());
        Ok(respond::json(StatusCode::OK, &Answer::from(&applied)))
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

    fn body_limit(&self) -> Option<usize> {
        self.ready.as_ref().ok().map(|r| r.max_body_bytes)
    }

    fn config_error(&self) -> Option<&ConfigError> {
        self.ready.as_ref().err()
    }

    fn time_limit(&self) -> Duration {
        self.time_limit
    }

    async fn handle(&self, req: Request<Bytes>, log: &mut LogFields) -> Reply {
        self.process(req, log).await
    }
}

/// A delivery's answer once the database has recorded it.
#[derive(Serialize)]
struct Answer {
    ok: bool,
    outcome: Outcome,
    job: Option<Job>,
    job_id: Option<Uuid>,
    status: Option<Status>,
    refunded: bool,
}

impl From<&Applied> for Answer {
    fn from(applied: &Applied) -> Answer {
        Answer {
            ok: true,
            outcome: applied.outcome,
            job: applied.job,
            job_id: applied.job_id,
            status: applied.status,
            refunded: applied.refunded,
        }
    }
}

/// A delivery that changes nothing by design.
#[derive(Serialize)]
struct Ignored {
    ok: bool,
    outcome: &'static str,
    reason: &'static str,
}

fn uuid_param(query: &str, name: &'static str) -> Result<Uuid, ApiError> {
    let value = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .ok_or_else(|| ApiError::BadQuery(format!("query parameter `{name}` is required")))?;
    Uuid::parse_str(&value)
        .map_err(|_| ApiError::BadQuery(format!("query parameter `{name}` must be a UUID")))
}

fn ignored(reason: &'static str, log: &mut LogFields) -> Response<Bytes> {
    log.outcome = Some("ignored".into());
    respond::json(
        StatusCode::OK,
        &Ignored {
            ok: true,
            outcome: "ignored",
            reason,
        },
    )
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
