//! Stock and catalog events, and the bus that carries them to every api instance.
//!
//! Embedded mode uses an in-process broadcast channel. Distributed mode publishes to one Redis
//! channel and every process relays that channel into its own broadcast, so a subscriber never
//! knows which mode it runs in. Events are notifications, not facts: Postgres holds the facts,
//! and `version` lets a client detect a gap and re-read.

use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Every frame on `/ws` is one of these, serialised as `{"event": ..., "data": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum Event {
    StockUpdate(StockUpdate),
    ProductRestocked(ProductRestocked),
    ReservationExpired(ReservationExpired),
    /// Answer of a worker to [`crate::jobs::Ping`]; internal, never sent to browsers.
    WorkerPong(WorkerPong),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockUpdate {
    pub drop_id: i64,
    pub available_stock: i32,
    /// Grows with every change of this drop's stock.
    pub version: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductRestocked {
    pub product_id: i64,
    pub slug: String,
    pub name: String,
    pub stock_quantity: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationExpired {
    pub reservation_id: i64,
    pub drop_id: i64,
    /// Used to route the frame to its owner's sockets only.
    pub user_id: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPong {
    pub token: String,
    pub worker: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot encode event")]
    Encode(#[from] serde_json::Error),
    #[error("cannot publish to redis")]
    Redis(#[from] redis::RedisError),
}

/// Capacity of the in-process channel; a subscriber that lags further behind is told so and
/// skips ahead (the WebSocket hub then resends the latest state).
const LOCAL_CAPACITY: usize = 8192;

#[derive(Clone)]
pub struct EventBus {
    local: broadcast::Sender<Event>,
    redis: Option<RedisBus>,
}

#[derive(Clone)]
struct RedisBus {
    publisher: redis::aio::ConnectionManager,
    channel: String,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field(
                "transport",
                &if self.redis.is_some() {
                    "redis"
                } else {
                    "in-process"
                },
            )
            .finish()
    }
}

impl EventBus {
    pub fn in_process() -> Self {
        let (local, _) = broadcast::channel(LOCAL_CAPACITY);
        Self { local, redis: None }
    }

    /// Connects the publisher and starts the relay from the Redis channel into this process.
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn redis(client: &redis::Client, prefix: &str) -> Result<Self, BusError> {
        let publisher = crate::infra::redis_manager(client).await?;
        let channel = format!("{prefix}:events");
        let (local, _) = broadcast::channel(LOCAL_CAPACITY);
        // Subscribe before returning so no event published after this point is missed.
        let pubsub = subscribe(client, &channel).await?;
        tokio::spawn(relay(
            client.clone(),
            channel.clone(),
            local.clone(),
            pubsub,
        ));
        Ok(Self {
            local,
            redis: Some(RedisBus { publisher, channel }),
        })
    }

    /// Publishes to every subscriber of every process.
    ///
    /// # Errors
    /// The event cannot be encoded or Redis refuses it.
    pub async fn publish(&self, event: &Event) -> Result<(), BusError> {
        match &self.redis {
            None => {
                // No subscribers is not an error: nobody is watching.
                let _ = self.local.send(event.clone());
                Ok(())
            }
            Some(bus) => {
                let payload = serde_json::to_string(event)?;
                let mut conn = bus.publisher.clone();
                let _: i64 = conn.publish(&bus.channel, payload).await?;
                Ok(())
            }
        }
    }

    /// Publishes and logs a failure instead of returning it: used after a commit, where the
    /// fact is already safe and a lost notification is repaired by the next event's version.
    pub async fn publish_or_log(&self, event: &Event) {
        if let Err(error) = self.publish(event).await {
            tracing::warn!(error = %error, ?event, "event not published");
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.local.subscribe()
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

async fn relay(
    client: redis::Client,
    channel: String,
    local: broadcast::Sender<Event>,
    first: redis::aio::PubSub,
) {
    use futures::StreamExt;
    let mut pubsub = Some(first);
    loop {
        let current = match pubsub.take() {
            Some(p) => p,
            None => match subscribe(&client, &channel).await {
                Ok(p) => {
                    tracing::info!(%channel, "event relay resubscribed");
                    p
                }
                Err(error) => {
                    tracing::warn!(%error, "event relay cannot subscribe; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        let mut messages = current.into_on_message();
        while let Some(message) = messages.next().await {
            let decoded = message
                .get_payload::<String>()
                .map_err(|e| e.to_string())
                .and_then(|p| serde_json::from_str::<Event>(&p).map_err(|e| e.to_string()));
            match decoded {
                Ok(event) => {
                    let _ = local.send(event);
                }
                Err(error) => tracing::warn!(%error, "undecodable event on the bus"),
            }
        }
        tracing::warn!(%channel, "event relay lost its subscription; reconnecting");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl From<entity::drops::Stock> for StockUpdate {
    fn from(s: entity::drops::Stock) -> Self {
        Self {
            drop_id: s.drop_id,
            available_stock: s.available_stock,
            version: s.version,
        }
    }
}
