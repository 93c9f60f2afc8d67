//! The Vercel path: the built function binaries started with `VERCEL_DEV_PORT`, spoken to
//! over real HTTP.

use crate::helpers::*;
use serde_json::{Value, json};

async fn post(
    port: u16,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new().post(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let response = request
        .body(body)
        .send()
        .await
        .expect("the function answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.json().await.expect("JSON answer"), headers)
}

#[tokio::test]
async fn health_binary_serves_http() {
    let server = Function::start(env!("CARGO_BIN_EXE_health"), &[]).await;
    let response = reqwest::get(format!("http://127.0.0.1:{}/api/health", server.port()))
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["status"], "healthy", "{body}");
}

#[tokio::test]
async fn unified_binary_checks_in_the_contract_order() {
    let server =
        Function::start(env!("CARGO_BIN_EXE_unified"), &[("MAX_BODY_BYTES", "2048")]).await;
    let port = server.port();
    let path = "/api/webhooks/replicate";

    // 405 with Allow, before anything else.
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .expect("answers");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");

    // 413 before the signature is looked at.
    let (status, body, _) = post(port, path, &[], vec![b' '; 4096]).await;
    assert_eq!(status, 413, "{body}");

    // 401 unsigned, and with a signature over other bytes.
    let payload = serde_json::to_vec(&fixture("prediction_failed", &replicate_id())).expect("json");
    let (status, _, _) = post(port, path, &[], payload.clone()).await;
    assert_eq!(status, 401);
    let other_headers = signed_headers(&webhook_id(), b"{}");
    let (status, _, _) = post(port, path, &other_headers, payload.clone()).await;
    assert_eq!(status, 401);

    // 400 for a verified body that is not a job.
    let bad = serde_json::to_vec(&json!({"status": "failed"})).expect("json");
    let (status, body, _) = post(port, path, &signed_headers(&webhook_id(), &bad), bad).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "body has no `id`");

    // A verified delivery for a job nobody knows is acknowledged and ignored.
    let (status, body, headers) = post(
        port,
        path,
        &signed_headers(&webhook_id(), &payload),
        payload,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "ignored");
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn predict_binary_applies_a_signed_delivery() {
    let db = Db::service();
    let user = seed_user(&db).await;
    let prediction = seed_prediction(&db, user, None, 3).await;
    let server = Function::start(env!("CARGO_BIN_EXE_predict"), &[]).await;
    let rid = replicate_id();
    let payload = serde_json::to_vec(&fixture("prediction_failed", &rid)).expect("json");
    let path = format!("/api/replicate/webhooks/predict?user_id={user}&prediction_id={prediction}");
    let (status, body, _) = post(
        server.port(),
        &path,
        &signed_headers(&webhook_id(), &payload),
        payload,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "applied");
    assert_eq!(body["refunded"], true);
    let row = db.row("predictions", prediction).await;
    assert_eq!(row["status"], "failed");
    assert_eq!(row["replicate_prediction_id"], rid.as_str());
}
