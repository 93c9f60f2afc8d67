//! What the `send` and `doctor` commands share: the signing secret as both take it, ids shaped
//! like Replicate's, an HTTP client that never follows redirects (Replicate does not), and
//! Replicate's API as a token holder calls it. Nothing here prints a secret or a token.

use shared::signature::SigningKey;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Replicate's API when `REPLICATE_API_URL` does not say otherwise.
pub const DEFAULT_REPLICATE_API_URL: &str = "https://api.replicate.com";

/// The secrets in a `REPLICATE_WEBHOOK_SECRET`-style value, split as the functions split it.
pub use shared::signature::split_secrets;

/// The secret that signs: the first of `value`, with how many were given. The error says
/// what to do and never includes the secret.
pub fn signing_key(value: Option<&str>) -> Result<(SigningKey, usize), String> {
    let secrets = split_secrets(value.unwrap_or_default());
    let Some(first) = secrets.first() else {
        return Err(
            "no secret: pass --secret whsec_... or set REPLICATE_WEBHOOK_SECRET \
                    (scripts/dev keeps its secret in .stack/webhook-secret)"
                .to_owned(),
        );
    };
    // SecretError's messages never include the secret.
    let key =
        SigningKey::parse(first).map_err(|e| format!("the signing secret is unusable: {e}"))?;
    Ok((key, secrets.len()))
}

/// A secret without its `whsec_` prefix, for comparing two spellings of one secret.
pub fn secret_key_part(secret: &str) -> &str {
    let secret = secret.trim();
    secret.strip_prefix("whsec_").unwrap_or(secret)
}

/// Unix time now, in seconds; `None` before 1970.
pub fn unix_now() -> Option<i64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
}

/// 26 lowercase base32 characters (a-z, 2-7) from 128 random bits, shaped like Replicate's ids.
pub fn random_id() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let bits = u128::from_be_bytes(*uuid::Uuid::new_v4().as_bytes())
        ^ u128::from_be_bytes(*uuid::Uuid::new_v4().as_bytes()).rotate_left(64);
    (0..26)
        .map(|i| {
            let index = (bits >> (5 * i)) & 31;
            char::from(ALPHABET[usize::try_from(index).unwrap_or(0)])
        })
        .collect()
}

/// Whether `id` holds only the characters of Replicate's ids (letters, digits, `-`, `_`), so
/// it can go into JSON strings and URL paths unescaped.
pub fn is_replicate_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// An HTTP client that never follows redirects, with a time limit per request.
pub fn http_client(tool: &str, timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(format!(
            "replicate-webhooks-{tool}/{}",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Replicate's API as a holder of `REPLICATE_API_TOKEN` calls it.
// No `Debug`: it would show the token.
#[allow(missing_debug_implementations)]
pub struct ReplicateApi {
    base: String,
    token: String,
}

/// What Replicate's API answered: its status and its body, byte-for-byte.
#[derive(Debug)]
pub struct ApiAnswer {
    /// The HTTP status.
    pub status: reqwest::StatusCode,
    /// The body exactly as received.
    pub body: bytes::Bytes,
}

impl ReplicateApi {
    /// From `REPLICATE_API_TOKEN` and `REPLICATE_API_URL` (default
    /// [`DEFAULT_REPLICATE_API_URL`]); `None` without a token.
    pub fn from_env() -> Option<ReplicateApi> {
        let token = std::env::var("REPLICATE_API_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())?;
        let base = std::env::var("REPLICATE_API_URL")
            .ok()
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_REPLICATE_API_URL.to_owned());
        Some(ReplicateApi { base, token })
    }

    /// The API's base URL (no credentials in it).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET {base}{path}` with the token as bearer. The error names neither token nor body.
    pub async fn get(&self, client: &reqwest::Client, path: &str) -> Result<ApiAnswer, String> {
        let url = format!("{}{path}", self.base);
        let response = client
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("Replicate's API did not answer: {}", e.without_url()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("Replicate's API answer was cut short: {}", e.without_url()))?;
        Ok(ApiAnswer { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_split_on_spaces_and_commas() {
        assert_eq!(split_secrets(" a, b  c,"), vec!["a", "b", "c"]);
        assert!(split_secrets(" , ").is_empty());
        assert_eq!(secret_key_part(" whsec_abc "), "abc");
        assert_eq!(secret_key_part("abc"), "abc");
    }

    #[test]
    fn signing_key_takes_the_first_and_hides_the_rest() {
        let (_, n) = signing_key(Some(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 2);
        let err = signing_key(Some("whsec_not-base64!!"))
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("unusable") && !err.contains("not-base64"),
            "{err}"
        );
        let err = signing_key(None).err().unwrap_or_default();
        assert!(err.contains("REPLICATE_WEBHOOK_SECRET"), "{err}");
    }

    #[test]
    fn random_ids_look_like_replicate_ids() {
        let a = random_id();
        assert_eq!(a.len(), 26);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
        );
        assert!(is_replicate_id(&a));
        assert_ne!(a, random_id());
        assert!(!is_replicate_id("a\"b") && !is_replicate_id(""));
    }
}
