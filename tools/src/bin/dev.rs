//! Local dev server: every route on one port (default `127.0.0.1:3000`, or `$PORT`) at the
//! contract's paths, through the same core handlers and HTTP adapter the functions use.
//!
//! With `REPLICATE_API_TOKEN` and `CRON_SECRET` set it also runs reconcile every
//! `DEV_RECONCILE_SECONDS` (60), as a schedule would in production, so a webhook that cannot
//! reach a laptop still finishes its job.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use shared::activity::Counted;
use shared::config::ProcessEnv;
use shared::platform::{self, BoxError};
use shared::respond;
use shared::routes::{Health, Reconcile, Webhook, WebhookRoute, table};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

struct Routes {
    train: Counted<Webhook>,
    predict: Counted<Webhook>,
    unified: Counted<Webhook>,
    completed: Counted<Webhook>,
    health: Health,
    reconcile: Reconcile,
}

impl Routes {
    async fn answer(&self, req: Request<Incoming>) -> Response<Bytes> {
        // Both the contract's paths and Vercel's file paths (`/api/train`), from the table.
        let bin = table::by_path(req.uri().path()).map(|route| route.bin);
        match bin {
            Some("train") => platform::http_request(&self.train, req).await,
            Some("predict") => platform::http_request(&self.predict, req).await,
            Some("unified") => platform::http_request(&self.unified, req).await,
            Some("completed") => platform::http_request(&self.completed, req).await,
            Some("health") => platform::http_request(&self.health, req).await,
            Some("reconcile") => platform::http_request(&self.reconcile, req).await,
            _ => respond::json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({ "error": "no route at this path" }),
            ),
        }
    }
}

/// Runs reconcile on an interval, through the same handler the route uses.
fn poll_reconcile(routes: Arc<Routes>) {
    let (Ok(secret), Ok(_)) = (
        std::env::var("CRON_SECRET"),
        std::env::var("REPLICATE_API_TOKEN"),
    ) else {
        shared::logging::event(
            "info",
            "dev",
            "reconcile polling is off: set REPLICATE_API_TOKEN (and CRON_SECRET) to turn it on",
        );
        return;
    };
    let every = std::env::var("DEV_RECONCILE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(std::time::Duration::from_secs(every));
        loop {
            ticks.tick().await;
            let request = Request::post("/api/cron/reconcile")
                .header("authorization", format!("Bearer {secret}"))
                .body(Bytes::new());
            if let Ok(request) = request {
                platform::respond(&routes.reconcile, request, "dev-reconcile").await;
            }
        }
    });
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let env = ProcessEnv;
    let routes = Arc::new(Routes {
        train: Counted::new(Webhook::new(WebhookRoute::Train, &env), &env),
        predict: Counted::new(Webhook::new(WebhookRoute::Predict, &env), &env),
        unified: Counted::new(Webhook::new(WebhookRoute::Unified, &env), &env),
        completed: Counted::new(Webhook::new(WebhookRoute::Completed, &env), &env),
        health: Health::new(&env),
        reconcile: Reconcile::new(&env),
    });
    poll_reconcile(Arc::clone(&routes));
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    shared::logging::event(
        "info",
        "dev",
        &format!("serving every route on http://127.0.0.1:{port}"),
    );

    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let routes = Arc::clone(&routes);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let routes = Arc::clone(&routes);
                async move {
                    Ok::<_, Infallible>(routes.answer(req).await.map(http_body_util::Full::new))
                }
            });
            // A client that hangs up mid-request is its own problem, not the server's.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
