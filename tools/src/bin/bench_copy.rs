//! Copies one output file through the real copier into the configured bucket and prints
//! wall time, throughput and this process's peak resident memory (VmHWM) as JSON.
//!
//! Usage: `bench_copy URL` with the stack's S3 variables and `OUTPUT_HOSTS` set; run by
//! `scripts/bench-copy`, which serves the file from another process so only the copier's
//! memory is measured.

use serde_json::json;
use shared::config::{self, ConfigError, ProcessEnv, StorageConfig};
use shared::job::JobKind;
use shared::outputs::copy::{Copier, Destination};
use shared::platform::BoxError;
use shared::storage::Storage;
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::args()
        .nth(1)
        .ok_or("usage: bench_copy URL (with the S3 variables and OUTPUT_HOSTS set)")?;
    let storage = StorageConfig::from_env(&ProcessEnv).map_err(config_error)?;
    let hosts = config::output_hosts(&ProcessEnv).map_err(config_error)?;
    let copier = Copier::new(
        Storage::new(&storage),
        hosts,
        storage.prefix.clone(),
        storage.public_base_url.clone(),
    )?;
    let replicate_id = format!("bench{}", std::process::id());
    let started = Instant::now();
    let stored = copier
        .copy_all(
            Destination {
                kind: JobKind::Prediction,
                user_id: uuid::Uuid::nil(),
                replicate_id: &replicate_id,
            },
            &json!([&url]),
            std::slice::from_ref(&url),
            // A benchmark has no platform limit; an hour bounds a stuck run.
            started + std::time::Duration::from_secs(3600),
        )
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    let size = std::env::var("BENCH_BYTES")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0);
    let report = json!({
        "stored": stored.urls,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "mib_per_second": if size > 0.0 { ((size / 1048576.0 / seconds) * 10.0).round() / 10.0 } else { 0.0 },
        "peak_rss_mib": peak_rss_kib().map(|kib| (kib as f64 / 1024.0 * 10.0).round() / 10.0),
    });
    println!("{report}");
    Ok(())
}

fn config_error(e: ConfigError) -> BoxError {
    e.to_string().into()
}

/// VmHWM from /proc/self/status: the most resident memory this process ever had.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
