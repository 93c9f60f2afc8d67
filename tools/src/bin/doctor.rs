//! `doctor`: checks a deployment from the outside, the way Replicate will reach it, and
//! writes nothing. One line per check, with a fix for each failure; see docs/doctor.md.
//!
//! Every route at its path under `--url` (or its own `--route NAME=URL`): answered over https
//! without a redirect or a login page, by the function itself (its `x-request-id`). Health is
//! `healthy`; a signed delivery for an id no job has is `ignored` on unified and completed
//! (the secret matches and the database answers) and train/predict answer 404 for random
//! UUIDs; a wrongly signed one gets 401; the deployment's clock is within the signature
//! tolerance; reconcile accepts `--cron-secret`; with `REPLICATE_API_TOKEN`, the secret given
//! is Replicate's current one.
//!
//! Exit status: 0 when every check passes (warnings and skipped checks do not count), 1
//! otherwise, 2 for usage errors. No secret, signature, token or body is ever printed.

use clap::Parser;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use shared::routes::table;
use shared::signature::{ID_HEADER, SIGNATURE_HEADER, SigningKey, TIMESTAMP_HEADER};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tools::{ReplicateApi, http_client, random_id, secret_key_part, signing_key, split_secrets};

/// The signature tolerance the functions use by default (`WEBHOOK_TOLERANCE_SECONDS`).
const TOLERANCE_SECONDS: i64 = shared::signature::DEFAULT_TOLERANCE_SECONDS as i64;
/// A clock this far off still verifies, but is worth fixing before it drifts further.
const CLOCK_WARN_SECONDS: i64 = 60;

// No `Debug`: it would show the secrets.
#[derive(Parser)]
#[command(
    name = "doctor",
    // What the environment gives is a secret: --help names the variable, never the value.
    mut_args(|arg| arg.hide_env_values(true)),
    about = "Check a deployment of the Replicate webhook functions from the outside (writes nothing)",
    after_help = "Exit status: 0 when every check passes (warnings do not count), 1 otherwise, \
                  2 for usage errors.\n\nExamples:\n  \
                  export REPLICATE_WEBHOOK_SECRET=whsec_...\n  \
                  doctor --url https://<app>.vercel.app\n  \
                  doctor --url http://127.0.0.1:3000          # scripts/dev\n  \
                  doctor --route unified=https://<id>.lambda-url.<region>.on.aws/ \\\n         \
                  --route health=https://<id2>.lambda-url.<region>.on.aws/ ..."
)]
struct Args {
    /// The deployment's base URL, e.g. https://<app>.vercel.app; each route is checked at its
    /// path under it
    #[arg(long, value_name = "URL", required_unless_present = "route")]
    url: Option<String>,

    /// One route's own URL, e.g. a Lambda Function URL (repeat for each route): NAME=URL with
    /// NAME one of train, predict, unified, completed, health, reconcile
    #[arg(long, value_name = "NAME=URL")]
    route: Vec<String>,

    /// The webhook signing secret (whsec_...); with several the first one signs
    #[arg(long, value_name = "SECRET", env = "REPLICATE_WEBHOOK_SECRET")]
    secret: Option<String>,

    /// The deployment's CRON_SECRET: checks that reconcile runs with it
    #[arg(long, value_name = "SECRET", env = "CRON_SECRET")]
    cron_secret: Option<String>,

    /// Seconds each request may take
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    timeout: u64,
}

/// The routes, by their names in the route table, in the order they are checked (their
/// paths are the table's).
const CHECK_ORDER: [&str; 6] = [
    "health",
    "unified",
    "completed",
    "train",
    "predict",
    "reconcile",
];

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Warn,
    Fail,
    Skip,
}

/// One printed line.
#[derive(Debug)]
struct Line {
    verdict: Verdict,
    check: String,
    detail: String,
    fix: Option<String>,
    ms: Option<u128>,
}

