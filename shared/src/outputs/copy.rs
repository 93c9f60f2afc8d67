//! The S3 copier: every file of a succeeded job's output is streamed from its source into
//! the bucket under a deterministic key, so a retried event rewrites the same objects.
//!
//! Memory is bounded whatever the size: a file is read one part (8 MiB) at a time and sent
//! as a multipart upload once it is larger than one part; at most [`PARALLEL_FILES`] files
//! are in flight.

use super::hosts::{GuardedResolver, HostPolicy, Refusal};
use super::rewrite;
use crate::job::JobKind;
use crate::storage::{Storage, sdk_error_kind};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{StreamExt as _, stream};
use reqwest::Url;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Size of one multipart part, and of the buffer each file in flight holds (S3's minimum
/// part is 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Files copied at once.
pub const PARALLEL_FILES: usize = 4;
/// How long a source may send nothing before the copy gives up on it (a trickling one is
/// stopped by the time limit instead).
pub const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// The most an abort of an unfinished upload may take.
const ABORT_LIMIT: Duration = Duration::from_secs(2);

/// When a job's copy must stop: the time its invocation has, or another of its files
/// failing (then the rest stop too, and abort their uploads, rather than finish work that
/// will be redone).
#[derive(Debug, Clone)]
struct Stop {
    until: Instant,
    failed: tokio::sync::watch::Receiver<bool>,
}

impl Stop {
    /// Runs one step of file `n`'s copy, unless the copy must stop first (or, with `idle`,
    /// the step takes longer than that).
    async fn within<T>(
        &self,
        n: usize,
        idle: Option<Duration>,
        step: impl Future<Output = Result<T, CopyError>>,
    ) -> Result<T, CopyError> {
        let mut failed = self.failed.clone();
        let stalled = async {
            match idle {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = step => done,
            () = tokio::time::sleep_until(self.until.into()) => Err(CopyError::OutOfTime { n }),
            () = stalled => Err(CopyError::Stalled { n }),
            _ = failed.wait_for(|failed| *failed) => Err(CopyError::Cancelled { n }),
        }
    }
}

/// Why an output could not be stored. Messages name the file's position and host, never a
/// full URL (signed URLs carry tokens) or a body.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The URL is not allowed by `OUTPUT_HOSTS`; it was not fetched.
    #[error("output file {n} refused: {reason}")]
    Refused {
        /// Position in the output.
        n: usize,
        /// Why.
        reason: Refusal,
    },
    /// The source redirected somewhere not allowed; the redirect was not followed.
    #[error("output file {n} redirected to a host not in OUTPUT_HOSTS")]
    RefusedRedirect {
        /// Position in the output.
        n: usize,
    },
    /// The source answered 404 or 410: Replicate has deleted the file.
    #[error("output file {n} is gone from its source (HTTP {status})")]
    Gone {
        /// Position in the output.
        n: usize,
        /// The source's status.
        status: u16,
    },
    /// The source could not be read.
    #[error("output file {n} could not be fetched: {reason}")]
    Fetch {
        /// Position in the output.
        n: usize,
        /// What went wrong, briefly.
        reason: String,
    },
    /// A `data:` URI that does not decode.
    #[error("output file {n} is not a valid data: URI")]
    BadDataUri {
        /// Position in the output.
        n: usize,
    },
    /// The function's time ran out before the file was stored (its upload was aborted).
    #[error("output file {n} was not stored before the function's time limit")]
    OutOfTime {
        /// Position in the output.
        n: usize,
    },
    /// The source stopped sending for longer than [`IDLE_LIMIT`].
    #[error("output file {n}: the source sent nothing for {} s", IDLE_LIMIT.as_secs())]
    Stalled {
        /// Position in the output.
        n: usize,
    },
    /// Another file of the job failed, so this one was stopped (and its upload aborted).
    #[error("output file {n} was stopped because another output file failed")]
    Cancelled {
        /// Position in the output.
        n: usize,
    },
    /// The bucket refused or could not be reached.
    #[error("storage failed for output file {n}: {reason}")]
    Store {
        /// Position in the output.
        n: usize,
        /// The SDK error kind.
        reason: String,
    },
}

impl CopyError {
    /// Whether the source no longer has the file (reconcile then fails the job).
    pub fn is_gone(&self) -> bool {
        matches!(self, CopyError::Gone { .. })
    }

    /// Whether no retry can change this: the value is not a file we may fetch (a host not
    /// listed, a redirect off the list, something that only looks like a URL or a `data:`
    /// URI). Such a value is kept as received rather than holding the job back forever.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            CopyError::Refused { .. }
                | CopyError::RefusedRedirect { .. }
                | CopyError::BadDataUri { .. }
        )
    }
}

