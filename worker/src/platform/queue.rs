//! The job queue handle. Callers push any [`Payload`] without knowing whether it goes to
//! apalis-sqlite (embedded) or apalis-redis (distributed); each job type has its own queue,
//! so a flood of mail never delays an expiry.

use std::time::Duration;

use apalis::prelude::{Task, TaskBuilder, TaskSink};
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;
use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};

/// What the queue carries: a serialisable payload and the name of its queue. What running
/// one means is the business of the jobs, a layer above this one.
pub trait Payload: Serialize + DeserializeOwned + Clone + Send + Sync + Unpin + 'static {
    /// The queue's name (prefixed in Redis); producer and consumer agree through it.
    const QUEUE: &'static str;
}

#[derive(Debug, thiserror::Error)]
#[error("cannot enqueue {job}: {source}")]
pub struct QueueError {
    job: &'static str,
    #[source]
    source: apalis::prelude::BoxDynError,
}

#[derive(Clone, Debug)]
pub enum Queue {
    Sqlite(apalis_sqlite::SqlitePool),
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
    },
}

/// One job type's storage, on whichever backend the queue uses.
pub enum Storage<J> {
    Sqlite(SqliteStorage<J>),
    Redis(RedisStorage<J>),
}

impl Queue {
    /// The storage of `J`'s queue. Cheap: a storage is a connection handle and a config.
    pub fn storage<J: Payload>(&self) -> Storage<J> {
        match self {
            // Results are acknowledged (without that, apalis-redis never removes a task from its
            // worker's in-flight set) and then vacuumed: outcomes live in our own tables.
            Self::Sqlite(pool) => Storage::Sqlite(
                SqliteStorage::new(pool).with_config(
                    apalis_sqlite::Config::default()
                        .queue(J::QUEUE)
                        .batch_size(50),
                ),
            ),
            Self::Redis { conn, prefix } => Storage::Redis(
                RedisStorage::new(conn.clone()).with_config(redis_config::<J>(prefix)),
            ),
        }
    }

    /// # Errors
    /// The backend refused the job.
    pub async fn push<J: Payload>(&self, job: J) -> Result<(), QueueError> {
        match self.storage::<J>() {
            Storage::Sqlite(mut s) => s.push(job).await.map_err(failed::<J>),
            Storage::Redis(mut s) => s.push(job).await.map_err(failed::<J>),
        }
    }

    /// Pushes many jobs of one type in one round trip.
    ///
    /// # Errors
    /// The backend refused the batch.
    pub async fn push_bulk<J: Payload>(&self, jobs: Vec<J>) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        match self.storage::<J>() {
            Storage::Sqlite(mut s) => s.push_bulk(jobs).await.map_err(failed::<J>),
            Storage::Redis(mut s) => s.push_bulk(jobs).await.map_err(failed::<J>),
        }
    }

    /// Runs `job` at `at`, never before. apalis stores run-at in whole seconds, so this rounds
    /// up.
    ///
    /// # Errors
    /// The backend refused the job.
    pub async fn push_at<J: Payload>(&self, job: J, at: DateTime<Utc>) -> Result<(), QueueError> {
        self.push_all_at(vec![(job, at)]).await
    }

    /// Runs each job at its time, as [`Queue::push_at`] does, in one round trip (one script
    /// on Redis) however many there are.
    ///
    /// # Errors
    /// The backend refused the batch.
    pub async fn push_all_at<J: Payload>(
        &self,
        jobs: Vec<(J, DateTime<Utc>)>,
    ) -> Result<(), QueueError> {
        let tasks: Vec<_> = jobs
            .into_iter()
            .map(|(job, at)| scheduled(job, at))
            .collect();
        if tasks.is_empty() {
            return Ok(());
        }
        let tasks = futures::stream::iter(tasks);
        match self.storage::<J>() {
            Storage::Sqlite(mut s) => s.push_all(tasks).await.map_err(failed::<J>),
            Storage::Redis(mut s) => s.push_all(tasks).await.map_err(failed::<J>),
        }
    }

    /// Runs `job` `delay` from now.
    ///
    /// # Errors
    /// The backend refused the job.
    pub async fn push_after<J: Payload>(&self, job: J, delay: Duration) -> Result<(), QueueError> {
        let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        self.push_at(job, at).await
    }
}

/// Nobody listens to apalis's own task events.
fn redis_config<J: Payload>(prefix: &str) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(format!("{prefix}:{}", J::QUEUE))
        .batch_size(50)
        .emit_events(false)
}

/// `job` as a task to run at `at`, rounded up to apalis's whole seconds.
fn scheduled<J: Payload>(job: J, at: DateTime<Utc>) -> Task<J> {
    let secs = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0);
    TaskBuilder::new(job)
        .run_at_timestamp(u64::try_from(secs).unwrap_or_default())
        .build()
}

fn failed<J: Payload>(error: impl std::fmt::Display) -> QueueError {
    QueueError {
        job: std::any::type_name::<J>()
            .rsplit("::")
            .next()
            .unwrap_or("job"),
        source: error.to_string().into(),
    }
}
