//! The ground floor both tiers stand on: settings, connections, the queue and the bus, and the
//! event wire types. It imports nothing above it: what a job is, and which jobs and events a
//! change implies, live in `jobs` and `effects`.

pub mod bus;
pub mod events;
pub mod infra;
pub mod queue;
pub mod redis_conn;
pub mod sentinel;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
