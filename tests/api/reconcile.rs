//! Reconcile against a local stand-in for Replicate's API: jobs whose terminal webhook
//! never came are finished through the webhook path. Email on a model's terminal status,
//! against a local capture server standing in for Resend.

use crate::helpers::*;
use crate::standin::StandIn;
use http::Method;
use serde_json::{Value, json};
use shared::routes::{Reconcile, Webhook, WebhookRoute};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

const CRON_SECRET: &str = "cron-test-secret";

/// Reconcile looks at every quiet job in the shared database, so its tests take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct World {
    db: Db,
    api: StandIn,
    files: StandIn,
    user: Uuid,
    // Last, so that it is released once the rest is gone.
    _turn: Option<tokio::sync::MutexGuard<'static, ()>>,
}

impl World {
    async fn new() -> World {
        World::with_turn(None).await
    }

    /// A world for a test that runs reconcile: no other such test runs until it is dropped.
    async fn exclusive() -> World {
        World::with_turn(Some(ONE_AT_A_TIME.lock().await)).await
    }

    async fn with_turn(turn: Option<tokio::sync::MutexGuard<'static, ()>>) -> World {
        let db = Db::service();
        let user = seed_user(&db).await;
        World {
            db,
            api: StandIn::start().await,
            files: StandIn::start().await,
            user,
            _turn: turn,
        }
    }

    fn reconcile(&self) -> Reconcile {
        self.reconcile_with(&[])
    }

    /// A prediction that Replicate started two hours ago and we last heard of then.
    async fn quiet_prediction(&self, credits: i32) -> (Uuid, String) {
        self.quiet_prediction_since(2, credits).await
    }

    /// Replicate's API answers for `rid` with `fixture`, changed by `edit`.
    fn replicate_says(&self, rid: &str, fixture_name: &str, edit: impl FnOnce(&mut Value)) {
        let mut body = fixture(fixture_name, rid);
        edit(&mut body);
        self.api
            .set_json(&format!("/v1/predictions/{rid}"), 200, &body);
    }

    /// The outcome recorded for reconcile's own event that took `rid` to `status`.
    async fn reconcile_outcome(&self, rid: &str, status: &str) -> Value {
        let filter = format!("webhook_id=eq.reconcile:{rid}:{status}");
        self.db.select("webhook_events", &filter).await[0]["outcome"].clone()
    }

    async fn refunds(&self, prediction: Uuid) -> usize {
        self.db
            .select("credit_ledger", &format!("prediction_id=eq.{prediction}"))
            .await
            .len()
    }
}

async fn run(handler: &Reconcile, authorization: Option<&str>) -> (u16, Value) {
    get(handler, "/api/cron/reconcile", authorization).await
}

/// Checks the fields of a run's answer that `expected` names (the others may be anything).
fn assert_counts(body: &Value, expected: Value) {
    let named = expected.as_object().expect("fields");
    let got: serde_json::Map<String, Value> =
        named.keys().map(|k| (k.clone(), body[k].clone())).collect();
    assert_eq!(Value::Object(got), expected, "{body}");
}

async fn run_authorized(handler: &Reconcile) -> Value {
    let (status, body) = run(handler, Some(&format!("Bearer {CRON_SECRET}"))).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_lost_success_ends_succeeded_with_its_files_stored() {
    let w = World::exclusive().await;
    let (id, rid) = w.quiet_prediction(3).await;
    let url = w.files.add("out-0.png", "image/png", b"png bytes");
    w.replicate_says(&rid, "prediction_succeeded_url_list", |b| {
        b["output"] = json!([url])
    });

    let body = run_authorized(&w.reconcile()).await;
    assert_eq!(body["checked"], 1, "{body}");
    assert_eq!(body["reconciled"], 1, "{body}");

    let row = w.db.row("predictions", id).await;
    assert_eq!(row["status"], "succeeded");
    let key = format!("predictions/{}/{rid}/0.png", w.user);
    assert_eq!(
        row["output"],
        json!([format!("s3://replicate-outputs/{key}")])
    );
    assert_eq!(s3_object(&key).await.1, "png bytes");
    assert_eq!(w.reconcile_outcome(&rid, "succeeded").await, "reconciled");
    let asked = w.api.received();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0].authorization.as_deref(),
        Some("Bearer r8_test_token")
    );
    assert_eq!(w.refunds(id).await, 0);
}

