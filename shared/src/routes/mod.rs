//! The routes' core handlers: `http::Request<Bytes>` in, `http::Response<Bytes>` out.

pub mod health;
pub mod reconcile;
pub mod table;
pub mod webhook;

pub use health::Health;
pub use reconcile::Reconcile;
pub use table::{ROUTES, Route};
pub use webhook::{Webhook, WebhookRoute};
