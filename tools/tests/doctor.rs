//! The `doctor` binary against real servers: the dev server on the private stack that
//! `scripts/test` starts (healthy, with a wrong secret, with its database gone), and small
//! local HTTP servers made here for what stands in front of a broken deployment (a redirect,
//! a login page, a clock far off) and for Replicate's signing-secret endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Another valid secret (conformance vector B's).
const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const CRON_SECRET: &str = "cron-secret-for-doctor-tests";
const TOKEN: &str = "r8_doctor-test-token";

/// The routes doctor calls (every route of the table), each reported on a line of its own.
fn routes() -> [&'static str; 6] {
    shared::routes::ROUTES.map(|r| r.bin)
}

// The stack's variables, as the black-box suite hands them to the functions.
#[path = "../../tests/api/stack.rs"]
mod stack;
use stack::{stack_var, stack_vars};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The dev server, killed and reaped when dropped.
struct Dev {
    child: Child,
    base: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the dev server on the stack with the test secret, `CRON_SECRET` and a Replicate
/// API nobody can reach; `changes` override (an empty value removes a variable). Reconcile
/// is told to leave every job alone, so that its run cannot touch other tests' rows.
fn start_dev(changes: &[(&str, &str)]) -> Dev {
    let port = free_port();
    let mut env = stack_vars();
    for (k, v) in [
        ("REPLICATE_WEBHOOK_SECRET", SECRET),
        ("CRON_SECRET", CRON_SECRET),
        ("REPLICATE_API_TOKEN", TOKEN),
        ("REPLICATE_API_URL", "http://127.0.0.1:1"),
        ("RECONCILE_AFTER_SECONDS", "315360000"),
        ("RECONCILE_MAX_AGE_SECONDS", "1"),
        ("OUTPUT_HOSTS", "http://127.0.0.1:1"),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    for (k, v) in changes {
        env.retain(|(name, _)| name != k);
        if !v.is_empty() {
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
    }
    let child = Command::new(env!("CARGO_BIN_EXE_dev"))
        .env_clear()
        .envs(env)
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the dev server starts");
    let mut dev = Dev {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    // Poll until it accepts connections, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            dev.child.try_wait().expect("dev status").is_none(),
            "the dev server exited"
        );
        assert!(Instant::now() < deadline, "the dev server never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    dev
}

/// A request as a [`Fixed`] server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    authorization: Option<String>,
}

/// A local HTTP server giving every request the same answer; stops when dropped.
struct Fixed {
    base: String,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Fixed {
    /// Serves `head` (status line and headers, without the blank line) and `body`.
    fn start(head: &str, body: &str) -> Fixed {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answer = format!(
            "{head}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_seen, thread_stop) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                if let Some(request) = read_request(&stream) {
                    thread_seen.lock().expect("lock").push(request);
                }
                let mut stream = stream;
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Fixed {
            base: format!("http://{addr}"),
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for Fixed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request's head and body.
fn read_request(stream: &TcpStream) -> Option<Seen> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let mut parts = first.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut length = 0;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "authorization" => authorization = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        target,
        authorization,
    })
}

/// A stand-in for Replicate's API answering the signing-secret request with `key`.
fn replicate_api(key: &str) -> Fixed {
    Fixed::start(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json",
        &format!(r#"{{"key":"{key}"}}"#),
    )
}

/// Runs doctor with `args`, the test secret, and only the environment given.
fn doctor(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_doctor"))
        .args(args)
        .env_remove("REPLICATE_WEBHOOK_SECRET")
        .env_remove("CRON_SECRET")
        .env_remove("REPLICATE_API_TOKEN")
        .env_remove("REPLICATE_API_URL")
        .env("REPLICATE_WEBHOOK_SECRET", SECRET)
        .envs(env.iter().copied())
        .output()
        .expect("run doctor")
}

/// Runs doctor against the deployment at `base` with `env`, checks that it exits with
/// `code`, and returns what it printed, with its whole output.
fn doctor_at(base: &str, env: &[(&str, &str)], code: i32) -> (String, Output) {
    let out = doctor(&["--url", base], env);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{stdout}{}",
        text(&out.stderr)
    );
    (stdout, out)
}

/// `extra`, and what makes doctor ask the stand-in `api` for Replicate's signing secret.
fn asking<'a>(api: &'a Fixed, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("REPLICATE_API_TOKEN", TOKEN),
        ("REPLICATE_API_URL", api.base.as_str()),
    ];
    env.extend_from_slice(extra);
    env
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The printed line of `check`.
fn line_of<'a>(stdout: &'a str, check: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| {
            l.get(6..)
                .is_some_and(|rest| rest.starts_with(&format!("{check} ")))
        })
        .unwrap_or_else(|| panic!("no {check} line in:\n{stdout}"))
}

/// The printed line of `check`, once it is seen to say FAIL and `why`.
fn failed<'a>(stdout: &'a str, check: &str, why: &str) -> &'a str {
    let l = line_of(stdout, check);
    assert!(l.starts_with("FAIL") && l.contains(why), "{l}");
    l
}