#[tokio::test]
async fn a_lost_failure_is_refunded_once_and_terminal_jobs_are_left_alone() {
    let w = World::exclusive().await;
    let (id, rid) = w.quiet_prediction(4).await;
    w.replicate_says(&rid, "prediction_failed", |_| {});
    // As quiet as the lost one, but finished: only its status keeps it out of the run.
    let done = w
        .aged(
            "predictions",
            json!({"status": "succeeded", "credits_cost": 4,
                   "replicate_prediction_id": replicate_id()}),
            time::Duration::hours(2),
            time::Duration::hours(2),
        )
        .await;

    let body = run_authorized(&w.reconcile()).await;
    assert_counts(&body, json!({"checked": 1, "reconciled": 1}));
    assert_eq!(w.db.row("predictions", id).await["status"], "failed");
    assert_eq!(w.refunds(id).await, 1);
    assert_eq!(w.db.row("predictions", done).await["status"], "succeeded");
    assert_eq!(
        w.api.received().len(),
        1,
        "only the unfinished job was asked about"
    );

    // A second run has nothing left to do.
    let body = run_authorized(&w.reconcile()).await;
    assert_eq!(body["checked"], 0, "{body}");
    assert_eq!(w.refunds(id).await, 1);
}

#[tokio::test]
async fn files_already_gone_end_the_job_failed_and_refunded() {
    let w = World::exclusive().await;
    let (removed, removed_rid) = w.quiet_prediction(2).await;
    w.replicate_says(&removed_rid, "prediction_succeeded_url_list", |b| {
        b["data_removed"] = json!(true)
    });
    let (missing, missing_rid) = w.quiet_prediction(5).await;
    let gone = w.files.gone();
    w.replicate_says(&missing_rid, "prediction_succeeded_url_list", |b| {
        b["output"] = json!([gone])
    });

    let body = run_authorized(&w.reconcile()).await;
    assert_eq!(body["reconciled"], 2, "{body}");
    for (id, credits) in [(removed, 2), (missing, 5)] {
        let row = w.db.row("predictions", id).await;
        assert_eq!(row["status"], "failed");
        assert_eq!(row["error"], "outputs expired before they were stored");
        let refunds =
            w.db.select("credit_ledger", &format!("prediction_id=eq.{id}"))
                .await;
        assert_eq!(refunds.len(), 1);
        assert_eq!(refunds[0]["delta"], credits);
    }
    // data_removed is believed without fetching; the 404 was asked once.
    assert_eq!(w.files.requests(), vec!["/gone/out.png".to_owned()]);
}

