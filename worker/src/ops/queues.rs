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
use redis::AsyncCommands;
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};

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
        db: &'a sea_orm::DatabaseConnection,
        name: &'a str,
    },
}

impl<'a> Store<'a> {
    /// The store of queue `name`: apalis-redis' keys, or the embedded database's `Jobs` rows.
    pub fn of(queue: &Queue, db: &'a sea_orm::DatabaseConnection, name: &'a str) -> Self {
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

mod redis_store {
    use super::*;

    /// Ready list length, due and later scheduled counts, failed count, the soonest
    /// scheduled item and the soonest 200 (for their attempts).
    type CountReplies = (u64, u64, u64, u64, Vec<(String, i64)>, Vec<(String, i64)>);
    /// Payload, metadata, scheduled score, and whether it is in the dead and done sets.
    type ItemReplies = (
        Option<Vec<u8>>,
        std::collections::HashMap<String, String>,
        Option<i64>,
        bool,
        bool,
    );

    /// Items touched per script run by the queue-wide actions.
    const BATCH: usize = 500;

    /// apalis-redis keeps every pushed task in the scheduled set until a fetch promotes it
    /// (a task pushed to run now is scheduled at now): a scheduled item already due is
    /// ready. A retry goes back there due a few seconds after it failed; the soonest 200
    /// scheduled items are looked at for attempts, which bounds what is counted as retrying.
    pub async fn counts(
        conn: &redis::aio::ConnectionManager,
        keys: &Keys,
        now: DateTime<Utc>,
    ) -> Result<Counts> {
        let mut conn = conn.clone();
        let workers: Vec<String> = conn.zrange(keys.workers(), 0, -1).await?;
        let now_secs = now.timestamp();
        let (active, due, later, failed, soonest, sample): CountReplies = redis::pipe()
            .llen(keys.active())
            .zcount(keys.scheduled(), "-inf", now_secs)
            .zcount(keys.scheduled(), format!("({now_secs}"), "+inf")
            .scard(keys.dead())
            .zrange_withscores(keys.scheduled(), 0, 0)
            .zrange_withscores(keys.scheduled(), 0, 199)
            .query_async(&mut conn)
            .await?;
        let mut pipe = redis::pipe();
        for worker in &workers {
            pipe.scard(keys.inflight(worker));
        }
        let held: Vec<u64> = if workers.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn).await?
        };
        let (mut retrying_due, mut retrying_later) = (0, 0);
        if !sample.is_empty() {
            let mut pipe = redis::pipe();
            for (id, _) in &sample {
                pipe.hget(keys.meta_of(id), "attempts");
            }
            let attempts: Vec<Option<i64>> = pipe.query_async(&mut conn).await?;
            for ((_, score), attempts) in sample.iter().zip(attempts) {
                if attempts.unwrap_or(0) > 0 {
                    if *score <= now_secs {
                        retrying_due += 1;
                    } else {
                        retrying_later += 1;
                    }
                }
            }
        }
        let oldest_due = soonest
            .first()
            .map(|(_, score)| *score)
            .filter(|score| *score <= now_secs)
            .and_then(at);
        Ok(Counts {
            ready: (active + due).saturating_sub(retrying_due),
            scheduled: later.saturating_sub(retrying_later),
            in_flight: held.into_iter().sum(),
            retrying: retrying_due + retrying_later,
            failed,
            oldest_ready_at: oldest_due.or_else(|| (active > 0).then_some(now)),
        })
    }