/// Checks no secret, token or signature shows in what doctor printed.
fn assert_nothing_secret(out: &Output) {
    for shown in [text(&out.stdout), text(&out.stderr)] {
        for secret in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "C2FVsBQIhrscChlQIMV",
            CRON_SECRET,
            TOKEN,
            "v1,",
        ] {
            assert!(!shown.contains(secret), "{secret} shown in:\n{shown}");
        }
    }
}

/// Rows of webhook_events for a Replicate id, through the stack's PostgREST.
fn events_for(replicate_id: &str) -> Vec<serde_json::Value> {
    let url = format!(
        "{}/webhook_events?replicate_id=eq.{replicate_id}",
        stack_var("POSTGREST_URL")
    );
    let key = stack_var("SUPABASE_SERVICE_ROLE_KEY");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            reqwest::Client::new()
                .get(url)
                .header("apikey", &key)
                .bearer_auth(&key)
                .send()
                .await
                .expect("PostgREST answers")
                .json()
                .await
                .expect("rows")
        })
}

#[test]
fn a_healthy_dev_server_passes_every_check_and_nothing_is_written() {
    let dev = start_dev(&[]);
    let api = replicate_api(SECRET);
    let (stdout, out) = doctor_at(&dev.base, &asking(&api, &[("CRON_SECRET", CRON_SECRET)]), 0);
    assert!(!stdout.contains("FAIL"), "{stdout}");
    // Plain http on this machine is a warning, not a failure.
    assert!(line_of(&stdout, "https").starts_with("WARN"), "{stdout}");
    for check in routes()
        .iter()
        .chain(&["verification", "clock", "replicate-secret"])
    {
        assert!(
            line_of(&stdout, check).starts_with("PASS"),
            "{check}: {stdout}"
        );
    }
    // Latency on each route's line.
    for route in routes() {
        assert!(
            line_of(&stdout, route).ends_with(" ms)"),
            "{route}: {stdout}"
        );
    }
    assert!(line_of(&stdout, "health").contains("healthy"));
    assert!(line_of(&stdout, "unified").contains("200 ignored"));
    assert!(line_of(&stdout, "verification").contains("401"));
    assert!(line_of(&stdout, "train").contains("404"));
    assert!(line_of(&stdout, "reconcile").contains("200"));
    assert!(line_of(&stdout, "clock").contains("300 s"));

    // Replicate's API was asked for the secret, with the token.
    let seen = api.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].target, "/v1/webhooks/default/secret");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_nothing_secret(&out);

    // The probe id matched no job and left no row behind.
    let probe = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("probe id "))
        .and_then(|rest| rest.split(':').next())
        .expect("the probe id is printed");
    assert_eq!(probe.len(), 26, "{probe}");
    assert!(
        events_for(probe).is_empty(),
        "doctor wrote events for {probe}"
    );
}

#[test]
fn a_redirect_fails_and_names_only_the_location_host() {
    let proxy = Fixed::start(
        "HTTP/1.1 308 Permanent Redirect\r\n\
         location: https://www.elsewhere.example/api/webhooks/replicate?token=hidden-value",
        "",
    );
    let (stdout, out) = doctor_at(&proxy.base, &[], 1);
    for route in routes() {
        let l = failed(&stdout, route, "308 redirect to host www.elsewhere.example");
        assert!(l.contains("Replicate does not follow redirects"), "{l}");
        assert!(l.contains("Fix:"), "{l}");
    }
    assert!(!stdout.contains("hidden-value") && !stdout.contains("/api/webhooks/replicate?"));
    // Not followed: only the proxy was asked, once per request doctor makes.
    assert!(proxy.seen().len() >= 6);
    assert_nothing_secret(&out);
}

#[test]
fn a_login_page_is_named_with_the_setting_to_change() {
    let vercel = Fixed::start(
        "HTTP/1.1 401 Unauthorized\r\ncontent-type: text/html; charset=utf-8\r\n\
         server: Vercel\r\nx-vercel-id: fra1::test\r\nset-cookie: _vercel_sso_nonce=n0nce",
        "<!doctype html><html><head><title>Authentication Required</title></head></html>",
    );
    let (stdout, _) = doctor_at(&vercel.base, &[], 1);
    let l = failed(&stdout, "unified", "401 login page");
    assert!(l.contains("Deployment Protection"), "{l}");
    assert!(l.contains("x-vercel-protection-bypass"), "{l}");
    assert!(!stdout.contains("Authentication Required") && !stdout.contains("n0nce"));

    // Another login in front (an SSO proxy): named as such, not as Vercel.
    let sso = Fixed::start(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: text/html",
        "<html><body>Sign in</body></html>",
    );
    let (stdout, _) = doctor_at(&sso.base, &[], 1);
    let l = failed(&stdout, "health", "403 HTML login page");
    assert!(!l.contains("Vercel"), "{l}");
}

