//! Seeing what happens: health's `recent` block for the cron bearer (deliveries and
//! refused requests, counted per route, reason and minute), reconcile's alert, and
//! retention. Each test that counts has a database of its own, so what it counts is its
//! own.

use crate::helpers::*;
use crate::standin::StandIn;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use shared::activity::{Counted, RECORD_TIMEOUT};
use shared::platform;
use shared::routes::{Health, Reconcile, Webhook, WebhookRoute};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

const CRON_SECRET: &str = "cron-activity-secret";

async fn health(handler: &Health, authorization: Option<&str>) -> (u16, Value) {
    get(handler, "/api/health", authorization).await
}

fn bearer() -> String {
    format!("Bearer {CRON_SECRET}")
}

fn ago(duration: time::Duration) -> String {
    (OffsetDateTime::now_utc() - duration)
        .format(&Rfc3339)
        .expect("time")
}

/// The recent block `recent_activity` would answer, for a stand-in database.
fn some_recent() -> Value {
    json!({"window_seconds": 3600, "last_delivery_at": "2026-12-01T12:00:00Z",
           "deliveries": {"applied": 4, "stale": 0, "ignored": 2},
           "rejected": {"method": 0, "too_large": 0, "signature": 3, "bad_request": 0,
                        "not_found": 0, "unavailable": 0},
           "stuck_jobs": 1, "reconciled_24h": 2, "expired_outputs_24h": 0})
}

