//! Configuration from the environment, read and validated once, when a route starts.
//!
//! Each route reads only what it needs into one value ([`WebhookConfig`],
//! [`ReconcileConfig`], [`HealthConfig`]); a missing or invalid variable is one
//! [`ConfigError`] naming it (never its value), which every request of that route then
//! answers with 503. Reading builds no client and never panics.

use crate::outputs::hosts::{DEFAULT_OUTPUT_HOSTS, HostPolicy};
use crate::signature::{DEFAULT_TOLERANCE_SECONDS, SecretError, Verifier};
use std::fmt;
use std::time::Duration;

/// Default `MAX_BODY_BYTES`: 4 MiB, below Vercel's 4.5 MB request cap.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A configuration problem, naming the variable and never its value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// A variable is set to something unusable.
    #[error("{name} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        name: &'static str,
        /// Why, without the value.
        reason: String,
    },
}

/// Where configuration is read from: the process environment, or a map in tests.
pub trait Env {
    /// The variable's value, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
            .filter(|v| !v.trim().is_empty())
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.trim().is_empty()).cloned()
    }
}

/// A variable's value with surrounding whitespace trimmed (what `echo ... | vercel env add`
/// leaves is a trailing newline); `None` when unset or blank. A control character left
/// inside is refused: in a header it would be a panic or a smuggled header, in a URL a
/// different URL.
fn optional(env: &impl Env, name: &'static str) -> Result<Option<String>, ConfigError> {
    match env.var(name) {
        None => Ok(None),
        Some(v) if v.trim().chars().any(char::is_control) => Err(ConfigError::Invalid {
            name,
            reason: "contains a control character".into(),
        }),
        Some(v) => Ok(Some(v.trim().to_owned()).filter(|v| !v.is_empty())),
    }
}

fn required(env: &impl Env, name: &'static str) -> Result<String, ConfigError> {
    optional(env, name)?.ok_or(ConfigError::Missing(name))
}

/// An `http(s)` URL without a trailing slash.
fn base_url(name: &'static str, value: &str) -> Result<String, ConfigError> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(value.trim_end_matches('/').to_owned())
        }
        _ => Err(ConfigError::Invalid {
            name,
            reason: "not an http(s) URL".into(),
        }),
    }
}

fn optional_url(env: &impl Env, name: &'static str) -> Result<Option<String>, ConfigError> {
    optional(env, name)?.map(|v| base_url(name, &v)).transpose()
}

fn number<T: std::str::FromStr>(
    env: &impl Env,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match optional(env, name)? {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| ConfigError::Invalid {
            name,
            reason: "not a whole number".into(),
        }),
    }
}

