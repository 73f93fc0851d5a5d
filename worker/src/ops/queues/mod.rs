//! The apalis queues as an operator sees them: counted by state, paged, and acted on. Works
//! on the queue's name alone (its Redis keys or its rows in SQLite's `Jobs` table), so the
//! console needs no job type to look at a queue.
//!
//! apalis 1.0 exposes `ListTasks` and `Metrics`, but apalis-redis' `list_tasks` pages only
//! the ready list and filters after paging, its metrics read sets with the wrong commands,
//! and neither backend can retry, discard or run a task now. So this reads the backends'
//! documented layouts directly, a page at a time (`LRANGE`, `ZRANGE … LIMIT`, `SSCAN`, or an
//! indexed `LIMIT` query), never a whole queue.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeZone, Utc};
use entity::ops::ItemState;

use crate::platform::queue::Queue;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("that cursor is not one this listing gave out")]
    BadCursor,
    #[error("job store: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("job store: {0}")]
    Database(#[from] sea_orm::DbErr),
}

type Result<T, E = InspectError> = std::result::Result<T, E>;

/// A queue's items by state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub ready: u64,
    pub scheduled: u64,
    pub in_flight: u64,
    pub retrying: u64,
    pub failed: u64,
    /// When the oldest ready item became due.
    pub oldest_ready_at: Option<DateTime<Utc>>,
}

/// One item, in full.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub id: String,
    pub state: ItemState,
    pub payload: serde_json::Value,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// When it runs (or ran) at the earliest.
    pub due_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The worker that holds it (in flight) or ran it last.
    pub worker: Option<String>,
}

/// A page of items and the cursor of the next one (`None` at the end).
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub items: Vec<Item>,
    pub next: Option<String>,
}

/// What an action did: how many items it changed.
pub type Affected = u64;

fn at(secs: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(secs, 0).single()
}

/// Opaque cursors: the listing's own position, base64 so clients do not build them.
fn encode(position: &str) -> String {
    URL_SAFE_NO_PAD.encode(position)
}

fn decode(cursor: &str) -> Result<String> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(InspectError::BadCursor)
}

fn keys(prefix: &str, name: &str) -> Keys {
    Keys(format!("{prefix}:{name}"))
}

/// The keys apalis-redis keeps a queue in (its `Config`'s names).
pub struct Keys(String);

impl Keys {
    fn active(&self) -> String {
        format!("{}:active", self.0)
    }
    fn scheduled(&self) -> String {
        format!("{}:scheduled", self.0)
    }
    fn dead(&self) -> String {
        format!("{}:dead", self.0)
    }
    fn done(&self) -> String {
        format!("{}:done", self.0)
    }
    fn workers(&self) -> String {
        format!("{}:workers", self.0)
    }
    fn inflight(&self, worker: &str) -> String {
        format!("{}:inflight:{worker}", self.0)
    }
    fn data(&self) -> String {
        format!("{}:data", self.0)
    }
    fn meta(&self) -> String {
        format!("{}:meta", self.0)
    }
    fn meta_of(&self, id: &str) -> String {
        format!("{}:meta:{id}", self.0)
    }
    fn signal(&self) -> String {
        format!("{}:signal", self.0)
    }
}

/// The queue's store, on whichever backend it lives.
pub enum Store<'a> {
    Redis {
        conn: redis::aio::ConnectionManager,
        keys: Keys,
    },
    Sqlite {
        db: &'a entity::db::Db,
        name: &'a str,
    },
}

impl<'a> Store<'a> {
    /// The store of queue `name`: apalis-redis' keys, or the embedded database's `Jobs` rows.
    pub fn of(queue: &Queue, db: &'a entity::db::Db, name: &'a str) -> Self {
        match queue {
            Queue::Redis { conn, prefix } => Self::Redis {
                conn: conn.clone(),
                keys: keys(prefix, name),
            },
            Queue::Sqlite(_) => Self::Sqlite { db, name },
        }
    }

