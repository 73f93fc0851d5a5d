//! The listener: one port for poem (REST, OpenAPI, Swagger UI, `/ws`) and Socket.IO.
//!
//! poem's server hands every request to poem, and poem's tower compatibility cannot upgrade
//! a request to a WebSocket (poem keeps the connection's upgrade handle in its private
//! request state). So this loop serves the listener with hyper itself, as poem's server
//! does: requests under the Socket.IO path go to socketioxide untouched, every other one is
//! converted into a poem request the way poem's server converts it, so `/ws` still upgrades.
//! Graceful shutdown and connection timeouts live here too.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{
            AtomicU64, AtomicUsize,
            Ordering::{AcqRel, Acquire, Release},
        },
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{CONNECTION, HeaderValue, ORIGIN},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use poem::{
    Endpoint,
    endpoint::BoxEndpoint,
    http::uri::Scheme,
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::{Layer, ServiceExt};
use tower_http::cors::CorsLayer;

use crate::http::service::Body;

/// How long a connection may take over a request's headers and how long it may idle, and how
/// many may be open at once (`HTTP_HEADER_READ_TIMEOUT_SECS`, `HTTP_KEEP_ALIVE_SECS`,
/// `HTTP_MAX_CONNECTIONS`).
///
/// Both timers run only while no request is in progress, and neither restarts as bytes
/// arrive: a request's headers must be complete within `header_read` of its first byte (of
/// the connection's opening, for the first request), however slowly they trickle in.
/// Counted here rather than with hyper's `header_read_timeout`: with that timer set, hyper
/// reads for the next request the moment a response is out, and an early answer to a body
/// still being sent (413) then often reached the client as a reset connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read: Duration,
    pub keep_alive: Duration,
    pub max_connections: usize,
}

impl From<&crate::settings::ListenerSettings> for Limits {
    fn from(http: &crate::settings::ListenerSettings) -> Self {
        Self {
            header_read: http.header_read_timeout,
            keep_alive: http.keep_alive,
            max_connections: http.max_connections,
        }
    }
}

/// A connection that takes none of the bytes we write for this long belongs to a client that
/// stopped reading; it is closed, which also frees a WebSocket writer stuck on it
/// (see [`ClientIo`]).
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings an idle connection this often, and closes it if the ping is not answered
/// within [`HTTP2_PING_TIMEOUT`].
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(10);

use crate::live::socketio::SocketIoEndpoint;

/// Where requests go.
pub struct Routes {
    pub app: BoxEndpoint<'static, poem::Response>,
    pub socketio: SocketIoEndpoint,
    /// One CORS policy for both (see [`crate::http::cors`]).
    pub cors: CorsLayer,
}

/// Serves `listener` until `signal` resolves; then stops accepting, closes the Socket.IO
/// sessions (which answers their pending long-polls), and lets in-flight requests finish
/// for up to `grace` before closing what is left.
///
/// # Errors
/// The listener's own address cannot be read.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    limits: Limits,
    signal: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let routes = Arc::new(routes);
    let stopping = CancellationToken::new();
    let abort = CancellationToken::new();
    let connections = TaskTracker::new();
    // A permit per open connection, held by its socket: an upgraded one (WebSocket,
    // Socket.IO) keeps it until it closes.
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut last_refusal_logged: Option<tokio::time::Instant> = None;
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        // Closed at once, before it costs a task or a buffer; logged at most
                        // once a minute.
                        drop(stream);
                        if last_refusal_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                            last_refusal_logged = Some(tokio::time::Instant::now());
                            tracing::warn!(
                                max_connections = limits.max_connections,
                                "connection limit reached (HTTP_MAX_CONNECTIONS); closing new connections"
                            );
                        }
                        continue;
                    };
                    // Small frames (stock updates) should leave at once, not wait for an ACK.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(
                        Accepted { stream, permit, local, remote },
                        routes.clone(),
                        limits,
                        stopping.clone(),
                        abort.clone(),
                    ));
                }
                Err(error) if is_connection_error(&error) => {}
                Err(error) => {
                    // Out of file descriptors, typically: give connections time to close.
                    tracing::warn!(%error, "cannot accept connections");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            },
        }
    }
    drop(listener);
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: finishing in-flight requests"
    );
    if tokio::time::timeout(grace, routes.socketio.io.close())
        .await
        .is_err()
    {
        tracing::warn!("socket.io sessions did not all close in time");
    }
    stopping.cancel();
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "connections still busy after the grace period; closing them"
        );
        abort.cancel();
        connections.wait().await;
    }
    Ok(())
}

/// Errors of one incoming connection, not of the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection and its place under the connection cap.
struct Accepted {
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    local: SocketAddr,
    remote: SocketAddr,
}