fn flag(env: &impl Env, name: &'static str) -> bool {
    env.var(name)
        .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// Reads `REPLICATE_WEBHOOK_SECRET` and `WEBHOOK_TOLERANCE_SECONDS` into a verifier.
pub fn verifier(env: &impl Env) -> Result<Verifier, ConfigError> {
    let secrets = required(env, "REPLICATE_WEBHOOK_SECRET")?;
    let tolerance = number(env, "WEBHOOK_TOLERANCE_SECONDS", DEFAULT_TOLERANCE_SECONDS)?;
    Verifier::from_secrets(&secrets, tolerance).map_err(|e: SecretError| ConfigError::Invalid {
        name: "REPLICATE_WEBHOOK_SECRET",
        reason: e.to_string(),
    })
}

/// Reads `MAX_BODY_BYTES` (default 4 MiB): the one body limit of the routes that take a
/// body.
pub fn max_body_bytes(env: &impl Env) -> Result<usize, ConfigError> {
    number(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)
}

/// Reads `OUTPUT_HOSTS` (default `replicate.delivery,*.replicate.delivery`).
pub fn output_hosts(env: &impl Env) -> Result<HostPolicy, ConfigError> {
    HostPolicy::parse(
        &optional(env, "OUTPUT_HOSTS")?.unwrap_or_else(|| DEFAULT_OUTPUT_HOSTS.into()),
    )
    .map_err(|e| ConfigError::Invalid {
        name: "OUTPUT_HOSTS",
        reason: e.to_string(),
    })
}

/// A bearer credential whose value never shows in `Debug`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for putting in a header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `offered` is this secret, compared in constant time (the length is not
    /// secret; the contents are compared without an early exit).
    pub fn matches(&self, offered: &str) -> bool {
        let (a, b) = (offered.as_bytes(), self.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The token of an `Authorization: Bearer <token>` header, trimmed, if there is one: what a
/// caller offers to compare with [`Secret::matches`].
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where the PostgREST API is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Base URL of the REST API, without a trailing slash.
    pub rest_url: String,
    /// The key the functions use.
    pub service_key: ServiceKey,
}

/// A Supabase key that bypasses row level security, in one of its two forms.
#[derive(Debug, Clone)]
pub enum ServiceKey {
    /// A secret key (`sb_secret_...`): sent as `apikey` only; Supabase's gateway mints the
    /// JWT PostgREST sees, and refuses such a key in `Authorization`.
    Secret(Secret),
    /// A legacy `service_role` JWT: sent as `apikey` and `Authorization: Bearer`.
    LegacyJwt(Secret),
}

impl ServiceKey {
    /// Reads `SUPABASE_SECRET_KEY` (preferred) or `SUPABASE_SERVICE_ROLE_KEY`; the form is
    /// told by the value, whichever variable holds it.
    fn from_env(env: &impl Env) -> Result<ServiceKey, ConfigError> {
        let (name, value) = match optional(env, "SUPABASE_SECRET_KEY")? {
            Some(v) => ("SUPABASE_SECRET_KEY", v),
            None => (
                "SUPABASE_SERVICE_ROLE_KEY",
                optional(env, "SUPABASE_SERVICE_ROLE_KEY")?
                    .ok_or(ConfigError::Missing("SUPABASE_SECRET_KEY"))?,
            ),
        };
        if value.starts_with("sb_secret_") {
            Ok(ServiceKey::Secret(Secret::new(value)))
        } else if value.starts_with("sb_") {
            Err(ConfigError::Invalid {
                name,
                reason:
                    "a publishable key cannot write job state; use a secret key (sb_secret_...)"
                        .into(),
            })
        } else {
            Ok(ServiceKey::LegacyJwt(Secret::new(value)))
        }
    }
}

impl DatabaseConfig {
    /// Reads `POSTGREST_URL`, else `SUPABASE_URL`/`NEXT_PUBLIC_SUPABASE_URL` + `/rest/v1`,
    /// and the key: `SUPABASE_SECRET_KEY`, else `SUPABASE_SERVICE_ROLE_KEY`.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let rest_url = match optional_url(env, "POSTGREST_URL")? {
            Some(url) => url,
            None => {
                let base = match optional_url(env, "SUPABASE_URL")? {
                    Some(url) => url,
                    None => optional_url(env, "NEXT_PUBLIC_SUPABASE_URL")?
                        .ok_or(ConfigError::Missing("SUPABASE_URL"))?,
                };
                format!("{base}/rest/v1")
            }
        };
        let service_key = ServiceKey::from_env(env)?;
        Ok(Self {
            rest_url,
            service_key,
        })
    }
}

/// Where output files are stored.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// `S3_BUCKET`.
    pub bucket: String,
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`), default `us-east-1`.
    pub region: String,
    /// `S3_PREFIX`, prepended to every key.
    pub prefix: String,
    /// `S3_ENDPOINT_URL`, for S3-compatible stores.
    pub endpoint_url: Option<String>,
    /// `S3_FORCE_PATH_STYLE`.
    pub force_path_style: bool,
    /// `S3_PUBLIC_BASE_URL`: public base for stored URLs, else `s3://bucket/key`.
    pub public_base_url: Option<String>,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Secret,
    /// `AWS_SESSION_TOKEN` (set on Lambda).
    pub session_token: Option<Secret>,
}