#[tokio::test]
async fn unknown_and_running_jobs_wait_and_a_429_stops_the_run() {
    let w = World::exclusive().await;
    let (unknown, unknown_rid) = w.quiet_prediction(1).await;
    w.api.set_json(
        &format!("/v1/predictions/{unknown_rid}"),
        404,
        &json!({"detail": "Not found."}),
    );
    let (running, running_rid) = w.quiet_prediction(1).await;
    w.replicate_says(&running_rid, "prediction_processing", |_| {});
    let before = w.db.row("predictions", unknown).await;

    let body = run_authorized(&w.reconcile()).await;
    assert_counts(&body, json!({"checked": 2, "reconciled": 0}));
    let after = w.db.row("predictions", unknown).await;
    assert_eq!(after["status"], "processing");
    assert_ne!(
        after["updated_at"], before["updated_at"],
        "moved forward to wait again"
    );
    assert_eq!(
        w.db.row("predictions", running).await["status"],
        "processing"
    );
    // Both now wait another quiet period.
    assert_eq!(run_authorized(&w.reconcile()).await["checked"], 0);

    let (first, first_rid) = w.quiet_prediction(1).await;
    let (_, second_rid) = w.quiet_prediction(1).await;
    for rid in [&first_rid, &second_rid] {
        w.api.set_json(
            &format!("/v1/predictions/{rid}"),
            429,
            &json!({"detail": "throttled"}),
        );
    }
    let body = run_authorized(&w.reconcile()).await;
    assert_eq!(body["checked"], 1, "{body}");
    assert_eq!(body["rate_limited"], true);
    assert_eq!(w.db.row("predictions", first).await["status"], "processing");
    // Leave nothing quiet behind for the next test.
    for rid in [&first_rid, &second_rid] {
        w.replicate_says(rid, "prediction_canceled", |_| {});
    }
    assert_eq!(run_authorized(&w.reconcile()).await["reconciled"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runs_at_once_double_nothing() {
    let w = World::exclusive().await;
    let mut jobs = Vec::new();
    for _ in 0..4 {
        let (id, rid) = w.quiet_prediction(6).await;
        w.replicate_says(&rid, "prediction_failed", |_| {});
        jobs.push(id);
    }
    let url = w.files.add("x.png", "image/png", b"x");
    let (succeeded, rid) = w.quiet_prediction(6).await;
    w.replicate_says(&rid, "prediction_succeeded_url_list", |b| {
        b["output"] = json!([url])
    });

    // Both runs list the same jobs; every answer of Replicate's waits until both runs are
    // inside, so they overlap for certain rather than by luck.
    let mut rids = Vec::new();
    for id in jobs.iter().chain([&succeeded]) {
        let row = w.db.row("predictions", *id).await;
        rids.push(
            row["replicate_prediction_id"]
                .as_str()
                .expect("rid")
                .to_owned(),
        );
    }
    let gates: Vec<_> = rids
        .iter()
        .map(|rid| w.api.gate(&format!("/v1/predictions/{rid}")))
        .collect();
    let (a, b) = (Arc::new(w.reconcile()), Arc::new(w.reconcile()));
    let run_a = tokio::spawn(async move { run_authorized(&a).await });
    let run_b = tokio::spawn(async move { run_authorized(&b).await });
    // Each gate's receivers: the stand-in's own, and one per request waiting at it.
    wait_until("both runs inside", Duration::from_secs(20), || async {
        gates.iter().map(|g| g.receiver_count() - 1).sum::<usize>() >= 2
    })
    .await;
    for gate in &gates {
        gate.send_replace(true);
    }
    let (ra, rb) = (run_a.await.expect("run a"), run_b.await.expect("run b"));
    let total = ra["reconciled"].as_u64().expect("n") + rb["reconciled"].as_u64().expect("n");
    assert_eq!(
        total, 5,
        "each job reconciled by exactly one run: {ra} {rb}"
    );
    for id in jobs {
        assert_eq!(w.refunds(id).await, 1);
    }
    assert_eq!(
        w.db.row("predictions", succeeded).await["status"],
        "succeeded"
    );
}

#[tokio::test]
async fn only_the_cron_secret_may_run_it() {
    let w = World::new().await;
    let handler = w.reconcile();
    for authorization in not_the_bearer(CRON_SECRET) {
        let (status, body) = run(&handler, authorization.as_deref()).await;
        assert_eq!(status, 401, "{authorization:?}: {body}");
    }
    let response = handler
        .call(bodiless(Method::PUT, "/api/cron/reconcile"))
        .await;
    assert_eq!(response.status(), 405);
    let unset = Reconcile::new(&settings());
    let (status, body) = run(&unset, Some("Bearer anything")).await;
    assert_eq!(status, 503);
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("CRON_SECRET is not set")
    );
    assert!(w.api.received().is_empty());
}

async fn train(handler: &Webhook, user: Uuid, model: Uuid, fixture_name: &str, rid: &str) -> Value {
    let uri = format!("/t?user_id={user}&model_id={model}");
    let response = handler
        .call(signed_post(&uri, &fixture(fixture_name, rid)))
        .await;
    assert_eq!(response.status(), 200);
    body_json(&response)
}

#[tokio::test]
async fn a_finished_training_emails_its_owner_once() {
    let resend = StandIn::start().await;
    resend.set_json("/emails", 200, &json!({"id": "email-1"}));
    let db = Db::service();
    let user = seed_user(&db).await;
    let handler = Webhook::new(
        WebhookRoute::Train,
        &emailing(&resend.base, &[("EMAIL_FROM", "Studio <hi@example.com>")]),
    );
    let rid = replicate_id();
    let model = seed_model(&db, user, None, 9).await;
    train(&handler, user, model, "training_processing", &rid).await;
    assert!(resend.received().is_empty(), "no email before the end");
    train(&handler, user, model, "training_failed", &rid).await;
    train(&handler, user, model, "training_failed", &rid).await;

    let sent = resend.received();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].method.as_str(), sent[0].path.as_str()),
        ("POST", "/emails")
    );
    assert_eq!(sent[0].authorization.as_deref(), Some("Bearer re_test"));
    let email: Value = serde_json::from_slice(&sent[0].body).expect("JSON");
    assert_eq!(email["to"], json!([format!("{user}@example.com")]));
    assert_eq!(email["from"], "Studio <hi@example.com>");
    assert!(
        email["subject"]
            .as_str()
            .expect("subject")
            .contains("failed")
    );

    // Predictions send no email.
    let prediction = seed_prediction(&db, user, None, 1).await;
    let response = Webhook::new(WebhookRoute::Predict, &emailing(&resend.base, &[]))
        .call(signed_post(
            &format!("/p?user_id={user}&prediction_id={prediction}"),
            &fixture("prediction_failed", &replicate_id()),
        ))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(resend.received().len(), 1);
}

