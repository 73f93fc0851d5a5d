use std::sync::Arc;

use apalis::prelude::BoxDynError;
use chrono::Utc;

use super::{Deps, Job, logged, payloads::NotifyRestock};

/// Alerts per fan-out transaction (and per bulk enqueue).
const FANOUT_BATCH: u64 = 500;

impl Job for NotifyRestock {
    fn concurrency(_: &crate::platform::settings::Settings) -> usize {
        2
    }

    /// A database failure is retried; subscribers already alerted are not alerted again.
    async fn run(self, deps: Arc<Deps>) -> Result<(), BoxDynError> {
        fan_out(&deps, self.restock_event_id)
            .await
            .map_err(|e| logged(e, "restock fan-out failed"))
    }
}

/// Writes a ledger row for every confirmed, unalerted subscriber of the restock's product
/// that its current wave allows, [`FANOUT_BATCH`] per transaction, and wakes the mail pumps.
/// A wave spent while subscribers wait schedules this job again for the next wave (the
/// reconciler opens it if that job is lost).
///
/// # Errors
/// Database failure.
pub async fn fan_out(deps: &Deps, restock_event_id: i64) -> Result<(), entity::Error> {
    loop {
        let waves = deps.settings.mail.restock_waves;
        let batch = entity::catalog::fanout::fan_out(
            &deps.db,
            restock_event_id,
            FANOUT_BATCH,
            waves,
            Utc::now(),
        )
        .await?;
        if !batch.message_ids.is_empty() {
            tracing::info!(
                restock_event_id,
                alerts = batch.message_ids.len(),
                "restock alerts queued"
            );
            deps.effects.emails_queued(&batch.message_ids).await;
        }
        if let Some(at) = batch.next_wave_at {
            deps.effects.next_wave_due(restock_event_id, at).await;
        }
        if !batch.more {
            return Ok(());
        }
    }
}
