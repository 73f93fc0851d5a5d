//! What every request passes through: CORS, errors and their codes, body
//! and connection limits, checked text, idempotency keys, the OpenAPI document's fix-ups,
//! Contentful's request verification, and the storefront's files.

pub mod allow;
pub mod client;
pub mod contentful;
pub mod cors;
pub mod error;
pub mod html_headers;
pub mod idempotent;
pub mod json_keys;
pub mod service;
pub mod spec;
pub mod storefront;
pub mod text;