/// The output with its files replaced by stored URLs.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOutput {
    /// Replicate's shape, with each stored file's reference replaced by its stored URL.
    pub output: Value,
    /// The stored URLs, in output order.
    pub urls: Vec<String>,
    /// Why each value that was not stored was kept as received (position and reason, never
    /// the value: a URL may carry a token).
    pub kept: Vec<String>,
}

/// Where a job's files go.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// `models` or `predictions`.
    pub kind: JobKind,
    /// The job's owner.
    pub user_id: Uuid,
    /// Replicate's id for the job.
    pub replicate_id: &'a str,
}

/// Copies output files into the bucket. Built once per cold start, on first use.
#[derive(Debug, Clone)]
pub struct Copier {
    http: reqwest::Client,
    storage: Storage,
    policy: Arc<HostPolicy>,
    prefix: String,
    public_base_url: Option<String>,
}

impl Copier {
    /// A copier writing through `storage` and fetching only what `policy` allows.
    pub fn new(
        storage: Storage,
        policy: HostPolicy,
        prefix: String,
        public_base_url: Option<String>,
    ) -> Result<Copier, reqwest::Error> {
        let policy = Arc::new(policy);
        let redirect_policy = Arc::clone(&policy);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    attempt.stop()
                } else if redirect_policy.check(attempt.url()).is_ok() {
                    attempt.follow()
                } else {
                    attempt.error(RedirectRefused)
                }
            }))
            .dns_resolver(Arc::new(GuardedResolver::new(Arc::clone(&policy))))
            // A proxy from HTTPS_PROXY/HTTP_PROXY would resolve names itself, past the
            // guard above.
            .no_proxy()
            // No total timeout: the invocation's own time limit bounds every copy (Stop).
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Copier {
            http,
            storage,
            policy,
            prefix,
            public_base_url,
        })
    }

    /// Copies the files `references` lists (found in `output` when it was parsed, in
    /// document order) and returns the output rewritten to the stored URLs. A value that is
    /// not a file we may fetch is not fetched and stays as received ([`CopyError::is_permanent`]);
    /// any other failure fails the whole copy, so a retry can redo it: the other files then
    /// stop too, and every unfinished upload is aborted. Nothing runs past `until`.
    pub async fn copy_all(
        &self,
        to: Destination<'_>,
        output: &Value,
        references: &[String],
        until: Instant,
    ) -> Result<StoredOutput, CopyError> {
        let base = format!(
            "{}{}/{}/{}",
            self.prefix,
            to.kind.table(),
            to.user_id,
            to.replicate_id
        );
        let base = base.as_str();
        // Each value is classified first (owned), so the stream below borrows only `self`.
        let sources: Vec<(usize, Result<Source, CopyError>)> = references
            .iter()
            .enumerate()
            .map(|(n, reference)| (n, self.source(n, reference)))
            .collect();
        let (failed, watch) = tokio::sync::watch::channel(false);
        let stop = Stop {
            until,
            failed: watch,
        };
        let (stop, failed) = (&stop, &failed);
        // Every file's result is waited for, so that a stopped file has aborted its upload
        // before the copy answers.
        let placed: Vec<Result<String, CopyError>> = stream::iter(sources)
            .map(|(n, source)| async move {
                let placed = self.place(n, source, base, stop).await;
                if placed.as_ref().is_err_and(|e| !e.is_permanent()) {
                    failed.send_replace(true);
                }
                placed
            })
            .buffered(PARALLEL_FILES)
            .collect()
            .await;
        if placed
            .iter()
            .any(|p| p.as_ref().is_err_and(|e| !e.is_permanent()))
        {
            let mut failures: Vec<CopyError> = placed
                .into_iter()
                .filter_map(Result::err)
                .filter(|e| !e.is_permanent())
                .collect();
            // The file that failed, not the ones stopped because of it.
            let at = failures
                .iter()
                .position(|e| !matches!(e, CopyError::Cancelled { .. }))
                .unwrap_or(0);
            return Err(failures.swap_remove(at));
        }
        let mut kept = Vec::new();
        let stored: Vec<Option<String>> = placed
            .into_iter()
            .map(|placed| placed.map_err(|e| kept.push(e.to_string())).ok())
            .collect();
        Ok(StoredOutput {
            output: rewrite(output, &stored),
            urls: stored.into_iter().flatten().collect(),
            kept,
        })
    }

    async fn place(
        &self,
        n: usize,
        source: Result<Source, CopyError>,
        base: &str,
        stop: &Stop,
    ) -> Result<String, CopyError> {
        self.copy_one(n, source?, base, stop).await
    }

    fn source(&self, n: usize, reference: &str) -> Result<Source, CopyError> {
        let trimmed = reference.trim();
        if trimmed
            .get(..5)
            .is_some_and(|s| s.eq_ignore_ascii_case("data:"))
        {
            return DataUri::parse(trimmed)
                .map(Source::Data)
                .ok_or(CopyError::BadDataUri { n });
        }
        let url = Url::parse(trimmed).map_err(|_| CopyError::Refused {
            n,
            reason: Refusal::NotUrl,
        })?;
        self.policy
            .check(&url)
            .map_err(|reason| CopyError::Refused { n, reason })?;
        Ok(Source::Url(url))
    }

    async fn copy_one(
        &self,
        n: usize,
        source: Source,
        base: &str,
        stop: &Stop,
    ) -> Result<String, CopyError> {
        match source {
            Source::Data(data) => {
                let key = format!("{base}/{n}{}", extension_for_type(&data.media_type));
                let served = Served::from_source(&data.media_type);
                stop.within(n, None, self.put(n, &key, &served, data.bytes))
                    .await?;
                Ok(self.stored_url(&key))
            }
            Source::Url(url) => {
                let key = format!("{base}/{n}{}", extension_of(&url));
                self.fetch_into(n, &url, &key, stop).await?;
                Ok(self.stored_url(&key))
            }
        }
    }

    async fn fetch_into(
        &self,
        n: usize,
        url: &Url,
        key: &str,
        stop: &Stop,
    ) -> Result<(), CopyError> {
        let request = async {
            self.http.get(url.clone()).send().await.map_err(|e| {
                if e.is_redirect() {
                    CopyError::RefusedRedirect { n }
                } else {
                    CopyError::Fetch {
                        n,
                        reason: fetch_reason(&e),
                    }
                }
            })
        };
        let response = stop.within(n, Some(IDLE_LIMIT), request).await?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Err(CopyError::Gone {
                n,
                status: status.as_u16(),
            });
        }
        if status.is_redirection() {
            // A redirect the policy stopped (too many hops).
            return Err(CopyError::RefusedRedirect { n });
        }
        if !status.is_success() {
            return Err(CopyError::Fetch {
                n,
                reason: format!("source answered HTTP {}", status.as_u16()),
            });
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream");
        let served = Served::from_source(content_type);
        self.stream_upload(n, key, &served, response, stop).await
    }

    /// Reads the body one part at a time: a body smaller than a part is one PutObject,
    /// anything larger a multipart upload, aborted if anything fails.
    async fn stream_upload(
        &self,
        n: usize,
        key: &str,
        served: &Served,
        mut response: reqwest::Response,
        stop: &Stop,
    ) -> Result<(), CopyError> {
        let mut part = Vec::with_capacity(PART_SIZE);
        let mut upload: Option<Multipart> = None;
        let result = async {
            loop {
                let read = async {
                    response.chunk().await.map_err(|e| CopyError::Fetch {
                        n,
                        reason: fetch_reason(&e),
                    })
                };
                let chunk = stop.within(n, Some(IDLE_LIMIT), read).await?;
                let Some(mut chunk) = chunk else { break };
                // Fill the part to exactly PART_SIZE and no further: a chunk that would
                // overflow it is split, so the buffer never grows past one part (a Vec that
                // outgrew its capacity would double it).
                while !chunk.is_empty() {
                    let take = (PART_SIZE - part.len()).min(chunk.len());
                    part.extend_from_slice(&chunk.split_to(take));
                    if part.len() < PART_SIZE {
                        continue;
                    }
                    let full = std::mem::take(&mut part);
                    if upload.is_none() {
                        let started = self.start_multipart(n, key, served);
                        upload = Some(stop.within(n, None, started).await?);
                    }
                    if let Some(upload) = upload.as_mut() {
                        stop.within(n, None, self.upload_part(n, key, upload, full))
                            .await?;
                    }
                    // The next buffer only once the sent one is gone: one part in memory.
                    part = Vec::with_capacity(PART_SIZE);
                }
            }
            match upload.as_mut() {
                None => {
                    let put = self.put(n, key, served, Bytes::from(std::mem::take(&mut part)));
                    stop.within(n, None, put).await
                }
                Some(upload) => {
                    if !part.is_empty() {
                        let last = std::mem::take(&mut part);
                        stop.within(n, None, self.upload_part(n, key, upload, last))
                            .await?;
                    }
                    stop.within(n, None, self.complete(n, key, upload)).await
                }
            }
        }
        .await;
        if let (Err(_), Some(upload)) = (&result, &upload) {
            // Best effort: an abandoned upload only costs storage until the bucket's
            // lifecycle rule (or the next successful retry) clears it.
            let abort = self
                .storage
                .client()
                .abort_multipart_upload()
                .bucket(self.storage.bucket())
                .key(key)
                .upload_id(&upload.id)
                .send();
            let _ = tokio::time::timeout(ABORT_LIMIT, abort).await;
        }
        result
    }

    async fn put(
        &self,
        n: usize,
        key: &str,
        served: &Served,
        body: Bytes,
    ) -> Result<(), CopyError> {
        self.storage
            .client()
            .put_object()
            .bucket(self.storage.bucket())
            .key(key)
            .content_type(&served.content_type)
            .set_content_disposition(served.disposition.map(str::to_owned))
            .body(ByteStream::from(body))
            .send()
            .await
            .map(drop)
            .map_err(|e| CopyError::Store {
                n,
                reason: sdk_error_kind(&e),
            })
    }

    async fn start_multipart(
        &self,
        n: usize,
        key: &str,
        served: &Served,
    ) -> Result<Multipart, CopyError> {
        let created = self
            .storage
            .client()
            .create_multipart_upload()
            .bucket(self.storage.bucket())
            .key(key)
            .content_type(&served.content_type)
            .set_content_disposition(served.disposition.map(str::to_owned))
            .send()
            .await
            .map_err(|e| CopyError::Store {
                n,
                reason: sdk_error_kind(&e),
            })?;
        let id = created.upload_id().ok_or_else(|| CopyError::Store {
            n,
            reason: "no upload id".into(),
        })?;
        Ok(Multipart {
            id: id.to_owned(),
            parts: Vec::new(),
        })
    }

    async fn upload_part(
        &self,
        n: usize,
        key: &str,
        upload: &mut Multipart,
        bytes: Vec<u8>,
    ) -> Result<(), CopyError> {
        let number = i32::try_from(upload.parts.len() + 1).unwrap_or(i32::MAX);
        let done = self
            .storage
            .client()
            .upload_part()
            .bucket(self.storage.bucket())
            .key(key)
            .upload_id(&upload.id)
            .part_number(number)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| CopyError::Store {
                n,
                reason: sdk_error_kind(&e),
            })?;
        upload.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(done.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }

    async fn complete(&self, n: usize, key: &str, upload: &mut Multipart) -> Result<(), CopyError> {
        self.storage
            .client()
            .complete_multipart_upload()
            .bucket(self.storage.bucket())
            .key(key)
            .upload_id(&upload.id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut upload.parts)))
                    .build(),
            )
            .send()
            .await
            .map(drop)
            .map_err(|e| CopyError::Store {
                n,
                reason: sdk_error_kind(&e),
            })
    }

    fn stored_url(&self, key: &str) -> String {
        match &self.public_base_url {
            Some(base) => format!("{base}/{key}"),
            None => format!("s3://{}/{key}", self.storage.bucket()),
        }
    }
}