#[tokio::test]
async fn an_email_service_that_is_down_never_fails_the_webhook() {
    let db = Db::service();
    let user = seed_user(&db).await;
    // Refusing: the email is tried (the stand-in sees it) and its failure changes nothing.
    let failing = StandIn::start().await;
    failing.set_json("/emails", 500, &json!({"message": "down"}));
    // Gone: nothing listens.
    let closed = format!("http://127.0.0.1:{}", free_port());
    for url in [failing.base.as_str(), closed.as_str()] {
        let model = seed_model(&db, user, None, 0).await;
        let handler = Webhook::new(WebhookRoute::Train, &emailing(url, &[]));
        let body = train(&handler, user, model, "training_canceled", &replicate_id()).await;
        assert_eq!(body["outcome"], "applied", "{url}");
        assert_eq!(db.row("models", model).await["status"], "canceled", "{url}");
    }
    let tried = failing.received();
    assert_eq!(tried.len(), 1, "the email was attempted");
    assert_eq!(tried[0].path, "/emails");
}

impl World {
    /// Reconcile against the world's stand-ins, with `changes` on top.
    fn reconcile_with(&self, changes: &[(&str, &str)]) -> Reconcile {
        let mut all = vec![
            ("REPLICATE_API_URL", self.api.base.as_str()),
            ("REPLICATE_API_TOKEN", "r8_test_token"),
            ("CRON_SECRET", CRON_SECRET),
            // Only jobs quiet for an hour, so rows of tests running alongside never qualify.
            ("RECONCILE_AFTER_SECONDS", "3600"),
            ("OUTPUT_HOSTS", self.files.base.as_str()),
        ];
        all.extend_from_slice(changes);
        Reconcile::new(&settings_with(&all))
    }

    /// A row of `table` with `fields`, created `created` ago and last changed `updated` ago.
    async fn aged(
        &self,
        table: &str,
        fields: Value,
        created: time::Duration,
        updated: time::Duration,
    ) -> Uuid {
        let id = Uuid::new_v4();
        let now = OffsetDateTime::now_utc();
        let mut row = json!({"id": id, "user_id": self.user,
                             "created_at": (now - created).format(&Rfc3339).expect("time"),
                             "updated_at": (now - updated).format(&Rfc3339).expect("time")});
        for (k, v) in fields.as_object().expect("fields") {
            row[k] = v.clone();
        }
        self.db.insert(table, &row).await;
        id
    }

    /// A pending row of `table` costing `credits`, with no Replicate id, made `age` ago.
    async fn never_started(&self, table: &str, credits: i32, age: time::Duration) -> Uuid {
        let fields = json!({"status": "pending", "credits_cost": credits});
        self.aged(table, fields, age, age).await
    }

    /// A training that Replicate started two hours ago and we last heard of then.
    async fn quiet_training(&self, credits: i32) -> (Uuid, String) {
        let rid = replicate_id();
        let id = self
            .aged(
                "models",
                json!({"status": "processing", "credits_cost": credits, "replicate_training_id": rid}),
                time::Duration::hours(2),
                time::Duration::hours(2),
            )
            .await;
        (id, rid)
    }

    /// A quiet prediction last heard of `hours` ago (the list is ordered by that).
    async fn quiet_prediction_since(&self, hours: i64, credits: i32) -> (Uuid, String) {
        let rid = replicate_id();
        let id = self
            .aged(
                "predictions",
                json!({"status": "processing", "credits_cost": credits, "replicate_prediction_id": rid}),
                time::Duration::hours(hours),
                time::Duration::hours(hours),
            )
            .await;
        (id, rid)
    }

    async fn model_refunds(&self, model: Uuid) -> usize {
        self.db
            .select("credit_ledger", &format!("model_id=eq.{model}"))
            .await
            .len()
    }

    /// Ends a job a test left unfinished, so the next test's run does not find it.
    async fn settle(&self, table: &str, id: Uuid) {
        let changed = self
            .db
            .try_change(
                reqwest::Method::PATCH,
                table,
                &format!("id=eq.{id}"),
                &json!({"status": "canceled"}),
            )
            .await;
        assert_eq!((changed.status, changed.rows), (200, 1));
    }
}

