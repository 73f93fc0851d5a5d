use std::sync::Arc;

use apalis::prelude::BoxDynError;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::{Deps, Job, Payload};

/// Expire one hold when its time is up, if it is still active. Scheduled at the hold's
/// `expiresAt` when it is taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireReservation {
    pub reservation_id: i64,
}

impl Payload for ExpireReservation {
    const QUEUE: &'static str = "expiry";
}

impl Job for ExpireReservation {
    /// A database failure is retried; a second run changes nothing.
    async fn run(self, deps: Arc<Deps>) -> Result<(), BoxDynError> {
        let now = Utc::now();
        let offer_ttl = deps.settings.drops.reservation_ttl;
        let expired = entity::drops::expire(&deps.db, self.reservation_id, offer_ttl, now);
        if let Some(ended) = expired.await? {
            deps.effects.hold_ended(&ended).await;
        }
        Ok(())
    }
}
