//! The bus that carries [`Event`]s to every process.
//!
//! Embedded mode uses an in-process broadcast channel. Distributed mode also publishes to one
//! Redis channel, and every process relays that channel into its own broadcast, so a
//! subscriber never knows which mode it runs in. A process hears its own events at once, not
//! after the round trip through Redis: each message names the process it came from, and the
//! relay skips its own.

use std::time::Duration;

use redis::AsyncCommands;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::events::Event;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot encode event")]
    Encode(#[from] serde_json::Error),
    #[error("cannot publish to redis")]
    Redis(#[from] redis::RedisError),
}

/// Waits before each retry of a failed publish.
const PUBLISH_RETRIES: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(250),
    Duration::from_millis(1000),
];

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
    origin: u64,
}

/// An event as it travels on the Redis channel: its own JSON (`{"event", "data"}`, what any
/// listener of the channel reads) with the publishing process's id beside it.
fn encode(event: &Event, origin: u64) -> Result<String, serde_json::Error> {
    let mut frame = serde_json::to_value(event)?;
    if let Some(fields) = frame.as_object_mut() {
        fields.insert("origin".into(), origin.into());
    }
    serde_json::to_string(&frame)
}

/// The event and the id of the process that published it.
fn decode(payload: &str) -> Result<(Event, Option<u64>), serde_json::Error> {
    #[derive(Deserialize)]
    struct Origin {
        origin: Option<u64>,
    }
    let origin = serde_json::from_str::<Origin>(payload)?.origin;
    Ok((serde_json::from_str(payload)?, origin))
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = if self.redis.is_some() {
            "redis"
        } else {
            "in-process"
        };
        f.debug_struct("EventBus")
            .field("transport", &transport)
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
        let publisher = super::redis_conn::manager(client).await?;
        let channel = format!("{prefix}:events");
        let origin = rand::random::<u64>();
        let (local, _) = broadcast::channel(LOCAL_CAPACITY);
        // Subscribe before returning so no event published after this point is missed.
        let pubsub = subscribe(client, &channel).await?;
        tokio::spawn(relay(
            client.clone(),
            channel.clone(),
            origin,
            local.clone(),
            pubsub,
        ));
        Ok(Self {
            local,
            redis: Some(RedisBus {
                publisher,
                channel,
                origin,
            }),
        })
    }

    /// Publishes to every subscriber of every process; this process's own subscribers get it
    /// even if Redis refuses it.
    ///
    /// # Errors
    /// The event cannot be encoded or Redis refuses it.
    pub async fn publish(&self, event: &Event) -> Result<(), BusError> {
        // No subscribers is not an error: nobody is watching.
        let _ = self.local.send(event.clone());
        let Some(bus) = &self.redis else {
            return Ok(());
        };
        let payload = encode(event, bus.origin)?;
        let mut conn = bus.publisher.clone();
        // The connection reconnects after a failed command: a publish that fails because Redis
        // just restarted goes through on a retry.
        let mut retries = PUBLISH_RETRIES.iter();
        loop {
            match conn.publish::<_, _, i64>(&bus.channel, &payload).await {
                Ok(_) => return Ok(()),
                Err(error) => match retries.next() {
                    Some(delay) => tokio::time::sleep(*delay).await,
                    None => return Err(error.into()),
                },
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
    origin: u64,
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
                .and_then(|p| decode(&p).map_err(|e| e.to_string()));
            match decoded {
                Ok((_, Some(from))) if from == origin => {}
                Ok((event, _)) => {
                    let _ = local.send(event);
                }
                Err(error) => tracing::warn!(%error, "undecodable event on the bus"),
            }
        }
        tracing::warn!(%channel, "event relay lost its subscription; reconnecting");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
