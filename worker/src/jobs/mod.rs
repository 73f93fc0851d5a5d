//! Jobs: each handler in a file of its own; what each carries (the queues' wire contract)
//! is in [`payloads`], on the ground floor, so whoever enqueues needs nothing of this. A payload carries only ids — the row is the truth, and the handler re-reads it — and
//! every handler is safe to run twice.
//!
//! Adding a job: its payload in [`payloads`] (implementing [`Payload`]), a new file with its
//! handler (implementing [`Job`]), and one line in [`register_all`].

use std::{future::Future, sync::Arc};

use apalis::prelude::BoxDynError;

pub use crate::platform::queue::Payload;
use crate::{effects::Effects, mailer::Mailer, platform::settings::Settings};

mod draw_winners;
mod expire_reservation;
mod notify_restock;
mod ping;

pub use crate::platform::payloads::{self, DrawWinners, ExpireReservation, NotifyRestock, Ping};
pub use draw_winners::draw;
pub use notify_restock::fan_out;

/// Every job the workers run.
pub fn register_all<R: Registry>(workers: R) -> R {
    workers
        .add::<DrawWinners>()
        .add::<ExpireReservation>()
        .add::<NotifyRestock>()
        .add::<Ping>()
}

/// What runs jobs: the runtime's workers, one per kind of job added.
pub trait Registry {
    #[must_use]
    fn add<J: Job>(self) -> Self;
}

/// A kind of job: its queue (the [`Payload`]), how many run at once, and what running one
/// does.
pub trait Job: Payload {
    /// How many of these one worker process runs at once.
    fn concurrency(settings: &Settings) -> usize {
        settings.worker.concurrency
    }

    /// Runs the job. An error is logged and retried by the backend, so it must be safe to
    /// run again.
    fn run(self, deps: Arc<Deps>) -> impl Future<Output = Result<(), BoxDynError>> + Send;
}

/// What every job can reach.
#[derive(Debug)]
pub struct Deps {
    pub db: entity::db::Db,
    pub effects: Effects,
    pub queue: crate::platform::queue::Queue,
    pub bus: crate::platform::bus::EventBus,
    pub settings: Settings,
    pub mailer: Mailer,
    /// Unique per process (name-host-pid-random), as apalis requires.
    pub worker_name: String,
    /// This process's jobs and sends, counted for the console and `/metrics`.
    pub activity: crate::process::activity::Activity,
    /// What the operators want of this process: paused queues, quiet.
    pub controls: crate::process::controls::Controls,
}

/// Logs an error with its cause chain (apalis logs only the top message) and hands it back.
fn logged(error: entity::Error, what: &str) -> BoxDynError {
    tracing::warn!(error = %entity::error::chain(&error), "{what}");
    error.into()
}
