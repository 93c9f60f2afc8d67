//! Helpers for the black-box tests: the running local stack, signed deliveries, seeded rows,
//! spawned servers and free ports.
//!
//! The tests need the stack `scripts/test` starts (PostgreSQL, PostgREST, the S3 server) and
//! read where it is from the environment; without it they fail and say so.

#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Request, Response};
use serde_json::{Value, json};
use sha2::Sha256;
use shared::platform::{self, Handler};
use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

pub use crate::stack::stack_var;
use crate::stack::stack_vars;

/// The signing secret every test function is configured with (24 random bytes, as
/// Replicate's are).
pub const SECRET: &str = "whsec_dGVzdC1zZWNyZXQtZm9yLXJlcGxpY2F0ZQ==";

/// The variables a function needs to reach the running stack, with the test secret.
pub fn stack_env() -> HashMap<String, String> {
    let mut env: HashMap<String, String> = stack_vars().into_iter().collect();
    env.insert("REPLICATE_WEBHOOK_SECRET".into(), SECRET.into());
    // Fixtures name replicate.delivery: no test may fetch from the Internet, so only a local
    // port nothing listens on is allowed unless a test lists its own file server.
    env.insert("OUTPUT_HOSTS".into(), "http://127.0.0.1:1".into());
    env
}

/// An S3 client for the stack's bucket, for reading back what the functions stored.
pub fn storage() -> shared::storage::Storage {
    storage_at(&stack_var("S3_ENDPOINT_URL"))
}

/// An S3 client for the bucket served at `endpoint` (a test's own S3 server).
pub fn storage_at(endpoint: &str) -> shared::storage::Storage {
    let mut env = stack_env();
    env.insert("S3_ENDPOINT_URL".into(), endpoint.into());
    let config = shared::config::StorageConfig::from_env(&env).expect("stack storage");
    shared::storage::Storage::new(&config)
}

/// The stored object's content type and bytes, from the stack's S3 server.
pub async fn s3_object(key: &str) -> (String, Bytes) {
    s3_object_at(&stack_var("S3_ENDPOINT_URL"), key).await
}

/// The stored object's content type and bytes, from the S3 server at `endpoint`.
pub async fn s3_object_at(endpoint: &str, key: &str) -> (String, Bytes) {
    let storage = storage_at(endpoint);
    let object = storage
        .client()
        .get_object()
        .bucket(storage.bucket())
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("object {key}: {e:?}"));
    let content_type = object.content_type().unwrap_or_default().to_owned();
    let bytes = object
        .body
        .collect()
        .await
        .expect("object body")
        .into_bytes();
    (content_type, bytes)
}

/// The stored object's `Content-Disposition`, if it has one.
pub async fn s3_disposition(key: &str) -> Option<String> {
    let storage = storage();
    let head = storage
        .client()
        .head_object()
        .bucket(storage.bucket())
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("object {key}: {e:?}"));
    head.content_disposition().map(str::to_owned)
}

