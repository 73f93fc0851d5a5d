//! The job system both tiers use: settings, connections, the queue and the bus, the event
//! wire types, and the effects of a committed change.

pub mod bus;
pub mod effects;
pub mod events;
pub mod infra;
pub mod queue;
pub mod sentinel;
pub mod settings;
pub mod telemetry;
