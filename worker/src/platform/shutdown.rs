//! How a process is told to stop: one [`Shutdown`] token (tokio-util's `CancellationToken`),
//! cancelled once by whoever starts the process (on SIGTERM or Ctrl-C), and held by every
//! long-running part (job workers, the mail pump, the sweep, heartbeats, the metrics
//! listener, the api's background tasks and its sockets), each of which finishes what it
//! holds once it fires. Tasks are waited for with a `TaskTracker`, never aborted.

pub use tokio_util::sync::CancellationToken as Shutdown;

/// Resolves when `shutdown` fires (at once if it already has).
pub async fn stopped(shutdown: Shutdown) {
    shutdown.cancelled_owned().await;
}
