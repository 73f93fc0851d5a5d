//! Fixed-window counters for login lockout and per-IP rate limits. In distributed mode they
//! live in Redis, so every api instance sees the same counts.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use redis::AsyncCommands;

pub enum Limiter {
    Memory(Mutex<HashMap<String, (u32, Instant)>>),
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
    },
}

/// A counter's value and how long until it resets.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub count: u32,
    pub resets_in: Duration,
}

impl Limiter {
    pub fn new(redis: Option<redis::aio::ConnectionManager>, prefix: &str) -> Self {
        match redis {
            Some(conn) => Self::Redis {
                conn,
                prefix: format!("{prefix}:limit:"),
            },
            None => Self::Memory(Mutex::new(HashMap::new())),
        }
    }

    /// Adds one to `key`'s counter; the window starts at the first hit.
    ///
    /// # Errors
    /// Redis failed.
    pub async fn hit(&self, key: &str, window: Duration) -> Result<Window, redis::RedisError> {
        match self {
            Self::Memory(map) => {
                let now = Instant::now();
                let mut map = map
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if map.len() > 100_000 {
                    map.retain(|_, (_, end)| *end > now);
                }
                let entry = map.entry(key.to_owned()).or_insert((0, now + window));
                if entry.1 <= now {
                    *entry = (0, now + window);
                }
                entry.0 = entry.0.saturating_add(1);
                Ok(Window {
                    count: entry.0,
                    resets_in: entry.1 - now,
                })
            }
            Self::Redis { conn, prefix } => {
                let key = format!("{prefix}{key}");
                let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
                let (count, ttl): (u32, i64) = redis::pipe()
                    .atomic()
                    .incr(&key, 1)
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(millis)
                    .arg("NX")
                    .ignore()
                    .pttl(&key)
                    .query_async(&mut conn.clone())
                    .await?;
                Ok(Window {
                    count,
                    resets_in: Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
                })
            }
        }
    }

    /// The counter without changing it.
    ///
    /// # Errors
    /// Redis failed.
    pub async fn peek(&self, key: &str) -> Result<Window, redis::RedisError> {
        match self {
            Self::Memory(map) => {
                let now = Instant::now();
                let map = map
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                Ok(match map.get(key) {
                    Some((count, end)) if *end > now => Window {
                        count: *count,
                        resets_in: *end - now,
                    },
                    _ => Window {
                        count: 0,
                        resets_in: Duration::ZERO,
                    },
                })
            }
            Self::Redis { conn, prefix } => {
                let key = format!("{prefix}{key}");
                let (count, ttl): (Option<u32>, i64) = redis::pipe()
                    .get(&key)
                    .pttl(&key)
                    .query_async(&mut conn.clone())
                    .await?;
                Ok(Window {
                    count: count.unwrap_or(0),
                    resets_in: Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
                })
            }
        }
    }

    /// # Errors
    /// Redis failed.
    pub async fn reset(&self, key: &str) -> Result<(), redis::RedisError> {
        match self {
            Self::Memory(map) => {
                map.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(key);
                Ok(())
            }
            Self::Redis { conn, prefix } => {
                let _: i64 = conn.clone().del(format!("{prefix}{key}")).await?;
                Ok(())
            }
        }
    }
}
