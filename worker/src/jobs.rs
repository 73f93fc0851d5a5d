//! Job payloads. The api imports these to enqueue; the worker runs them. Each carries only an
//! id: the row is the truth, and the handler re-reads it.

use serde::{Deserialize, Serialize};

/// Expire one hold when its time is up (if it is still active).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireReservation {
    pub reservation_id: i64,
}

/// Alert the confirmed subscribers of a product that came back in stock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyRestock {
    pub restock_event_id: i64,
}

/// Send one row of the email ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendEmail {
    pub message_id: i64,
}

/// Round trip through the job queue: a worker answers with a `WorkerPong` event.
/// Lets operators (and tests) see that the worker tier is alive and which worker ran a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub token: String,
}

/// Queue names (prefixed in Redis); set on producer and consumer alike.
pub mod queues {
    pub const EXPIRY: &str = "expiry";
    pub const MAIL: &str = "mail";
    pub const FANOUT: &str = "fanout";
    pub const PING: &str = "ping";
}
