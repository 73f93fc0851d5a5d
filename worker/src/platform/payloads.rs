//! What each job carries through its queue: only ids (the row is the truth, and the handler
//! re-reads it). These are the queues' wire contract, kept apart from the handlers so that
//! whoever enqueues (the effects of a change) needs nothing of what running a job takes.

use serde::{Deserialize, Serialize};

use crate::platform::queue::Payload;

/// Draw a draw drop's winners at its close of entries. Scheduled when the drop is created;
/// the reconciler draws any drop whose job was lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawWinners {
    pub drop_id: i64,
}

impl Payload for DrawWinners {
    const QUEUE: &'static str = "draw";
}

/// Expire one hold when its time is up, if it is still active. Scheduled at the hold's
/// `expiresAt` when it is taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireReservation {
    pub reservation_id: i64,
}

impl Payload for ExpireReservation {
    const QUEUE: &'static str = "expiry";
}

/// Alert the confirmed subscribers of a product that came back in stock, in signup order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyRestock {
    pub restock_event_id: i64,
}

impl Payload for NotifyRestock {
    const QUEUE: &'static str = "fanout";
}

/// Round trip through the job queue: a worker answers with a `WorkerPong` event naming
/// itself, so operators (and tests) see that the worker tier is alive and which worker ran
/// a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub token: String,
    /// Fail for good (no retries: straight to the failed items) until this instant: a ping
    /// that exercises the failure path — alerts on failed jobs, the console's Retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_until: Option<chrono::DateTime<chrono::Utc>>,
}

impl Payload for Ping {
    const QUEUE: &'static str = "ping";
}
