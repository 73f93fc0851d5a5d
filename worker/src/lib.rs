//! The worker tier and the job system both tiers use.
//!
//! - [`platform`]: the ground floor: settings, connections, the job queue and the event bus
//!   for both modes, and the event wire types. The api uses all of it.
//! - [`effects`]: what a committed change implies (events announced, jobs enqueued), named
//!   once for the api's handlers, the jobs and the sweep.
//! - [`jobs`]: one file per job's handler (their payloads, the queues' wire contract, are in
//!   `platform`).
//! - [`process`]: this worker process's activity and the operators' controls over it.
//! - [`runtime`]: the apalis workers and the periodic sweep and reconciler; the `worker`
//!   binary, or inside the api in embedded mode.
//! - [`mailer`]: templates and SMTP/outbox transport.
//! - [`ops`]: the operations console's engine: queues counted, paged and acted on, pauses
//!   and quiets, worker reports and metrics.

pub mod effects;
pub mod jobs;
pub mod mailer;
pub mod ops;
pub mod platform;
pub mod process;
pub mod runtime;

pub use effects::Effects;
pub use platform::{
    bus, events, infra, infra::Infra, queue, settings, settings::Settings, telemetry,
};
