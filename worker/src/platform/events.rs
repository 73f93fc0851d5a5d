//! The wire types of live events: what the bus carries between processes and what `/ws`
//! sends to browsers, `{"event": ..., "data": {...}}`. Events are notifications, not facts:
//! the database holds the facts, and `version` lets a client detect a gap and re-read.

use serde::{Deserialize, Serialize};

/// Every frame on `/ws` is one of these, serialised as `{"event": ..., "data": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum Event {
    StockUpdate(StockUpdate),
    ProductRestocked(ProductRestocked),
    /// A product was written (any field): instances refresh their catalog listing.
    /// Internal, never sent to browsers.
    ProductChanged(ProductChanged),
    ReservationExpired(ReservationExpired),
    /// A unit that came back became a personal hold for the first buyer on the waitlist:
    /// told to that buyer's sockets only.
    HoldOffered(HoldOffered),
    /// A draw was done: each entrant hears whether they won (and their hold) or where they
    /// stand on the waitlist. Told to that entrant's sockets only.
    DrawResult(DrawResult),
    /// A session was ended (logout, refresh-token reuse): every instance forgets it at once,
    /// and its sockets are told and become anonymous.
    SessionEnded(SessionEnded),
    /// Answer of a worker to [`crate::jobs::Ping`]; internal, never sent to browsers.
    WorkerPong(WorkerPong),
    /// Rows were written to the email ledger: idle mail pumps look at once instead of at
    /// their next poll. Internal, never sent to browsers.
    MailQueued(MailQueued),
    /// An operator paused, resumed or quieted something: every process re-reads its
    /// controls at once instead of at its next heartbeat. Internal, never sent to browsers.
    OpsChanged(OpsChanged),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsChanged {
    /// What changed, for the log: `pause mail`, `quiet worker-…`.
    pub what: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockUpdate {
    pub drop_id: i64,
    pub available_stock: i32,
    /// Grows with every change of this drop's stock.
    pub version: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductRestocked {
    pub product_id: i64,
    pub slug: String,
    pub name: String,
    pub stock_quantity: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductChanged {
    pub product_id: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationExpired {
    pub reservation_id: i64,
    pub drop_id: i64,
    /// Used to route the frame to its owner's sockets only.
    pub user_id: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldOffered {
    pub reservation_id: i64,
    pub drop_id: i64,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Used to route the frame to its owner's sockets only.
    pub user_id: i64,
}

impl From<&entity::models::reservations::Model> for HoldOffered {
    fn from(r: &entity::models::reservations::Model) -> Self {
        Self {
            reservation_id: r.id,
            drop_id: r.drop_id,
            expires_at: r.expires_at,
            user_id: r.user_id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrawResult {
    pub drop_id: i64,
    pub won: bool,
    /// The winner's hold, to buy before `expiresAt`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reservation_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Where an entrant who did not win stands on the waitlist (1 next).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub position: Option<u64>,
    /// Used to route the frame to its owner's sockets only.
    pub user_id: i64,
}

impl DrawResult {
    pub fn won(hold: &entity::models::reservations::Model) -> Self {
        Self {
            drop_id: hold.drop_id,
            won: true,
            reservation_id: Some(hold.id),
            expires_at: Some(hold.expires_at),
            position: None,
            user_id: hold.user_id,
        }
    }
}

impl From<&entity::drops::draw::Waitlisted> for DrawResult {
    fn from(w: &entity::drops::draw::Waitlisted) -> Self {
        Self {
            drop_id: w.drop_id,
            won: false,
            reservation_id: None,
            expires_at: None,
            position: Some(w.position),
            user_id: w.user_id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionEnded {
    /// Used to route the frame to that session's sockets only.
    pub session_id: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailQueued {
    pub messages: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPong {
    pub token: String,
    pub worker: String,
}

impl From<entity::drops::Stock> for StockUpdate {
    fn from(s: entity::drops::Stock) -> Self {
        Self {
            drop_id: s.drop_id,
            available_stock: s.available_stock,
            version: s.version,
        }
    }
}

/// Frames the server sends to one socket only, beside the broadcast [`Event`]s.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The current state, on connect and whenever the socket fell behind.
    Snapshot(Snapshot),
    /// Answer to `subscribe`: the drops whose `stock_update` this socket gets (`null`: all).
    Subscribed { drops: Option<Vec<i64>> },
    /// Answer to `auth`: the socket now also gets its owner's events.
    #[serde(rename_all = "camelCase")]
    Authenticated { user_id: i64 },
    /// Answer to `ping`.
    Pong {},
    /// A client frame that could not be honoured.
    Error { code: String, message: String },
}

impl ServerFrame {
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self::Error {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Snapshot {
    pub drops: Vec<StockUpdate>,
    pub products: Vec<ProductState>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductState {
    pub product_id: i64,
    pub slug: String,
    pub name: String,
    /// Can be bought now.
    pub in_stock: bool,
    pub stock_quantity: Option<i32>,
}

impl From<entity::models::products::Model> for ProductState {
    fn from(p: entity::models::products::Model) -> Self {
        Self {
            in_stock: entity::catalog::is_available(&p),
            product_id: p.id,
            slug: p.slug,
            name: p.name,
            stock_quantity: p.stock_quantity,
        }
    }
}

impl From<&entity::models::products::Model> for ProductRestocked {
    fn from(p: &entity::models::products::Model) -> Self {
        Self {
            product_id: p.id,
            slug: p.slug.clone(),
            name: p.name.clone(),
            stock_quantity: p.stock_quantity,
        }
    }
}

impl From<&entity::models::reservations::Model> for ReservationExpired {
    fn from(r: &entity::models::reservations::Model) -> Self {
        Self {
            reservation_id: r.id,
            drop_id: r.drop_id,
            user_id: r.user_id,
        }
    }
}
