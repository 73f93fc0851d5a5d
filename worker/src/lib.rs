//! The worker tier and the job system both tiers use.
//!
//! - [`platform`]: settings, connections, the job queue and the event bus for both modes,
//!   the event wire types, and the effects of a committed change. The api uses all of it.
//! - [`jobs`]: one file per job, its payload beside its handler.
//! - [`runtime`]: the apalis workers and the periodic sweep and reconciler; the `worker`
//!   binary, or inside the api in embedded mode.
//! - [`mailer`]: templates and SMTP/outbox transport.
//! - [`ops`]: the operations console's engine: queues counted, paged and acted on, pauses
//!   and quiets, worker reports and metrics.

pub mod jobs;
pub mod mailer;
pub mod ops;
pub mod platform;
pub mod runtime;

pub use platform::{
    bus, effects, effects::Effects, events, infra, infra::Infra, queue, settings,
    settings::Settings, telemetry,
};
