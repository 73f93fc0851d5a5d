//! Refuses reservations on a sold-out drop without a database round trip.
//!
//! After a reserve finds a drop sold out, we remember it together with the stock version it
//! saw and the earliest moment a hold could end. Any stock event with a newer version clears
//! the entry, and an entry never lives longer than [`MAX_AGE`], so a unit that really is free
//! is refused for at most an event's delivery (or `MAX_AGE` if an event is lost).
//!
//! When an entry runs out at `MAX_AGE` with no hold due (nothing is known to have changed),
//! one request looks again while the others are still refused, for at most
//! [`RECHECK_PATIENCE`]: a sold-out stampede of 256 connections would otherwise send every
//! request in flight to the database each second, and one buyer's requests are served one
//! statement each. When a hold falls due, everyone looks (a unit may really be free).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};
use worker::events::StockUpdate;

use crate::cache::listing::ListingCache;

const MAX_AGE: Duration = Duration::from_secs(1);

/// How long the other requests are refused while one looks again.
const RECHECK_PATIENCE: chrono::Duration = chrono::Duration::milliseconds(200);

#[derive(Default)]
pub struct SoldOutCache {
    drops: Mutex<HashMap<i64, Entry>>,
}

#[derive(Clone, Copy, Default)]
struct Entry {
    /// Newest stock version this instance has heard of.
    seen_version: i64,
    /// Sold out, and no hold ends before this instant.
    sold_out_until: Option<DateTime<Utc>>,
    /// Whether `sold_out_until` is only [`MAX_AGE`] (no hold falls due then).
    until_is_age: bool,
    /// When a request was let through to look again after the entry ran out at its age.
    rechecking_since: Option<DateTime<Utc>>,
}

impl SoldOutCache {
    /// Whether to refuse a reserve on `drop_id` as sold out without asking the database.
    pub fn refuses(&self, drop_id: i64, now: DateTime<Utc>) -> bool {
        let mut drops = self.lock();
        let Some(entry) = drops.get_mut(&drop_id) else {
            return false;
        };
        let Some(until) = entry.sold_out_until else {
            return false;
        };
        if now < until {
            return true;
        }
        if !entry.until_is_age {
            return false;
        }
        if entry
            .rechecking_since
            .is_some_and(|since| now < since + RECHECK_PATIENCE)
        {
            return true;
        }
        entry.rechecking_since = Some(now);
        false
    }

    /// Records a sold-out answer read at `version`, unless a newer event has been seen.
    pub fn record(&self, drop_id: i64, sold_out: entity::drops::SoldOut, now: DateTime<Utc>) {
        let cap = now + chrono::Duration::from_std(MAX_AGE).unwrap_or_default();
        let until = sold_out.until.map_or(cap, |u| u.min(cap));
        let mut drops = self.lock();
        let entry = drops.entry(drop_id).or_default();
        if sold_out.version >= entry.seen_version {
            entry.seen_version = sold_out.version;
            entry.sold_out_until = Some(until);
            entry.until_is_age = until == cap;
            entry.rechecking_since = None;
        }
    }

    /// A reserve let through found no sold-out drop (it took a unit, or was refused for
    /// another reason): the next request looks again at once.
    pub fn rechecked(&self, drop_id: i64) {
        if let Some(entry) = self.lock().get_mut(&drop_id) {
            entry.rechecking_since = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Entry>> {
        self.drops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Learns from a stock event: stock available again clears the entry.
    pub fn observe(&self, update: &StockUpdate) {
        let mut drops = self.lock();
        let entry = drops.entry(update.drop_id).or_default();
        if update.version >= entry.seen_version {
            entry.seen_version = update.version;
            if update.available_stock > 0 {
                entry.sold_out_until = None;
                entry.rechecking_since = None;
            }
        }
    }
}

/// What this instance caches about drops and products, kept current by every change it
/// makes or hears of.
#[derive(Default)]
pub struct StockCaches {
    pub sold_out: SoldOutCache,
    pub listing: ListingCache<Vec<entity::drops::DropView>>,
    /// `GET /api/products`, rendered.
    pub products: ListingCache<crate::cache::catalog::Catalog>,
    /// The `snapshot` every new socket is sent: a thousand sockets opening at once cost one
    /// read, not a thousand.
    pub snapshot: ListingCache<worker::events::Snapshot>,
}

impl worker::effects::ChangeObserver for StockCaches {
    fn stock_changed(&self, update: &StockUpdate) {
        self.sold_out.observe(update);
        self.listing.invalidate();
        self.snapshot.invalidate();
    }

    fn product_changed(&self) {
        self.products.invalidate();
        self.snapshot.invalidate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sold_out(version: i64) -> entity::drops::SoldOut {
        entity::drops::SoldOut {
            version,
            until: None,
        }
    }

    #[test]
    fn a_newer_restock_clears_and_an_older_answer_cannot_come_back() {
        let cache = SoldOutCache::default();
        let now = Utc::now();
        cache.record(1, sold_out(5), now);
        assert!(cache.refuses(1, now));
        cache.observe(&StockUpdate {
            drop_id: 1,
            available_stock: 1,
            version: 6,
        });
        assert!(!cache.refuses(1, now));
        cache.record(1, sold_out(5), now);
        assert!(
            !cache.refuses(1, now),
            "a stale sold-out answer must not be cached"
        );
    }

    #[test]
    fn entries_age_out() {
        let cache = SoldOutCache::default();
        let now = Utc::now();
        cache.record(1, sold_out(1), now);
        assert!(!cache.refuses(1, now + chrono::Duration::seconds(2)));
    }

    #[test]
    fn an_aged_out_entry_lets_one_request_look_again_at_a_time() {
        let cache = SoldOutCache::default();
        let now = Utc::now();
        cache.record(1, sold_out(1), now);
        let later = now + chrono::Duration::seconds(2);
        assert!(!cache.refuses(1, later), "the first request looks again");
        assert!(cache.refuses(1, later), "the others wait for what it finds");
        // It found the drop sold out still: everyone is refused for another MAX_AGE.
        cache.record(1, sold_out(1), later);
        assert!(cache.refuses(1, later + chrono::Duration::milliseconds(500)));
        // It found something else: the next request looks at once.
        let again = later + chrono::Duration::seconds(2);
        assert!(!cache.refuses(1, again));
        cache.rechecked(1);
        assert!(!cache.refuses(1, again));
        // One that never answers holds the others back for RECHECK_PATIENCE at most.
        assert!(cache.refuses(1, again));
        assert!(!cache.refuses(1, again + RECHECK_PATIENCE));
    }

    #[test]
    fn when_a_hold_falls_due_every_request_looks() {
        let cache = SoldOutCache::default();
        let now = Utc::now();
        let due = now + chrono::Duration::milliseconds(300);
        let hold_ends = entity::drops::SoldOut {
            version: 1,
            until: Some(due),
        };
        cache.record(1, hold_ends, now);
        assert!(cache.refuses(1, now));
        assert!(!cache.refuses(1, due));
        assert!(!cache.refuses(1, due), "a unit may be free: nobody waits");
    }
}
