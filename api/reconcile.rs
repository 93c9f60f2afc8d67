//! The `reconcile` function: `/api/cron/reconcile`, run on a schedule.

use shared::platform::{self, BoxError};
use shared::routes::Reconcile;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    platform::run_scheduled(Reconcile::new).await
}
