//! What a committed change implies, named once: which events it announces and which jobs it
//! enqueues. It sits above both the platform (queue, bus) and the jobs, and whoever starts a
//! process builds it from the process's [`Infra`]. Every path that commits a change — an api
//! handler, a job, the sweep — calls the effect of that change, so two paths cannot disagree
//! about what it announces or enqueues.
//!
//! Effects run after the commit: the fact is already safe. A job that cannot be enqueued is
//! re-derived from its row by the sweep or the reconciler; a lost event is repaired by the
//! next event's `version`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use entity::{
    catalog::Change,
    drops::{Ended, Reserved, Stock, Updated, draw::Drawn, waitlist::Offer},
    models::reservations::Model as Reservation,
};

use crate::{
    platform::payloads::{DrawWinners, ExpireReservation, NotifyRestock},
    platform::{
        bus::EventBus,
        events::{
            DrawResult, Event, HoldOffered, MailQueued, ProductChanged, ProductRestocked,
            ReservationExpired, SessionEnded, StockUpdate,
        },
        infra::Infra,
        queue::Queue,
    },
};

/// What in this process must learn of its own changes at once, before the bus delivers
/// them: the api's caches, so its next request already sees the change.
pub trait ChangeObserver: Send + Sync {
    /// A drop's stock moved.
    fn stock_changed(&self, update: &StockUpdate);
    /// A catalog product was written.
    fn product_changed(&self);
}

#[derive(Clone)]
pub struct Effects {
    queue: Queue,
    bus: EventBus,
    observer: Option<Arc<dyn ChangeObserver>>,
}

impl std::fmt::Debug for Effects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effects")
            .field("queue", &self.queue)
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

impl Effects {
    pub fn new(queue: Queue, bus: EventBus) -> Self {
        Self {
            queue,
            bus,
            observer: None,
        }
    }

    /// The effects of committed changes, on this process's queue and bus.
    pub fn of(infra: &Infra) -> Self {
        Self::new(infra.queue.clone(), infra.bus.clone())
    }

    /// Tells `observer` of every change made through these effects, before it is published.
    #[must_use]
    pub fn observed_by(self, observer: Arc<dyn ChangeObserver>) -> Self {
        Self {
            observer: Some(observer),
            ..self
        }
    }

    fn note(&self, stock: Stock) -> StockUpdate {
        let update = StockUpdate::from(stock);
        if let Some(observer) = &self.observer {
            observer.stock_changed(&update);
        }
        update
    }

    /// A drop's stock moved (created, stock added, a hold taken or ended): every instance and
    /// every open browser hears the new figure.
    pub async fn stock_changed(&self, stock: Stock) {
        let update = self.note(stock);
        self.bus.publish_or_log(&Event::StockUpdate(update)).await;
    }

    /// A drop was created: its stock is announced and, for a draw, its draw scheduled at the
    /// close of entries (the reconciler draws it if the job is lost).
    pub async fn drop_created(&self, drop: &entity::models::drops::Model) {
        self.stock_changed(Stock::from(drop)).await;
        self.schedule_draw(drop).await;
    }

    /// An admin edited a drop: added stock is announced and offered to the waitlist, and a
    /// draw whose close of entries moved is scheduled at the new close (a job for the old
    /// close finds the drop not due yet, or drawn, and does nothing).
    pub async fn drop_edited(&self, updated: &Updated) {
        if updated.stock_added {
            self.stock_changed(Stock::from(&updated.drop)).await;
            self.units_offered(&updated.offers).await;
        }
        if updated.close_moved {
            self.schedule_draw(&updated.drop).await;
        }
    }

    async fn schedule_draw(&self, drop: &entity::models::drops::Model) {
        if drop.drawn_at.is_some() {
            return;
        }
        if let Some(close) = drop.entries_close_at {
            let job = DrawWinners { drop_id: drop.id };
            if let Err(error) = self.queue.push_at(job, close).await {
                tracing::warn!(%error, drop_id = drop.id, "draw not scheduled; the reconciler will draw it");
            }
        }
    }

    /// A draw was done: the winners' holds are offers (scheduled to expire, told, emailed),
    /// every entrant hears the result on their sockets, and the waitlisted's emails are woken.
    pub async fn drawn(&self, drawn: &Drawn) {
        self.stock_changed(drawn.stock).await;
        self.units_offered(&drawn.offers).await;
        for offer in &drawn.offers {
            let result = DrawResult::won(&offer.hold);
            self.bus.publish_or_log(&Event::DrawResult(result)).await;
        }
        for waitlisted in &drawn.waitlisted {
            let result = DrawResult::from(waitlisted);
            self.bus.publish_or_log(&Event::DrawResult(result)).await;
        }
        self.emails_queued(&drawn.letters).await;
    }

    /// A hold was taken: its expiry is scheduled, the new stock announced, and a due hold it
    /// took over announced as expired to its owner. Runs in the background, so the buyer does
    /// not wait for it; if the process dies first, the sweep expires the hold.
    pub fn hold_taken(&self, reserved: Reserved) {
        self.note(reserved.stock);
        let effects = self.clone();
        tokio::spawn(async move {
            effects
                .schedule_expiries(vec![expiry_of(&reserved.reservation)])
                .await;
            let update = StockUpdate::from(reserved.stock);
            effects
                .bus
                .publish_or_log(&Event::StockUpdate(update))
                .await;
            if let Some(old) = &reserved.took_over {
                effects.hold_expired(old).await;
            }
        });
    }

