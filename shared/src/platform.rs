//! The platform adapters: the same handler serves AWS Lambda (Function URL events through
//! `lambda_http`) when `AWS_LAMBDA_RUNTIME_API` is set, and otherwise runs as a Vercel
//! function (`vercel_runtime` 2, HTTP on `127.0.0.1:$VERCEL_DEV_PORT`).
//!
//! Both adapters turn their request into `http::Request<Bytes>` with the raw body bytes
//! untouched (signatures are over those bytes), call the handler, add `x-request-id`, and
//! write the request's log line.

use crate::config::{ConfigError, ProcessEnv};
use crate::deadline::Deadline;
use crate::error::ApiError;
use crate::logging::{self, LogFields, RequestSummary};
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt as _, Limited};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A boxed error from a platform runtime.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a route replies: a response, or an error that [`respond`] answers with
/// `respond::error` (one place for every route's error answers).
pub type Reply = Result<Response<Bytes>, ApiError>;

/// A route's core: a request with its whole body in, an answer out.
pub trait Handler: Send + Sync + 'static {
    /// The route's name, for logs.
    fn name(&self) -> &'static str;
    /// The most body bytes the adapters collect before answering 413; `None` when the
    /// route's configuration is invalid: the body is then not read, since every request is
    /// answered 503 (or 405) without it.
    fn body_limit(&self) -> Option<usize>;
    /// Why the route cannot work, when its configuration is invalid (logged at start).
    fn config_error(&self) -> Option<&ConfigError>;
    /// The route's time limit where the platform does not say it per request (Vercel, the
    /// dev server): the route's `maxDuration`, unless configured otherwise.
    fn time_limit(&self) -> Duration {
        crate::routes::table::max_duration(self.name())
    }
    /// Answers one request, noting in `log` what the request's log line should say.
    /// Never panics; every failure is an error [`respond`] answers.
    fn handle(
        &self,
        req: Request<Bytes>,
        log: &mut LogFields,
    ) -> impl Future<Output = Reply> + Send;

    /// Whether the route's refusals are counted for health ([`crate::activity`]): the
    /// webhook routes, wrapped in [`crate::activity::Counted`].
    fn counts_rejections(&self) -> bool {
        false
    }

    /// Records one refusal for `reason`; called by [`respond`] after the answer is built,
    /// within [`REJECTION_COUNT_TIMEOUT`].
    fn record_rejection(
        &self,
        _reason: crate::activity::Rejection,
    ) -> impl Future<Output = Result<(), crate::store::StoreError>> + Send {
        async { Ok(()) }
    }
}

/// The body limit of routes that take no body worth reading (health, reconcile): enough
/// for any client's empty or small POST.
pub const SMALL_BODY_LIMIT: usize = 64 * 1024;

/// Runs work that must finish even if the caller hangs up (Replicate gives up waiting after
/// a few seconds): on Vercel it is registered with the runtime's `wait_until`, which keeps
/// the instance alive after the answer until the work settles (within `maxDuration`);
/// elsewhere it is a task of its own (a Lambda invocation runs until the handler answers,
/// and a long-running server keeps its tasks). The adapters put one in each request's
/// extensions; without one, work is a plain task.
#[derive(Clone, Default)]
pub struct Background(Option<vercel_runtime::AppState>);

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Background(wait_until)"
        } else {
            "Background(task)"
        })
    }
}

impl Background {
    /// Starts `work` now; its result arrives on the returned channel (closed if the work
    /// panicked).
    pub fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> tokio::sync::oneshot::Receiver<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let work = async move {
            // The caller may have gone; the work is what matters.
            let _ = done.send(work.await);
        };
        match &self.0 {
            Some(state) => state.wait_until(work),
            None => drop(tokio::spawn(work)),
        }
        result
    }
}

/// Marks a request whose body was over the limit and was not collected.
#[derive(Debug, Clone, Copy)]
pub struct BodyTooLarge;

/// Serves `handler` on the platform the environment names, until the runtime stops.
pub async fn serve<H: Handler>(handler: H) -> Result<(), BoxError> {
    let handler = Arc::new(handler);
    if on_lambda() {
        serve_lambda(handler).await
    } else {
        serve_vercel(handler).await
    }
}

/// A route a platform's scheduler may also invoke directly, without HTTP: on Lambda, the
/// EventBridge schedule in template.yaml. Only a caller with permission to invoke the
/// function gets there, so no bearer token is needed (nor stored in the schedule).
pub trait Scheduled: Handler {
    /// Does the scheduled work, within `deadline`; answered as the route's HTTP answer
    /// would be.
    fn on_schedule(
        &self,
        deadline: Deadline,
        log: &mut LogFields,
    ) -> impl Future<Output = Reply> + Send;
}

