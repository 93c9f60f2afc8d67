//! The S3 bucket that keeps output files: client construction and reachability.

use crate::config::StorageConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use std::time::Duration;

/// Why the bucket could not be used. Messages carry no key, URL with credentials or body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The bucket could not be reached or refused the call.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// An S3 client for the configured bucket, built once per cold start and only by routes
/// that touch storage.
#[derive(Debug, Clone)]
pub struct Storage {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl Storage {
    /// Builds the client from the configuration; makes no network call.
    pub fn new(config: &StorageConfig) -> Storage {
        let credentials = Credentials::new(
            config.access_key_id.clone(),
            config.secret_access_key.expose().to_owned(),
            config.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "environment",
        );
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            // Checksums only where S3 requires them: S3-compatible stores differ in their
            // support for the newer flexible checksums, and the bytes are already verified
            // by TLS and the part ETags.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(config.force_path_style);
        if let Some(endpoint) = &config.endpoint_url {
            builder = builder.endpoint_url(endpoint);
        }
        Storage {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
        }
    }

    /// The S3 client.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Checks the bucket exists and the credentials reach it, within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), StorageError> {
        let call = self.client.head_bucket().bucket(&self.bucket).send();
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(StorageError::Unavailable("timed out".into())),
            Ok(Err(e)) => Err(StorageError::Unavailable(sdk_error_kind(&e))),
            Ok(Ok(_)) => Ok(()),
        }
    }
}

/// A short description of an SDK error for logs and answers: its kind and, when the store
/// answered, S3's error code (`InternalError`, `AccessDenied`, ...), never a message or body.
pub fn sdk_error_kind<E, R>(error: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
    R: std::fmt::Debug,
{
    use aws_sdk_s3::error::SdkError;
    match error {
        SdkError::ServiceError(e) => match e.err().code() {
            // S3's codes are a fixed vocabulary of identifiers; anything else is not repeated.
            Some(code) if code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric()) => {
                format!("refused by the store ({code})")
            }
            _ => "refused by the store".into(),
        },
        SdkError::ConstructionFailure(_) => "request could not be built".into(),
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(_) => "connection failed".into(),
        SdkError::ResponseError(_) => "unreadable response".into(),
        _ => "failed".into(),
    }
}
