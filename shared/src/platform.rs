//! The platform adapters: the same handler serves AWS Lambda (Function URL events through
//! `lambda_http`) when `AWS_LAMBDA_RUNTIME_API` is set, and otherwise runs as a Vercel
//! function (`vercel_runtime` 2, HTTP on `127.0.0.1:$VERCEL_DEV_PORT`).
//!
//! Both adapters turn their request into `http::Request<Bytes>` with the raw body bytes
//! untouched (signatures are over those bytes), call the handler, add `x-request-id`, and
//! write the request's log line.

use crate::config::{ConfigError, ProcessEnv};
use crate::logging::{self, LogFields, RequestSummary};
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt as _, Limited};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// A boxed error from a platform runtime.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    /// Answers one request, noting in `log` what the request's log line should say.
    /// Never panics; every failure is an answer.
    fn handle(
        &self,
        req: Request<Bytes>,
        log: &mut LogFields,
    ) -> impl Future<Output = Response<Bytes>> + Send;
}

/// The body limit of routes that take no body worth reading (health, reconcile): enough
/// for any client's empty or small POST.
pub const SMALL_BODY_LIMIT: usize = 64 * 1024;

/// Marks a request whose body was over the limit and was not collected.
#[derive(Debug, Clone, Copy)]
pub struct BodyTooLarge;

/// Serves `handler` on the platform the environment names, until the runtime stops.
pub async fn serve<H: Handler>(handler: H) -> Result<(), BoxError> {
    let handler = Arc::new(handler);
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        serve_lambda(handler).await
    } else {
        serve_vercel(handler).await
    }
}

/// Calls the handler, then adds `x-request-id` and writes the log line. Every adapter (and
/// the local dev server) ends here.
pub async fn respond<H: Handler + ?Sized>(
    handler: &H,
    req: Request<Bytes>,
    request_id: &str,
) -> Response<Bytes> {
    let started = Instant::now();
    let method = req.method().to_string();
    let mut fields = LogFields::default();
    let mut response = handler.handle(req, &mut fields).await;
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    logging::request(
        &RequestSummary {
            request_id,
            route: handler.name(),
            method: &method,
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
    let (parts, body) = req.into_parts();
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
    let (parts, body) = req.into_parts();
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
    let service = vercel_runtime::service_fn(move |req: vercel_runtime::Request| {
        let handler = Arc::clone(&handler);
        async move {
            let response = http_request(handler.as_ref(), req).await;
            Ok::<_, vercel_runtime::Error>(response.map(vercel_runtime::ResponseBody::from))
        }
    });
    vercel_runtime::run(service).await
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Builds a route's handler from the environment and serves it; what each `api/*.rs`
/// `main` calls. A configuration problem is logged here once and answered per request.
pub async fn run<H: Handler>(build: impl FnOnce(&ProcessEnv) -> H) -> Result<(), BoxError> {
    let handler = build(&ProcessEnv);
    if let Some(e) = handler.config_error() {
        logging::event("error", handler.name(), &format!("not configured: {e}"));
    }
    serve(handler).await
}
