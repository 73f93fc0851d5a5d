//! A quarter-second, single-flight cache of a public listing (drops, catalog products). A
//! listing costs several queries and is the most-read page; browsers get live changes over
//! `/ws` anyway. Every change this instance makes or hears of invalidates it (stock changes
//! the drop listing, product changes the catalog), so only what no event announces — a
//! purchase's buyer list, a waiting count — can be stale, and for at most [`MAX_AGE`].
//!
//! A hit takes a lock only long enough to clone an `Arc`; only a miss waits, for the one
//! load in flight.

use std::{
    sync::{
        Arc, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

const MAX_AGE: Duration = Duration::from_millis(250);

pub struct ListingCache<T> {
    /// Bumped by every invalidation; an entry loaded under an older generation is stale.
    generation: AtomicU64,
    current: std::sync::Mutex<Option<Entry<T>>>,
    /// Held by the one load in flight.
    loading: tokio::sync::Mutex<()>,
}

struct Entry<T> {
    loaded_at: Instant,
    generation: u64,
    listing: Arc<T>,
}

impl<T> Default for ListingCache<T> {
    fn default() -> Self {
        Self {
            generation: AtomicU64::new(0),
            current: std::sync::Mutex::new(None),
            loading: tokio::sync::Mutex::new(()),
        }
    }
}

impl<T> ListingCache<T> {
    /// The cached listing, or a fresh one from `load`. Concurrent misses wait for one load
    /// instead of each querying the database.
    ///
    /// # Errors
    /// Whatever `load` returns.
    pub async fn get_or_load<F, Fut, E>(&self, load: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(listing) = self.fresh() {
            return Ok(listing);
        }
        let _loading = self.loading.lock().await;
        // Someone else's load may have finished while this one waited.
        if let Some(listing) = self.fresh() {
            return Ok(listing);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let listing = Arc::new(load().await?);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(Entry {
            loaded_at: Instant::now(),
            generation,
            listing: listing.clone(),
        });
        Ok(listing)
    }

    fn fresh(&self) -> Option<Arc<T>> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = current.as_ref()?;
        let fresh = entry.generation == self.generation.load(Ordering::Acquire)
            && entry.loaded_at.elapsed() < MAX_AGE;
        fresh.then(|| entry.listing.clone())
    }

    /// Never waits: safe to call from the event relay.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}
