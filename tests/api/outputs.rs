//! Output files copied to the S3 server before a job is marked succeeded, fetched from a
//! local file server standing in for replicate.delivery.

use crate::helpers::*;
use crate::standin::{StandIn, generated_sha256};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use shared::routes::{Webhook, WebhookRoute};

const PNG: &[u8] = b"\x89PNG\r\n\x1a\nfake image bytes";

/// A model of a new user (10 credits), and the Replicate id of its training.
struct Training {
    db: Db,
    user: uuid::Uuid,
    model: uuid::Uuid,
    rid: String,
}

/// Seeds a model and delivers its succeeded training, whose `weights` is `weights`, to the
/// train route fetching from `hosts`: the job and the answer.
async fn deliver_training(weights: &str, hosts: &str) -> (Training, u16, serde_json::Value) {
    let db = Db::service();
    let user = seed_user(&db).await;
    let model = seed_model(&db, user, None, 10).await;
    let rid = replicate_id();
    let mut body = fixture("training_succeeded", &rid);
    body["output"]["weights"] = json!(weights);
    let handler = Webhook::new(
        WebhookRoute::Train,
        &settings_with(&[("OUTPUT_HOSTS", hosts)]),
    );
    let uri = format!("/t?user_id={user}&model_id={model}");
    let (status, answer) = deliver(&handler, &uri, &body).await;
    let job = Training {
        db,
        user,
        model,
        rid,
    };
    (job, status, answer)
}

fn predict(hosts: &str, extra: &[(&str, &str)]) -> Webhook {
    let mut changes = vec![("OUTPUT_HOSTS", hosts)];
    changes.extend_from_slice(extra);
    Webhook::new(WebhookRoute::Predict, &settings_with(&changes))
}

#[tokio::test]
async fn a_url_list_is_stored_in_order_and_the_row_rewritten() {
    let files = StandIn::start().await;
    let first = files.add("out-0.webp", "image/webp", b"first image");
    let second = files.add("out-1.webp", "image/webp", b"second image");
    let job = Job::prediction().await;
    let handler = predict(&files.base, &[]);

    let (status, body) = deliver(&handler, &job.uri(), &job.delivery(json!([first, second]))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "applied");

    let stored: Vec<String> = ["0.webp", "1.webp"]
        .iter()
        .map(|n| format!("s3://replicate-outputs/{}", job.key(n)))
        .collect();
    let row = job.row().await;
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["output"], json!(stored));
    assert_eq!(row["output_urls"], json!(stored));
    assert_eq!(
        s3_object(&job.key("0.webp")).await,
        ("image/webp".into(), "first image".into())
    );
    assert_eq!(
        s3_object(&job.key("1.webp")).await,
        ("image/webp".into(), "second image".into())
    );
}

#[tokio::test]
async fn a_single_url_goes_under_the_prefix_with_the_public_base() {
    let files = StandIn::start().await;
    let url = files.add("output.png", "image/png", PNG);
    let job = Job::prediction().await;
    let handler = predict(
        &files.base,
        &[
            ("S3_PREFIX", "tenant-a/"),
            ("S3_PUBLIC_BASE_URL", "https://cdn.example.com/outputs/"),
        ],
    );
    let (status, body) = deliver(&handler, &job.uri(), &job.delivery(json!(url))).await;
    assert_eq!(status, 200, "{body}");
    let key = format!("tenant-a/{}", job.key("0.png"));
    let row = job.row().await;
    assert_eq!(
        row["output"],
        json!(format!("https://cdn.example.com/outputs/{key}"))
    );
    assert_eq!(s3_object(&key).await, ("image/png".into(), PNG.into()));
}

#[tokio::test]
async fn a_data_uri_is_decoded_and_stored() {
    let job = Job::prediction().await;
    let handler = predict("http://127.0.0.1:1", &[]);
    let uri = "data:image/png;base64,iVBORw0KGgpmYWtlIGltYWdlIGJ5dGVz";
    let (status, body) = deliver(&handler, &job.uri(), &job.delivery(json!([uri]))).await;
    assert_eq!(status, 200, "{body}");
    let (content_type, bytes) = s3_object(&job.key("0.png")).await;
    assert_eq!(content_type, "image/png");
    assert_eq!(&bytes[..], PNG);
    assert_eq!(
        job.row().await["output_urls"][0],
        format!("s3://replicate-outputs/{}", job.key("0.png"))
    );
}

