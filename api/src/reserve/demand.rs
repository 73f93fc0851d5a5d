//! Reserve requests per drop, for its demand figures: counted in memory on the hot path (an
//! atomic add under a shared lock) and added to the drops' rows once a second in one
//! statement, so `GET /api/admin/drops/{dropId}/stats` counts every instance's.

use std::{
    collections::HashMap,
    sync::{
        PoisonError, RwLock,
        atomic::{AtomicI64, Ordering::Relaxed},
    },
    time::Duration,
};

/// How often counts are added to the database.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct ReserveAttempts {
    counts: RwLock<HashMap<i64, AtomicI64>>,
}

impl ReserveAttempts {
    /// Counts one reserve request for `drop_id`.
    pub fn count(&self, drop_id: i64) {
        {
            let counts = self.counts.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = counts.get(&drop_id) {
                n.fetch_add(1, Relaxed);
                return;
            }
        }
        let mut counts = self.counts.write().unwrap_or_else(PoisonError::into_inner);
        counts.entry(drop_id).or_default().fetch_add(1, Relaxed);
    }

    /// The counts since the last take, which start again from zero. The map is emptied, so
    /// it holds only the drops asked for within one flush period, whatever ids clients send.
    fn take(&self) -> Vec<(i64, i64)> {
        let mut counts = self.counts.write().unwrap_or_else(PoisonError::into_inner);
        counts
            .drain()
            .map(|(id, n)| (id, n.into_inner()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Gives counts back that could not be written, to go with the next flush.
    fn restore(&self, taken: &[(i64, i64)]) {
        let mut counts = self.counts.write().unwrap_or_else(PoisonError::into_inner);
        for (id, n) in taken {
            counts.entry(*id).or_default().fetch_add(*n, Relaxed);
        }
    }
}

impl ReserveAttempts {
    /// Adds the counts to the database every [`FLUSH_EVERY`], until aborted.
    pub async fn flush_periodically(&self, db: &entity::db::Db) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush(db).await;
        }
    }

    /// Adds the counts so far to the database (also at shutdown); kept for the next flush
    /// when the database fails.
    pub async fn flush(&self, db: &entity::db::Db) {
        let taken = self.take();
        if let Err(error) = entity::drops::stats::add_reserve_attempts(db, &taken).await {
            tracing::warn!(error = %entity::error::chain(&error), "cannot record reserve attempts; will retry");
            self.restore(&taken);
        }
    }
}
