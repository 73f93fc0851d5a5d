//! Builds the application from settings and runs it until a shutdown signal.

use std::{future::Future, sync::Arc, time::Instant};

use chrono::Utc;
use poem::{
    Endpoint, EndpointExt, IntoEndpoint, Request, Response, Route, http::StatusCode,
    middleware::Compression,
};
use poem_openapi::{ContactObject, LicenseObject, OpenApiService};
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use worker::{Infra, platform::shutdown::Shutdown, runtime};

use crate::{
    http::{allow, error, html_headers, json_keys, spec, storefront},
    live::{asyncapi, socketio, ws},
    routes, serve,
    settings::Settings,
    state::AppState,
};

const DESCRIPTION: &str = include_str!("../API.md");

pub struct Application {
    listener: tokio::net::TcpListener,
    port: u16,
    state: AppState,
    infra: Infra,
}

impl Application {
    /// Connects to the backends, migrates, makes sure the admin account exists, and binds the
    /// listener (port 0 picks a free one).
    ///
    /// # Errors
    /// A backend is unreachable, a migration fails, or the address cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let infra = Infra::connect(&settings).await?;
        crate::dev::demo::seed_if_empty(&settings, &infra).await?;
        ensure_admin(&settings, &infra).await?;
        let address = std::net::SocketAddr::new(settings.http.host, settings.http.port);
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {address} (HOST, PORT): {e}"))?;
        let port = listener
            .local_addr()
            .map_or(settings.http.port, |a| a.port());
        let state = AppState::new(settings, infra.clone()).await?;
        Ok(Self {
            listener,
            port,
            state,
            infra,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `signal` resolves, then stops accepting, finishes in-flight requests and
    /// (embedded worker) in-flight jobs.
    ///
    /// # Errors
    /// The server or the embedded worker failed.
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            port,
            state,
            infra,
        } = self;
        let settings = state.settings.clone();
        let base = format!("http://{}:{port}", settings.http.host);
        tracing::info!(
            mode = ?settings.mode(),
            swagger_ui = %format!("{base}/docs"),
            socket_io = %format!("{base}{}/", settings.listener.socket_io_path),
            "Honeydrop is listening on {base}; Swagger UI at {base}/docs"
        );

        // One way to stop: `state.closing` fires with the signal (sockets say goodbye, the
        // listener stops accepting); once the listener is done, `stop` ends the background
        // tasks and the embedded worker, and each is waited for.
        let stop = Shutdown::new();
        let background = TaskTracker::new();
        let embedded_worker = settings.worker.embed.then(|| {
            tokio::spawn(runtime::run(
                settings.shared.clone(),
                infra.clone(),
                runtime::unique_name("api-worker"),
                stop.clone(),
            ))
        });
        background.spawn(
            stop.clone()
                .run_until_cancelled_owned(crate::live::relay::run(state.clone())),
        );
        let auth = state.auth.clone();
        background.spawn(
            stop.clone()
                .run_until_cancelled_owned(async move { auth.sync_sessions().await }),
        );
        let flusher = state.clone();
        background.spawn(stop.clone().run_until_cancelled_owned(async move {
            flusher
                .reserve_attempts
                .flush_periodically(&flusher.db)
                .await;
        }));
        background.close();

        let closing = state.closing.clone();
        let signal = async move {
            signal.await;
            closing.cancel();
        };
        let at_shutdown = state.clone();
        let routes = serve::Routes {
            socketio: socketio::endpoint(&state),
            cors: crate::http::cors::layer(&settings.listener.cors_allowed_origins),
            app: app(state).boxed(),
        };
        let limits = serve::Limits::from(&settings.listener);
        let grace = std::time::Duration::from_secs(15);
        let served = serve::serve(listener, routes, limits, signal, grace).await;
        wait_for_sockets_to_close(&at_shutdown).await;
        stop.cancel();
        background.wait().await;
        at_shutdown.reserve_attempts.flush(&at_shutdown.db).await;
        if let Some(worker) = embedded_worker {
            worker.await??;
        }
        tracing::info!("stopped");
        Ok(served?)
    }
}