#[tokio::test]
async fn expired_outputs_are_never_a_success_even_when_output_is_null() {
    let w = World::exclusive().await;
    let resend = StandIn::start().await;
    resend.set_json("/emails", 200, &json!({"id": "email-1"}));
    // An hour after the end Replicate shows data_removed and a null output.
    let (prediction, prid) = w.quiet_prediction(4).await;
    w.replicate_says(&prid, "prediction_succeeded_url_list", |b| {
        b["data_removed"] = json!(true);
        b["output"] = Value::Null;
    });
    let (model, mrid) = w.quiet_training(9).await;
    let mut body = fixture("training_succeeded", &mrid);
    body["data_removed"] = json!(true);
    body["output"] = Value::Null;
    w.api.set_json(&format!("/v1/trainings/{mrid}"), 200, &body);

    let handler = w.reconcile_with(&[
        ("RESEND_API_KEY", "re_test"),
        ("RESEND_API_URL", &resend.base),
    ]);
    let body = run_authorized(&handler).await;
    assert_counts(&body, json!({"reconciled": 2, "failed": 0}));
    for (table, id) in [("predictions", prediction), ("models", model)] {
        let row = w.db.row(table, id).await;
        assert_eq!(row["status"], "failed", "{table}");
        assert_eq!(
            row["error"], "outputs expired before they were stored",
            "{table}"
        );
    }
    assert_eq!(w.refunds(prediction).await, 1);
    assert_eq!(w.model_refunds(model).await, 1);
    let sent = resend.received();
    assert_eq!(sent.len(), 1, "one email, for the model");
    let email: Value = serde_json::from_slice(&sent[0].body).expect("JSON");
    let subject = email["subject"].as_str().expect("subject");
    assert!(
        subject.contains("failed"),
        "not a 'model ready' email: {subject}"
    );
    assert!(w.files.requests().is_empty(), "nothing to fetch");
}

#[tokio::test]
async fn a_failing_check_backs_off_and_lets_the_lost_webhooks_through() {
    let w = World::exclusive().await;
    // Two jobs whose check keeps failing (5xx), quieter than the lost webhook behind them.
    let mut bad = Vec::new();
    for _ in 0..2 {
        let (id, rid) = w.quiet_prediction_since(5, 1).await;
        w.api.set_json(
            &format!("/v1/predictions/{rid}"),
            502,
            &json!({"detail": "bad gateway"}),
        );
        bad.push((id, rid));
    }
    let (good, good_rid) = w.quiet_prediction_since(3, 2).await;
    w.replicate_says(&good_rid, "prediction_failed", |_| {});
    let handler = w.reconcile_with(&[("RECONCILE_BATCH", "2")]);

    let body = run_authorized(&handler).await;
    assert_counts(&body, json!({"checked": 2, "reconciled": 0, "failed": 2}));
    for (id, _) in &bad {
        let row = w.db.row("predictions", *id).await;
        assert_eq!(row["reconcile_attempts"], 1);
        let next = OffsetDateTime::parse(row["next_check_at"].as_str().expect("set"), &Rfc3339)
            .expect("time");
        assert!(next > OffsetDateTime::now_utc(), "the next check waits");
        assert_eq!(row["status"], "processing");
    }

    // The next run skips them: the lost webhook is finished.
    let body = run_authorized(&handler).await;
    assert_counts(&body, json!({"checked": 1, "reconciled": 1, "failed": 0}));
    assert_eq!(w.db.row("predictions", good).await["status"], "failed");
    assert_eq!(w.refunds(good).await, 1);
    let asked = w.api.requests();
    assert_eq!(asked.iter().filter(|p| p.ends_with(&good_rid)).count(), 1);
    for (id, rid) in &bad {
        assert_eq!(
            asked.iter().filter(|p| p.ends_with(rid.as_str())).count(),
            1,
            "asked once"
        );
        w.settle("predictions", *id).await;
    }
}