fn line(verdict: Verdict, check: &str, detail: impl Into<String>) -> Line {
    Line {
        verdict,
        check: check.to_owned(),
        detail: detail.into(),
        fix: None,
        ms: None,
    }
}

fn fail(check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Line {
    Line {
        fix: Some(fix.into()),
        ..line(Verdict::Fail, check, detail)
    }
}

impl Line {
    fn took(mut self, ms: u128) -> Line {
        self.ms = Some(ms);
        self
    }

    fn print(&self) {
        let tag = match self.verdict {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        };
        let mut text = format!("{tag}  {:<16} {}", self.check, self.detail);
        if let Some(ms) = self.ms {
            text.push_str(&format!(" ({ms} ms)"));
        }
        if let Some(fix) = &self.fix {
            text.push_str(&format!(". Fix: {fix}"));
        }
        println!("{text}");
    }
}

/// An answer as doctor looks at it. The body is read for JSON fields only, never printed.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
    ms: u128,
    /// Local time when the answer arrived, for the clock check.
    received_at: i64,
}

impl Answer {
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    fn field(&self, name: &str) -> Option<String> {
        self.json()
            .and_then(|v| v.get(name).and_then(Value::as_str).map(str::to_owned))
    }

    /// The function's own `error` message: the contract keeps secrets and bodies out of it.
    fn error(&self) -> String {
        self.field("error")
            .map(|e| e.chars().take(200).collect())
            .unwrap_or_else(|| "no error message".to_owned())
    }

    /// Answers from the functions carry an `x-request-id`; anything in front of them does not.
    fn is_from_a_function(&self) -> bool {
        self.headers.contains_key("x-request-id")
    }

    fn content_type(&self) -> String {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("no content type")
            .to_owned()
    }
}

