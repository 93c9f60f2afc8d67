//! Configuration from the environment, read once per cold start.
//!
//! Each part is kept as a `Result` so a route fails only for the parts it needs, with an
//! error naming the variable, and never panics at start.

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

fn required(env: &impl Env, name: &'static str) -> Result<String, ConfigError> {
    env.var(name).ok_or(ConfigError::Missing(name))
}

fn number<T: std::str::FromStr>(
    env: &impl Env,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match env.var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| ConfigError::Invalid {
            name,
            reason: "not a whole number".into(),
        }),
    }
}

fn flag(env: &impl Env, name: &'static str) -> bool {
    env.var(name)
        .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// What the webhook routes need to accept a delivery.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Verifies signatures with every configured secret.
    pub verifier: Verifier,
}

impl WebhookConfig {
    /// Reads `REPLICATE_WEBHOOK_SECRET` and `WEBHOOK_TOLERANCE_SECONDS`.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let secrets = required(env, "REPLICATE_WEBHOOK_SECRET")?;
        let tolerance = number(env, "WEBHOOK_TOLERANCE_SECONDS", DEFAULT_TOLERANCE_SECONDS)?;
        let verifier = Verifier::from_secrets(&secrets, tolerance).map_err(|e: SecretError| {
            ConfigError::Invalid {
                name: "REPLICATE_WEBHOOK_SECRET",
                reason: e.to_string(),
            }
        })?;
        Ok(Self { verifier })
    }
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
    /// The service role key, sent as `apikey` and `Authorization: Bearer`.
    pub service_key: Secret,
}

impl DatabaseConfig {
    /// Reads `POSTGREST_URL`, else `SUPABASE_URL`/`NEXT_PUBLIC_SUPABASE_URL` + `/rest/v1`,
    /// and `SUPABASE_SERVICE_ROLE_KEY`.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let rest_url = match env.var("POSTGREST_URL") {
            Some(url) => url.trim().trim_end_matches('/').to_owned(),
            None => {
                let base = env
                    .var("SUPABASE_URL")
                    .or_else(|| env.var("NEXT_PUBLIC_SUPABASE_URL"))
                    .ok_or(ConfigError::Missing("SUPABASE_URL"))?;
                format!("{}/rest/v1", base.trim().trim_end_matches('/'))
            }
        };
        if !(rest_url.starts_with("http://") || rest_url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                name: "SUPABASE_URL",
                reason: "not an http(s) URL".into(),
            });
        }
        let service_key = Secret::new(required(env, "SUPABASE_SERVICE_ROLE_KEY")?);
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
        Ok(Self {
            bucket: required(env, "S3_BUCKET")?,
            region: env
                .var("AWS_REGION")
                .or_else(|| env.var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
            prefix: env.var("S3_PREFIX").unwrap_or_default(),
            endpoint_url: env.var("S3_ENDPOINT_URL"),
            force_path_style: flag(env, "S3_FORCE_PATH_STYLE"),
            public_base_url: env
                .var("S3_PUBLIC_BASE_URL")
                .map(|u| u.trim_end_matches('/').to_owned()),
            access_key_id: required(env, "AWS_ACCESS_KEY_ID")?,
            secret_access_key: Secret::new(required(env, "AWS_SECRET_ACCESS_KEY")?),
            session_token: env.var("AWS_SESSION_TOKEN").map(Secret::new),
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
    pub fn from_env(env: &impl Env) -> Option<Self> {
        Some(Self {
            api_key: Secret::new(env.var("RESEND_API_KEY")?),
            api_url: env
                .var("RESEND_API_URL")
                .unwrap_or_else(|| "https://api.resend.com".into())
                .trim_end_matches('/')
                .to_owned(),
            from: env
                .var("EMAIL_FROM")
                .unwrap_or_else(|| "Replicate webhooks <onboarding@resend.dev>".into()),
        })
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
            base_url: env
                .var("REPLICATE_API_URL")
                .unwrap_or_else(|| "https://api.replicate.com".into())
                .trim_end_matches('/')
                .to_owned(),
            token: Secret::new(required(env, "REPLICATE_API_TOKEN")?),
        })
    }
}

/// How much reconcile does per run.
#[derive(Debug, Clone, Copy)]
pub struct ReconcileConfig {
    /// `RECONCILE_AFTER_SECONDS` (120): quiet time before a job is checked.
    pub after_seconds: u32,
    /// `RECONCILE_BATCH` (50): jobs per run.
    pub batch: u32,
    /// `RECONCILE_MAX_AGE_SECONDS` (7 days): older jobs are left alone, so a job Replicate
    /// has forgotten cannot be re-checked forever.
    pub max_age_seconds: u32,
}