#[test]
fn a_wrong_secret_and_a_wrong_cron_secret_are_reported() {
    let dev = start_dev(&[("REPLICATE_WEBHOOK_SECRET", OTHER_SECRET)]);
    let out = doctor(
        &["--url", &dev.base, "--cron-secret", "not-the-cron-secret"],
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(line_of(&stdout, "health").starts_with("PASS"), "{stdout}");
    for route in ["unified", "completed", "train", "predict"] {
        let l = failed(&stdout, route, "401");
        assert!(
            l.contains("REPLICATE_WEBHOOK_SECRET in the deployment"),
            "{l}"
        );
    }
    failed(&stdout, "reconcile", "refused the CRON_SECRET");
    assert!(!stdout.contains("not-the-cron-secret"));
    assert_nothing_secret(&out);
}

#[test]
fn a_stopped_database_is_reported() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let dev = start_dev(&[("POSTGREST_URL", &nowhere)]);
    let (stdout, _) = doctor_at(&dev.base, &[], 1);
    let l = failed(&stdout, "health", "degraded");
    assert!(l.contains("database"), "{l}");
    assert!(l.contains("Fix:"), "{l}");
    for route in ["unified", "completed", "train", "predict"] {
        let l = failed(&stdout, route, "503");
        assert!(l.contains("see the health line"), "{l}");
    }
    // The signature is still checked before anything needs the database.
    assert!(line_of(&stdout, "verification").starts_with("PASS"));
}

#[test]
fn a_secret_that_is_not_replicates_fails_without_showing_either() {
    let dev = start_dev(&[]);
    let api = replicate_api(OTHER_SECRET);
    let (stdout, out) = doctor_at(&dev.base, &asking(&api, &[]), 1);
    failed(
        &stdout,
        "replicate-secret",
        "not Replicate's current signing secret",
    );
    // Everything else passes: the deployment does accept the secret given.
    assert_eq!(stdout.matches("FAIL").count(), 1, "{stdout}");
    assert!(line_of(&stdout, "unified").starts_with("PASS"));
    assert_eq!(api.seen().len(), 1);
    assert_nothing_secret(&out);

    // A refused token is named.
    let refusing = Fixed::start(
        "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json",
        r#"{"detail":"Invalid token."}"#,
    );
    let (stdout, _) = doctor_at(&dev.base, &asking(&refusing, &[]), 1);
    failed(&stdout, "replicate-secret", "refused REPLICATE_API_TOKEN");
}

#[test]
fn a_clock_far_off_fails() {
    // Answers like a function, but with a Date from 1994.
    let late = Fixed::start(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: r1\r\n\
         date: Sun, 06 Nov 1994 08:49:37 GMT",
        r#"{"status":"healthy"}"#,
    );
    let (stdout, _) = doctor_at(&late.base, &[], 1);
    let l = failed(&stdout, "clock", "behind this machine");
    assert!(l.contains("Fix:"), "{l}");
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &[],
        &["--url", "ftp://example.com"],
        &["--url", "not a url"],
        &[
            "--url",
            "https://example.com",
            "--route",
            "nosuch=https://x.example",
        ],
        &["--url", "https://example.com", "--route", "unified"],
        &["--url", "https://example.com", "--timeout", "soon"],
    ];
    for args in cases {
        let out = doctor(args, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("error"), "{args:?}");
    }
    // No secret: a usage error that says where it comes from.
    let out = Command::new(env!("CARGO_BIN_EXE_doctor"))
        .args(["--url", "https://example.com"])
        .env_remove("REPLICATE_WEBHOOK_SECRET")
        .output()
        .expect("run doctor");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("REPLICATE_WEBHOOK_SECRET"));
}

#[test]
fn per_route_urls_reach_each_function() {
    // Lambda gives each function its own URL; the path is ignored there, so a base URL with
    // no route under it is used here to show each --route is what doctor calls.
    let dev = start_dev(&[]);
    let mut args = vec![];
    let urls = routes().map(|name| format!("{name}={}/api/{name}", dev.base));
    for url in &urls {
        args.push("--route");
        args.push(url);
    }
    let out = doctor(&args, &[("CRON_SECRET", CRON_SECRET)]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(line_of(&stdout, "unified").starts_with("PASS"), "{stdout}");
    assert!(
        line_of(&stdout, "replicate-secret").starts_with("SKIP"),
        "{stdout}"
    );
}

#[test]
fn scripts_dev_without_a_replicate_token_only_warns_about_reconcile() {
    // As scripts/dev runs by default: CRON_SECRET set, no REPLICATE_API_TOKEN.
    let dev = start_dev(&[("REPLICATE_API_TOKEN", "")]);
    let (stdout, _) = doctor_at(&dev.base, &[("CRON_SECRET", CRON_SECRET)], 0);
    let l = line_of(&stdout, "reconcile");
    assert!(l.starts_with("WARN") && l.contains("503"), "{l}");
    assert!(l.contains("REPLICATE_API_TOKEN"), "{l}");
}