#[tokio::test]
async fn a_run_stops_taking_jobs_before_its_time_limit() {
    let w = World::exclusive().await;
    // The first job's answer never comes (the API client gives up after its timeout, longer
    // than this run's whole budget); the second would be quick.
    let (slow, slow_rid) = w.quiet_prediction_since(5, 1).await;
    let release = w.api.hold(&format!("/v1/predictions/{slow_rid}"));
    let (next, next_rid) = w.quiet_prediction_since(3, 1).await;
    w.replicate_says(&next_rid, "prediction_failed", |_| {});

    let handler = w.reconcile_with(&[("FUNCTION_TIMEOUT_SECONDS", "1")]);
    let body = run_authorized(&handler).await;
    assert_counts(
        &body,
        json!({"checked": 1, "failed": 1, "out_of_time": true}),
    );
    assert_eq!(
        w.db.row("predictions", next).await["status"],
        "processing",
        "not taken"
    );
    assert!(!w.api.requests().iter().any(|p| p.ends_with(&next_rid)));
    release.notify_waiters();

    // With time to spare, the next run takes it (the slow one is backing off).
    let body = run_authorized(&w.reconcile()).await;
    assert_counts(&body, json!({"checked": 1, "reconciled": 1}));
    assert_eq!(w.refunds(next).await, 1);
    w.settle("predictions", slow).await;
}

#[tokio::test]
async fn orphans_and_forgotten_jobs_end_aborted_and_refunded_once() {
    let w = World::exclusive().await;
    let day = time::Duration::days(1);
    let hour = time::Duration::hours(1);
    // Charged two days ago, never got a Replicate id.
    let orphan = w.never_started("predictions", 3, day * 2).await;
    let orphan_model = w.never_started("models", 8, day * 2).await;
    // Charged an hour ago: creating it may still be under way.
    let young = w.never_started("predictions", 3, hour).await;
    // Past the max age and Replicate still answers 404.
    let rid = replicate_id();
    let forgotten = w
        .aged(
            "predictions",
            json!({"status": "starting", "credits_cost": 6, "replicate_prediction_id": rid}),
            day * 8,
            hour * 2,
        )
        .await;
    w.api.set_json(
        &format!("/v1/predictions/{rid}"),
        404,
        &json!({"detail": "Not found."}),
    );

    let body = run_authorized(&w.reconcile()).await;
    assert_counts(&body, json!({"checked": 3, "reconciled": 3}));
    for (table, id) in [
        ("predictions", orphan),
        ("models", orphan_model),
        ("predictions", forgotten),
    ] {
        let row = w.db.row(table, id).await;
        assert_eq!(row["status"], "aborted", "{table} {id}");
        assert_eq!(row["error"], "never started on Replicate");
    }
    assert_eq!(w.refunds(orphan).await, 1);
    assert_eq!(w.model_refunds(orphan_model).await, 1);
    assert_eq!(w.refunds(forgotten).await, 1);
    assert_eq!(w.db.row("predictions", young).await["status"], "pending");
    assert_eq!(
        w.api.requests(),
        vec![format!("/v1/predictions/{rid}")],
        "orphans are not asked about"
    );

    // Nothing left, nothing refunded twice.
    let body = run_authorized(&w.reconcile()).await;
    assert_eq!(body["checked"], 0, "{body}");
    assert_eq!(w.refunds(orphan).await, 1);
    w.settle("predictions", young).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_during_the_run_still_refunds_once() {
    let w = World::exclusive().await;
    let (id, rid) = w.quiet_prediction(7).await;
    let path = format!("/v1/predictions/{rid}");
    w.replicate_says(&rid, "prediction_failed", |_| {});
    // Reconcile's question is held until the webhook has been applied.
    let release = w.api.hold(&path);
    let handler = Arc::new(w.reconcile());
    let run = tokio::spawn({
        let handler = Arc::clone(&handler);
        async move { run_authorized(&handler).await }
    });
    wait_until(
        "reconcile asks Replicate",
        std::time::Duration::from_secs(20),
        || {
            let asked = w.api.requests().contains(&path);
            async move { asked }
        },
    )
    .await;
    let webhook = Webhook::new(WebhookRoute::Unified, &settings());
    let response = webhook
        .call(signed_post(
            "/api/webhooks/replicate",
            &fixture("prediction_failed", &rid),
        ))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        body_json(&response)["outcome"],
        "applied",
        "the webhook settles it"
    );
    assert_eq!(w.refunds(id).await, 1);
    release.notify_one();

    let body = run.await.expect("run");
    assert_counts(&body, json!({"checked": 1, "reconciled": 0}));
    assert_eq!(w.refunds(id).await, 1, "refunded exactly once");
    assert_eq!(w.db.row("predictions", id).await["status"], "failed");
    assert_eq!(w.reconcile_outcome(&rid, "failed").await, "duplicate");
}
