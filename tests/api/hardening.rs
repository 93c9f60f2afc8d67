//! What the functions expose: stored files a public bucket serves, secrets that must not
//! follow redirects, configuration values that must not crash or leak, and ids that reach
//! storage keys.

use crate::helpers::*;
use crate::standin::StandIn;
use serde_json::{Value, json};
use shared::routes::{Health, Webhook, WebhookRoute};

async fn health(changes: &[(&str, &str)]) -> (u16, Value) {
    get(&Health::new(&settings_with(changes)), "/api/health", None).await
}

#[tokio::test]
async fn types_a_browser_would_run_are_stored_to_download() {
    let files = StandIn::start().await;
    let page = files.add(
        "page.html",
        "text/html; charset=utf-8",
        b"<script>alert(1)</script>",
    );
    let picture = files.add("ok.png", "image/png", b"png bytes");
    let db = Db::service();
    let user = seed_user(&db).await;
    let id = seed_prediction(&db, user, None, 1).await;
    let rid = replicate_id();
    let mut body = fixture("prediction_succeeded_url_list", &rid);
    body["output"] = json!([
        "data:text/html,<script>alert(1)</script>",
        "data:image/svg+xml;base64,PHN2ZyB4bWxucz0naHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmcnPjxzY3JpcHQ+YWxlcnQoMSk8L3NjcmlwdD48L3N2Zz4=",
        page,
        picture,
    ]);
    let handler = Webhook::new(
        WebhookRoute::Predict,
        &settings_with(&[("OUTPUT_HOSTS", &files.base)]),
    );
    let uri = format!("/p?user_id={user}&prediction_id={id}");
    let response = handler.call(signed_post(&uri, &body)).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));

    let prefix = format!("predictions/{user}/{rid}/");
    let mut keys = s3_keys(&prefix).await;
    keys.sort();
    let names: Vec<&str> = keys.iter().map(|k| &k[prefix.len()..]).collect();
    // No .html or .svg key, whatever the source's name or type.
    assert_eq!(names, ["0", "1", "2", "3.png"]);
    for key in &keys[..3] {
        let (content_type, _) = s3_object(key).await;
        assert_eq!(content_type, "application/octet-stream", "{key}");
        assert_eq!(
            s3_disposition(key).await.as_deref(),
            Some("attachment"),
            "{key}"
        );
    }
    assert_eq!(s3_object(&keys[3]).await.0, "image/png");
    assert_eq!(s3_disposition(&keys[3]).await, None);
}

/// A server that redirects every request to another, which nothing may reach.
struct Moved {
    base: String,
    moved: StandIn,
    elsewhere: StandIn,
}

impl Moved {
    async fn start() -> Moved {
        let moved = StandIn::start().await;
        let elsewhere = StandIn::start().await;
        moved.redirect_everything_to(&elsewhere.base);
        Moved {
            base: moved.base.clone(),
            moved,
            elsewhere,
        }
    }

    /// Checks that `path` alone was asked for, and that the redirect was not followed.
    fn assert_only_asked(&self, path: &str) {
        assert_eq!(self.moved.requests(), [path]);
        assert!(
            self.elsewhere.received().is_empty(),
            "{:?}",
            self.elsewhere.requests()
        );
    }
}

#[tokio::test]
async fn the_service_key_never_follows_a_redirect() {
    let moved = Moved::start().await;
    let handler = Webhook::new(
        WebhookRoute::Unified,
        &settings_with(&[("POSTGREST_URL", &moved.base)]),
    );
    let body = fixture("prediction_failed", &replicate_id());
    let response = handler.call(signed_post("/u", &body)).await;
    assert_eq!(response.status(), 503, "{}", body_json(&response));
    moved.assert_only_asked("/rpc/apply_replicate_event");
}

#[tokio::test]
async fn the_email_key_never_follows_a_redirect() {
    let moved = Moved::start().await;
    let db = Db::service();
    let user = seed_user(&db).await;
    let model = seed_model(&db, user, None, 3).await;
    let handler = Webhook::new(WebhookRoute::Train, &emailing(&moved.base, &[]));
    let body = fixture("training_failed", &replicate_id());
    let response = handler
        .call(signed_post(
            &format!("/t?user_id={user}&model_id={model}"),
            &body,
        ))
        .await;
    // The email is attempted (the redirect proves it) and its failure fails nothing.
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    moved.assert_only_asked("/emails");
}

