//! The wire types of live events: what the bus carries between processes and what `/ws`
//! sends to browsers, `{"event": ..., "data": {...}}`. Events are notifications, not facts:
//! the database holds the facts, and `version` lets a client detect a gap and re-read.
//!
//! The browser-facing types also derive poem-openapi's `Object`, with the same field names as
//! serde gives them: the api builds the AsyncAPI document (`/asyncapi.json`) from these very
//! types, so the document cannot drift from the wire.

use poem_openapi::{Enum, Object};
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
    /// Answer of a worker to the `Ping` job; internal, never sent to browsers.
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

/// A drop's stock after a committed change. `availableStock` is absolute, so the frame with
/// the highest `version` is the whole truth: ignore a frame whose `version` is not above the
/// last one seen for its drop (stale, from another instance), and take a skipped `version` as
/// changes conflated away for a slow socket (nothing to re-read). A socket that fell too far
/// behind gets a fresh `snapshot` instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Object)]
#[serde(rename_all = "camelCase")]
#[oai(rename_all = "camelCase")]
pub struct StockUpdate {
    pub drop_id: i64,
    pub available_stock: i32,
    /// Grows with every change of this drop's stock.
    pub version: i64,
}

/// A sold-out product can be bought again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Object)]
#[serde(rename_all = "camelCase")]
#[oai(rename_all = "camelCase")]
pub struct ProductRestocked {
    pub product_id: i64,
    pub slug: String,
    pub name: String,
    /// Units on hand, `null` when the store does not count them.
    #[oai(nullable)]
    pub stock_quantity: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductChanged {
    pub product_id: i64,
}

/// One of your holds ran out unbought; its unit went back on sale (or to the waitlist).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Object)]
#[serde(rename_all = "camelCase")]
#[oai(rename_all = "camelCase")]
pub struct ReservationExpired {
    pub reservation_id: i64,
    pub drop_id: i64,
    /// Used to route the frame to its owner's sockets only.
    pub user_id: i64,
}

/// A unit that came back is held for you (first on the waitlist): buy it before `expiresAt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Object)]
#[serde(rename_all = "camelCase")]
#[oai(rename_all = "camelCase")]
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

/// How a draw you entered went for you.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Object)]
#[serde(rename_all = "camelCase")]
#[oai(rename_all = "camelCase")]
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

/// The socket's session ended (logout, refresh-token reuse): it stays open, anonymous.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Object)]
#[serde(rename_all = "camelCase")]
#[oai(rename_all = "camelCase")]
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
    /// Answer to `subscribe`.
    Subscribed(Subscribed),
    /// Answer to `auth`.
    Authenticated(Authenticated),
    /// Answer to `ping`.
    Pong(Pong),
    /// A client frame that could not be honoured.
    Error(FrameError),
}

impl ServerFrame {
    pub fn error(code: FrameErrorCode, message: impl Into<String>) -> Self {
        Self::Error(FrameError {
            code,
            message: message.into(),
        })
    }
}

/// The drops whose `stock_update` this socket gets from now on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Object)]
pub struct Subscribed {
    /// Sorted, without repeats; `null`: every drop.
    #[oai(nullable)]
    pub drops: Option<Vec<i64>>,
}

/// The socket now also gets its owner's events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Object)]
#[serde(rename_all = "camelCase")]
#[oai(rename_all = "camelCase")]
pub struct Authenticated {
    pub user_id: i64,
}

/// The answer to `ping`: the socket is alive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Object)]
pub struct Pong {}

/// A client frame that could not be honoured, or a snapshot that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Object)]
pub struct FrameError {
    pub code: FrameErrorCode,
    pub message: String,
}

/// Why a frame could not be honoured: the REST API's `ErrorCode` of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum FrameErrorCode {
    /// An unreadable frame.
    BadRequest,
    /// A bad token in `auth`.
    Unauthorized,
    /// The current state cannot be read: try again shortly.
    ServiceUnavailable,
}

/// The current state: every active drop's stock and every product's, on connect and
/// whenever the socket fell behind (it replaces all state held before).
#[derive(Clone, Debug, PartialEq, Serialize, Object)]
pub struct Snapshot {
    pub drops: Vec<StockUpdate>,
    pub products: Vec<ProductState>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Object)]
#[serde(rename_all = "camelCase")]
#[oai(rename_all = "camelCase")]
pub struct ProductState {
    pub product_id: i64,
    pub slug: String,
    pub name: String,
    /// Can be bought now.
    pub in_stock: bool,
    /// Units on hand, `null` when the store does not count them.
    #[oai(nullable)]
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

/// Who sends a live event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ServerToClient,
    ClientToServer,
}

/// One event of the live protocol (`/ws` and Socket.IO alike), as documented.
#[derive(Clone, Copy, Debug)]
pub struct EventDoc {
    pub direction: Direction,
    pub event: &'static str,
    /// The shape of `data`.
    pub data: &'static str,
    /// When it is sent, and to whom.
    pub note: &'static str,
}

