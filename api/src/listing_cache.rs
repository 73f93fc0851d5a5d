//! A quarter-second cache of the public drop listing. A listing costs several queries and is
//! the most-read page of a drop; browsers get live stock over `/ws` anyway. Any stock change
//! this instance hears of invalidates it, so only a purchase's buyer list can be stale, and
//! for at most [`MAX_AGE`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use entity::drops::DropView;
use tokio::sync::Mutex;

const MAX_AGE: Duration = Duration::from_millis(250);

#[derive(Default)]
pub struct ListingCache {
    /// Bumped by every invalidation; an entry loaded under an older generation is stale.
    generation: AtomicU64,
    current: Mutex<Option<Entry>>,
}

struct Entry {
    loaded_at: Instant,
    generation: u64,
    listing: Arc<Vec<DropView>>,
}

impl ListingCache {
    /// The cached listing, or a fresh one from `load`. Concurrent misses wait for one load
    /// instead of each querying the database.
    ///
    /// # Errors
    /// Whatever `load` returns.
    pub async fn get_or_load<F, Fut, E>(&self, load: F) -> Result<Arc<Vec<DropView>>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<DropView>, E>>,
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