/// Gives sockets told to close a moment to send their close frames before the process ends.
async fn wait_for_sockets_to_close(state: &AppState) {
    use std::sync::atomic::Ordering::Relaxed;
    for _ in 0..40 {
        if state.metrics.websocket_clients.load(Relaxed) == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// poem's HTTP surface: REST + OpenAPI + Swagger UI + WebSocket (Socket.IO shares the
/// listener beside it, and CORS is the listener's, see [`serve`]).
pub fn app(state: AppState) -> impl Endpoint<Output = Response> {
    let api = OpenApiService::new(routes::apis(&state), "Honeydrop", env!("CARGO_PKG_VERSION"))
        .description(description(&state.settings))
        .contact(ContactObject::new().name("Honeydrop maintainers"))
        .license(LicenseObject::new("MIT").url("https://opensource.org/licenses/MIT"))
        // Relative: the document is served by the store it describes, on whatever host.
        .server("/");
    let docs = api.swagger_ui();
    let document = spec::finish(&api.spec());
    let events = asyncapi::document(
        env!("CARGO_PKG_VERSION"),
        &state.settings.listener.socket_io_path,
    )
    .to_string();
    let allowed = Arc::new(allow::AllowedMethods::from_spec(
        &document,
        &[
            ("/openapi.json", &["GET"]),
            ("/asyncapi.json", &["GET"]),
            ("/ws", &["GET"]),
            ("/static/{name}", &["GET"]),
        ],
    ));
    let max_body = state.settings.listener.max_body_bytes;
    Route::new()
        .nest("/", storefront::with_index(api))
        // Swagger UI is one 1.8 MB page: about 0.5 MB compressed.
        .nest("/docs", docs.with(Compression::new()))
        .at("/openapi.json", spec::endpoint(document))
        .at("/asyncapi.json", spec::endpoint(events))
        .at("/ws", ws::upgrade)
        .at(
            "/static/:name",
            storefront::static_file.with(Compression::new()),
        )
        .around(html_headers::protect)
        .around(json_keys::refuse_duplicate_keys)
        .around(move |next, req| limit_body(next, req, max_body))
        .around(refuse_control_characters)
        .catch_all_error(error::uniform)
        .around(move |next, req| allow::add_allow_header(next, req, allowed.clone()))
        .around(log_request)
        .data(state.auth.clone())
        .data(state.settings.abuse.clone())
        .data(state)
        .into_endpoint()
        .map_to_response()
}

/// The API's description in Swagger UI: `API.md` with this server's own durations and the
/// live events' table (generated from [`worker::events::EVENT_DOCS`], as README's is).
pub fn description(settings: &Settings) -> String {
    let leeway = match settings.sessions.jwt_leeway.as_secs() {
        0 => "refused once expired".to_owned(),
        secs => format!("accepted up to {secs} s past expiry, `JWT_LEEWAY_SECS`"),
    };
    let hold = settings.drops.reservation_ttl.num_seconds().unsigned_abs();
    DESCRIPTION
        .replace("{reservation_ttl}", &span(hold))
        .replace(
            "{access_token_ttl}",
            &span(settings.sessions.access_token_ttl.as_secs()),
        )
        .replace("{jwt_leeway}", &leeway)
        .replace("{events}", &worker::events::events_table())
}

/// `90 s`, `15 minutes`, `2 hours`: a duration as a reader says it.
fn span(secs: u64) -> String {
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match secs {
        s if s >= 3600 && s % 3600 == 0 => plural(s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => plural(s / 60, "minute"),
        s => format!("{s} s"),
    }
}

/// One log line per request, tagged with a request id (the caller's `X-Request-Id`, or a new
/// one), which is echoed back.
async fn log_request<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    let request_id = req
        .header("x-request-id")
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let span = tracing::info_span!("request", id = %request_id, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let state = req.data::<AppState>().cloned();
    let mut response = next
        .call(req)
        .instrument(span.clone())
        .await
        .map(poem::IntoResponse::into_response)?;
    if let Ok(value) = request_id.parse() {
        response.headers_mut().insert("x-request-id", value);
    }
    let status = response.status().as_u16();
    if let Some(state) = state {
        state.metrics.count_status(status);
    }
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| tracing::info!(status, latency_ms, "handled"));
    Ok(response)
}

/// Refuses a path or query that holds a control character once percent-decoded (`%00`,
/// say): no route, id, slug or token contains one, and Postgres cannot even compare text
/// holding NUL, so it is a 400 before any handler or query runs.
async fn refuse_control_characters<E: Endpoint>(
    next: Arc<E>,
    req: Request,
) -> poem::Result<Response> {
    let uri = req.uri();
    let target = [uri.path(), uri.query().unwrap_or_default()];
    if target.iter().any(|part| has_control_when_decoded(part)) {
        return Err(error::ApiError::bad_request(
            "the path and query must not contain control characters",
        )
        .into());
    }
    next.call(req).await.map(poem::IntoResponse::into_response)
}

fn has_control_when_decoded(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    entity::text::has_control(&String::from_utf8_lossy(&decoded))
}

/// Refuses bodies over `max` bytes with 413, whether or not they declare their length.
async fn limit_body<E: Endpoint>(
    next: Arc<E>,
    mut req: Request,
    max: usize,
) -> poem::Result<Response> {
    let too_large = || poem::Error::from_status(StatusCode::PAYLOAD_TOO_LARGE);
    let declared = req
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(len) if len > max => return Err(too_large()),
        Some(_) => {}
        None if req.header("transfer-encoding").is_some() => {
            let body = req
                .take_body()
                .into_bytes_limit(max)
                .await
                .map_err(|_| too_large())?;
            req.set_body(body);
        }
        None => {}
    }
    next.call(req).await.map(poem::IntoResponse::into_response)
}

async fn ensure_admin(settings: &Settings, infra: &Infra) -> anyhow::Result<()> {
    let Some(admin) = &settings.sessions.admin else {
        return Ok(());
    };
    let email = entity::EmailAddress::parse(&admin.email)
        .map_err(|e| anyhow::anyhow!("ADMIN_EMAIL is invalid: {e}"))?;
    let password = entity::accounts::Password::parse(admin.password.expose())
        .map_err(|e| anyhow::anyhow!("ADMIN_PASSWORD is invalid: {e}"))?;
    let admin = entity::accounts::ensure_admin(
        &infra.db,
        &email,
        || entity::accounts::hash_password(&password),
        Utc::now(),
    )
    .await?;
    tracing::info!(admin = %admin.email, "admin account ready");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::has_control_when_decoded;

    #[test]
    fn percent_encoded_control_characters_are_found() {
        for bad in ["/api/products/%00", "/a%0d%0Ab", "x=%1B[31m", "/a%C2%85"] {
            assert!(has_control_when_decoded(bad), "{bad:?} passed");
        }
        for good in [
            "/api/products/acacia-honey",
            "inStock=true",
            "/a%20b",
            "/%",
            "/%zz",
        ] {
            assert!(!has_control_when_decoded(good), "{good:?} was refused");
        }
    }
}