struct Multipart {
    id: String,
    parts: Vec<CompletedPart>,
}

enum Source {
    Url(Url),
    Data(DataUri),
}

#[derive(Debug, thiserror::Error)]
#[error("redirect to a host not in OUTPUT_HOSTS")]
struct RedirectRefused;

/// A decoded `data:` URI (RFC 2397).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataUri {
    /// The media type, `text/plain;charset=US-ASCII` when absent.
    pub media_type: String,
    /// The decoded bytes.
    pub bytes: Bytes,
}

impl DataUri {
    /// Parses and decodes `data:[<mediatype>][;base64],<data>`.
    pub fn parse(uri: &str) -> Option<DataUri> {
        let rest = uri.get(5..)?;
        let (meta, data) = rest.split_once(',')?;
        let (media_type, is_base64) = match meta.strip_suffix(";base64") {
            Some(m) => (m, true),
            None => (meta, false),
        };
        let bytes = if is_base64 {
            let cleaned: String = data.chars().filter(|c| !c.is_whitespace()).collect();
            let decoded = percent_encoding::percent_decode_str(&cleaned).collect::<Vec<u8>>();
            base64::engine::general_purpose::STANDARD
                .decode(&decoded)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&decoded))
                .ok()?
        } else {
            percent_encoding::percent_decode_str(data).collect()
        };
        let media_type = if media_type.is_empty() {
            "text/plain;charset=US-ASCII".to_owned()
        } else {
            media_type.to_owned()
        };
        Some(DataUri {
            media_type,
            bytes: Bytes::from(bytes),
        })
    }
}

