//! The health route against the running stack, and with each dependency stopped.

use crate::helpers::*;
use http::Method;
use serde_json::Value;
use shared::routes::Health;

async fn check(health: &Health) -> (u16, Value) {
    get(health, "/api/health", None).await
}

/// Health with `var` naming `server` (a test's own): healthy while it runs; then, once it is
/// stopped, the degraded answer, with the URL it was given.
async fn after_stopping(mut server: Server, var: &str) -> (Value, String) {
    let url = format!("http://127.0.0.1:{}", server.port);
    let health = Health::new(&settings_with(&[(var, &url)]));
    let (status, body) = check(&health).await;
    assert_eq!(status, 200, "{body}");

    server.stop();
    let (status, body) = check(&health).await;
    assert_eq!(status, 503, "{body}");
    (body, url)
}

#[tokio::test]
async fn healthy_when_everything_answers() {
    let (status, body) = check(&Health::new(&settings())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["webhook"], "configured");
    assert_eq!(body["database"], "reachable");
    assert_eq!(body["storage"], "reachable");
    assert_eq!(body["email"], "disabled");
    assert!(body["version"].is_string());
}

#[tokio::test]
async fn degraded_naming_the_database_when_postgrest_stops() {
    let (body, url) = after_stopping(spawn_postgrest().await, "POSTGREST_URL").await;
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["database"], "unreachable");
    assert_eq!(body["storage"], "reachable");
    let problems = body["problems"].to_string();
    assert!(problems.contains("database"), "{problems}");
    assert!(!problems.contains(&url), "no URL in the answer: {problems}");
}

#[tokio::test]
async fn degraded_naming_storage_when_the_s3_server_stops() {
    let (body, _) = after_stopping(spawn_s3().await, "S3_ENDPOINT_URL").await;
    assert_eq!(body["storage"], "unreachable");
    assert_eq!(body["database"], "reachable");
}

#[tokio::test]
async fn missing_configuration_is_named_without_values() {
    let health = Health::new(&settings_with(&[
        ("REPLICATE_WEBHOOK_SECRET", ""),
        ("S3_BUCKET", ""),
    ]));
    let (status, body) = check(&health).await;
    assert_eq!(status, 503);
    assert_eq!(body["webhook"], "not configured");
    assert_eq!(body["storage"], "not configured");
    let text = body.to_string();
    assert!(
        text.contains("REPLICATE_WEBHOOK_SECRET is not set"),
        "{text}"
    );
    assert!(text.contains("S3_BUCKET is not set"), "{text}");
    assert!(!text.contains(&stack_var("SUPABASE_SERVICE_ROLE_KEY")));
    assert!(!text.contains(&stack_var("AWS_SECRET_ACCESS_KEY")));
}

#[tokio::test]
async fn only_get_is_allowed() {
    let response = Health::new(&settings())
        .call(bodiless(Method::POST, "/api/health"))
        .await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
}
