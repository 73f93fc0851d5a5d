//! A quarter-second, single-flight cache of a public listing (drops, catalog products). A
//! listing costs several queries and is the most-read page; browsers get live changes over
//! `/ws` anyway. Every change this instance makes or hears of invalidates it (stock changes
//! the drop listing, product changes the catalog), so only what no event announces — a
//! purchase's buyer list, a waiting count — can be stale, and for at most [`MAX_AGE`].
//!
//! A hit takes a lock only long enough to clone an `Arc`; only a miss waits, for the one
//! load in flight.
//!
//! While the database is away (restarting, out of reach, out of connections) the last
//! listing is served instead of a 503, for up to [`STALE_FOR`]; after a failed load the next
//! is tried only [`RETRY_AFTER_FAILURE`] later, so readers do not queue behind loads that
//! each wait out the acquire timeout.

use std::{
    sync::{
        Arc, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

const MAX_AGE: Duration = Duration::from_millis(250);
/// The oldest listing served while the database is away.
const STALE_FOR: Duration = Duration::from_secs(300);
/// After a load met the database away, the last listing is served without trying for this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

pub struct ListingCache<T> {
    /// Bumped by every invalidation; an entry loaded under an older generation is stale.
    generation: AtomicU64,
    current: std::sync::Mutex<Option<Entry<T>>>,
    /// When the last load met the database away (cleared by a load that succeeds).
    failed_at: std::sync::Mutex<Option<Instant>>,
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
            failed_at: std::sync::Mutex::new(None),
            loading: tokio::sync::Mutex::new(()),
        }
    }
}

impl<T> ListingCache<T> {
    /// The cached listing, or a fresh one from `load`. Concurrent misses wait for one load
    /// instead of each querying the database. While the database is away, the last listing.
    ///
    /// # Errors
    /// Whatever `load` returns, when there is no listing to fall back on.
    pub async fn get_or_load<F, Fut>(&self, load: F) -> Result<Arc<T>, entity::Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, entity::Error>>,
    {
        if let Some(listing) = self.fresh().or_else(|| self.while_failing()) {
            return Ok(listing);
        }
        let _loading = self.loading.lock().await;
        // Someone else's load may have finished (or failed) while this one waited.
        if let Some(listing) = self.fresh().or_else(|| self.while_failing()) {
            return Ok(listing);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let listing = match load().await {
            Ok(listing) => Arc::new(listing),
            Err(entity::Error::Database(error))
                if entity::db::is_unavailable(&error) || entity::db::is_overload(&error) =>
            {
                *lock(&self.failed_at) = Some(Instant::now());
                return match self.stale() {
                    Some(listing) => {
                        tracing::warn!(error = %entity::error::chain(&error), "database away; serving the last listing");
                        Ok(listing)
                    }
                    None => Err(error.into()),
                };
            }
            Err(error) => return Err(error),
        };
        *lock(&self.failed_at) = None;
        *lock(&self.current) = Some(Entry {
            loaded_at: Instant::now(),
            generation,
            listing: listing.clone(),
        });
        Ok(listing)
    }

    /// The last listing, when a load met the database away moments ago.
    fn while_failing(&self) -> Option<Arc<T>> {
        let failing = lock(&self.failed_at).is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE);
        if failing { self.stale() } else { None }
    }

    /// The last listing, if it is not too old to serve while the database is away.
    fn stale(&self) -> Option<Arc<T>> {
        let current = lock(&self.current);
        let entry = current.as_ref()?;
        (entry.loaded_at.elapsed() < STALE_FOR).then(|| entry.listing.clone())
    }

    fn fresh(&self) -> Option<Arc<T>> {
        let current = lock(&self.current);
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

fn lock<V>(mutex: &std::sync::Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