#[tokio::test]
async fn recent_activity_is_shown_and_read_only_for_the_cron_bearer() {
    // A stand-in for PostgREST, so what health asks of the database is seen.
    let rest = StandIn::start().await;
    rest.set_json("/webhook_events", 200, &json!([]));
    rest.set_json("/rpc/recent_activity", 200, &some_recent());
    let handler = Health::new(&settings_with(&[
        ("POSTGREST_URL", &rest.base),
        ("CRON_SECRET", CRON_SECRET),
    ]));
    let asked = |rest: &StandIn| {
        rest.requests()
            .iter()
            .filter(|p| p.as_str() == "/rpc/recent_activity")
            .count()
    };

    for authorization in not_the_bearer(CRON_SECRET) {
        let (status, body) = health(&handler, authorization.as_deref()).await;
        assert_eq!(status, 200, "{authorization:?}: {body}");
        assert!(body.get("recent").is_none(), "{authorization:?}: {body}");
    }
    assert_eq!(asked(&rest), 0, "nothing asked without the bearer");

    let (status, body) = health(&handler, Some(&bearer())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recent"], some_recent(), "{body}");
    assert_eq!(asked(&rest), 1);

    // Unreadable (an old schema): named, and still healthy.
    rest.set_json(
        "/rpc/recent_activity",
        404,
        &json!({"code": "PGRST202", "message": "Could not find the function"}),
    );
    let (status, body) = health(&handler, Some(&bearer())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recent"], Value::Null, "{body}");
    let problems = body["problems"].to_string();
    assert!(
        problems.contains("recent: database refused the call (HTTP 404, code PGRST202)"),
        "{problems}"
    );

    // Without CRON_SECRET there is no bearer to show it to.
    let unset = Health::new(&settings_with(&[("POSTGREST_URL", &rest.base)]));
    let (_, body) = health(&unset, Some(&bearer())).await;
    assert!(body.get("recent").is_none(), "{body}");
    assert_eq!(asked(&rest), 2);
}

fn predict(own: &OwnDatabase, changes: &[(&str, &str)]) -> Counted<Webhook> {
    let env = own.settings_with(changes);
    Counted::new(Webhook::new(WebhookRoute::Predict, &env), &env)
}

/// The minute a timestamp falls in, as the database counts them.
fn minute_now() -> i64 {
    now().div_euclid(60)
}

#[tokio::test]
async fn health_counts_deliveries_and_refused_requests_by_reason() {
    let own = OwnDatabase::new().await;
    let db = own.db();
    let user = seed_user(&db).await;
    let id = seed_prediction(&db, user, None, 2).await;
    let handler = predict(&own, &[("MAX_BODY_BYTES", "1024")]);
    let uri = format!("/api/replicate/webhooks/predict?user_id={user}&prediction_id={id}");
    let rid = replicate_id();
    let body = fixture("prediction_processing", &rid);

    // Deliveries: one applied, the same one again (a duplicate, not a new delivery), and
    // an earlier status after it (stale).
    let delivery_id = webhook_id();
    for expected in ["applied", "duplicate"] {
        let response = handler
            .call(signed_post_with_id(&uri, &body, &delivery_id))
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(body_json(&response)["outcome"], expected);
    }
    let response = handler
        .call(signed_post(&uri, &fixture("prediction_starting", &rid)))
        .await;
    assert_eq!(body_json(&response)["outcome"], "stale");

    // Refusals: a wrong method, a bad signature, bad query parameters, a job that is not
    // there, and a body over the limit through the HTTP adapter.
    let mut unsigned = signed_post(&uri, &body);
    unsigned
        .headers_mut()
        .insert("webhook-signature", "v1,AAAA".parse().expect("header"));
    let refused = [
        (bodiless(http::Method::GET, &uri), 405),
        (unsigned, 401),
        (
            signed_post(&format!("/p?user_id={user}&prediction_id=nope"), &body),
            400,
        ),
        (
            signed_post(
                &format!("/p?user_id={user}&prediction_id={}", Uuid::new_v4()),
                &body,
            ),
            404,
        ),
    ];
    for (request, status) in refused {
        assert_eq!(handler.call(request).await.status(), status);
    }
    let big = Request::post(&uri)
        .body(Full::new(Bytes::from(vec![b'x'; 4096])))
        .expect("request");
    assert_eq!(platform::http_request(&handler, big).await.status(), 413);

    // A job quiet for an hour, one reconciled and one whose outputs expired today.
    db.insert(
        "predictions",
        &json!({"user_id": user, "status": "processing", "replicate_prediction_id": replicate_id(),
                "updated_at": ago(time::Duration::hours(1))}),
    )
    .await;
    db.insert(
        "predictions",
        &json!({"user_id": user, "status": "failed", "replicate_prediction_id": replicate_id(),
                "error": "outputs expired before they were stored"}),
    )
    .await;
    db.insert(
        "webhook_events",
        &json!({"webhook_id": format!("reconcile:{}:failed", replicate_id()),
                "route": "reconcile", "outcome": "reconciled", "status": "failed"}),
    )
    .await;

    let health_handler = Health::new(&own.settings_with(&[("CRON_SECRET", CRON_SECRET)]));
    let (status, answer) = health(&health_handler, Some(&bearer())).await;
    assert_eq!(status, 200, "{answer}");
    let recent = &answer["recent"];
    assert_eq!(recent["window_seconds"], 3600, "{recent}");
    assert_eq!(
        recent["deliveries"],
        json!({"applied": 1, "stale": 1, "ignored": 0}),
        "{recent}"
    );
    assert_eq!(
        recent["rejected"],
        json!({"method": 1, "too_large": 1, "signature": 1, "bad_request": 1,
               "not_found": 1, "unavailable": 0}),
        "{recent}"
    );
    assert_eq!(recent["stuck_jobs"], 1, "{recent}");
    assert_eq!(recent["reconciled_24h"], 1, "{recent}");
    assert_eq!(recent["expired_outputs_24h"], 1, "{recent}");
    let last = OffsetDateTime::parse(
        recent["last_delivery_at"].as_str().expect("a time"),
        &Rfc3339,
    )
    .expect("RFC 3339");
    let age = OffsetDateTime::now_utc() - last;
    assert!(age < time::Duration::minutes(5), "{last}");

    // What is stored: a route, a reason, a minute and a count; nothing of the requests.
    let rows = own.psql(
        "select route || ' ' || reason || ' ' || count from private.webhook_rejections \
         order by reason",
    );
    assert_eq!(
        rows,
        "predict bad_request 1\npredict method 1\npredict not_found 1\npredict signature 1\npredict too_large 1"
    );
}

#[tokio::test]
async fn two_refusals_in_one_minute_are_one_row_counting_two() {
    let own = OwnDatabase::new().await;
    let handler = predict(&own, &[]);
    let uri = format!(
        "/api/replicate/webhooks/predict?user_id={}&prediction_id={}",
        Uuid::new_v4(),
        Uuid::new_v4()
    );
    let before = minute_now();
    for _ in 0..2 {
        let request = Request::post(&uri)
            .body(Bytes::from_static(b"{}"))
            .expect("request");
        assert_eq!(handler.call(request).await.status(), 401);
    }
    let after = minute_now();
    let rows = own.psql(
        "select count(*) || ' ' || sum(count) from private.webhook_rejections \
         where route = 'predict' and reason = 'signature'",
    );
    if before == after {
        assert_eq!(rows, "1 2", "one row per route, reason and minute");
    } else {
        // The two fell either side of a minute: still two in all.
        assert_eq!(rows, "2 2");
    }
    // A route that does not count (health, or a webhook route not wrapped) adds nothing.
    let bare = Webhook::new(WebhookRoute::Predict, &own.settings_with(&[]));
    let request = Request::post(&uri)
        .body(Bytes::from_static(b"{}"))
        .expect("request");
    assert_eq!(bare.call(request).await.status(), 401);
    assert_eq!(
        own.psql("select sum(count) from private.webhook_rejections"),
        "2"
    );
}

#[tokio::test]
async fn a_count_that_hangs_or_fails_never_holds_or_changes_the_answer() {
    // The count goes to a database that never answers; the route itself is fine.
    let rest = StandIn::start().await;
    let _never = rest.hold("/rpc/record_webhook_rejection");
    let route_env = settings();
    let count_env = settings_with(&[("POSTGREST_URL", &rest.base)]);
    let handler = Counted::new(Webhook::new(WebhookRoute::Predict, &route_env), &count_env);
    let request = Request::post("/api/replicate/webhooks/predict")
        .body(Bytes::from_static(b"{}"))
        .expect("request");
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(10), handler.call(request))
        .await
        .expect("the answer is not held by the count");
    assert_eq!(response.status(), 401);
    assert!(body_json(&response)["error"].is_string());
    assert!(started.elapsed() >= RECORD_TIMEOUT, "the count was tried");
    assert_eq!(rest.requests(), vec!["/rpc/record_webhook_rejection"]);

    // The database down: the 503 goes out, counted or not.
    let down = format!("http://127.0.0.1:{}", free_port());
    let env = settings_with(&[("POSTGREST_URL", &down)]);
    let handler = Counted::new(Webhook::new(WebhookRoute::Predict, &env), &env);
    let uri = format!(
        "/p?user_id={}&prediction_id={}",
        Uuid::new_v4(),
        Uuid::new_v4()
    );
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        handler.call(signed_post(
            &uri,
            &fixture("prediction_processing", &replicate_id()),
        )),
    )
    .await
    .expect("answered");
    assert_eq!(response.status(), 503);
}

