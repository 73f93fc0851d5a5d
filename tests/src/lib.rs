//! The test harness: starts the real app on port 0 against real backends, one fresh database
//! (and Redis namespace) per test, so tests run in parallel and never share state.
//!
//! Scenario tests are written once as `async fn name(backend: Backend)` and run against both
//! backends with [`both_backends!`].
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::{collections::HashMap, sync::OnceLock, time::Duration};

use api::{Application, state::AppState};
use chrono::Utc;
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use worker::{Infra, Settings, platform::shutdown::Shutdown, runtime};

pub mod process;
pub mod sentinel;

pub use serde_json;

/// Which backends a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file, in-process queue and bus, worker inside the api.
    Embedded,
    /// A fresh Postgres database and a Redis namespace, with a separate worker runtime.
    PostgresRedis,
}

/// Runs `async fn $name(backend: Backend)` once per backend.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded() {
                    super::$name($crate::Backend::Embedded).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres_redis() {
                    super::$name($crate::Backend::PostgresRedis).await;
                }
            }
        )+
    };
}

pub fn test_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn test_redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The `METRICS_TOKEN` of distributed test stores.
pub const TEST_METRICS_TOKEN: &str = "test-metrics-token-0123456789";

const START_SERVICES: &str =
    "start them with `bash scripts/services.sh` (or set TEST_DATABASE_URL / TEST_REDIS_URL)";

/// A running store and what a test needs to poke at it.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub backend: Backend,
    pub client: reqwest::Client,
    pub state: AppState,
    pub db: DatabaseConnection,
    /// The variables the app was started with (to start more instances or workers).
    pub vars: HashMap<String, String>,
    /// The separate worker runtime started with a distributed app.
    pub worker: Option<TestWorker>,
    stop: Shutdown,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
    /// Dropped with the app: the Postgres database and the Redis keys it made.
    _leftovers: Option<Leftovers>,
}

/// A separately started worker runtime (distributed mode), stoppable on its own.
pub struct TestWorker {
    pub name: String,
    stop: Shutdown,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl TestWorker {
    /// Stops it gracefully and waits.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.handle).await;
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Starts the app with extra (or overriding) settings variables.
pub async fn spawn_app_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    init_logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut vars: HashMap<String, String> = HashMap::from([
        ("HOST".into(), "127.0.0.1".into()),
        ("PORT".into(), "0".into()),
        ("DATA_DIR".into(), dir.path().display().to_string()),
        (
            "JWT_ACCESS_SECRET".into(),
            "test-secret-that-is-at-least-32-bytes-long".into(),
        ),
        ("SWEEP_INTERVAL_MS".into(), "200".into()),
        ("AUTH_RATE_LIMIT_PER_MINUTE".into(), "100000".into()),
        // Tests sign many addresses up and open many sockets from 127.0.0.1; the tests of
        // these limits set strict ones.
        ("NOTIFY_ME_EMAILS_PER_MAILBOX_PER_DAY".into(), "1000".into()),
        ("NOTIFY_ME_PER_ADDRESS_PER_HOUR".into(), "1000000".into()),
        ("LIVE_MAX_SOCKETS_PER_ADDRESS".into(), "100000".into()),
        (
            "LIVE_HANDSHAKES_PER_ADDRESS_PER_MINUTE".into(),
            "1000000".into(),
        ),
        // Every test's buyers come from 127.0.0.1; the abuse tests set the strict limits.
        ("SIGNUPS_PER_ADDRESS_PER_HOUR".into(), "100000".into()),
        ("HOLDS_PER_DROP_PER_ADDRESS".into(), "100000".into()),
        // Tests arrange their own data; the demo store is tested on its own.
        ("DEMO_DATA".into(), "false".into()),
    ]);
    let mut leftovers = None;
    match backend {
        Backend::Embedded => {
            vars.insert(
                "DATABASE_URL".into(),
                format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display()),
            );
        }
        Backend::PostgresRedis => {
            let database = fresh_postgres_database().await;
            let prefix = format!("hdtest:{}", uuid::Uuid::new_v4().simple());
            vars.insert("DATABASE_URL".into(), database.url().to_owned());
            vars.insert("REDIS_URL".into(), test_redis_url());
            vars.insert("REDIS_PREFIX".into(), prefix.clone());
            vars.insert("EMBED_WORKER".into(), "false".into());
            // Distributed mode closes /metrics without one.
            vars.insert("METRICS_TOKEN".into(), TEST_METRICS_TOKEN.into());
            // Many tests run at once against one Postgres (max_connections 100 here).
            vars.insert("DATABASE_MAX_CONNECTIONS".into(), "6".into());
            // Tests that read mail give an SMTP_URL; for the rest the outbox will do.
            if !overrides.iter().any(|(k, _)| *k == "SMTP_URL") {
                vars.insert("MAIL_TRANSPORT".into(), "outbox".into());
            }
            leftovers = Some(Leftovers {
                database: Some(database),
                redis_prefix: Some(prefix),
            });
        }
    }
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let (address, port, state, stop, server) = start_instance(&vars).await;
    let mut app = TestApp {
        worker: None,
        address,
        port,
        backend,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        db: state.db.pool().clone(),
        state,
        vars,
        stop,
        server: Some(server),
        _dir: dir,
        _leftovers: leftovers,
    };
    if backend == Backend::PostgresRedis {
        // The worker tier runs beside the api, as the `worker` binary would.
        app.worker = Some(app.spawn_worker().await);
    }
    app
}