/// What doctor checks against: the client, where each route is, how to sign.
struct Doctor {
    client: reqwest::Client,
    routes: Vec<(&'static str, Option<Url>)>,
    key: SigningKey,
    secrets: Vec<String>,
    cron_secret: Option<String>,
}

#[allow(clippy::print_stderr)] // a command line tool reports its errors on stderr
fn note(msg: &str) {
    eprintln!("{msg}");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let doctor = match Doctor::new(&args) {
        Ok(doctor) => doctor,
        Err(msg) => {
            note(&format!(
                "error: {msg}\n\nFor more information, try '--help'."
            ));
            return ExitCode::from(2);
        }
    };
    let lines = doctor.run().await;
    let failed = lines.iter().filter(|l| l.verdict == Verdict::Fail).count();
    let warned = lines.iter().filter(|l| l.verdict == Verdict::Warn).count();
    println!();
    if failed == 0 {
        println!("all checks passed ({warned} warnings)");
        ExitCode::SUCCESS
    } else {
        println!("{failed} checks failed, {warned} warnings");
        ExitCode::FAILURE
    }
}

impl Doctor {
    fn new(args: &Args) -> Result<Doctor, String> {
        let base = args.url.as_deref().map(base_url).transpose()?;
        let mut routes: Vec<(&'static str, Option<Url>)> = CHECK_ORDER
            .iter()
            .filter_map(|name| table::by_bin(name))
            .map(|route| (route.bin, base.as_ref().map(|b| at_path(b, route.path))))
            .collect();
        for given in &args.route {
            let (name, url) = given
                .split_once('=')
                .ok_or_else(|| format!("--route takes NAME=URL, not {given:?}"))?;
            let slot = routes
                .iter_mut()
                .find(|(n, _)| *n == name.trim())
                .ok_or_else(|| {
                    let names: Vec<&str> = table::ROUTES.iter().map(|r| r.bin).collect();
                    format!(
                        "--route: no route named {name:?}; the routes are {}",
                        names.join(", ")
                    )
                })?;
            slot.1 = Some(parse_url(url.trim(), "--route")?);
        }
        let (key, _) = signing_key(args.secret.as_deref())?;
        let secrets = split_secrets(args.secret.as_deref().unwrap_or_default())
            .into_iter()
            .map(str::to_owned)
            .collect();
        let client = http_client("doctor", Duration::from_secs(args.timeout.max(1)))?;
        Ok(Doctor {
            client,
            routes,
            key,
            secrets,
            cron_secret: args
                .cron_secret
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        })
    }

    fn url(&self, route: &str) -> Option<&Url> {
        self.routes
            .iter()
            .find(|(n, _)| *n == route)
            .and_then(|(_, u)| u.as_ref())
    }

    async fn run(&self) -> Vec<Line> {
        let probe_id = random_id();
        println!("doctor: checking {}", self.describe_targets());
        println!("  probe id {probe_id}: no job has it, so nothing is written");
        println!();
        let mut lines = Vec::new();
        let show = |l: Line, lines: &mut Vec<Line>| {
            l.print();
            lines.push(l);
        };

        for l in self.schemes() {
            show(l, &mut lines);
        }
        let mut date = None;
        let (health, answer) = self.health().await;
        if let Some(a) = &answer {
            date = date_skew(a);
        }
        show(health, &mut lines);

        for route in ["unified", "completed"] {
            let (l, answer) = self.ignored(route, &probe_id).await;
            if date.is_none() {
                date = answer.as_ref().and_then(date_skew);
            }
            show(l, &mut lines);
        }
        show(self.wrong_signature(&probe_id).await, &mut lines);
        for route in ["train", "predict"] {
            show(self.not_found(route, &probe_id).await, &mut lines);
        }
        show(clock(date), &mut lines);
        show(self.reconcile().await, &mut lines);
        show(self.replicate_secret().await, &mut lines);
        lines
    }

    /// Where the checks go, without any query string (it may hold a bypass token).
    fn describe_targets(&self) -> String {
        let mut hosts: Vec<String> = Vec::new();
        for (_, url) in &self.routes {
            if let Some(url) = url {
                let shown = format!("{}://{}", url.scheme(), host_port(url));
                if !hosts.contains(&shown) {
                    hosts.push(shown);
                }
            }
        }
        hosts.join(", ")
    }

    /// https everywhere; plain http only warns on this machine.
    fn schemes(&self) -> Vec<Line> {
        let mut plain: Vec<(&str, bool)> = Vec::new();
        for (name, url) in &self.routes {
            if let Some(url) = url.as_ref().filter(|u| u.scheme() == "http") {
                plain.push((name, is_local(url)));
            }
        }
        if plain.is_empty() {
            return vec![line(Verdict::Pass, "https", "every route is https")];
        }
        let given = self.routes.iter().filter(|(_, u)| u.is_some()).count();
        let names = |local: bool| {
            let names: Vec<&str> = plain
                .iter()
                .filter(|(_, l)| *l == local)
                .map(|(n, _)| *n)
                .collect();
            if names.len() == given {
                "every route".to_owned()
            } else {
                names.join(", ")
            }
        };
        let mut lines = Vec::new();
        let remote = names(false);
        if !remote.is_empty() {
            lines.push(fail(
                "https",
                format!("plain http for {remote}: Replicate delivers only to https URLs"),
                "use the https:// URL of the deployment (Vercel and Lambda Function URLs serve https)",
            ));
        }
        let local = names(true);
        if !local.is_empty() {
            lines.push(line(
                Verdict::Warn,
                "https",
                format!(
                    "plain http for {local} on this machine: fine for scripts/dev, but \
                     Replicate needs a public https URL (a tunnel) to reach it"
                ),
            ));
        }
        lines
    }

    /// Sends one request, timing it.
    async fn call(
        &self,
        method: Method,
        url: &Url,
        headers: Vec<(&'static str, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, String> {
        let mut request = self.client.request(method, url.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let started = Instant::now();
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                "no answer in time".to_owned()
            } else if e.is_connect() {
                format!("cannot connect to {}", host_port(url))
            } else {
                e.without_url().to_string()
            }
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("the answer was cut short: {}", e.without_url()))?;
        Ok(Answer {
            status,
            headers,
            body,
            ms: started.elapsed().as_millis(),
            received_at: tools::unix_now().unwrap_or_default(),
        })
    }

    /// A signed POST of `body` to `url`.
    async fn signed(&self, url: &Url, body: Vec<u8>, key: &SigningKey) -> Result<Answer, String> {
        let headers = signature_headers(key, &body);
        self.call(Method::POST, url, headers, Some(body)).await
    }

    async fn health(&self) -> (Line, Option<Answer>) {
        let Some(url) = self.url("health") else {
            return (skipped("health"), None);
        };
        let answer = match self.call(Method::GET, url, Vec::new(), None).await {
            Ok(a) => a,
            Err(why) => return (unreachable("health", url, &why), None),
        };
        if let Some(l) = front_door("health", url, &answer) {
            return (l, Some(answer));
        }
        let json = answer.json().unwrap_or_default();
        let status = json.get("status").and_then(Value::as_str).unwrap_or("");
        let l = if answer.status == StatusCode::OK && status == "healthy" {
            let part = |name: &str| {
                json.get(name)
                    .and_then(Value::as_str)
                    .map(|v| format!("{name} {v}"))
            };
            let parts: Vec<String> = ["webhook", "database", "storage", "email", "version"]
                .iter()
                .filter_map(|n| part(n))
                .collect();
            line(
                Verdict::Pass,
                "health",
                format!("200 healthy: {}", parts.join(", ")),
            )
        } else {
            let problems: Vec<String> = json
                .get("problems")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .filter_map(Value::as_str)
                        .map(|p| p.chars().take(200).collect())
                        .collect()
                })
                .unwrap_or_default();
            let what = if problems.is_empty() {
                answer.error()
            } else {
                problems.join("; ")
            };
            fail(
                "health",
                format!(
                    "{} {}: {what}",
                    answer.status.as_u16(),
                    if status.is_empty() {
                        "not healthy"
                    } else {
                        status
                    }
                ),
                "set each variable named in the deployment (then redeploy), and check that \
                 the database and the bucket named answer from where the functions run",
            )
        };
        (l.took(answer.ms), Some(answer))
    }

