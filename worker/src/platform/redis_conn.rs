//! The one way every part of a process opens its Redis connections.

use std::time::Duration;

/// A reconnecting Redis connection whose replies may take a while under load: redis-rs's
/// 500 ms default response timeout can wedge a worker pool (apalis-redis issue 76).
///
/// # Errors
/// Redis is unreachable.
pub async fn manager(
    client: &redis::Client,
) -> Result<redis::aio::ConnectionManager, redis::RedisError> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(6);
    client.get_connection_manager_with_config(config).await
}
