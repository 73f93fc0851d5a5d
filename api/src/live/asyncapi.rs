//! The AsyncAPI 3.0 document of the live events, `/ws` and Socket.IO, served at
//! `/asyncapi.json`.
//!
//! Its schemas are the very types that go on the wire (`worker::events`, [`crate::live::ws`],
//! [`crate::live::socketio`]), described by poem-openapi's registry — the one `/openapi.json` is
//! built with — so a type in both documents (`ErrorBody`, `ErrorCode`) has one definition under
//! one name. OpenAPI 3.0's `nullable` becomes JSON Schema's `"null"` type, the only difference.
//! Every message's examples are values of those types serialised as the sockets serialise
//! them, and CI validates each against its schema (`tests/client/validate-asyncapi.mjs`): a
//! serde attribute that drifts from its `oai` twin fails there.

use chrono::{DateTime, TimeZone, Utc};
use poem_openapi::{
    registry::Registry,
    types::{ToJSON, Type},
};
use serde_json::{Map, Value, json};
use worker::events::{
    Authenticated, DrawResult, Event, FrameError, HoldOffered, Pong, ProductRestocked,
    ProductState, ReservationExpired, ServerFrame, SessionEnded, Snapshot, StockUpdate, Subscribed,
};

use crate::{
    cache::frames::Frame,
    http::error::{ErrorBody, ErrorCode},
    live::socketio::{Handshake, SubscribeRefused},
    live::ws::{Authenticate, Subscribe},
};

const DESCRIPTION: &str = include_str!("../../ASYNCAPI.md");

/// One kind of message: its event name on the wire, its key in the document, the schema of its
/// `data`, and examples of that `data` as the server writes (or reads) it.
struct Message {
    event: &'static str,
    key: &'static str,
    summary: &'static str,
    schema: Value,
    examples: Vec<Value>,
}

impl Message {
    fn new<T: Type>(event: &'static str, key: &'static str, summary: &'static str) -> Self {
        Self {
            event,
            key,
            summary,
            schema: serde_json::to_value(T::schema_ref()).unwrap_or_default(),
            examples: Vec::new(),
        }
    }

    fn example(mut self, data: Value) -> Self {
        self.examples.push(data);
        self
    }

    /// The Socket.IO message: the event name, with `data` as its argument.
    fn socket_io(&self) -> Value {
        json!({
            "name": self.event,
            "title": self.event,
            "summary": self.summary,
            "payload": self.schema,
            "examples": self.examples.iter().enumerate().map(|(i, data)| json!({
                "name": format!("{}{}", self.key, i + 1),
                "payload": data,
            })).collect::<Vec<_>>(),
        })
    }

    /// The `/ws` message: a text frame `{"event": ..., "data": ...}`.
    fn ws(&self) -> Value {
        json!({
            "name": self.event,
            "title": self.event,
            "summary": self.summary,
            "payload": {"$ref": format!("#/components/schemas/{}", frame_schema(self.key))},
            "examples": self.examples.iter().enumerate().map(|(i, data)| json!({
                "name": format!("{}{}", self.key, i + 1),
                "payload": {"event": self.event, "data": data},
            })).collect::<Vec<_>>(),
        })
    }

    fn frame_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": format!("The `/ws` text frame of `{}`.", self.event),
            "required": ["event", "data"],
            "properties": {
                "event": {"type": "string", "const": self.event},
                "data": self.schema,
            },
        })
    }
}

/// `stockUpdate` → `StockUpdate`.
fn pascal(key: &str) -> String {
    let mut chars = key.chars();
    chars.next().map_or_else(String::new, |first| {
        format!("{}{}", first.to_ascii_uppercase(), chars.as_str())
    })
}

/// The schema of a message's `/ws` frame: `stockUpdate` → `StockUpdateFrame`.
fn frame_schema(key: &str) -> String {
    format!("{}Frame", pascal(key))
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds, 0).single().unwrap_or_default()
}

