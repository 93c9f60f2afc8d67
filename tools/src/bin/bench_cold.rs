//! `bench_cold`: cold start of function binaries, exec → ready, in both platform modes.
//!
//! - Lambda: a local Runtime API stub on 127.0.0.1 (this process) records when the binary's
//!   first `GET /2018-06-01/runtime/invocation/next` arrives; the binary is started with
//!   `AWS_LAMBDA_RUNTIME_API` pointing at it and the variables `lambda_runtime` requires.
//! - Vercel: the binary is started with `VERCEL_DEV_PORT` and the time is taken when that
//!   port first accepts a connection (polled every 50 µs).
//!
//! Runs are interleaved (each round starts every binary once in each mode) so background
//! load spreads evenly; two warm-up rounds are not counted. The binaries inherit this
//! process's environment (the route configuration) and their output goes nowhere. Prints a
//! markdown table: median, p90, min, the resident memory and minor page faults at ready, and
//! the median as a multiple of the first binary's (the baseline).
//!
//! Usage: `bench_cold [--runs N] [--tsv FILE] NAME=PATH...` (the first one is the
//! baseline; `--tsv` also writes `name mode median p90 faults` lines). Used by
//! `scripts/bench`; never deployed.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const NEXT: &str = "GET /2018-06-01/runtime/invocation/next";
const LIMIT: Duration = Duration::from_secs(20);
const WARM_UP: usize = 2;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Lambda,
    Vercel,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Lambda => "Lambda (→ first /next)",
            Mode::Vercel => "Vercel (→ port accepts)",
        }
    }
}

struct Sample {
    ms: f64,
    rss_kib: Option<u64>,
    /// Minor page faults of the process so far (most of a bigger binary's extra start cost is
    /// the dynamic loader writing relocated pointers into its pages).
    faults: Option<u64>,
}

fn main() -> Result<(), Error> {
    let mut runs = 20usize;
    let mut tsv: Option<String> = None;
    let mut bins: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--runs" {
            runs = args.next().ok_or("--runs needs a number")?.parse()?;
        } else if arg == "--tsv" {
            tsv = Some(args.next().ok_or("--tsv needs a path")?);
        } else if let Some((name, path)) = arg.split_once('=') {
            bins.push((name.to_owned(), path.to_owned()));
        } else {
            return Err(format!("usage: bench_cold [--runs N] NAME=PATH... (got {arg})").into());
        }
    }
    if bins.is_empty() {
        return Err("usage: bench_cold [--runs N] NAME=PATH...".into());
    }

    let stub = TcpListener::bind("127.0.0.1:0")?;
    let api = stub.local_addr()?.to_string();
    let (arrivals, next_request) = mpsc::channel::<(Instant, TcpStream)>();
    std::thread::spawn(move || runtime_api_stub(stub, arrivals));

    let modes = [Mode::Lambda, Mode::Vercel];
    let mut samples: Vec<Vec<Vec<Sample>>> = bins
        .iter()
        .map(|_| modes.iter().map(|_| Vec::new()).collect())
        .collect();
    for round in 0..WARM_UP + runs {
        for (b, (name, path)) in bins.iter().enumerate() {
            for (m, mode) in modes.iter().enumerate() {
                let sample = match mode {
                    Mode::Lambda => lambda_once(name, path, &api, &next_request),
                    Mode::Vercel => vercel_once(path),
                }
                .map_err(|e| format!("{name} ({}): {e}", mode.name()))?;
                if round >= WARM_UP {
                    samples[b][m].push(sample);
                }
            }
        }
    }

    println!(
        "| binary | mode | median ms | p90 ms | min ms | × baseline (median) | RSS at ready MiB | page faults at ready |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (m, mode) in modes.iter().enumerate() {
        let baseline = median(&samples[0][m]);
        for (b, (name, _)) in bins.iter().enumerate() {
            let s = &samples[b][m];
            let med = median(s);
            let rss = median_of(s.iter().filter_map(|x| x.rss_kib).collect())
                .map(|k| format!("{:.1}", k as f64 / 1024.0))
                .unwrap_or_else(|| "–".into());
            let faults = median_of(s.iter().filter_map(|x| x.faults).collect())
                .map(|f| f.to_string())
                .unwrap_or_else(|| "–".into());
            println!(
                "| `{name}` | {} | {med:.2} | {:.2} | {:.2} | {:.2} | {rss} | {faults} |",
                mode.name(),
                percentile(s, 0.90),
                percentile(s, 0.0),
                med / baseline,
            );
        }
    }
    if let Some(path) = tsv {
        let mut out = String::new();
        for (m, mode) in modes.iter().enumerate() {
            let key = if *mode == Mode::Lambda {
                "lambda"
            } else {
                "vercel"
            };
            for (b, (name, _)) in bins.iter().enumerate() {
                let s = &samples[b][m];
                let faults = median_of(s.iter().filter_map(|x| x.faults).collect());
                out.push_str(&format!(
                    "{name}\t{key}\t{:.3}\t{:.3}\t{}\n",
                    median(s),
                    percentile(s, 0.90),
                    faults.unwrap_or_default(),
                ));
            }
        }
        std::fs::write(path, out)?;
    }
    println!();
    println!("{runs} runs per binary and mode (after {WARM_UP} warm-up rounds), interleaved.");
    Ok(())
}

