//! The worker tier: apalis workers for each queue, the mail pump that sends from the email
//! ledger, and the periodic sweep and reconciler that re-derive any job Redis lost. Runs as the `worker` binary, or inside the api in
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
    jobs::{self, Deps, Job, Registry},
    mailer::Mailer,
    ops,
    platform::{infra::Infra, queue::Storage, settings::Settings},
};

mod mail_pump;
mod periodic;
mod retention;

pub use periodic::{reconcile_restocks, sweep_expired};
pub use retention::{Purged, purge_old_rows};

pub use crate::platform::shutdown::{Shutdown, stopped};

/// A process-unique worker name: a restarted worker must not collide with its predecessor's
/// still-fresh heartbeat.
pub fn unique_name(prefix: &str) -> String {
    let host = ops::heartbeat::host();
    format!(
        "{prefix}-{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Runs until `shutdown` fires, then lets in-flight jobs finish (up to 10 s).
///
/// Each job type's worker is supervised on its own: when it stops while the process is not
/// shutting down (Redis restarted, flushed or slow to answer — apalis-redis issue 76), it is
/// started again with backoff, re-registering with the backend. The sweep and reconciler
/// need only the database and run throughout.
///
/// # Errors
/// The mailer cannot be configured.
pub async fn run(
    settings: Settings,
    infra: Infra,
    name: String,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let (controls, obeyed) = watch::channel(ops::ControlState::default());
    let deps = Arc::new(Deps {
        mailer: Mailer::from_settings(&settings)?,
        db: infra.db.clone(),
        effects: crate::Effects::of(&infra),
        queue: infra.queue.clone(),
        bus: infra.bus.clone(),
        worker_name: name.clone(),
        activity: ops::Activity::new(ops::queue_names().into_iter().map(|q| q.name)),
        controls: obeyed,
        settings,
    });
    tracing::info!(worker = %name, "worker started");
    // The operators' pauses are known before anything takes work: a worker started while
    // mail is paused must not send a message in its first heartbeat.
    let started_at = chrono::Utc::now();
    ops::heartbeat::first(&deps, &controls, started_at).await;
    let heartbeat = tokio::spawn(ops::heartbeat::run(
        deps.clone(),
        controls,
        started_at,
        shutdown.clone(),
    ));
    if let Some(port) = deps.settings.worker.metrics_port {
        let addr = std::net::SocketAddr::new(deps.settings.http.host, port);
        let listener = ops::metrics::serve(deps.clone(), addr, shutdown.clone());
        tokio::spawn(async move {
            if let Err(error) = listener.await {
                tracing::error!(%error, %addr, "cannot serve worker metrics (METRICS_PORT)");
            }
        });
    }
    let periodic = tokio::spawn(periodic::run(deps.clone(), shutdown.clone()));
    let mail = tokio::spawn(mail_pump::run(deps.clone(), shutdown.clone()));
    let workers = jobs::register_all(Workers {
        deps,
        shutdown,
        supervisors: Vec::new(),
    });
    for supervisor in workers.supervisors {
        let _ = supervisor.await;
    }
    let _ = mail.await;
    let _ = heartbeat.await;
    let _ = periodic.await;
    tracing::info!(worker = %name, "worker stopped");
    Ok(())
}

/// Starts one supervised apalis worker per job type; see [`jobs::register_all`].
pub struct Workers {
    deps: Arc<Deps>,
    shutdown: Shutdown,
    supervisors: Vec<tokio::task::JoinHandle<()>>,
}

impl Registry for Workers {
    /// Adds a supervised worker for `J`'s queue, on whichever backend the queue uses, and
    /// the periodic clean-up of that queue's finished tasks.
    fn add<J: Job>(mut self) -> Self {
        let (deps, shutdown) = (self.deps.clone(), self.shutdown.clone());
        self.supervisors
            .push(tokio::spawn(supervise::<J>(deps, shutdown.clone())));
        self.supervisors
            .push(tokio::spawn(vacuum::<J>(self.deps.clone(), shutdown)));
        self
    }
}

/// A worker that ran this long before it stopped was healthy: restart it without delay.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(200);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(5);

async fn supervise<J: Job>(deps: Arc<Deps>, shutdown: Shutdown) {
    let mut delay = FIRST_RESTART_DELAY;
    let mut controls = deps.controls.clone();
    for restarts in 0usize.. {
        // Paused (or this process quieted): take nothing from the queue until resumed.
        tokio::select! {
            () = ops::until_taking(&mut controls, J::QUEUE) => {}
            () = stopped(shutdown.clone()) => return,
        }
        let started = tokio::time::Instant::now();
        let signal = {
            let (shutdown, mut controls) = (shutdown.clone(), controls.clone());
            async move {
                tokio::select! {
                    () = stopped(shutdown) => {}
                    () = ops::until_held(&mut controls, J::QUEUE) => {}
                }
                Ok(())
            }
        };
        // A stopped monitor finishes the jobs it holds (up to its shutdown timeout).
        let outcome = monitor::<J>(&deps, restarts).run_with_signal(signal).await;
        if shutdown.is_cancelled() {
            return;
        }
        if !controls.borrow().takes(J::QUEUE) {
            tracing::info!(queue = J::QUEUE, "job worker held by an operator");
            continue;
        }
        if started.elapsed() > HEALTHY_AFTER {
            delay = FIRST_RESTART_DELAY;
        }
        tracing::warn!(
            queue = J::QUEUE,
            ?outcome,
            restarts,
            retry_in_ms = delay.as_millis(),
            "job worker stopped; restarting it"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(shutdown.clone()) => return,
        }
        delay = (delay * 2).min(MAX_RESTART_DELAY);
    }
}

/// A monitor running one worker for `J`. A restarted worker takes a new name: apalis refuses
/// a name whose previous heartbeat is still fresh.
fn monitor<J: Job>(deps: &Arc<Deps>, restarts: usize) -> Monitor {
    let name = match restarts {
        0 => format!("{}-{}", deps.worker_name, J::QUEUE),
        n => format!("{}-{}-{n}", deps.worker_name, J::QUEUE),
    };
    let concurrency = J::concurrency(&deps.settings);
    let monitor = Monitor::new().shutdown_timeout(Duration::from_secs(10));
    // The same worker over either backend's storage type.
    macro_rules! worker_over {
        ($storage:expr) => {{
            let storage = $storage;
            let deps = deps.clone();
            monitor.register(move |_restarts: usize| {
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
    match deps.queue.storage::<J>() {
        Storage::Sqlite(storage) => worker_over!(storage),
        Storage::Redis(storage) => worker_over!(storage),
    }
}

/// How often finished tasks are removed from the job backend.
const VACUUM_EVERY: Duration = Duration::from_secs(10);

/// Removes `J`'s finished tasks from the backend, so Redis (or the SQLite job table) holds
/// only work still to do and failures an operator has not dealt with, however long the
/// store runs. Work proportional to what finished since the last pass.
async fn vacuum<J: Job>(deps: Arc<Deps>, shutdown: Shutdown) {
    let mut every = tokio::time::interval(VACUUM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let store = ops::Store::of(&deps.queue, &deps.db, J::QUEUE);
    loop {
        tokio::select! {
            _ = every.tick() => {
                if let Err(error) = store.remove_done().await {
                    tracing::warn!(%error, queue = J::QUEUE, "cannot remove finished jobs");
                }
            }
            () = stopped(shutdown.clone()) => return,
        }
    }
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

/// A job may run this long before it is cancelled and retried.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// How soon a job handed back by a paused or quieted worker is due again.
const HELD_JOB_RETURNS_AFTER: Duration = Duration::from_secs(1);

/// How soon a job the database could not serve is tried again (apalis rounds it up to the
/// next whole second).
const DEFER_WHILE_DATABASE_DOWN: Duration = Duration::from_secs(1);

/// Runs a job. One that failed only because the database was not answering is put back on
/// its queue as a new task and this one reported done: an outage must not use up its
/// attempts (apalis-redis dead-letters a job after 25 failures, backing off a second more
/// each time) however long it lasts. Only when the queue refuses it too does it count as a
/// failure, retried by the backend as usual.
async fn handle<J: Job>(job: J, deps: Data<Arc<Deps>>) -> Result<(), BoxDynError> {
    let deps = Arc::clone(&deps);
    // Paused or quieted: an apalis worker being stopped may still fetch a job or two before
    // its stream ends. Such a job goes back on its queue, untouched, for a worker that takes
    // it (or for the resume), rather than running here against the operator's word.
    if !deps.controls.borrow().takes(J::QUEUE) {
        deps.queue.push_after(job, HELD_JOB_RETURNS_AFTER).await?;
        return Ok(());
    }
    let activity = deps.activity.of(J::QUEUE);
    let _in_flight = activity.map(ops::activity::QueueActivity::start);
    let started = std::time::Instant::now();
    let result = match job.clone().run(deps.clone()).await {
        Err(error) if database_unavailable(&*error) => {
            match deps.queue.push_after(job, DEFER_WHILE_DATABASE_DOWN).await {
                Ok(()) => {
                    tracing::warn!(queue = J::QUEUE, error = %entity::error::chain(&*error), "database unavailable; job deferred");
                    Ok(())
                }
                Err(_) => Err(error),
            }
        }
        outcome => outcome,
    };
    if let Some(activity) = activity {
        activity.finished(result.is_ok(), started.elapsed());
    }
    result
}

/// Whether a job's error is the database being down or out of connections, rather than
/// anything about the job.
fn database_unavailable(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    matches!(
        error.downcast_ref::<entity::Error>(),
        Some(entity::Error::Database(db))
            if entity::db::is_unavailable(db) || entity::db::is_overload(db)
    )
}