type Instance = (
    String,
    u16,
    AppState,
    Shutdown,
    JoinHandle<anyhow::Result<()>>,
);

async fn start_instance(vars: &HashMap<String, String>) -> Instance {
    let settings = api::settings::Settings::from_vars(vars.clone()).expect("test settings");
    let app = Application::build(settings).await.expect("app starts");
    let port = app.port();
    let state = app.state().clone();
    let stop = Shutdown::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));
    (
        format!("http://127.0.0.1:{port}"),
        port,
        state,
        stop,
        server,
    )
}

/// A database of its own on the test Postgres, dropped when the returned guard is, and named
/// after the process that made it, so a crashed run's are dropped by the next run to start.
pub async fn fresh_postgres_database() -> TestDatabase {
    let admin_url = test_database_url();
    let admin = Database::connect(&admin_url).await.unwrap_or_else(|e| {
        panic!("Postgres is not reachable at {admin_url} ({e}); {START_SERVICES}")
    });
    let redis_url = test_redis_url();
    let reachable = match redis::Client::open(redis_url.as_str()) {
        Ok(client) => match client.get_multiplexed_async_connection().await {
            Ok(mut conn) => redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = reachable {
        panic!("Redis is not reachable at {redis_url} ({e}); {START_SERVICES}");
    }
    drop_stale_databases(&admin).await;
    let name = format!(
        "hdtest_{}_{}_{}",
        Utc::now().timestamp(),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(b, _)| b)
        .to_owned();
    TestDatabase {
        url: format!("{base}/{name}"),
        name,
    }
}

/// A test's own Postgres database: dropped (its connections closed) when this is.
pub struct TestDatabase {
    url: String,
    name: String,
}

impl TestDatabase {
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        off_runtime(async move {
            if let Ok(admin) = Database::connect(test_database_url()).await {
                let _ = drop_database(&admin, &name).await;
            }
        });
    }
}

/// What a distributed test app leaves on the shared servers, removed when it is dropped.
struct Leftovers {
    database: Option<TestDatabase>,
    redis_prefix: Option<String>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        // The database goes with its guard; the keys are removed here.
        drop(self.database.take());
        if let Some(prefix) = self.redis_prefix.take() {
            off_runtime(async move {
                let _ = delete_redis_prefix(&test_redis_url(), &prefix).await;
            });
        }
    }
}

/// Runs cleanup to completion from `Drop`, which may run inside (or outside) a Tokio runtime:
/// on a thread of its own with a runtime of its own.
fn off_runtime(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    let thread = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(cleanup);
        }
    });
    let _ = thread.join();
}