    pub async fn page(
        conn: &redis::aio::ConnectionManager,
        keys: &Keys,
        state: ItemState,
        position: Option<&str>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Page> {
        let mut conn = conn.clone();
        let limit = isize::try_from(limit).unwrap_or(isize::MAX);
        let (ids, next): (Vec<String>, Option<String>) = match state {
            ItemState::Ready => ready_ids(&mut conn, keys, position, limit, now).await?,
            ItemState::Scheduled | ItemState::Retrying => {
                let from = if state == ItemState::Scheduled {
                    format!("({}", now.timestamp())
                } else {
                    "-inf".to_owned()
                };
                scheduled_ids(&mut conn, keys, position, limit, &from, "+inf").await?
            }
            ItemState::Failed | ItemState::Done => {
                let set = if state == ItemState::Failed {
                    keys.dead()
                } else {
                    keys.done()
                };
                let cursor: u64 = position
                    .map_or(Ok(0), str::parse)
                    .map_err(|_| InspectError::BadCursor)?;
                let (cursor, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
                    .arg(&set)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut conn)
                    .await?;
                (ids, (cursor != 0).then(|| cursor.to_string()))
            }
            ItemState::InFlight => {
                // Bounded by the workers' concurrency: one page holds them all.
                let workers: Vec<String> = conn.zrange(keys.workers(), 0, -1).await?;
                let mut ids = Vec::new();
                for worker in workers {
                    let held: Vec<String> = conn.smembers(keys.inflight(&worker)).await?;
                    ids.extend(held);
                }
                ids.truncate(limit as usize);
                (ids, None)
            }
        };
        let mut items = Vec::with_capacity(ids.len());
        items.extend(many(&conn, keys, &ids, now).await?);
        // Retries sit among the scheduled items; each listing shows its own.
        if matches!(
            state,
            ItemState::Retrying | ItemState::Scheduled | ItemState::Ready
        ) {
            items.retain(|i| i.state == state || i.state == ItemState::InFlight);
        }
        Ok(Page {
            items,
            next: next.map(|n| encode(&n)),
        })
    }

    /// Ready items: the ready list first (position `a:<offset>`), then the scheduled items
    /// already due, which apalis promotes at its next fetch (position `z:<score>:<skip>`).
    async fn ready_ids(
        conn: &mut redis::aio::ConnectionManager,
        keys: &Keys,
        position: Option<&str>,
        limit: isize,
        now: DateTime<Utc>,
    ) -> Result<(Vec<String>, Option<String>)> {
        let due = now.timestamp().to_string();
        let offset = match position {
            None => Some(0),
            Some(p) => match p.split_once(':') {
                Some(("a", n)) => Some(n.parse::<isize>().map_err(|_| InspectError::BadCursor)?),
                Some(("z", rest)) => {
                    let (ids, next) =
                        scheduled_ids(conn, keys, Some(rest), limit, "-inf", &due).await?;
                    return Ok((ids, next.map(|n| format!("z:{n}"))));
                }
                _ => return Err(InspectError::BadCursor),
            },
        };
        let offset = offset.unwrap_or(0);
        let mut ids: Vec<String> = conn
            .lrange(keys.active(), offset, offset + limit - 1)
            .await?;
        if ids.len() as isize == limit {
            return Ok((ids, Some(format!("a:{}", offset + limit))));
        }
        let room = limit - ids.len() as isize;
        let (more, next) = scheduled_ids(conn, keys, None, room, "-inf", &due).await?;
        ids.extend(more);
        Ok((ids, next.map(|n| format!("z:{n}"))))
    }

    /// Scheduled items with a score in `min..=max`, by score; position `<score>:<skip>`:
    /// the score reached and how many items of that score were seen (many share a second).
    async fn scheduled_ids(
        conn: &mut redis::aio::ConnectionManager,
        keys: &Keys,
        position: Option<&str>,
        limit: isize,
        min: &str,
        max: &str,
    ) -> Result<(Vec<String>, Option<String>)> {
        let (score, skip) = match position {
            None => (None, 0),
            Some(p) => p
                .split_once(':')
                .and_then(|(s, k)| Some((Some(s.parse::<i64>().ok()?), k.parse::<isize>().ok()?)))
                .ok_or(InspectError::BadCursor)?,
        };
        let min = score.map_or_else(|| min.to_owned(), |s| s.to_string());
        let found: Vec<(String, i64)> = conn
            .zrangebyscore_limit_withscores(keys.scheduled(), min, max, skip, limit)
            .await?;
        let next = (found.len() as isize == limit).then(|| {
            let last = found.last().map_or(0, |(_, s)| *s);
            let same = found.iter().filter(|(_, s)| *s == last).count() as isize;
            let skip = if Some(last) == score {
                skip + same
            } else {
                same
            };
            format!("{last}:{skip}")
        });
        Ok((found.into_iter().map(|(id, _)| id).collect(), next))
    }

    pub async fn item(
        conn: &redis::aio::ConnectionManager,
        keys: &Keys,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Item>> {
        Ok(many(conn, keys, &[id.to_owned()], now).await?.pop())
    }

    /// The items of `ids` that still exist, in order: one round trip for the lot.
    async fn many(
        conn: &redis::aio::ConnectionManager,
        keys: &Keys,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<Item>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(keys.data(), id)
                .hgetall(keys.meta_of(id))
                .zscore(keys.scheduled(), id)
                .sismember(keys.dead(), id)
                .sismember(keys.done(), id);
        }
        let mut conn = conn.clone();
        let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let mut items = Vec::with_capacity(ids.len());
        for (id, reply) in ids.iter().zip(replies.chunks(5)) {
            let reply: ItemReplies =
                redis::FromRedisValue::from_redis_value(redis::Value::Array(reply.to_vec()))
                    .map_err(|e| InspectError::Redis(e.into()))?;
            if let Some(item) = decode_item(id, reply, now) {
                items.push(item);
            }
        }
        Ok(items)
    }

    fn decode_item(id: &str, reply: ItemReplies, now: DateTime<Utc>) -> Option<Item> {
        let (payload, meta, scheduled, dead, done) = reply;
        let payload = payload?;
        let number = |field: &str| meta.get(field).and_then(|v| v.parse::<i64>().ok());
        let attempts = number("attempts").unwrap_or(0);
        let status = meta.get("status").map(String::as_str);
        let state = if dead || matches!(status, Some("Killed")) {
            ItemState::Failed
        } else if done || matches!(status, Some("Done")) {
            ItemState::Done
        } else if scheduled.is_some() && attempts > 0 {
            ItemState::Retrying
        } else if scheduled.is_some_and(|s| s > now.timestamp()) {
            ItemState::Scheduled
        } else if scheduled.is_some() {
            ItemState::Ready
        } else if matches!(status, Some("Running")) || meta.contains_key("locked_by") {
            ItemState::InFlight
        } else {
            ItemState::Ready
        };
        Some(Item {
            id: id.to_owned(),
            state,
            payload: serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null),
            attempts,
            last_error: meta.get("result").filter(|r| !r.is_empty()).cloned(),
            due_at: scheduled.or_else(|| number("run_at")).and_then(at),
            finished_at: number("done_at").and_then(at),
            worker: meta.get("locked_by").cloned(),
        })
    }

