use std::sync::Arc;

use apalis::prelude::BoxDynError;
use chrono::Utc;

use super::{Deps, Job, payloads::ExpireReservation};

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
