//! `GET /ws`: live stock over WebSocket.
//!
//! Frames are JSON text, `{"event": ..., "data": {...}}`. On connect the server sends
//! `snapshot`; then `stock_update`, `product_restocked`, and — on an authenticated socket —
//! `reservation_expired` for the caller's own holds. A client may send `subscribe` (to filter
//! drops), `auth` (with an access token) and `ping`.
//!
//! Each socket reads the process-wide broadcast on its own task, so a slow client only ever
//! delays itself. A client that falls too far behind is sent a fresh `snapshot` (the latest
//! value of every drop) instead of the frames it missed.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use chrono::Utc;
use futures::{SinkExt, StreamExt};
use poem::{
    IntoResponse, handler,
    web::{
        Data, Query,
        websocket::{CloseCode, Message, WebSocket, WebSocketConfig, WebSocketStream},
    },
};
use poem_openapi::Object;
use serde::Deserialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use worker::events::{
    Authenticated, Event, FrameErrorCode, Pong, ProductState, ServerFrame, Snapshot, StockUpdate,
    Subscribed,
};

use crate::{auth::CurrentUser, cache::frames::Frame, http::error::ApiError, state::AppState};

const PING_EVERY: Duration = Duration::from_secs(25);
/// A socket that says nothing (not even a pong) for this long is closed.
const IDLE_LIMIT: Duration = Duration::from_secs(75);
/// A client whose socket takes no frame for this long is too slow to keep.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a closing socket waits for the client's close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

/// What a client sends on `/ws`.
#[derive(Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub(crate) enum ClientFrame {
    Subscribe(Subscribe),
    Auth(Authenticate),
    /// `data` may be left out, `null` or any object: `{"event":"ping","data":{}}` is the
    /// documented shape, and every frame has a `data`.
    Ping(
        #[serde(default)]
        #[expect(
            dead_code,
            reason = "a ping carries nothing; its data is only accepted"
        )]
        Option<serde::de::IgnoredAny>,
    ),
}

/// Limits `stock_update` to these drops (on `/ws` and Socket.IO alike).
#[derive(Deserialize, Object)]
pub(crate) struct Subscribe {
    /// The drops to hear about; `null` or absent: every drop.
    #[serde(default)]
    #[oai(nullable)]
    pub(crate) drops: Option<Vec<i64>>,
}

/// Signs the socket in: from now on it also gets its owner's events.
#[derive(Deserialize, Object)]
pub(crate) struct Authenticate {
    /// An access token (`accessToken` of `login`).
    pub(crate) token: String,
}

#[handler]
pub async fn upgrade(
    req: &poem::Request,
    ws: WebSocket,
    Query(query): Query<WsQuery>,
    Data(state): Data<&AppState>,
) -> poem::Result<impl IntoResponse> {
    // Counted with Socket.IO's sessions; held until the socket closes.
    let slot = state.live.admit(crate::http::client::client_ip(req))?;
    let viewer = match query.token {
        Some(token) => Some(state.auth.authenticate(&token).await?),
        None => None,
    };
    let state = state.clone();
    // Thousands of sockets each send small frames and receive tinier ones: small buffers
    // (tungstenite's default is 128 KiB each way per socket), and no large client frames.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024));
    Ok(ws.config(config).on_upgrade(move |socket| async move {
        let _slot = slot;
        serve(socket, state, viewer).await;
    }))
}

/// One socket's view of the fan-out, `/ws` and Socket.IO alike.
pub(crate) struct Client {
    /// Who signed the socket in, if anyone.
    viewer: Option<CurrentUser>,
    /// `None`: every drop.
    pub(crate) drops: Option<HashSet<i64>>,
}

impl Client {
    pub(crate) fn new(viewer: Option<CurrentUser>) -> Self {
        Self {
            viewer,
            drops: None,
        }
    }

    /// Whether this socket gets `event`. A `session_ended` for the socket's own session is
    /// sent, and from then on the socket is anonymous: its owner's events stop.
    pub(crate) fn take(&mut self, event: &Event) -> bool {
        match event {
            Event::StockUpdate(u) => self.drops.as_ref().is_none_or(|d| d.contains(&u.drop_id)),
            Event::ProductRestocked(_) => true,
            Event::ReservationExpired(r) => {
                self.viewer.as_ref().is_some_and(|v| v.user_id == r.user_id)
            }
            Event::HoldOffered(o) => self.viewer.as_ref().is_some_and(|v| v.user_id == o.user_id),
            Event::DrawResult(r) => self.viewer.as_ref().is_some_and(|v| v.user_id == r.user_id),
            Event::SessionEnded(e) => {
                let mine = self
                    .viewer
                    .as_ref()
                    .is_some_and(|v| v.session_id == e.session_id);
                if mine {
                    self.viewer = None;
                }
                mine
            }
            Event::ProductChanged(_)
            | Event::WorkerPong(_)
            | Event::MailQueued(_)
            | Event::OpsChanged(_) => false,
        }
    }
}