    /// Moves failed items back to the ready list, attempts reset: one item, or a batch at a
    /// time of all of them. Atomic per script run, so a racing worker or a second operator
    /// never sees an item in two places.
    const REQUEUE: &str = r"
        local ids
        if ARGV[1] == '' then
          ids = redis.call('spop', KEYS[1], ARGV[2])
        elseif redis.call('srem', KEYS[1], ARGV[1]) == 1 then
          ids = { ARGV[1] }
        else
          ids = {}
        end
        for _, id in ipairs(ids) do
          redis.call('hset', KEYS[3] .. ':' .. id, 'status', 'Pending', 'attempts', 0, 'result', '')
          redis.call('hdel', KEYS[3] .. ':' .. id, 'done_at', 'locked_by', 'locked_at')
          redis.call('rpush', KEYS[2], id)
        end
        if #ids > 0 then
          redis.call('del', KEYS[4])
          redis.call('lpush', KEYS[4], 1)
        end
        return #ids
    ";

    /// Deletes failed items (payload and metadata), one or a batch of all.
    const DISCARD: &str = r"
        local ids
        if ARGV[1] == '' then
          ids = redis.call('spop', KEYS[1], ARGV[2])
        elseif redis.call('srem', KEYS[1], ARGV[1]) == 1 then
          ids = { ARGV[1] }
        else
          ids = {}
        end
        for _, id in ipairs(ids) do
          redis.call('hdel', KEYS[2], id)
          redis.call('del', KEYS[3] .. ':' .. id)
        end
        return #ids
    ";

    pub async fn requeue(
        conn: &redis::aio::ConnectionManager,
        keys: &Keys,
        id: Option<&str>,
    ) -> Result<Affected> {
        let on = [keys.dead(), keys.active(), keys.meta(), keys.signal()];
        on_failed(conn, REQUEUE, &on, id).await
    }

    pub async fn discard(
        conn: &redis::aio::ConnectionManager,
        keys: &Keys,
        id: Option<&str>,
    ) -> Result<Affected> {
        on_failed(conn, DISCARD, &[keys.dead(), keys.data(), keys.meta()], id).await
    }

    /// Runs `script` (its first key the failed set) on one failed item, or on all of them a
    /// batch at a time.
    async fn on_failed(
        conn: &redis::aio::ConnectionManager,
        script: &str,
        keys: &[String],
        id: Option<&str>,
    ) -> Result<Affected> {
        let script = redis::Script::new(script);
        repeat(id, |id| {
            let mut conn = conn.clone();
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
            invocation.arg(id.unwrap_or("")).arg(BATCH);
            async move { invocation.invoke_async::<u64>(&mut conn).await }
        })
        .await
    }