async fn connection(
    accepted: Accepted,
    routes: Arc<Routes>,
    limits: Limits,
    stopping: CancellationToken,
    abort: CancellationToken,
) {
    let Accepted {
        stream,
        permit,
        local,
        remote,
    } = accepted;
    let activity = Arc::new(Activity::new());
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |request| {
            let counted = InFlight::start(&activity);
            let routes = routes.clone();
            async move {
                let response = route(routes, request, local, remote).await?;
                Ok::<_, Infallible>(response.map(|inner| Counted {
                    inner,
                    _request: counted,
                }))
            }
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    let io = ClientIo::new(stream, WRITE_STALL_TIMEOUT).watched(activity.clone(), permit);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle = activity.in_flight.load(Acquire) == 0;
        let deadline = activity.idle_deadline(limits);
        tokio::select! {
            _ = conn.as_mut() => return,
            () = activity.changed.notified() => {}
            // Nothing is in progress, so dropping the connection loses nothing. (hyper's
            // graceful shutdown would wait on a client still sending its headers.)
            () = tokio::time::sleep_until(deadline), if idle => return,
            () = stopping.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = abort.cancelled() => return,
        }
    }
}

/// Requests in progress on one connection, when it last became idle and when the bytes of
/// its next request began to arrive, and a wake-up whenever one of these changes. Instants
/// are nanoseconds since `opened` so that reads only touch atomics.
struct Activity {
    in_flight: AtomicUsize,
    changed: Notify,
    opened: tokio::time::Instant,
    idle_since: AtomicU64,
    /// 0: no byte of a next request yet.
    request_began: AtomicU64,
}

impl Activity {
    /// A new connection is opened to send a request: its header clock starts now.
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
            opened: tokio::time::Instant::now(),
            idle_since: AtomicU64::new(0),
            request_began: AtomicU64::new(1),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// When a connection with no request in progress is closed: `header_read` after the
    /// first byte of its next request, or `keep_alive` after its last response when no byte
    /// came since.
    fn idle_deadline(&self, limits: Limits) -> tokio::time::Instant {
        let at = |nanos: u64, after: Duration| self.opened + Duration::from_nanos(nanos) + after;
        match self.request_began.load(Acquire) {
            0 => at(self.idle_since.load(Acquire), limits.keep_alive),
            began => at(began, limits.header_read),
        }
    }

    /// Bytes were read: while idle, that is the start of the next request.
    fn bytes_arrived(&self) {
        if self.in_flight.load(Acquire) == 0
            && self
                .request_began
                .compare_exchange(0, self.now(), AcqRel, Acquire)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }
}

