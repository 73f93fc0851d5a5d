//! Job handlers: plain async functions that re-read their row, and are safe to run twice.

use std::{sync::Arc, time::Duration};

use apalis::prelude::{BoxDynError, Data};
use chrono::{DateTime, Utc};
use entity::mail::Claim;

use crate::{
    events::{Event, ReservationExpired, StockUpdate, WorkerPong},
    jobs::{ExpireReservation, NotifyRestock, Ping, SendEmail},
    mailer::{SendError, backoff},
    runtime::Deps,
};

/// Holds to expire per sweep; the next sweep takes the rest.
const SWEEP_BATCH: u64 = 500;

/// Expires one hold if it is still active and due, and broadcasts the stock it gave back.
///
/// # Errors
/// Database failure (the job is retried; a second run changes nothing).
pub async fn expire_reservation(
    job: ExpireReservation,
    deps: Data<Arc<Deps>>,
) -> Result<(), BoxDynError> {
    if let Some(ended) = entity::drops::expire(&deps.db, job.reservation_id, Utc::now()).await? {
        publish_ended(&deps.bus, &ended).await;
    }
    Ok(())
}

/// The events that follow a hold ending: the drop's new stock, and a word to its owner.
pub async fn publish_ended(bus: &crate::events::EventBus, ended: &entity::drops::Ended) {
    bus.publish_or_log(&Event::StockUpdate(StockUpdate::from(ended.stock)))
        .await;
    if ended.reservation.status == entity::drops::status::EXPIRED {
        bus.publish_or_log(&Event::ReservationExpired(ReservationExpired {
            reservation_id: ended.reservation.id,
            drop_id: ended.reservation.drop_id,
            user_id: ended.reservation.user_id,
        }))
        .await;
    }
}

/// # Errors
/// Database failure.
pub async fn sweep_expired(deps: &Deps, now: DateTime<Utc>) -> Result<(), entity::Error> {
    for ended in entity::drops::expire_overdue(&deps.db, now, SWEEP_BATCH).await? {
        publish_ended(&deps.bus, &ended).await;
    }
    Ok(())
}

/// Alerts per fan-out transaction (and per bulk enqueue).
const FANOUT_BATCH: u64 = 500;
/// How long a claimed email is held by the send working on it; longer than a job may run.
const SEND_LEASE_SECS: i64 = 120;
/// A send that finds its row not yet due waits this long in place rather than re-enqueuing
/// (apalis schedules in whole seconds, so a delayed job may start a little early).
const WAIT_IN_PLACE: Duration = Duration::from_secs(5);

/// Re-derives jobs that may have been lost with Redis: queued emails nobody is working on,
/// and confirmed subscribers of in-stock products that no fan-out has reached.
///
/// # Errors
/// Database failure.
pub async fn reconcile(deps: &Deps, now: DateTime<Utc>) -> Result<(), entity::Error> {
    let grace = chrono::Duration::from_std(deps.settings.mail_stuck_after)
        .unwrap_or(chrono::Duration::seconds(60));
    let overdue = entity::mail::overdue(&deps.db, now, grace, FANOUT_BATCH).await?;
    if !overdue.is_empty() {
        tracing::info!(count = overdue.len(), "re-enqueuing stuck emails");
        enqueue_sends(deps, overdue).await;
    }
    for restock_event_id in entity::catalog::unfinished_restocks(&deps.db, 1000).await? {
        fan_out(deps, restock_event_id).await?;
    }
    Ok(())
}

/// Fans a restock out to the product's confirmed subscribers, in signup order.
///
/// # Errors
/// Database failure (the job is retried; subscribers already alerted are not alerted again).
pub async fn notify_restock(job: NotifyRestock, deps: Data<Arc<Deps>>) -> Result<(), BoxDynError> {
    fan_out(&deps, job.restock_event_id)
        .await
        .map_err(|e| logged(e, "restock fan-out failed"))
}

/// Logs an error with its cause chain (apalis logs only the top message) and hands it back.
fn logged(error: entity::Error, what: &str) -> BoxDynError {
    tracing::warn!(error = %entity::error::chain(&error), "{what}");
    error.into()
}

async fn fan_out(deps: &Deps, restock_event_id: i64) -> Result<(), entity::Error> {
    loop {
        let batch =
            entity::mail::fan_out(&deps.db, restock_event_id, FANOUT_BATCH, Utc::now()).await?;
        if !batch.message_ids.is_empty() {
            tracing::info!(
                restock_event_id,
                alerts = batch.message_ids.len(),
                "restock alerts queued"
            );
            enqueue_sends(deps, batch.message_ids).await;
        }
        if !batch.more {
            return Ok(());
        }
    }
}