/// Reconcile against `own`, Replicate's API at `api`, alerting `alert_url` when given.
fn reconcile(own: &OwnDatabase, api: &StandIn, changes: &[(&str, &str)]) -> Reconcile {
    let mut all = vec![
        ("REPLICATE_API_URL", api.base.as_str()),
        ("REPLICATE_API_TOKEN", "r8_activity_token"),
        ("CRON_SECRET", CRON_SECRET),
    ];
    all.extend_from_slice(changes);
    Reconcile::new(&own.settings_with(&all))
}

async fn run(handler: &Reconcile) -> Value {
    let request = Request::post("/api/cron/reconcile")
        .header("authorization", bearer())
        .body(Bytes::new())
        .expect("request");
    let response = handler.call(request).await;
    assert_eq!(response.status(), 200);
    body_json(&response)
}

/// A prediction Replicate failed two hours ago, whose webhook never came.
async fn lost_failure(own: &OwnDatabase, api: &StandIn) -> Uuid {
    let db = own.db();
    let user = seed_user(&db).await;
    let id = Uuid::new_v4();
    let rid = replicate_id();
    db.insert(
        "predictions",
        &json!({"id": id, "user_id": user, "status": "processing", "credits_cost": 3,
                "replicate_prediction_id": rid, "created_at": ago(time::Duration::hours(2)),
                "updated_at": ago(time::Duration::hours(2))}),
    )
    .await;
    api.set_json(
        &format!("/v1/predictions/{rid}"),
        200,
        &fixture("prediction_failed", &rid),
    );
    id
}

