//! What the relay hands every socket: each browser-facing event, serialised once, on the
//! process-wide broadcast (`AppState::frames`) that `/ws` and Socket.IO sockets read.

use worker::events::Event;

/// How many frames a socket may fall behind before it is resynchronised with a snapshot.
pub const FRAME_BACKLOG: usize = 8192;

/// An event as sockets send it: serialised once, shared by every socket (`/ws` sends `text`,
/// Socket.IO emits `name` with `data`).
pub struct Frame {
    event: Event,
    name: &'static str,
    data: Box<serde_json::value::RawValue>,
    text: String,
}

impl Frame {
    /// `None` for events browsers never see.
    pub fn new(event: Event) -> Option<Self> {
        let (name, data) = match &event {
            Event::StockUpdate(u) => ("stock_update", serde_json::value::to_raw_value(u)),
            Event::ProductRestocked(p) => ("product_restocked", serde_json::value::to_raw_value(p)),
            Event::ReservationExpired(r) => {
                ("reservation_expired", serde_json::value::to_raw_value(r))
            }
            Event::HoldOffered(o) => ("hold_offered", serde_json::value::to_raw_value(o)),
            Event::DrawResult(r) => ("draw_result", serde_json::value::to_raw_value(r)),
            Event::SessionEnded(e) => ("session_ended", serde_json::value::to_raw_value(e)),
            Event::ProductChanged(_)
            | Event::WorkerPong(_)
            | Event::MailQueued(_)
            | Event::OpsChanged(_) => return None,
        };
        let data = data.ok()?;
        let text = format!(r#"{{"event":"{name}","data":{}}}"#, data.get());
        Some(Self {
            event,
            name,
            data,
            text,
        })
    }

    pub(crate) fn event(&self) -> &Event {
        &self.event
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn data(&self) -> &serde_json::value::RawValue {
        &self.data
    }

    /// The `/ws` text frame: `{"event": name, "data": data}`.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use worker::events::{ProductRestocked, StockUpdate};

    use super::*;

    #[test]
    fn a_frame_reads_as_the_event_serialised_by_serde() {
        let events = [
            Event::StockUpdate(StockUpdate {
                drop_id: 1,
                available_stock: 2,
                version: 3,
            }),
            Event::ProductRestocked(ProductRestocked {
                product_id: 7,
                slug: "honey".into(),
                name: "Honey \"raw\"".into(),
                stock_quantity: Some(4),
            }),
            Event::ReservationExpired(worker::events::ReservationExpired {
                reservation_id: 5,
                drop_id: 1,
                user_id: 9,
            }),
        ];
        for event in events {
            let expected = serde_json::to_value(&event).unwrap_or_default();
            let frame = Frame::new(event).unwrap_or_else(|| unreachable!());
            let text: serde_json::Value = serde_json::from_str(frame.text()).unwrap_or_default();
            assert_eq!(text, expected);
            assert_eq!(expected["event"], frame.name());
            let data: serde_json::Value =
                serde_json::from_str(frame.data().get()).unwrap_or_default();
            assert_eq!(data, expected["data"]);
        }
    }
}