/// `data` of a broadcast event, exactly as [`Frame`] hands it to both transports.
fn data_of(event: Event) -> Value {
    Frame::new(event)
        .and_then(|frame| serde_json::from_str(frame.data().get()).ok())
        .unwrap_or_default()
}

/// `data` of a reply frame, as `/ws` serialises it.
fn data_of_reply(frame: &ServerFrame) -> Value {
    serde_json::to_value(frame)
        .map(|mut value| value["data"].take())
        .unwrap_or_default()
}

/// What the server sends on both transports.
fn broadcast() -> Vec<Message> {
    let stock = StockUpdate {
        drop_id: 7,
        available_stock: 41,
        version: 12,
    };
    let snapshot = Snapshot {
        drops: vec![stock.clone()],
        products: vec![ProductState {
            product_id: 3,
            slug: "wildflower-honey".into(),
            name: "Wildflower honey".into(),
            in_stock: false,
            stock_quantity: None,
        }],
    };
    vec![
        Message::new::<Snapshot>(
            "snapshot",
            "snapshot",
            "The current state, first on connect and again whenever the socket fell behind",
        )
        .example(data_of_reply(&ServerFrame::Snapshot(snapshot))),
        Message::new::<StockUpdate>(
            "stock_update",
            "stockUpdate",
            "A drop's stock changed (reserve, purchase, release, expiry, restock)",
        )
        .example(data_of(Event::StockUpdate(stock))),
        Message::new::<ProductRestocked>(
            "product_restocked",
            "productRestocked",
            "A sold-out product is back in stock",
        )
        .example(data_of(Event::ProductRestocked(ProductRestocked {
            product_id: 3,
            slug: "wildflower-honey".into(),
            name: "Wildflower honey".into(),
            stock_quantity: Some(24),
        }))),
        Message::new::<ReservationExpired>(
            "reservation_expired",
            "reservationExpired",
            "One of your holds ran out (signed-in sockets of its owner only)",
        )
        .example(data_of(Event::ReservationExpired(ReservationExpired {
            reservation_id: 91,
            drop_id: 7,
            user_id: 15,
        }))),
        Message::new::<HoldOffered>(
            "hold_offered",
            "holdOffered",
            "A returned unit is held for you, first on the waitlist (owner only)",
        )
        .example(data_of(Event::HoldOffered(HoldOffered {
            reservation_id: 92,
            drop_id: 7,
            expires_at: at(1_790_000_060),
            user_id: 15,
        }))),
        Message::new::<DrawResult>(
            "draw_result",
            "drawResult",
            "How a draw you entered went for you (owner only)",
        )
        .example(data_of(Event::DrawResult(DrawResult {
            drop_id: 8,
            won: true,
            reservation_id: Some(93),
            expires_at: Some(at(1_790_000_900)),
            position: None,
            user_id: 15,
        })))
        .example(data_of(Event::DrawResult(DrawResult {
            drop_id: 8,
            won: false,
            reservation_id: None,
            expires_at: None,
            position: Some(3),
            user_id: 16,
        }))),
        Message::new::<SessionEnded>(
            "session_ended",
            "sessionEnded",
            "The socket's session ended; it stays open, anonymous",
        )
        .example(data_of(Event::SessionEnded(SessionEnded {
            session_id: 44,
        }))),
        Message::new::<FrameError>(
            "error",
            "error",
            "A client frame could not be honoured, or the snapshot could not be read",
        )
        .example(data_of_reply(&ServerFrame::error(
            worker::events::FrameErrorCode::ServiceUnavailable,
            "cannot read current stock; reconnect shortly",
        ))),
    ]
}

/// `/ws` only: the answers to the client's frames.
fn ws_replies() -> Vec<Message> {
    vec![
        Message::new::<Subscribed>("subscribed", "subscribed", "Answer to `subscribe`")
            .example(data_of_reply(&ServerFrame::Subscribed(Subscribed {
                drops: Some(vec![7, 8]),
            })))
            .example(data_of_reply(&ServerFrame::Subscribed(Subscribed {
                drops: None,
            }))),
        Message::new::<Authenticated>("authenticated", "authenticated", "Answer to `auth`")
            .example(data_of_reply(&ServerFrame::Authenticated(Authenticated {
                user_id: 15,
            }))),
        Message::new::<Pong>("pong", "pong", "Answer to `ping`")
            .example(data_of_reply(&ServerFrame::Pong(Pong {}))),
    ]
}

