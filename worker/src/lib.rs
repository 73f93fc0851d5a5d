//! The worker tier: job payloads, handlers, the mailer, the queue and event-bus handles for
//! both modes, and the runtime that ties them together.

pub mod events;
pub mod handlers;
pub mod infra;
pub mod jobs;
pub mod mailer;
pub mod queue;
pub mod runtime;
pub mod settings;
pub mod telemetry;

pub use infra::Infra;
pub use settings::Settings;
