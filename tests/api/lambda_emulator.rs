//! The Lambda path end to end: the route binaries run as Lambda runs them, polling the Runtime
//! API that `cargo lambda watch --only-lambda-apis` emulates, which turns HTTP requests to
//! `/lambda-url/<bin>/<path>?<query>` into real Function URL (payload 2.0) events, a body
//! with a non-text content type base64-encoded. Rows are checked through PostgREST.
//!
//! cargo-lambda is the pinned one `scripts/install` puts in the tools cache; `scripts/test`
//! names it in `CARGO_LAMBDA`.

use crate::helpers::*;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use uuid::Uuid;

/// The cron secret the reconcile function is started with.
const CRON_SECRET: &str = "emulator-cron-secret-0123456789";

/// A running `cargo lambda watch --only-lambda-apis` and the functions polling it; all are
/// stopped when dropped.
struct Emulator {
    port: u16,
    _watch: Server,
    functions: Vec<Server>,
    http: reqwest::Client,
}

impl Emulator {
    /// Starts the emulator on a free port, waits until it listens, then starts `bins` (the
    /// test build's route binaries) against it.
    async fn start(bins: &[&str]) -> Emulator {
        let port = free_port();
        let watch = Command::new(stack_var("CARGO_LAMBDA"))
            .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1"])
            .args(["-P", &port.to_string()])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cargo lambda watch starts");
        let watch = Server::from_child(watch, port);
        wait_for_port(port).await;
        let mut emulator = Emulator {
            port,
            _watch: watch,
            functions: Vec::new(),
            http: reqwest::Client::new(),
        };
        for bin in bins {
            emulator.start_function(bin);
        }
        emulator
    }

    /// Runs `bin` as Lambda would, polling the emulator's Runtime API for events addressed to
    /// it, configured for the local stack. (Requests that arrive before it polls wait in the
    /// emulator's queue.)
    fn start_function(&mut self, bin: &str) {
        let child = Command::new(route_binary(bin))
            .env_clear()
            .envs(stack_env())
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{}/.rt/{bin}", self.port),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", bin)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("CRON_SECRET", CRON_SECRET)
            .env("REPLICATE_API_TOKEN", "r8_emulator_unused")
            .env("REPLICATE_API_URL", "http://127.0.0.1:1")
            // No job is ever quiet long enough (and young enough) to be checked, so runs
            // alongside the reconcile tests touch none of their rows.
            .env("RECONCILE_AFTER_SECONDS", "864000")
            .env("RECONCILE_MAX_AGE_SECONDS", "3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin} starts: {e}"));
        self.functions.push(Server::from_child(child, self.port));
    }

    fn url(&self, bin: &str, path_and_query: &str) -> String {
        format!(
            "http://127.0.0.1:{}/lambda-url/{bin}{path_and_query}",
            self.port
        )
    }

    /// Sends a request through the emulator's Function URL endpoint.
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = request
            .timeout(std::time::Duration::from_secs(60))
            .send()
            .await
            .expect("the emulator answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a body");
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text}"));
        (status, headers, body)
    }

    /// POSTs `body` to `bin` with `headers`.
    async fn post(
        &self,
        bin: &str,
        path_and_query: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut request = self.http.post(self.url(bin, path_and_query));
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let request = request
            .header("user-agent", "Replicate-Webhook/1.0")
            .body(body);
        let (status, _, body) = self.call(request).await;
        (status, body)
    }

    /// Invokes `bin` directly with `event`, as EventBridge does: the function's own answer
    /// (for an HTTP function, its payload 2.0 response object).
    async fn invoke(&self, bin: &str, event: &Value) -> Value {
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{bin}/invocations",
            self.port
        );
        let (status, _, body) = self.call(self.http.post(url).json(event)).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        for function in &mut self.functions {
            function.stop();
        }
    }
}

/// The test build of a route binary: the same code as the release `bootstrap`.
fn route_binary(bin: &str) -> &'static str {
    match bin {
        "predict" => env!("CARGO_BIN_EXE_predict"),
        "health" => env!("CARGO_BIN_EXE_health"),
        "reconcile" => env!("CARGO_BIN_EXE_reconcile"),
        other => panic!("no binary wired up for {other}"),
    }
}

/// A user with a 3-credit prediction, and the predict function behind the emulator.
struct Predict {
    /// The function, polling its own emulator.
    emulator: Emulator,
    /// The prediction's webhook URL path, with its query.
    path: String,
    db: Db,
    prediction: Uuid,
}

