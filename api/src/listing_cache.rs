//! A quarter-second, single-flight cache of a public listing (drops, catalog products). A
//! listing costs several queries and is the most-read page; browsers get live changes over
//! `/ws` anyway. Every change this instance makes or hears of invalidates it (stock changes
//! the drop listing, product changes the catalog), so only what no event announces — a
//! purchase's buyer list, a waiting count — can be stale, and for at most [`MAX_AGE`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Mutex;

const MAX_AGE: Duration = Duration::from_millis(250);

pub struct ListingCache<T> {
    /// Bumped by every invalidation; an entry loaded under an older generation is stale.
    generation: AtomicU64,
    current: Mutex<Option<Entry<T>>>,
}

struct Entry<T> {
    loaded_at: Instant,
    generation: u64,
    listing: Arc<Vec<T>>,
}

impl<T> Default for ListingCache<T> {
    fn default() -> Self {
        Self {
            generation: AtomicU64::new(0),
            current: Mutex::new(None),
        }
    }
}

impl<T> ListingCache<T> {
    /// The cached listing, or a fresh one from `load`. Concurrent misses wait for one load
    /// instead of each querying the database.
    ///
    /// # Errors
    /// Whatever `load` returns.
    pub async fn get_or_load<F, Fut, E>(&self, load: F) -> Result<Arc<Vec<T>>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<T>, E>>,
    {
        let mut current = self.current.lock().await;
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(entry) = current.as_ref()
            && entry.generation == generation
            && entry.loaded_at.elapsed() < MAX_AGE
        {
            return Ok(entry.listing.clone());
        }
        let listing = Arc::new(load().await?);
        *current = Some(Entry {
            loaded_at: Instant::now(),
            generation,
            listing: listing.clone(),
        });
        Ok(listing)
    }

    /// Never waits: safe to call from the event relay.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}