    /// Holds were taken together by one statement (a batched reserve): each expiry is
    /// scheduled, and the drop's new stock announced once.
    pub fn holds_taken(&self, holds: Vec<Reservation>, stock: Stock) {
        self.note(stock);
        let effects = self.clone();
        tokio::spawn(async move {
            effects
                .schedule_expiries(holds.iter().map(expiry_of).collect())
                .await;
            let update = StockUpdate::from(stock);
            effects
                .bus
                .publish_or_log(&Event::StockUpdate(update))
                .await;
        });
    }

    /// Schedules the expiries (see [`expiry_of`]) in one round trip.
    async fn schedule_expiries(&self, expiries: Vec<(ExpireReservation, DateTime<Utc>)>) {
        if let Err(error) = self.queue.push_all_at(expiries).await {
            tracing::warn!(%error, "expiry jobs not enqueued; the sweep will expire the holds");
        }
    }

    /// A hold ended unbought (expired or released): its unit is back on sale or offered to
    /// the waitlist, and an expiry is told to the hold's owner.
    pub async fn hold_ended(&self, ended: &Ended) {
        self.stock_changed(ended.stock).await;
        if ended.reservation.status == entity::drops::ReservationStatus::Expired {
            self.hold_expired(&ended.reservation).await;
        }
        self.units_offered(&ended.offers).await;
    }

    /// Returned units became personal holds for buyers on a waitlist: each expiry is
    /// scheduled (an offer not bought in time passes on), each buyer told on their sockets,
    /// and their emails' sends woken.
    pub async fn units_offered(&self, offers: &[Offer]) {
        if offers.is_empty() {
            return;
        }
        self.schedule_expiries(offers.iter().map(|offer| expiry_of(&offer.hold)).collect())
            .await;
        for offer in offers {
            self.bus
                .publish_or_log(&Event::HoldOffered(HoldOffered::from(&offer.hold)))
                .await;
        }
        let emails: Vec<i64> = offers.iter().map(|o| o.message_id).collect();
        self.emails_queued(&emails).await;
    }

    /// Holds ended together (the expiry sweep): each drop's new stock is announced once, its
    /// newest figure first, then each expiry to its hold's owner.
    pub async fn holds_ended(&self, ended: Vec<Ended>) {
        let mut newest: std::collections::HashMap<i64, Stock> = std::collections::HashMap::new();
        for e in &ended {
            let stock = newest.entry(e.stock.drop_id).or_insert(e.stock);
            if e.stock.version > stock.version {
                *stock = e.stock;
            }
        }
        for stock in newest.into_values() {
            self.stock_changed(stock).await;
        }
        for e in &ended {
            if e.reservation.status == entity::drops::ReservationStatus::Expired {
                self.hold_expired(&e.reservation).await;
            }
            self.units_offered(&e.offers).await;
        }
    }

    async fn hold_expired(&self, hold: &Reservation) {
        self.bus
            .publish_or_log(&Event::ReservationExpired(ReservationExpired::from(hold)))
            .await;
    }

    /// A product was written (webhook or admin): every instance's catalog listing is
    /// refreshed, and a restock is broadcast and its subscribers' fan-out enqueued; a lost
    /// enqueue is re-run by the reconciler.
    pub async fn product_changed(&self, change: &Change) {
        if let Some(observer) = &self.observer {
            observer.product_changed();
        }
        self.bus
            .publish_or_log(&Event::ProductChanged(ProductChanged {
                product_id: change.product.id,
            }))
            .await;
        let Some(restock) = &change.restock else {
            return;
        };
        self.bus
            .publish_or_log(&Event::ProductRestocked(ProductRestocked::from(
                &change.product,
            )))
            .await;
        self.restock_owed(restock.id).await;
    }

    /// Subscribers are owed the alert of a restock (it just happened, or an address was
    /// confirmed after it): its fan-out is enqueued. Subscribers already alerted are skipped.
    pub async fn restock_owed(&self, restock_event_id: i64) {
        let job = NotifyRestock { restock_event_id };
        if let Err(error) = self.queue.push(job).await {
            tracing::warn!(%error, restock_event_id, "restock fan-out not enqueued; the reconciler will retry");
        }
    }

    /// A restock's wave of alerts is spent while subscribers wait: its fan-out runs again when
    /// the next wave may open (the reconciler opens it if this job is lost).
    pub async fn next_wave_due(&self, restock_event_id: i64, at: DateTime<Utc>) {
        let job = NotifyRestock { restock_event_id };
        if let Err(error) = self.queue.push_at(job, at).await {
            tracing::warn!(%error, restock_event_id, "next restock wave not scheduled; the reconciler will open it");
        }
    }

    /// A session was revoked (logout, refresh-token reuse): every api instance stops
    /// honouring its access tokens at once instead of at its next liveness check, and its
    /// sockets lose its identity.
    pub async fn session_ended(&self, session_id: i64) {
        self.bus
            .publish_or_log(&Event::SessionEnded(SessionEnded { session_id }))
            .await;
    }

    /// Rows were written to the email ledger: idle mail pumps are woken. The ledger is the
    /// queue, so a lost wake-up only delays the rows until a pump's next poll.
    pub async fn emails_queued(&self, message_ids: &[i64]) {
        if message_ids.is_empty() {
            return;
        }
        let queued = MailQueued {
            messages: message_ids.len(),
        };
        self.bus.publish_or_log(&Event::MailQueued(queued)).await;
    }
}

/// A hold's expiry job, and when it runs: at the hold's end.
fn expiry_of(hold: &Reservation) -> (ExpireReservation, DateTime<Utc>) {
    let job = ExpireReservation {
        reservation_id: hold.id,
    };
    (job, hold.expires_at)
}
