//! The Lambda path: real Function URL (payload 2.0) events through the adapter.

use crate::helpers::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use shared::platform;
use shared::routes::{Health, Webhook, WebhookRoute};

/// A Function URL event as Lambda delivers it, for a POST to `path?query`.
fn function_url_event(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
    base64: bool,
) -> String {
    let mut header_map = serde_json::Map::new();
    header_map.insert(
        "host".into(),
        json!("abcdefghijklmnop.lambda-url.us-east-1.on.aws"),
    );
    header_map.insert("x-forwarded-proto".into(), json!("https"));
    header_map.insert("user-agent".into(), json!("Replicate-Webhook/1.0"));
    for (k, v) in headers {
        header_map.insert(k.clone(), json!(v));
    }
    let query_params: serde_json::Map<String, Value> = form_pairs(query);
    let event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": header_map,
        "queryStringParameters": if query.is_empty() { Value::Null } else { Value::Object(query_params) },
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefghijklmnop",
            "domainName": "abcdefghijklmnop.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abcdefghijklmnop",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "Replicate-Webhook/1.0"
            },
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": "$default",
            "stage": "$default",
            "time": "24/Nov/2026:03:40:00 +0000",
            "timeEpoch": 1795492800000_i64
        },
        "body": if base64 { BASE64.encode(body) } else { String::from_utf8(body.to_vec()).expect("text body") },
        "isBase64Encoded": base64
    });
    event.to_string()
}

fn form_pairs(query: &str) -> serde_json::Map<String, Value> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect()
}

async fn send(handler: &Webhook, event: &str) -> (u16, Value) {
    let request = lambda_http::request::from_str(event).expect("a valid Function URL event");
    let response = platform::lambda_event(handler, request).await;
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = match response.body() {
        lambda_http::Body::Text(t) => serde_json::from_str(t).expect("JSON answer"),
        other => panic!("expected a text body, got {other:?}"),
    };
    (response.status().as_u16(), body)
}

async fn train_delivery(base64: bool) {
    let db = Db::service();
    let user = seed_user(&db).await;
    let model = seed_model(&db, user, None, 0).await;
    let rid = replicate_id();
    let body = serde_json::to_vec(&fixture("training_processing", &rid)).expect("json");
    let handler = Webhook::new(WebhookRoute::Train, &settings());
    let query = format!("user_id={user}&model_id={model}");
    let event = function_url_event(
        "POST",
        "/api/replicate/webhooks/train",
        &query,
        &signed_headers(&webhook_id(), &body),
        &body,
        base64,
    );

    let (status, answer) = send(&handler, &event).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "applied");
    let row = db.row("models", model).await;
    assert_eq!(row["status"], "processing");
    assert_eq!(row["replicate_training_id"], rid.as_str());
}

#[tokio::test]
async fn text_body_event_is_verified_and_applied() {
    train_delivery(false).await;
}

#[tokio::test]
async fn base64_body_event_is_verified_and_applied() {
    train_delivery(true).await;
}

#[tokio::test]
async fn query_string_is_read_from_the_event() {
    let rid = replicate_id();
    let body = serde_json::to_vec(&fixture("training_processing", &rid)).expect("json");
    let handler = Webhook::new(WebhookRoute::Train, &settings());
    let headers = signed_headers(&webhook_id(), &body);
    let user = uuid::Uuid::new_v4();

    let missing = function_url_event(
        "POST",
        "/api/replicate/webhooks/train",
        &format!("user_id={user}"),
        &headers,
        &body,
        false,
    );
    let (status, answer) = send(&handler, &missing).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .expect("message")
            .contains("model_id"),
        "{answer}"
    );

    // Well-formed ids that name no row: the query was read, and the row looked up.
    let unknown = function_url_event(
        "POST",
        "/api/replicate/webhooks/train",
        &format!("user_id={user}&model_id={}", uuid::Uuid::new_v4()),
        &headers,
        &body,
        false,
    );
    let (status, _) = send(&handler, &unknown).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn invalid_signature_is_refused_before_anything_else() {
    let db = Db::service();
    let user = seed_user(&db).await;
    let model = seed_model(&db, user, None, 0).await;
    let body = serde_json::to_vec(&fixture("training_failed", &replicate_id())).expect("json");
    let mut headers = signed_headers(&webhook_id(), &body);
    headers[2].1 = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into();
    let handler = Webhook::new(WebhookRoute::Train, &settings());
    let query = format!("user_id={user}&model_id={model}");
    for base64 in [false, true] {
        let event = function_url_event(
            "POST",
            "/api/replicate/webhooks/train",
            &query,
            &headers,
            &body,
            base64,
        );
        let (status, answer) = send(&handler, &event).await;
        assert_eq!(status, 401, "{answer}");
        assert!(
            !answer.to_string().contains("g0hM9SsE"),
            "the signature is not echoed"
        );
    }
    assert_eq!(db.row("models", model).await["status"], "pending");
}

#[tokio::test]
async fn health_answers_function_url_get() {
    let event = function_url_event("GET", "/api/health", "", &[], b"", false);
    let request = lambda_http::request::from_str(&event).expect("event");
    let response = platform::lambda_event(&Health::new(&settings()), request).await;
    assert_eq!(response.status(), 200);
}
