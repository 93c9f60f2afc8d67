//! `bench_load`: end-to-end throughput of applied deliveries through the `unified` route,
//! against PostgREST's own rate for the same RPC, on the local stack, loopback only.
//!
//! It seeds fresh prediction rows (each with a Replicate id) through PostgREST, then in
//! alternating rounds sends one realistic delivery per row, unique ids throughout:
//! - `unified`: a signed POST of the Replicate body to the route's URL (signatures made
//!   before the clock starts, so signing is not measured);
//! - `postgrest`: `POST {POSTGREST_URL}/rpc/apply_replicate_event` with the service key and
//!   the arguments `shared::store::Store::apply` sends for the same delivery.
//!
//! Three in four deliveries are `processing` with a few KB of logs, one in four `failed`
//! (which also writes a refund). Each is counted only when its answer says `applied`. Both
//! paths use the same client (keep-alive, `--concurrency` requests in flight) and the same
//! bounds: `--requests` per round and `--max-seconds` per round. Prints a markdown table.
//!
//! Needs `POSTGREST_URL`, `SUPABASE_SERVICE_ROLE_KEY` and `REPLICATE_WEBHOOK_SECRET` (the
//! route's). Usage: `bench_load --url URL [--requests N] [--rounds R] [--concurrency C]
//! [--max-seconds S]`. Used by `scripts/bench`; never deployed.

use bytes::Bytes;
use serde_json::{Value, json};
use shared::signature::SigningKey;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type Error = Box<dyn std::error::Error + Send + Sync>;

const PROCESSING: &str = include_str!("../../../tests/fixtures/prediction_processing.json");
const FAILED: &str = include_str!("../../../tests/fixtures/prediction_failed.json");
const WARM_UP: usize = 64;

struct Options {
    url: String,
    requests: usize,
    rounds: usize,
    concurrency: usize,
    max_seconds: u64,
}

/// One request ready to send.
struct Prepared {
    url: Arc<str>,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

#[derive(Default)]
struct Tally {
    applied: usize,
    other: usize,
    failed: usize,
    latencies_ms: Vec<f64>,
    seconds: f64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.applied += other.applied;
        self.other += other.other;
        self.failed += other.failed;
        self.latencies_ms.extend(other.latencies_ms);
        self.seconds += other.seconds;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let options = options()?;
    let rest = std::env::var("POSTGREST_URL")?
        .trim_end_matches('/')
        .to_owned();
    let key = std::env::var("SUPABASE_SERVICE_ROLE_KEY")?;
    let secret = std::env::var("REPLICATE_WEBHOOK_SECRET")?;
    let signer = SigningKey::parse(secret.split([' ', ',']).next().unwrap_or_default())
        .map_err(|e| format!("REPLICATE_WEBHOOK_SECRET: {e}"))?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency * 2)
        .timeout(Duration::from_secs(30))
        .build()?;

    // Rows for the warm-ups and for every round of both paths, seeded before anything runs.
    let per_batch = options.requests;
    let total = 2 * (WARM_UP + options.rounds * per_batch);
    let user = uuid::Uuid::new_v4();
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let ids: Vec<String> = (0..total).map(|i| format!("bench{tag}{i:08}")).collect();
    let seeding = Instant::now();
    for chunk in ids.chunks(1000) {
        let rows: Vec<Value> = chunk
            .iter()
            .map(|rid| {
                json!({"id": uuid::Uuid::new_v4(), "user_id": user, "prompt": "a cat",
                       "credits_cost": 1, "replicate_prediction_id": rid})
            })
            .collect();
        let response = client
            .post(format!("{rest}/predictions"))
            .header("apikey", &key)
            .bearer_auth(&key)
            .header("Prefer", "return=minimal")
            .json(&rows)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("seeding predictions: HTTP {}", response.status()).into());
        }
    }
    let seeded_in = seeding.elapsed().as_secs_f64();

    let mut ids = ids.into_iter();
    let mut take = |n: usize| -> Vec<String> { ids.by_ref().take(n).collect() };
    let route_url: Arc<str> = options.url.as_str().into();
    let rpc_url: Arc<str> = format!("{rest}/rpc/apply_replicate_event").into();

    // Warm-up: connections, the route's lazily built PostgREST client, PostgREST's caches.
    let warm = prepare_route(&route_url, &signer, &take(WARM_UP));
    run(&client, warm, &options).await;
    let warm = prepare_rpc(&rpc_url, &key, &take(WARM_UP));
    run(&client, warm, &options).await;

    let mut route = Tally::default();
    let mut direct = Tally::default();
    let mut rounds = Vec::new();
    for _ in 0..options.rounds {
        let batch = prepare_rpc(&rpc_url, &key, &take(per_batch));
        let d = run(&client, batch, &options).await;
        let batch = prepare_route(&route_url, &signer, &take(per_batch));
        let r = run(&client, batch, &options).await;
        rounds.push((rate(&r), rate(&d)));
        route.add(r);
        direct.add(d);
    }

    println!("| path | requests | applied | other 2xx | errors | applied/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, t) in [
        ("`unified` route (Vercel mode, HTTP)", &mut route),
        (
            "PostgREST RPC `apply_replicate_event` directly",
            &mut direct,
        ),
    ] {
        t.latencies_ms.sort_by(f64::total_cmp);
        println!(
            "| {name} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} |",
            t.latencies_ms.len(),
            t.applied,
            t.other,
            t.failed,
            rate(t),
            percentile(&t.latencies_ms, 0.50),
            percentile(&t.latencies_ms, 0.99),
        );
    }
    println!();
    let per_round: Vec<String> = rounds
        .iter()
        .map(|(r, d)| format!("{:.2}", r / d))
        .collect();
    println!(
        "unified / PostgREST = **{:.2}×** (per round: {}); {} rounds of {} deliveries per path, \
         concurrency {}, keep-alive; {total} rows seeded in {seeded_in:.1} s beforehand.",
        rate(&route) / rate(&direct),
        per_round.join(", "),
        options.rounds,
        per_batch,
        options.concurrency,
    );
    Ok(())
}

