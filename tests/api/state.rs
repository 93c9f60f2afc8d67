//! Job state rules through the webhook handlers, in process, against PostgreSQL + PostgREST.

use crate::helpers::*;
use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};
use shared::routes::{Webhook, WebhookRoute};
use std::sync::Arc;
use uuid::Uuid;

struct Predict {
    db: Db,
    user: Uuid,
    id: Uuid,
    rid: String,
    handler: Webhook,
}

impl Predict {
    async fn new(credits: i32) -> Predict {
        let db = Db::service();
        let user = seed_user(&db).await;
        let id = seed_prediction(&db, user, None, credits).await;
        Predict {
            db,
            user,
            id,
            rid: replicate_id(),
            handler: Webhook::new(WebhookRoute::Predict, &settings()),
        }
    }

    fn uri(&self) -> String {
        format!(
            "/api/replicate/webhooks/predict?user_id={}&prediction_id={}",
            self.user, self.id
        )
    }

    async fn deliver(&self, fixture_name: &str) -> (u16, Value) {
        self.deliver_with_id(fixture_name, &webhook_id()).await
    }

    async fn deliver_with_id(&self, fixture_name: &str, id: &str) -> (u16, Value) {
        let request = signed_post_with_id(&self.uri(), &fixture(fixture_name, &self.rid), id);
        let response = self.handler.call(request).await;
        (response.status().as_u16(), body_json(&response))
    }

    async fn row(&self) -> Value {
        self.db.row("predictions", self.id).await
    }

    async fn refunds(&self) -> Vec<Value> {
        self.db
            .select("credit_ledger", &format!("prediction_id=eq.{}", self.id))
            .await
    }
}

async fn outcome(p: &Predict, fixture_name: &str) -> String {
    let (status, body) = p.deliver(fixture_name).await;
    assert_eq!(status, 200, "{fixture_name}: {body}");
    body["outcome"].as_str().expect("outcome").to_owned()
}

#[tokio::test]
async fn in_order_progress_is_applied() {
    let p = Predict::new(0).await;
    assert_eq!(outcome(&p, "prediction_starting").await, "applied");
    assert_eq!(p.row().await["status"], "starting");
    assert_eq!(outcome(&p, "prediction_processing_tokens").await, "applied");
    assert_eq!(p.row().await["output"], json!(["Hello", "!"]));
    assert_eq!(outcome(&p, "prediction_succeeded_tokens").await, "applied");
    let row = p.row().await;
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["output"].as_array().map(Vec::len), Some(7));
    assert_eq!(row["metrics"]["output_token_count"], 7);
    assert_eq!(row["replicate_prediction_id"], p.rid.as_str());
    assert!(row["completed_at"].is_string() && row["started_at"].is_string());
}

#[tokio::test]
async fn out_of_order_events_are_stale_and_change_nothing() {
    let p = Predict::new(0).await;
    assert_eq!(outcome(&p, "prediction_succeeded_text").await, "applied");
    let before = p.row().await;
    assert_eq!(outcome(&p, "prediction_processing").await, "stale");
    assert_eq!(outcome(&p, "prediction_starting").await, "stale");
    let after = p.row().await;
    assert_eq!(before, after);
    assert_eq!(after["output"], "Hello! How can I help you today?");
}

#[tokio::test]
async fn output_never_shrinks() {
    let p = Predict::new(0).await;
    assert_eq!(outcome(&p, "prediction_processing_tokens").await, "applied");
    let mut fewer = fixture("prediction_processing_tokens", &p.rid);
    fewer["output"] = json!(["Hello"]);
    let response = p.handler.call(signed_post(&p.uri(), &fewer)).await;
    assert_eq!(body_json(&response)["outcome"], "stale");
    assert_eq!(p.row().await["output"], json!(["Hello", "!"]));
}

#[tokio::test]
async fn same_webhook_id_twice_is_a_duplicate() {
    let p = Predict::new(4).await;
    let id = webhook_id();
    let (_, first) = p.deliver_with_id("prediction_failed", &id).await;
    assert_eq!(first["outcome"], "applied");
    let (status, second) = p.deliver_with_id("prediction_failed", &id).await;
    assert_eq!(status, 200);
    assert_eq!(second["outcome"], "duplicate");
    assert_eq!(p.refunds().await.len(), 1);
    let events =
        p.db.select("webhook_events", &format!("webhook_id=eq.{id}"))
            .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["outcome"], "applied");
}

