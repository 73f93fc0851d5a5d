//! The operations console's engine: every queue (each apalis job type and the mail ledger)
//! counted, paged and acted on; pauses and quiets that every worker process obeys; the worker
//! processes' reports. The api serves it (`/api/admin/ops`, `/ops`); workers obey it
//! (`heartbeat`) and expose it (`metrics`).

pub mod heartbeat;
pub mod metrics;
pub mod queues;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use entity::{
    models::{ops_pauses, ops_workers},
    ops::{ItemState, mail_queue},
};

pub use crate::process::{
    activity::{self, Activity},
    controls::{self, ControlState, Controls, until_held, until_taking},
};
pub use queues::{InspectError, Item, Page, Store};

use crate::{
    jobs::{self, Job, Registry},
    platform::queue::Queue,
};

/// The mail ledger's name among the queues.
pub const MAIL: &str = "mail";

/// A queue the console knows: an apalis job type's, or the mail ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueName {
    /// Its name in paths, pauses and Redis keys.
    pub name: &'static str,
    /// The job type it carries; `None` for the mail ledger.
    pub job: Option<&'static str>,
}

impl QueueName {
    pub fn is_mail(self) -> bool {
        self.job.is_none()
    }
}

/// Every queue, the jobs' in [`jobs::register_all`]'s order, then the mail ledger.
pub fn queue_names() -> Vec<QueueName> {
    #[derive(Default)]
    struct Names(Vec<QueueName>);
    impl Registry for Names {
        fn add<J: Job>(mut self) -> Self {
            let job = std::any::type_name::<J>()
                .rsplit("::")
                .next()
                .unwrap_or(J::QUEUE);
            self.0.push(QueueName {
                name: J::QUEUE,
                job: Some(job),
            });
            self
        }
    }
    let mut names = jobs::register_all(Names::default()).0;
    names.push(QueueName {
        name: MAIL,
        job: None,
    });
    names
}

/// The queue called `name` (its path name or its job type's name).
pub fn queue_named(name: &str) -> Option<QueueName> {
    queue_names()
        .into_iter()
        .find(|q| q.name == name || q.job == Some(name))
}

/// Items finished and failed over the last 1, 5 and 15 minutes.
pub const WINDOWS: [i64; 3] = [1, 5, 15];

/// One queue at a glance.
#[derive(Clone, Debug)]
pub struct QueueSummary {
    pub queue: QueueName,
    pub ready: u64,
    pub scheduled: u64,
    pub in_flight: u64,
    pub retrying: u64,
    pub failed: u64,
    /// Finished in the last 15 minutes.
    pub done_recently: u64,
    pub oldest_ready_at: Option<DateTime<Utc>>,
    /// (finished, failed) over each of [`WINDOWS`].
    pub throughput: [(u64, u64); 3],
    /// (finished, failed) in each of the last 15 minutes, oldest first, summed over the
    /// workers' reports: the console's chart.
    pub per_minute: Vec<(u64, u64)>,
    pub paused: Option<ops_pauses::Model>,
}

/// Every queue counted by state, with its throughput and pause: the console's first table.
/// Each count reads an index or a Redis key's length; throughput comes from the workers'
/// reports (the apalis queues) or the ledger's recent rows (mail).
///
/// # Errors
/// The database or the job store failed.
pub async fn summary(
    db: &entity::db::Db,
    queue: &Queue,
    now: DateTime<Utc>,
) -> Result<Vec<QueueSummary>, InspectError> {
    let pauses: BTreeMap<String, ops_pauses::Model> = entity::ops::paused(db)
        .await
        .map_err(entity_error)?
        .into_iter()
        .map(|p| (p.queue.clone(), p))
        .collect();
    let reports = entity::ops::workers::recent(db, now - Duration::minutes(15))
        .await
        .map_err(entity_error)?;
    let mut out = Vec::new();
    for name in queue_names() {
        let paused = pauses.get(name.name).cloned();
        if name.is_mail() {
            let c = mail_queue::counts(db, now).await.map_err(entity_error)?;
            let (_, per_minute) = throughput(&reports, name.name, now);
            out.push(QueueSummary {
                queue: name,
                ready: c.ready,
                scheduled: 0,
                in_flight: c.in_flight,
                retrying: c.retrying,
                failed: c.failed,
                done_recently: c.done_recently,
                oldest_ready_at: c.oldest_ready_at,
                throughput: [0, 1, 2].map(|i| (c.sent[i], c.failed_lately[i])),
                per_minute,
                paused,
            });
            continue;
        }
        let c = Store::of(queue, db, name.name).counts(now).await?;
        let (throughput, per_minute) = throughput(&reports, name.name, now);
        out.push(QueueSummary {
            queue: name,
            ready: c.ready,
            scheduled: c.scheduled,
            in_flight: c.in_flight,
            retrying: c.retrying,
            failed: c.failed,
            done_recently: throughput[2].0,
            oldest_ready_at: c.oldest_ready_at,
            throughput,
            per_minute,
            paused,
        });
    }
    Ok(out)
}

