//! The `send` binary against a one-request HTTP server in the test: what arrives must verify
//! with the project's own verifier and reproduce the Standard Webhooks vectors byte-for-byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{HeaderMap, HeaderName, HeaderValue};
use shared::signature::Verifier;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");

/// One request as the server read it.
#[derive(Debug)]
struct Captured {
    method: String,
    target: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Serves exactly one request with `status` and `answer`, returning what it received.
fn serve_once(status: u16, answer: &'static str) -> (String, JoinHandle<Captured>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("request line");
        let mut parts = line.split_whitespace();
        let method = parts.next().expect("method").to_owned();
        let target = parts.next().expect("target").to_owned();
        let mut headers = HeaderMap::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header line");
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header");
            headers.append(
                HeaderName::from_bytes(name.trim().as_bytes()).expect("name"),
                HeaderValue::from_str(value.trim()).expect("value"),
            );
        }
        // A GET (the stand-in for Replicate's API) has no body.
        let length: usize = headers
            .get("content-length")
            .map_or("0", |v| v.to_str().expect("ascii"))
            .parse()
            .expect("number");
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
             x-request-id: req-test-123\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        )
        .expect("answer");
        Captured {
            method,
            target,
            headers,
            body,
        }
    });
    (base, handle)
}

/// Runs `send` with `args`, without any secret from the environment.
fn send(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_send"))
        .args(args)
        .env_remove("REPLICATE_WEBHOOK_SECRET")
        .output()
        .expect("run send")
}

/// `--url URL --secret SECRET`, then `rest`: the arguments of an ordinary run.
fn signed<'a>(url: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--url", url, "--secret", SECRET];
    args.extend_from_slice(rest);
    args
}

