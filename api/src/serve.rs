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
            AtomicUsize,
            Ordering::{AcqRel, Acquire},
        },
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{CONNECTION, HeaderValue},
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
    sync::Notify,
    time::Sleep,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use crate::socketio::SocketIoEndpoint;

/// A response body from either side.
pub type Body = http_body_util::combinators::BoxBody<Bytes, io::Error>;
/// An HTTP service that shares the listener with poem.
pub type HttpService =
    tower::util::BoxCloneSyncService<Request<Incoming>, Response<Body>, Infallible>;

/// A connection with no request in progress (one still sending its first headers, or idle
/// between requests) is closed after this long: this bounds both the time to send a request's
/// headers and keep-alive idleness.
///
/// Counted here rather than with hyper's `header_read_timeout`: with that timer set, hyper
/// reads for the next request the moment a response is out, and an early answer to a body
/// still being sent (413) then often reached the client as a reset connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that takes none of the bytes we write for this long belongs to a client that
/// stopped reading; it is closed, which also frees a WebSocket writer stuck on it
/// (see [`ClientIo`]).
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings an idle connection this often, and closes it if the ping is not answered
/// within [`HTTP2_PING_TIMEOUT`].
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Where requests go.
pub struct Routes {
    pub app: BoxEndpoint<'static, poem::Response>,
    pub socketio: SocketIoEndpoint,
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
    signal: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let routes = Arc::new(routes);
    let stopping = CancellationToken::new();
    let abort = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    // Small frames (stock updates) should leave at once, not wait for an ACK.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(
                        stream,
                        local,
                        remote,
                        routes.clone(),
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

async fn connection(
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    routes: Arc<Routes>,
    stopping: CancellationToken,
    abort: CancellationToken,
) {
    let activity = Arc::new(Activity::default());
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
    let io = TokioIo::new(ClientIo::new(stream, WRITE_STALL_TIMEOUT));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle = activity.in_flight.load(Acquire) == 0;
        tokio::select! {
            _ = conn.as_mut() => return,
            () = activity.changed.notified() => {}
            // Nothing is in progress, so dropping the connection loses nothing. (hyper's
            // graceful shutdown would wait on a client still sending its headers.)
            () = tokio::time::sleep(IDLE_TIMEOUT), if idle => return,
            () = stopping.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = abort.cancelled() => return,
        }
    }
}

/// Requests in progress on one connection, and a wake-up whenever that number changes.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    changed: Notify,
}

/// One request, counted from the moment its headers are in until its response has been
/// sent or abandoned.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, AcqRel);
        activity.changed.notify_one();
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, AcqRel);
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

async fn route(
    routes: Arc<Routes>,
    request: Request<Incoming>,
    local: SocketAddr,
    remote: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    if routes.socketio.serves(request.uri().path()) {
        return routes.socketio.service.clone().oneshot(request).await;
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
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            armed: false,
            stalled: false,
            write_closed: false,
            lingered: 0,
        }
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
        Pin::new(&mut this.inner).poll_read(cx, buf)
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
