//! Every event from the bus, fanned out to this instance: the caches learn from stock
//! changes, and each browser-facing event is serialised once and handed to every socket.
//!
//! Events are notifications that can be lost (Redis restarting between a commit and its
//! publish). So the relay never sends a `stock_update` older than one it already sent, and
//! every [`HEAL_EVERY`] it compares the open drops' versions in the database with what it
//! has sent and sends what is newer: a lost event heals within seconds.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use tokio::sync::broadcast::error::RecvError;
use worker::{
    effects::ChangeObserver,
    events::{Event, StockUpdate},
};

use crate::{cache::frames::Frame, state::AppState};

pub const HEAL_EVERY: Duration = Duration::from_secs(2);

pub async fn run(state: AppState) {
    let mut events = state.bus.subscribe();
    let mut sent = Versions::default();
    let mut heal = tokio::time::interval(HEAL_EVERY);
    heal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(event) => relay(&state, &mut sent, event),
                Err(RecvError::Lagged(missed)) => {
                    // Sockets resynchronise from their own lag; the next heal resends stock.
                    tracing::warn!(missed, "event relay fell behind");
                }
                Err(RecvError::Closed) => return,
            },
            _ = heal.tick() => heal_from_database(&state, &mut sent).await,
        }
    }
}

/// The newest `stock_update` version sent per drop; `None` until the first heal has read
/// the database's versions as the baseline.
#[derive(Default)]
struct Versions(Option<HashMap<i64, i64>>);

impl Versions {
    /// Records `update` and says whether it is newer than what was sent.
    fn newer(&mut self, update: &StockUpdate) -> bool {
        let sent = self.0.get_or_insert_with(HashMap::new);
        match sent.get(&update.drop_id) {
            Some(&version) if version >= update.version => false,
            _ => {
                sent.insert(update.drop_id, update.version);
                true
            }
        }
    }
}

fn relay(state: &AppState, sent: &mut Versions, event: Event) {
    match &event {
        Event::StockUpdate(update) => {
            state.caches.stock_changed(update);
            if !sent.newer(update) {
                return;
            }
        }
        Event::SessionEnded(ended) => state.auth.sessions.end(ended.session_id),
        // Every product write announces ProductChanged (a restock too).
        Event::ProductChanged(_) => state.caches.product_changed(),
        _ => {}
    }
    broadcast(state, event);
}

fn broadcast(state: &AppState, event: Event) {
    if let Some(frame) = Frame::new(event) {
        // No sockets open is not an error.
        let _ = state.frames.send(Arc::new(frame));
    }
}

async fn heal_from_database(state: &AppState, sent: &mut Versions) {
    let stock = match entity::drops::open_stock(&state.db, Utc::now()).await {
        Ok(stock) => stock,
        Err(error) => {
            tracing::warn!(error = %entity::error::chain(&error), "cannot compare stock versions");
            return;
        }
    };
    let first = sent.0.is_none();
    for update in stock.into_iter().map(StockUpdate::from) {
        if sent.newer(&update) && !first {
            tracing::info!(
                drop_id = update.drop_id,
                version = update.version,
                "re-sending a stock change the bus lost"
            );
            state.caches.stock_changed(&update);
            broadcast(state, Event::StockUpdate(update));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(drop_id: i64, version: i64) -> StockUpdate {
        StockUpdate {
            drop_id,
            available_stock: 1,
            version,
        }
    }

    #[test]
    fn only_newer_versions_of_a_drop_pass() {
        let mut sent = Versions::default();
        assert!(sent.newer(&update(1, 5)));
        assert!(!sent.newer(&update(1, 5)), "the same version twice");
        assert!(
            !sent.newer(&update(1, 4)),
            "an older version after a newer one"
        );
        assert!(sent.newer(&update(2, 1)), "another drop");
        assert!(sent.newer(&update(1, 6)));
    }
}