/// How a stored object is served from the bucket. A public bucket serves it on its own
/// origin, so a type a browser would run (HTML, SVG, XML, JavaScript, anything that is not
/// a media, archive or weights type) would run script there: such files are stored as
/// `application/octet-stream` with `Content-Disposition: attachment`, which browsers
/// download instead.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Served {
    content_type: String,
    disposition: Option<&'static str>,
}

impl Served {
    fn from_source(content_type: &str) -> Served {
        if is_inert(content_type) {
            Served {
                content_type: content_type.to_owned(),
                disposition: None,
            }
        } else {
            Served {
                content_type: "application/octet-stream".into(),
                disposition: Some("attachment"),
            }
        }
    }
}

/// Media, archive and weights types, which browsers display or download but never run.
fn is_inert(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let (top, sub) = essence.split_once('/').unwrap_or((essence.as_str(), ""));
    match top {
        "image" => !sub.contains("svg") && !sub.contains("xml"),
        "audio" | "video" => !sub.contains("xml"),
        "application" => matches!(
            sub,
            "octet-stream"
                | "zip"
                | "x-zip-compressed"
                | "x-tar"
                | "gzip"
                | "x-gzip"
                | "x-bzip2"
                | "x-xz"
                | "zstd"
                | "x-7z-compressed"
                | "x-safetensors"
                | "pdf"
        ),
        _ => false,
    }
}