/// What a client sends; the examples are read back by the server's own types in this
/// module's tests.
fn client_messages() -> (Message, Message) {
    let subscribe = Message::new::<Subscribe>(
        "subscribe",
        "subscribe",
        "Hear `stock_update` of these drops only (`null`: all)",
    )
    .example(json!({"drops": [7, 8]}))
    .example(json!({"drops": null}));
    let auth =
        Message::new::<Authenticate>("auth", "auth", "Sign the socket in with an access token")
            .example(json!({"token": "<accessToken>"}));
    (subscribe, auth)
}

/// The document, for a store whose Socket.IO endpoint is at `socket_io_path`.
pub fn document(version: &str, socket_io_path: &str) -> Value {
    let mut registry = Registry::new();
    for register in [
        Snapshot::register,
        StockUpdate::register,
        ProductRestocked::register,
        ReservationExpired::register,
        HoldOffered::register,
        DrawResult::register,
        SessionEnded::register,
        FrameError::register,
        Subscribed::register,
        Authenticated::register,
        Pong::register,
        Subscribe::register,
        Authenticate::register,
        Handshake::register,
        SubscribeRefused::register,
        ErrorBody::register,
        ErrorCode::register,
    ] {
        register(&mut registry);
    }
    let mut schemas: Map<String, Value> = registry
        .schemas
        .iter()
        .filter_map(|(name, schema)| {
            Some((
                name.clone(),
                json_schema(serde_json::to_value(schema).ok()?),
            ))
        })
        .collect();

    let broadcast = broadcast();
    let replies = ws_replies();
    let (subscribe, auth) = client_messages();
    let ping = json!({
        "name": "ping",
        "title": "ping",
        "summary": "Is the socket alive? Answered with `pong`",
        "payload": {"$ref": "#/components/schemas/PingFrame"},
        "examples": [
            {"name": "ping1", "payload": {"event": "ping", "data": {}}},
            {"name": "ping2", "payload": {"event": "ping"}},
        ],
    });
    schemas.insert(
        "PingFrame".into(),
        json!({
            "type": "object",
            "description": "The `/ws` text frame of `ping`.",
            "required": ["event"],
            "properties": {
                "event": {"type": "string", "const": "ping"},
                "data": {"type": ["object", "null"], "description": "Ignored: `{}`, `null` or left out."},
            },
        }),
    );
    schemas.insert(
        "SubscribeAck".into(),
        json!({
            "description": "The acknowledgement of a Socket.IO `subscribe`: the filter in force, or why it was refused.",
            // `anyOf`: `Subscribed` has no required field, so a refusal matches it too.
            "anyOf": [
                {"$ref": "#/components/schemas/Subscribed"},
                {"$ref": "#/components/schemas/SubscribeRefused"},
            ],
        }),
    );

    let mut messages = Map::new();
    let mut ws_channel = Map::new();
    let mut io_channel = Map::new();
    let mut operations = Map::new();
    let reference = |path: String| json!({"$ref": path});

    for message in broadcast.iter().chain(&replies).chain([&subscribe, &auth]) {
        schemas.insert(frame_schema(message.key), message.frame_schema());
        let ws_key = format!("ws{}", pascal(message.key));
        messages.insert(ws_key.clone(), message.ws());
        ws_channel.insert(
            message.key.into(),
            reference(format!("#/components/messages/{ws_key}")),
        );
    }
    messages.insert("wsPing".into(), ping);
    ws_channel.insert(
        "ping".into(),
        reference("#/components/messages/wsPing".into()),
    );
    for message in broadcast.iter().chain([&subscribe]) {
        messages.insert(message.key.into(), message.socket_io());
        io_channel.insert(
            message.key.into(),
            reference(format!("#/components/messages/{}", message.key)),
        );
    }
    messages.insert(
        "subscribeAck".into(),
        json!({
            "name": "subscribe",
            "title": "subscribe acknowledgement",
            "summary": "The filter in force (sorted), or why it was refused",
            "payload": {"$ref": "#/components/schemas/SubscribeAck"},
            "examples": [
                {"name": "subscribeAck1", "payload": Subscribed { drops: Some(vec![7, 8]) }.to_json()},
                {"name": "subscribeAck2", "payload": SubscribeRefused { error: ErrorBody {
                    code: ErrorCode::BadRequest,
                    message: "expected { drops: [dropId, ...] } or { drops: null }".into(),
                }}.to_json()},
            ],
        }),
    );
    messages.insert(
        "connect".into(),
        json!({
            "name": "connect",
            "title": "connect (handshake auth)",
            "summary": "The `auth` option of `io(url, { auth })`, sent with Socket.IO's CONNECT packet",
            "payload": {"$ref": "#/components/schemas/SocketIoAuth"},
            "examples": [
                {"name": "connect1", "payload": {"token": "<accessToken>"}},
                {"name": "connect2", "payload": {}},
            ],
        }),
    );
    io_channel.insert(
        "subscribeAck".into(),
        reference("#/components/messages/subscribeAck".into()),
    );
    io_channel.insert(
        "connect".into(),
        reference("#/components/messages/connect".into()),
    );

    for (channel, prefix, sent) in [
        ("ws", "ws", &broadcast),
        ("socketio", "socketIo", &broadcast),
    ] {
        for message in sent {
            let id = format!("{prefix}Send{}", pascal(message.key));
            operations.insert(
                id,
                json!({
                    "action": "send",
                    "channel": {"$ref": format!("#/channels/{channel}")},
                    "summary": message.summary,
                    "messages": [{"$ref": format!("#/channels/{channel}/messages/{}", message.key)}],
                }),
            );
        }
    }
    let ws_receive = |id: &str, message: &str, summary: &str, replies: &[&str]| {
        (
            id.to_owned(),
            json!({
                "action": "receive",
                "channel": {"$ref": "#/channels/ws"},
                "summary": summary,
                "messages": [{"$ref": format!("#/channels/ws/messages/{message}")}],
                "reply": {
                    "channel": {"$ref": "#/channels/ws"},
                    "messages": replies.iter()
                        .map(|r| json!({"$ref": format!("#/channels/ws/messages/{r}")}))
                        .collect::<Vec<_>>(),
                },
            }),
        )
    };
    for (id, operation) in [
        ws_receive(
            "wsReceiveSubscribe",
            "subscribe",
            "Filter `stock_update` by drop",
            &["subscribed", "error"],
        ),
        ws_receive(
            "wsReceiveAuth",
            "auth",
            "Sign the socket in",
            &["authenticated", "error"],
        ),
        ws_receive("wsReceivePing", "ping", "Keep the socket alive", &["pong"]),
    ] {
        operations.insert(id, operation);
    }
    operations.insert(
        "socketIoReceiveSubscribe".into(),
        json!({
            "action": "receive",
            "channel": {"$ref": "#/channels/socketio"},
            "summary": "Filter `stock_update` by drop: `socket.emit(\"subscribe\", { drops }, ack)`",
            "messages": [{"$ref": "#/channels/socketio/messages/subscribe"}],
            "reply": {
                "channel": {"$ref": "#/channels/socketio"},
                "messages": [{"$ref": "#/channels/socketio/messages/subscribeAck"}],
            },
        }),
    );
    operations.insert(
        "socketIoReceiveConnect".into(),
        json!({
            "action": "receive",
            "channel": {"$ref": "#/channels/socketio"},
            "summary": "Connect, anonymous or with an access token; a bad token is refused with `connect_error`",
            "messages": [{"$ref": "#/channels/socketio/messages/connect"}],
        }),
    );

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Honeydrop live events",
            "version": version,
            "description": DESCRIPTION,
            "contact": {"name": "Honeydrop maintainers"},
            "license": {"name": "MIT", "url": "https://opensource.org/licenses/MIT"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "ws": {
                "host": "localhost:3000",
                "protocol": "ws",
                "title": "WebSocket",
                "description": "The store itself (use its host and port, and `wss` behind TLS): plain WebSocket, JSON text frames.",
                "security": [{"$ref": "#/components/securitySchemes/accessTokenQuery"}],
            },
            "socketio": {
                "host": "localhost:3000",
                "protocol": "ws",
                "title": "Socket.IO",
                "description": "The store itself: Socket.IO protocol v5 (Engine.IO v4, `socket.io-client` 4.x), over WebSocket or HTTP long-polling. Authenticate with the handshake's `auth` option (the `connect` message); anonymous sockets get the public events.",
            },
        },
        "channels": {
            "ws": {
                "address": "/ws",
                "title": "/ws",
                "description": "Every frame is JSON text `{\"event\": ..., \"data\": ...}`. The server sends `snapshot` first, then the events below; a client may send `subscribe`, `auth` and `ping`, each answered by its own frame (or `error`). Connect with `?token=<accessToken>` (or send `auth`) to also get your own events. A socket that says nothing for 75 s is closed; the server pings every 25 s.",
                "servers": [{"$ref": "#/servers/ws"}],
                "messages": ws_channel,
                "bindings": {"ws": {
                    "method": "GET",
                    "query": {
                        "type": "object",
                        "properties": {"token": {"type": "string", "description": "An access token: the socket also gets its owner's events. A bad token is refused with 401 before the upgrade."}},
                    },
                    "bindingVersion": "0.1.0",
                }},
            },
            "socketio": {
                "address": format!("{socket_io_path}/"),
                "title": "Socket.IO",
                "description": "The events of `/ws`, with the event name as the Socket.IO event and `data` as its only argument: `socket.on(\"stock_update\", (data) => ...)`. `subscribe` is acknowledged instead of answered with a frame.",
                "servers": [{"$ref": "#/servers/socketio"}],
                "messages": io_channel,
            },
        },
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {
                "accessTokenQuery": {
                    "type": "httpApiKey",
                    "in": "query",
                    "name": "token",
                    "description": "An access token from `POST /api/auth/login` (or signup, refresh), as `?token=` on the upgrade request. Optional: without it the socket is anonymous.",
                },
            },
        },
    })
}