    /// One run for one item; for all, runs until a batch comes back short.
    async fn repeat<'i, F, Fut>(id: Option<&'i str>, run: F) -> Result<Affected>
    where
        F: Fn(Option<&'i str>) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<u64>>,
    {
        if id.is_some() {
            return Ok(run(id).await?);
        }
        let mut total = 0;
        loop {
            let n = run(None).await?;
            total += n;
            if n < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Scheduled now: apalis promotes every item whose score has passed at its next fetch.
    /// An item already due is left alone (0), so a second press changes nothing.
    const RUN_NOW: &str = r"
        local score = redis.call('zscore', KEYS[1], ARGV[1])
        if score and tonumber(score) > tonumber(ARGV[2]) then
          redis.call('zadd', KEYS[1], 0, ARGV[1])
          return 1
        end
        return 0
    ";

    pub async fn run_now(
        conn: &redis::aio::ConnectionManager,
        keys: &Keys,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Affected> {
        let mut conn = conn.clone();
        Ok(redis::Script::new(RUN_NOW)
            .key(keys.scheduled())
            .arg(id)
            .arg(now.timestamp())
            .invoke_async(&mut conn)
            .await?)
    }

    /// Takes finished items out of the done set a batch at a time and deletes what they
    /// left: work proportional to what finished, never a read of the whole queue.
    const REMOVE_DONE: &str = r"
        local ids = redis.call('spop', KEYS[1], ARGV[1])
        for _, id in ipairs(ids) do
          redis.call('hdel', KEYS[2], id)
          redis.call('del', KEYS[3] .. ':' .. id)
        end
        return #ids
    ";

    pub async fn remove_done(conn: &redis::aio::ConnectionManager, keys: &Keys) -> Result<u64> {
        let script = redis::Script::new(REMOVE_DONE);
        let mut total = 0;
        loop {
            let mut conn = conn.clone();
            let n: u64 = script
                .key(keys.done())
                .key(keys.data())
                .key(keys.meta())
                .arg(BATCH)
                .invoke_async(&mut conn)
                .await?;
            total += n;
            if n < BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

mod sqlite_store {
    use super::*;

    /// A `Jobs` row, as the console reads it.
    #[derive(FromQueryResult)]
    struct Row {
        id: String,
        job: Vec<u8>,
        status: String,
        attempts: i64,
        max_attempts: i64,
        run_at: i64,
        last_result: Option<String>,
        lock_by: Option<String>,
        done_at: Option<i64>,
    }

    const COLUMNS: &str =
        "id, job, status, attempts, max_attempts, run_at, last_result, lock_by, done_at";

    /// apalis-sqlite's statuses for each state (a failed row is retried until its attempts
    /// run out; a killed one never).
    fn condition(state: ItemState) -> &'static str {
        match state {
            ItemState::Ready => "status = 'Pending' AND run_at <= ?",
            ItemState::Scheduled => "status = 'Pending' AND run_at > ?",
            ItemState::InFlight => "status IN ('Queued', 'Running') AND ? IS NOT NULL",
            ItemState::Retrying => {
                "status = 'Failed' AND attempts < max_attempts AND ? IS NOT NULL"
            }
            ItemState::Failed => {
                "(status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts)) AND ? IS NOT NULL"
            }
            ItemState::Done => "status = 'Done' AND ? IS NOT NULL",
        }
    }

    fn statement(sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
    }

    pub async fn counts(
        db: &sea_orm::DatabaseConnection,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Counts> {
        let mut counts = Counts::default();
        for state in [
            ItemState::Ready,
            ItemState::Scheduled,
            ItemState::InFlight,
            ItemState::Retrying,
            ItemState::Failed,
        ] {
            let sql = format!(
                "SELECT COUNT(*) AS n FROM Jobs WHERE job_type = ? AND {}",
                condition(state)
            );
            let n = db
                .query_one_raw(statement(&sql, vec![name.into(), now.timestamp().into()]))
                .await?
                .and_then(|row| row.try_get::<i64>("", "n").ok())
                .unwrap_or(0);
            let n = u64::try_from(n).unwrap_or(0);
            match state {
                ItemState::Ready => counts.ready = n,
                ItemState::Scheduled => counts.scheduled = n,
                ItemState::InFlight => counts.in_flight = n,
                ItemState::Retrying => counts.retrying = n,
                _ => counts.failed = n,
            }
        }
        let oldest = format!(
            "SELECT MIN(run_at) AS at FROM Jobs WHERE job_type = ? AND {}",
            condition(ItemState::Ready)
        );
        counts.oldest_ready_at = db
            .query_one_raw(statement(
                &oldest,
                vec![name.into(), now.timestamp().into()],
            ))
            .await?
            .and_then(|row| row.try_get::<Option<i64>>("", "at").ok().flatten())
            .and_then(at);
        Ok(counts)
    }

    fn to_item(row: Row, now: DateTime<Utc>) -> Item {
        let state = match row.status.as_str() {
            "Done" => ItemState::Done,
            "Killed" => ItemState::Failed,
            "Failed" if row.attempts >= row.max_attempts => ItemState::Failed,
            "Failed" => ItemState::Retrying,
            "Queued" | "Running" => ItemState::InFlight,
            _ if row.run_at > now.timestamp() => ItemState::Scheduled,
            _ => ItemState::Ready,
        };
        Item {
            payload: serde_json::from_slice(&row.job).unwrap_or(serde_json::Value::Null),
            state,
            attempts: row.attempts,
            last_error: row.last_result.filter(|r| !r.is_empty() && r != "null"),
            due_at: at(row.run_at),
            finished_at: row.done_at.and_then(at),
            worker: row.lock_by,
            id: row.id,
        }
    }

    pub async fn page(
        db: &sea_orm::DatabaseConnection,
        name: &str,
        state: ItemState,
        position: Option<&str>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Page> {
        // Position: the last row's (run_at, id); the index on (job_type, status, run_at)
        // serves the order.
        let after = match position {
            None => None,
            Some(p) => Some(
                p.split_once(':')
                    .and_then(|(r, id)| Some((r.parse::<i64>().ok()?, id.to_owned())))
                    .ok_or(InspectError::BadCursor)?,
            ),
        };
        let (run_at, id) = after.unwrap_or((i64::MIN, String::new()));
        let sql = format!(
            "SELECT {COLUMNS} FROM Jobs WHERE job_type = ? AND {} \
             AND (run_at > ? OR (run_at = ? AND id > ?)) ORDER BY run_at, id LIMIT ?",
            condition(state)
        );
        let rows = Row::find_by_statement(statement(
            &sql,
            vec![
                name.into(),
                now.timestamp().into(),
                run_at.into(),
                run_at.into(),
                id.into(),
                i64::from(limit).into(),
            ],
        ))
        .all(db)
        .await?;
        let next = (rows.len() == limit as usize)
            .then(|| {
                rows.last()
                    .map(|r| encode(&format!("{}:{}", r.run_at, r.id)))
            })
            .flatten();
        Ok(Page {
            items: rows.into_iter().map(|r| to_item(r, now)).collect(),
            next,
        })
    }

    pub async fn item(
        db: &sea_orm::DatabaseConnection,
        name: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Item>> {
        let sql = format!("SELECT {COLUMNS} FROM Jobs WHERE job_type = ? AND id = ?");
        Ok(
            Row::find_by_statement(statement(&sql, vec![name.into(), id.into()]))
                .one(db)
                .await?
                .map(|r| to_item(r, now)),
        )
    }

    const FAILED: &str = "(status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts))";

    pub async fn requeue(
        db: &sea_orm::DatabaseConnection,
        name: &str,
        id: Option<&str>,
    ) -> Result<Affected> {
        let sql = format!(
            "UPDATE Jobs SET status = 'Pending', attempts = 0, last_result = NULL, \
             lock_by = NULL, lock_at = NULL, done_at = NULL, run_at = strftime('%s', 'now') \
             WHERE job_type = ? AND {FAILED} AND (? IS NULL OR id = ?)"
        );
        let id: Value = id.map(str::to_owned).into();
        Ok(db
            .execute_raw(statement(&sql, vec![name.into(), id.clone(), id]))
            .await?
            .rows_affected())
    }

    pub async fn discard(
        db: &sea_orm::DatabaseConnection,
        name: &str,
        id: Option<&str>,
    ) -> Result<Affected> {
        let sql =
            format!("DELETE FROM Jobs WHERE job_type = ? AND {FAILED} AND (? IS NULL OR id = ?)");
        let id: Value = id.map(str::to_owned).into();
        Ok(db
            .execute_raw(statement(&sql, vec![name.into(), id.clone(), id]))
            .await?
            .rows_affected())
    }

    pub async fn run_now(
        db: &sea_orm::DatabaseConnection,
        name: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Affected> {
        let sql = "UPDATE Jobs SET run_at = ? WHERE job_type = ? AND id = ? \
                   AND status = 'Pending' AND run_at > ?";
        Ok(db
            .execute_raw(statement(
                sql,
                vec![
                    now.timestamp().into(),
                    name.into(),
                    id.into(),
                    now.timestamp().into(),
                ],
            ))
            .await?
            .rows_affected())
    }

    pub async fn remove_done(db: &sea_orm::DatabaseConnection, name: &str) -> Result<u64> {
        Ok(db
            .execute_raw(statement(
                "DELETE FROM Jobs WHERE job_type = ? AND status = 'Done'",
                vec![name.into()],
            ))
            .await?
            .rows_affected())
    }
}
