//! The least of a Socket.IO client the fan-out benchmark needs, on the wire a websocket-only
//! `socket.io-client` speaks (Socket.IO v5 over Engine.IO v4): open a WebSocket at
//! `/socket.io/?EIO=4&transport=websocket`, read the Engine.IO open packet `0{...}`, join the
//! default namespace with `40`, wait for `40{"sid":...}`, then answer every ping `2` with a
//! pong `3` and read events as `42["name",data]`. No long-polling, no namespaces but `/`, no
//! acknowledgements, no binary packets: a thousand of these cost what a thousand `/ws`
//! sockets cost, which a Node process full of real clients would not.

use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::load::Socket;

/// What one Engine.IO packet from the server is to a client that only listens.
pub enum Packet {
    /// Engine.IO ping: answer with [`PONG`] or the server closes the session.
    Ping,
    /// A Socket.IO event on the default namespace: its name and its (first) argument.
    Event(String, Value),
    /// Anything else (the namespace's connect answer, a noop, an unreadable packet).
    Other,
}

/// The Engine.IO pong, the answer to [`Packet::Ping`].
pub const PONG: &str = "3";

/// How long the handshake may wait for each of the server's packets.
const HANDSHAKE_STEP: Duration = Duration::from_secs(10);

/// Reads one Engine.IO packet.
pub fn decode(text: &str) -> Packet {
    if text == "2" {
        return Packet::Ping;
    }
    let Some(args) = text.strip_prefix("42") else {
        return Packet::Other;
    };
    match serde_json::from_str::<Value>(args) {
        Ok(Value::Array(mut args)) if args.first().is_some_and(Value::is_string) => {
            let data = if args.len() > 1 {
                args.swap_remove(1)
            } else {
                Value::Null
            };
            match args.swap_remove(0) {
                Value::String(name) => Packet::Event(name, data),
                _ => Packet::Other,
            }
        }
        _ => Packet::Other,
    }
}

/// Connects to the Socket.IO endpoint at `path` (`/socket.io`) of the api on `port` and joins
/// the default namespace anonymously; the socket is ready to read events when this returns.
pub async fn connect(port: u16, path: &str) -> anyhow::Result<Socket> {
    let url = format!("ws://127.0.0.1:{port}{path}/?EIO=4&transport=websocket");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let open = next_text(&mut socket).await?;
    if !open.starts_with('0') {
        bail!("expected the Engine.IO open packet, got {open:?}");
    }
    socket.send(Message::text("40")).await?;
    loop {
        let packet = next_text(&mut socket).await?;
        match packet.as_str() {
            "2" => socket.send(Message::text(PONG)).await?,
            p if p.starts_with("40") => return Ok(socket),
            p if p.starts_with("44") => bail!("namespace refused the connection: {p}"),
            _ => {}
        }
    }
}

async fn next_text(socket: &mut Socket) -> anyhow::Result<String> {
    loop {
        let message = tokio::time::timeout(HANDSHAKE_STEP, socket.next())
            .await
            .context("Socket.IO handshake timed out")?
            .context("Socket.IO connection closed during the handshake")??;
        if let Message::Text(text) = message {
            return Ok(text.as_str().to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Packet, decode};

    #[test]
    fn events_pings_and_the_rest_are_told_apart() {
        assert!(matches!(decode("2"), Packet::Ping));
        assert!(matches!(decode(r#"40{"sid":"x"}"#), Packet::Other));
        assert!(matches!(decode("42[not json"), Packet::Other));
        let Packet::Event(name, data) = decode(r#"42["stock_update",{"dropId":7,"version":3}]"#)
        else {
            panic!("not read as an event");
        };
        assert_eq!(name, "stock_update");
        assert_eq!(data["version"], 3);
    }
}
