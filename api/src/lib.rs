//! The api tier. Each folder is one kind of thing:
//!
//! - [`routes`]: the HTTP API, one file per resource; each handler is one domain call.
//! - [`reserve`]: the hot path of a drop — reserves batched into one statement per drop.
//! - [`cache`]: what reads are served from (stock, listings, a drop's rules).
//! - [`live`]: events to browsers — the bus relay, `/ws`, Socket.IO and their contract.
//! - [`abuse`]: rate limits, proof-of-work challenges, a drop's per-address share.
//! - [`http`]: what every request passes through (CORS, errors, checked text,
//!   idempotency, the OpenAPI fix-ups, the storefront's files).
//! - [`dev`]: the embedded store's helpers (the outbox, the demo data).
//!
//! Beside them: [`serve`] (the listener: poem and Socket.IO on one port), [`auth`] (tokens
//! and the view of ended sessions), [`state`] (what handlers share), [`startup`] (building
//! it all), [`settings`] (the api's own, beside the shared ones) and [`metrics`].

pub mod abuse;
pub mod auth;
pub mod cache;
pub mod dev;
pub mod http;
pub mod live;
pub mod metrics;
pub mod reserve;
pub mod routes;
pub mod serve;
pub mod settings;
pub mod startup;
pub mod state;

pub use startup::Application;
