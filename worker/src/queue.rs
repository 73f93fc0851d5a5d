//! The job queue handle. Callers enqueue without knowing whether jobs go to apalis-sqlite
//! (embedded) or apalis-redis (distributed).

use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskSink};
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;
use chrono::{DateTime, Utc};

use crate::jobs::{ExpireReservation, NotifyRestock, Ping, SendEmail, queues};

#[derive(Debug, thiserror::Error)]
#[error("cannot enqueue {job}: {source}")]
pub struct QueueError {
    job: &'static str,
    #[source]
    source: apalis::prelude::BoxDynError,
}

/// One storage per job type, so each queue gets its own workers and a flood of mail never
/// delays an expiry.
#[derive(Clone, Debug)]
pub struct Storages<E, N, S, P> {
    pub expire: E,
    pub notify: N,
    pub email: S,
    pub ping: P,
}

pub type SqliteStorages = Storages<
    SqliteStorage<ExpireReservation>,
    SqliteStorage<NotifyRestock>,
    SqliteStorage<SendEmail>,
    SqliteStorage<Ping>,
>;

pub type RedisStorages = Storages<
    RedisStorage<ExpireReservation>,
    RedisStorage<NotifyRestock>,
    RedisStorage<SendEmail>,
    RedisStorage<Ping>,
>;

#[derive(Clone, Debug)]
pub enum Queue {
    Sqlite(SqliteStorages),
    Redis(RedisStorages),
}

impl SqliteStorages {
    pub fn new(pool: &apalis_sqlite::SqlitePool) -> Self {
        // Outcomes live in our own tables; apalis need not keep them.
        let config = |name: &str| {
            apalis_sqlite::Config::default()
                .queue(name)
                .batch_size(50)
                .persist_results(false)
        };
        Self {
            expire: SqliteStorage::new(pool).with_config(config(queues::EXPIRY)),
            notify: SqliteStorage::new(pool).with_config(config(queues::FANOUT)),
            email: SqliteStorage::new(pool).with_config(config(queues::MAIL)),
            ping: SqliteStorage::new(pool).with_config(config(queues::PING)),
        }
    }
}

impl RedisStorages {
    pub fn new(conn: &redis::aio::ConnectionManager, prefix: &str) -> Self {
        // Outcomes live in our own tables, and nobody listens to apalis's own task events.
        let config = |name: &str| {
            apalis_redis::Config::default()
                .queue(format!("{prefix}:{name}"))
                .batch_size(50)
                .persist_results(false)
                .emit_events(false)
        };
        Self {
            expire: RedisStorage::new(conn.clone()).with_config(config(queues::EXPIRY)),
            notify: RedisStorage::new(conn.clone()).with_config(config(queues::FANOUT)),
            email: RedisStorage::new(conn.clone()).with_config(config(queues::MAIL)),
            ping: RedisStorage::new(conn.clone()).with_config(config(queues::PING)),
        }
    }
}

/// Runs `$body` with `$s` bound to a fresh clone of the named storage, whatever the backend.
macro_rules! with_storage {
    ($queue:expr, $field:ident, |$s:ident| $body:expr) => {
        match $queue {
            Queue::Sqlite(storages) => {
                let mut $s = storages.$field.clone();
                $body
                    .await
                    .map_err(|e| apalis::prelude::BoxDynError::from(e.to_string()))
            }
            Queue::Redis(storages) => {
                let mut $s = storages.$field.clone();
                $body
                    .await
                    .map_err(|e| apalis::prelude::BoxDynError::from(e.to_string()))
            }
        }
    };
}

impl Queue {
    /// Schedules the expiry of a hold. apalis stores run-at in whole seconds, so round up:
    /// the job must never run before the hold is due.
    ///
    /// # Errors
    /// The backend refused the job.
    pub async fn expire_at(
        &self,
        job: ExpireReservation,
        at: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let secs = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0);
        let run_at = u64::try_from(secs).unwrap_or_default();
        with_storage!(self, expire, |s| s
            .push_task(TaskBuilder::new(job).run_at_timestamp(run_at).build()))
        .map_err(|source| QueueError {
            job: "ExpireReservation",
            source,
        })
    }

    /// # Errors
    /// The backend refused the job.
    pub async fn notify_restock(&self, job: NotifyRestock) -> Result<(), QueueError> {
        with_storage!(self, notify, |s| s.push(job)).map_err(|source| QueueError {
            job: "NotifyRestock",
            source,
        })
    }

    /// # Errors
    /// The backend refused the batch.
    pub async fn send_emails(&self, jobs: Vec<SendEmail>) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        with_storage!(self, email, |s| s.push_bulk(jobs)).map_err(|source| QueueError {
            job: "SendEmail",
            source,
        })
    }

    /// Re-queues a send after a transient failure, `delay` from now.
    ///
    /// # Errors
    /// The backend refused the job.
    pub async fn send_email_after(
        &self,
        job: SendEmail,
        delay: Duration,
    ) -> Result<(), QueueError> {
        with_storage!(self, email, |s| s
            .push_task(TaskBuilder::new(job).run_after(delay).build()))
        .map_err(|source| QueueError {
            job: "SendEmail",
            source,
        })
    }

    /// # Errors
    /// The backend refused the job.
    pub async fn ping(&self, job: Ping) -> Result<(), QueueError> {
        with_storage!(self, ping, |s| s.push(job)).map_err(|source| QueueError {
            job: "Ping",
            source,
        })
    }
}