async fn serve(socket: WebSocketStream, state: AppState, viewer: Option<CurrentUser>) {
    state.metrics.websocket_clients.fetch_add(1, Relaxed);
    connected(socket, &state, viewer).await;
    state.metrics.websocket_clients.fetch_sub(1, Relaxed);
}

async fn connected(socket: WebSocketStream, state: &AppState, viewer: Option<CurrentUser>) {
    // Subscribe before reading the snapshot, so nothing falls between the two. A socket
    // opened as the shutdown begins still says goodbye: `closing` fires at once then.
    let closing = state.closing.clone().cancelled_owned();
    tokio::pin!(closing);
    let mut frames = state.frames.subscribe();
    let (mut sink, mut stream) = socket.split();
    let mut client = Client::new(viewer);
    if send_snapshot(&mut sink, state).await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = &mut closing => {
                say_goodbye(&mut sink, &mut stream).await;
                return;
            }
            received = frames.recv() => match received {
                Ok(first) => {
                    // Take whatever else is already waiting, and send only the newest stock of
                    // each drop: a client that fell behind catches up at once instead of
                    // replaying versions it would drop anyway.
                    let mut pending = vec![first];
                    let mut lagged = false;
                    loop {
                        match frames.try_recv() {
                            Ok(frame) => pending.push(frame),
                            Err(TryRecvError::Lagged(_)) => lagged = true,
                            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                        }
                    }
                    let sent = if lagged {
                        send_snapshot(&mut sink, state).await
                    } else {
                        send_batch(&mut sink, &mut client, conflate(pending)).await
                    };
                    if sent.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    if send_snapshot(&mut sink, state).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            incoming = stream.next() => {
                last_heard = tokio::time::Instant::now();
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let reply = handle_frame(&text, &mut client, state).await;
                        if send_frame(&mut sink, &reply).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > IDLE_LIMIT || send(&mut sink, Message::Ping(Vec::new())).await.is_err() {
                    let _ = sink.close().await;
                    return;
                }
            }
        }
    }
}