    /// unified/completed: a signed terminal delivery for an id no job has must be ignored.
    async fn ignored(&self, route: &'static str, probe_id: &str) -> (Line, Option<Answer>) {
        let Some(url) = self.url(route) else {
            return (skipped(route), None);
        };
        let answer = match self.signed(url, probe_body(probe_id), &self.key).await {
            Ok(a) => a,
            Err(why) => return (unreachable(route, url, &why), None),
        };
        let l = front_door(route, url, &answer).unwrap_or_else(|| {
            match (answer.status.as_u16(), answer.field("outcome").as_deref()) {
                (200, Some("ignored")) => line(
                    Verdict::Pass,
                    route,
                    "200 ignored for an unknown id: the secret matches and the database answers",
                ),
                (status, _) => signed_failure(route, status, &answer),
            }
        });
        (l.took(answer.ms), Some(answer))
    }

    /// A delivery whose signature does not match its body must get 401.
    async fn wrong_signature(&self, probe_id: &str) -> Line {
        let check = "verification";
        let Some(url) = self.url("unified") else {
            return skipped(check);
        };
        // Signed over other bytes than those sent: what a forger without the secret sends.
        let headers = signature_headers(&self.key, b"{}");
        let body = probe_body(probe_id);
        let answer = match self.call(Method::POST, url, headers, Some(body)).await {
            Ok(a) => a,
            Err(why) => return unreachable(check, url, &why),
        };
        let l = front_door(check, url, &answer).unwrap_or_else(|| match answer.status.as_u16() {
            401 => line(
                Verdict::Pass,
                check,
                "401 for a wrongly signed delivery on unified: signatures are checked",
            ),
            s if (200..300).contains(&s) => fail(
                check,
                format!("{s} for a wrongly signed delivery: signatures are not checked"),
                "deploy the functions from this repository; whatever answers at this URL \
                 accepts deliveries anyone could forge",
            ),
            s => fail(
                check,
                format!(
                    "{s} for a wrongly signed delivery, not 401: {}",
                    answer.error()
                ),
                "see the unified line first; a function answering this route should say 401",
            ),
        });
        l.took(answer.ms)
    }