impl StorageConfig {
    /// Reads the S3 variables and the AWS credentials (as Lambda provides them).
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let region = match optional(env, "AWS_REGION")? {
            Some(region) => region,
            None => optional(env, "AWS_DEFAULT_REGION")?.unwrap_or_else(|| "us-east-1".into()),
        };
        Ok(Self {
            bucket: required(env, "S3_BUCKET")?,
            region,
            prefix: optional(env, "S3_PREFIX")?.unwrap_or_default(),
            endpoint_url: optional_url(env, "S3_ENDPOINT_URL")?,
            force_path_style: flag(env, "S3_FORCE_PATH_STYLE"),
            public_base_url: optional_url(env, "S3_PUBLIC_BASE_URL")?,
            access_key_id: required(env, "AWS_ACCESS_KEY_ID")?,
            secret_access_key: Secret::new(required(env, "AWS_SECRET_ACCESS_KEY")?),
            session_token: optional(env, "AWS_SESSION_TOKEN")?.map(Secret::new),
        })
    }
}

/// Resend's HTTP API, for telling a user their model is ready (or failed).
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// `RESEND_API_KEY`.
    pub api_key: Secret,
    /// `RESEND_API_URL`, default `https://api.resend.com`.
    pub api_url: String,
    /// `EMAIL_FROM`, default Resend's test sender.
    pub from: String,
}

impl EmailConfig {
    /// `None` when `RESEND_API_KEY` is unset: email is off.
    pub fn from_env(env: &impl Env) -> Result<Option<Self>, ConfigError> {
        let Some(key) = optional(env, "RESEND_API_KEY")? else {
            return Ok(None);
        };
        Ok(Some(Self {
            api_key: Secret::new(key),
            api_url: optional_url(env, "RESEND_API_URL")?
                .unwrap_or_else(|| "https://api.resend.com".into()),
            from: optional(env, "EMAIL_FROM")?
                .unwrap_or_else(|| "Replicate webhooks <onboarding@resend.dev>".into()),
        }))
    }
}

/// Replicate's HTTP API, which reconcile asks about jobs whose webhook never came.
#[derive(Debug, Clone)]
pub struct ReplicateApiConfig {
    /// `REPLICATE_API_URL`, default `https://api.replicate.com`.
    pub base_url: String,
    /// `REPLICATE_API_TOKEN`.
    pub token: Secret,
}

impl ReplicateApiConfig {
    /// Reads `REPLICATE_API_TOKEN` and `REPLICATE_API_URL`.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        Ok(Self {
            base_url: optional_url(env, "REPLICATE_API_URL")?
                .unwrap_or_else(|| "https://api.replicate.com".into()),
            token: Secret::new(required(env, "REPLICATE_API_TOKEN")?),
        })
    }
}

/// Reads `FUNCTION_TIMEOUT_SECONDS`: the time limit of `route` outside Lambda (whose
/// invocations carry their own deadline), default the route's `maxDuration` in the route
/// table (which `vercel.json` must match).
pub fn function_timeout(env: &impl Env, route: &str) -> Result<Duration, ConfigError> {
    let default = crate::routes::table::max_duration(route).as_secs();
    match number(env, "FUNCTION_TIMEOUT_SECONDS", default)? {
        0 => Err(ConfigError::Invalid {
            name: "FUNCTION_TIMEOUT_SECONDS",
            reason: "must be at least 1".into(),
        }),
        seconds => Ok(Duration::from_secs(seconds)),
    }
}

/// How much of a run's time is kept back: one job's check may still be under way when the
/// run stops taking jobs, and it must end before the platform stops the function. Half the
/// time limit when that is shorter.
pub const RECONCILE_TIME_MARGIN: Duration = Duration::from_secs(60);

/// How much reconcile does per run.
#[derive(Debug, Clone, Copy)]
pub struct ReconcileLimits {
    /// `RECONCILE_AFTER_SECONDS` (120): quiet time before a job is checked.
    pub after_seconds: u32,
    /// `RECONCILE_BATCH` (50): jobs per run.
    pub batch: u32,
    /// `RECONCILE_MAX_AGE_SECONDS` (7 days): a job older than this that Replicate does not
    /// know (404) ends `aborted` and refunded, so it cannot be re-checked forever.
    pub max_age_seconds: u32,
    /// `ORPHAN_AFTER_SECONDS` (1 day): a job that still has no Replicate id this long after
    /// it was created (charged, then never started) ends `aborted` and refunded.
    pub orphan_after_seconds: u32,
    /// How long a run may take new jobs: `FUNCTION_TIMEOUT_SECONDS` (300, the route's
    /// `maxDuration`) less [`RECONCILE_TIME_MARGIN`] (or half of it, when that is less).
    pub time_budget: Duration,
    /// The function's whole time limit, `FUNCTION_TIMEOUT_SECONDS` (outside Lambda).
    pub time_limit: Duration,
}