/// Extensions that make a browser, or a server guessing a type from the name, treat a
/// file as a page or a script.
const ACTIVE_EXTENSIONS: &[&str] = &[
    "html", "htm", "xhtml", "xht", "shtml", "svg", "svgz", "xml", "xsl", "xslt", "js", "mjs",
    "cjs", "hta",
];

/// The file extension of a URL's last path segment (`.png`), or nothing; never one of
/// [`ACTIVE_EXTENSIONS`].
fn extension_of(url: &Url) -> String {
    url.path_segments()
        .and_then(|mut segments| segments.next_back())
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .filter(|ext| {
            (1..=10).contains(&ext.len())
                && ext.chars().all(|c| c.is_ascii_alphanumeric())
                && !ACTIVE_EXTENSIONS.contains(&ext.as_str())
        })
        .map(|ext| format!(".{ext}"))
        .unwrap_or_default()
}

/// An extension for a media type, for `data:` URIs that have no name.
fn extension_for_type(media_type: &str) -> &'static str {
    let essence = media_type.split(';').next().unwrap_or_default().trim();
    match essence.to_ascii_lowercase().as_str() {
        "image/png" => ".png",
        "image/jpeg" => ".jpg",
        "image/webp" => ".webp",
        "image/gif" => ".gif",
        "audio/wav" | "audio/x-wav" => ".wav",
        "audio/mpeg" => ".mp3",
        "video/mp4" => ".mp4",
        "application/json" => ".json",
        "application/x-tar" => ".tar",
        "application/zip" => ".zip",
        "text/plain" => ".txt",
        _ => "",
    }
}

