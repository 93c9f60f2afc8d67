//! The health route against the running stack, and with each dependency stopped.

use crate::helpers::*;
use bytes::Bytes;
use http::Request;
use serde_json::Value;
use shared::routes::Health;

async fn check(health: &Health) -> (u16, Value) {
    let response = health
        .call(
            Request::get("/api/health")
                .body(Bytes::new())
                .expect("request"),
        )
        .await;
    (response.status().as_u16(), body_json(&response))
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
    let mut postgrest = spawn_postgrest().await;
    let url = format!("http://127.0.0.1:{}", postgrest.port);
    let health = Health::new(&settings_with(&[("POSTGREST_URL", &url)]));
    let (status, body) = check(&health).await;
    assert_eq!(status, 200, "{body}");

    postgrest.stop();
    let (status, body) = check(&health).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["database"], "unreachable");
    assert_eq!(body["storage"], "reachable");
    let problems = body["problems"].to_string();
    assert!(problems.contains("database"), "{problems}");
    assert!(!problems.contains(&url), "no URL in the answer: {problems}");
}

#[tokio::test]
async fn degraded_naming_storage_when_the_s3_server_stops() {
    let mut s3 = spawn_s3().await;
    let url = format!("http://127.0.0.1:{}", s3.port);
    let health = Health::new(&settings_with(&[("S3_ENDPOINT_URL", &url)]));
    let (status, body) = check(&health).await;
    assert_eq!(status, 200, "{body}");

    s3.stop();
    let (status, body) = check(&health).await;
    assert_eq!(status, 503, "{body}");
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
        .call(
            Request::post("/api/health")
                .body(Bytes::new())
                .expect("request"),
        )
        .await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
}
