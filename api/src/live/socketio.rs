//! Socket.IO (protocol v5 over Engine.IO v4) at `SOCKET_IO_PATH`, for frontends written with
//! `socket.io-client`: the events of `/ws`, with the event name as the Socket.IO event and
//! `data` as its argument.
//!
//! One fan-out feeds both endpoints. Every event reaches this instance through the bus relay
//! and is serialised once into a [`Frame`] on `AppState::frames`; each Socket.IO socket
//! reads that broadcast on its own task, filters and conflates it as `/ws` does, and emits
//! the frame's pre-serialised `data`. socketioxide's own broadcast and Redis adapter are not
//! used: the bus already brings every instance every event.
//!
//! A slow client only delays itself: socketioxide holds at most [`SOCKET_BUFFER`] packets
//! per socket. While that is full the socket's task waits instead of reading the broadcast
//! (a socket that falls [`FRAME_BACKLOG`](crate::cache::frames::FRAME_BACKLOG) events behind is sent a fresh `snapshot`), and
//! the session is closed when its next heartbeat ping (every 25 s) finds the buffer still
//! full or goes unanswered for 20 s. A WebSocket whose peer stops reading is cut off by the
//! listener (`ClientIo` in `serve.rs`).

use std::{collections::HashSet, sync::Arc, sync::atomic::Ordering::Relaxed, time::Duration};

use http_body_util::BodyExt;
use hyper::Response;
use poem_openapi::{Object, types::ToJSON};
use serde::Deserialize;
use serde_json::value::RawValue;
use socketioxide::{
    SendError, SocketError, SocketIo,
    extract::{AckSender, SocketRef, State, TryData},
    handler::ConnectHandler,
};
use tokio::sync::{
    broadcast::{
        self,
        error::{RecvError, TryRecvError},
    },
    watch,
};
use tokio_util::sync::CancellationToken;
use tower::{ServiceBuilder, ServiceExt};
use worker::events::{FrameError, Subscribed};

use crate::{
    auth::CurrentUser,
    cache::frames::Frame,
    http::error::{ErrorBody, ErrorCode},
    http::service::{Body, HttpService},
    live::ws::{self, Subscribe},
    state::AppState,
};

/// Packets socketioxide may hold for one socket before an emit to it is refused: a snapshot
/// and a few conflated events are all a socket ever needs queued.
pub const SOCKET_BUFFER: usize = 64;
/// Largest long-polling body a client may post (it only ever sends `subscribe`).
const MAX_CLIENT_PAYLOAD: u64 = 16 * 1024;
/// A session that has not joined the namespace this long after its handshake is closed (its
/// [`crate::abuse::live_gate::Slot`] with it). socket.io-client joins at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a socket whose buffer is full is offered its next packet.
const FULL_RETRY: Duration = Duration::from_millis(25);
/// Largest WebSocket message a client may send (it only ever sends `subscribe`).
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Builds the Socket.IO server for this instance.
pub fn endpoint(state: &AppState) -> SocketIoEndpoint {
    let path = state.settings.listener.socket_io_path.clone();
    let (service, io) = SocketIo::builder()
        .req_path(path.clone())
        .max_buffer_size(SOCKET_BUFFER)
        .max_payload(MAX_CLIENT_PAYLOAD)
        .connect_timeout(CONNECT_TIMEOUT)
        .ws_read_buffer_size(1024)
        .ws_max_message_size(MAX_CLIENT_MESSAGE)
        .ws_max_frame_size(MAX_CLIENT_MESSAGE)
        .with_state(state.clone())
        .build_svc();
    io.ns("/", on_connect.with(authenticate));
    // CORS for long-polling (cross-origin XHRs when the frontend is served from elsewhere) is
    // the listener's, shared with the REST API.
    let service = ServiceBuilder::new().map_response(boxed).service(service);
    SocketIoEndpoint {
        path,
        service: HttpService::new(service),
        io,
        gate: state.live.clone(),
        abuse: state.settings.abuse.clone(),
    }
}

fn boxed<B>(response: Response<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Send + Sync + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    response.map(|body| Body::new(body.map_err(std::io::Error::other)))
}

/// The `auth` option of `socket.io-client`: `io(url, { auth: { token } })`.
#[derive(Deserialize, Object)]
#[oai(rename = "SocketIoAuth")]
pub(crate) struct Handshake {
    /// An access token (`accessToken` of `login`); without one the socket is anonymous.
    #[serde(default)]
    token: Option<String>,
}

/// Who a socket belongs to, set when its handshake is accepted.
#[derive(Clone)]
struct Viewer(Option<CurrentUser>);

