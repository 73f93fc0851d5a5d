//! Honeydrop's data model and the domain operations both tiers share: reserve, expire,
//! purchase, apply a CMS update, record a subscription. No HTTP, no Redis.
//!
//! Operations take `&impl ConnectionTrait` (or a connection they open a transaction on), so
//! they compose inside one transaction.

pub mod accounts;
pub mod catalog;
pub mod challenges;
pub mod currency;
pub mod db;
pub mod drops;
pub mod email_address;
pub mod error;
pub mod idempotency;
pub mod mail;
pub mod models;
pub mod ops;
pub mod product_stats;
pub mod retention;
pub mod text;
pub mod tokens;
pub mod verification;

pub use email_address::EmailAddress;
pub use error::Error;