/// One request, counted from the moment its headers are in until its response has been
/// sent or abandoned.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, AcqRel);
        activity.request_began.store(0, Release);
        activity.changed.notify_one();
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, AcqRel) == 1 {
            self.0.idle_since.store(self.0.now(), Release);
        }
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request counted until hyper is done with it.
struct Counted {
    inner: Body,
    _request: InFlight,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Requests from a browser page (they carry `Origin`) pass through the CORS policy, which
/// answers preflights itself; others go straight to their endpoint, so a plain `OPTIONS`
/// is still a 405.
async fn route(
    routes: Arc<Routes>,
    request: Request<Incoming>,
    local: SocketAddr,
    remote: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    if !request.headers().contains_key(ORIGIN) {
        return dispatch(routes, request, local, remote).await;
    }
    let cors = routes.cors.clone();
    let endpoint =
        tower::service_fn(move |request| dispatch(routes.clone(), request, local, remote));
    let mut response = cors.layer(endpoint).oneshot(request).await?;
    // tower-http leaves out only `Allow-Origin` for an origin it refuses, yet still answers
    // its preflight with the allowed methods and a max age: a refused origin gets none.
    if !response
        .headers()
        .contains_key(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN)
    {
        let granted: Vec<_> = response
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in granted {
            response.headers_mut().remove(name);
        }
    }
    Ok(response)
}

async fn dispatch(
    routes: Arc<Routes>,
    request: Request<Incoming>,
    local: SocketAddr,
    remote: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    if routes.socketio.serves(request.uri().path()) {
        return Ok(routes.socketio.call(request, remote).await);
    }
    let request = poem::Request::from((
        request,
        LocalAddr(local.into()),
        RemoteAddr(remote.into()),
        Scheme::HTTP,
    ));
    let mut response: Response<Body> = routes.app.get_response(request).await.into();
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body is left unread, so the connection cannot carry another request:
        // say so (RFC 9110 15.5.14), or the client may reuse it as we close it and lose that
        // request.
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// The server's end of one client connection. A write that makes no progress for `limit`
/// fails, and every read and write after it. Shutting down sends our FIN, then reads and
/// discards what the client still sends until it closes too (for at most [`LINGER`] or
/// [`LINGER_BYTES`]): closing a socket with unread input resets the connection, and a client
/// still uploading a body we refused early (413) would lose our answer with it.
pub struct ClientIo<T> {
    inner: T,
    /// Told of reads, for the header timer; `None` in unit tests.
    activity: Option<Arc<Activity>>,
    /// This connection's place under [`Limits::max_connections`], released when it closes.
    _permit: Option<OwnedSemaphorePermit>,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    armed: bool,
    stalled: bool,
    write_closed: bool,
    lingered: usize,
}

/// How long a closing connection waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

impl<T> ClientIo<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            activity: None,
            _permit: None,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            armed: false,
            stalled: false,
            write_closed: false,
            lingered: 0,
        }
    }

    fn watched(mut self, activity: Arc<Activity>, permit: OwnedSemaphorePermit) -> Self {
        self.activity = Some(activity);
        self._permit = Some(permit);
        self
    }

    fn stalled_error() -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the peer took no data for too long",
        )
    }

    /// Runs one write-side poll, starting the clock when it cannot proceed.
    fn guard<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut T, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if self.stalled {
            return Poll::Ready(Err(Self::stalled_error()));
        }
        match poll(&mut self.inner, cx) {
            Poll::Pending => {
                if !self.armed {
                    self.armed = true;
                    let deadline = tokio::time::Instant::now() + self.limit;
                    self.timer.as_mut().reset(deadline);
                }
                if self.timer.as_mut().poll(cx).is_ready() {
                    self.stalled = true;
                    return Poll::Ready(Err(Self::stalled_error()));
                }
                Poll::Pending
            }
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.stalled {
            return Poll::Ready(Err(Self::stalled_error()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before
            && let Some(activity) = &this.activity
        {
            activity.bytes_arrived();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .guard(cx, |inner, cx| Pin::new(inner).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().guard(cx, |inner, cx| {
            Pin::new(inner).poll_write_vectored(cx, bufs)
        })
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .guard(cx, |inner, cx| Pin::new(inner).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed {
            ready!(this.guard(cx, |inner, cx| Pin::new(inner).poll_shutdown(cx)))?;
            this.write_closed = true;
            let deadline = tokio::time::Instant::now() + LINGER;
            this.timer.as_mut().reset(deadline);
        }
        let mut scratch = [0u8; 4096];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    this.lingered += buf.filled().len();
                    if this.lingered >= LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    return match this.timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_peer_that_stops_reading_fails_the_write_after_the_limit() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut guarded = ClientIo::new(ours, Duration::from_millis(200));
        let started = tokio::time::Instant::now();
        let mut written = 0;
        let error = loop {
            match guarded.write(&[0u8; 32]).await {
                Ok(n) => written += n,
                Err(e) => break e,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(written, 64, "only the pipe's capacity was taken");
        assert!(started.elapsed() >= Duration::from_millis(200));
        let mut byte = [0u8; 1];
        assert!(guarded.read(&mut byte).await.is_err(), "reads fail too");
    }

    #[tokio::test]
    async fn closing_waits_for_the_peer_to_finish_sending_and_to_close() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut guarded = ClientIo::new(ours, Duration::from_secs(5));
        let peer = tokio::spawn(async move {
            let mut answer = Vec::new();
            // The rest of an upload the server no longer wants, then the peer's own close.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = theirs.write_all(&[7u8; 3000]).await;
            let _ = theirs.read_to_end(&mut answer).await;
            let _ = theirs.shutdown().await;
            answer
        });
        assert!(guarded.write_all(b"HTTP/1.1 413").await.is_ok());
        let started = tokio::time::Instant::now();
        assert!(guarded.shutdown().await.is_ok());
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "did not linger"
        );
        assert!(started.elapsed() < LINGER, "waited past the peer's close");
        assert_eq!(peer.await.unwrap_or_default(), b"HTTP/1.1 413");
    }

    #[tokio::test]
    async fn closing_gives_up_on_a_peer_that_never_closes() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut guarded = ClientIo::new(ours, Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        assert!(guarded.shutdown().await.is_ok());
        assert!(started.elapsed() >= LINGER);
        assert!(started.elapsed() < LINGER + Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_taking_data_is_not_cut_off() {
        let (ours, mut theirs) = tokio::io::duplex(16);
        let mut guarded = ClientIo::new(ours, Duration::from_millis(300));
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0u8; 16];
            while total < 160 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                total += theirs.read(&mut buf).await.unwrap_or(0);
            }
            total
        });
        for _ in 0..10 {
            assert!(guarded.write_all(&[1u8; 16]).await.is_ok());
        }
        assert_eq!(reader.await.unwrap_or_default(), 160);
    }
}
