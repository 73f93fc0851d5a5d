//! Fixed-window counters for login lockout and per-IP rate limits. In distributed mode they
//! live in Redis, so every api instance sees the same counts.
//!
//! Signing in needs only the database, so a Redis outage must not stop it: while Redis does
//! not answer within [`REDIS_PATIENCE`], each instance counts in its own memory instead (the
//! limits then hold per instance rather than across them) and logs that it does.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Decrements a counter that exists (a missing one stays missing: `DECR` would make one
/// without an expiry).
const UNHIT: &str =
    "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end return 0";

/// How long a request waits for Redis before counting in memory.
const REDIS_PATIENCE: Duration = Duration::from_millis(300);

pub struct Limiter {
    memory: Mutex<HashMap<String, (u32, Instant)>>,
    redis: Option<(redis::aio::ConnectionManager, String)>,
}

/// A counter's value and how long until it resets.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub count: u32,
    pub resets_in: Duration,
}

impl Limiter {
    pub fn new(redis: Option<redis::aio::ConnectionManager>, prefix: &str) -> Self {
        Self {
            memory: Mutex::new(HashMap::new()),
            redis: redis.map(|conn| (conn, format!("{prefix}:limit:"))),
        }
    }

    /// Adds one to `key`'s counter; the window starts at the first hit.
    pub async fn hit(&self, key: &str, window: Duration) -> Window {
        if let Some((conn, prefix)) = &self.redis {
            let key = format!("{prefix}{key}");
            let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
            let mut pipe = redis::pipe();
            pipe.atomic()
                .incr(&key, 1)
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(millis)
                .arg("NX")
                .ignore()
                .pttl(&key);
            if let Some((count, ttl)) = ask(conn, &pipe).await {
                return window_of(count, ttl);
            }
        }
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() > 100_000 {
            map.retain(|_, (_, end)| *end > now);
        }
        let entry = map.entry(key.to_owned()).or_insert((0, now + window));
        if entry.1 <= now {
            *entry = (0, now + window);
        }
        entry.0 = entry.0.saturating_add(1);
        Window {
            count: entry.0,
            resets_in: entry.1 - now,
        }
    }

    /// Takes back one hit of `key` (the action it counted did not happen), within the same
    /// window; nothing when the window is over.
    pub async fn unhit(&self, key: &str) {
        if let Some((conn, prefix)) = &self.redis {
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL")
                .arg(UNHIT)
                .arg(1)
                .arg(format!("{prefix}{key}"))
                .ignore();
            let _: Option<()> = ask(conn, &pipe).await;
        }
        let now = Instant::now();
        if let Some(entry) = self.lock().get_mut(key)
            && entry.1 > now
        {
            entry.0 = entry.0.saturating_sub(1);
        }
    }

    pub async fn reset(&self, key: &str) {
        if let Some((conn, prefix)) = &self.redis {
            let mut pipe = redis::pipe();
            pipe.del(format!("{prefix}{key}")).ignore();
            let _: Option<()> = ask(conn, &pipe).await;
        }
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs `pipe` on Redis; `None` (logged) when Redis fails or is slower than
/// [`REDIS_PATIENCE`].
async fn ask<T: redis::FromRedisValue>(
    conn: &redis::aio::ConnectionManager,
    pipe: &redis::Pipeline,
) -> Option<T> {
    let mut conn = conn.clone();
    match tokio::time::timeout(REDIS_PATIENCE, pipe.query_async::<T>(&mut conn)).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(error)) => {
            tracing::warn!(%error, "rate limits counted in memory: redis failed");
            None
        }
        Err(_) => {
            tracing::warn!("rate limits counted in memory: redis is not answering");
            None
        }
    }
}

fn window_of(count: u32, ttl_ms: i64) -> Window {
    Window {
        count,
        resets_in: Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)),
    }
}