/// Why a connection was refused: socket.io-client reports it as `connect_error`'s message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// Runs before a socket joins: no token is an anonymous socket; a token must be a live
/// access token, or the connection is refused.
async fn authenticate(
    socket: SocketRef,
    State(state): State<AppState>,
    TryData(handshake): TryData<Handshake>,
) -> Result<(), Refused> {
    let handshake = handshake.map_err(|e| {
        Refused(format!(
            "unreadable auth payload, expected {{ token: \"<access token>\" }}: {e}"
        ))
    })?;
    let viewer = match handshake.token {
        None => None,
        Some(token) => Some(
            state
                .auth
                .authenticate(&token)
                .await
                .map_err(|e| Refused(format!("unauthorized: {}", e.message)))?,
        ),
    };
    socket.extensions.insert(Viewer(viewer));
    Ok(())
}

/// The drops a socket asked for (`None`: every drop), shared with its relay task.
#[derive(Clone)]
struct DropFilter(Arc<watch::Sender<Option<HashSet<i64>>>>);

/// Ends the relay task of a socket that has gone.
#[derive(Clone)]
struct Gone(CancellationToken);

async fn on_connect(socket: SocketRef, State(state): State<AppState>) {
    let Viewer(viewer) = socket.extensions.get::<Viewer>().unwrap_or(Viewer(None));
    let (filter, drops) = watch::channel(None);
    let gone = CancellationToken::new();
    socket.extensions.insert(DropFilter(Arc::new(filter)));
    socket.extensions.insert(Gone(gone.clone()));
    socket.on("subscribe", subscribe);
    socket.on_disconnect(async |socket: SocketRef| {
        if let Some(Gone(token)) = socket.extensions.get::<Gone>() {
            token.cancel();
        }
    });
    // Subscribe before the snapshot is read, so no event falls between the two.
    let frames = state.frames.subscribe();
    tokio::spawn(async move {
        state.metrics.socketio_clients.fetch_add(1, Relaxed);
        let client = ws::Client::new(viewer);
        tokio::select! {
            () = gone.cancelled() => {}
            () = relay(&socket, &state, frames, client, drops) => {}
        }
        state.metrics.socketio_clients.fetch_sub(1, Relaxed);
    });
}

/// The acknowledgement of a `subscribe` that was refused (an accepted one is [`Subscribed`]).
#[derive(Object)]
pub(crate) struct SubscribeRefused {
    pub(crate) error: ErrorBody,
}

/// `socket.emit("subscribe", { drops: [1, 2] }, ack)`: from now on only those drops'
/// `stock_update`s; the acknowledgement carries the filter in force (sorted), or an error.
async fn subscribe(socket: SocketRef, TryData(request): TryData<Subscribe>, ack: AckSender) {
    let answer = match (request, socket.extensions.get::<DropFilter>()) {
        (Ok(request), Some(DropFilter(filter))) => {
            let drops = request
                .drops
                .map(|ids| ids.into_iter().collect::<HashSet<_>>());
            let mut sorted: Option<Vec<i64>> = drops.as_ref().map(|d| d.iter().copied().collect());
            if let Some(ids) = sorted.as_mut() {
                ids.sort_unstable();
            }
            filter.send_replace(drops);
            Subscribed { drops: sorted }.to_json()
        }
        (Err(e), _) => refused(
            ErrorCode::BadRequest,
            format!("expected {{ drops: [dropId, ...] }} or {{ drops: null }}: {e}"),
        ),
        (_, None) => refused(
            ErrorCode::ServiceUnavailable,
            "this socket is closing; reconnect".to_owned(),
        ),
    };
    // A client that asked for no acknowledgement gets none; a full buffer drops it.
    let _ = ack.send(&answer);
}

fn refused(code: ErrorCode, message: String) -> Option<serde_json::Value> {
    SubscribeRefused {
        error: ErrorBody { code, message },
    }
    .to_json()
}

/// What one read of the broadcast gave a socket.
enum Batch {
    Frames(Vec<Arc<Frame>>),
    /// The socket fell behind the broadcast and missed frames: resend the whole state.
    Resync,
    Closed,
}

/// Waits for the next frame and takes whatever else is already waiting with it.
async fn next_batch(frames: &mut broadcast::Receiver<Arc<Frame>>) -> Batch {
    let first = match frames.recv().await {
        Ok(first) => first,
        Err(RecvError::Lagged(_)) => return Batch::Resync,
        Err(RecvError::Closed) => return Batch::Closed,
    };
    let mut pending = vec![first];
    loop {
        match frames.try_recv() {
            Ok(frame) => pending.push(frame),
            Err(TryRecvError::Lagged(_)) => return Batch::Resync,
            Err(TryRecvError::Empty | TryRecvError::Closed) => return Batch::Frames(pending),
        }
    }
}

