//! `send`: signs a Replicate webhook delivery with a secret exactly as Replicate does
//! (Standard Webhooks v1) and POSTs it to a URL, the way `stripe trigger` does; then prints
//! the answer's status, its `x-request-id` and its body.
//!
//! The body is a built-in sample (the fixtures in `tests/fixtures/`, with their placeholder id
//! replaced), a file, or a real job as Replicate's API returns it (`--from-replicate`), sent
//! byte-for-byte as it is: never re-serialised, since the signature covers the exact bytes.
//! Signing goes through `shared::signature::SigningKey`, the same code the functions verify
//! with. Redirects are not followed, as Replicate does not follow them.
//!
//! Exit status: 0 when the answer is 2xx, 1 for any other answer or when the URL (or
//! Replicate's API) cannot be reached, 2 for usage errors. The secret and the token are never
//! printed.

use clap::{ArgGroup, Parser};
use shared::signature::{ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tools::{ReplicateApi, http_client, is_replicate_id, random_id, signing_key, unix_now};

/// The id the fixtures carry in `id` and in their `urls`; replaced before sending.
const PLACEHOLDER: &str = "REPLACED";

/// A built-in delivery body.
struct Sample {
    name: &'static str,
    about: &'static str,
    body: &'static str,
}

macro_rules! sample {
    ($name:literal, $file:literal, $about:literal) => {
        Sample {
            name: $name,
            about: $about,
            body: include_str!(concat!("../../../tests/fixtures/", $file, ".json")),
        }
    };
}

/// Every status of predictions and trainings, from the same fixtures the tests use.
const SAMPLES: &[Sample] = &[
    sample!(
        "prediction.starting",
        "prediction_starting",
        "image model, queued"
    ),
    sample!(
        "prediction.processing",
        "prediction_processing",
        "image model, running, logs so far"
    ),
    sample!(
        "prediction.processing.tokens",
        "prediction_processing_tokens",
        "language model, tokens so far"
    ),
    sample!(
        "prediction.succeeded.url_list",
        "prediction_succeeded_url_list",
        "image model, a list of file URLs (copied to S3)"
    ),
    sample!(
        "prediction.succeeded.url",
        "prediction_succeeded_url",
        "upscaler, one file URL (copied to S3)"
    ),
    sample!(
        "prediction.succeeded.text",
        "prediction_succeeded_text",
        "language model, a string output, no files"
    ),
    sample!(
        "prediction.succeeded.tokens",
        "prediction_succeeded_tokens",
        "language model, a list of tokens, no files"
    ),
    sample!(
        "prediction.failed",
        "prediction_failed",
        "failed with an error (refunds)"
    ),
    sample!(
        "prediction.canceled",
        "prediction_canceled",
        "canceled (refunds)"
    ),
    sample!(
        "prediction.aborted",
        "prediction_aborted",
        "aborted before starting (refunds)"
    ),
    sample!(
        "training.starting",
        "training_starting",
        "LoRA training, queued"
    ),
    sample!(
        "training.processing",
        "training_processing",
        "LoRA training, running"
    ),
    sample!(
        "training.succeeded",
        "training_succeeded",
        "LoRA training, version and weights URL (copied to S3)"
    ),
    sample!(
        "training.failed",
        "training_failed",
        "LoRA training failed (refunds)"
    ),
    sample!(
        "training.canceled",
        "training_canceled",
        "LoRA training canceled (refunds)"
    ),
    sample!(
        "training.aborted",
        "training_aborted",
        "LoRA training aborted (refunds)"
    ),
];

// No `Debug`: it would show the secret.
#[derive(Parser)]
#[command(
    name = "send",
    // What the environment gives is a secret: --help names the variable, never the value.
    mut_args(|arg| arg.hide_env_values(true)),
    about = "Sign a Replicate webhook delivery (Standard Webhooks v1) and POST it to a URL",
    group(ArgGroup::new("body").args(["sample", "file", "from_replicate"])),
    after_help = "Exit status: 0 for a 2xx answer, 1 for any other answer or no answer, \
                  2 for usage errors.\n\nExample (the local stack of scripts/dev):\n  \
                  export REPLICATE_WEBHOOK_SECRET=\"$(cat .stack/webhook-secret)\"\n  \
                  send --url http://127.0.0.1:3000/api/webhooks/replicate --sample prediction.failed\n\n\
                  Replaying a real job (REPLICATE_API_TOKEN set):\n  \
                  send --url http://127.0.0.1:3000/api/webhooks/replicate --from-replicate <prediction id>"
)]
struct Args {
    /// Where to POST, e.g. http://127.0.0.1:3000/api/webhooks/replicate
    #[arg(long, value_name = "URL", required_unless_present = "list")]
    url: Option<String>,

