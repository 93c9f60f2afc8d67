//! The `unified` function: see the contract's route table.

use shared::platform::{self, BoxError};
use shared::routes::{Webhook, WebhookRoute};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    platform::run(|settings| Webhook::new(WebhookRoute::Unified, settings)).await
}