/// The socket's copy of the fan-out: its snapshot, then every frame it wants, until it goes.
async fn relay(
    socket: &SocketRef,
    state: &AppState,
    mut frames: broadcast::Receiver<Arc<Frame>>,
    mut client: ws::Client,
    mut drops: watch::Receiver<Option<HashSet<i64>>>,
) {
    if emit_snapshot(socket, state).await.is_err() {
        return;
    }
    loop {
        let sent = match next_batch(&mut frames).await {
            Batch::Frames(pending) => {
                if drops.has_changed().unwrap_or(false) {
                    client.drops = drops.borrow_and_update().clone();
                }
                emit_batch(socket, &mut client, ws::conflate(pending)).await
            }
            Batch::Resync => emit_snapshot(socket, state).await,
            Batch::Closed => return,
        };
        if sent.is_err() {
            return;
        }
    }
}

async fn emit_batch(
    socket: &SocketRef,
    client: &mut ws::Client,
    frames: Vec<Arc<Frame>>,
) -> Result<(), Disconnected> {
    for frame in frames.iter().filter(|f| client.take(f.event())) {
        emit(socket, frame.name(), frame.data()).await?;
    }
    Ok(())
}

async fn emit_snapshot(socket: &SocketRef, state: &AppState) -> Result<(), Disconnected> {
    let snapshot = match ws::snapshot(state).await {
        Ok(snapshot) => snapshot,
        Err(e) => {
            tracing::warn!(error = %e.message, "cannot build socket.io snapshot");
            let error = FrameError {
                code: worker::events::FrameErrorCode::ServiceUnavailable,
                message: "cannot read current stock; reconnect shortly".to_owned(),
            };
            return emit_value(socket, "error", &error).await;
        }
    };
    emit_value(socket, "snapshot", &*snapshot).await
}

async fn emit_value<T: serde::Serialize + ?Sized>(
    socket: &SocketRef,
    name: &str,
    data: &T,
) -> Result<(), Disconnected> {
    match serde_json::value::to_raw_value(data) {
        Ok(raw) => emit(socket, name, &raw).await,
        Err(e) => {
            tracing::warn!(error = %e, event = name, "cannot encode socket.io event");
            Ok(())
        }
    }
}

/// The socket is gone.
struct Disconnected;

/// Emits one event, waiting while the socket's buffer is full. socketioxide cannot drop a
/// session whose buffer is full (its disconnect packet would not fit either), but its
/// Engine.IO heartbeat does: a ping that finds the buffer full, or goes unanswered for 20 s,
/// closes the session, which ends the wait.
async fn emit(socket: &SocketRef, name: &str, data: &RawValue) -> Result<(), Disconnected> {
    loop {
        match socket.emit(name, data) {
            Ok(()) => return Ok(()),
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                tokio::time::sleep(FULL_RETRY).await;
            }
            Err(SendError::Socket(SocketError::Closed)) => return Err(Disconnected),
            Err(SendError::Serialize(e)) => {
                tracing::warn!(error = ?e, event = name, "cannot encode socket.io event");
                return Ok(());
            }
        }
    }
}

/// The Socket.IO service and the server handle that closes its sessions on shutdown.
pub struct SocketIoEndpoint {
    /// Without a trailing slash: `/socket.io`.
    pub path: String,
    pub service: HttpService,
    pub io: SocketIo,
    /// Admits each new session (see [`crate::abuse::live_gate`]).
    pub gate: Arc<crate::abuse::live_gate::LiveGate>,
    /// Whom the operator trusts to name the client (`TRUSTED_PROXIES`).
    pub abuse: worker::settings::AbuseSettings,
}

impl SocketIoEndpoint {
    /// Whether a request for `path` is the Socket.IO endpoint's (`/socket.io`, `/socket.io/...`).
    pub fn serves(&self, path: &str) -> bool {
        is_under(&self.path, path)
    }

    /// Hands the request to socketioxide; a handshake (an Engine.IO request without a `sid`:
    /// a new session) only if the gate admits it, the session then holding its slot in the
    /// request's extensions, which Engine.IO keeps as long as the session lives.
    pub(crate) async fn call(
        &self,
        mut request: hyper::Request<hyper::body::Incoming>,
        remote: std::net::SocketAddr,
    ) -> Response<Body> {
        let opens_a_session = !request
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .any(|pair| pair.starts_with("sid="));
        if opens_a_session {
            // The client as `crate::http::client::client_ip` finds it for poem's requests.
            let client = crate::http::client::resolve(remote.ip(), request.headers(), &self.abuse);
            match self.gate.admit(client) {
                Ok(slot) => {
                    request.extensions_mut().insert(Arc::new(slot));
                }
                Err(refused) => return poem::IntoResponse::into_response(refused).into(),
            }
        }
        match self.service.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

fn is_under(base: &str, path: &str) -> bool {
    path.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_io_endpoint_owns_its_path_and_what_is_under_it_only() {
        let owns = |path: &str| is_under("/api/socket", path);
        assert!(owns("/api/socket"));
        assert!(owns("/api/socket/"));
        assert!(!owns("/api/sockets"));
        assert!(!owns("/api"));
    }
}