    /// Signing secret (whsec_...). With several (spaces or commas, as during a rotation) the
    /// first one signs.
    #[arg(long, value_name = "SECRET", env = "REPLICATE_WEBHOOK_SECRET")]
    secret: Option<String>,

    /// Built-in sample to send (--list shows them); a unique prefix such as
    /// `training.succeeded` or `prediction.succeeded.text` is enough
    #[arg(long, value_name = "NAME")]
    sample: Option<String>,

    /// File whose exact bytes are the body (`-` for stdin)
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,

    /// Fetch this prediction from Replicate's API (REPLICATE_API_TOKEN; REPLICATE_API_URL
    /// overrides the base) and send its JSON exactly as Replicate returned it
    #[arg(long, value_name = "REPLICATE_ID")]
    from_replicate: Option<String>,

    /// With --from-replicate: the id is a training's, not a prediction's
    #[arg(long, requires = "from_replicate", conflicts_with_all = ["sample", "file"])]
    training: bool,

    /// Replicate id put in the sample's `id` and `urls` (default: a random 26-character id)
    #[arg(long, value_name = "REPLICATE_ID", conflicts_with_all = ["file", "from_replicate"])]
    id: Option<String>,

    /// webhook-id header (default: msg_ and a random id); resend one to test deduplication
    #[arg(long, value_name = "ID")]
    webhook_id: Option<String>,

    /// webhook-timestamp header, Unix seconds (default: now)
    #[arg(long, value_name = "UNIX", allow_negative_numbers = true)]
    timestamp: Option<i64>,

    /// Query string added to the URL, e.g. 'user_id=U&prediction_id=P'
    #[arg(long, value_name = "QUERY")]
    query: Option<String>,

    /// Seconds to wait for the answer (storing large outputs can take minutes)
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    timeout: u64,

    /// Print the built-in samples and exit
    // Not `exclusive`: clap counts a value from the environment as given, so an exported
    // REPLICATE_WEBHOOK_SECRET would make `--list` an error.
    #[arg(long, conflicts_with_all = [
        "url", "sample", "file", "from_replicate", "training", "id", "webhook_id", "timestamp",
        "query",
    ])]
    list: bool,
}

/// Why `send` stopped without an answer to report.
#[derive(Debug)]
enum Failure {
    /// The invocation is wrong (exit 2).
    Usage(String),
    /// The request could not be made or answered (exit 1).
    Send(String),
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Usage(msg.into())
}

/// Messages for the person at the terminal; the answer itself goes to stdout.
#[allow(clippy::print_stderr)] // a command line tool reports its errors on stderr
fn note(msg: &str) {
    eprintln!("{msg}");
}

/// What is about to be sent.
#[derive(Debug)]
struct Delivery {
    url: reqwest::Url,
    body: Vec<u8>,
    describe: String,
    webhook_id: String,
    timestamp: i64,
    signature: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // --help and clap's own usage errors print and exit here (status 2 for errors).
    let args = Args::parse();
    if args.list {
        return list();
    }
    match run(args).await {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => {
            note(&format!(
                "error: {msg}\n\nFor more information, try '--help'."
            ));
            ExitCode::from(2)
        }
        Err(Failure::Send(msg)) => {
            note(&format!("error: {msg}"));
            ExitCode::FAILURE
        }
    }
}