/// Runs `send` with the test secret, `rest` and the URL of `path` on a server that answers
/// once with `status` and `answer`: its output and what the server received.
fn send_once(path: &str, status: u16, answer: &'static str, rest: &[&str]) -> (Output, Captured) {
    let (base, server) = serve_once(status, answer);
    let url = format!("{base}{path}");
    let out = send(&signed(&url, rest));
    (out, server.join().expect("server"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("i64")
}

/// A URL where nothing listens: a run that gets past its arguments fails to connect (exit 1).
fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    format!(
        "http://{}/api/webhooks/replicate",
        listener.local_addr().expect("addr")
    )
}

#[test]
fn the_signature_verifies_with_the_projects_verifier() {
    let (base, server) = serve_once(200, r#"{"ok":true,"outcome":"ignored"}"#);
    let url = format!("{base}/api/webhooks/replicate");
    // The secret from the environment, as with scripts/dev.
    let out = Command::new(env!("CARGO_BIN_EXE_send"))
        .args(["--url", &url, "--sample", "prediction.failed"])
        .args(["--id", "abc123def456ghi789jkl012mn"])
        .env("REPLICATE_WEBHOOK_SECRET", SECRET)
        .output()
        .expect("run send");
    let got = server.join().expect("server");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");

    assert_eq!(got.method, "POST");
    assert_eq!(got.target, "/api/webhooks/replicate");
    assert_eq!(got.headers["content-type"], "application/json");
    let webhook_id = got.headers["webhook-id"].to_str().expect("ascii");
    assert!(webhook_id.starts_with("msg_"), "{webhook_id}");
    let timestamp: i64 = got.headers["webhook-timestamp"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    assert!((timestamp - now()).abs() < 60, "{timestamp}");
    Verifier::from_secrets(SECRET, 300)
        .expect("secret")
        .verify(&got.headers, &got.body, now())
        .expect("send's signature verifies");
    // The same bytes signed with another secret do not.
    assert!(
        Verifier::from_secrets("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", 300)
            .expect("secret")
            .verify(&got.headers, &got.body, now())
            .is_err()
    );

    let body: serde_json::Value = serde_json::from_slice(&got.body).expect("json");
    assert_eq!(body["id"], "abc123def456ghi789jkl012mn");
    assert_eq!(body["status"], "failed");

    assert!(stdout.contains("HTTP 200"), "{stdout}");
    assert!(stdout.contains("x-request-id: req-test-123"), "{stdout}");
    assert!(
        stdout.contains(r#"{"ok":true,"outcome":"ignored"}"#),
        "{stdout}"
    );
    assert!(stdout.contains(webhook_id), "{stdout}");
    let key = SECRET.trim_start_matches("whsec_");
    assert!(!stdout.contains(key) && !stderr.contains(key));
}

#[test]
fn vector_a_is_sent_byte_for_byte() {
    let dir = std::env::temp_dir().join(format!("send-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("body.json");
    std::fs::write(&file, br#"{"test": 2432232314}"#).expect("write");

    let (out, got) = send_once(
        "/api/webhooks/replicate",
        200,
        "{}",
        &[
            "--webhook-id",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "--timestamp",
            "1614265330",
            "--file",
            file.to_str().expect("utf-8 path"),
        ],
    );
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    assert_eq!(
        got.headers["webhook-signature"],
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    assert_eq!(got.headers["webhook-id"], "msg_p5jXN8AQM9LWM0D4loKWxJek");
    assert_eq!(got.headers["webhook-timestamp"], "1614265330");
    assert_eq!(got.body, br#"{"test": 2432232314}"#);
    Verifier::from_secrets(SECRET, 300)
        .expect("secret")
        .verify(&got.headers, &got.body, 1_614_265_330)
        .expect("vector A verifies");
}

#[test]
fn a_401_answer_exits_non_zero_and_is_printed() {
    let (out, _) = send_once(
        "/api/webhooks/replicate",
        401,
        r#"{"error":"no valid webhook signature"}"#,
        &["--sample", "training.succeeded"],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("HTTP 401"), "{stdout}");
    assert!(stdout.contains("x-request-id: req-test-123"), "{stdout}");
    assert!(stdout.contains("no valid webhook signature"), "{stdout}");
}

#[test]
fn every_sample_is_sent_as_its_fixture_with_the_id_replaced() {
    let listed = send(&["--list"]);
    assert_eq!(listed.status.code(), Some(0));
    let names: Vec<String> = text(&listed.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();

    // Every fixture is a sample, and every sample a fixture.
    let mut fixtures: Vec<String> = std::fs::read_dir(FIXTURES)
        .expect("fixtures")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .filter(|n| n.starts_with("prediction_") || n.starts_with("training_"))
        .collect();
    fixtures.sort();
    let mut as_files: Vec<String> = names.iter().map(|n| n.replace('.', "_")).collect();
    as_files.sort();
    assert_eq!(as_files, fixtures);
    assert_eq!(names.len(), 16);

    for (i, name) in names.iter().enumerate() {
        let id = format!("sampleid{i:02}xxxxxxxxxxxxxxxx");
        let (out, got) = send_once(
            "/api/webhooks/replicate",
            200,
            "{}",
            &["--sample", name, "--id", &id],
        );
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));

        let fixture =
            std::fs::read_to_string(format!("{FIXTURES}/{}.json", name.replace('.', "_")))
                .expect("fixture");
        assert_eq!(
            text(&got.body),
            fixture.replace("REPLACED", &id),
            "{name} is sent as its fixture, byte-for-byte"
        );
        let body: serde_json::Value = serde_json::from_slice(&got.body).expect(name);
        assert_eq!(body["id"], id.as_str(), "{name}");
        assert!(!text(&got.body).contains("REPLACED"), "{name}");
        let status = name.split('.').nth(1).expect("status");
        assert_eq!(body["status"], status, "{name}");
        Verifier::from_secrets(SECRET, 300)
            .expect("secret")
            .verify(&got.headers, &got.body, now())
            .expect(name);
    }
}

#[test]
fn without_id_a_random_replicate_like_id_is_used() {
    let (out, got) = send_once(
        "/api/replicate/webhooks/predict",
        200,
        "{}",
        &[
            "--sample",
            "prediction.succeeded.text",
            "--query",
            "user_id=u1&prediction_id=p1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        got.target,
        "/api/replicate/webhooks/predict?user_id=u1&prediction_id=p1"
    );
    let body: serde_json::Value = serde_json::from_slice(&got.body).expect("json");
    let id = body["id"].as_str().expect("id");
    assert_eq!(id.len(), 26, "{id}");
    assert!(
        id.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{id}"
    );
    assert_eq!(
        body["urls"]["get"],
        format!("https://api.replicate.com/v1/predictions/{id}").as_str()
    );
}

#[test]
fn usage_errors_exit_2_without_showing_the_secret() {
    let url = closed_url();
    let cases: &[&[&str]] = &[
        &["--sample", "prediction.failed"],
        &signed(&url, &[]),
        &["--url", &url, "--sample", "prediction.failed"],
        &signed(&url, &["--sample", "prediction.nope"]),
        &signed(&url, &["--sample", "prediction.succeeded"]),
        &signed(&url, &["--sample", "prediction.failed", "--file", "x.json"]),
        &signed(&url, &["--file", "x.json", "--id", "abc"]),
        &signed(&url, &["--file", "/no/such/file.json"]),
        &signed(&url, &["--sample", "prediction.failed", "--id", "a\"b"]),
        &signed(
            &url,
            &["--sample", "prediction.failed", "--timestamp", "soon"],
        ),
        &signed(
            &url,
            &["--sample", "prediction.failed", "--webhook-id", "a b"],
        ),
        &[
            "--url",
            "ftp://example.com/x",
            "--secret",
            SECRET,
            "--sample",
            "prediction.failed",
        ],
        &[
            "--url",
            &url,
            "--secret",
            "whsec_not-base64-Zm9vYmFy!!",
            "--sample",
            "prediction.failed",
        ],
        &[
            "--url",
            &url,
            "--secret",
            "whsec_",
            "--sample",
            "prediction.failed",
        ],
    ];
    for args in cases {
        let out = send(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
        for secret in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "not-base64-Zm9vYmFy"] {
            assert!(!stderr.contains(secret), "{args:?}: {stderr}");
            assert!(!text(&out.stdout).contains(secret), "{args:?}");
        }
    }
    // Help names the variable, never its value.
    let out = Command::new(env!("CARGO_BIN_EXE_send"))
        .arg("--help")
        .env("REPLICATE_WEBHOOK_SECRET", SECRET)
        .output()
        .expect("run send");
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("REPLICATE_WEBHOOK_SECRET"));
    assert!(!text(&out.stdout).contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    // The messages say what to do.
    let out = send(&["--url", &url, "--sample", "prediction.failed"]);
    assert!(text(&out.stderr).contains("REPLICATE_WEBHOOK_SECRET"));
    let out = send(&signed(&url, &["--sample", "prediction.succeeded"]));
    assert!(text(&out.stderr).contains("prediction.succeeded.text"));
}

#[test]
fn no_answer_exits_1() {
    let out = send(&signed(&closed_url(), &["--sample", "prediction.failed"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no answer from"));
}

#[test]
fn list_works_with_the_secret_in_the_environment() {
    // What the README says to do: export the secret, then look at the samples.
    let out = Command::new(env!("CARGO_BIN_EXE_send"))
        .arg("--list")
        .env("REPLICATE_WEBHOOK_SECRET", SECRET)
        .output()
        .expect("run send");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("prediction.failed"));
    assert!(text(&out.stdout).contains("training.succeeded"));
    // --list still refuses what it would ignore.
    let out = Command::new(env!("CARGO_BIN_EXE_send"))
        .args(["--list", "--sample", "prediction.failed"])
        .env("REPLICATE_WEBHOOK_SECRET", SECRET)
        .output()
        .expect("run send");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
}

/// A prediction as Replicate's API might format it: spacing and key order a parser would not
/// keep, and characters a re-serialiser would escape differently.
const API_PREDICTION: &str = "{\"id\": \"realjob0000000000000000001\",  \"status\":\"succeeded\",\n \
     \"output\": \"caf\\u00e9 \u{2014} ok\", \"metrics\": {\"predict_time\": 1.50}}";

#[test]
fn from_replicate_sends_the_api_answer_byte_for_byte() {
    for (training, collection) in [(false, "predictions"), (true, "trainings")] {
        let (api, api_server) = serve_once(200, API_PREDICTION);
        let (base, server) = serve_once(200, r#"{"ok":true,"outcome":"applied"}"#);
        let url = format!("{base}/api/webhooks/replicate");
        let mut args = signed(&url, &["--from-replicate", "realjob0000000000000000001"]);
        if training {
            args.push("--training");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_send"))
            .args(&args)
            .env_remove("REPLICATE_WEBHOOK_SECRET")
            .env("REPLICATE_API_TOKEN", "r8_test-token-not-to-be-shown")
            .env("REPLICATE_API_URL", format!("{api}/"))
            .output()
            .expect("run send");
        let asked = api_server.join().expect("api stand-in");
        let got = server.join().expect("server");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

        assert_eq!(asked.method, "GET");
        assert_eq!(
            asked.target,
            format!("/v1/{collection}/realjob0000000000000000001")
        );
        assert_eq!(
            asked.headers["authorization"],
            "Bearer r8_test-token-not-to-be-shown"
        );
        assert_eq!(got.method, "POST");
        assert_eq!(
            got.body,
            API_PREDICTION.as_bytes(),
            "sent as Replicate returned it"
        );
        Verifier::from_secrets(SECRET, 300)
            .expect("secret")
            .verify(&got.headers, &got.body, now())
            .expect("signed like a real delivery");
        let stdout = text(&out.stdout);
        assert!(stdout.contains("HTTP 200"), "{stdout}");
        assert!(stdout.contains("realjob0000000000000000001"), "{stdout}");
        for shown in [stdout, text(&out.stderr)] {
            assert!(!shown.contains("r8_test-token"), "{shown}");
            assert!(
                !shown.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
                "{shown}"
            );
        }
    }
}

#[test]
fn from_replicate_reports_what_the_api_refused() {
    // Replicate does not know the id: exit 1, nothing sent, a hint about --training.
    let (api, api_server) = serve_once(404, r#"{"detail":"Not found."}"#);
    // A listener kept open as the target: a delivery that went out would wait in its queue.
    let target = TcpListener::bind("127.0.0.1:0").expect("bind");
    target.set_nonblocking(true).expect("nonblocking");
    let url = format!(
        "http://{}/api/webhooks/replicate",
        target.local_addr().expect("addr")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_send"))
        .args(signed(&url, &["--from-replicate", "nosuchjob"]))
        .env_remove("REPLICATE_WEBHOOK_SECRET")
        .env("REPLICATE_API_TOKEN", "r8_test-token-not-to-be-shown")
        .env("REPLICATE_API_URL", &api)
        .output()
        .expect("run send");
    api_server.join().expect("api stand-in");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("404") && stderr.contains("--training"),
        "{stderr}"
    );
    assert!(!stderr.contains("r8_test-token"), "{stderr}");
    assert_eq!(
        target.accept().map(drop).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "nothing was sent"
    );

    // No token: a usage error that names the variable.
    let out = Command::new(env!("CARGO_BIN_EXE_send"))
        .args(signed(&url, &["--from-replicate", "abc"]))
        .env_remove("REPLICATE_WEBHOOK_SECRET")
        .env_remove("REPLICATE_API_TOKEN")
        .output()
        .expect("run send");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("REPLICATE_API_TOKEN"));

    // Only one body, and --training only with --from-replicate.
    for args in [
        signed(
            &url,
            &["--from-replicate", "abc", "--sample", "prediction.failed"],
        ),
        signed(&url, &["--from-replicate", "abc", "--id", "def"]),
        signed(&url, &["--sample", "prediction.failed", "--training"]),
        signed(&url, &["--from-replicate", "a/b"]),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_send"))
            .args(&args)
            .env_remove("REPLICATE_WEBHOOK_SECRET")
            .env("REPLICATE_API_TOKEN", "r8_test-token-not-to-be-shown")
            .env("REPLICATE_API_URL", "http://127.0.0.1:1")
            .output()
            .expect("run send");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