/// Deletes every key under `prefix:` (and nothing else), scanning rather than `KEYS`, so a
/// shared Redis is neither blocked nor emptied of other stores' keys, and the prefix's entries in
/// apalis-redis's queue list. Returns how many keys went.
///
/// # Errors
/// Redis refused.
pub async fn delete_redis_prefix(redis_url: &str, prefix: &str) -> redis::RedisResult<usize> {
    let mut conn = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let pattern = format!("{}:*", escape_glob(prefix));
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            deleted += keys.len();
            let _: () = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    // apalis-redis lists every queue in one set outside any prefix: take ours out of it.
    let listed: Vec<String> = redis::cmd("ZRANGE")
        .arg(QUEUE_LIST)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await?;
    let ours: Vec<&String> = listed
        .iter()
        .filter(|queue| queue.starts_with(&format!("{prefix}:")))
        .collect();
    if !ours.is_empty() {
        let _: () = redis::cmd("ZREM")
            .arg(QUEUE_LIST)
            .arg(&ours)
            .query_async(&mut conn)
            .await?;
    }
    Ok(deleted)
}

/// Where apalis-redis registers its queues, for every prefix alike.
const QUEUE_LIST: &str = "core:apalis:queues:list";

/// A prefix as a literal in a Redis glob pattern.
fn escape_glob(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Drops test databases left behind: those of a process that is no longer running (a
/// crashed or killed run) and any older than two hours (names without a process id).
async fn drop_stale_databases(admin: &DatabaseConnection) {
    let Ok(rows) = admin
        .query_all_raw(sea_orm::Statement::from_string(
            admin.get_database_backend(),
            "SELECT datname FROM pg_database WHERE datname LIKE 'hdtest_%'",
        ))
        .await
    else {
        return;
    };
    let cutoff = Utc::now().timestamp() - 2 * 3600;
    for row in rows {
        let Ok(name) = row.try_get::<String>("", "datname") else {
            continue;
        };
        if is_stale(&name, cutoff, |pid| {
            std::path::Path::new(&format!("/proc/{pid}")).exists()
        }) {
            let _ = drop_database(admin, &name).await;
        }
    }
}

/// `hdtest_<created>_<pid>_<id>` is stale once its process is gone; any test database is
/// stale after two hours, the only rule for names without a process id.
fn is_stale(name: &str, cutoff: i64, running: impl Fn(u32) -> bool) -> bool {
    let parts: Vec<&str> = name.split('_').collect();
    let created = parts
        .get(1)
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or(i64::MAX);
    let owner = match parts.as_slice() {
        [_, _, pid, _] => pid.parse::<u32>().ok(),
        _ => None,
    };
    created < cutoff || owner.is_some_and(|pid| !running(pid))
}

#[cfg(test)]
mod stale {
    use super::is_stale;

    #[test]
    fn a_database_of_a_process_that_is_gone_is_stale_at_once() {
        let now = 2_000_000_000;
        let cutoff = now - 7200;
        let running = |pid: u32| pid == 42;
        assert!(is_stale(&format!("hdtest_{now}_7_abc"), cutoff, running));
        assert!(!is_stale(&format!("hdtest_{now}_42_abc"), cutoff, running));
        assert!(is_stale(
            &format!("hdtest_{}_42_abc", cutoff - 1),
            cutoff,
            running
        ));
        assert!(!is_stale(&format!("hdtest_{now}_abc"), cutoff, running));
        assert!(is_stale(
            &format!("hdtest_{}_abc", cutoff - 1),
            cutoff,
            running
        ));
    }
}

/// Drops a test database made by [`fresh_postgres_database`], closing its connections.
///
/// # Errors
/// Postgres refused.
pub async fn drop_database(admin: &DatabaseConnection, name: &str) -> Result<(), sea_orm::DbErr> {
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .map(|_| ())
}

fn init_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            worker::telemetry::init(worker::settings::LogFormat::Text);
        }
    });
}

/// A signed-in user as a test sees it.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: i64,
    pub email: String,
    pub token: String,
    pub refresh_token: String,
}

/// An HTTP answer: status and JSON body (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

impl TestApp {
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        answer(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.request(Method::GET, path, token, None).await
    }