/// Keys stored under `prefix`.
pub async fn s3_keys(prefix: &str) -> Vec<String> {
    let storage = storage();
    let listed = storage
        .client()
        .list_objects_v2()
        .bucket(storage.bucket())
        .prefix(prefix)
        .send()
        .await
        .expect("list objects");
    listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

/// The environment of an in-process handler: the stack's, with `changes` applied (an empty
/// value unsets a variable).
pub fn settings_with(changes: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env = stack_env();
    for (k, v) in changes {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    env
}

/// The stack's environment.
pub fn settings() -> HashMap<String, String> {
    settings_with(&[])
}

/// Calls a handler in-process the way every platform adapter does (log line and
/// `x-request-id` included).
pub trait Call {
    /// Answers `req`.
    fn call(&self, req: Request<Bytes>) -> impl Future<Output = Response<Bytes>> + Send;
}

impl<H: Handler> Call for H {
    async fn call(&self, req: Request<Bytes>) -> Response<Bytes> {
        platform::respond(self, req, "test-request").await
    }
}

/// Unix time now, in seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Signs like Replicate does, with its own HMAC code (not the project's), so a wrong
/// verifier cannot agree with a wrong signer.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.trim_start_matches("whsec_"))
        .expect("test secret is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The three signature headers for `body`, signed now with the test secret.
pub fn signed_headers(webhook_id: &str, body: &[u8]) -> Vec<(String, String)> {
    let ts = now();
    vec![
        ("webhook-id".into(), webhook_id.into()),
        ("webhook-timestamp".into(), ts.to_string()),
        (
            "webhook-signature".into(),
            signature(SECRET, webhook_id, ts, body),
        ),
        ("content-type".into(), "application/json".into()),
    ]
}

/// A fresh webhook id.
pub fn webhook_id() -> String {
    format!("msg_{}", Uuid::new_v4().simple())
}

/// A fresh Replicate-style id.
pub fn replicate_id() -> String {
    Uuid::new_v4().simple().to_string()[..26].to_owned()
}

/// A fixture from `tests/fixtures/` with its `id` (and URLs) set to `id`.
pub fn fixture(name: &str, id: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text.replace("REPLACED", id)).expect("fixture is JSON")
}

/// A signed POST to `uri` carrying `body`, as an in-process request.
pub fn signed_post(uri: &str, body: &Value) -> Request<Bytes> {
    signed_post_with_id(uri, body, &webhook_id())
}

/// A signed POST with a chosen webhook id.
pub fn signed_post_with_id(uri: &str, body: &Value, id: &str) -> Request<Bytes> {
    let bytes = serde_json::to_vec(body).expect("serialisable");
    let mut builder = Request::post(uri);
    for (k, v) in signed_headers(id, &bytes) {
        builder = builder.header(k, v);
    }
    builder.body(Bytes::from(bytes)).expect("valid request")
}

/// An answer's JSON body.
pub fn body_json(response: &Response<Bytes>) -> Value {
    serde_json::from_slice(response.body()).expect("answers are JSON")
}

/// A PostgREST client for the stack, as the service role.
pub struct Db {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Db {
    /// Connects with the service role key.
    pub fn service() -> Db {
        Db {
            http: reqwest::Client::new(),
            url: stack_var("POSTGREST_URL"),
            key: stack_var("SUPABASE_SERVICE_ROLE_KEY"),
        }
    }

    /// Connects with the service role key to the PostgREST at `url` (a test's own).
    pub fn service_at(url: &str) -> Db {
        Db {
            url: url.to_owned(),
            ..Db::service()
        }
    }

    /// Connects with the anon key (what a browser holds).
    pub fn anon() -> Db {
        Db {
            key: stack_var("SUPABASE_ANON_KEY"),
            ..Db::service()
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/{path}", self.url))
            .header("apikey", &self.key)
            .bearer_auth(&self.key)
    }

    /// Inserts `row` into `table`, returning the HTTP status.
    pub async fn try_insert(&self, table: &str, row: &Value) -> u16 {
        self.request(reqwest::Method::POST, table)
            .json(row)
            .send()
            .await
            .expect("PostgREST answers")
            .status()
            .as_u16()
    }

    /// Inserts `row` into `table`; panics unless it was created.
    pub async fn insert(&self, table: &str, row: &Value) {
        let status = self.try_insert(table, row).await;
        assert_eq!(status, 201, "insert into {table}");
    }

    /// Rows of `table` matching a PostgREST filter such as `id=eq.X`.
    pub async fn select(&self, table: &str, filter: &str) -> Vec<Value> {
        let response = self
            .request(reqwest::Method::GET, &format!("{table}?{filter}"))
            .send()
            .await
            .expect("PostgREST answers");
        assert!(
            response.status().is_success(),
            "select {table}: {}",
            response.status()
        );
        response.json().await.expect("rows are JSON")
    }

    /// The single row of `table` with this id.
    pub async fn row(&self, table: &str, id: Uuid) -> Value {
        let mut rows = self.select(table, &format!("id=eq.{id}")).await;
        assert_eq!(rows.len(), 1, "{table} {id}");
        rows.remove(0)
    }

    /// Sends a PATCH or DELETE with a filter: the HTTP status, PostgREST's error code when
    /// it refused, and the rows touched.
    pub async fn try_change(
        &self,
        method: reqwest::Method,
        table: &str,
        filter: &str,
        body: &Value,
    ) -> Changed {
        let response = self
            .request(method, &format!("{table}?{filter}"))
            .header("Prefer", "return=representation")
            .json(body)
            .send()
            .await
            .expect("PostgREST answers");
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or_default();
        Changed {
            status,
            code: answer["code"].as_str().map(str::to_owned),
            rows: answer.as_array().map_or(0, Vec::len),
        }
    }
}

/// A prediction of a new user, waiting for its webhooks (the `predict` route's job).
pub struct Job {
    /// The service-role client.
    pub db: Db,
    /// The owner.
    pub user: Uuid,
    /// The row.
    pub id: Uuid,
    /// The Replicate id its deliveries carry.
    pub rid: String,
}

impl Job {
    /// Seeds the user and the row (2 credits).
    pub async fn prediction() -> Job {
        let db = Db::service();
        let user = seed_user(&db).await;
        let id = seed_prediction(&db, user, None, 2).await;
        Job {
            db,
            user,
            id,
            rid: replicate_id(),
        }
    }

    /// The `predict` route's path and query for this job.
    pub fn uri(&self) -> String {
        format!(
            "/api/replicate/webhooks/predict?user_id={}&prediction_id={}",
            self.user, self.id
        )
    }

    /// Where its output file `name` is stored.
    pub fn key(&self, name: &str) -> String {
        format!("predictions/{}/{}/{name}", self.user, self.rid)
    }

    /// A succeeded delivery with this `output`.
    pub fn delivery(&self, output: Value) -> Value {
        let mut body = fixture("prediction_succeeded_url_list", &self.rid);
        body["output"] = output;
        body
    }

    /// Its row.
    pub async fn row(&self) -> Value {
        self.db.row("predictions", self.id).await
    }

    /// Its stored status.
    pub async fn status(&self) -> Value {
        self.row().await["status"].clone()
    }
}

/// Signs and sends `body` to `uri` in process: the answer's status and JSON.
pub async fn deliver(handler: &impl Call, uri: &str, body: &Value) -> (u16, Value) {
    let response = handler.call(signed_post(uri, body)).await;
    (response.status().as_u16(), body_json(&response))
}

/// Checks that an answer is a 503 whose error message says `why`.
pub fn assert_unavailable(response: &Response<Bytes>, why: &str) {
    let body = body_json(response);
    assert_eq!(response.status(), 503, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains(why), "the error should say {why:?}: {body}");
}

/// Sends a GET to `path` in process, with `authorization` if given: the answer's status
/// and JSON.
pub async fn get(handler: &impl Call, path: &str, authorization: Option<&str>) -> (u16, Value) {
    let mut request = Request::get(path);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = handler
        .call(request.body(Bytes::new()).expect("request"))
        .await;
    (response.status().as_u16(), body_json(&response))
}

/// A request with no body, as an in-process handler takes it.
pub fn bodiless(method: http::Method, uri: &str) -> Request<Bytes> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Bytes::new())
        .expect("request")
}

/// Authorization values that must not pass for the bearer `secret`: none, a wrong bearer,
/// the secret without `Bearer `, and the secret under another scheme.
pub fn not_the_bearer(secret: &str) -> [Option<String>; 4] {
    [
        None,
        Some("Bearer wrong".into()),
        Some(secret.into()),
        Some(format!("Basic {secret}")),
    ]
}

/// The stack's environment, sending email through the Resend stand-in at `url` (key
/// `re_test`), with `extra` applied.
pub fn emailing(url: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env = settings_with(&[("RESEND_API_KEY", "re_test"), ("RESEND_API_URL", url)]);
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    env
}

/// What a PATCH or DELETE through PostgREST did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The HTTP status.
    pub status: u16,
    /// PostgREST's (or PostgreSQL's) error code, when it refused.
    pub code: Option<String>,
    /// Rows changed.
    pub rows: usize,
}

/// A user with a profile.
pub async fn seed_user(db: &Db) -> Uuid {
    let user = Uuid::new_v4();
    db.insert(
        "profiles",
        &json!({"id": user, "email": format!("{user}@example.com")}),
    )
    .await;
    user
}

/// A prediction row owned by `user`, optionally already tied to a Replicate id.
pub async fn seed_prediction(
    db: &Db,
    user: Uuid,
    replicate_id: Option<&str>,
    credits: i32,
) -> Uuid {
    let id = Uuid::new_v4();
    db.insert(
        "predictions",
        &json!({"id": id, "user_id": user, "prompt": "a cat", "credits_cost": credits,
                "replicate_prediction_id": replicate_id}),
    )
    .await;
    id
}

/// A model row owned by `user`, optionally already tied to a Replicate training id.
pub async fn seed_model(db: &Db, user: Uuid, replicate_id: Option<&str>, credits: i32) -> Uuid {
    let id = Uuid::new_v4();
    db.insert(
        "models",
        &json!({"id": id, "user_id": user, "credits_cost": credits,
                "replicate_training_id": replicate_id}),
    )
    .await;
    id
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls until `ready` is true, failing after `limit`. Each poll waits on a real event (a
/// connect attempt or a request), so this is not a sleep standing in for synchronisation.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if ready().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} was not ready within {limit:?}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until something accepts connections on `port`.
pub async fn wait_for_port(port: u16) {
    wait_until(
        &format!("port {port}"),
        Duration::from_secs(20),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
}

/// A child process killed (and reaped) when dropped.
pub struct Server {
    child: Child,
    /// The port it serves.
    pub port: u16,
}

impl Server {
    /// Wraps a started child serving `port`.
    pub fn from_child(child: Child, port: u16) -> Server {
        Server { child, port }
    }

    /// Stops the server now and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A route binary started in Vercel mode with the stack's environment and `extra`, its
/// stdout (the log lines) collected; stopped when dropped.
pub struct Function {
    server: Server,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Function {
    /// Starts `binary` and waits until its port accepts.
    pub async fn start(binary: &str, extra: &[(&str, &str)]) -> Function {
        let port = free_port();
        let mut child = Command::new(binary)
            .env_clear()
            .envs(stack_env())
            .envs(extra.iter().copied())
            .env("VERCEL_DEV_PORT", port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the function binary starts");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let stdout = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(line);
            }
        });
        wait_for_port(port).await;
        Function {
            server: Server::from_child(child, port),
            lines,
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// A POST of `body` to `path`, signed with `id` as its `webhook-id`.
    pub fn request(&self, path: &str, body: &Value, id: &str) -> reqwest::RequestBuilder {
        let payload = serde_json::to_vec(body).expect("json");
        let mut request =
            reqwest::Client::new().post(format!("http://127.0.0.1:{}{path}", self.server.port));
        for (k, v) in signed_headers(id, &payload) {
            request = request.header(k, v);
        }
        request.body(payload)
    }

    /// The request log lines written so far.
    pub fn log_lines(&self) -> Vec<Value> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l.get("http_status").is_some())
            .collect()
    }
}

/// Starts a PostgREST of our own against the stack's database, so a test can stop it.
pub async fn spawn_postgrest() -> Server {
    spawn_postgrest_on(free_port()).await
}

/// Starts a PostgREST of our own on `port`.
pub async fn spawn_postgrest_on(port: u16) -> Server {
    spawn_postgrest_for(&stack_var("PGRST_DB_URI"), port).await
}

/// Starts a PostgREST of our own on `port`, serving the database at `db_uri`.
pub async fn spawn_postgrest_for(db_uri: &str, port: u16) -> Server {
    let child = Command::new(stack_var("POSTGREST_BIN"))
        .env_clear()
        .env("PGRST_DB_URI", db_uri)
        .env("PGRST_DB_SCHEMAS", "public")
        .env("PGRST_DB_ANON_ROLE", "anon")
        .env("PGRST_JWT_SECRET", stack_var("PGRST_JWT_SECRET"))
        .env("PGRST_SERVER_HOST", "127.0.0.1")
        .env("PGRST_SERVER_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("PostgREST starts");
    let server = Server { child, port };
    let url = format!("http://127.0.0.1:{port}/");
    wait_until("PostgREST", Duration::from_secs(20), || {
        let url = url.clone();
        async move {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    server
}

/// Starts an S3 server of our own over a private folder, so a test can stop it.
pub async fn spawn_s3() -> Server {
    spawn_s3_on(free_port(), &private_s3_root()).await
}

/// A new folder, holding the stack's bucket, for an S3 server a test starts (removed with
/// the stack). Two s3s-fs processes must never share a folder: each clears the folder's
/// temporary files when it starts and both number them from zero, so a second server breaks
/// the uploads in flight on the first.
pub fn private_s3_root() -> PathBuf {
    let shared_root = PathBuf::from(stack_var("S3_ROOT"));
    let root = shared_root.with_file_name(format!("s3-private-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(root.join(stack_var("S3_BUCKET"))).expect("a private S3 folder");
    root
}

/// Starts an S3 server of our own on `port` over `root`; start it again on the same port and
/// folder to bring back what a stopped one stored.
pub async fn spawn_s3_on(port: u16, root: &std::path::Path) -> Server {
    let child = Command::new(stack_var("S3_SERVER_BIN"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            &stack_var("AWS_ACCESS_KEY_ID"),
            "--secret-key",
            &stack_var("AWS_SECRET_ACCESS_KEY"),
        ])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the S3 server starts");
    wait_for_port(port).await;
    Server { child, port }
}

/// A file of the repository, as text.
pub fn repo_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `template.yaml` as CloudFormation's JSON form: a tag becomes its function object
/// (`!Ref X` is `{"Ref": "X"}`, `!Sub s` is `{"Fn::Sub": "s"}`, `!GetAtt A.B` is
/// `{"Fn::GetAtt": "A.B"}`).
pub fn template() -> Value {
    let yaml: serde_norway::Value =
        serde_norway::from_str(&repo_file("template.yaml")).expect("template.yaml is YAML");
    cloudformation_json(yaml)
}

fn cloudformation_json(yaml: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(n).expect("a number"),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(cloudformation_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = k.as_str().expect("template keys are strings").to_owned();
                    (key, cloudformation_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let name = tagged.tag.to_string();
            let name = name.trim_start_matches('!');
            let key = if name == "Ref" {
                name.to_owned()
            } else {
                format!("Fn::{name}")
            };
            json!({ key: cloudformation_json(tagged.value) })
        }
    }
}

/// The `Properties` of reconcile's one schedule in template.yaml.
pub fn reconcile_schedule() -> Value {
    let template = template();
    let events = template["Resources"]["ReconcileFunction"]["Properties"]["Events"]
        .as_object()
        .expect("reconcile has events")
        .clone();
    let schedules: Vec<Value> = events
        .into_values()
        .filter(|e| e["Type"] == "Schedule")
        .collect();
    assert_eq!(schedules.len(), 1, "one schedule for reconcile");
    schedules[0]["Properties"].clone()
}

/// The event EventBridge invokes a function with when a schedule with no `Input` fires.
pub fn scheduled_event(source: &str) -> Value {
    json!({
        "version": "0",
        "id": Uuid::new_v4(),
        "detail-type": "Scheduled Event",
        "source": source,
        "account": "123456789012",
        "time": "2026-12-01T12:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/Every5Minutes"],
        "detail": {}
    })
}

/// `url` (a PostgreSQL URI) naming the database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => url.to_owned(),
    }
}

/// Runs `sql` with psql as the stack's database owner on `database`; stdout, or stderr as
/// the error.
pub fn psql_in(database: &str, sql: &str) -> Result<String, String> {
    psql_at(&with_database(&stack_var("DATABASE_URL"), database), sql)
}

/// `psql_in` for async tests: off the runtime's threads, as psql blocks.
pub async fn psql_on(database: &str, sql: &str) -> Result<String, String> {
    let (database, sql) = (database.to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || psql_in(&database, &sql))
        .await
        .expect("psql runs")
}

/// Runs `sql` on the stack's database as its owner; stdout, failing the test on an error.
pub async fn psql(sql: &str) -> String {
    psql_on("postgres", sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Runs `sql` with psql on the database at `url`; stdout, or stderr as the error.
pub fn psql_at(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The URL of the stack's database `database` as the Supabase CLI takes it (no TLS here).
pub fn cli_database_url(database: &str) -> String {
    format!(
        "{}?sslmode=disable",
        with_database(&stack_var("DATABASE_URL"), database)
    )
}

/// Runs the pinned Supabase CLI (`SUPABASE_CLI`, from the stack) with `args`, its usage
/// reports off; its stdout, or its stdout and stderr as the error.
pub fn supabase_cli(args: &[&str]) -> Result<String, String> {
    let out = Command::new(stack_var("SUPABASE_CLI"))
        .args(args)
        .env("SUPABASE_TELEMETRY_DISABLED", "1")
        .env("DO_NOT_TRACK", "1")
        .stdin(Stdio::null())
        .output()
        .expect("the Supabase CLI runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Applies the project's migrations not applied before to the database at `url` (a
/// `cli_database_url`) with `supabase db push`, as a user does to a hosted project.
pub fn push_migrations(url: &str) -> Result<String, String> {
    let project = TempDir::new("cli-project");
    let supabase = project.path().join("supabase");
    std::fs::create_dir_all(&supabase).expect("project folder");
    let migrations = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("supabase/migrations");
    std::os::unix::fs::symlink(migrations, supabase.join("migrations")).expect("link");
    let workdir = project.path().to_string_lossy().into_owned();
    supabase_cli(&[
        "db",
        "push",
        "--workdir",
        &workdir,
        "--db-url",
        url,
        "--yes",
    ])
}

/// A folder of a test's own under the system's temporary folder; it goes when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates an empty folder whose name starts with `prefix`.
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "replicate-webhooks-{prefix}-{}",
            Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).expect("temporary folder");
        TempDir(path)
    }

    /// Where it is.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the stack gives its database before the migrations (Supabase's roles, grants and
/// default privileges, and the stand-ins for Auth, pg_net, Vault and Realtime), given to
/// the tests' own databases too.
const BOOTSTRAP: &str = include_str!("../../scripts/sql/supabase-bootstrap.sql");

/// The project's migrations, in the order they apply.
pub fn migration_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("supabase/migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("migrations")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    files
}

/// A database with every migration applied that new databases are copied from, made once
/// per set of migrations (its name says which) and kept for the next run.
fn template_database() -> &'static str {
    static TEMPLATE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
        use sha2::Digest as _;
        let files = migration_files();
        let mut hash = Sha256::new();
        for file in &files {
            hash.update(std::fs::read_to_string(file).expect("migration"));
        }
        hash.update(BOOTSTRAP);
        let name = format!("tpl_{:x}", hash.finalize())[..24].to_owned();
        let exists = psql_in(
            "postgres",
            &format!("select count(*) from pg_database where datname = '{name}'"),
        )
        .expect("the stack's database answers");
        if exists == "1" {
            return name;
        }
        // Built under a name of its own and renamed when complete, so a half-made
        // template is never used.
        let building = format!("build_{}", Uuid::new_v4().simple());
        psql_in("postgres", &format!("create database {building}")).expect("create database");
        let bootstrap = psql_in(&building, &format!("begin;\n{BOOTSTRAP}\ncommit;"));
        assert!(bootstrap.is_ok(), "template: {bootstrap:?}");
        let pushed = push_migrations(&cli_database_url(&building));
        assert!(pushed.is_ok(), "template: {pushed:?}");
        psql_in(
            "postgres",
            &format!("alter database {building} rename to {name}"),
        )
        .expect("rename the template");
        name
    })
}

/// A database of a test's own, with every migration applied, and a PostgREST in front of
/// it: counts and retention seen there are the test's alone. Both go when dropped.
pub struct OwnDatabase {
    /// The database's name.
    pub name: String,
    /// Base URL of its PostgREST.
    pub url: String,
    postgrest: Server,
}

impl OwnDatabase {
    /// Copies the template and starts PostgREST on it.
    pub async fn new() -> OwnDatabase {
        let template = template_database();
        let name = format!("own_{}", Uuid::new_v4().simple());
        psql_in(
            "postgres",
            &format!("create database {name} template {template}"),
        )
        .expect("copy the template");
        let port = free_port();
        let postgrest =
            spawn_postgrest_for(&with_database(&stack_var("PGRST_DB_URI"), &name), port).await;
        OwnDatabase {
            name,
            url: format!("http://127.0.0.1:{port}"),
            postgrest,
        }
    }

    /// The stack's environment, pointed at this database, with `changes` applied.
    pub fn settings_with(&self, changes: &[(&str, &str)]) -> HashMap<String, String> {
        let mut env = settings_with(changes);
        env.insert("POSTGREST_URL".into(), self.url.clone());
        env
    }

    /// A service-role client of this database.
    pub fn db(&self) -> Db {
        Db::service_at(&self.url)
    }

    /// Runs `sql` on this database as its owner; panics when it fails.
    pub fn psql(&self, sql: &str) -> String {
        psql_in(&self.name, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        self.postgrest.stop();
        let _ = psql_in(
            "postgres",
            &format!("drop database if exists {} with (force)", self.name),
        );
    }
}