#[tokio::test]
async fn a_run_that_reconciled_a_lost_job_posts_one_alert_and_a_quiet_run_none() {
    let own = OwnDatabase::new().await;
    let api = StandIn::start().await;
    let alerts = StandIn::start().await;
    alerts.set_json("/services/T000/B000/hook-token", 200, &json!({}));
    let hook = format!("{}/services/T000/B000/hook-token", alerts.base);
    let handler = reconcile(&own, &api, &[("ALERT_WEBHOOK_URL", &hook)]);
    let job = lost_failure(&own, &api).await;

    let summary = run(&handler).await;
    assert_eq!(summary["reconciled"], 1, "{summary}");
    assert_eq!(own.db().row("predictions", job).await["status"], "failed");
    let sent = alerts.received();
    assert_eq!(sent.len(), 1, "one message for the run");
    assert_eq!(sent[0].method, "POST");
    let message: Value = serde_json::from_slice(&sent[0].body).expect("JSON");
    let text = message["text"].as_str().expect("Slack's text");
    assert_eq!(message["content"], text, "Discord's content");
    assert!(
        text.contains("1 job finished only through reconcile"),
        "{text}"
    );
    for cause in [
        "wrong webhook URL",
        "deployment protection",
        "redirect",
        "down",
    ] {
        assert!(text.contains(cause), "{cause}: {text}");
    }
    for secret in [
        "hook-token",
        "r8_activity_token",
        CRON_SECRET,
        &api.base,
        &alerts.base,
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }

    // Nothing found: nothing said.
    let summary = run(&handler).await;
    assert_eq!(summary["checked"], 0, "{summary}");
    assert_eq!(alerts.received().len(), 1);
}

#[tokio::test]
async fn an_alert_endpoint_that_fails_or_redirects_changes_nothing_else() {
    let own = OwnDatabase::new().await;
    let api = StandIn::start().await;
    let broken = StandIn::start().await;
    broken.set_json("/hook", 500, &json!({"error": "down"}));
    let handler = reconcile(
        &own,
        &api,
        &[("ALERT_WEBHOOK_URL", &format!("{}/hook", broken.base))],
    );
    let job = lost_failure(&own, &api).await;
    let summary = run(&handler).await;
    assert_eq!(
        (summary["ok"].clone(), summary["reconciled"].clone()),
        (json!(true), json!(1)),
        "{summary}"
    );
    assert_eq!(own.db().row("predictions", job).await["status"], "failed");
    assert_eq!(broken.requests(), vec!["/hook"]);

    // A redirect is not followed: the URL's token goes nowhere else.
    let elsewhere = StandIn::start().await;
    let moved = StandIn::start().await;
    moved.redirect_everything_to(&elsewhere.base);
    let handler = reconcile(
        &own,
        &api,
        &[("ALERT_WEBHOOK_URL", &format!("{}/hook", moved.base))],
    );
    lost_failure(&own, &api).await;
    let summary = run(&handler).await;
    assert_eq!(summary["reconciled"], 1, "{summary}");
    assert_eq!(moved.requests(), vec!["/hook"]);
    assert!(elsewhere.requests().is_empty());
}

#[tokio::test]
async fn retention_deletes_old_history_in_bounded_batches_and_keeps_the_rest() {
    let own = OwnDatabase::new().await;
    let api = StandIn::start().await;
    own.psql(
        "insert into public.webhook_events (webhook_id, route, outcome, received_at) \
         select 'old_' || n, 'predict', 'applied', now() - interval '31 days' - make_interval(secs => n) \
         from generate_series(1, 5003) n; \
         insert into public.webhook_events (webhook_id, route, outcome, received_at) values \
           ('ten_days', 'predict', 'applied', now() - interval '10 days'), \
           ('today', 'predict', 'applied', now()); \
         insert into private.webhook_rejections (minute, route, reason, count) values \
           (date_trunc('minute', now()) - interval '40 days', 'predict', 'signature', 9), \
           (date_trunc('minute', now()) - interval '35 days', 'unified', 'method', 1), \
           (date_trunc('minute', now()), 'predict', 'signature', 1);",
    );
    let handler = reconcile(&own, &api, &[]);
    let first = run(&handler).await;
    assert_eq!(
        first["deleted"],
        json!({"webhook_events": 5000, "rejections": 2}),
        "{first}"
    );
    let second = run(&handler).await;
    assert_eq!(
        second["deleted"],
        json!({"webhook_events": 3, "rejections": 0}),
        "{second}"
    );
    assert_eq!(
        own.psql(
            "select string_agg(webhook_id, ' ' order by webhook_id) from public.webhook_events"
        ),
        "ten_days today"
    );
    assert_eq!(
        own.psql("select count(*) from private.webhook_rejections"),
        "1"
    );

    // EVENTS_RETENTION_DAYS is the limit.
    let week = reconcile(&own, &api, &[("EVENTS_RETENTION_DAYS", "7")]);
    assert_eq!(
        run(&week).await["deleted"],
        json!({"webhook_events": 1, "rejections": 0})
    );
    assert_eq!(
        own.psql("select string_agg(webhook_id, ' ') from public.webhook_events"),
        "today"
    );
}
