//! The worker tier: apalis workers for each queue, plus the periodic sweep and reconciler
//! that re-derive any job Redis lost. Runs as the `worker` binary, or inside the api in
//! embedded mode.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use apalis::prelude::{
    BackendExt, Monitor, PollSnapshot, PollStrategy, WorkerBuilder, WorkerBuilderExt,
};
use chrono::Utc;
use tokio::sync::watch;

use crate::{
    events::EventBus,
    handlers,
    infra::Infra,
    mailer::Mailer,
    queue::{Queue, Storages},
    settings::Settings,
};

/// What every handler needs.
#[derive(Debug)]
pub struct Deps {
    pub db: sea_orm::DatabaseConnection,
    pub queue: Queue,
    pub bus: EventBus,
    pub settings: Settings,
    pub mailer: Mailer,
    /// Unique per process (name-host-pid-random), as apalis requires.
    pub worker_name: String,
}

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
/// The job monitor failed.
pub async fn run(
    settings: Settings,
    infra: Infra,
    name: String,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mailer = Mailer::from_settings(&settings)?;
    let deps = Arc::new(Deps {
        mailer,
        db: infra.db.clone(),
        queue: infra.queue.clone(),
        bus: infra.bus.clone(),
        worker_name: name.clone(),
        settings,
    });
    tracing::info!(worker = %name, "worker started");

    let periodic = tokio::spawn(periodic(deps.clone(), shutdown.clone()));
    let signal = {
        let shutdown = shutdown.clone();
        async move {
            stopped(shutdown).await;
            Ok(())
        }
    };
    let result = match &infra.queue {
        Queue::Sqlite(storages) => {
            monitor(storages, &deps, &name)
                .run_with_signal(signal)
                .await
        }
        Queue::Redis(storages) => {
            monitor(storages, &deps, &name)
                .run_with_signal(signal)
                .await
        }
    };
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

macro_rules! worker {
    ($name:expr, $suffix:literal, $storage:expr, $deps:expr, $concurrency:expr, $handler:path) => {{
        let name = format!("{}-{}", $name, $suffix);
        let storage = $storage.clone();
        let deps = $deps.clone();
        move |_restarts: usize| {
            WorkerBuilder::new(name.clone())
                .backend(storage.clone().poll_with_strategy(Ticker::new(POLL)))
                .concurrency($concurrency)
                .catch_panic()
                .timeout(Duration::from_secs(60))
                .enable_tracing()
                .data(deps.clone())
                .build($handler)
        }
    }};
}

fn monitor<E, N, S, P>(storages: &Storages<E, N, S, P>, deps: &Arc<Deps>, name: &str) -> Monitor
where
    Storages<E, N, S, P>: Registrable,
{
    storages.register(
        Monitor::new().shutdown_timeout(Duration::from_secs(10)),
        deps,
        name,
    )
}

/// Registers one worker per queue on a monitor; implemented for both backends' storages.
pub trait Registrable {
    fn register(&self, monitor: Monitor, deps: &Arc<Deps>, name: &str) -> Monitor;
}

macro_rules! registrable {
    ($storages:ty) => {
        impl Registrable for $storages {
            fn register(&self, monitor: Monitor, deps: &Arc<Deps>, name: &str) -> Monitor {
                let concurrency = deps.settings.worker_concurrency;
                monitor
                    .register(worker!(
                        name,
                        "expiry",
                        self.expire,
                        deps,
                        concurrency,
                        handlers::expire_reservation
                    ))
                    .register(worker!(
                        name,
                        "fanout",
                        self.notify,
                        deps,
                        2,
                        handlers::notify_restock
                    ))
                    .register(worker!(
                        name,
                        "mail",
                        self.email,
                        deps,
                        concurrency,
                        handlers::send_email
                    ))
                    .register(worker!(name, "ping", self.ping, deps, 4, handlers::ping))
            }
        }
    };
}

registrable!(crate::queue::SqliteStorages);
registrable!(crate::queue::RedisStorages);

/// The sweep expires overdue holds nobody asked for (their delayed job may be late or lost);
/// the reconciler re-enqueues work whose job Redis may have lost.
async fn periodic(deps: Arc<Deps>, shutdown: Shutdown) {
    let mut sweep = tokio::time::interval(deps.settings.sweep_interval);
    let mut reconcile = tokio::time::interval(deps.settings.reconcile_interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = sweep.tick() => {
                if let Err(error) = handlers::sweep_expired(&deps, Utc::now()).await {
                    tracing::warn!(error = %entity::error::chain(&error), "expiry sweep failed");
                }
            }
            _ = reconcile.tick() => {
                if let Err(error) = handlers::reconcile(&deps, Utc::now()).await {
                    tracing::warn!(error = %entity::error::chain(&error), "reconciler failed");
                }
            }
        }
    }
}