#[tokio::test]
async fn training_weights_nested_in_the_output_are_stored() {
    let files = StandIn::start().await;
    let weights = files.add("trained_model.tar", "application/x-tar", b"tar bytes");
    let (
        Training {
            db,
            user,
            model,
            rid,
        },
        status,
        answer,
    ) = deliver_training(&weights, &files.base).await;
    assert_eq!(status, 200, "{answer}");
    let key = format!("models/{user}/{rid}/0.tar");
    let row = db.row("models", model).await;
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["weights_url"], format!("s3://replicate-outputs/{key}"));
    assert_eq!(row["version"], "acme/user-lora-42:5d3f1b2c9e");
    assert_eq!(
        s3_object(&key).await,
        ("application/x-tar".into(), "tar bytes".into())
    );
    assert!(
        db.select("credit_ledger", &format!("model_id=eq.{model}"))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn text_output_is_stored_as_it_is() {
    let job = Job::prediction().await;
    let handler = predict("http://127.0.0.1:1", &[]);
    let body = fixture("prediction_succeeded_text", &job.rid);
    let (status, answer) = deliver(&handler, &job.uri(), &body).await;
    assert_eq!(status, 200, "{answer}");
    let row = job.row().await;
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["output"], "Hello! How can I help you today?");
    assert!(
        s3_keys(&format!("predictions/{}/", job.user))
            .await
            .is_empty()
    );
}

/// The `detail` of the `webhook_events` row of the job's one delivery.
async fn event_detail(job: &Job) -> String {
    let events = job
        .db
        .select("webhook_events", &format!("replicate_id=eq.{}", job.rid))
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    events[0]["detail"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_disallowed_host_is_never_contacted_and_its_url_kept_as_received() {
    let allowed = StandIn::start().await;
    let other = StandIn::start().await;
    let good = allowed.add("a.png", "image/png", PNG);
    let bad = other.add("b.png", "image/png", PNG);
    let job = Job::prediction().await;
    let handler = predict(&allowed.base, &[]);
    let output = json!([good, bad]);
    let (status, body) = deliver(&handler, &job.uri(), &job.delivery(output)).await;
    // No retry can make an unlisted host fetchable: the job ends, with what could be stored.
    assert_eq!(status, 200, "{body}");
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    let stored = format!("s3://replicate-outputs/{}", job.key("0.png"));
    let row = job.row().await;
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["output"], json!([stored, bad]));
    assert_eq!(row["output_urls"], json!([stored]));
    let detail = event_detail(&job).await;
    assert!(
        detail.contains("output file 1") && detail.contains("not in OUTPUT_HOSTS"),
        "{detail}"
    );
    assert!(
        !detail.contains(&bad),
        "the URL itself is not recorded: {detail}"
    );
}

#[tokio::test]
async fn values_that_only_look_like_files_are_kept_and_the_job_ends() {
    let job = Job::prediction().await;
    let handler = predict("http://127.0.0.1:1", &[]);
    let output = json!(["data:42", "https://", "https://exa mple.com/a.png"]);
    let (status, body) = deliver(&handler, &job.uri(), &job.delivery(output.clone())).await;
    assert_eq!(status, 200, "{body}");
    let row = job.row().await;
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["output"], output, "kept exactly as received");
    assert_eq!(row["output_urls"], json!([]));
    let detail = event_detail(&job).await;
    assert!(
        detail.contains("output file 0 is not a valid data: URI")
            && detail.contains("output file 1 refused"),
        "{detail}"
    );
}

#[tokio::test]
async fn training_weights_on_an_unlisted_host_end_the_training_without_a_weights_url() {
    let other = StandIn::start().await;
    let weights = other.add("trained_model.tar", "application/x-tar", b"tar bytes");
    let (Training { db, model, .. }, status, answer) =
        deliver_training(&weights, "http://127.0.0.1:1").await;
    assert_eq!(status, 200, "{answer}");
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    let row = db.row("models", model).await;
    assert_eq!(row["status"], "succeeded");
    assert!(row["weights_url"].is_null(), "{row}");
}

#[tokio::test]
async fn a_stale_succeeded_event_fetches_nothing() {
    let files = StandIn::start().await;
    let url = files.add("out.png", "image/png", PNG);
    let weights = files.add("w.tar", "application/x-tar", b"tar bytes");
    let db = Db::service();
    let user = seed_user(&db).await;
    // Each row already follows another Replicate run; the event is about an older one.
    let prediction = seed_prediction(&db, user, Some(&replicate_id()), 2).await;
    let model = seed_model(&db, user, Some(&replicate_id()), 2).await;

    let mut body = fixture("prediction_succeeded_url_list", &replicate_id());
    body["output"] = json!([url]);
    let handler = predict(&files.base, &[]);
    let uri = format!("/p?user_id={user}&prediction_id={prediction}");
    let (status, answer) = deliver(&handler, &uri, &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("stale")),
        "{answer}"
    );

    let mut body = fixture("training_succeeded", &replicate_id());
    body["output"]["weights"] = json!(weights);
    let handler = Webhook::new(
        WebhookRoute::Train,
        &settings_with(&[("OUTPUT_HOSTS", &files.base)]),
    );
    let uri = format!("/t?user_id={user}&model_id={model}");
    let answer = body_json(&handler.call(signed_post(&uri, &body)).await);
    assert_eq!(answer["outcome"], "stale", "{answer}");

    assert!(files.requests().is_empty(), "{:?}", files.requests());
    assert!(s3_keys(&format!("predictions/{user}/")).await.is_empty());
    assert!(s3_keys(&format!("models/{user}/")).await.is_empty());
}