    /// train/predict: a signed delivery for random UUIDs must get 404.
    async fn not_found(&self, route: &'static str, probe_id: &str) -> Line {
        let Some(url) = self.url(route) else {
            return skipped(route);
        };
        let job = if route == "train" {
            "model_id"
        } else {
            "prediction_id"
        };
        let mut url = url.clone();
        url.query_pairs_mut()
            .append_pair("user_id", &uuid::Uuid::new_v4().to_string())
            .append_pair(job, &uuid::Uuid::new_v4().to_string());
        let answer = match self.signed(&url, probe_body(probe_id), &self.key).await {
            Ok(a) => a,
            Err(why) => return unreachable(route, &url, &why),
        };
        let l = front_door(route, &url, &answer).unwrap_or_else(|| match answer.status.as_u16() {
            404 => line(
                Verdict::Pass,
                route,
                format!(
                    "404 for random user_id and {job}: the secret matches and the database answers"
                ),
            ),
            status => signed_failure(route, status, &answer),
        });
        l.took(answer.ms)
    }

    async fn reconcile(&self) -> Line {
        let check = "reconcile";
        let Some(url) = self.url(check) else {
            return skipped(check);
        };
        let headers = match &self.cron_secret {
            Some(secret) => vec![("authorization", format!("Bearer {secret}"))],
            None => Vec::new(),
        };
        let answer = match self.call(Method::GET, url, headers, None).await {
            Ok(a) => a,
            Err(why) => return unreachable(check, url, &why),
        };
        if let Some(l) = front_door(check, url, &answer) {
            return l.took(answer.ms);
        }
        let json = answer.json().unwrap_or_default();
        let l = match (answer.status.as_u16(), self.cron_secret.is_some()) {
            (200, true) => {
                let n = |k: &str| json.get(k).and_then(Value::as_u64).unwrap_or(0);
                line(
                    Verdict::Pass,
                    check,
                    format!(
                        "200 with --cron-secret: ran, checked {} jobs, reconciled {}",
                        n("checked"),
                        n("reconciled")
                    ),
                )
            }
            (401, false) => line(
                Verdict::Pass,
                check,
                "401 without a bearer: the route answers (give --cron-secret or CRON_SECRET \
                 to check that it runs)",
            ),
            (401, true) => fail(
                check,
                "401: the deployment refused the CRON_SECRET given",
                "pass the CRON_SECRET set in the deployment (Vercel sends it to its crons \
                 itself; on AWS it is the stack's CronSecret parameter)",
            ),
            (503, _) => {
                let fixed = fail(
                    check,
                    format!("503: {}", answer.error()),
                    "set CRON_SECRET and REPLICATE_API_TOKEN in the deployment and redeploy: \
                     without them no lost webhook is ever finished",
                );
                // scripts/dev runs without a Replicate token unless one is exported.
                if is_local(url) {
                    Line {
                        verdict: Verdict::Warn,
                        ..fixed
                    }
                } else {
                    fixed
                }
            }
            (200, false) => fail(
                check,
                "200 without a bearer token: anyone can run reconcile",
                "deploy the reconcile function from this repository with CRON_SECRET set",
            ),
            (status, _) => fail(
                check,
                format!("unexpected {status}: {}", answer.error()),
                "see the health line; reconcile answers 200 with the right bearer and 401 without",
            ),
        };
        l.took(answer.ms)
    }

