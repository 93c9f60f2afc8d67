//! Per-request CPU of a delivery before any I/O: Standard Webhooks verification over the raw
//! bytes, then `Delivery::parse`, for realistic bodies of about 2 KB, 10 KB and 64 KB built
//! from `tests/fixtures/` (logs, and a language model's token output, padded to size).
//!
//! `cargo bench -p shared --bench verify_parse` (or `scripts/bench`, which keeps it short).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::HeaderMap;
use serde_json::Value;
use shared::replicate::Delivery;
use shared::signature::{
    DEFAULT_TOLERANCE_SECONDS, ID_HEADER, SIGNATURE_HEADER, SigningKey, TIMESTAMP_HEADER, Verifier,
};
use std::hint::black_box;
use std::time::Duration;

const SECRET: &str = "whsec_dGVzdC1zZWNyZXQtZm9yLXJlcGxpY2F0ZQ==";
const NOW: i64 = 1_795_000_000;
const ID: &str = "qhs1vvqz2xrm80ckq7dbgc0n6w";
const PROCESSING: &str = include_str!("../../tests/fixtures/prediction_processing.json");
const TOKENS: &str = include_str!("../../tests/fixtures/prediction_succeeded_tokens.json");

#[path = "support/progress.rs"]
mod progress;

/// Diffusion-style progress lines, as a `processing` event's `logs` grows: at least `bytes`.
fn logs(bytes: usize) -> String {
    let mut logs = String::from(progress::SEED_LINE);
    let mut step = 0;
    while logs.len() < bytes {
        logs.push_str(&progress::line(step));
        step = (step + 1) % 29;
    }
    logs
}

/// A `processing` prediction whose logs bring the body to about `size` bytes.
fn processing(size: usize) -> Vec<u8> {
    let mut body: Value = serde_json::from_str(&PROCESSING.replace("REPLACED", ID)).unwrap();
    let base = serde_json::to_vec_pretty(&body).unwrap().len();
    body["logs"] = Value::String(logs(size.saturating_sub(base)));
    serde_json::to_vec_pretty(&body).unwrap()
}

/// A `succeeded` language-model prediction: a token list output and logs, about `size` bytes.
fn tokens(size: usize) -> Vec<u8> {
    let mut body: Value = serde_json::from_str(&TOKENS.replace("REPLACED", ID)).unwrap();
    let words = [
        " the", " model", " answers", ",", " token", " by", " token", ".",
    ];
    body["logs"] = Value::String(logs(size / 4));
    let mut output = vec![Value::String("Hello".into())];
    loop {
        body["output"] = Value::Array(output.clone());
        let bytes = serde_json::to_vec(&body).unwrap();
        if bytes.len() >= size {
            return bytes;
        }
        // About 10 bytes a token: add enough to close most of the gap at once.
        let missing = (size - bytes.len()) / 10 + 1;
        output.extend((0..missing).map(|n| Value::String(words[n % words.len()].into())));
    }
}

fn headers(body: &[u8]) -> HeaderMap {
    let key = SigningKey::parse(SECRET).unwrap();
    let mut h = HeaderMap::new();
    h.insert(
        ID_HEADER,
        "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W".parse().unwrap(),
    );
    h.insert(TIMESTAMP_HEADER, NOW.to_string().parse().unwrap());
    h.insert(
        SIGNATURE_HEADER,
        // A stale entry first, as during a rotation, then the valid one.
        format!(
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {}",
            key.sign("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", NOW, body)
        )
        .parse()
        .unwrap(),
    );
    h
}

fn verify_parse(c: &mut Criterion) {
    let verifier = Verifier::from_secrets(SECRET, DEFAULT_TOLERANCE_SECONDS).unwrap();
    let bodies = [
        ("processing_2KB", processing(2 * 1024)),
        ("processing_10KB", processing(10 * 1024)),
        ("succeeded_tokens_10KB", tokens(10 * 1024)),
        ("succeeded_tokens_64KB", tokens(64 * 1024)),
    ];
    let mut group = c.benchmark_group("delivery");
    for (name, body) in &bodies {
        let headers = headers(body);
        let verified = verifier.verify(&headers, body, NOW).unwrap();
        Delivery::parse(&verified).unwrap();
        group.throughput(Throughput::Bytes(body.len() as u64));
        let label = format!("{name}/{}B", body.len());
        group.bench_with_input(BenchmarkId::new("verify", &label), body, |b, body| {
            b.iter(|| {
                verifier
                    .verify(black_box(&headers), black_box(body), NOW)
                    .unwrap()
            })
        });
        group.bench_with_input(BenchmarkId::new("parse", &label), &verified, |b, v| {
            b.iter(|| Delivery::parse(black_box(v)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("verify_parse", &label), body, |b, body| {
            b.iter(|| {
                let verified = verifier
                    .verify(black_box(&headers), black_box(body), NOW)
                    .unwrap();
                Delivery::parse(&verified).unwrap()
            })
        });
    }
    group.finish();

    // The same fields with `output` built into a `Value` tree, as `Delivery::parse` did before
    // it kept the output as raw JSON: what that choice saves on token lists.
    let mut group = c.benchmark_group("delivery_output_built");
    for (name, body) in &bodies[2..] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        let label = format!("{name}/{}B", body.len());
        group.bench_with_input(BenchmarkId::new("parse", &label), body, |b, body| {
            b.iter(|| serde_json::from_slice::<OutputBuiltWire>(black_box(body)).unwrap())
        });
    }
    group.finish();
}

/// The fields `Delivery::parse` reads, with `output` built into a tree.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct OutputBuiltWire {
    id: Option<Value>,
    status: Option<Value>,
    #[serde(default)]
    output: Value,
    #[serde(default)]
    error: Value,
    #[serde(default)]
    metrics: Value,
    #[serde(default)]
    started_at: Value,
    #[serde(default)]
    completed_at: Value,
    #[serde(default)]
    data_removed: Value,
}

criterion_group! {
    name = benches;
    // Short runs: the whole of scripts/bench should stay a few minutes on 2 cores.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = verify_parse
}
criterion_main!(benches);