/// Items finished and failed.
type Counted = (u64, u64);

/// A queue's finished and failed items over each window and in each of the last 15
/// minutes (oldest first), summed over the workers' reports.
fn throughput(
    reports: &[ops_workers::Model],
    queue: &str,
    now: DateTime<Utc>,
) -> ([Counted; 3], Vec<Counted>) {
    let minute = now.timestamp().div_euclid(60);
    let mut windows = [(0, 0); 3];
    let mut per_minute = vec![(0, 0); activity::MINUTES];
    for report in reports {
        let Some(minutes) = report
            .throughput
            .get(queue)
            .and_then(|m| serde_json::from_value::<activity::Minutes>(m.clone()).ok())
        else {
            continue;
        };
        for (i, window) in WINDOWS.iter().enumerate() {
            let (done, failed) = minutes.within(usize::try_from(*window).unwrap_or(0), minute);
            windows[i].0 += done;
            windows[i].1 += failed;
        }
        // Slot `i` of the report is minute `minutes.minute - (14 - i)`.
        for (i, (done, failed)) in minutes.done.iter().zip(&minutes.failed).enumerate() {
            let at = minutes.minute - (activity::MINUTES as i64 - 1 - i as i64);
            let age = minute - at;
            if (0..activity::MINUTES as i64).contains(&age) {
                let slot = activity::MINUTES - 1 - usize::try_from(age).unwrap_or(0);
                per_minute[slot].0 += done;
                per_minute[slot].1 += failed;
            }
        }
    }
    (windows, per_minute)
}

/// How a worker process stands, from its last report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    Running,
    /// Quieted: finishing what it holds, taking nothing new.
    Quiet,
    /// Shut down cleanly.
    Stopped,
    /// Missed three heartbeats: killed, hung or cut off. Its claims go back when their
    /// leases end.
    Gone,
}

/// The worker processes heard from in the last hour, each with its state.
///
/// # Errors
/// Database failure.
pub async fn workers(
    db: &entity::db::Db,
    heartbeat: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<Vec<(ops_workers::Model, WorkerState)>, entity::Error> {
    let window = Duration::from_std(heartbeat * 3).unwrap_or(Duration::seconds(15));
    Ok(entity::ops::workers::recent(db, now - Duration::hours(1))
        .await?
        .into_iter()
        .map(|w| {
            let state = if w.stopped {
                WorkerState::Stopped
            } else if w.last_heartbeat < now - window {
                WorkerState::Gone
            } else if w.quiet {
                WorkerState::Quiet
            } else {
                WorkerState::Running
            };
            (w, state)
        })
        .collect())
}

fn entity_error(error: entity::Error) -> InspectError {
    match error {
        entity::Error::Database(db) => InspectError::Database(db),
        other => InspectError::Database(sea_orm::DbErr::Custom(other.to_string())),
    }
}

/// The state names used on the wire and in `/metrics`.
pub fn state_name(state: ItemState) -> &'static str {
    match state {
        ItemState::Ready => "ready",
        ItemState::Scheduled => "scheduled",
        ItemState::InFlight => "in_flight",
        ItemState::Retrying => "retrying",
        ItemState::Failed => "failed",
        ItemState::Done => "done",
    }
}
