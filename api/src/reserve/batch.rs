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
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
};

use chrono::{Duration, Utc};
use entity::drops::{self, ReserveOutcome, Reserved};
use sea_orm::{DbBackend, DbErr};
use tokio::sync::oneshot;
use worker::Effects;

use crate::metrics::Metrics;

/// The most buyers one statement serves.
const MAX_BATCH: usize = 256;

/// How often a reserve Postgres chose as a deadlock's victim is run again.
const DEADLOCK_RETRIES: usize = 2;

type Answer = entity::error::Result<ReserveOutcome>;

struct Waiter {
    user_id: i64,
    reply: oneshot::Sender<Answer>,
}

/// Takes holds: each buyer alone, or on Postgres in batches, one line per drop.
#[derive(Clone)]
pub struct ReserveBatcher(Arc<Batcher>);

struct Batcher {
    /// The line of each drop with a statement in flight (a drop is a key while its line is
    /// being served).
    lines: Mutex<HashMap<i64, Vec<Waiter>>>,
    /// Where holds are taken (see `AppState::holds_db`).
    db: entity::db::Db,
    /// How long a hold lasts.
    ttl: Duration,
    /// What a taken hold implies.
    effects: Effects,
    metrics: Arc<Metrics>,
}

impl ReserveBatcher {
    pub fn new(db: entity::db::Db, ttl: Duration, effects: Effects, metrics: Arc<Metrics>) -> Self {
        Self(Arc::new(Batcher {
            lines: Mutex::default(),
            db,
            ttl,
            effects,
            metrics,
        }))
    }

    /// Takes a hold for `user_id`, and does what a taken hold implies (expiry scheduled, stock
    /// announced).
    ///
    /// # Errors
    /// Whatever the one-buyer reserve refuses with, or database failure.
    pub async fn reserve(&self, drop_id: i64, user_id: i64) -> Answer {
        if self.0.db.get_database_backend() != DbBackend::Postgres {
            return self.reserve_alone(drop_id, user_id).await;
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
            tokio::spawn(self.clone().serve_line(drop_id));
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
        self.0
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn serve_line(self, drop_id: i64) {
        while let Some(batch) = self.next_batch(drop_id) {
            self.serve_batch(drop_id, batch).await;
        }
    }

    async fn serve_batch(&self, drop_id: i64, mut batch: Vec<Waiter>) {
        if batch.len() == 1
            && let Some(waiter) = batch.pop()
        {
            let answer = self.reserve_alone(drop_id, waiter.user_id).await;
            if let Err(entity::Error::Database(error)) = &answer
                && database_down(error)
            {
                self.fail_line(drop_id, error);
            }
            let _ = waiter.reply.send(answer);
            return;
        }
        let Batcher {
            db,
            ttl,
            effects,
            metrics,
            ..
        } = &*self.0;
        let buyers: Vec<i64> = batch.iter().map(|w| w.user_id).collect();
        let served = match drops::reserve_batch(db, drop_id, &buyers, *ttl, Utc::now()).await {
            Ok(served) => served,
            // The database is down or out of connections: one by one would only meet it again,
            // each waiting out the acquire timeout. Everyone hears it now.
            Err(entity::Error::Database(error)) if database_down(&error) => {
                for waiter in batch {
                    let _ = waiter
                        .reply
                        .send(Err(entity::db::same_failure(&error).into()));
                }
                self.fail_line(drop_id, &error);
                return;
            }
            Err(error) => {
                // A buyer's hold taken elsewhere meanwhile fails the whole statement (nothing
                // was written): everyone is served one by one instead.
                tracing::debug!(error = %entity::error::chain(&error), "batched reserve fell back");
                drops::Batch::default()
            }
        };
        metrics.reserve_batches.fetch_add(1, Relaxed);
        metrics
            .reserves_batched
            .fetch_add(served.reserved.len() as u64, Relaxed);
        let mut held: HashMap<i64, _> = served
            .reserved
            .iter()
            .map(|hold| (hold.user_id, hold.clone()))
            .collect();
        if let Some(stock) = served.stock {
            effects.holds_taken(served.reserved, stock);
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
        self.answer_refused(drop_id, refused, maybe_sold_out).await;
    }

    /// Answers everyone who joined the line while a statement met the database down, with
    /// that failure: the next statement would wait out the acquire timeout again, and a buyer
    /// must hear within one timeout, not two. Whoever comes next tries the database anew.
    fn fail_line(&self, drop_id: i64, error: &DbErr) {
        let waiting = self
            .lock()
            .get_mut(&drop_id)
            .map(std::mem::take)
            .unwrap_or_default();
        for waiter in waiting {
            let _ = waiter
                .reply
                .send(Err(entity::db::same_failure(error).into()));
        }
    }

    /// Answers the buyers a batch did not serve. Once the drop is plainly sold out (no unit, no
    /// hold due), that is what the one-buyer reserve would answer each of them, so one query
    /// answers them all: at a sell-out, most of a full batch lands here. Otherwise each is
    /// served alone, which says why (a hold already, the limit, a closed drop) or finds a unit.
    async fn answer_refused(&self, drop_id: i64, refused: Vec<Waiter>, maybe_sold_out: bool) {
        if refused.is_empty() {
            return;
        }
        let sold_out = if maybe_sold_out {
            let buyers: Vec<i64> = refused.iter().map(|w| w.user_id).collect();
            drops::plainly_sold_out(&self.0.db, drop_id, &buyers, Utc::now())
                .await
                .unwrap_or_else(|error| {
                    tracing::debug!(error = %entity::error::chain(&error), "sold-out check failed");
                    None
                })
        } else {
            None
        };
        for waiter in refused {
            // A buyer holding a unit already (or at the limit) is told so, not "sold out".
            if let Some(plain) = &sold_out
                && !plain.ruled.contains(&waiter.user_id)
            {
                let _ = waiter
                    .reply
                    .send(Ok(ReserveOutcome::SoldOut(plain.sold_out)));
                continue;
            }
            let batcher = self.clone();
            tokio::spawn(async move {
                let answer = batcher.reserve_alone(drop_id, waiter.user_id).await;
                let _ = waiter.reply.send(answer);
            });
        }
    }

    /// One buyer's reserve, and what a taken hold implies. A reserve that Postgres aborted to
    /// break a deadlock wrote nothing and is run again (a buyer's second request can meet their
    /// first inside the database).
    async fn reserve_alone(&self, drop_id: i64, user_id: i64) -> Answer {
        let Batcher {
            db, ttl, effects, ..
        } = &*self.0;
        let mut tries = 0;
        let outcome = loop {
            match drops::reserve(db, drop_id, user_id, *ttl, Utc::now()).await {
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
            effects.hold_taken(reserved.clone());
        }
        Ok(outcome)
    }
}

/// The database is down or has no connection to spare: retrying at once cannot help.
fn database_down(error: &DbErr) -> bool {
    entity::db::is_unavailable(error) || entity::db::is_overload(error)
}
