//! How a process is told to stop: every long-running part (job workers, the mail pump, the
//! sweep, heartbeats, the metrics listener) holds a [`Shutdown`] and finishes what it holds
//! once it fires.

use tokio::sync::watch;

/// Fires once when the process should stop.
pub type Shutdown = watch::Receiver<bool>;

/// Resolves when `shutdown` fires (at once if it already has).
pub async fn stopped(mut shutdown: Shutdown) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
