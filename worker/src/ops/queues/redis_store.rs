//! apalis-redis' layout, read and changed a page or a batch at a time: the ready list
//! (`{queue}:active`), the scheduled set (`:scheduled`, every pushed task until a fetch
//! promotes it), the failed (`:dead`) and finished (`:done`) sets, each worker's in-flight
//! set, and each task's payload (`:data`) and metadata (`:meta:{id}`).

use chrono::{DateTime, Utc};
use entity::ops::ItemState;
use redis::AsyncCommands;

use super::{Affected, Counts, InspectError, Item, Keys, Page, Result, at, encode};

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
