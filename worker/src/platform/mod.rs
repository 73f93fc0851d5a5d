//! The ground floor both tiers stand on: settings, connections, the queue and the bus, and the
//! wire types of events and of job payloads. It imports nothing above it: what a job is, and which jobs and events a
//! change implies, live in `jobs` and `effects`.

pub mod bus;
pub mod events;
pub mod infra;
pub mod payloads;
pub mod queue;
pub mod redis_conn;
pub mod sentinel;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
