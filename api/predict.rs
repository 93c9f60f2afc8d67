//! The `predict` function: see the contract's route table.

use shared::platform::{self, BoxError};
use shared::routes::{Webhook, WebhookRoute};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    platform::run(|env| Webhook::new(WebhookRoute::Predict, env)).await
}