/// Calls the handler, then adds `x-request-id` and writes the log line. Every adapter (and
/// the local dev server) ends here.
pub async fn respond<H: Handler + ?Sized>(
    handler: &H,
    req: Request<Bytes>,
    request_id: &str,
) -> Response<Bytes> {
    let method = req.method().to_string();
    logged(handler.name(), request_id, &method, async {
        let mut log = LogFields::default();
        let response = handler
            .handle(req, &mut log)
            .await
            .unwrap_or_else(|e| crate::respond::error(&e, &mut log));
        count_rejection(handler, response.status()).await;
        (response, log)
    })
    .await
}

// --- Counting refusals (health's `recent` block) ------------------------------------------

/// The longest a refused request's answer waits for its count to be recorded.
pub const REJECTION_COUNT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Records why `handler` refused a request, when it counts refusals and `status` is one it
/// counts. Best effort: bounded by [`REJECTION_COUNT_TIMEOUT`], and a failure is only
/// logged, so the answer is never changed (when the database is down, its 503 is held
/// back at most that long: the count fails, or is given up, and the answer goes out).
async fn count_rejection<H: Handler + ?Sized>(handler: &H, status: http::StatusCode) {
    if !handler.counts_rejections() {
        return;
    }
    let Some(reason) = crate::activity::Rejection::from_status(status) else {
        return;
    };
    let why = match tokio::time::timeout(REJECTION_COUNT_TIMEOUT, handler.record_rejection(reason))
        .await
    {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    logging::event(
        "warn",
        handler.name(),
        &format!(
            "a refused request ({}) was not counted: {why}",
            reason.as_str()
        ),
    );
}

// -------------------------------------------------------------------------------------------

/// Awaits `work` (an answer and what its log line should say), adds `x-request-id` to the
/// answer and writes the log line: the one path every invocation's log line takes.
async fn logged(
    route: &str,
    request_id: &str,
    method: &str,
    work: impl Future<Output = (Response<Bytes>, LogFields)>,
) -> Response<Bytes> {
    let started = Instant::now();
    let (mut response, fields) = work.await;
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    logging::request(
        &RequestSummary {
            request_id,
            route,
            method,
            http_status: response.status().as_u16(),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        },
        &fields,
    );
    response
}

/// Turns a Lambda (Function URL) request into a core request and answers it.
/// `lambda_http` has already decoded a base64-encoded body into its bytes.
pub async fn lambda_event<H: Handler + ?Sized>(
    handler: &H,
    req: lambda_http::Request,
) -> lambda_http::Response<lambda_http::Body> {
    use lambda_http::RequestExt as _;
    let request_id = req
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(new_request_id);
    let deadline = req
        .lambda_context_ref()
        .map(|c| Deadline::from_epoch_millis(c.deadline))
        .unwrap_or_else(|| Deadline::after(handler.time_limit()));
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(deadline);
    let body = match body {
        lambda_http::Body::Empty => Bytes::new(),
        lambda_http::Body::Text(text) => Bytes::from(text),
        lambda_http::Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    let mut core = Request::from_parts(parts, body);
    match handler.body_limit() {
        Some(limit) if core.body().len() <= limit => {}
        Some(_) => {
            *core.body_mut() = Bytes::new();
            core.extensions_mut().insert(BodyTooLarge);
        }
        None => *core.body_mut() = Bytes::new(),
    }
    let response = respond(handler, core, &request_id).await;
    response.map(|bytes| match String::from_utf8(bytes.to_vec()) {
        Ok(text) => lambda_http::Body::Text(text),
        Err(e) => lambda_http::Body::Binary(e.into_bytes()),
    })
}

/// Collects a streamed HTTP body (Vercel, the dev server) up to the handler's limit and
/// answers the request.
pub async fn http_request<H, B>(handler: &H, req: Request<B>) -> Response<Bytes>
where
    H: Handler + ?Sized,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let request_id = req
        .headers()
        .get("x-vercel-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    let (mut parts, body) = req.into_parts();
    parts
        .extensions
        .insert(Deadline::after(handler.time_limit()));
    let Some(limit) = handler.body_limit() else {
        // Not configured: answered without the body.
        return respond(
            handler,
            Request::from_parts(parts, Bytes::new()),
            &request_id,
        )
        .await;
    };
    let declared_too_large = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|len| len > limit);
    let mut core = Request::from_parts(parts, Bytes::new());
    if declared_too_large {
        core.extensions_mut().insert(BodyTooLarge);
    } else {
        match Limited::new(body, limit).collect().await {
            Ok(collected) => *core.body_mut() = collected.to_bytes(),
            // Over the limit, or the client went away mid-body: either way nothing usable
            // arrived, and the handler answers 413 (or 405 first for a wrong method).
            Err(_) => {
                core.extensions_mut().insert(BodyTooLarge);
            }
        }
    }
    respond(handler, core, &request_id).await
}

async fn serve_lambda<H: Handler>(handler: Arc<H>) -> Result<(), BoxError> {
    lambda_http::run(lambda_http::service_fn(move |req| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, std::convert::Infallible>(lambda_event(handler.as_ref(), req).await) }
    }))
    .await
}