#[tokio::test]
async fn each_refunding_status_refunds_once() {
    for status in ["failed", "canceled", "aborted"] {
        let p = Predict::new(5).await;
        assert_eq!(outcome(&p, "prediction_processing").await, "applied");
        let (code, body) = p.deliver(&format!("prediction_{status}")).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["refunded"], true, "{status}");
        // The same terminal event again, with a new webhook id (a retry through another path).
        assert_eq!(
            outcome(&p, &format!("prediction_{status}")).await,
            "duplicate"
        );
        let refunds = p.refunds().await;
        assert_eq!(refunds.len(), 1, "{status}");
        assert_eq!(refunds[0]["delta"], 5);
        assert_eq!(refunds[0]["user_id"], p.user.to_string());
        let row = p.row().await;
        assert_eq!(row["status"], status);
        assert!(row["refunded_at"].is_string());
    }
}

#[tokio::test]
async fn a_failed_training_refunds_its_model() {
    let db = Db::service();
    let user = seed_user(&db).await;
    let model = seed_model(&db, user, None, 20).await;
    let handler = Webhook::new(WebhookRoute::Train, &settings());
    let uri = format!("/api/replicate/webhooks/train?user_id={user}&model_id={model}");
    let response = handler
        .call(signed_post(
            &uri,
            &fixture("training_failed", &replicate_id()),
        ))
        .await;
    assert_eq!(response.status(), 200);
    let row = db.row("models", model).await;
    assert_eq!(row["status"], "failed");
    assert_eq!(
        row["error"],
        "Training failed: no images found in input_images"
    );
    let refunds = db
        .select("credit_ledger", &format!("model_id=eq.{model}"))
        .await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["delta"], 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_concurrent_failures_refund_exactly_once() {
    let db = Db::service();
    let user = seed_user(&db).await;
    let rid = replicate_id();
    let prediction = seed_prediction(&db, user, Some(&rid), 7).await;
    let handler = Arc::new(Webhook::new(WebhookRoute::Unified, &settings()));
    let body = fixture("prediction_failed", &rid);
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let handler = Arc::clone(&handler);
            let request = signed_post("/api/webhooks/replicate", &body);
            tokio::spawn(async move {
                let response = handler.call(request).await;
                (
                    response.status().as_u16(),
                    body_json(&response)["outcome"].clone(),
                )
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        let (status, outcome) = task.await.expect("task");
        assert_eq!(status, 200);
        if outcome == "applied" {
            applied += 1;
        } else {
            assert_eq!(outcome, "duplicate");
        }
    }
    assert_eq!(applied, 1);
    let refunds = db
        .select("credit_ledger", &format!("prediction_id=eq.{prediction}"))
        .await;
    assert_eq!(refunds.len(), 1);
}

#[tokio::test]
async fn unknown_jobs_are_404_on_owned_routes_and_ignored_on_account_routes() {
    let body = fixture("prediction_failed", &replicate_id());
    let db = Db::service();
    let user = seed_user(&db).await;
    let someone_elses = seed_prediction(&db, seed_user(&db).await, None, 1).await;
    for (route, uri) in [
        (
            WebhookRoute::Predict,
            format!("/p?user_id={user}&prediction_id={}", Uuid::new_v4()),
        ),
        (
            WebhookRoute::Predict,
            format!("/p?user_id={user}&prediction_id={someone_elses}"),
        ),
        (
            WebhookRoute::Train,
            format!("/t?user_id={user}&model_id={}", Uuid::new_v4()),
        ),
    ] {
        let response = Webhook::new(route, &settings())
            .call(signed_post(&uri, &body))
            .await;
        assert_eq!(response.status(), 404, "{uri}");
        assert!(body_json(&response)["error"].is_string());
    }
    assert_eq!(
        db.row("predictions", someone_elses).await["status"],
        "pending"
    );
    for route in [WebhookRoute::Unified, WebhookRoute::Completed] {
        let response = Webhook::new(route, &settings())
            .call(signed_post("/u", &body))
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(body_json(&response)["outcome"], "ignored");
    }
}

#[tokio::test]
async fn bad_requests_are_400_and_change_nothing() {
    let p = Predict::new(3).await;
    let good = fixture("prediction_failed", &p.rid);
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        (
            format!("/p?user_id=not-a-uuid&prediction_id={}", p.id),
            serde_json::to_vec(&good).expect("json"),
        ),
        (
            format!("/p?prediction_id={}", p.id),
            serde_json::to_vec(&good).expect("json"),
        ),
    ];
    for body in [
        b"not json".to_vec(),
        serde_json::to_vec(&json!({"status": "failed"})).expect("json"),
        serde_json::to_vec(&json!({"id": p.rid})).expect("json"),
        serde_json::to_vec(&json!({"id": p.rid, "status": "exploded"})).expect("json"),
        serde_json::to_vec(&json!({"id": p.rid, "status": "failed", "completed_at": "soon"}))
            .expect("json"),
    ] {
        cases.push((p.uri(), body));
    }
    for (uri, body) in cases {
        let mut request = Request::post(&uri);
        for (k, v) in signed_headers(&webhook_id(), &body) {
            request = request.header(k, v);
        }
        let response = p
            .handler
            .call(request.body(Bytes::from(body)).expect("request"))
            .await;
        assert_eq!(response.status(), 400, "{uri}");
        assert!(body_json(&response)["error"].is_string());
    }
    let row = p.row().await;
    assert_eq!(row["status"], "pending");
    assert!(p.refunds().await.is_empty());
}

#[tokio::test]
async fn completed_route_acts_only_on_terminal_statuses() {
    let db = Db::service();
    let user = seed_user(&db).await;
    let rid = replicate_id();
    let prediction = seed_prediction(&db, user, Some(&rid), 2).await;
    let handler = Webhook::new(WebhookRoute::Completed, &settings());
    let response = handler
        .call(signed_post("/c", &fixture("prediction_processing", &rid)))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(body_json(&response)["outcome"], "ignored");
    assert_eq!(db.row("predictions", prediction).await["status"], "pending");
    let response = handler
        .call(signed_post("/c", &fixture("prediction_canceled", &rid)))
        .await;
    assert_eq!(body_json(&response)["outcome"], "applied");
    assert_eq!(
        db.row("predictions", prediction).await["status"],
        "canceled"
    );
}

#[tokio::test]
async fn unified_finds_trainings_predictions_and_upscales() {
    let db = Db::service();
    let user = seed_user(&db).await;
    let handler = Webhook::new(WebhookRoute::Unified, &settings());

    let training = replicate_id();
    seed_model(&db, user, Some(&training), 0).await;
    assert_eq!(
        unified_job(&handler, "training_processing", &training).await,
        "model"
    );

    let generation = replicate_id();
    seed_prediction(&db, user, Some(&generation), 0).await;
    assert_eq!(
        unified_job(&handler, "prediction_processing", &generation).await,
        "prediction"
    );

    for row in [
        json!({"kind": "upscale", "prompt": "x"}),
        json!({"kind": "generation", "prompt": "[UPSCALED] a cat"}),
    ] {
        let rid = replicate_id();
        let mut row = row;
        row["user_id"] = json!(user);
        row["replicate_prediction_id"] = json!(rid);
        db.insert("predictions", &row).await;
        assert_eq!(
            unified_job(&handler, "prediction_processing", &rid).await,
            "upscale",
            "{row}"
        );
    }
}

/// The kind of job the unified route matched a delivery of `fixture_name` for `rid` to.
async fn unified_job(handler: &Webhook, fixture_name: &str, rid: &str) -> Value {
    let (_, body) = deliver(handler, "/u", &fixture(fixture_name, rid)).await;
    body["job"].clone()
}

#[tokio::test]
async fn database_down_is_503_and_a_retry_applies() {
    let mut postgrest = spawn_postgrest().await;
    let port = postgrest.port;
    let url = format!("http://127.0.0.1:{port}");
    let db = Db::service();
    let user = seed_user(&db).await;
    let rid = replicate_id();
    let prediction = seed_prediction(&db, user, Some(&rid), 6).await;
    let handler = Webhook::new(
        WebhookRoute::Unified,
        &settings_with(&[("POSTGREST_URL", &url)]),
    );
    let body = fixture("prediction_failed", &rid);
    let id = webhook_id();

    postgrest.stop();
    let response = handler.call(signed_post_with_id("/u", &body, &id)).await;
    assert_eq!(response.status(), 503);
    let error = body_json(&response)["error"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(!error.contains(&url), "{error}");
    assert_eq!(db.row("predictions", prediction).await["status"], "pending");

    // Replicate retries the terminal event with the same webhook id once we are back.
    let _back = spawn_postgrest_on(port).await;
    let response = handler.call(signed_post_with_id("/u", &body, &id)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body_json(&response)["outcome"], "applied");
    assert_eq!(db.row("predictions", prediction).await["status"], "failed");
    assert_eq!(
        db.select("credit_ledger", &format!("prediction_id=eq.{prediction}"))
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn the_anon_key_cannot_write_any_table() {
    let anon = Db::anon();
    let service = Db::service();
    let user = seed_user(&service).await;
    let prediction = seed_prediction(&service, user, None, 1).await;
    let model = seed_model(&service, user, None, 1).await;
    let event = webhook_id();
    service
        .insert(
            "webhook_events",
            &json!({"webhook_id": event, "route": "x", "outcome": "applied"}),
        )
        .await;
    service
        .insert(
            "credit_ledger",
            &json!({"user_id": user, "delta": 1, "reason": "gift"}),
        )
        .await;
    let inserts = [
        (
            "profiles",
            json!({"id": Uuid::new_v4(), "email": "x@example.com"}),
        ),
        ("models", json!({"user_id": user})),
        ("predictions", json!({"user_id": user})),
        (
            "credit_ledger",
            json!({"user_id": user, "delta": 100, "reason": "gift"}),
        ),
        (
            "webhook_events",
            json!({"webhook_id": webhook_id(), "route": "x", "outcome": "applied"}),
        ),
    ];
    for (table, row) in &inserts {
        let status = anon.try_insert(table, row).await;
        assert!(
            status == 401 || status == 403,
            "{table}: insert answered {status}"
        );
    }
    // Each change names an existing row by a real column, so only the privilege can stop it:
    // the same request as the service role (the control) does change the row.
    // (table, the row's filter, a text column of it)
    let changes = [
        ("profiles", format!("id=eq.{user}"), "email"),
        ("models", format!("id=eq.{model}"), "error"),
        ("predictions", format!("id=eq.{prediction}"), "error"),
        ("credit_ledger", format!("user_id=eq.{user}"), "reason"),
        ("webhook_events", format!("webhook_id=eq.{event}"), "detail"),
    ];
    let denied = |table: &str, what: &str, changed: &Changed| {
        assert_eq!(
            (changed.status, changed.code.as_deref(), changed.rows),
            (401, Some("42501"), 0),
            "{table}: anon {what} must be refused for lack of privilege"
        );
    };
    for (table, filter, column) in changes {
        let body = &json!({ column: "changed@example.com" });
        let patch = anon
            .try_change(reqwest::Method::PATCH, table, &filter, body)
            .await;
        denied(table, "patch", &patch);
        let delete = anon
            .try_change(reqwest::Method::DELETE, table, &filter, &json!({}))
            .await;
        denied(table, "delete", &delete);
        let control = service
            .try_change(reqwest::Method::PATCH, table, &filter, body)
            .await;
        assert_eq!(
            (control.status, control.rows),
            (200, 1),
            "{table}: service patch"
        );
    }
    let status = anon
        .try_insert(
            "rpc/apply_replicate_event",
            &json!({"p_webhook_id": webhook_id(), "p_route": "x", "p_replicate_id": "r", "p_status": "failed"}),
        )
        .await;
    assert!(status == 401 || status == 403, "rpc answered {status}");
    assert_eq!(
        service.row("predictions", prediction).await["status"],
        "pending"
    );
}

#[tokio::test]
async fn nul_characters_are_removed_before_they_reach_the_database() {
    // PostgreSQL's text and jsonb refuse U+0000; before, such an event answered 503 on
    // every retry and the failed job was never refunded.
    let p = Predict::new(3).await;
    let mut body = fixture("prediction_failed", &p.rid);
    body["error"] = json!("CUDA error\u{0}: out of memory");
    body["output"] = json!(["partial\u{0}", {"k\u{0}": "v"}]);
    body["metrics"] = json!({"predict_time": 1.5, "note": "a\u{0}b"});
    let response = p.handler.call(signed_post(&p.uri(), &body)).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    let row = p.row().await;
    assert_eq!(row["status"], "failed");
    assert_eq!(row["error"], "CUDA error: out of memory");
    assert_eq!(row["output"], json!(["partial", {"k": "v"}]));
    assert_eq!(row["metrics"], json!({"predict_time": 1.5, "note": "ab"}));
    assert_eq!(p.refunds().await.len(), 1);

    let db = Db::service();
    let user = seed_user(&db).await;
    let model = seed_model(&db, user, None, 5).await;
    let mut body = fixture("training_failed", &replicate_id());
    body["error"] = json!("bad\u{0}dataset");
    let response = Webhook::new(WebhookRoute::Train, &settings())
        .call(signed_post(
            &format!("/t?user_id={user}&model_id={model}"),
            &body,
        ))
        .await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    let row = db.row("models", model).await;
    assert_eq!(
        (row["status"].as_str(), row["error"].as_str()),
        (Some("failed"), Some("baddataset"))
    );
    let refunds = db
        .select("credit_ledger", &format!("model_id=eq.{model}"))
        .await;
    assert_eq!(refunds.len(), 1);
}
