//! A local HTTP server standing in for what the functions call out to: replicate.delivery
//! (registered and generated files, 404s, redirects), Replicate's API and Resend's (set
//! answers per path). It logs every request it receives, body included.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

/// A request the stand-in received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The `authorization` header, if any.
    pub authorization: Option<String>,
    /// The body.
    pub body: Bytes,
}

/// A set answer: status, content type and body.
type Answer = (u16, String, Bytes);

/// What the handle sets and every connection reads.
#[derive(Default)]
struct State {
    log: Mutex<Vec<Received>>,
    files: Mutex<HashMap<String, Answer>>,
    holds: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    /// Paths whose requests wait until their gate opens; once open, every request passes.
    gates: Mutex<HashMap<String, tokio::sync::watch::Receiver<bool>>>,
    /// Where every request is redirected (307, same path), when set.
    forward: Mutex<Option<String>>,
}

/// A running stand-in; stops when dropped.
pub struct StandIn {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub base: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    /// Starts a server on a free port.
    pub async fn start() -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let state: Arc<State> = Arc::default();
        let served = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let state = Arc::clone(&state);
                        let gate = state
                            .gates
                            .lock()
                            .expect("lock")
                            .get(req.uri().path())
                            .cloned();
                        async move {
                            if let Some(mut gate) = gate {
                                let _ = gate.wait_for(|open| *open).await;
                            }
                            let to = state.forward.lock().expect("lock").clone();
                            Ok::<_, Infallible>(match to {
                                Some(base) => forwarded(&req, &base, &state.log),
                                None => answer(req, &state).await,
                            })
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        StandIn { base, state, task }
    }

    /// Makes requests to `path` wait until the returned sender sends `true`; from then on
    /// every request to it passes (unlike [`StandIn::hold`], which releases one).
    pub fn gate(&self, path: &str) -> tokio::sync::watch::Sender<bool> {
        let (open, gate) = tokio::sync::watch::channel(false);
        self.state
            .gates
            .lock()
            .expect("lock")
            .insert(path.to_owned(), gate);
        open
    }

    /// From now on, answers every request with a 307 to the same path under `base`, as a
    /// proxy or a moved API would.
    pub fn redirect_everything_to(&self, base: &str) {
        *self.state.forward.lock().expect("lock") = Some(base.to_owned());
    }

    /// Serves `bytes` at `/f/{name}`, but only once the returned handle is notified: the
    /// request waits until then, as a slow source would.
    pub fn add_held(
        &self,
        name: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> (String, Arc<tokio::sync::Notify>) {
        let url = self.add(name, content_type, bytes);
        (url, self.held(format!("/f/{name}")))
    }

    /// Holds every request to `path` until the returned handle is notified (each request
    /// waits for one notification), as a slow upstream would.
    pub fn hold(&self, path: &str) -> Arc<tokio::sync::Notify> {
        self.held(path.to_owned())
    }

    /// A new hold under `key` (a path, or `stall:` and a path), and what releases it.
    fn held(&self, key: String) -> Arc<tokio::sync::Notify> {
        let release = Arc::new(tokio::sync::Notify::new());
        self.state
            .holds
            .lock()
            .expect("lock")
            .insert(key, Arc::clone(&release));
        release
    }

    /// Answers requests to `path` with `status`, `content_type` and `body`.
    pub fn set(&self, path: &str, status: u16, content_type: &str, body: &[u8]) {
        self.state.files.lock().expect("lock").insert(
            path.to_owned(),
            (
                status,
                content_type.to_owned(),
                Bytes::copy_from_slice(body),
            ),
        );
    }

    /// Answers `path` with a JSON document.
    pub fn set_json(&self, path: &str, status: u16, body: &serde_json::Value) {
        self.set(
            path,
            status,
            "application/json",
            body.to_string().as_bytes(),
        );
    }

    /// Serves `bytes` at `/f/{name}` with `content_type`; returns its URL.
    pub fn add(&self, name: &str, content_type: &str, bytes: &[u8]) -> String {
        self.set(&format!("/f/{name}"), 200, content_type, bytes);
        format!("{}/f/{name}", self.base)
    }

    /// URL of a generated file of `size` bytes (see [`generated_sha256`]).
    pub fn big(&self, size: usize, name: &str) -> String {
        format!("{}/big/{size}/{name}", self.base)
    }

    /// URL of a file of `size` bytes sent one byte a second, as a stalled source trickles.
    pub fn trickle(&self, size: usize, name: &str) -> String {
        format!("{}/trickle/{size}/{name}", self.base)
    }

    /// URL of a generated file of `size` bytes (see [`generated_sha256`]) whose first
    /// `STALL_AFTER` bytes come at once and the rest only once the returned handle is
    /// notified: a large file caught mid-copy.
    pub fn stalled_big(&self, size: usize, name: &str) -> (String, Arc<tokio::sync::Notify>) {
        let path = format!("/stall/{size}/{name}");
        let release = self.held(format!("stall:{path}"));
        (format!("{}{path}", self.base), release)
    }

    /// URL that redirects to `to`.
    pub fn redirect(&self, to: &str) -> String {
        format!("{}/redirect?to={to}", self.base)
    }

    /// URL that answers 404, as Replicate does once it has deleted a file.
    pub fn gone(&self) -> String {
        format!("{}/gone/out.png", self.base)
    }

    /// Paths requested so far.
    pub fn requests(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.path).collect()
    }