fn fetch_reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "connection failed".into()
    } else if error.is_body() || error.is_decode() {
        "body interrupted".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_uris_decode() {
        let d = DataUri::parse("data:image/png;base64,aGVsbG8=").unwrap();
        assert_eq!(d.media_type, "image/png");
        assert_eq!(&d.bytes[..], b"hello");
        let d = DataUri::parse("data:,A%20brief%20note").unwrap();
        assert_eq!(d.media_type, "text/plain;charset=US-ASCII");
        assert_eq!(&d.bytes[..], b"A brief note");
        assert!(DataUri::parse("data:image/png;base64,@@@").is_none());
        assert!(DataUri::parse("data:no-comma").is_none());
    }

    #[test]
    fn extensions_come_from_the_name_or_the_type() {
        let url = Url::parse("https://replicate.delivery/xezq/a/out-0.WEBP?x=1").unwrap();
        assert_eq!(extension_of(&url), ".webp");
        let url = Url::parse("https://replicate.delivery/xezq/a/trained_model").unwrap();
        assert_eq!(extension_of(&url), "");
        assert_eq!(extension_for_type("image/jpeg"), ".jpg");
        assert_eq!(extension_for_type("application/x-unknown"), "");
        assert_eq!(extension_for_type("image/svg+xml"), "");
        for active in ["page.html", "a.SVG", "x.xml", "run.js", "p.htm"] {
            let url = Url::parse(&format!("https://replicate.delivery/a/{active}")).unwrap();
            assert_eq!(extension_of(&url), "", "{active}");
        }
    }

    #[test]
    fn types_a_browser_would_run_are_stored_to_download() {
        for active in [
            "text/html",
            "text/html; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/xml",
            "text/javascript",
            "application/javascript",
            "text/plain",
            "",
        ] {
            assert_eq!(
                Served::from_source(active),
                Served {
                    content_type: "application/octet-stream".into(),
                    disposition: Some("attachment")
                },
                "{active}"
            );
        }
        for inert in [
            "image/png",
            "image/webp",
            "video/mp4",
            "audio/wav",
            "application/x-tar",
            "application/zip",
            "application/octet-stream",
        ] {
            assert_eq!(Served::from_source(inert).disposition, None, "{inert}");
            assert_eq!(Served::from_source(inert).content_type, inert);
        }
    }
}
