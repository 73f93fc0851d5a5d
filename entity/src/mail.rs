//! The email ledger: one row per message, the outbox the send jobs work from.