    /// With REPLICATE_API_TOKEN: is the secret given Replicate's current signing secret?
    async fn replicate_secret(&self) -> Line {
        let check = "replicate-secret";
        let Some(api) = ReplicateApi::from_env() else {
            return line(
                Verdict::Skip,
                check,
                "set REPLICATE_API_TOKEN to compare the secret with Replicate's signing secret",
            );
        };
        let answer = match api.get(&self.client, "/v1/webhooks/default/secret").await {
            Ok(a) => a,
            Err(why) => {
                return fail(
                    check,
                    why,
                    "check the network, or REPLICATE_API_URL if you set it",
                );
            }
        };
        match answer.status.as_u16() {
            200 => {}
            401 | 403 => {
                return fail(
                    check,
                    format!(
                        "Replicate's API refused REPLICATE_API_TOKEN ({})",
                        answer.status.as_u16()
                    ),
                    "use an API token of the account that starts the jobs \
                     (replicate.com/account/api-tokens)",
                );
            }
            status => {
                return fail(
                    check,
                    format!("Replicate's API answered {status} for the signing secret"),
                    "try again later; check REPLICATE_API_URL if you set it",
                );
            }
        }
        let key = serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("key").and_then(Value::as_str).map(str::to_owned));
        let Some(key) = key else {
            return fail(
                check,
                "Replicate's API answer has no `key`",
                "check REPLICATE_API_URL if you set it",
            );
        };
        let replicate = secret_key_part(&key);
        match self
            .secrets
            .iter()
            .position(|s| secret_key_part(s) == replicate)
        {
            Some(0) => line(
                Verdict::Pass,
                check,
                "the secret given is Replicate's current signing secret",
            ),
            Some(n) => line(
                Verdict::Warn,
                check,
                format!(
                    "Replicate's signing secret is secret {} of those given, not the first \
                     that doctor signs with",
                    n + 1
                ),
            ),
            None => fail(
                check,
                "the secret given is not Replicate's current signing secret: the deployment \
                 would refuse Replicate's deliveries with 401",
                "set REPLICATE_WEBHOOK_SECRET (in the deployment and here) to the `key` of \
                 GET https://api.replicate.com/v1/webhooks/default/secret, then redeploy",
            ),
        }
    }
}

/// The body of a probe: a terminal status (so completed looks it up too) with nothing to
/// store, for an id no job has.
fn probe_body(id: &str) -> Vec<u8> {
    serde_json::json!({
        "id": id,
        "status": "canceled",
        "output": null,
        "error": null,
        "logs": "",
        "metrics": {},
        "source": "doctor",
    })
    .to_string()
    .into_bytes()
}

fn skipped(check: &str) -> Line {
    line(
        Verdict::Skip,
        check,
        "no URL for this route (give --url or --route NAME=URL)",
    )
}

fn unreachable(check: &str, url: &Url, why: &str) -> Line {
    fail(
        check,
        format!("no answer from {}{}: {why}", host_port(url), url.path()),
        "check the URL (the deployment's domain, or the Function URL for this route) and \
         that the deployment is up",
    )
}