impl Predict {
    async fn start() -> Predict {
        let emulator = Emulator::start(&["predict"]).await;
        let db = Db::service();
        let user = seed_user(&db).await;
        let prediction = seed_prediction(&db, user, None, 3).await;
        let path =
            format!("/api/replicate/webhooks/predict?user_id={user}&prediction_id={prediction}");
        Predict {
            emulator,
            path,
            db,
            prediction,
        }
    }

    /// Posts `body` to the prediction's webhook URL with `headers`.
    async fn deliver(&self, headers: &[(String, String)], body: &[u8]) -> (u16, Value) {
        self.emulator
            .post("predict", &self.path, headers, body.to_vec())
            .await
    }

    async fn row(&self) -> Value {
        self.db.row("predictions", self.prediction).await
    }
}

#[tokio::test]
async fn lambda_health_answers_a_function_url_event() {
    let emulator = Emulator::start(&["health"]).await;
    let request = emulator.http.get(emulator.url("health", "/api/health"));
    let (status, headers, body) = emulator.call(request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "healthy", "{body}");
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn lambda_signed_failed_prediction_is_applied_with_one_refund() {
    let p = Predict::start().await;
    let rid = replicate_id();
    let body = serde_json::to_vec(&fixture("prediction_failed", &rid)).expect("json");
    let id = webhook_id();

    let (status, answer) = p.deliver(&signed_headers(&id, &body), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "applied", "{answer}");
    let row = p.row().await;
    assert_eq!(row["status"], "failed", "{row}");
    assert_eq!(row["replicate_prediction_id"], rid.as_str());
    assert!(!row["refunded_at"].is_null(), "refunded: {row}");
    let events =
        p.db.select(
            "webhook_events",
            &format!("webhook_id=eq.{id}&select=route,outcome"),
        )
        .await;
    assert_eq!(
        events,
        vec![json!({"route": "predict", "outcome": "applied"})]
    );

    // Replicate's retry of the same delivery refunds nothing more.
    let (status, answer) = p.deliver(&signed_headers(&id, &body), &body).await;
    assert_eq!(status, 200, "{answer}");
    let ledger =
        p.db.select(
            "credit_ledger",
            &format!("prediction_id=eq.{}&select=delta,reason", p.prediction),
        )
        .await;
    assert_eq!(ledger, vec![json!({"delta": 3, "reason": "refund"})]);
}

#[tokio::test]
async fn lambda_wrong_signature_is_refused_with_401() {
    let p = Predict::start().await;
    let before = p.row().await;
    let body = serde_json::to_vec(&fixture("prediction_failed", &replicate_id())).expect("json");
    // Signed, but over other bytes.
    let (status, answer) = p
        .deliver(&signed_headers(&webhook_id(), b"{}"), &body)
        .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(p.row().await, before);
}

#[tokio::test]
async fn lambda_base64_encoded_body_verifies_and_applies() {
    let p = Predict::start().await;
    let rid = replicate_id();
    let body = serde_json::to_vec(&fixture("prediction_processing", &rid)).expect("json");
    // Not a text type: the emulator hands the body over base64-encoded.
    let mut headers = signed_headers(&webhook_id(), &body);
    for (name, value) in &mut headers {
        if name == "content-type" {
            *value = "application/octet-stream".into();
        }
    }

    let (status, answer) = p.deliver(&headers, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "applied", "{answer}");
    let row = p.row().await;
    assert_eq!(row["status"], "processing", "{row}");
    assert_eq!(row["replicate_prediction_id"], rid.as_str());
}

#[tokio::test]
async fn lambda_reconcile_runs_on_eventbridge_events_and_its_url_wants_the_token() {
    let emulator = Emulator::start(&["reconcile"]).await;

    // What EventBridge invokes the function with when the template's schedule fires.
    let answer = emulator
        .invoke("reconcile", &scheduled_event("aws.events"))
        .await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["checked"], 0, "{answer}");

    // Something else dressed as an event is not a run.
    let answer = emulator
        .invoke("reconcile", &scheduled_event("my.app"))
        .await;
    assert!(answer["error"].is_string(), "{answer}");
    assert!(answer.get("checked").is_none(), "{answer}");

    // Its Function URL without the token answers 401, with it 200.
    let request = emulator
        .http
        .get(emulator.url("reconcile", "/api/cron/reconcile"));
    let (status, _, body) = emulator.call(request).await;
    assert_eq!(status, 401, "{body}");
    let request = emulator
        .http
        .get(emulator.url("reconcile", "/api/cron/reconcile"))
        .bearer_auth(CRON_SECRET);
    let (status, _, body) = emulator.call(request).await;
    assert_eq!(status, 200, "{body}");
}