impl ReconcileLimits {
    /// Reads the numbers, with their defaults.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let timeout = function_timeout(env, "reconcile")?;
        Ok(Self {
            after_seconds: number(env, "RECONCILE_AFTER_SECONDS", 120)?,
            batch: number(env, "RECONCILE_BATCH", 50)?,
            max_age_seconds: number(env, "RECONCILE_MAX_AGE_SECONDS", 7 * 24 * 3600)?,
            orphan_after_seconds: number(env, "ORPHAN_AFTER_SECONDS", 24 * 3600)?,
            time_budget: timeout - RECONCILE_TIME_MARGIN.min(timeout / 2),
            time_limit: timeout,
        })
    }
}

/// Default `EVENTS_RETENTION_DAYS`.
pub const DEFAULT_EVENTS_RETENTION_DAYS: u32 = 30;

/// Reads `EVENTS_RETENTION_DAYS` (default 30, at least 1): how long reconcile keeps
/// `webhook_events` rows and the rejection counts.
pub fn events_retention_days(env: &impl Env) -> Result<u32, ConfigError> {
    let days = number(env, "EVENTS_RETENTION_DAYS", DEFAULT_EVENTS_RETENTION_DAYS)?;
    if days == 0 {
        return Err(ConfigError::Invalid {
            name: "EVENTS_RETENTION_DAYS",
            reason: "must be at least 1".into(),
        });
    }
    Ok(days)
}

/// Reads `ALERT_WEBHOOK_URL` (optional): an http(s) URL, kept exactly as given (a Slack or
/// Discord webhook URL carries its token in the path, so it is held as a [`Secret`]).
pub fn alert_webhook_url(env: &impl Env) -> Result<Option<Secret>, ConfigError> {
    let Some(value) = optional(env, "ALERT_WEBHOOK_URL")? else {
        return Ok(None);
    };
    match url::Url::parse(&value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(Some(Secret::new(value)))
        }
        _ => Err(ConfigError::Invalid {
            name: "ALERT_WEBHOOK_URL",
            reason: "not an http(s) URL".into(),
        }),
    }
}

/// What applying an event needs, whichever route it came through: the database, the
/// bucket and where files may come from, and email when it is on.
#[derive(Debug, Clone)]
pub struct ApplyConfig {
    /// PostgREST.
    pub database: DatabaseConfig,
    /// S3.
    pub storage: StorageConfig,
    /// `OUTPUT_HOSTS`.
    pub output_hosts: HostPolicy,
    /// Resend, when `RESEND_API_KEY` is set.
    pub email: Option<EmailConfig>,
    /// Upper bound for each database call made while answering a request.
    pub upstream_timeout: Duration,
}

impl ApplyConfig {
    /// Reads the database, storage, output hosts and email variables.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        Ok(Self {
            database: DatabaseConfig::from_env(env)?,
            storage: StorageConfig::from_env(env)?,
            output_hosts: output_hosts(env)?,
            email: EmailConfig::from_env(env)?,
            upstream_timeout: Duration::from_secs(10),
        })
    }
}

/// The webhook routes' configuration (train, predict, unified, completed).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// Checks signatures with every configured secret.
    pub verifier: Verifier,
    /// What applying a delivery needs.
    pub apply: ApplyConfig,
}

impl WebhookConfig {
    /// Reads everything a webhook route needs.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        Ok(Self {
            max_body_bytes: max_body_bytes(env)?,
            verifier: verifier(env)?,
            apply: ApplyConfig::from_env(env)?,
        })
    }
}

/// The reconcile route's configuration.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// `CRON_SECRET`: the bearer token schedules send.
    pub cron_secret: Secret,
    /// Replicate's API.
    pub replicate_api: ReplicateApiConfig,
    /// How much to do per run.
    pub limits: ReconcileLimits,
    /// What applying Replicate's answer needs.
    pub apply: ApplyConfig,
    /// `ALERT_WEBHOOK_URL`: where a run that found something posts its message.
    pub alert_url: Option<Secret>,
    /// `EVENTS_RETENTION_DAYS`: older `webhook_events` rows and rejection counts are
    /// deleted.
    pub retention_days: u32,
}

