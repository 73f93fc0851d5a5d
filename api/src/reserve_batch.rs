//! Reserves for one drop, combined (group commit). While a statement for a drop is in
//! flight, the buyers who arrive for that drop wait in line; the next statement serves all
//! of them at once ([`drops::reserve_batch`]), and each waiter gets its own outcome. A buyer
//! the batch could not serve (no unit left, a hold already, the purchase limit, a drop that
//! closed) is answered by the one-buyer reserve, which names the reason with the same code
//! as ever and may take over a due hold, so batching changes how fast, never what.
//!
//! One buyer alone is served by the one-buyer reserve directly, as before. SQLite has one
//! writer anyway and always takes that path.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, atomic::Ordering::Relaxed},
};

use chrono::Utc;
use entity::drops::{self, ReserveOutcome, Reserved};
use sea_orm::{DbBackend, DbErr};
use tokio::sync::oneshot;

use crate::state::AppState;

/// The most buyers one statement serves.
const MAX_BATCH: usize = 256;

type Answer = entity::error::Result<ReserveOutcome>;

struct Waiter {
    user_id: i64,
    reply: oneshot::Sender<Answer>,
}

/// The line of each drop with a statement in flight (a drop is a key while its line is
/// being served).
#[derive(Default)]
pub struct ReserveBatcher {
    lines: Mutex<HashMap<i64, Vec<Waiter>>>,
}

impl ReserveBatcher {
    /// Takes a hold for `user_id`, and does what a taken hold implies (expiry scheduled, stock
    /// announced).
    ///
    /// # Errors
    /// Whatever the one-buyer reserve refuses with, or database failure.
    pub async fn reserve(&self, state: &AppState, drop_id: i64, user_id: i64) -> Answer {
        if state.holds_db.get_database_backend() != DbBackend::Postgres {
            return reserve_alone(state, drop_id, user_id).await;
        }
        let (reply, answer) = oneshot::channel();
        let waiter = Waiter { user_id, reply };
        let leads = {
            let mut lines = self.lock();
            match lines.get_mut(&drop_id) {
                Some(line) => {
                    line.push(waiter);
                    false
                }
                None => {
                    lines.insert(drop_id, vec![waiter]);
                    true
                }
            }
        };
        if leads {
            // Served on its own task: a buyer who hangs up must not stop the line.
            tokio::spawn(serve_line(state.clone(), drop_id));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(DbErr::Custom("the reserve line was dropped".into()).into()))
    }

    /// The next buyers of `drop_id`'s line (each buyer once; a second request of the same
    /// buyer waits for the next statement), or `None` when the line is empty and closed.
    fn next_batch(&self, drop_id: i64) -> Option<Vec<Waiter>> {
        let mut lines = self.lock();
        let line = lines.get_mut(&drop_id)?;
        if line.is_empty() {
            lines.remove(&drop_id);
            return None;
        }
        let mut buyers = HashSet::new();
        let (batch, later): (Vec<_>, Vec<_>) = line
            .drain(..)
            .partition(|waiter| buyers.len() < MAX_BATCH && buyers.insert(waiter.user_id));
        *line = later;
        Some(batch)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Vec<Waiter>>> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn serve_line(state: AppState, drop_id: i64) {
    while let Some(batch) = state.reserves.next_batch(drop_id) {
        serve_batch(&state, drop_id, batch).await;
    }
}

async fn serve_batch(state: &AppState, drop_id: i64, mut batch: Vec<Waiter>) {
    if batch.len() == 1
        && let Some(waiter) = batch.pop()
    {
        let _ = waiter
            .reply
            .send(reserve_alone(state, drop_id, waiter.user_id).await);
        return;
    }
    let ttl = state.settings.drops.reservation_ttl;
    let buyers: Vec<i64> = batch.iter().map(|w| w.user_id).collect();
    let served = drops::reserve_batch(&state.holds_db, drop_id, &buyers, ttl, Utc::now()).await;
    let served = served.unwrap_or_else(|error| {
        // A buyer's hold taken elsewhere meanwhile fails the whole statement (nothing was
        // written): everyone is served one by one instead.
        tracing::debug!(error = %entity::error::chain(&error), "batched reserve fell back");
        drops::Batch::default()
    });
    state.metrics.reserve_batches.fetch_add(1, Relaxed);
    state
        .metrics
        .reserves_batched
        .fetch_add(served.reserved.len() as u64, Relaxed);
    let mut held: HashMap<i64, _> = served
        .reserved
        .iter()
        .map(|hold| (hold.user_id, hold.clone()))
        .collect();
    if let Some(stock) = served.stock {
        state.effects.holds_taken(served.reserved, stock);
    }
    let mut refused = Vec::new();
    for waiter in batch {
        match (held.remove(&waiter.user_id), served.stock) {
            (Some(reservation), Some(stock)) => {
                let _ = waiter.reply.send(Ok(ReserveOutcome::Reserved(Reserved {
                    reservation,
                    stock,
                    took_over: None,
                })));
            }
            _ => refused.push(waiter),
        }
    }
    // The statement took nothing (no unit, or it failed) or took the last units.
    let maybe_sold_out = served.stock.is_none_or(|stock| stock.available_stock == 0);
    answer_refused(state, drop_id, refused, maybe_sold_out).await;
}

/// Answers the buyers a batch did not serve. Once the drop is plainly sold out (no unit, no
/// hold due), that is what the one-buyer reserve would answer each of them, so one query
/// answers them all: at a sell-out, most of a full batch lands here. Otherwise each is
/// served alone, which says why (a hold already, the limit, a closed drop) or finds a unit.
async fn answer_refused(
    state: &AppState,
    drop_id: i64,
    refused: Vec<Waiter>,
    maybe_sold_out: bool,
) {
    if refused.is_empty() {
        return;
    }
    let sold_out = if maybe_sold_out {
        drops::plainly_sold_out(&state.holds_db, drop_id, Utc::now())
            .await
            .unwrap_or_else(|error| {
                tracing::debug!(error = %entity::error::chain(&error), "sold-out check failed");
                None
            })
    } else {
        None
    };
    for waiter in refused {
        if let Some(sold_out) = sold_out {
            let _ = waiter.reply.send(Ok(ReserveOutcome::SoldOut(sold_out)));
            continue;
        }
        let state = state.clone();
        tokio::spawn(async move {
            let answer = reserve_alone(&state, drop_id, waiter.user_id).await;
            let _ = waiter.reply.send(answer);
        });
    }
}

/// How often a reserve Postgres chose as a deadlock's victim is run again.
const DEADLOCK_RETRIES: usize = 2;

/// One buyer's reserve, and what a taken hold implies. A reserve that Postgres aborted to
/// break a deadlock wrote nothing and is run again (a buyer's second request can meet their
/// first inside the database).
async fn reserve_alone(state: &AppState, drop_id: i64, user_id: i64) -> Answer {
    let ttl = state.settings.drops.reservation_ttl;
    let mut tries = 0;
    let outcome = loop {
        match drops::reserve(&state.holds_db, drop_id, user_id, ttl, Utc::now()).await {
            Err(entity::Error::Database(error))
                if tries < DEADLOCK_RETRIES && entity::db::is_retryable(&error) =>
            {
                tries += 1;
                tracing::warn!(error = %entity::error::chain(&error), "reserve retried");
            }
            other => break other?,
        }
    };
    if let ReserveOutcome::Reserved(reserved) = &outcome {
        state.effects.hold_taken(reserved.clone());
    }
    Ok(outcome)
}