    /// # Errors
    /// The job store failed.
    pub async fn counts(&self, now: DateTime<Utc>) -> Result<Counts> {
        match self {
            Self::Redis { conn, keys } => redis_store::counts(conn, keys, now).await,
            Self::Sqlite { db, name } => sqlite_store::counts(db, name, now).await,
        }
    }

    /// A page of items in `state`, from `cursor` (a previous page's `next`).
    ///
    /// # Errors
    /// A cursor this listing did not give out, or the job store failed.
    pub async fn page(
        &self,
        state: ItemState,
        cursor: Option<&str>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Page> {
        let position = cursor.map(decode).transpose()?;
        match self {
            Self::Redis { conn, keys } => {
                redis_store::page(conn, keys, state, position.as_deref(), limit, now).await
            }
            Self::Sqlite { db, name } => {
                sqlite_store::page(db, name, state, position.as_deref(), limit, now).await
            }
        }
    }

    /// One item, `None` when the queue has no such item.
    ///
    /// # Errors
    /// The job store failed.
    pub async fn item(&self, id: &str, now: DateTime<Utc>) -> Result<Option<Item>> {
        match self {
            Self::Redis { conn, keys } => redis_store::item(conn, keys, id, now).await,
            Self::Sqlite { db, name } => sqlite_store::item(db, name, id, now).await,
        }
    }

    /// Runs a failed item again, now, with its attempts reset. Changes nothing (0) unless the
    /// item is failed, so it is safe to repeat and to race with a worker.
    ///
    /// # Errors
    /// The job store failed.
    pub async fn retry(&self, id: &str) -> Result<Affected> {
        match self {
            Self::Redis { conn, keys } => redis_store::requeue(conn, keys, Some(id)).await,
            Self::Sqlite { db, name } => sqlite_store::requeue(db, name, Some(id)).await,
        }
    }

    /// Retries every failed item of the queue.
    ///
    /// # Errors
    /// The job store failed.
    pub async fn retry_all(&self) -> Result<Affected> {
        match self {
            Self::Redis { conn, keys } => redis_store::requeue(conn, keys, None).await,
            Self::Sqlite { db, name } => sqlite_store::requeue(db, name, None).await,
        }
    }

    /// Deletes a failed item. Changes nothing (0) unless the item is failed.
    ///
    /// # Errors
    /// The job store failed.
    pub async fn discard(&self, id: &str) -> Result<Affected> {
        match self {
            Self::Redis { conn, keys } => redis_store::discard(conn, keys, Some(id)).await,
            Self::Sqlite { db, name } => sqlite_store::discard(db, name, Some(id)).await,
        }
    }

    /// Deletes every failed item of the queue.
    ///
    /// # Errors
    /// The job store failed.
    pub async fn discard_all(&self) -> Result<Affected> {
        match self {
            Self::Redis { conn, keys } => redis_store::discard(conn, keys, None).await,
            Self::Sqlite { db, name } => sqlite_store::discard(db, name, None).await,
        }
    }

    /// Makes a scheduled item due now. Changes nothing (0) unless it is scheduled.
    ///
    /// # Errors
    /// The job store failed.
    pub async fn run_now(&self, id: &str, now: DateTime<Utc>) -> Result<Affected> {
        match self {
            Self::Redis { conn, keys } => redis_store::run_now(conn, keys, id, now).await,
            Self::Sqlite { db, name } => sqlite_store::run_now(db, name, id, now).await,
        }
    }

    /// Removes finished items (their payloads and results); failed ones stay until an
    /// operator retries or discards them. Returns how many it removed.
    ///
    /// # Errors
    /// The job store failed.
    pub async fn remove_done(&self) -> Result<u64> {
        match self {
            Self::Redis { conn, keys } => redis_store::remove_done(conn, keys).await,
            Self::Sqlite { db, name } => sqlite_store::remove_done(db, name).await,
        }
    }
}

mod redis_store;
mod sqlite_store;