    /// `/metrics` as text (Prometheus's format, not JSON), with the store's token if it has
    /// one.
    pub async fn metrics(&self) -> String {
        self.metrics_request(&self.address)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// A `GET /metrics` to the api at `base`, with this store's `METRICS_TOKEN` if set.
    pub fn metrics_request(&self, base: &str) -> reqwest::RequestBuilder {
        let request = self.client.get(format!("{base}/metrics"));
        match self.vars.get("METRICS_TOKEN").filter(|t| !t.is_empty()) {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.request(Method::POST, path, token, Some(body)).await
    }

    /// Signs up through the API (argon2 and all).
    pub async fn signup(&self, email: &str, password: &str) -> TestUser {
        let answer = self
            .post(
                "/api/auth/signup",
                None,
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "signup failed: {:?}",
            answer.body
        );
        user_from(&answer.body)
    }

    /// A customer created straight in the database with a real session and access token:
    /// for tests that need hundreds of buyers without paying for hundreds of argon2 hashes.
    pub async fn customer(&self, name: &str) -> TestUser {
        self.user_with_role(name, entity::accounts::Role::Customer)
            .await
    }

    pub async fn admin(&self) -> TestUser {
        self.user_with_role(
            &format!("admin-{}", uuid::Uuid::new_v4().simple()),
            entity::accounts::Role::Admin,
        )
        .await
    }

    async fn user_with_role(&self, name: &str, role: entity::accounts::Role) -> TestUser {
        mint_user(&self.db, &self.state.auth.jwt, name, role).await
    }

    /// Creates a live drop through the admin API and returns its id.
    pub async fn create_drop(&self, admin: &TestUser, total_stock: i32) -> i64 {
        let answer = self
            .post(
                "/api/admin/drops",
                Some(&admin.token),
                json!({"name": format!("Drop {}", uuid::Uuid::new_v4().simple()), "priceCents": 12_000, "totalStock": total_stock}),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "create drop failed: {:?}",
            answer.body
        );
        answer.body["id"].as_i64().expect("drop id")
    }

    /// Checks `available + active holds + purchases = total` in the database.
    pub async fn audit(&self, drop_id: i64) -> entity::drops::Audit {
        entity::drops::audit(&self.db, drop_id)
            .await
            .expect("audit")
    }

    /// Starts another worker runtime against the same backends (distributed mode only).
    pub async fn spawn_worker(&self) -> TestWorker {
        assert_eq!(
            self.backend,
            Backend::PostgresRedis,
            "separate workers need distributed mode"
        );
        let settings = Settings::from_vars(self.vars.clone()).expect("settings");
        let infra = Infra::connect(&settings).await.expect("worker connects");
        let name = runtime::unique_name("test-worker");
        let stop = Shutdown::new();
        let handle = tokio::spawn(runtime::run(settings, infra, name.clone(), stop.clone()));
        TestWorker { name, stop, handle }
    }

    /// Starts a second api instance on the same database and Redis (distributed mode).
    pub async fn spawn_instance(&self) -> SecondInstance {
        let (address, port, state, stop, server) = start_instance(&self.vars).await;
        SecondInstance {
            address,
            port,
            state,
            _stop: stop.drop_guard(),
            _server: server,
        }
    }

    /// Opens `/ws` (with `?token=` when given) and returns the socket after its snapshot.
    pub async fn websocket(&self, token: Option<&str>) -> (WsClient, Value) {
        websocket(self.port, token).await
    }

    /// Stops the app gracefully and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        match self.server.take() {
            Some(server) => server.await?,
            None => Ok(()),
        }
    }
}