/// The problems any answer can show before the function is reached: a redirect, a login
/// page, or something that is not the function.
fn front_door(check: &str, url: &Url, answer: &Answer) -> Option<Line> {
    let status = answer.status.as_u16();
    if answer.status.is_redirection() {
        let to = answer
            .headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| url.join(l).ok());
        let target = match &to {
            Some(to) if host_port(to) != host_port(url) => format!("to host {}", host_port(to)),
            Some(to) if to.scheme() != url.scheme() => format!("to {}://", to.scheme()),
            Some(_) => "to another path on the same host".to_owned(),
            None => "without a usable Location".to_owned(),
        };
        return Some(
            fail(
                check,
                format!("{status} redirect {target}: Replicate does not follow redirects"),
                "give Replicate (and --url) the address the redirect points to, e.g. the \
                 domain with or without www, https, no trailing slash",
            )
            .took(answer.ms),
        );
    }
    let html = answer.content_type().contains("text/html")
        || answer.body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<');
    if matches!(status, 401 | 403) && html {
        let l = if is_vercel(url, answer) {
            fail(
                check,
                format!(
                    "{status} login page from Vercel's Deployment Protection: Replicate \
                     cannot log in"
                ),
                "in the Vercel project, Settings > Deployment Protection: turn Vercel \
                 Authentication off for this environment (or use the production domain), or \
                 create a Protection Bypass for Automation secret and add \
                 ?x-vercel-protection-bypass=<secret> to the webhook URL (and to --url)",
            )
        } else {
            fail(
                check,
                format!(
                    "{status} HTML login page: something in front of the function asks for a login"
                ),
                "let unauthenticated requests through to these paths (the webhook signature \
                 is the authentication): turn off the login, SSO or access rule in front of \
                 the deployment for /api/",
            )
        };
        return Some(l.took(answer.ms));
    }
    if !answer.is_from_a_function() {
        return Some(
            fail(
                check,
                format!(
                    "{status} ({}) without x-request-id: not one of the functions",
                    answer.content_type()
                ),
                "check that this path is deployed: on Vercel, vercel.json's rewrites map the \
                 contract's paths; on Lambda each route has its own Function URL (--route \
                 NAME=URL)",
            )
            .took(answer.ms),
        );
    }
    None
}

/// What a signed probe's unexpected answer means.
fn signed_failure(check: &str, status: u16, answer: &Answer) -> Line {
    match status {
        401 => fail(
            check,
            format!("401: {}", answer.error()),
            "REPLICATE_WEBHOOK_SECRET in the deployment is not the secret given here: set both \
             to Replicate's signing secret (GET /v1/webhooks/default/secret) and redeploy; if \
             the clock line fails, fix the clock first",
        ),
        503 => fail(
            check,
            format!("503: {}", answer.error()),
            "the database, the bucket or a variable is unavailable: see the health line",
        ),
        405 => fail(
            check,
            "405: this route does not take POST here",
            "check that the URL is this route's (the contract's path, or its own Function URL)",
        ),
        _ => fail(
            check,
            format!("unexpected {status}: {}", answer.error()),
            "see the health line; deploy the functions from this repository",
        ),
    }
}

/// The deployment's clock minus this machine's, from the answer's `Date` header.
fn date_skew(answer: &Answer) -> Option<i64> {
    let date = answer.headers.get(header::DATE)?.to_str().ok()?;
    let format = time::format_description::parse_borrowed::<1>(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT",
    )
    .ok()?;
    let when = time::PrimitiveDateTime::parse(date.trim(), &format).ok()?;
    Some(when.assume_utc().unix_timestamp() - answer.received_at)
}

fn clock(skew: Option<i64>) -> Line {
    let check = "clock";
    let Some(skew) = skew else {
        return line(
            Verdict::Warn,
            check,
            "no answer had a usable Date header; cannot compare clocks",
        );
    };
    let how = match skew {
        0 => "the same as this machine's".to_owned(),
        s if s > 0 => format!("{s} s ahead of this machine"),
        s => format!("{} s behind this machine", -s),
    };
    let detail = format!("the deployment's Date is {how} (signatures allow {TOLERANCE_SECONDS} s)");
    let fix = "sync the clock that is off (this machine: enable NTP, e.g. `timedatectl \
               set-ntp true`); a signed delivery more than 300 s off is refused with 401";
    match skew.abs() {
        s if s > TOLERANCE_SECONDS => fail(check, detail, fix),
        s if s > CLOCK_WARN_SECONDS => Line {
            fix: Some(fix.to_owned()),
            ..line(Verdict::Warn, check, detail)
        },
        _ => line(Verdict::Pass, check, detail),
    }
}