fn options() -> Result<Options, Error> {
    let mut o = Options {
        url: String::new(),
        requests: 1000,
        rounds: 3,
        concurrency: 16,
        max_seconds: 60,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--url" => o.url = value,
            "--requests" => o.requests = value.parse()?,
            "--rounds" => o.rounds = value.parse()?,
            "--concurrency" => o.concurrency = value.parse()?,
            "--max-seconds" => o.max_seconds = value.parse()?,
            _ => return Err(format!("unknown argument {arg}").into()),
        }
    }
    if o.url.is_empty() {
        return Err("usage: bench_load --url URL [--requests N] [--rounds R] [--concurrency C] [--max-seconds S]".into());
    }
    Ok(o)
}

// The verify + parse benchmark's progress lines, so both measure bodies of one shape.
#[path = "../../../shared/benches/support/progress.rs"]
mod progress;

/// Diffusion-style progress lines, as a `processing` event's logs grow: `lines` of them.
fn logs(lines: usize) -> String {
    let mut logs = String::from(progress::SEED_LINE);
    for step in 0..lines {
        logs.push_str(&progress::line(step % 29));
    }
    logs
}

/// The Replicate body for the `n`th delivery: a `processing` prediction with about 2 KB of
/// logs, or every fourth one `failed`.
fn body(n: usize, replicate_id: &str) -> Value {
    let fixture = if n % 4 == 3 { FAILED } else { PROCESSING };
    let mut body: Value =
        serde_json::from_str(&fixture.replace("REPLACED", replicate_id)).unwrap_or_default();
    body["logs"] = Value::String(logs(30 + n % 20));
    body
}

fn prepare_route(url: &Arc<str>, signer: &SigningKey, ids: &[String]) -> Vec<Prepared> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    ids.iter()
        .enumerate()
        .map(|(n, rid)| {
            let bytes = serde_json::to_vec(&body(n, rid)).unwrap_or_default();
            let webhook_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            let signature = signer.sign(&webhook_id, now, &bytes);
            Prepared {
                url: Arc::clone(url),
                headers: vec![
                    ("content-type", "application/json".into()),
                    ("webhook-id", webhook_id),
                    ("webhook-timestamp", now.to_string()),
                    ("webhook-signature", signature),
                ],
                body: Bytes::from(bytes),
            }
        })
        .collect()
}

/// The arguments `Store::apply` sends for the same delivery on the unified route.
fn prepare_rpc(url: &Arc<str>, key: &str, ids: &[String]) -> Vec<Prepared> {
    ids.iter()
        .enumerate()
        .map(|(n, rid)| {
            let d = body(n, rid);
            let metrics = match &d["metrics"] {
                Value::Object(m) if !m.is_empty() => Value::Object(m.clone()),
                Value::Object(_) => json!({}),
                _ => Value::Null,
            };
            let args = json!({
                "p_webhook_id": format!("msg_{}", uuid::Uuid::new_v4().simple()),
                "p_route": "unified",
                "p_replicate_id": rid,
                "p_status": d["status"],
                "p_job_kind": null,
                "p_job_id": null,
                "p_user_id": null,
                "p_output": d["output"],
                "p_output_urls": null,
                "p_weights_url": null,
                "p_version": null,
                "p_error": d["error"],
                "p_metrics": metrics,
                "p_started_at": d["started_at"],
                "p_completed_at": d["completed_at"],
                "p_outcome": "applied",
            });
            Prepared {
                url: Arc::clone(url),
                headers: vec![
                    ("content-type", "application/json".into()),
                    ("apikey", key.to_owned()),
                    ("authorization", format!("Bearer {key}")),
                ],
                body: Bytes::from(serde_json::to_vec(&args).unwrap_or_default()),
            }
        })
        .collect()
}

/// Sends every prepared request with `concurrency` in flight, until done or out of time.
async fn run(client: &reqwest::Client, batch: Vec<Prepared>, options: &Options) -> Tally {
    let batch = Arc::new(batch);
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(options.max_seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..options.concurrency)
        .map(|_| {
            let (client, batch, next) = (client.clone(), Arc::clone(&batch), Arc::clone(&next));
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = batch.get(i) else { break };
                    let mut request = client.post(&*p.url).body(p.body.clone());
                    for (k, v) in &p.headers {
                        request = request.header(*k, v);
                    }
                    let sent = Instant::now();
                    let answer = match request.send().await {
                        Ok(r) if r.status().is_success() => r.bytes().await.ok(),
                        Ok(r) => {
                            let _ = r.bytes().await;
                            None
                        }
                        Err(_) => None,
                    };
                    tally
                        .latencies_ms
                        .push(sent.elapsed().as_secs_f64() * 1000.0);
                    match answer.and_then(|b| serde_json::from_slice::<Value>(&b).ok()) {
                        Some(v) if v["outcome"] == "applied" => tally.applied += 1,
                        Some(_) => tally.other += 1,
                        None => tally.failed += 1,
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for worker in workers {
        if let Ok(t) = worker.await {
            total.add(t);
        }
    }
    total.seconds = started.elapsed().as_secs_f64();
    total
}

fn rate(t: &Tally) -> f64 {
    if t.seconds > 0.0 {
        t.applied as f64 / t.seconds
    } else {
        0.0
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
