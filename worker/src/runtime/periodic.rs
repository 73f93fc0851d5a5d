//! The worker's periodic tasks, independent of the job queue: the sweep expires overdue
//! holds whose delayed job is late or lost, and the reconciler re-derives work whose job Redis
//! may have lost. Both read the database, so several workers may run them at once.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Shutdown, stopped};
use crate::jobs::{Deps, fan_out};

/// Holds to expire per sweep; the next sweep takes the rest.
const SWEEP_BATCH: u64 = 500;
/// Stuck emails re-enqueued and restocks re-run per reconciliation.
const RECONCILE_BATCH: u64 = 500;

pub async fn run(deps: Arc<Deps>, shutdown: Shutdown) {
    let mut sweep = tokio::time::interval(deps.settings.drops.sweep_interval);
    let mut reconcile = tokio::time::interval(deps.settings.worker.reconcile_interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = sweep.tick() => {
                if let Err(error) = sweep_expired(&deps, Utc::now()).await {
                    tracing::warn!(error = %entity::error::chain(&error), "expiry sweep failed");
                }
            }
            _ = reconcile.tick() => {
                if let Err(error) = reconcile_jobs(&deps, Utc::now()).await {
                    tracing::warn!(error = %entity::error::chain(&error), "reconciler failed");
                }
            }
        }
    }
}

/// Expires overdue holds nobody asked for, and announces each.
///
/// # Errors
/// Database failure.
pub async fn sweep_expired(deps: &Deps, now: DateTime<Utc>) -> Result<(), entity::Error> {
    for ended in entity::drops::expire_overdue(&deps.db, now, SWEEP_BATCH).await? {
        deps.effects.hold_ended(&ended).await;
    }
    Ok(())
}

/// Re-enqueues queued emails nobody is working on, and re-runs the fan-out of in-stock
/// products whose confirmed subscribers no fan-out has reached.
///
/// # Errors
/// Database failure.
pub async fn reconcile_jobs(deps: &Deps, now: DateTime<Utc>) -> Result<(), entity::Error> {
    let grace = deps.settings.mail.stuck_after;
    let overdue = entity::mail::overdue(&deps.db, now, grace, RECONCILE_BATCH).await?;
    if !overdue.is_empty() {
        tracing::info!(count = overdue.len(), "re-enqueuing stuck emails");
        deps.effects.emails_queued(overdue).await;
    }
    for restock_event_id in entity::catalog::unfinished_restocks(&deps.db, 1000).await? {
        fan_out(deps, restock_event_id).await?;
    }
    Ok(())
}