impl ReconcileConfig {
    /// Reads the three numbers, with their defaults.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        Ok(Self {
            after_seconds: number(env, "RECONCILE_AFTER_SECONDS", 120)?,
            batch: number(env, "RECONCILE_BATCH", 50)?,
            max_age_seconds: number(env, "RECONCILE_MAX_AGE_SECONDS", 7 * 24 * 3600)?,
        })
    }
}

/// Everything a route may need, read once at cold start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `MAX_BODY_BYTES`, default 4 MiB.
    pub max_body_bytes: Result<usize, ConfigError>,
    /// Signature verification.
    pub webhook: Result<WebhookConfig, ConfigError>,
    /// PostgREST.
    pub database: Result<DatabaseConfig, ConfigError>,
    /// S3.
    pub storage: Result<StorageConfig, ConfigError>,
    /// `OUTPUT_HOSTS`: where output files may be fetched from.
    pub output_hosts: Result<HostPolicy, ConfigError>,
    /// Email through Resend, when `RESEND_API_KEY` is set.
    pub email: Option<EmailConfig>,
    /// Reconcile: Replicate's API.
    pub replicate_api: Result<ReplicateApiConfig, ConfigError>,
    /// Reconcile: the bearer token schedules send.
    pub cron_secret: Result<Secret, ConfigError>,
    /// Reconcile: how much to do per run.
    pub reconcile: Result<ReconcileConfig, ConfigError>,
    /// Upper bound for each dependency call made while answering a request.
    pub upstream_timeout: Duration,
}

impl Settings {
    /// Reads every part; parsing is cheap and builds no client.
    pub fn from_env(env: &impl Env) -> Self {
        Self {
            max_body_bytes: number(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            webhook: WebhookConfig::from_env(env),
            database: DatabaseConfig::from_env(env),
            storage: StorageConfig::from_env(env),
            output_hosts: HostPolicy::parse(
                &env.var("OUTPUT_HOSTS")
                    .unwrap_or_else(|| DEFAULT_OUTPUT_HOSTS.into()),
            )
            .map_err(|e| ConfigError::Invalid {
                name: "OUTPUT_HOSTS",
                reason: e.to_string(),
            }),
            email: EmailConfig::from_env(env),
            replicate_api: ReplicateApiConfig::from_env(env),
            cron_secret: required(env, "CRON_SECRET").map(Secret::new),
            reconcile: ReconcileConfig::from_env(env),
            upstream_timeout: Duration::from_secs(10),
        }
    }

    /// The body limit, falling back to the default when the variable is invalid (the error
    /// is reported by the routes that check `max_body_bytes` themselves).
    pub fn body_limit(&self) -> usize {
        self.max_body_bytes
            .clone()
            .unwrap_or(DEFAULT_MAX_BODY_BYTES)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn missing_variables_are_named() {
        let s = Settings::from_env(&[("S3_BUCKET", "b")]);
        assert_eq!(
            s.webhook.unwrap_err(),
            ConfigError::Missing("REPLICATE_WEBHOOK_SECRET")
        );
        assert_eq!(
            s.database.unwrap_err(),
            ConfigError::Missing("SUPABASE_URL")
        );
        assert_eq!(
            s.storage.unwrap_err(),
            ConfigError::Missing("AWS_ACCESS_KEY_ID")
        );
        assert_eq!(s.max_body_bytes.unwrap(), DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn supabase_url_gets_rest_path_and_postgrest_url_wins() {
        let env = [
            ("NEXT_PUBLIC_SUPABASE_URL", "https://x.supabase.co/"),
            ("SUPABASE_SERVICE_ROLE_KEY", "k"),
        ];
        let db = DatabaseConfig::from_env(&env).unwrap();
        assert_eq!(db.rest_url, "https://x.supabase.co/rest/v1");
        let env = [
            ("SUPABASE_URL", "https://x.supabase.co"),
            ("POSTGREST_URL", "http://127.0.0.1:3001/"),
            ("SUPABASE_SERVICE_ROLE_KEY", "k"),
        ];
        assert_eq!(
            DatabaseConfig::from_env(&env).unwrap().rest_url,
            "http://127.0.0.1:3001"
        );
    }

    #[test]
    fn invalid_values_name_the_variable_not_the_value() {
        let s = Settings::from_env(&[
            ("MAX_BODY_BYTES", "lots"),
            ("REPLICATE_WEBHOOK_SECRET", "whsec_%%%%"),
        ]);
        let body = s.max_body_bytes.unwrap_err().to_string();
        assert!(body.contains("MAX_BODY_BYTES") && !body.contains("lots"));
        let hook = s.webhook.unwrap_err().to_string();
        assert!(hook.contains("REPLICATE_WEBHOOK_SECRET") && !hook.contains("%%%%"));
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