/// The rows are safe in the ledger; if the queue refuses them, the reconciler re-enqueues.
async fn enqueue_sends(deps: &Deps, message_ids: Vec<i64>) {
    let jobs = message_ids
        .into_iter()
        .map(|message_id| SendEmail { message_id })
        .collect();
    if let Err(error) = deps.queue.send_emails(jobs).await {
        tracing::warn!(%error, "send jobs not enqueued; the reconciler will retry");
    }
}

/// Sends one ledger row. Claims it first, so a row is never sent twice even if its job runs
/// twice; counts attempts in the ledger (apalis-redis does not honour `max_attempts`) and
/// schedules its own retries with exponential backoff, so the job itself always succeeds.
///
/// # Errors
/// Database failure.
pub async fn send_email(job: SendEmail, deps: Data<Arc<Deps>>) -> Result<(), BoxDynError> {
    let lease = chrono::Duration::seconds(SEND_LEASE_SECS);
    let mut waited = false;
    let outgoing = loop {
        let now = Utc::now();
        let claim = entity::mail::claim(&deps.db, job.message_id, lease, now).await;
        match claim.map_err(|e| logged(e, "cannot claim an email"))? {
            Claim::Ready(outgoing) => break outgoing,
            Claim::Done => return Ok(()),
            Claim::NotYet(at) => {
                let wait = (at - now).to_std().unwrap_or_default();
                if waited || wait > WAIT_IN_PLACE {
                    if let Err(error) = deps.queue.send_email_after(job, wait).await {
                        tracing::warn!(%error, "send not re-enqueued; the reconciler will retry");
                    }
                    return Ok(());
                }
                waited = true;
                tokio::time::sleep(wait).await;
            }
        }
    };
    let sent = match deps.mailer.compose(&outgoing) {
        Ok(message) => deps.mailer.send(outgoing.id, message).await,
        Err(error) => Err(error),
    };
    let now = Utc::now();
    record_outcome(&deps, job, &outgoing, sent, now)
        .await
        .map_err(|e| logged(e, "cannot record an email's outcome"))
}

async fn record_outcome(
    deps: &Deps,
    job: SendEmail,
    outgoing: &entity::mail::Outgoing,
    sent: Result<(), SendError>,
    now: DateTime<Utc>,
) -> Result<(), entity::Error> {
    let lease = chrono::Duration::seconds(SEND_LEASE_SECS);
    match sent {
        Ok(()) => {
            entity::mail::mark_sent(&deps.db, outgoing.id, now).await?;
            tracing::info!(message_id = outgoing.id, kind = %outgoing.kind, "email sent");
        }
        Err(SendError::Permanent(error)) => {
            tracing::warn!(message_id = outgoing.id, %error, "email rejected; not retrying");
            entity::mail::mark_failed(&deps.db, outgoing.id, &error, now).await?;
        }
        Err(SendError::Transient(error)) if outgoing.attempt >= deps.settings.mail_max_attempts => {
            tracing::warn!(message_id = outgoing.id, %error, attempts = outgoing.attempt, "email failed; giving up");
            let reason = format!("gave up after {} attempts: {error}", outgoing.attempt);
            entity::mail::mark_failed(&deps.db, outgoing.id, &reason, now).await?;
        }
        Err(SendError::Transient(error)) => {
            let delay = backoff(deps.settings.mail_retry_base, outgoing.attempt);
            let at = now + chrono::Duration::from_std(delay).unwrap_or(lease);
            tracing::info!(message_id = outgoing.id, %error, attempt = outgoing.attempt, retry_in_ms = delay.as_millis(), "email deferred");
            entity::mail::retry_at(&deps.db, outgoing.id, &error, at, now).await?;
            if let Err(error) = deps.queue.send_email_after(job, delay).await {
                tracing::warn!(%error, "retry not enqueued; the reconciler will retry");
            }
        }
    }
    Ok(())
}

/// Answers a ping with this worker's name.
///
/// # Errors
/// The bus refused the answer.
pub async fn ping(job: Ping, deps: Data<Arc<Deps>>) -> Result<(), BoxDynError> {
    deps.bus
        .publish(&Event::WorkerPong(WorkerPong {
            token: job.token,
            worker: deps.worker_name.clone(),
        }))
        .await?;
    Ok(())
}
