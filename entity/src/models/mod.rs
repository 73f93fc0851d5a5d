//! SeaORM entities: plain data, one module per table. Behaviour lives in the
//! sibling domain modules.

pub mod draw_entries;
pub mod drops;
pub mod email_messages;
pub mod ended_sessions;
pub mod idempotency_keys;
pub mod mail_quotas;
pub mod ops_audit;
pub mod ops_pauses;
pub mod ops_workers;
pub mod products;
pub mod purchases;
pub mod reservations;
pub mod restock_events;
pub mod sessions;
pub mod spent_challenges;
pub mod spent_refresh_tokens;
pub mod subscriptions;
pub mod users;
pub mod waitlist_entries;
pub mod webhook_deliveries;
