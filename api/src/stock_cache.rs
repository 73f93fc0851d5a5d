//! Refuses reservations on a sold-out drop without a database round trip.
//!
//! After a reserve finds a drop sold out, we remember it together with the stock version it
//! saw and the earliest moment a hold could end. Any stock event with a newer version clears
//! the entry, and an entry never lives longer than [`MAX_AGE`], so a unit that really is free
//! is refused for at most an event's delivery (or `MAX_AGE` if an event is lost).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};
use worker::events::StockUpdate;

use crate::listing_cache::ListingCache;

const MAX_AGE: Duration = Duration::from_secs(1);

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
}

impl SoldOutCache {
    pub fn refuses(&self, drop_id: i64, now: DateTime<Utc>) -> bool {
        let drops = self
            .drops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drops
            .get(&drop_id)
            .and_then(|e| e.sold_out_until)
            .is_some_and(|until| now < until)
    }

    /// Records a sold-out answer read at `version`, unless a newer event has been seen.
    pub fn record(&self, drop_id: i64, sold_out: entity::drops::SoldOut, now: DateTime<Utc>) {
        let cap = now + chrono::Duration::from_std(MAX_AGE).unwrap_or_default();
        let until = sold_out.until.map_or(cap, |u| u.min(cap));
        let mut drops = self
            .drops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = drops.entry(drop_id).or_default();
        if sold_out.version >= entry.seen_version {
            entry.seen_version = sold_out.version;
            entry.sold_out_until = Some(until);
        }
    }

    /// Learns from a stock event: stock available again clears the entry.
    pub fn observe(&self, update: &StockUpdate) {
        let mut drops = self
            .drops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = drops.entry(update.drop_id).or_default();
        if update.version >= entry.seen_version {
            entry.seen_version = update.version;
            if update.available_stock > 0 {
                entry.sold_out_until = None;
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
    pub products: ListingCache<crate::product_listing::Catalog>,
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
}
