use std::sync::Arc;

use apalis::prelude::BoxDynError;
use chrono::Utc;

use super::{Deps, Job, logged, payloads::DrawWinners};

impl Job for DrawWinners {
    fn concurrency(_: &crate::platform::settings::Settings) -> usize {
        1
    }

    /// A database failure is retried; a drop already drawn is not drawn again.
    async fn run(self, deps: Arc<Deps>) -> Result<(), BoxDynError> {
        draw(&deps, self.drop_id)
            .await
            .map_err(|e| logged(e, "draw failed"))
    }
}

/// Draws the drop if its entries have closed and nobody drew it yet, and tells everyone.
///
/// # Errors
/// Database failure.
pub async fn draw(deps: &Deps, drop_id: i64) -> Result<(), entity::Error> {
    let default_ttl = deps.settings.drops.reservation_ttl;
    let drawn = entity::drops::draw::draw(&deps.db, drop_id, default_ttl, Utc::now()).await?;
    if let Some(drawn) = drawn {
        tracing::info!(
            drop_id,
            winners = drawn.offers.len(),
            waitlisted = drawn.waitlisted.len(),
            "draw done"
        );
        deps.effects.drawn(&drawn).await;
    }
    Ok(())
}