/// Accepts connections and reports when a complete `/next` request has arrived, handing the
/// connection over so it stays open (unanswered) until the binary is stopped.
fn runtime_api_stub(listener: TcpListener, arrivals: mpsc::Sender<(Instant, TcpStream)>) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        let complete = loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break false,
                Ok(n) => {
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        break true;
                    }
                }
            }
        };
        let at = Instant::now();
        if complete && head.starts_with(NEXT.as_bytes()) {
            if arrivals.send((at, stream)).is_err() {
                return;
            }
        } else if complete {
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        }
    }
}

fn lambda_once(
    name: &str,
    path: &str,
    api: &str,
    next_request: &mpsc::Receiver<(Instant, TcpStream)>,
) -> Result<Sample, Error> {
    let mut command = Command::new(path);
    command
        .env("AWS_LAMBDA_RUNTIME_API", api)
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench")
        .env("_HANDLER", "bootstrap")
        .env_remove("VERCEL_DEV_PORT");
    let started = Instant::now();
    let mut child = spawn(&mut command)?;
    let arrival = loop {
        match next_request.recv_timeout(Duration::from_millis(10)) {
            Ok(arrival) => break Some(arrival),
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if started.elapsed() > LIMIT || matches!(child.try_wait(), Ok(Some(_))) {
                    break None;
                }
            }
        }
    };
    let (rss_kib, faults) = (rss_kib(&child), minor_faults(&child));
    stop(&mut child);
    let (at, stream) = arrival.ok_or("no /next request (the binary exited or took too long)")?;
    drop(stream);
    Ok(Sample {
        ms: (at - started).as_secs_f64() * 1000.0,
        rss_kib,
        faults,
    })
}

fn vercel_once(path: &str) -> Result<Sample, Error> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut command = Command::new(path);
    command
        .env("VERCEL_DEV_PORT", port.to_string())
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("VERCEL_IPC_PATH");
    let started = Instant::now();
    let mut child = spawn(&mut command)?;
    let ready = loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break Some(Instant::now());
        }
        if started.elapsed() > LIMIT || matches!(child.try_wait(), Ok(Some(_))) {
            break None;
        }
        std::thread::sleep(Duration::from_micros(50));
    };
    let (rss_kib, faults) = (rss_kib(&child), minor_faults(&child));
    stop(&mut child);
    let at = ready.ok_or("the port never accepted")?;
    Ok(Sample {
        ms: (at - started).as_secs_f64() * 1000.0,
        rss_kib,
        faults,
    })
}

fn spawn(command: &mut Command) -> Result<Child, Error> {
    Ok(command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn rss_kib(child: &Child) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn minor_faults(child: &Child) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).ok()?;
    // Fields after the parenthesised command name; minflt is the 10th field overall.
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(7)?.parse().ok()
}

fn median_of(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

fn sorted(samples: &[Sample]) -> Vec<f64> {
    let mut ms: Vec<f64> = samples.iter().map(|s| s.ms).collect();
    ms.sort_by(f64::total_cmp);
    ms
}

fn median(samples: &[Sample]) -> f64 {
    let ms = sorted(samples);
    let n = ms.len();
    if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile (`q` = 0 is the minimum).
fn percentile(samples: &[Sample], q: f64) -> f64 {
    let ms = sorted(samples);
    let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
    ms[rank - 1]
}