#[tokio::test]
async fn a_redirect_off_the_list_is_not_followed() {
    let allowed = StandIn::start().await;
    let other = StandIn::start().await;
    let target = other.add("b.png", "image/png", PNG);
    let job = Job::prediction().await;
    let handler = predict(&allowed.base, &[]);
    let off_list = allowed.redirect(&target);
    let (status, body) = deliver(&handler, &job.uri(), &job.delivery(json!(off_list))).await;
    // Where a URL redirects is the source's answer, not a passing failure: kept as received.
    assert_eq!(status, 200, "{body}");
    assert_eq!(allowed.requests(), vec!["/redirect".to_owned()]);
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    let row = job.row().await;
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["output"], json!(off_list));
    assert!(event_detail(&job).await.contains("redirected"));

    // A redirect that stays on the list is followed.
    let job = Job::prediction().await;
    let inside = allowed.add("c.png", "image/png", PNG);
    let (status, body) = deliver(
        &handler,
        &job.uri(),
        &job.delivery(json!(allowed.redirect(&inside))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The key's extension comes from the URL Replicate gave, which has none here.
    assert_eq!(
        s3_object(&job.key("0")).await,
        ("image/png".into(), PNG.into())
    );
}

#[tokio::test]
async fn a_source_that_is_gone_leaves_the_job_unfinished() {
    let files = StandIn::start().await;
    let job = Job::prediction().await;
    let handler = predict(&files.base, &[]);
    let (status, body) = deliver(&handler, &job.uri(), &job.delivery(json!([files.gone()]))).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().expect("message").contains("gone"),
        "{body}"
    );
    assert_eq!(job.row().await["status"], "pending");
}

#[tokio::test]
async fn store_down_is_503_then_a_retry_stores_and_applies() {
    let files = StandIn::start().await;
    let url = files.add("out.png", "image/png", PNG);
    let root = private_s3_root();
    let mut s3 = spawn_s3_on(free_port(), &root).await;
    let port = s3.port;
    let endpoint = format!("http://127.0.0.1:{port}");
    let job = Job::prediction().await;
    let handler = predict(&files.base, &[("S3_ENDPOINT_URL", &endpoint)]);
    let body = job.delivery(json!([url]));
    let id = webhook_id();

    s3.stop();
    let response = handler
        .call(signed_post_with_id(&job.uri(), &body, &id))
        .await;
    assert_eq!(response.status(), 503, "{}", body_json(&response));
    let row = job.row().await;
    assert_eq!(row["status"], "pending");
    assert!(row["output"].is_null());

    let _back = spawn_s3_on(port, &root).await;
    let response = handler
        .call(signed_post_with_id(&job.uri(), &body, &id))
        .await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    assert_eq!(job.row().await["status"], "succeeded");
    assert_eq!(s3_object_at(&endpoint, &job.key("0.png")).await.1, PNG);
}

#[tokio::test]
async fn a_retried_event_after_success_fetches_nothing_again() {
    let files = StandIn::start().await;
    let url = files.add("out.png", "image/png", PNG);
    let job = Job::prediction().await;
    let handler = predict(&files.base, &[]);
    let body = job.delivery(json!([url]));
    assert_eq!(
        deliver(&handler, &job.uri(), &body).await.1["outcome"],
        "applied"
    );
    assert_eq!(
        deliver(&handler, &job.uri(), &body).await.1["outcome"],
        "duplicate"
    );
    assert_eq!(files.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_is_copied_intact() {
    const SIZE: usize = 100 * 1024 * 1024 + 12_345;
    let files = StandIn::start().await;
    let job = Job::prediction().await;
    let handler = predict(&files.base, &[]);
    let body = job.delivery(json!(files.big(SIZE, "weights.tar")));
    let (status, answer) = deliver(&handler, &job.uri(), &body).await;
    assert_eq!(status, 200, "{answer}");
    let (content_type, bytes) = s3_object(&job.key("0.tar")).await;
    assert_eq!(content_type, "application/x-tar");
    assert_eq!(bytes.len(), SIZE);
    assert_eq!(
        format!("{:x}", Sha256::digest(&bytes)),
        generated_sha256(SIZE)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_abandoned_mid_copy_still_finishes() {
    let files = StandIn::start().await;
    let (url, release) = files.add_held("slow.png", "image/png", PNG);
    let job = Job::prediction().await;
    let handler = std::sync::Arc::new(predict(&files.base, &[]));
    let request = signed_post(&job.uri(), &job.delivery(json!([url])));
    let in_flight = {
        let handler = std::sync::Arc::clone(&handler);
        tokio::spawn(async move { handler.call(request).await })
    };
    wait_until(
        "the copy to start",
        std::time::Duration::from_secs(10),
        || async { !files.requests().is_empty() },
    )
    .await;
    // Replicate gives up and the platform drops the request while the file is downloading.
    in_flight.abort();
    assert!(in_flight.await.is_err_and(|e| e.is_cancelled()));
    release.notify_one();
    wait_until(
        "the job to succeed",
        std::time::Duration::from_secs(20),
        || async { job.row().await["status"] == "succeeded" },
    )
    .await;
    assert_eq!(s3_object(&job.key("0.png")).await.1, PNG);
}
