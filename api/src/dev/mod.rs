//! The embedded store's helpers: the outbox that shows the mail it would have sent, and the
//! demo data of a first run.

pub mod demo;
pub mod outbox;