#[tokio::test]
async fn a_key_pasted_with_a_newline_works_and_a_control_character_is_named() {
    let key = stack_var("SUPABASE_SERVICE_ROLE_KEY");
    let db = Db::service();
    let user = seed_user(&db).await;
    let id = seed_prediction(&db, user, None, 2).await;
    let uri = format!("/p?user_id={user}&prediction_id={id}");
    let body = fixture("prediction_failed", &replicate_id());

    let with_newline = format!("{key}\n");
    let handler = Webhook::new(
        WebhookRoute::Predict,
        &settings_with(&[("SUPABASE_SERVICE_ROLE_KEY", &with_newline)]),
    );
    let response = handler.call(signed_post(&uri, &body)).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    assert_eq!(db.row("predictions", id).await["status"], "failed");

    let broken = format!("{}\u{1}{}", &key[..8], &key[8..]);
    let handler = Webhook::new(
        WebhookRoute::Predict,
        &settings_with(&[("SUPABASE_SERVICE_ROLE_KEY", &broken)]),
    );
    let response = handler.call(signed_post(&uri, &body)).await;
    assert_eq!(response.status(), 503);
    let message = body_json(&response)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("SUPABASE_SERVICE_ROLE_KEY is invalid"),
        "{message}"
    );
    assert!(!message.contains(&key[..8]), "{message}");

    let (status, report) = health(&[("SUPABASE_SERVICE_ROLE_KEY", &broken)]).await;
    assert_eq!(
        (status, report["database"].as_str()),
        (503, Some("not configured")),
        "{report}"
    );
}

#[tokio::test]
async fn invalid_values_are_named_never_echoed_and_make_health_degraded() {
    let credentials = "https://deploy:hunter2@files.example.com";
    let handler = Webhook::new(
        WebhookRoute::Unified,
        &settings_with(&[("OUTPUT_HOSTS", credentials)]),
    );
    let response = handler
        .call(signed_post(
            "/u",
            &fixture("prediction_failed", &replicate_id()),
        ))
        .await;
    assert_eq!(response.status(), 503);
    let answer = body_json(&response).to_string();
    assert!(answer.contains("OUTPUT_HOSTS is invalid"), "{answer}");
    assert!(
        !answer.contains("hunter2") && !answer.contains("files.example"),
        "{answer}"
    );

    let (status, report) = health(&[
        ("OUTPUT_HOSTS", credentials),
        ("CRON_SECRET", "s\u{7}"),
        ("REPLICATE_API_TOKEN", "r8_token"),
    ])
    .await;
    assert_eq!(
        (status, report["status"].as_str()),
        (503, Some("degraded")),
        "{report}"
    );
    let problems = report["problems"].to_string();
    assert!(problems.contains("OUTPUT_HOSTS is invalid"), "{problems}");
    assert!(problems.contains("CRON_SECRET is invalid"), "{problems}");
    assert!(!report.to_string().contains("hunter2"), "{report}");
    assert_eq!(report["reconcile"], "invalid");
}

#[tokio::test]
async fn an_id_that_could_change_a_storage_key_is_refused() {
    let job = Job::prediction().await;
    let handler = Webhook::new(WebhookRoute::Predict, &settings());
    for bad in ["../../other-user/x", "a b", &"z".repeat(65)] {
        let mut body = fixture("prediction_failed", "placeholder");
        body["id"] = json!(bad);
        let (status, _) = deliver(&handler, &job.uri(), &body).await;
        assert_eq!(status, 400, "{bad}");
    }
    assert_eq!(job.status().await, "pending");
    assert!(
        job.db
            .select("credit_ledger", &format!("prediction_id=eq.{}", job.id))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn output_fetches_never_go_through_a_proxy() {
    let files = StandIn::start().await;
    // The source is named `localhost` and everything else 127.0.0.1, so NO_PROXY can let the
    // database and the bucket through while a proxied fetch would reach the proxy.
    let source = files.base.replace("127.0.0.1", "localhost");
    let url = files
        .add("out.png", "image/png", b"png bytes")
        .replace("127.0.0.1", "localhost");
    let proxy = StandIn::start().await;
    let job = Job::prediction().await;
    // A separate process, so the proxy variables reach only this function.
    let function = Function::start(
        env!("CARGO_BIN_EXE_predict"),
        &[
            ("OUTPUT_HOSTS", &source),
            ("HTTP_PROXY", &proxy.base),
            ("HTTPS_PROXY", &proxy.base),
            ("NO_PROXY", "127.0.0.1"),
        ],
    )
    .await;
    let response = function
        .request(&job.uri(), &job.delivery(json!([url])), &webhook_id())
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    assert!(proxy.received().is_empty(), "{:?}", proxy.requests());
    assert_eq!(files.requests(), ["/f/out.png"]);
    assert_eq!(job.status().await, "succeeded");
}

#[tokio::test]
async fn an_upstream_answer_is_never_read_without_bound() {
    // A PostgREST stand-in whose answer is well-formed but padded to 2 MiB: read whole, it
    // would be accepted.
    let database = StandIn::start().await;
    let mut answer = json!({"outcome": "applied", "job": "prediction", "job_id": null,
        "user_id": null, "status": "failed", "refunded": false})
    .to_string()
    .into_bytes();
    answer.extend(std::iter::repeat_n(b' ', 2 * 1024 * 1024));
    database.set(
        "/rpc/apply_replicate_event",
        200,
        "application/json",
        &answer,
    );
    let handler = Webhook::new(
        WebhookRoute::Unified,
        &settings_with(&[("POSTGREST_URL", &database.base)]),
    );
    let response = handler
        .call(signed_post(
            "/u",
            &fixture("prediction_failed", &replicate_id()),
        ))
        .await;
    assert_eq!(response.status(), 503, "{}", body_json(&response));
    assert_eq!(database.requests(), ["/rpc/apply_replicate_event"]);
}
