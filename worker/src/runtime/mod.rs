//! The worker tier: apalis workers for each queue, plus the periodic sweep and reconciler
//! that re-derive any job Redis lost. Runs as the `worker` binary, or inside the api in
//! embedded mode.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use apalis::prelude::{
    BackendExt, BoxDynError, Data, Monitor, PollSnapshot, PollStrategy, WorkerBuilder,
    WorkerBuilderExt,
};
use tokio::sync::watch;

use crate::{
    jobs::{self, Deps, Job},
    mailer::Mailer,
    platform::{infra::Infra, queue::Storage, settings::Settings},
};

mod periodic;

pub use periodic::{reconcile_jobs, sweep_expired};

/// Fires once when the process should stop.
pub type Shutdown = watch::Receiver<bool>;

pub async fn stopped(mut shutdown: Shutdown) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// A process-unique worker name: a restarted worker must not collide with its predecessor's
/// still-fresh heartbeat.
pub fn unique_name(prefix: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{prefix}-{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Runs until `shutdown` fires, then lets in-flight jobs finish (up to 10 s).
///
/// # Errors
/// The mailer cannot be configured, or the job monitor failed.
pub async fn run(
    settings: Settings,
    infra: Infra,
    name: String,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let deps = Arc::new(Deps {
        mailer: Mailer::from_settings(&settings)?,
        db: infra.db.clone(),
        effects: infra.effects(),
        queue: infra.queue.clone(),
        bus: infra.bus.clone(),
        worker_name: name.clone(),
        settings,
    });
    tracing::info!(worker = %name, "worker started");
    let periodic = tokio::spawn(periodic::run(deps.clone(), shutdown.clone()));
    let monitor = jobs::register_all(Workers {
        monitor: Monitor::new().shutdown_timeout(Duration::from_secs(10)),
        deps,
    })
    .monitor;
    let result = monitor.run_with_signal(async move {
        stopped(shutdown).await;
        Ok(())
    });
    let result = result.await;
    periodic.abort();
    tracing::info!(worker = %name, "worker stopped");
    result.map_err(|e| anyhow::anyhow!("job monitor failed: {e}"))
}

/// How often an idle worker asks its backend for due jobs. apalis's default is its 30 s
/// heartbeat, far too slow for a job another process just pushed.
const POLL: Duration = Duration::from_millis(100);

/// A fixed-interval poll strategy that always arms its next tick before returning.
///
/// apalis-core 1.0's `IntervalStrategy` replaces its timer when it fires without polling the
/// new one, and `PollWith` ignores the strategy's answer; when the backend's fetch then comes
/// back empty in the same poll, nothing is left to wake the worker until its next heartbeat
/// (30 s). With apalis-sqlite that froze idle workers within seconds (a restock fan-out job
/// then waited half a minute). Polling the tokio interval until it is pending registers the
/// waker for the next tick every time.
struct Ticker(tokio::time::Interval);

impl Ticker {
    fn new(period: Duration) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self(interval)
    }
}

impl PollStrategy for Ticker {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut fired = false;
        while self.0.poll_tick(cx).is_ready() {
            fired = true;
        }
        if fired {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

/// Registers one apalis worker per job type on a monitor; see [`jobs::register_all`].
pub struct Workers {
    monitor: Monitor,
    deps: Arc<Deps>,
}

impl Workers {
    /// Adds a worker for `J`'s queue, on whichever backend the queue uses.
    #[must_use]
    pub fn add<J: Job>(self) -> Self {
        let name = format!("{}-{}", self.deps.worker_name, J::QUEUE);
        let concurrency = J::concurrency(&self.deps.settings);
        let deps = self.deps.clone();
        // The same worker over either backend's storage type.
        macro_rules! worker_over {
            ($storage:expr) => {{
                let storage = $storage;
                self.monitor.register(move |_restarts: usize| {
                    WorkerBuilder::new(name.clone())
                        .backend(storage.clone().poll_with_strategy(Ticker::new(POLL)))
                        .concurrency(concurrency)
                        .catch_panic()
                        .timeout(JOB_TIMEOUT)
                        .enable_tracing()
                        .data(deps.clone())
                        .build(handle::<J>)
                })
            }};
        }
        let monitor = match self.deps.queue.storage::<J>() {
            Storage::Sqlite(storage) => worker_over!(storage),
            Storage::Redis(storage) => worker_over!(storage),
        };
        Self { monitor, ..self }
    }
}

/// A job may run this long before it is cancelled and retried.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);

async fn handle<J: Job>(job: J, deps: Data<Arc<Deps>>) -> Result<(), BoxDynError> {
    job.run(Arc::clone(&deps)).await
}
