//! The api tier: routes, auth, the WebSocket hub and Socket.IO endpoint, and startup.

pub mod allow;
pub mod asyncapi;
pub mod auth;
pub mod challenge;
pub mod client;
pub mod contentful;
pub mod cors;
pub mod demand;
pub mod demo;
pub mod error;
pub mod fairness;
pub mod frame;
pub mod html_headers;
pub mod idempotent;
pub mod json_keys;
pub mod limiter;
pub mod listing_cache;
pub mod live_gate;
pub mod metrics;
pub mod outbox;
pub mod product_listing;
pub mod relay;
pub mod rendered;
pub mod reserve_batch;
pub mod routes;
pub mod serve;
pub mod socketio;
pub mod spec;
pub mod startup;
pub mod state;
pub mod stock_cache;
pub mod storefront;
pub mod text;
pub mod ws;

pub use startup::Application;
