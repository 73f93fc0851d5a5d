//! Faults injected into the distributed store, run as an operator runs it: real `api` and
//! `worker` binaries, real Postgres, and a Redis server each test starts on a free port so
//! it can flush, kill and restart it. After every fault the invariants are checked: holds
//! that fall due are expired and announced, no worker gives up, and for every drop
//! `available + active holds + sold = total`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use entity::accounts::Role;
use futures::StreamExt;
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, Database, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use tests::{
    TestUser, free_port, fresh_postgres_database, mint_user,
    process::{Process, RedisServer, wait_ready},
};
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

const JWT_SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
/// Holds last this long in these tests.
const TTL_SECS: i64 = 2;
/// Every hold that falls due is expired within this of its `expiresAt` while a worker runs.
const EXPIRY_BOUND: chrono::Duration = chrono::Duration::seconds(2);

/// One api (and its URL) and some workers against a fresh database and the given Redis.
struct Store {
    base: String,
    env: HashMap<&'static str, String>,
    api: Process,
    workers: Vec<Process>,
    db: DatabaseConnection,
    jwt: api::auth::Jwt,
    admin: TestUser,
    /// Last: dropped after the processes are killed.
    _database: Option<tests::TestDatabase>,
}

impl Store {
    async fn start(redis_url: Option<String>, workers: usize) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("dir").keep();
        let mut env = HashMap::from([
            ("PORT", port.to_string()),
            ("DATA_DIR", dir.display().to_string()),
            ("JWT_ACCESS_SECRET", JWT_SECRET.to_owned()),
            ("RESERVATION_TTL_SECS", TTL_SECS.to_string()),
            ("DATABASE_MAX_CONNECTIONS", "4".to_owned()),
            ("DEMO_DATA", "false".to_owned()),
        ]);
        let mut database = None;
        if let Some(url) = redis_url {
            let fresh = fresh_postgres_database().await;
            env.insert("DATABASE_URL", fresh.url().to_owned());
            env.insert("REDIS_URL", url);
            env.insert("MAIL_TRANSPORT", "outbox".to_owned());
            database = Some(fresh);
        } else {
            let file = dir.join("chaos.db");
            env.insert(
                "DATABASE_URL",
                format!("sqlite://{}?mode=rwc", file.display()),
            );
        }
        let base = format!("http://127.0.0.1:{port}");
        let api = Process::start("api", &env, false);
        wait_ready(&base).await;
        let workers = (0..workers)
            .map(|_| Process::start("worker", &env, false))
            .collect();
        let db = Database::connect(env["DATABASE_URL"].as_str())
            .await
            .expect("test connects to the store's database");
        let jwt = api::auth::Jwt::new(JWT_SECRET, Duration::from_secs(3600));
        let admin = mint_user(&db, &jwt, "ops", Role::Admin).await;
        Self {
            base,
            env,
            api,
            workers,
            db,
            jwt,
            admin,
            _database: database,
        }
    }

    async fn create_drop(&self, stock: i32) -> i64 {
        let created: Value = reqwest::Client::new()
            .post(format!("{}/api/admin/drops", self.base))
            .bearer_auth(&self.admin.token)
            .json(&json!({"name": "Chaos drop", "priceCents": 1000, "totalStock": stock}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        created["id"].as_i64().expect("drop id")
    }

    /// `count` new buyers each take one hold; returns the holds' due times.
    async fn take_holds(&self, drop_id: i64, count: usize) -> Vec<DateTime<Utc>> {
        let client = reqwest::Client::new();
        let mut due = Vec::new();
        for _ in 0..count {
            let name = format!("b{}", uuid::Uuid::new_v4().simple());
            let buyer = mint_user(&self.db, &self.jwt, &name, Role::Customer).await;
            let hold: Value = client
                .post(format!("{}/api/drops/{drop_id}/reserve", self.base))
                .bearer_auth(&buyer.token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let expires_at = hold["expiresAt"].as_str().expect("a hold");
            due.push(expires_at.parse().expect("a date-time"));
        }
        due
    }

    /// Waits until the drop has no active hold, then checks each ended within
    /// [`EXPIRY_BOUND`] of its due time and the invariant holds.
    async fn assert_holds_expired_in_time(&self, drop_id: i64) {
        use entity::models::reservations::{Column, Entity, ReservationStatus};
        let holds = tests::eventually(Duration::from_secs(15), || async {
            let holds = Entity::find()
                .filter(Column::DropId.eq(drop_id))
                .all(&self.db)
                .await
                .unwrap();
            holds
                .iter()
                .all(|h| h.status != ReservationStatus::Active)
                .then_some(holds)
        })
        .await
        .expect("every hold of the drop ended");
        for hold in holds {
            let ended = hold.ended_at.expect("an ended hold has its end");
            assert!(
                ended - hold.expires_at <= EXPIRY_BOUND,
                "hold {} expired {} ms after it was due",
                hold.id,
                (ended - hold.expires_at).num_milliseconds()
            );
        }
        let audit = entity::drops::audit(&self.db, drop_id).await.unwrap();
        assert!(audit.holds(), "invariant broken: {audit:?}");
    }

    fn assert_workers_running(&mut self) {
        for worker in &mut self.workers {
            assert_eq!(
                worker.exited(),
                None,
                "a worker gave up while the store runs"
            );
        }
    }

    async fn websocket(&self) -> tests::WsClient {
        let url = self.base.replace("http://", "ws://") + "/ws";
        let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
        socket
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_ride_out_a_redis_flush_a_restart_and_a_killed_peer() {
    let mut redis = RedisServer::start().await;
    let mut store = Store::start(Some(redis.url()), 2).await;
    let drop_id = store.create_drop(30).await;
    let mut socket = store.websocket().await;

    // A flush while holds run, and one of the two workers killed outright.
    store.take_holds(drop_id, 10).await;
    redis.flush().await;
    store.workers.remove(0).kill_hard();
    store.assert_holds_expired_in_time(drop_id).await;
    assert!(
        tests::wait_for_stock(&mut socket, drop_id, 30, Duration::from_secs(10)).await,
        "clients never heard the units come back after the flush"
    );
    store.assert_workers_running();

    // Redis down for a second while holds run, then back.
    store.take_holds(drop_id, 10).await;
    redis.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart().await;
    store.assert_holds_expired_in_time(drop_id).await;
    assert!(
        tests::wait_for_stock(&mut socket, drop_id, 30, Duration::from_secs(10)).await,
        "clients never heard the units come back after the restart"
    );
    store.assert_workers_running();

    // The job tier answers again: a job round trip through the new Redis.
    let client = reqwest::Client::new();
    let pinged = tests::eventually(Duration::from_secs(20), || async {
        let answer = client
            .post(format!("{}/api/admin/worker-ping", store.base))
            .bearer_auth(&store.admin.token)
            .send()
            .await
            .ok()?;
        (answer.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert!(pinged.is_some(), "no worker runs jobs after the restart");
    store.assert_workers_running();
    let worker = store.workers.remove(0);
    assert!(worker.terminate().await.success(), "SIGTERM still exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_readiness_answers_fast_and_sign_in_still_works() {
    let mut redis = RedisServer::start().await;
    let store = Store::start(Some(redis.url()), 0).await;
    let client = reqwest::Client::new();
    let password = "a fine password";
    let signup = client
        .post(format!("{}/api/auth/signup", store.base))
        .json(&json!({"email": "ann@example.com", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), StatusCode::CREATED);

    redis.stop();
    let started = std::time::Instant::now();
    let ready = client
        .get(format!("{}/readyz", store.base))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The checks give up after 800 ms; the rest is slack for a loaded machine.
    assert!(
        waited < Duration::from_millis(1500),
        "/readyz took {waited:?}"
    );
    let login = client
        .post(format!("{}/api/auth/login", store.base))
        .json(&json!({"email": "ann@example.com", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        login.status(),
        StatusCode::OK,
        "sign-in needs only Postgres"
    );

    redis.restart().await;
    wait_ready(&store.base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_says_going_away_to_every_open_websocket() {
    let store = Store::start(None, 0).await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut socket = store.websocket().await;
        let snapshot = socket.next().await.expect("a frame").expect("snapshot");
        assert!(snapshot.to_text().unwrap_or_default().contains("snapshot"));
        sockets.push(socket);
    }

    let Store { api, .. } = store;
    let stopping = tokio::spawn(api.terminate());
    let closes = sockets.into_iter().map(|mut socket| async move {
        let close = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Close(frame) = message {
                    return frame.map(|f| f.code);
                }
            }
            None
        });
        close.await.expect("a close frame within 10 s")
    });
    let codes = futures::future::join_all(closes).await;
    assert_eq!(codes, vec![Some(CloseCode::Away); 3]);
    assert!(stopping.await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_killed_mid_stampede_leaves_every_drop_consistent() {
    let redis = RedisServer::start().await;
    let store = Store::start(Some(redis.url()), 1).await;
    let second_port = free_port();
    let mut env = store.env.clone();
    env.insert("PORT", second_port.to_string());
    let second_base = format!("http://127.0.0.1:{second_port}");
    let second = Process::start("api", &env, false);
    wait_ready(&second_base).await;
    let drop_id = store.create_drop(40).await;

    let mut buyers = Vec::new();
    for i in 0..80 {
        let buyer = mint_user(&store.db, &store.jwt, &format!("s{i}"), Role::Customer).await;
        let base = if i % 2 == 0 {
            &store.base
        } else {
            &second_base
        };
        buyers.push((base.clone(), buyer.token));
    }
    let client = reqwest::Client::new();
    let reserves = buyers.into_iter().map(|(base, token)| {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .post(format!("{base}/api/drops/{drop_id}/reserve"))
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status())
        })
    });
    let reserves: Vec<_> = reserves.collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    second.kill_hard();
    let mut answered = 0;
    for reserve in reserves {
        if let Ok(status) = reserve.await.unwrap() {
            assert!(!status.is_server_error(), "a 5xx from the surviving api");
            answered += 1;
        }
    }
    assert!(
        answered >= 40,
        "the surviving api answered {answered} of its 40"
    );
    let audit = entity::drops::audit(&store.db, drop_id).await.unwrap();
    assert!(audit.holds(), "invariant broken: {audit:?}");
    store.assert_holds_expired_in_time(drop_id).await;
}

/// What finished and pending jobs occupy in Redis under `prefix`: every task's payload,
/// metadata and list entries (the workers' own registrations and rate limits aside).
async fn job_footprint(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> usize {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(conn)
        .await
        .unwrap();
    let mut footprint = 0;
    for key in keys {
        if key.contains(":limit:") || key.contains(":workers") || key.ends_with(":events") {
            continue;
        }
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        let size_command = match kind.as_str() {
            "hash" => "HLEN",
            "set" => "SCARD",
            "zset" => "ZCARD",
            "list" => "LLEN",
            _ => {
                footprint += 1;
                continue;
            }
        };
        let size: usize = redis::cmd(size_command)
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        footprint += size;
    }
    footprint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_leave_nothing_behind_in_redis() {
    let app = tests::spawn_app(tests::Backend::PostgresRedis).await;
    let prefix = app.vars["REDIS_PREFIX"].clone();
    let mut conn = redis::Client::open(tests::test_redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let admin = app.admin().await;

    for _ in 0..20 {
        let ping = app
            .post("/api/admin/worker-ping", Some(&admin.token), json!({}))
            .await;
        assert_eq!(ping.status, StatusCode::OK, "{:?}", ping.body);
    }
    // The vacuum runs every 10 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut footprint = job_footprint(&mut conn, &prefix).await;
    while footprint > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        footprint = job_footprint(&mut conn, &prefix).await;
    }
    assert_eq!(footprint, 0, "finished jobs still occupy entries in Redis");
}
