//! The `completed` function: see the contract's route table.

use shared::activity::Counted;
use shared::platform::{self, BoxError};
use shared::routes::{Webhook, WebhookRoute};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    platform::run(|env| Counted::new(Webhook::new(WebhookRoute::Completed, env), env)).await
}