impl ReconcileConfig {
    /// Reads everything reconcile needs.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        Ok(Self {
            cron_secret: required(env, "CRON_SECRET").map(Secret::new)?,
            replicate_api: ReplicateApiConfig::from_env(env)?,
            limits: ReconcileLimits::from_env(env)?,
            apply: ApplyConfig::from_env(env)?,
            alert_url: alert_webhook_url(env)?,
            retention_days: events_retention_days(env)?,
        })
    }
}

/// The health route's configuration: each part it reports on, kept apart so that one
/// missing or invalid variable does not hide the state of the others.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// What the webhook routes need besides the database and the bucket: every problem.
    pub webhook: Vec<ConfigError>,
    /// PostgREST.
    pub database: Result<DatabaseConfig, ConfigError>,
    /// S3.
    pub storage: Result<StorageConfig, ConfigError>,
    /// Whether email is on.
    pub email: Result<bool, ConfigError>,
    /// What reconcile needs besides the rest: every problem (a missing variable means
    /// reconcile is not set up, which is allowed; an invalid one is a fault).
    pub reconcile: Vec<ConfigError>,
    /// `CRON_SECRET`, when set and valid: a request bearing it also sees recent activity.
    pub cron_secret: Option<Secret>,
}

impl HealthConfig {
    /// Reads each part on its own.
    pub fn from_env(env: &impl Env) -> Self {
        Self {
            webhook: [
                verifier(env).err(),
                max_body_bytes(env).err(),
                output_hosts(env).err(),
            ]
            .into_iter()
            .flatten()
            .collect(),
            database: DatabaseConfig::from_env(env),
            storage: StorageConfig::from_env(env),
            email: EmailConfig::from_env(env).map(|e| e.is_some()),
            reconcile: [
                required(env, "CRON_SECRET").err(),
                ReplicateApiConfig::from_env(env).err(),
                ReconcileLimits::from_env(env).err(),
                alert_webhook_url(env).err(),
                events_retention_days(env).err(),
            ]
            .into_iter()
            .flatten()
            .collect(),
            cron_secret: required(env, "CRON_SECRET").ok().map(Secret::new),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn missing_variables_are_named() {
        let env = [("S3_BUCKET", "b")];
        assert_eq!(
            WebhookConfig::from_env(&env).unwrap_err(),
            ConfigError::Missing("REPLICATE_WEBHOOK_SECRET")
        );
        assert_eq!(
            DatabaseConfig::from_env(&env).unwrap_err(),
            ConfigError::Missing("SUPABASE_URL")
        );
        assert_eq!(
            DatabaseConfig::from_env(&[("SUPABASE_URL", "https://x.supabase.co")]).unwrap_err(),
            ConfigError::Missing("SUPABASE_SECRET_KEY")
        );
        assert_eq!(
            StorageConfig::from_env(&env).unwrap_err(),
            ConfigError::Missing("AWS_ACCESS_KEY_ID")
        );
        assert_eq!(max_body_bytes(&env).unwrap(), DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn a_route_reads_only_what_it_needs() {
        // Reconcile's variables are not a webhook route's business, and the reverse.
        let env = [
            ("REPLICATE_WEBHOOK_SECRET", "whsec_dGVzdA=="),
            ("SUPABASE_URL", "https://x.supabase.co"),
            ("SUPABASE_SERVICE_ROLE_KEY", "k"),
            ("S3_BUCKET", "b"),
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("RECONCILE_BATCH", "many"),
        ];
        assert!(WebhookConfig::from_env(&env).is_ok());
        assert_eq!(
            ReconcileConfig::from_env(&env).unwrap_err(),
            ConfigError::Missing("CRON_SECRET")
        );
    }
    /// `env` as the map a process's environment is read into.
    fn map(env: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        env.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn supabase_url_gets_rest_path_and_postgrest_url_wins() {
        let cases: [(&[(&str, &str)], &str); 2] = [
            (
                &[
                    ("NEXT_PUBLIC_SUPABASE_URL", "https://x.supabase.co/"),
                    ("SUPABASE_SERVICE_ROLE_KEY", "k"),
                ],
                "https://x.supabase.co/rest/v1",
            ),
            (
                &[
                    ("SUPABASE_URL", "https://x.supabase.co"),
                    ("POSTGREST_URL", "http://127.0.0.1:3001/"),
                    ("SUPABASE_SERVICE_ROLE_KEY", "k"),
                ],
                "http://127.0.0.1:3001",
            ),
        ];
        for (env, rest_url) in cases {
            let db = DatabaseConfig::from_env(&map(env)).unwrap();
            assert_eq!(db.rest_url, rest_url, "{env:?}");
        }
    }

    #[test]
    fn invalid_values_name_the_variable_not_the_value() {
        let env = [
            ("MAX_BODY_BYTES", "lots"),
            ("REPLICATE_WEBHOOK_SECRET", "whsec_%%%%"),
        ];
        let body = max_body_bytes(&env).unwrap_err().to_string();
        assert!(body.contains("MAX_BODY_BYTES") && !body.contains("lots"));
        let hook = verifier(&env).unwrap_err().to_string();
        assert!(hook.contains("REPLICATE_WEBHOOK_SECRET") && !hook.contains("%%%%"));
    }

    #[test]
    fn the_key_form_is_told_by_the_value_and_the_new_variable_wins() {
        let key = |env: &[(&str, &str)]| {
            let mut with_url = map(env);
            with_url.insert("SUPABASE_URL".into(), "https://x.supabase.co".into());
            DatabaseConfig::from_env(&with_url).map(|c| c.service_key)
        };
        assert!(matches!(
            key(&[("SUPABASE_SECRET_KEY", "sb_secret_abc"), ("SUPABASE_SERVICE_ROLE_KEY", "eyJold")]),
            Ok(ServiceKey::Secret(k)) if k.expose() == "sb_secret_abc"
        ));
        assert!(matches!(
            key(&[("SUPABASE_SERVICE_ROLE_KEY", "eyJhbGciOi")]),
            Ok(ServiceKey::LegacyJwt(_))
        ));
        assert!(matches!(
            key(&[("SUPABASE_SERVICE_ROLE_KEY", "sb_secret_xyz")]),
            Ok(ServiceKey::Secret(_))
        ));
        let publishable = key(&[("SUPABASE_SECRET_KEY", "sb_publishable_abc")]).unwrap_err();
        assert!(
            publishable
                .to_string()
                .starts_with("SUPABASE_SECRET_KEY is invalid")
        );
        assert!(!publishable.to_string().contains("abc"));
    }

    #[test]
    fn values_are_trimmed_and_control_characters_refused() {
        // What `echo "$KEY" | vercel env add` stores: the key and a newline.
        let env = [
            ("SUPABASE_URL", " https://x.supabase.co/ "),
            ("SUPABASE_SERVICE_ROLE_KEY", "key\n"),
        ];
        let db = DatabaseConfig::from_env(&env).unwrap();
        assert_eq!(db.rest_url, "https://x.supabase.co/rest/v1");
        assert!(matches!(&db.service_key, ServiceKey::LegacyJwt(k) if k.expose() == "key"));
        for (name, value) in [
            ("SUPABASE_SERVICE_ROLE_KEY", "ke\ny"),
            ("SUPABASE_SERVICE_ROLE_KEY", "key\u{7f}"),
            ("SUPABASE_URL", "https://x.supabase.co/\r\nx"),
        ] {
            let mut env = vec![
                ("SUPABASE_URL", "https://x.supabase.co"),
                ("SUPABASE_SERVICE_ROLE_KEY", "k"),
            ];
            env.retain(|(k, _)| *k != name);
            env.push((name, value));
            let e = DatabaseConfig::from_env(&map(&env)).unwrap_err();
            assert_eq!(
                e,
                ConfigError::Invalid {
                    name,
                    reason: "contains a control character".into()
                }
            );
        }
    }

    #[test]
    fn health_reports_every_invalid_variable() {
        let env = [
            ("REPLICATE_WEBHOOK_SECRET", "whsec_%%%%"),
            ("OUTPUT_HOSTS", "https://user:pw@example.com/path"),
            ("CRON_SECRET", "s\u{1}"),
        ];
        let health = HealthConfig::from_env(&env);
        let names: Vec<String> = health.webhook.iter().map(ToString::to_string).collect();
        assert!(
            names[0].starts_with("REPLICATE_WEBHOOK_SECRET is invalid"),
            "{names:?}"
        );
        assert!(names[1].starts_with("OUTPUT_HOSTS is invalid"), "{names:?}");
        assert!(!names[1].contains("pw@"), "{names:?}");
        assert!(health.reconcile.contains(&ConfigError::Invalid {
            name: "CRON_SECRET",
            reason: "contains a control character".into()
        }));
    }

    #[test]
    fn reconcile_limits_have_defaults_and_name_bad_values() {
        let limits = ReconcileLimits::from_env(&[("RECONCILE_BATCH", "7")]).unwrap();
        assert_eq!(limits.batch, 7);
        assert_eq!(limits.orphan_after_seconds, 86_400);
        assert_eq!(limits.time_budget, Duration::from_secs(240));
        let short = ReconcileLimits::from_env(&[("FUNCTION_TIMEOUT_SECONDS", "10")]).unwrap();
        assert_eq!(short.time_budget, Duration::from_secs(5));
        for (name, value) in [
            ("FUNCTION_TIMEOUT_SECONDS", "0"),
            ("FUNCTION_TIMEOUT_SECONDS", "soon"),
            ("ORPHAN_AFTER_SECONDS", "-1"),
        ] {
            let err = ReconcileLimits::from_env(&[(name, value)]).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { name: n, .. } if n == name),
                "{err}"
            );
        }
    }

    #[test]
    fn alert_url_and_retention_are_read_and_named_when_invalid() {
        let base = [
            ("CRON_SECRET", "c"),
            ("REPLICATE_API_TOKEN", "r8"),
            ("SUPABASE_URL", "https://x.supabase.co"),
            ("SUPABASE_SERVICE_ROLE_KEY", "k"),
            ("S3_BUCKET", "b"),
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ];
        let config = ReconcileConfig::from_env(&base).unwrap();
        assert!(config.alert_url.is_none());
        assert_eq!(config.retention_days, 30);
        let hook = "https://hooks.slack.com/services/T0/B0/tokenvalue";
        let env: std::collections::HashMap<String, String> = base
            .iter()
            .chain(&[("ALERT_WEBHOOK_URL", hook), ("EVENTS_RETENTION_DAYS", "7")])
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let config = ReconcileConfig::from_env(&env).unwrap();
        assert_eq!(config.alert_url.as_ref().map(Secret::expose), Some(hook));
        assert!(!format!("{config:?}").contains("tokenvalue"));
        assert_eq!(config.retention_days, 7);
        for (name, value) in [
            ("ALERT_WEBHOOK_URL", "hooks.slack.com/services/tokenvalue"),
            ("ALERT_WEBHOOK_URL", "ftp://example.com/tokenvalue"),
            ("EVENTS_RETENTION_DAYS", "0"),
            ("EVENTS_RETENTION_DAYS", "a month"),
        ] {
            let mut env = env.clone();
            env.insert(name.into(), value.into());
            let err = ReconcileConfig::from_env(&env).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { name: n, .. } if *n == name),
                "{err}"
            );
            assert!(!err.to_string().contains(value), "{err}");
            assert!(HealthConfig::from_env(&env).reconcile.contains(&err));
        }
    }

    #[test]
    fn a_secret_matches_only_itself() {
        let secret = Secret::new("cron-secret".into());
        assert!(secret.matches("cron-secret"));
        for other in ["", "cron-secreT", "cron-secret ", "cron"] {
            assert!(!secret.matches(other), "{other:?}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let env = [
            ("SUPABASE_URL", "https://x.supabase.co"),
            ("SUPABASE_SERVICE_ROLE_KEY", "topsecret"),
        ];
        let shown = format!("{:?}", DatabaseConfig::from_env(&env).unwrap());
        assert!(!shown.contains("topsecret"));
    }
}