    /// Requests received so far, in full.
    pub fn received(&self) -> Vec<Received> {
        self.state.log.lock().expect("lock").clone()
    }
}

async fn answer(req: Request<Incoming>, state: &State) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let method = req.method().to_string();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_body(req).await;
    state.log.lock().expect("lock").push(Received {
        method,
        path: path.clone(),
        authorization,
        body,
    });
    let hold = state.holds.lock().expect("lock").get(&path).cloned();
    if let Some(release) = hold {
        release.notified().await;
    }
    let file = state.files.lock().expect("lock").get(&path).cloned();
    if let Some((code, content_type, bytes)) = file {
        return Response::builder()
            .status(code)
            .header("content-type", content_type)
            .body(Full::new(bytes).boxed())
            .expect("response");
    }
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("big"), Some(size), Some(_)) => {
            let size: usize = size.parse().unwrap_or(0);
            Response::builder()
                .header("content-type", "application/x-tar")
                .header("content-length", size)
                .body(StreamBody::new(generated_stream(size)).boxed())
                .expect("response")
        }
        (Some("trickle"), Some(size), Some(_)) => {
            let size: usize = size.parse().unwrap_or(0);
            let bytes = futures_util::stream::unfold(0usize, move |sent| async move {
                if sent >= size {
                    return None;
                }
                if sent > 0 {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Some((Ok(Frame::data(Bytes::from_static(b"x"))), sent + 1))
            });
            Response::builder()
                .header("content-type", "image/png")
                .header("content-length", size)
                .body(StreamBody::new(bytes).boxed())
                .expect("response")
        }
        (Some("stall"), Some(size), Some(_)) => {
            let size: usize = size.parse().unwrap_or(0);
            let release = state
                .holds
                .lock()
                .expect("lock")
                .get(&format!("stall:{path}"))
                .cloned()
                .unwrap_or_default();
            let first = STALL_AFTER.min(size);
            let head = futures_util::StreamExt::take(generated_stream(size), first.div_ceil(CHUNK));
            let tail = futures_util::stream::once(async move {
                release.notified().await;
                Ok(Frame::data(Bytes::new()))
            });
            let rest = futures_util::stream::iter(
                (first.div_ceil(CHUNK)..size.div_ceil(CHUNK))
                    .map(move |i| Ok(Frame::data(chunk(i, CHUNK.min(size - i * CHUNK))))),
            );
            Response::builder()
                .header("content-type", "application/x-tar")
                .header("content-length", size)
                .body(
                    StreamBody::new(futures_util::StreamExt::chain(
                        futures_util::StreamExt::chain(head, tail),
                        rest,
                    ))
                    .boxed(),
                )
                .expect("response")
        }
        (Some("redirect"), None, None) => {
            let to = query
                .as_deref()
                .and_then(|q| q.strip_prefix("to="))
                .unwrap_or_default()
                .to_owned();
            Response::builder()
                .status(StatusCode::FOUND)
                .header("location", to)
                .body(Full::new(Bytes::new()).boxed())
                .expect("response")
        }
        _ => status(StatusCode::NOT_FOUND),
    }
}

/// A request's whole body; what arrived before it broke off is not kept (empty).
pub async fn read_body(req: Request<Incoming>) -> Bytes {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

fn forwarded(req: &Request<Incoming>, base: &str, log: &Mutex<Vec<Received>>) -> Response<Body> {
    log.lock().expect("lock").push(Received {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        authorization: None,
        body: Bytes::new(),
    });
    let target = format!(
        "{base}{}",
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    Response::builder()
        .status(StatusCode::TEMPORARY_REDIRECT)
        .header("location", target)
        .body(Full::new(Bytes::new()).boxed())
        .expect("response")
}

fn status(code: StatusCode) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::new()).boxed())
        .expect("response")
}

const CHUNK: usize = 64 * 1024;

/// How much of a [`StandIn::stalled_big`] file comes before it stalls: two multipart parts.
pub const STALL_AFTER: usize = 16 * 1024 * 1024;

fn chunk(index: usize, len: usize) -> Bytes {
    // Each chunk differs, so a dropped, repeated or reordered part changes the hash.
    let seed = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Bytes::from(
        (0..len)
            .map(|i| (seed.wrapping_add(i as u64 * 31) >> 3) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn generated_stream(
    size: usize,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    let chunks = size.div_ceil(CHUNK);
    futures_util::stream::iter((0..chunks).map(move |i| {
        let len = CHUNK.min(size - i * CHUNK);
        Ok(Frame::data(chunk(i, len)))
    }))
}

/// The SHA-256 of the generated file of `size` bytes.
pub fn generated_sha256(size: usize) -> String {
    let mut hash = Sha256::new();
    for i in 0..size.div_ceil(CHUNK) {
        hash.update(chunk(i, CHUNK.min(size - i * CHUNK)));
    }
    format!("{:x}", hash.finalize())
}