fn list() -> ExitCode {
    let width = SAMPLES.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for s in SAMPLES {
        if writeln!(out, "{:width$}  {}", s.name, s.about).is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

async fn run(args: Args) -> Result<ExitCode, Failure> {
    let client = http_client("send", Duration::from_secs(args.timeout)).map_err(Failure::Send)?;
    let delivery = prepare(&args, &client).await?;

    println!("POST {}", delivery.url);
    println!(
        "  body: {}, {} bytes",
        delivery.describe,
        delivery.body.len()
    );
    println!("  {ID_HEADER}: {}", delivery.webhook_id);
    println!("  {TIMESTAMP_HEADER}: {}", delivery.timestamp);

    let response = client
        .post(delivery.url.clone())
        .header(ID_HEADER, &delivery.webhook_id)
        .header(TIMESTAMP_HEADER, delivery.timestamp.to_string())
        .header(SIGNATURE_HEADER, &delivery.signature)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(delivery.body)
        .send()
        .await
        .map_err(|e| {
            Failure::Send(format!(
                "no answer from {}: {}",
                delivery.url,
                e.without_url()
            ))
        })?;

    let status = response.status();
    let request_id = response
        .headers()
        .get("x-request-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body = response
        .bytes()
        .await
        .map_err(|e| Failure::Send(format!("answer {status} cut short: {e}")))?;

    println!("HTTP {status}");
    println!(
        "x-request-id: {}",
        request_id.as_deref().unwrap_or("(none)")
    );
    if let Some(location) = location.filter(|_| status.is_redirection()) {
        println!("location: {location}");
        note("note: Replicate does not follow redirects; use the URL it points to");
    }
    let text = String::from_utf8_lossy(&body);
    if !text.is_empty() {
        println!("{}", text.trim_end());
    }
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Checks the arguments and builds the signed delivery.
async fn prepare(args: &Args, client: &reqwest::Client) -> Result<Delivery, Failure> {
    let url = target(
        args.url.as_deref().unwrap_or_default(),
        args.query.as_deref(),
    )?;
    let (key, secrets) = signing_key(args.secret.as_deref()).map_err(Failure::Usage)?;
    if secrets > 1 {
        note("note: several secrets given; signing with the first");
    }

    let (body, describe) = match (&args.sample, &args.file, &args.from_replicate) {
        (Some(name), _, _) => {
            let sample = find_sample(name)?;
            let id = match &args.id {
                Some(id) => check_replicate_id(id)?,
                None => random_id(),
            };
            let body = sample.body.replace(PLACEHOLDER, &id).into_bytes();
            (body, format!("sample {}, id {id}", sample.name))
        }
        (None, Some(path), _) if path.as_os_str() == "-" => (read_file(path)?, "stdin".to_owned()),
        (None, Some(path), _) => (read_file(path)?, format!("file {}", path.display())),
        (None, None, Some(id)) => from_replicate(client, id, args.training).await?,
        (None, None, None) => {
            return Err(usage(
                "give --sample NAME, --file PATH or --from-replicate ID (--list shows the samples)",
            ));
        }
    };

    let webhook_id = match &args.webhook_id {
        Some(id) if is_header_token(id) => id.clone(),
        Some(_) => {
            return Err(usage(
                "--webhook-id must be visible ASCII without spaces or commas",
            ));
        }
        None => format!("msg_{}", random_id()),
    };
    let timestamp = match args.timestamp {
        Some(t) => t,
        None => unix_now().ok_or_else(|| usage("the clock is before 1970: pass --timestamp"))?,
    };
    let signature = key.sign(&webhook_id, timestamp, &body);
    Ok(Delivery {
        url,
        body,
        describe,
        webhook_id,
        timestamp,
        signature,
    })
}

/// The job as Replicate's API returns it (`GET /v1/predictions/{id}` or `/v1/trainings/{id}`),
/// byte-for-byte.
async fn from_replicate(
    client: &reqwest::Client,
    id: &str,
    training: bool,
) -> Result<(Vec<u8>, String), Failure> {
    let id = check_replicate_id(id)?;
    let Some(api) = ReplicateApi::from_env() else {
        return Err(usage(
            "--from-replicate needs REPLICATE_API_TOKEN (an API token from \
             replicate.com/account/api-tokens) in the environment",
        ));
    };
    let (kind, collection) = if training {
        ("training", "trainings")
    } else {
        ("prediction", "predictions")
    };
    let answer = api
        .get(client, &format!("/v1/{collection}/{id}"))
        .await
        .map_err(Failure::Send)?;
    let status = answer.status;
    if status == reqwest::StatusCode::NOT_FOUND {
        let hint = if training {
            "is it a prediction? leave out --training"
        } else {
            "is it a training? add --training"
        };
        return Err(Failure::Send(format!(
            "Replicate's API has no {kind} {id} for this token (HTTP 404; {hint})"
        )));
    }
    if matches!(status.as_u16(), 401 | 403) {
        return Err(Failure::Send(format!(
            "Replicate's API refused REPLICATE_API_TOKEN (HTTP {})",
            status.as_u16()
        )));
    }
    if !status.is_success() {
        return Err(Failure::Send(format!(
            "Replicate's API answered HTTP {} for {kind} {id}",
            status.as_u16()
        )));
    }
    if serde_json::from_slice::<serde_json::Value>(&answer.body).is_err() {
        return Err(Failure::Send(format!(
            "Replicate's API answer for {kind} {id} is not JSON"
        )));
    }
    Ok((
        answer.body.to_vec(),
        format!("{kind} {id} from {}", api.base()),
    ))
}

fn target(url: &str, query: Option<&str>) -> Result<reqwest::Url, Failure> {
    let mut url =
        reqwest::Url::parse(url).map_err(|e| usage(format!("--url is not a URL ({e}): {url}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(usage("--url must start with http:// or https://"));
    }
    if let Some(extra) = query
        .map(|q| q.trim_start_matches('?'))
        .filter(|q| !q.is_empty())
    {
        let joined = match url.query().filter(|q| !q.is_empty()) {
            Some(existing) => format!("{existing}&{extra}"),
            None => extra.to_owned(),
        };
        url.set_query(Some(&joined));
    }
    Ok(url)
}

/// Finds a sample by name, `_` and `.` alike, or by a prefix that names only one.
fn find_sample(name: &str) -> Result<&'static Sample, Failure> {
    let wanted = name.trim().replace('_', ".").to_ascii_lowercase();
    let same = |s: &Sample| s.name.replace('_', ".") == wanted;
    if let Some(exact) = SAMPLES.iter().find(|s| same(s)) {
        return Ok(exact);
    }
    let prefix = format!("{wanted}.");
    let matches: Vec<&Sample> = SAMPLES
        .iter()
        .filter(|s| s.name.replace('_', ".").starts_with(&prefix))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(usage(format!(
            "no sample named {name:?}; the samples are: {}",
            names(SAMPLES.iter())
        ))),
        several => Err(usage(format!(
            "{name:?} names several samples, pick one: {}",
            names(several.iter().copied())
        ))),
    }
}

fn names<'a>(samples: impl Iterator<Item = &'a Sample>) -> String {
    samples.map(|s| s.name).collect::<Vec<_>>().join(", ")
}

/// The id goes inside JSON strings and URL paths unescaped, so only id characters are allowed.
fn check_replicate_id(id: &str) -> Result<String, Failure> {
    if is_replicate_id(id) {
        Ok(id.to_owned())
    } else {
        Err(usage(
            "a Replicate id may hold only letters, digits, '-' and '_'",
        ))
    }
}

fn is_header_token(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, Failure> {
    let body = if path.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|e| usage(format!("cannot read stdin: {e}")))?;
        body
    } else {
        std::fs::read(path).map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?
    };
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&body) {
        note(&format!(
            "note: the body is not valid JSON ({e}); sending it as it is"
        ));
    }
    Ok(body)
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
    fn samples_resolve_by_name_alias_and_unique_prefix() {
        for s in SAMPLES {
            assert_eq!(find_sample(s.name).map(|f| f.name).ok(), Some(s.name));
            let alias = s.name.replace('.', "_");
            assert_eq!(find_sample(&alias).map(|f| f.name).ok(), Some(s.name));
        }
        // An exact name wins over the longer names it is a prefix of.
        assert_eq!(
            find_sample("prediction.processing").map(|f| f.name).ok(),
            Some("prediction.processing")
        );
        assert!(matches!(
            find_sample("prediction.succeeded"),
            Err(Failure::Usage(m)) if m.contains("several")
        ));
        assert!(matches!(
            find_sample("prediction.nope"),
            Err(Failure::Usage(_))
        ));
    }

    #[test]
    fn query_is_added_to_the_url() {
        let u = target("http://h/api/x", Some("?a=1&b=2"))
            .ok()
            .map(|u| u.to_string());
        assert_eq!(u.as_deref(), Some("http://h/api/x?a=1&b=2"));
        let u = target("http://h/api/x?z=0", Some("a=1"))
            .ok()
            .map(|u| u.to_string());
        assert_eq!(u.as_deref(), Some("http://h/api/x?z=0&a=1"));
        assert!(target("ftp://h/x", None).is_err());
        assert!(target("not a url", None).is_err());
    }
}