/// A test app stops its server and worker before what it left on the shared servers is
/// removed, so no task of it writes a key after its prefix was cleared.
impl Drop for TestApp {
    fn drop(&mut self) {
        if self._leftovers.is_none() {
            return;
        }
        self.stop.cancel();
        let mut tasks: Vec<JoinHandle<anyhow::Result<()>>> =
            self.server.take().into_iter().collect();
        if let Some(worker) = self.worker.take() {
            worker.stop.cancel();
            tasks.push(worker.handle);
        }
        let wait = || {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while tasks.iter().any(|t| !t.is_finished()) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        // Only a multi-threaded runtime can run the tasks to their end while this waits.
        let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
        if let Ok(tokio::runtime::RuntimeFlavor::MultiThread) = flavor {
            tokio::task::block_in_place(wait);
        }
    }
}

/// A user created straight in the database, its email verified, with a live session and an
/// access token signed with `jwt`: hundreds of buyers without hundreds of argon2 hashes.
pub async fn mint_user(
    db: &DatabaseConnection,
    jwt: &api::auth::Jwt,
    name: &str,
    role: entity::accounts::Role,
) -> TestUser {
    static HASH: OnceLock<String> = OnceLock::new();
    let hash = HASH.get_or_init(|| {
        entity::accounts::hash_password(
            &entity::accounts::Password::parse("test-password").expect("password"),
        )
        .expect("hash")
    });
    let email = entity::EmailAddress::parse(&format!("{name}@example.com")).expect("email");
    let display = entity::accounts::DisplayName::parse(name).expect("name");
    let user = entity::accounts::create_user(db, &email, &display, hash.clone(), role, Utc::now())
        .await
        .expect("create user");
    // A minted buyer is an established one: verified, as drops that require it expect.
    {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
        entity::models::users::Entity::update_many()
            .col_expr(
                entity::models::users::Column::EmailVerifiedAt,
                Expr::value(Utc::now()),
            )
            .filter(entity::models::users::Column::Id.eq(user.id))
            .exec(db)
            .await
            .expect("verify user");
    }
    let (session, refresh_token) =
        entity::accounts::start_session(db, user.id, chrono::Duration::days(1), Utc::now())
            .await
            .expect("session");
    let token = jwt.issue(user.id, &session, role).expect("token");
    TestUser {
        id: user.id,
        email: user.email,
        token,
        refresh_token,
    }
}

pub struct SecondInstance {
    pub address: String,
    pub port: u16,
    pub state: AppState,
    /// Stops the instance when dropped.
    _stop: tokio_util::sync::DropGuard,
    _server: JoinHandle<anyhow::Result<()>>,
}

impl SecondInstance {
    pub async fn websocket(&self, token: Option<&str>) -> (WsClient, Value) {
        websocket(self.port, token).await
    }
}

pub type WsClient =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn websocket(port: u16, token: Option<&str>) -> (WsClient, Value) {
    let url = match token {
        Some(t) => format!("ws://127.0.0.1:{port}/ws?token={t}"),
        None => format!("ws://127.0.0.1:{port}/ws"),
    };
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    let snapshot = next_frame(&mut socket, Duration::from_secs(5))
        .await
        .expect("snapshot frame");
    assert_eq!(snapshot["event"], "snapshot", "first frame: {snapshot}");
    (socket, snapshot)
}

/// The next JSON text frame, or `None` after `within`.
pub async fn next_frame(socket: &mut WsClient, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()??
            .ok()?;
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).ok();
        }
    }
}

/// Waits for a frame whose event is `event` and for which `matches` holds.
pub async fn wait_for_frame(
    socket: &mut WsClient,
    event: &str,
    within: Duration,
    matches: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = next_frame(socket, left).await?;
        if frame["event"] == event && matches(&frame["data"]) {
            return Some(frame);
        }
    }
}

pub async fn send_frame(socket: &mut WsClient, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .expect("frame sent");
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
    }
}

pub fn user_from(body: &Value) -> TestUser {
    TestUser {
        id: body["user"]["id"].as_i64().expect("user id"),
        email: body["user"]["email"].as_str().expect("email").to_owned(),
        token: body["accessToken"]
            .as_str()
            .expect("access token")
            .to_owned(),
        refresh_token: body["refreshToken"]
            .as_str()
            .expect("refresh token")
            .to_owned(),
    }
}

/// Polls `check` until it returns `Some`, or gives up after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A binary of this workspace, built beside the test executable (`cargo nextest run
/// --workspace` builds `api` and `worker`, whose own tests need them).
pub fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    // Test executables live in target/<profile>/deps, binaries in target/<profile>.
    let found = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!(
            "{name} is missing beside {}: run `cargo build --workspace --bins` (with --release for benchmarks) first",
            exe.display()
        )
    })
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Reads frames until a `stock_update` of the drop shows `available` units; `false` if none
/// did `within`.
pub async fn wait_for_stock(
    socket: &mut WsClient,
    drop_id: i64,
    available: i64,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, socket.next()).await {
        let Message::Text(text) = message else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).unwrap_or_default();
        if frame["event"] == "stock_update"
            && frame["data"]["dropId"] == drop_id
            && frame["data"]["availableStock"] == available
        {
            return true;
        }
    }
    false
}