/// An OpenAPI 3.0 schema as JSON Schema: `nullable` becomes a `"null"` type (or, beside a
/// wrapped `$ref`, an `anyOf` with `{"type": "null"}`), in every nested schema.
pub fn json_schema(schema: Value) -> Value {
    match schema {
        Value::Object(mut map) => {
            let nullable = map.remove("nullable") == Some(Value::Bool(true));
            for value in map.values_mut() {
                *value = json_schema(value.take());
            }
            if !nullable {
                return Value::Object(map);
            }
            match map.get("type").cloned() {
                Some(Value::String(ty)) if !map.contains_key("allOf") => {
                    map.insert("type".into(), json!([ty, "null"]));
                    if let Some(Value::Array(values)) = map.get_mut("enum") {
                        values.push(Value::Null);
                    }
                    Value::Object(map)
                }
                _ => {
                    map.remove("type");
                    json!({"anyOf": [Value::Object(map), {"type": "null"}]})
                }
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(json_schema).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    #[test]
    fn nullable_becomes_a_null_type() {
        assert_eq!(
            super::json_schema(json!({"properties": {
                "a": {"type": "integer", "nullable": true},
                "b": {"allOf": [{"$ref": "#/components/schemas/X"}], "type": "string", "nullable": true},
                "c": {"type": "string"}
            }})),
            json!({"properties": {
                "a": {"type": ["integer", "null"]},
                "b": {"anyOf": [{"allOf": [{"$ref": "#/components/schemas/X"}]}, {"type": "null"}]},
                "c": {"type": "string"}
            }})
        );
    }

    /// Client examples are read back by the types the server reads them with.
    #[test]
    fn the_client_examples_are_what_the_server_reads() {
        let document = super::document("0", "/socket.io");
        let messages = &document["components"]["messages"];
        let examples = |key: &str| -> Vec<Value> {
            messages[key]["examples"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["payload"].clone())
                .collect()
        };
        for key in ["wsSubscribe", "wsAuth", "wsPing"] {
            let frames = examples(key);
            assert!(!frames.is_empty(), "{key}");
            for frame in frames {
                let text = frame.to_string();
                assert!(
                    serde_json::from_str::<crate::live::ws::ClientFrame>(&text).is_ok(),
                    "{key}: {text}"
                );
            }
        }
        for data in examples("subscribe") {
            assert!(serde_json::from_value::<crate::live::ws::Subscribe>(data).is_ok());
        }
        for data in examples("connect") {
            assert!(serde_json::from_value::<crate::live::socketio::Handshake>(data).is_ok());
        }
    }

    /// Every event the fan-out hands browsers has a message on both transports.
    #[test]
    fn every_event_browsers_get_is_documented() {
        use worker::events::{
            Event, MailQueued, OpsChanged, ProductChanged, SessionEnded, StockUpdate, WorkerPong,
        };
        let samples = [
            Event::StockUpdate(StockUpdate {
                drop_id: 1,
                available_stock: 1,
                version: 1,
            }),
            Event::ProductRestocked(worker::events::ProductRestocked {
                product_id: 1,
                slug: "s".into(),
                name: "n".into(),
                stock_quantity: None,
            }),
            Event::ReservationExpired(worker::events::ReservationExpired {
                reservation_id: 1,
                drop_id: 1,
                user_id: 1,
            }),
            Event::HoldOffered(worker::events::HoldOffered {
                reservation_id: 1,
                drop_id: 1,
                expires_at: super::at(0),
                user_id: 1,
            }),
            Event::DrawResult(worker::events::DrawResult {
                drop_id: 1,
                won: false,
                reservation_id: None,
                expires_at: None,
                position: Some(1),
                user_id: 1,
            }),
            Event::SessionEnded(SessionEnded { session_id: 1 }),
            Event::ProductChanged(ProductChanged { product_id: 1 }),
            Event::WorkerPong(WorkerPong {
                token: "t".into(),
                worker: "w".into(),
            }),
            Event::MailQueued(MailQueued { messages: 1 }),
            Event::OpsChanged(OpsChanged {
                what: "pause mail".into(),
            }),
        ];
        // Fails to compile when `Event` grows: add a sample of the new variant above.
        for sample in &samples {
            match sample {
                Event::StockUpdate(_)
                | Event::ProductRestocked(_)
                | Event::ReservationExpired(_)
                | Event::HoldOffered(_)
                | Event::DrawResult(_)
                | Event::SessionEnded(_)
                | Event::ProductChanged(_)
                | Event::WorkerPong(_)
                | Event::MailQueued(_)
                | Event::OpsChanged(_) => {}
            }
        }
        let document = super::document("0", "/socket.io");
        for channel in ["ws", "socketio"] {
            let names: Vec<Value> = document["channels"][channel]["messages"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, m)| m["$ref"].as_str()?.rsplit('/').next())
                .map(|key| document["components"]["messages"][key]["name"].clone())
                .collect();
            for frame in samples
                .iter()
                .cloned()
                .filter_map(crate::cache::frames::Frame::new)
            {
                assert!(
                    names.contains(&json!(frame.name())),
                    "{} is not documented on {channel}",
                    frame.name()
                );
            }
        }
    }

    #[test]
    fn every_server_example_is_an_object_of_its_event() {
        let document = super::document("0", "/socket.io");
        let messages = document["components"]["messages"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert!(messages.len() > 20, "{}", messages.len());
        for (key, message) in messages {
            let examples = message["examples"].as_array().cloned().unwrap_or_default();
            assert!(!examples.is_empty(), "{key} has no example");
            for example in examples {
                assert!(example["payload"].is_object(), "{key}: {example}");
                if key.starts_with("ws") {
                    assert_eq!(example["payload"]["event"], message["name"], "{key}");
                }
            }
        }
    }
}
