//! Supabase's API keys through a stand-in for Supabase's API gateway, which sits in front
//! of PostgREST at `{SUPABASE_URL}/rest/v1`: it takes a secret key (`sb_secret_...`) as
//! `apikey` only, refuses one in `Authorization` or from a browser, and forwards to
//! PostgREST with a service-role JWT, as the hosted gateway does.

use crate::helpers::*;
use crate::standin::read_body;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use shared::routes::{Health, Webhook, WebhookRoute};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// The secret key the stand-in accepts.
const SECRET_KEY: &str = "sb_secret_local-gateway-test-key";

/// What the gateway saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    apikey: Option<String>,
    authorization: Option<String>,
    user_agent: Option<String>,
    status: u16,
}

struct Gateway {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The gateway's own decision: `None` lets the request through.
fn refusal(seen: &Seen, service_jwt: &str) -> Option<&'static str> {
    let apikey = seen.apikey.as_deref().unwrap_or_default();
    if seen
        .authorization
        .as_deref()
        .is_some_and(|a| a.contains("sb_"))
    {
        Some("secret keys are not accepted in Authorization")
    } else if apikey.starts_with("sb_secret_")
        && seen
            .user_agent
            .as_deref()
            .is_some_and(|ua| ua.contains("Mozilla"))
    {
        Some("secret keys are not accepted from browsers")
    } else if apikey != SECRET_KEY && apikey != service_jwt {
        Some("invalid API key")
    } else {
        None
    }
}

impl Gateway {
    async fn start() -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let postgrest = stack_var("POSTGREST_URL");
        let jwt = stack_var("SUPABASE_SERVICE_ROLE_KEY");
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (http, log, postgrest, jwt) = (
                    http.clone(),
                    Arc::clone(&log),
                    postgrest.clone(),
                    jwt.clone(),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (http, log, postgrest, jwt) = (
                            http.clone(),
                            Arc::clone(&log),
                            postgrest.clone(),
                            jwt.clone(),
                        );
                        async move {
                            Ok::<_, Infallible>(forward(req, &http, &log, &postgrest, &jwt).await)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Gateway { base, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn forward(
    req: Request<Incoming>,
    http: &reqwest::Client,
    log: &Mutex<Vec<Seen>>,
    postgrest: &str,
    jwt: &str,
) -> Response<Full<Bytes>> {
    let mut seen = Seen {
        apikey: header(&req, "apikey"),
        authorization: header(&req, "authorization"),
        user_agent: header(&req, "user-agent"),
        status: 401,
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let answer = |status: u16, body: Bytes| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("response")
    };
    if let Some(why) = refusal(&seen, jwt) {
        log.lock().expect("lock").push(seen);
        return answer(401, json!({ "message": why }).to_string().into());
    }
    let Some(rest) = path.strip_prefix("/rest/v1") else {
        seen.status = 404;
        log.lock().expect("lock").push(seen);
        return answer(404, Bytes::new());
    };
    // reqwest 0.11 speaks http 0.2: carry the method over by name.
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).expect("method");
    let mut upstream = http
        .request(method, format!("{postgrest}{rest}"))
        .header("apikey", jwt)
        .bearer_auth(jwt);
    for name in ["content-type", "prefer", "accept"] {
        if let Some(value) = header(&req, name) {
            upstream = upstream.header(name, value);
        }
    }
    let body = read_body(req).await;
    let response = upstream.body(body).send().await.expect("PostgREST answers");
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    seen.status = status;
    log.lock().expect("lock").push(seen);
    answer(status, body)
}

/// The stack's environment, but reaching the database the way a hosted project does.
fn through(
    gateway: &Gateway,
    key_var: &str,
    key: &str,
) -> std::collections::HashMap<String, String> {
    settings_with(&[
        ("POSTGREST_URL", ""),
        ("SUPABASE_URL", &gateway.base),
        ("SUPABASE_SERVICE_ROLE_KEY", ""),
        (key_var, key),
    ])
}

/// Delivers a failed prediction of a new job to the predict route, which reaches the
/// database through `gateway` with `key` in `key_var`: the answer's status and JSON.
async fn deliver_through(gateway: &Gateway, key_var: &str, key: &str) -> (u16, Value) {
    let job = Job::prediction().await;
    let handler = Webhook::new(WebhookRoute::Predict, &through(gateway, key_var, key));
    deliver(
        &handler,
        &job.uri(),
        &fixture("prediction_failed", &job.rid),
    )
    .await
}

#[tokio::test]
async fn a_secret_key_goes_as_apikey_only_and_the_delivery_applies() {
    let gateway = Gateway::start().await;
    let (status, answer) = deliver_through(&gateway, "SUPABASE_SECRET_KEY", SECRET_KEY).await;
    assert_eq!(
        (status, &answer["refunded"]),
        (200, &json!(true)),
        "{answer}"
    );

    let seen = gateway.seen();
    assert!(!seen.is_empty());
    for request in &seen {
        assert_eq!(request.apikey.as_deref(), Some(SECRET_KEY));
        assert_eq!(request.authorization, None, "{request:?}");
        let agent = request.user_agent.as_deref().unwrap_or_default();
        assert!(agent.starts_with("replicate-webhooks/"), "{agent}");
        assert_eq!(request.status, 200, "{request:?}");
    }

    let health = Health::new(&through(&gateway, "SUPABASE_SECRET_KEY", SECRET_KEY));
    let (_, body) = get(&health, "/api/health", None).await;
    assert_eq!(body["database"], "reachable");
}

#[tokio::test]
async fn the_legacy_variable_still_works_with_either_form_of_key() {
    let gateway = Gateway::start().await;
    let jwt = stack_var("SUPABASE_SERVICE_ROLE_KEY");
    for key in [SECRET_KEY, jwt.as_str()] {
        let (status, answer) = deliver_through(&gateway, "SUPABASE_SERVICE_ROLE_KEY", key).await;
        assert_eq!(status, 200, "{answer}");
    }
    // The JWT went as a bearer too; the secret key never did.
    let seen = gateway.seen();
    assert!(
        seen.iter()
            .any(|s| s.authorization.as_deref() == Some(&format!("Bearer {jwt}")))
    );
    assert!(seen.iter().all(|s| s.status == 200), "{seen:?}");
}

#[tokio::test]
async fn the_gateway_refuses_a_secret_key_sent_as_a_bearer() {
    // The control for the tests above: the stand-in does refuse what the hosted gateway
    // refuses, so their passing means the functions send the key the right way.
    let gateway = Gateway::start().await;
    let response = reqwest::Client::new()
        .post(format!("{}/rest/v1/rpc/find_replicate_job", gateway.base))
        .header("apikey", SECRET_KEY)
        .bearer_auth(SECRET_KEY)
        .json(&json!({"p_replicate_id": "x"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 401);
}