/// The live protocol, told once: README, the Swagger description (and any other document of
/// the protocol) are generated from this list, and a test holds it to the wire types above.
pub const EVENT_DOCS: &[EventDoc] = &[
    EventDoc {
        direction: Direction::ServerToClient,
        event: "snapshot",
        data: "`{drops: [{dropId, availableStock, version}], products: [{productId, slug, name, inStock, stockQuantity}]}`",
        note: "on connect, and again when the socket fell behind",
    },
    EventDoc {
        direction: Direction::ServerToClient,
        event: "stock_update",
        data: "`{dropId, availableStock, version}`",
        note: "after every committed stock change; `version` grows per drop, so drop stale frames and re-read on a gap",
    },
    EventDoc {
        direction: Direction::ServerToClient,
        event: "product_restocked",
        data: "`{productId, slug, name, stockQuantity}`",
        note: "a catalog product is back in stock",
    },
    EventDoc {
        direction: Direction::ServerToClient,
        event: "reservation_expired",
        data: "`{reservationId, dropId, userId}`",
        note: "to the hold owner's authenticated sockets only",
    },
    EventDoc {
        direction: Direction::ServerToClient,
        event: "hold_offered",
        data: "`{reservationId, dropId, expiresAt, userId}`",
        note: "a waitlisted buyer's turn: a hold to buy before `expiresAt`; to that buyer's sockets only",
    },
    EventDoc {
        direction: Direction::ServerToClient,
        event: "draw_result",
        data: "`{dropId, won, reservationId?, expiresAt?, position?, userId}`",
        note: "a draw was done: a winner's hold, or the entrant's place on the waitlist; to that entrant's sockets only",
    },
    EventDoc {
        direction: Direction::ServerToClient,
        event: "session_ended",
        data: "`{sessionId}`",
        note: "the socket's session ended (logout, refresh-token reuse); the socket stays open, anonymous",
    },
    EventDoc {
        direction: Direction::ServerToClient,
        event: "subscribed",
        data: "`{drops: [1, 2]}` (`null`: all)",
        note: "answer to `subscribe`: the filter in force",
    },
    EventDoc {
        direction: Direction::ServerToClient,
        event: "authenticated",
        data: "`{userId}`",
        note: "answer to `auth`: the socket now also gets its owner's events",
    },
    EventDoc {
        direction: Direction::ServerToClient,
        event: "pong",
        data: "`{}`",
        note: "answer to `ping`",
    },
    EventDoc {
        direction: Direction::ServerToClient,
        event: "error",
        data: "`{code, message}`",
        note: "a client frame that could not be honoured (`bad_request`, `unauthorized`)",
    },
    EventDoc {
        direction: Direction::ClientToServer,
        event: "subscribe",
        data: "`{drops: [1, 2]}`",
        note: "limits `stock_update` to those drops (`null`: all)",
    },
    EventDoc {
        direction: Direction::ClientToServer,
        event: "auth",
        data: "`{token: \"<access token>\"}`",
        note: "authenticates the socket (or connect with `/ws?token=...`)",
    },
    EventDoc {
        direction: Direction::ClientToServer,
        event: "ping",
        data: "`{}` (or no `data`)",
        note: "answered with `pong`",
    },
];

/// [`EVENT_DOCS`] as the Markdown table README and the API description show.
pub fn events_table() -> String {
    let mut table = String::from("| direction | event | data | when |\n|---|---|---|---|\n");
    for doc in EVENT_DOCS {
        let direction = match doc.direction {
            Direction::ServerToClient => "server → client",
            Direction::ClientToServer => "client → server",
        };
        table.push_str(&format!(
            "| {direction} | `{}` | {} | {} |\n",
            doc.event, doc.data, doc.note
        ));
    }
    table
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn name_of(frame: &impl Serialize) -> String {
        let value = serde_json::to_value(frame).expect("serialises");
        value["event"].as_str().expect("an event name").to_owned()
    }

    #[test]
    fn every_event_a_browser_can_get_is_documented_and_nothing_else() {
        let at = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        let hold = HoldOffered {
            reservation_id: 1,
            drop_id: 1,
            expires_at: at,
            user_id: 1,
        };
        let draw = DrawResult {
            drop_id: 1,
            won: false,
            reservation_id: None,
            expires_at: None,
            position: Some(1),
            user_id: 1,
        };
        let stock = StockUpdate {
            drop_id: 1,
            available_stock: 1,
            version: 1,
        };
        let sent = [
            name_of(&Event::StockUpdate(stock.clone())),
            name_of(&Event::ProductRestocked(ProductRestocked {
                product_id: 1,
                slug: "s".into(),
                name: "n".into(),
                stock_quantity: None,
            })),
            name_of(&Event::ReservationExpired(ReservationExpired {
                reservation_id: 1,
                drop_id: 1,
                user_id: 1,
            })),
            name_of(&Event::HoldOffered(hold)),
            name_of(&Event::DrawResult(draw)),
            name_of(&Event::SessionEnded(SessionEnded { session_id: 1 })),
            name_of(&ServerFrame::Snapshot(Snapshot {
                drops: vec![stock],
                products: Vec::new(),
            })),
            name_of(&ServerFrame::Subscribed(Subscribed { drops: None })),
            name_of(&ServerFrame::Authenticated(Authenticated { user_id: 1 })),
            name_of(&ServerFrame::Pong(Pong {})),
            name_of(&ServerFrame::error(FrameErrorCode::BadRequest, "x")),
        ];
        let documented: Vec<&str> = EVENT_DOCS
            .iter()
            .filter(|d| d.direction == Direction::ServerToClient)
            .map(|d| d.event)
            .collect();
        let mut sent_sorted: Vec<&str> = sent.iter().map(String::as_str).collect();
        sent_sorted.sort_unstable();
        let mut documented_sorted = documented.clone();
        documented_sorted.sort_unstable();
        assert_eq!(sent_sorted, documented_sorted);
    }
}