/// Close 1001 (going away), then the client's close frame: dropping the socket with its
/// reply unread would reset the connection and could discard our close frame.
async fn say_goodbye<S, R>(sink: &mut S, stream: &mut R)
where
    S: futures::Sink<Message> + Unpin,
    R: futures::Stream<Item = std::io::Result<Message>> + Unpin,
{
    let goodbye = Message::Close(Some((CloseCode::Away, "server shutting down".into())));
    if send(sink, goodbye).await.is_ok() {
        let reply = async {
            while let Some(Ok(message)) = stream.next().await {
                if matches!(message, Message::Close(_)) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, reply).await;
    }
}

async fn handle_frame(text: &str, client: &mut Client, state: &AppState) -> ServerFrame {
    let frame = match serde_json::from_str::<ClientFrame>(text) {
        Ok(frame) => frame,
        Err(e) => {
            return ServerFrame::error(
                FrameErrorCode::BadRequest,
                format!("unreadable frame: {e}"),
            );
        }
    };
    match frame {
        ClientFrame::Subscribe(Subscribe { drops }) => {
            let mut ids = drops.clone();
            if let Some(ids) = &mut ids {
                ids.sort_unstable();
                ids.dedup();
            }
            client.drops = drops.map(|d| d.into_iter().collect());
            ServerFrame::Subscribed(Subscribed { drops: ids })
        }
        ClientFrame::Auth(Authenticate { token }) => match state.auth.authenticate(&token).await {
            Ok(user) => {
                let user_id = user.user_id;
                client.viewer = Some(user);
                ServerFrame::Authenticated(Authenticated { user_id })
            }
            Err(e) => ServerFrame::error(FrameErrorCode::Unauthorized, e.message),
        },
        ClientFrame::Ping(_) => ServerFrame::Pong(Pong {}),
    }
}

async fn send_frame<S>(sink: &mut S, frame: &ServerFrame) -> Result<(), ()>
where
    S: futures::Sink<Message> + Unpin,
{
    let text = serde_json::to_string(frame).map_err(|_| ())?;
    send(sink, Message::Text(text)).await
}

async fn send_snapshot<S>(sink: &mut S, state: &AppState) -> Result<(), ()>
where
    S: futures::Sink<Message> + Unpin,
{
    let frame = match snapshot(state).await {
        Ok(s) => ServerFrame::Snapshot(Snapshot::clone(&s)),
        Err(e) => {
            tracing::warn!(error = %e.message, "cannot build websocket snapshot");
            ServerFrame::error(
                FrameErrorCode::ServiceUnavailable,
                "cannot read current stock; reconnect shortly",
            )
        }
    };
    send_frame(sink, &frame).await
}

/// Keeps every frame but a `stock_update` superseded by a newer one for the same drop.
pub(crate) fn conflate(pending: Vec<Arc<Frame>>) -> Vec<Arc<Frame>> {
    if pending.len() == 1 {
        return pending;
    }
    let mut newest: HashMap<i64, i64> = HashMap::new();
    for frame in &pending {
        if let Event::StockUpdate(u) = frame.event() {
            let version = newest.entry(u.drop_id).or_insert(u.version);
            *version = (*version).max(u.version);
        }
    }
    pending
        .into_iter()
        .filter(|frame| match frame.event() {
            Event::StockUpdate(u) => newest.get(&u.drop_id) == Some(&u.version),
            _ => true,
        })
        .collect()
}

/// Writes the frames this client wants, then flushes once.
async fn send_batch<S>(sink: &mut S, client: &mut Client, frames: Vec<Arc<Frame>>) -> Result<(), ()>
where
    S: futures::Sink<Message> + Unpin,
{
    let wanted: Vec<_> = frames
        .into_iter()
        .filter(|f| client.take(f.event()))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let write = async {
        for frame in wanted {
            sink.feed(Message::Text(frame.text().to_owned())).await?;
        }
        sink.flush().await
    };
    match tokio::time::timeout(SEND_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Sends one frame, giving up on a client that has not taken it within [`SEND_TIMEOUT`]: its
/// socket buffers are full, so it cannot keep up, and it is disconnected.
async fn send<S>(sink: &mut S, message: Message) -> Result<(), ()>
where
    S: futures::Sink<Message> + Unpin,
{
    match tokio::time::timeout(SEND_TIMEOUT, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// The current state, from the cache every change invalidates (see
/// [`crate::cache::stock::StockCaches`]): sockets opening together share one read. The
/// socket subscribed to the broadcast first, and the relay invalidates before it
/// broadcasts, so a change is in the snapshot or reaches the socket as an event.
pub(crate) async fn snapshot(state: &AppState) -> Result<Arc<Snapshot>, ApiError> {
    let load = || async {
        let drops = entity::drops::open_stock(&state.db, Utc::now()).await?;
        let products = entity::catalog::visible_products(&state.db).await?;
        Ok(Snapshot {
            drops: drops.into_iter().map(StockUpdate::from).collect(),
            products: products.into_iter().map(ProductState::from).collect(),
        })
    };
    Ok(state.caches.snapshot.get_or_load(load).await?)
}

#[cfg(test)]
mod tests {
    use worker::events::ProductRestocked;

    use super::*;

    fn stock(drop_id: i64, version: i64) -> Arc<Frame> {
        let event = Event::StockUpdate(StockUpdate {
            drop_id,
            available_stock: 1,
            version,
        });
        Arc::new(Frame::new(event).unwrap_or_else(|| unreachable!()))
    }

    #[test]
    fn a_backlog_keeps_only_the_newest_stock_of_each_drop_and_every_other_event() {
        let restocked = Event::ProductRestocked(ProductRestocked {
            product_id: 7,
            slug: "honey".into(),
            name: "Honey".into(),
            stock_quantity: None,
        });
        let pending = vec![
            stock(1, 1),
            stock(2, 5),
            Arc::new(Frame::new(restocked).unwrap_or_else(|| unreachable!())),
            stock(1, 3),
            stock(1, 2),
        ];
        let kept: Vec<String> = conflate(pending)
            .iter()
            .map(|f| f.text().to_owned())
            .collect();
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert!(kept[0].contains(r#""dropId":2"#));
        assert!(kept[1].contains("product_restocked"));
        assert!(kept[2].contains(r#""version":3"#));
    }
}
