//! The worker's periodic tasks, independent of the job queue: the sweep expires overdue
//! holds whose delayed job is late or lost, the reconciler re-runs restock fan-outs and draws
//! whose job Redis may have lost, and the retention pass (`retention.rs`) deletes rows whose time is
//! up. All work from the database, so several workers may run them at once.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use super::{Shutdown, stopped};
use crate::jobs::{Deps, DrawWinners, NotifyRestock, Payload, draw, fan_out};

/// Holds expired per statement; a sweep runs statements until none is left due.
const SWEEP_BATCH: u64 = 2_000;
/// A sweep that found holds due but ended none (another worker is ending them) looks again
/// this soon.
const BUSY_RETRY: Duration = Duration::from_millis(20);
/// A sweep the database did not answer looks again this soon, so holds that fell due during
/// an outage are expired within moments of the database's return. (A failing sweep is paced
/// by the pool anyway: a connection refused is retried until `DATABASE_ACQUIRE_TIMEOUT_MS`.)
const FAILED_RETRY: Duration = Duration::from_millis(200);
/// A reconciler pass that failed runs again this soon.
const FAILED_RECONCILE_RETRY: Duration = Duration::from_secs(1);

fn every(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

pub async fn run(deps: Arc<Deps>, shutdown: Shutdown) {
    // Beside the other tasks, not between them: a retention pass over a large backlog must
    // never delay the expiry sweep.
    let retention = &deps.settings.retention;
    tokio::join!(
        super::retention::run(&deps.db, retention, shutdown.clone()),
        expire_as_due(&deps, shutdown.clone()),
        reconcile(&deps, shutdown),
    );
}

/// Expires holds the moment they fall due: sleeps until the next active hold's `expires_at`
/// (one indexed read), or at most `SWEEP_INTERVAL_MS`, then expires every due hold and
/// announces it. With nothing due that is one query per interval; with thousands due in the
/// same second they are back on sale within milliseconds of their `expires_at`. Every worker
/// runs it; each due hold is ended by exactly one (see `entity::drops::expire_overdue`).
async fn expire_as_due(deps: &Deps, shutdown: Shutdown) {
    let period = deps.settings.drops.sweep_interval;
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        let now = Utc::now();
        let wait = match entity::drops::next_due(&deps.db).await {
            Ok(Some(due)) if due <= now => match sweep_expired(deps, now).await {
                Ok(0) => BUSY_RETRY,
                Ok(_) => Duration::ZERO,
                Err(error) => {
                    tracing::warn!(error = %entity::error::chain(&error), "expiry sweep failed");
                    FAILED_RETRY.min(period)
                }
            },
            Ok(Some(due)) => (due - now).to_std().unwrap_or_default().min(period),
            Ok(None) => period,
            Err(error) => {
                tracing::warn!(error = %entity::error::chain(&error), "cannot read the next expiry");
                FAILED_RETRY.min(period)
            }
        };
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn reconcile(deps: &Deps, shutdown: Shutdown) {
    let mut reconcile = every(deps.settings.worker.reconcile_interval);
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = reconcile.tick() => {
                // A paused queue's work waits for its resume, whoever would have done it.
                let controls = deps.controls.borrow().clone();
                let restocks = if controls.takes(NotifyRestock::QUEUE) {
                    reconcile_restocks(deps).await
                } else {
                    Ok(())
                };
                if let Err(error) = &restocks {
                    tracing::warn!(error = %entity::error::chain(error), "reconciler failed");
                }
                let draws = if controls.takes(DrawWinners::QUEUE) {
                    reconcile_draws(deps).await
                } else {
                    Ok(())
                };
                if let Err(error) = &draws {
                    tracing::warn!(error = %entity::error::chain(error), "draw reconciler failed");
                }
                // A pass the database did not answer (an outage) runs again soon after,
                // not a whole period later.
                if restocks.is_err() || draws.is_err() {
                    reconcile.reset_after(FAILED_RECONCILE_RETRY.min(deps.settings.worker.reconcile_interval));
                }
            }
        }
    }
}

/// Expires every hold due at `now` that nobody asked for, and announces them; returns how
/// many it ended.
///
/// # Errors
/// Database failure.
pub async fn sweep_expired(deps: &Deps, now: DateTime<Utc>) -> Result<usize, entity::Error> {
    let mut total = 0;
    loop {
        let offer_ttl = deps.settings.drops.reservation_ttl;
        let ended = entity::drops::expire_overdue(&deps.db, now, SWEEP_BATCH, offer_ttl).await?;
        let count = ended.len();
        total += count;
        deps.effects.holds_ended(ended).await;
        if (count as u64) < SWEEP_BATCH {
            return Ok(total);
        }
    }
}

/// Draws the draw drops whose entries closed and whose draw job was lost.
///
/// # Errors
/// Database failure.
pub async fn reconcile_draws(deps: &Deps) -> Result<(), entity::Error> {
    for drop_id in entity::drops::draw::due(&deps.db, Utc::now(), 100).await? {
        draw(deps, drop_id).await?;
    }
    Ok(())
}

/// Re-runs the fan-out of in-stock products whose confirmed subscribers no fan-out reached.
///
/// # Errors
/// Database failure.
pub async fn reconcile_restocks(deps: &Deps) -> Result<(), entity::Error> {
    for restock_event_id in entity::catalog::unfinished_restocks(&deps.db, 1000).await? {
        fan_out(deps, restock_event_id).await?;
    }
    Ok(())
}