async fn serve_vercel<H: Handler>(handler: Arc<H>) -> Result<(), BoxError> {
    let service = vercel_runtime::service_fn(
        move |mut req: vercel_runtime::Request, state: vercel_runtime::AppState| {
            let handler = Arc::clone(&handler);
            async move {
                req.extensions_mut().insert(Background(Some(state)));
                let response = http_request(handler.as_ref(), req).await;
                Ok::<_, vercel_runtime::Error>(response.map(vercel_runtime::ResponseBody::from))
            }
        },
    );
    vercel_runtime::run(service).await
}

/// What a scheduled route's Lambda function is invoked with: its Function URL's request, or
/// EventBridge's own scheduled event.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Invocation {
    Schedule(ScheduledEvent),
    Url(Box<lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest>),
}

/// The fields of an EventBridge scheduled event that say what it is.
#[derive(serde::Deserialize)]
struct ScheduledEvent {
    source: String,
    #[serde(rename = "detail-type")]
    detail_type: String,
}

impl ScheduledEvent {
    fn is_schedule(&self) -> bool {
        self.source == "aws.events" && self.detail_type == "Scheduled Event"
    }
}

/// A scheduled route's Lambda answer: the Function URL's response, or for a scheduled
/// event the route's JSON answer itself (EventBridge ignores it; it shows in test calls).
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Answered {
    Url(Box<lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse>),
    Schedule(serde_json::Value),
}

async fn serve_lambda_scheduled<H: Scheduled>(handler: Arc<H>) -> Result<(), BoxError> {
    lambda_http::lambda_runtime::run(lambda_http::service_fn(
        move |event: lambda_http::LambdaEvent<Invocation>| {
            let handler = Arc::clone(&handler);
            async move { Ok::<_, std::convert::Infallible>(invoked(handler.as_ref(), event).await) }
        },
    ))
    .await
}

/// Answers one invocation of a scheduled route on Lambda.
async fn invoked<H: Scheduled>(
    handler: &H,
    event: lambda_http::LambdaEvent<Invocation>,
) -> Answered {
    use lambda_http::RequestExt as _;
    let lambda_http::LambdaEvent { payload, context } = event;
    match payload {
        Invocation::Schedule(schedule) => {
            let request_id = context.request_id.clone();
            let response = logged(handler.name(), &request_id, "SCHEDULE", async {
                let mut log = LogFields::default();
                let answer = if schedule.is_schedule() {
                    let deadline = Deadline::from_epoch_millis(context.deadline);
                    handler.on_schedule(deadline, &mut log).await
                } else {
                    Err(ApiError::Unauthorized(
                        crate::signature::SignatureError::NoMatch,
                    ))
                };
                let response = answer.unwrap_or_else(|e| crate::respond::error(&e, &mut log));
                (response, log)
            })
            .await;
            Answered::Schedule(
                serde_json::from_slice(response.body()).unwrap_or(serde_json::Value::Null),
            )
        }
        Invocation::Url(request) => {
            let request: lambda_http::Request =
                lambda_http::request::LambdaRequest::ApiGatewayV2(*request).into();
            let response = lambda_event(handler, request.with_lambda_context(context)).await;
            Answered::Url(Box::new(url_response(response)))
        }
    }
}

/// A Function URL (payload 2.0) response.
fn url_response(
    response: lambda_http::Response<lambda_http::Body>,
) -> lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse {
    let (parts, body) = response.into_parts();
    let mut answer = lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse::default();
    answer.status_code = i64::from(parts.status.as_u16());
    answer.headers = parts.headers;
    answer.is_base64_encoded = matches!(body, lambda_http::Body::Binary(_));
    answer.body = Some(body);
    answer
}

/// As [`run`], for a route a scheduler may also invoke directly ([`Scheduled`]).
pub async fn run_scheduled<H: Scheduled>(
    build: impl FnOnce(&ProcessEnv) -> H,
) -> Result<(), BoxError> {
    let handler = Arc::new(start(build));
    if on_lambda() {
        serve_lambda_scheduled(handler).await
    } else {
        serve_vercel(handler).await
    }
}

/// Installs the runtime's log and builds the handler from the environment; a configuration
/// problem is logged here once and answered per request.
fn start<H: Handler>(build: impl FnOnce(&ProcessEnv) -> H) -> H {
    logging::RuntimeLog::install();
    let handler = build(&ProcessEnv);
    if let Some(e) = handler.config_error() {
        logging::event("error", handler.name(), &format!("not configured: {e}"));
    }
    handler
}

/// Whether Lambda's runtime API is there to serve (else: Vercel's HTTP server).
fn on_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Builds a route's handler from the environment and serves it; what each `api/*.rs`
/// `main` calls. A configuration problem is logged here once and answered per request.
pub async fn run<H: Handler>(build: impl FnOnce(&ProcessEnv) -> H) -> Result<(), BoxError> {
    serve(start(build)).await
}
