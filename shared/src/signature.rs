//! Standard Webhooks (v1) signature verification, as Replicate signs its deliveries.
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`, HMAC-SHA256 with the
//! base64-decoded secret (after its `whsec_` prefix), base64-encoded. The raw bytes as received
//! are verified; a re-serialised body would not match (conformance vector A has a space).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the delivery id (the same on every resend of one webhook).
pub const ID_HEADER: &str = "webhook-id";
/// Header carrying the Unix time, in seconds, at which the delivery was signed.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Header carrying space-separated `version,signature` entries.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// Default allowed clock difference, either way, in seconds.
pub const DEFAULT_TOLERANCE_SECONDS: u64 = 300;

/// One signing secret, decoded and keyed into an HMAC once. Never shown in `Debug` output.
#[derive(Clone)]
pub struct SigningKey(HmacSha256);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// Parses a `whsec_...` secret (the prefix is optional) into its key bytes.
    pub fn parse(secret: &str) -> Result<Self, SecretError> {
        let encoded = secret.trim();
        let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
        if encoded.is_empty() {
            return Err(SecretError::Empty);
        }
        let bytes = BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        // HMAC takes keys of any length; the only refusal left is an empty key.
        let mac = HmacSha256::new_from_slice(&bytes).map_err(|_| SecretError::Empty)?;
        if bytes.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self(mac))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// Signs a delivery: returns the `v1,<base64>` entry for the `webhook-signature` header.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self
            .mac(id, &timestamp.to_string(), body)
            .finalize()
            .into_bytes();
        format!("v1,{}", BASE64.encode(tag))
    }
}

/// Why a configured secret could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Nothing after the `whsec_` prefix.
    #[error("a webhook secret is empty")]
    Empty,
    /// The part after `whsec_` is not standard base64.
    #[error("a webhook secret is not base64 after its whsec_ prefix")]
    NotBase64,
}

/// Why a delivery was refused. Messages name headers, never their values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// A required header is absent or not visible ASCII.
    #[error("missing or unreadable {0} header")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer number of seconds.
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    /// The timestamp is further from now than the tolerance allows.
    #[error("webhook-timestamp is outside the allowed tolerance")]
    OutsideTolerance,
    /// No `v1` entry matched any configured secret.
    #[error("no valid webhook signature")]
    NoMatch,
}

/// A delivery whose signature checked out: the only way to get one is
/// [`Verifier::verify`], and [`crate::replicate::Delivery::parse`] takes nothing else, so
/// no unverified body is ever parsed.
#[derive(Clone, Copy)]
pub struct Verified<'a> {
    id: &'a str,
    timestamp: i64,
    body: &'a [u8],
}

impl fmt::Debug for Verified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body stays out of Debug output, as out of logs.
        f.debug_struct("Verified")
            .field("id", &self.id)
            .field("timestamp", &self.timestamp)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl<'a> Verified<'a> {
    /// The `webhook-id`: the same on every resend of one delivery, so it is the dedup key.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// When Replicate signed it (Unix seconds).
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The raw body bytes, exactly as signed.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// The secrets in a `REPLICATE_WEBHOOK_SECRET`-style value: separated by spaces or commas, as
/// during a rotation.
pub fn split_secrets(value: &str) -> Vec<&str> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Verifies deliveries against one or more secrets (several during a rotation).
#[derive(Clone, Debug)]
pub struct Verifier {
    keys: Vec<SigningKey>,
    tolerance_seconds: u64,
}

impl Verifier {
    /// Builds a verifier from `REPLICATE_WEBHOOK_SECRET`'s value: one or more secrets separated
    /// by spaces or commas, all accepted.
    pub fn from_secrets(secrets: &str, tolerance_seconds: u64) -> Result<Self, SecretError> {
        let keys = split_secrets(secrets)
            .into_iter()
            .map(SigningKey::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self {
            keys,
            tolerance_seconds,
        })
    }

    /// Verifies a delivery's headers and raw body at the Unix time `now`.
    ///
    /// Checks the headers are present, the timestamp is within tolerance either way, and that
    /// some `v1` entry matches some secret; comparisons are constant-time.
    pub fn verify<'a>(
        &self,
        headers: &'a HeaderMap,
        body: &'a [u8],
        now: i64,
    ) -> Result<Verified<'a>, SignatureError> {
        let id = header(headers, ID_HEADER)?;
        let timestamp = header(headers, TIMESTAMP_HEADER)?;
        let signatures = header(headers, SIGNATURE_HEADER)?;

        let signed_at: i64 = timestamp
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        if now.abs_diff(signed_at) > self.tolerance_seconds {
            return Err(SignatureError::OutsideTolerance);
        }

        let candidates: Vec<Vec<u8>> = signatures
            .split(' ')
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .filter_map(|(_, sig)| BASE64.decode(sig).ok())
            .collect();

        for key in &self.keys {
            let mac = key.mac(id, timestamp, body);
            for candidate in &candidates {
                // verify_slice compares in constant time.
                if mac.clone().verify_slice(candidate).is_ok() {
                    return Ok(Verified {
                        id,
                        timestamp: signed_at,
                        body,
                    });
                }
            }
        }
        Err(SignatureError::NoMatch)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, SignatureError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(SignatureError::MissingHeader(name))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    // Conformance vectors from the Standard Webhooks libraries' tests.
    const A_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const A_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const A_TS: i64 = 1_614_265_330;
    const A_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const A_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const OTHER: &str = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";

    fn headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ID_HEADER, id.parse().unwrap());
        h.insert(TIMESTAMP_HEADER, ts.parse().unwrap());
        h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
        h
    }

    fn verifier(secret: &str) -> Verifier {
        Verifier::from_secrets(secret, DEFAULT_TOLERANCE_SECONDS).unwrap()
    }

    fn check_a(sig: &str) -> Result<(), SignatureError> {
        check_a_over(sig, A_BODY)
    }

    /// Vector A's id, timestamp and secret, with `sig`, over `body`.
    fn check_a_over(sig: &str, body: &[u8]) -> Result<(), SignatureError> {
        verifier(A_SECRET)
            .verify(&headers(A_ID, &A_TS.to_string(), sig), body, A_TS)
            .map(drop)
    }

    #[test]
    fn a_verified_delivery_carries_what_was_checked() {
        let h = headers(A_ID, &A_TS.to_string(), A_SIG);
        let v = verifier(A_SECRET).verify(&h, A_BODY, A_TS).unwrap();
        assert_eq!((v.id(), v.timestamp(), v.body()), (A_ID, A_TS, A_BODY));
    }

    #[test]
    fn vector_a_passes() {
        assert_eq!(check_a(A_SIG), Ok(()));
    }

    #[test]
    fn vector_b_passes() {
        let v = verifier("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let h = headers(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            "1649367553",
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        );
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(v.verify(&h, body, 1_649_367_553).map(drop), Ok(()));
    }

    #[test]
    fn signing_reproduces_the_vectors() {
        let key = SigningKey::parse(A_SECRET).unwrap();
        assert_eq!(key.sign(A_ID, A_TS, A_BODY), A_SIG);
        assert_eq!(
            key.sign(A_ID, A_TS, br#"{"test":2432232314}"#),
            "v1,Vif40peJBP7Iyl0XGmu61n4MwdrcHov5CFREBpE0svs="
        );
    }

    #[test]
    fn altered_signatures_fail() {
        let last_changed = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";
        assert_eq!(check_a(last_changed), Err(SignatureError::NoMatch));
        assert_eq!(check_a("v1,"), Err(SignatureError::NoMatch));
        assert_eq!(check_a(&A_SIG[..8]), Err(SignatureError::NoMatch));
    }

    #[test]
    fn body_without_its_space_fails() {
        assert_eq!(
            check_a_over(A_SIG, br#"{"test":2432232314}"#),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn tampered_body_fails() {
        assert_eq!(
            check_a_over(A_SIG, br#"{"test": 2432232315}"#),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn any_missing_header_fails() {
        let v = verifier(A_SECRET);
        for name in [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER] {
            let mut h = headers(A_ID, &A_TS.to_string(), A_SIG);
            h.remove(name);
            assert_eq!(
                v.verify(&h, A_BODY, A_TS).map(drop),
                Err(SignatureError::MissingHeader(name))
            );
        }
    }

    #[test]
    fn non_numeric_timestamp_fails() {
        let v = verifier(A_SECRET);
        let h = headers(A_ID, "hello", A_SIG);
        assert_eq!(
            v.verify(&h, A_BODY, A_TS).map(drop),
            Err(SignatureError::BadTimestamp)
        );
    }

    #[test]
    fn tolerance_holds_both_ways() {
        let key = SigningKey::parse(A_SECRET).unwrap();
        let v = verifier(A_SECRET);
        let now = 1_700_000_000;
        for (offset, ok) in [
            (-301, false),
            (-300, true),
            (0, true),
            (300, true),
            (301, false),
        ] {
            let ts = now + offset;
            let h = headers(A_ID, &ts.to_string(), &key.sign(A_ID, ts, A_BODY));
            let expected = if ok {
                Ok(())
            } else {
                Err(SignatureError::OutsideTolerance)
            };
            assert_eq!(
                v.verify(&h, A_BODY, now).map(drop),
                expected,
                "offset {offset}"
            );
        }
    }

    #[test]
    fn several_entries_pass_when_one_matches() {
        let listed =
            format!("{OTHER} v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {A_SIG} {OTHER}");
        assert_eq!(check_a(&listed), Ok(()));
        let without = format!("{OTHER} v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {OTHER}");
        assert_eq!(check_a(&without), Err(SignatureError::NoMatch));
    }

    #[test]
    fn other_versions_are_skipped() {
        let v2_only = A_SIG.replacen("v1,", "v2,", 1);
        assert_eq!(check_a(&v2_only), Err(SignatureError::NoMatch));
    }

    #[test]
    fn secret_without_prefix_works_the_same() {
        let v = verifier("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let h = headers(A_ID, &A_TS.to_string(), A_SIG);
        assert_eq!(v.verify(&h, A_BODY, A_TS).map(drop), Ok(()));
    }

    #[test]
    fn rotation_accepts_every_listed_secret() {
        let old = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        for list in [
            format!("{old} {A_SECRET}"),
            format!("{A_SECRET},{old}"),
            format!("{old}, {A_SECRET}"),
        ] {
            let v = verifier(&list);
            let h = headers(A_ID, &A_TS.to_string(), A_SIG);
            assert_eq!(v.verify(&h, A_BODY, A_TS).map(drop), Ok(()), "{list}");
        }
        let v = verifier(old);
        let h = headers(A_ID, &A_TS.to_string(), A_SIG);
        assert_eq!(
            v.verify(&h, A_BODY, A_TS).map(drop),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert_eq!(
            Verifier::from_secrets("", 300).unwrap_err(),
            SecretError::Empty
        );
        assert_eq!(
            Verifier::from_secrets("whsec_", 300).unwrap_err(),
            SecretError::Empty
        );
        assert_eq!(
            Verifier::from_secrets("whsec_not base64!", 300).unwrap_err(),
            SecretError::NotBase64
        );
    }

    #[test]
    fn keys_never_show_in_debug() {
        let v = verifier(A_SECRET);
        let shown = format!("{v:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        let bytes = BASE64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert!(!shown.contains(&format!("{bytes:?}")[1..10]));
    }
}