fn is_vercel(url: &Url, answer: &Answer) -> bool {
    let host = url.host_str().unwrap_or_default();
    let cookie_says = answer
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|c| String::from_utf8_lossy(c.as_bytes()).contains("_vercel"));
    host.ends_with(".vercel.app")
        || answer.headers.contains_key("x-vercel-id")
        || answer
            .headers
            .get(header::SERVER)
            .is_some_and(|s| s.as_bytes().eq_ignore_ascii_case(b"vercel"))
        || cookie_says
}

fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

fn is_local(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_private(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn parse_url(url: &str, flag: &str) -> Result<Url, String> {
    // The error names the flag, not the value: a URL may carry a bypass token.
    let parsed = Url::parse(url).map_err(|e| format!("{flag} is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{flag} must start with https:// (or http://)"));
    }
    Ok(parsed)
}

/// The base URL, with a route's own path removed if one was given (people paste the webhook
/// URL); its query (e.g. a Vercel bypass token) is kept for every route.
fn base_url(url: &str) -> Result<Url, String> {
    let mut base = parse_url(url, "--url")?;
    let path = base.path().trim_end_matches('/').to_owned();
    let mut trimmed = path.as_str();
    for route in &table::ROUTES {
        if let Some(rest) = path.strip_suffix(route.path) {
            trimmed = rest;
            break;
        }
    }
    let trimmed = trimmed.to_owned();
    base.set_path(&trimmed);
    Ok(base)
}

/// Fresh Standard Webhooks headers for a delivery of `body` signed with `key`, as Replicate
/// sends them.
fn signature_headers(key: &SigningKey, body: &[u8]) -> Vec<(&'static str, String)> {
    let webhook_id = format!("msg_doctor_{}", random_id());
    let timestamp = tools::unix_now().unwrap_or_default();
    let signature = key.sign(&webhook_id, timestamp, body);
    vec![
        (ID_HEADER, webhook_id),
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (SIGNATURE_HEADER, signature),
    ]
}

/// `base` with the route's `path` under its own.
fn at_path(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn arguments_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn every_route_of_the_table_is_checked_once() {
        let mut checked = CHECK_ORDER.to_vec();
        checked.sort_unstable();
        let mut routes: Vec<&str> = table::ROUTES.iter().map(|r| r.bin).collect();
        routes.sort_unstable();
        assert_eq!(checked, routes);
    }

    #[test]
    fn routes_go_under_the_base_and_keep_its_query() {
        let base = base_url("https://app.example.com/?x-vercel-protection-bypass=t")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            at_path(&base, "/api/health").as_str(),
            "https://app.example.com/api/health?x-vercel-protection-bypass=t"
        );
        let pasted = base_url("https://app.example.com/api/webhooks/replicate/")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            at_path(&pasted, "/api/health").as_str(),
            "https://app.example.com/api/health"
        );
        let prefixed = base_url("https://example.com/hooks").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            at_path(&prefixed, "/api/cron/reconcile").as_str(),
            "https://example.com/hooks/api/cron/reconcile"
        );
        assert!(base_url("ftp://example.com").is_err());
        assert!(base_url("not a url").is_err());
    }

    #[test]
    fn clock_warns_past_a_minute_and_fails_past_the_tolerance() {
        assert_eq!(clock(Some(3)).verdict, Verdict::Pass);
        assert_eq!(clock(Some(-90)).verdict, Verdict::Warn);
        assert_eq!(clock(Some(301)).verdict, Verdict::Fail);
        assert_eq!(clock(None).verdict, Verdict::Warn);
    }

    #[test]
    fn local_hosts_are_recognised() {
        for (url, local) in [
            ("http://127.0.0.1:3000", true),
            ("http://localhost:3000", true),
            ("http://[::1]:3000", true),
            ("http://app.example.com", false),
        ] {
            let url = Url::parse(url).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(is_local(&url), local, "{url}");
        }
    }
}
