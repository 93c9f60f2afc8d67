//! The `health` function: `GET /api/health`.

use shared::platform::{self, BoxError};
use shared::routes::Health;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    platform::run(Health::new).await
}
