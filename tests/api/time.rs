//! Bounded time and work done once: every delivery answers before the function's limit, a
//! retry during a copy starts no second copy, work outlives a caller that hangs up, and no
//! upload is left unfinished in the bucket.

use crate::helpers::*;
use crate::standin::{STALL_AFTER, StandIn};
use serde_json::{Value, json};
use shared::routes::{Webhook, WebhookRoute};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_trickling_source_is_cut_off_and_answered_before_the_time_limit() {
    let files = StandIn::start().await;
    // One byte a second: it would take ten minutes.
    let slow = files.trickle(600, "out.png");
    let job = Job::prediction().await;
    let function = Function::start(
        env!("CARGO_BIN_EXE_predict"),
        &[
            ("OUTPUT_HOSTS", &files.base),
            ("FUNCTION_TIMEOUT_SECONDS", "20"),
        ],
    )
    .await;
    let started = Instant::now();
    let response = function
        .request(&job.uri(), &job.delivery(json!([slow])), &webhook_id())
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("an answer");
    let took = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(took < Duration::from_secs(20), "answered after {took:?}");
    let body: Value = response.json().await.expect("JSON");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("time limit"),
        "{body}"
    );
    assert_eq!(job.status().await, "pending");
    // Its log line was written (the process was not killed mid-answer) and says why.
    wait_until("the log line", Duration::from_secs(5), || async {
        !function.log_lines().is_empty()
    })
    .await;
    let line = function.log_lines().remove(0);
    assert_eq!(line["http_status"], 503, "{line}");
    assert!(
        line["timestamp"].is_string() && line["level"] == "error",
        "{line}"
    );
    assert!(
        line.to_string().contains("time limit"),
        "the line says what was left: {line}"
    );
}

#[tokio::test]
async fn retries_during_a_copy_start_no_second_copy() {
    let files = StandIn::start().await;
    let (url, release) = files.add_held("slow.png", "image/png", b"png bytes");
    let job = Arc::new(Job::prediction().await);
    let handler = Arc::new(Webhook::new(
        WebhookRoute::Predict,
        &settings_with(&[("OUTPUT_HOSTS", &files.base)]),
    ));
    let id = webhook_id();
    let body = job.delivery(json!([url]));
    let first = {
        let (handler, path, body, id) = (Arc::clone(&handler), job.uri(), body.clone(), id.clone());
        tokio::spawn(async move { handler.call(signed_post_with_id(&path, &body, &id)).await })
    };
    // The first delivery is inside its copy: the source has its request and holds it.
    wait_until(
        "the first copy to start",
        Duration::from_secs(10),
        || async { files.requests().len() == 1 },
    )
    .await;
    // Replicate's retries, with the same webhook-id, while it copies.
    for _ in 0..2 {
        let retry = handler
            .call(signed_post_with_id(&job.uri(), &body, &id))
            .await;
        assert_unavailable(&retry, "being copied");
    }
    release.notify_one();
    let first = first.await.expect("the first delivery");
    assert_eq!(first.status(), 200, "{}", body_json(&first));
    assert_eq!(
        files.requests(),
        ["/f/slow.png"],
        "the source was read once"
    );
    let stored = s3_keys(&format!("predictions/{}/{}/", job.user, job.rid)).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    // After the copy, a retry is a duplicate and fetches nothing.
    let late = handler
        .call(signed_post_with_id(&job.uri(), &body, &id))
        .await;
    assert_eq!(body_json(&late)["outcome"], "duplicate");
    assert_eq!(files.requests().len(), 1);
}

#[tokio::test]
async fn a_caller_that_hangs_up_in_vercel_mode_still_gets_its_job_finished() {
    let files = StandIn::start().await;
    let (url, release) = files.add_held("out.png", "image/png", b"png bytes");
    let job = Job::prediction().await;
    let function = Function::start(
        env!("CARGO_BIN_EXE_predict"),
        &[("OUTPUT_HOSTS", &files.base)],
    )
    .await;
    let request = function.request(&job.uri(), &job.delivery(json!([url])), &webhook_id());
    let call = tokio::spawn(async move { request.send().await });
    wait_until("the copy to start", Duration::from_secs(10), || async {
        files.requests().len() == 1
    })
    .await;
    // Replicate gives up: the connection is dropped while the copy waits on the source.
    call.abort();
    let _ = call.await;
    release.notify_one();
    wait_until("the job to succeed", Duration::from_secs(20), || async {
        job.status().await == "succeeded"
    })
    .await;
    let stored = s3_keys(&format!("predictions/{}/{}/", job.user, job.rid)).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(s3_object(&stored[0]).await.1, "png bytes");
}

/// Unfinished multipart uploads in an s3s-fs folder: it keeps each upload's parts and
/// metadata as files named after the upload id until it is completed or aborted.
fn unfinished_uploads(root: &std::path::Path) -> Vec<String> {
    let mut names = Vec::new();
    for dir in [root.to_path_buf(), root.join(stack_var("S3_BUCKET"))] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.contains(".upload_id-") || name.contains(".upload-") {
                    names.push(name);
                }
            }
        }
    }
    names
}

#[tokio::test]
async fn a_failing_file_leaves_no_unfinished_upload_of_the_others() {
    let files = StandIn::start().await;
    let (big, release_big) = files.stalled_big(3 * STALL_AFTER, "weights.tar");
    files.set("/f/missing.png", 404, "text/plain", b"gone");
    let release_missing = files.hold("/f/missing.png");
    let missing = format!("{}/f/missing.png", files.base);
    let root = private_s3_root();
    let s3 = spawn_s3_on(free_port(), &root).await;
    let job = Arc::new(Job::prediction().await);
    let handler = Arc::new(Webhook::new(
        WebhookRoute::Predict,
        &settings_with(&[
            ("OUTPUT_HOSTS", &files.base),
            ("S3_ENDPOINT_URL", &format!("http://127.0.0.1:{}", s3.port)),
        ]),
    ));
    let body = job.delivery(json!([big, missing]));
    let delivery = {
        let (handler, path) = (Arc::clone(&handler), job.uri());
        tokio::spawn(async move { handler.call(signed_post(&path, &body)).await })
    };
    // The large file is mid-upload (its first parts are in the store) ...
    wait_until(
        "a multipart upload in flight",
        Duration::from_secs(30),
        || async {
            unfinished_uploads(&root)
                .iter()
                .any(|n| n.contains(".part-"))
        },
    )
    .await;
    // ... when the other file fails for good.
    release_missing.notify_one();
    let answer = delivery.await.expect("the delivery");
    // The answer names the file that failed.
    assert_unavailable(&answer, "gone");
    assert_eq!(unfinished_uploads(&root), Vec::<String>::new());
    release_big.notify_one();
    assert_eq!(job.status().await, "pending");
}
