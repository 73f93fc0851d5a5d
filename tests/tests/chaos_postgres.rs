//! Postgres faults in the distributed store, run as an operator runs it: two `api` and two
//! `worker` binaries against a Postgres cluster and a Redis server of the test's own, which
//! the test crashes, restarts, cuts off and fills while buyers stampede a drop. After each
//! fault: every hold answered 201 exists, only 201, 409 or 503 was answered (503 with a
//! stable code and `Retry-After`, never a hang), every process is up and serving within a
//! second of Postgres accepting connections again, every hold ends in time and the sockets
//! of both instances see the stock come back, and `available + active holds + sold = total`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use entity::accounts::Role;
use futures::StreamExt;
use reqwest::StatusCode;
use sea_orm::{
    ColumnTrait, Database, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    sqlx::{self, Connection, Executor},
};
use serde_json::{Value, json};
use tests::{
    TestUser, WsClient, eventually, free_port, mint_user,
    process::{PostgresServer, Process, RedisServer, StopMode},
    wait_for_frame,
};
use tokio::{sync::oneshot, task::JoinHandle};

const JWT_SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
/// Holds last this long in these tests.
const TTL_SECS: i64 = 2;
/// `DATABASE_ACQUIRE_TIMEOUT_MS` of the store under test.
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Once Postgres accepts connections again, every api answers ready and takes a hold
/// within this.
const BACK_WITHIN: Duration = Duration::from_secs(1);
/// `/readyz` says "not ready" within this of Postgres going away.
const NOT_READY_WITHIN: Duration = Duration::from_secs(1);
/// Every answer, a 503 included, comes within this: the acquire timeout, and slack for a
/// machine busy with the stampede itself.
const ANSWER_WITHIN: Duration = Duration::from_millis(2500);
/// A hold ends within this of its `expiresAt`, or of Postgres's return when it fell due
/// while Postgres was away.
const EXPIRY_BOUND: chrono::Duration = chrono::Duration::milliseconds(1500);

/// Two apis and two workers against a Postgres and a Redis of their own.
struct Store {
    pg: PostgresServer,
    redis: RedisServer,
    apis: Vec<(String, Process)>,
    workers: Vec<Process>,
    db: DatabaseConnection,
    jwt: api::auth::Jwt,
    admin: TestUser,
    /// The processes' logs, kept for a failing run.
    logs: PathBuf,
    client: reqwest::Client,
}

/// One buyer's answer, as the stampede saw it.
#[derive(Debug)]
struct Answer {
    status: Option<StatusCode>,
    code: String,
    hold: Option<i64>,
    retry_after: bool,
    took: Duration,
}

impl Store {
    async fn start(max_connections: u32) -> Self {
        Self::start_with(max_connections, &[]).await
    }

    async fn start_with(max_connections: u32, extra: &[(&'static str, String)]) -> Self {
        let pg = PostgresServer::start(max_connections).await;
        let redis = RedisServer::start().await;
        let logs = tempfile::tempdir().expect("dir").keep();
        let mut env = HashMap::from([
            ("DATA_DIR", logs.display().to_string()),
            ("JWT_ACCESS_SECRET", JWT_SECRET.to_owned()),
            ("RESERVATION_TTL_SECS", TTL_SECS.to_string()),
            ("DATABASE_URL", pg.url()),
            ("DATABASE_MAX_CONNECTIONS", "4".to_owned()),
            (
                "DATABASE_ACQUIRE_TIMEOUT_MS",
                ACQUIRE_TIMEOUT.as_millis().to_string(),
            ),
            ("REDIS_URL", redis.url()),
            ("DEMO_DATA", "false".to_owned()),
        ]);
        if !extra.iter().any(|(name, _)| *name == "SMTP_URL") {
            // Mail is not what these tests look at: recorded, not sent.
            env.insert("MAIL_TRANSPORT", "outbox".to_owned());
        }
        env.extend(extra.iter().cloned());
        let mut apis = Vec::new();
        for n in 0..2 {
            let port = free_port();
            let mut env = env.clone();
            env.insert("PORT", port.to_string());
            let log = logs.join(format!("api-{n}.log"));
            let base = format!("http://127.0.0.1:{port}");
            // One at a time: the first applies the migrations.
            let api = Process::start_logging_to("api", &env, &log);
            tests::process::wait_ready(&base).await;
            apis.push((base, api));
        }
        let workers = (0..2)
            .map(|n| {
                Process::start_logging_to("worker", &env, &logs.join(format!("worker-{n}.log")))
            })
            .collect();
        let db = Database::connect(pg.url())
            .await
            .expect("test connects to its Postgres");
        let jwt = api::auth::Jwt::new(JWT_SECRET, Duration::from_secs(3600));
        let admin = mint_user(&db, &jwt, "ops", Role::Admin).await;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        Self {
            pg,
            redis,
            apis,
            workers,
            db,
            jwt,
            admin,
            logs,
            client,
        }
    }

    fn bases(&self) -> Vec<String> {
        self.apis.iter().map(|(base, _)| base.clone()).collect()
    }

    async fn create_drop(&self, stock: i32) -> i64 {
        let created: Value = self
            .client
            .post(format!("{}/api/admin/drops", self.apis[0].0))
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

    async fn buyers(&self, count: usize) -> Vec<TestUser> {
        let run = uuid::Uuid::new_v4().simple().to_string();
        futures::stream::iter(0..count)
            .map(|i| {
                let name = format!("b{i}x{}", &run[..8]);
                async move { mint_user(&self.db, &self.jwt, &name, Role::Customer).await }
            })
            .buffer_unordered(8)
            .collect()
            .await
    }

    /// Each buyer reserves once, spread evenly over `over`, alternately on each api.
    fn stampede(
        &self,
        drop_id: i64,
        buyers: Vec<TestUser>,
        over: Duration,
    ) -> tokio::task::JoinHandle<Vec<Answer>> {
        let bases = self.bases();
        let client = self.client.clone();
        let gap = over / u32::try_from(buyers.len().max(1)).unwrap();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let reserves: Vec<_> = buyers
                .into_iter()
                .enumerate()
                .map(|(i, buyer)| {
                    let url = format!("{}/api/drops/{drop_id}/reserve", bases[i % bases.len()]);
                    let client = client.clone();
                    let at = started + gap * u32::try_from(i).unwrap();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(at).await;
                        reserve(&client, &url, &buyer.token).await
                    })
                })
                .collect();
            let mut answers = Vec::new();
            for reserve in reserves {
                answers.push(reserve.await.unwrap());
            }
            answers
        })
    }

    /// How long after `since` both apis answered `/readyz` 200 (asked together).
    async fn ready_after(&self, since: Instant) -> Duration {
        let checks = self.bases().into_iter().map(|base| async move {
            let ready = eventually(Duration::from_secs(20), || async {
                let answer = self
                    .client
                    .get(format!("{base}/readyz"))
                    .send()
                    .await
                    .ok()?;
                (answer.status() == StatusCode::OK).then_some(())
            });
            assert!(ready.await.is_some(), "{base} never became ready again");
        });
        futures::future::join_all(checks).await;
        since.elapsed()
    }

    /// How long after `since` both apis had answered `/readyz` 503 (asked together).
    async fn not_ready_after(&self, since: Instant) -> Duration {
        let checks = self.bases().into_iter().map(|base| async move {
            let not_ready = eventually(Duration::from_secs(10), || async {
                let answer = self
                    .client
                    .get(format!("{base}/readyz"))
                    .send()
                    .await
                    .ok()?;
                (answer.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
            });
            assert!(not_ready.await.is_some(), "{base} kept saying it is ready");
        });
        futures::future::join_all(checks).await;
        since.elapsed()
    }

    /// How long after `since` each api had taken a hold for one of `probes` (one per api) on
    /// `drop_id`, asking again after every 503.
    async fn served_after(&self, since: Instant, drop_id: i64, probes: &[TestUser]) -> Duration {
        let tries = self
            .bases()
            .into_iter()
            .zip(probes)
            .map(|(base, probe)| async move {
                let url = format!("{base}/api/drops/{drop_id}/reserve");
                loop {
                    let answer = reserve(&self.client, &url, &probe.token).await;
                    match answer.status {
                        Some(StatusCode::CREATED) => return,
                        Some(StatusCode::SERVICE_UNAVAILABLE) => {}
                        _ => panic!("a probe reserve on {base} answered {answer:?}"),
                    }
                    assert!(
                        since.elapsed() < Duration::from_secs(20),
                        "{base} never took a hold again"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        futures::future::join_all(tries).await;
        since.elapsed()
    }

    /// `/healthz` and the drop listing (the last one loaded) answer 200, within the acquire
    /// timeout at worst (the first read after the outage began waits to learn of it); what
    /// did not, otherwise.
    async fn served_without_the_database(&self) -> Vec<String> {
        let mut failed = Vec::new();
        for base in self.bases() {
            for path in ["/healthz", "/api/drops"] {
                let sent = Instant::now();
                let status = self
                    .client
                    .get(format!("{base}{path}"))
                    .send()
                    .await
                    .map(|r| r.status());
                let took = sent.elapsed();
                if !matches!(status, Ok(StatusCode::OK)) || took > ANSWER_WITHIN {
                    failed.push(format!("{base}{path} answered {status:?} in {took:?}"));
                }
            }
        }
        failed
    }

    /// How long after `since` no hold of the drop due at `due` was active any more: the
    /// workers' sweep has run.
    async fn overdue_ended_after(
        &self,
        since: Instant,
        drop_id: i64,
        due: DateTime<Utc>,
    ) -> Duration {
        use entity::models::reservations::{Column, Entity, ReservationStatus};
        let ended = eventually(Duration::from_secs(20), || async {
            let overdue = Entity::find()
                .filter(Column::DropId.eq(drop_id))
                .filter(Column::Status.eq(ReservationStatus::Active))
                .filter(Column::ExpiresAt.lte(due))
                .count(&self.db)
                .await
                .ok()?;
            (overdue == 0).then_some(())
        });
        assert!(
            ended.await.is_some(),
            "holds due while Postgres was away were never ended"
        );
        since.elapsed()
    }

    fn assert_every_process_up(&mut self) {
        for (base, api) in &mut self.apis {
            assert_eq!(api.exited(), None, "api {base} exited");
        }
        for worker in &mut self.workers {
            assert_eq!(
                worker.exited(),
                None,
                "a worker exited; logs in {}",
                self.logs.display()
            );
        }
    }

    /// Waits until the drop has no active hold, then checks each ended within
    /// [`EXPIRY_BOUND`] of its due time (or of `back`, when it fell due before) and the
    /// invariant holds.
    async fn assert_holds_ended_in_time(&self, drop_id: i64, back: DateTime<Utc>) {
        use entity::models::reservations::{Column, Entity, ReservationStatus};
        let holds = eventually(Duration::from_secs(20), || async {
            let holds = Entity::find()
                .filter(Column::DropId.eq(drop_id))
                .all(&self.db)
                .await
                .ok()?;
            holds
                .iter()
                .all(|h| h.status != ReservationStatus::Active)
                .then_some(holds)
        })
        .await
        .expect("every hold of the drop ended");
        let mut latest = chrono::Duration::zero();
        for hold in holds {
            let ended = hold.ended_at.expect("an ended hold has its end");
            let due = hold.expires_at.max(back);
            latest = latest.max(ended - due);
            assert!(
                ended - due <= EXPIRY_BOUND,
                "hold {} (due {}) ended {} ms after {due}; logs in {}",
                hold.id,
                hold.expires_at,
                (ended - due).num_milliseconds(),
                self.logs.display()
            );
        }
        eprintln!("latest hold end after it was due (or Postgres was back): {latest}");
        let audit = entity::drops::audit(&self.db, drop_id).await.unwrap();
        assert!(audit.holds(), "invariant broken: {audit:?}");
    }

    /// Holds answered 201 that are not in the database: (gone, answered).
    async fn missing_holds(&self, answers: &[Answer]) -> (u64, u64) {
        use entity::models::reservations::{Column, Entity};
        let held: Vec<i64> = answers.iter().filter_map(|a| a.hold).collect();
        let found = Entity::find()
            .filter(Column::Id.is_in(held.clone()))
            .count(&self.db)
            .await
            .unwrap();
        (held.len() as u64 - found, held.len() as u64)
    }

    async fn assert_every_hold_exists(&self, answers: &[Answer]) {
        let (gone, answered) = self.missing_holds(answers).await;
        assert_eq!(gone, 0, "{gone} of {answered} holds answered 201 are gone");
    }

    /// Watches the job queues in Redis until `stop` fires and returns every task recorded
    /// as failed: a job that met the database away must go back on its queue as a new task,
    /// not count a failed attempt (apalis-redis dead-letters a job after 25).
    fn watch_failed_jobs(&self) -> (oneshot::Sender<()>, JoinHandle<HashSet<String>>) {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let url = self.redis.url();
        let watch = tokio::spawn(async move {
            let mut conn = redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let mut failed = HashSet::new();
            loop {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg("*:meta:*")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                for key in keys {
                    let status: Option<String> = redis::cmd("HGET")
                        .arg(&key)
                        .arg("status")
                        .query_async(&mut conn)
                        .await
                        .unwrap_or(None);
                    if status.as_deref() == Some("Failed") {
                        failed.insert(key);
                    }
                }
                tokio::select! {
                    _ = &mut stopped => return failed,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        });
        (stop, watch)
    }

    async fn websockets(&self) -> Vec<WsClient> {
        let mut sockets = Vec::new();
        for base in self.bases() {
            let url = base.replace("http://", "ws://") + "/ws";
            let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
            sockets.push(socket);
        }
        sockets
    }

    /// Ends every connection to Postgres but the one asking.
    async fn terminate_every_backend(&self) -> u64 {
        let mut admin = sqlx::PgConnection::connect(&self.pg.url()).await.unwrap();
        let killed = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend') AS t",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        u64::try_from(killed).unwrap()
    }
}

async fn reserve(client: &reqwest::Client, url: &str, token: &str) -> Answer {
    let sent = Instant::now();
    let Ok(response) = client.post(url).bearer_auth(token).send().await else {
        return Answer {
            status: None,
            code: "no answer".into(),
            hold: None,
            retry_after: false,
            took: sent.elapsed(),
        };
    };
    let status = response.status();
    let retry_after = response.headers().contains_key("retry-after");
    let body: Value = response.json().await.unwrap_or_default();
    Answer {
        status: Some(status),
        code: body["code"].as_str().unwrap_or_default().to_owned(),
        hold: (status == StatusCode::CREATED).then(|| body["id"].as_i64().expect("hold id")),
        retry_after,
        took: sent.elapsed(),
    }
}

/// Only 201, 409 (sold out, already reserved) or 503 with a stable code and `Retry-After`,
/// each within [`ANSWER_WITHIN`]; returns how many of each.
fn assert_clean_answers(answers: &[Answer]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for answer in answers {
        let key = format!(
            "{} {}",
            answer.status.map_or(0, |s| s.as_u16()),
            answer.code
        );
        *counts.entry(key).or_insert(0) += 1;
    }
    eprintln!("answers: {counts:?}");
    for answer in answers {
        match answer.status {
            Some(StatusCode::CREATED | StatusCode::CONFLICT) => {}
            Some(StatusCode::SERVICE_UNAVAILABLE) => {
                assert!(
                    matches!(answer.code.as_str(), "database_unavailable" | "overloaded"),
                    "a 503 with code {:?}",
                    answer.code
                );
                assert!(answer.retry_after, "a 503 without Retry-After");
            }
            _ => panic!("a buyer got {answer:?}; every answer: {counts:?}"),
        }
        assert!(
            answer.took <= ANSWER_WITHIN,
            "an answer took {:?}: {answer:?}",
            answer.took
        );
    }
    let slowest = answers.iter().map(|a| a.took).max().unwrap_or_default();
    eprintln!("slowest answer: {slowest:?}");
    counts
}

/// Reads frames until a `stock_update` of the drop shows `available` units; the last
/// `stock_update` of the drop it saw otherwise.
async fn sees_stock(socket: &mut WsClient, drop_id: i64, available: i64) -> Result<(), Value> {
    let mut last = Value::Null;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(frame) = wait_for_frame(socket, "stock_update", left, |data| {
            data["dropId"] == drop_id
        })
        .await
        else {
            return Err(last);
        };
        if frame["data"]["availableStock"] == available {
            return Ok(());
        }
        last = frame;
    }
}

/// Holds taken before the crash, holds taken and refused during it, holds taken after: a
/// crash (`pg_ctl stop -m immediate`) mid-stampede forgets none that was answered 201.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_mid_stampede_forgets_no_hold_and_every_process_is_back_within_a_second() {
    let mut store = Store::start(60).await;
    let stock = 100;
    let drop_id = store.create_drop(stock).await;
    let probe_drop = store.create_drop(10).await;
    let mut sockets = store.websockets().await;
    let buyers = store.buyers(300).await;
    let probes = store.buyers(2).await;
    for base in store.bases() {
        let listing = store
            .client
            .get(format!("{base}/api/drops"))
            .send()
            .await
            .unwrap();
        assert_eq!(listing.status(), StatusCode::OK);
    }

    let (stop_watching, failed_jobs) = store.watch_failed_jobs();
    let stampede = store.stampede(drop_id, buyers, Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    store.pg.stop(StopMode::Immediate).await;
    let down = Instant::now();
    let not_ready = store.not_ready_after(down).await;
    let offline = store.served_without_the_database().await;
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(down.elapsed())).await;
    store.pg.restart().await;
    let (back, back_at) = (Instant::now(), Utc::now());
    let (ready, served, swept) = tokio::join!(
        store.ready_after(back),
        store.served_after(back, probe_drop, &probes),
        store.overdue_ended_after(back, drop_id, back_at),
    );
    eprintln!(
        "not ready {not_ready:?} after the crash; ready {ready:?}, taking holds {served:?} and holds due meanwhile ended {swept:?} after Postgres was back"
    );
    let answers = stampede.await.unwrap();
    let (gone, answered) = store.missing_holds(&answers).await;
    eprintln!(
        "{gone} of {answered} holds answered 201 are gone; without the database: {offline:?}"
    );

    assert_eq!(gone, 0, "{gone} of {answered} holds answered 201 are gone");
    assert!(answered > 0, "no hold was taken at all");
    assert_clean_answers(&answers);
    assert!(
        offline.is_empty(),
        "not served without the database: {offline:?}"
    );
    assert!(
        not_ready <= NOT_READY_WITHIN,
        "/readyz took {not_ready:?} to say not ready"
    );
    assert!(
        ready <= BACK_WITHIN,
        "ready only {ready:?} after Postgres was back"
    );
    assert!(
        served <= BACK_WITHIN,
        "holds taken only {served:?} after Postgres was back"
    );
    assert!(
        swept <= BACK_WITHIN,
        "holds due meanwhile ended only {swept:?} after Postgres was back"
    );
    store.assert_every_process_up();
    store.assert_holds_ended_in_time(drop_id, back_at).await;
    let _ = stop_watching.send(());
    let failed_jobs = failed_jobs.await.unwrap();
    assert!(
        failed_jobs.is_empty(),
        "jobs counted a failed attempt for the outage: {failed_jobs:?}"
    );
    for socket in &mut sockets {
        let seen = sees_stock(socket, drop_id, i64::from(stock)).await;
        assert!(
            seen.is_ok(),
            "a socket never saw every unit come back; last: {seen:?}"
        );
    }
    store.assert_every_process_up();
}

/// Every server connection killed (`pg_terminate_backend`) again and again mid-stampede:
/// what was in flight answers 503, the pools find their dead connections before using
/// them, and both apis take holds again within a second of the last kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_killed_mid_stampede_answers_503_and_reconnects_within_a_second() {
    let mut store = Store::start(60).await;
    let stock = 100;
    let drop_id = store.create_drop(stock).await;
    let probe_drop = store.create_drop(10).await;
    let mut sockets = store.websockets().await;
    let buyers = store.buyers(300).await;
    let probes = store.buyers(2).await;

    let stampede = store.stampede(drop_id, buyers, Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut killed = Vec::new();
    for _ in 0..20 {
        killed.push(store.terminate_every_backend().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (last_kill, last_kill_at) = (Instant::now(), Utc::now());
    let (ready, served) = tokio::join!(
        store.ready_after(last_kill),
        store.served_after(last_kill, probe_drop, &probes)
    );
    eprintln!(
        "killed {killed:?} connections; ready {ready:?} and taking holds {served:?} after the last kill"
    );
    let answers = stampede.await.unwrap();

    assert!(
        killed.iter().sum::<u64>() > 100,
        "too few connections to kill: {killed:?}"
    );
    assert_clean_answers(&answers);
    store.assert_every_hold_exists(&answers).await;
    assert!(
        ready <= BACK_WITHIN,
        "ready only {ready:?} after the last kill"
    );
    assert!(
        served <= BACK_WITHIN,
        "holds taken only {served:?} after the last kill"
    );
    store.assert_every_process_up();
    store
        .assert_holds_ended_in_time(drop_id, last_kill_at)
        .await;
    for socket in &mut sockets {
        let seen = sees_stock(socket, drop_id, i64::from(stock)).await;
        assert!(
            seen.is_ok(),
            "a socket never saw every unit come back; last: {seen:?}"
        );
    }
}

/// Another client holds every connection Postgres allows: the store answers 503 (not 500)
/// within its acquire timeout, says it is not ready, keeps serving what needs no database,
/// and serves again within a second of the connections coming free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_postgres_connection_taken_requests_get_503_and_are_served_once_one_frees() {
    const MAX_CONNECTIONS: u32 = 40;
    let mut store = Store::start(MAX_CONNECTIONS).await;
    let drop_id = store.create_drop(10).await;
    let probes = store.buyers(4).await;

    // The store's connections die while it is paused, and the hog takes every slot first.
    for (_, api) in &store.apis {
        api.pause();
    }
    for worker in &store.workers {
        worker.pause();
    }
    store.terminate_every_backend().await;
    let mut hog = Vec::new();
    loop {
        match sqlx::PgConnection::connect(&store.pg.url()).await {
            Ok(mut connection) => {
                connection.execute("SELECT 1").await.unwrap();
                hog.push(connection);
            }
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("53300") => break,
            Err(e) => panic!("the hog could not connect: {e}"),
        }
        assert!(
            hog.len() <= MAX_CONNECTIONS as usize,
            "Postgres never said too many clients"
        );
    }
    for (_, api) in &store.apis {
        api.resume();
    }
    for worker in &store.workers {
        worker.resume();
    }

    let bases = store.bases();
    for (base, probe) in bases.iter().zip(&probes) {
        let url = format!("{base}/api/drops/{drop_id}/reserve");
        let answer = reserve(&store.client, &url, &probe.token).await;
        assert_eq!(
            answer.status,
            Some(StatusCode::SERVICE_UNAVAILABLE),
            "{answer:?}"
        );
        assert!(answer.retry_after, "{answer:?}");
        assert!(answer.took <= ANSWER_WITHIN, "{answer:?}");
        eprintln!("with every connection taken, {base} answered {answer:?}");
        let health = store
            .client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            health.status(),
            StatusCode::OK,
            "/healthz needs no database"
        );
    }
    let not_ready = store.not_ready_after(Instant::now()).await;
    assert!(not_ready <= NOT_READY_WITHIN, "/readyz took {not_ready:?}");

    let freed = Instant::now();
    for connection in hog {
        let _ = connection.close().await;
    }
    let (ready, served) = tokio::join!(
        store.ready_after(freed),
        store.served_after(freed, drop_id, &probes[2..])
    );
    eprintln!("ready {ready:?} and taking holds {served:?} after the connections came free");
    assert!(
        ready <= BACK_WITHIN,
        "ready only {ready:?} after connections came free"
    );
    assert!(
        served <= BACK_WITHIN,
        "holds taken only {served:?} after connections came free"
    );
    store.assert_every_process_up();
    let audit = entity::drops::audit(&store.db, drop_id).await.unwrap();
    assert!(audit.holds(), "invariant broken: {audit:?}");
}

/// Postgres crashes while a restock alert goes out to 200 subscribers through two workers'
/// mail pumps and is back two seconds later: every subscriber is alerted, the sends made
/// meanwhile are recorded within a second of Postgres's return, and no one gets a third
/// copy. A second copy needs a second claim of the row, counted in its attempts: a send the
/// server took but whose outcome was not recorded as sent (the mark lost past its lease,
/// counted as a lapsed claim, or an SMTP answer that came too late).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_mid_restock_fan_out_alerts_every_subscriber_and_counts_any_second_copy() {
    use entity::{
        catalog::SubscriptionStatus,
        mail::MessageStatus,
        models::{email_messages, subscriptions},
    };
    use sea_orm::ActiveValue::Set;
    const SUBSCRIBERS: usize = 200;
    let smtp = common::SmtpServer::start(common::Smtp::Accepting).await;
    let mut store = Store::start_with(
        60,
        &[
            ("SMTP_URL", smtp.url()),
            // 20 a second per worker: the crash lands mid fan-out.
            ("MAIL_RATE_PER_SEC", "20".to_owned()),
            ("MAIL_RETRY_BASE_MS", "200".to_owned()),
            // Longer than the outage: a send made meanwhile is recorded before its lease
            // ends, and a loaded machine's slow SMTP answers (a send waits half the lease)
            // are not taken for failures.
            ("MAIL_LEASE_SECS", "10".to_owned()),
        ],
    )
    .await;
    let product: Value = store
        .client
        .post(format!("{}/api/admin/products", store.apis[0].0))
        .bearer_auth(&store.admin.token)
        .json(&json!({"name": "Heather Honey", "priceCents": 1250, "inStock": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product_id = product["id"].as_i64().expect("product id");
    let now = Utc::now();
    let hash = || entity::tokens::hash(&entity::tokens::generate());
    let rows = (0..SUBSCRIBERS).map(|n| subscriptions::ActiveModel {
        product_id: Set(product_id),
        email: Set(format!("subscriber{n}@example.com")),
        status: Set(SubscriptionStatus::Confirmed),
        confirm_token_hash: Set(hash()),
        unsubscribe_token_hash: Set(hash()),
        confirmed_at: Set(Some(now)),
        created_at: Set(now),
        ..Default::default()
    });
    subscriptions::Entity::insert_many(rows)
        .exec_without_returning(&store.db)
        .await
        .unwrap();

    let restocked = store
        .client
        .patch(format!(
            "{}/api/admin/products/{product_id}",
            store.apis[0].0
        ))
        .bearer_auth(&store.admin.token)
        .json(&json!({"inStock": true}))
        .send()
        .await
        .unwrap();
    assert!(restocked.status().is_success());
    let started = eventually(Duration::from_secs(20), || async {
        (smtp.messages().len() >= 30).then_some(())
    });
    assert!(started.await.is_some(), "the fan-out started");
    store.pg.stop(StopMode::Immediate).await;
    let sent_before = smtp.messages().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    store.pg.restart().await;
    let (back, back_at) = (Instant::now(), Utc::now());
    assert!(
        sent_before < SUBSCRIBERS,
        "the fan-out ended before the crash"
    );
    // The pumps record what they sent meanwhile, and send more, as soon as Postgres is back.
    let recorded = eventually(Duration::from_secs(20), || async {
        let marked = email_messages::Entity::find()
            .filter(email_messages::Column::SentAt.gte(back_at))
            .count(&store.db)
            .await
            .ok()?;
        (marked > 0).then_some(())
    })
    .await
    .map(|()| back.elapsed());
    let ledger = eventually(Duration::from_secs(40), || async {
        let rows = email_messages::Entity::find().all(&store.db).await.ok()?;
        let all_sent = rows.iter().all(|m| m.status == MessageStatus::Sent);
        (rows.len() == SUBSCRIBERS && all_sent).then_some(rows)
    })
    .await
    .expect("every alert sent after the crash");
    let waited = back.elapsed();

    let mut copies: HashMap<String, usize> = HashMap::new();
    for message in smtp.messages() {
        for to in message["rcpt_tos"].as_array().into_iter().flatten() {
            *copies.entry(to.as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    let duplicates = smtp.messages().len() - SUBSCRIBERS;
    let lapsed: i32 = ledger.iter().map(|m| m.lapsed_claims).sum();
    eprintln!(
        "{sent_before} sent before the crash; sends recorded again {recorded:?} and all sent {waited:?} after Postgres was back; {duplicates} second copies, {lapsed} lapsed claims"
    );
    let recorded = recorded.expect("sends recorded after Postgres was back");
    assert!(
        recorded <= BACK_WITHIN,
        "sends recorded only {recorded:?} after Postgres was back"
    );
    assert_eq!(copies.len(), SUBSCRIBERS, "subscribers alerted");
    for (recipient, copies) in copies.iter().filter(|(_, copies)| **copies > 1) {
        let row = ledger.iter().find(|m| &m.recipient == recipient).unwrap();
        assert!(*copies <= 2, "{recipient} got {copies} copies");
        assert!(
            usize::try_from(row.attempts).unwrap() >= *copies,
            "{recipient} got {copies} copies from fewer claims: {row:?}"
        );
    }
    store.assert_every_process_up();
}

/// Postgres shut down (`-m fast`, which terminates every session) just as a draw's entries
/// close and back a moment later: the draw runs, once — one offer per unit, everyone else on
/// the waitlist, one email each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_restart_during_a_draws_close_runs_the_draw_once() {
    use entity::models::{
        drops, email_messages, email_messages::MessageKind, reservations, waitlist_entries,
    };
    const UNITS: usize = 10;
    const ENTRANTS: usize = 200;
    let mut store = Store::start(60).await;
    let base = store.apis[0].0.clone();
    let far = Utc::now() + chrono::Duration::hours(1);
    let created: Value = store
        .client
        .post(format!("{base}/api/admin/drops"))
        .bearer_auth(&store.admin.token)
        .json(&json!({"name": "Chaos draw", "priceCents": 1000, "totalStock": UNITS, "mode": "draw", "entriesCloseAt": far}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let drop_id = created["id"].as_i64().expect("drop id");
    let entrants = store.buyers(ENTRANTS).await;
    let entered: Vec<_> = futures::stream::iter(&entrants)
        .map(|entrant| {
            store
                .client
                .post(format!("{base}/api/drops/{drop_id}/entries"))
                .bearer_auth(&entrant.token)
                .json(&json!({}))
                .send()
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(
        entered
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.status() == StatusCode::CREATED))
    );

    // The draw job runs at the close's whole second (apalis's resolution): close on one, and
    // shut Postgres down as the job starts.
    let next_second = Utc::now().timestamp() + 3;
    let close = DateTime::<Utc>::from_timestamp(next_second, 0).unwrap();
    let moved = store
        .client
        .patch(format!("{base}/api/admin/drops/{drop_id}"))
        .bearer_auth(&store.admin.token)
        .json(&json!({"entriesCloseAt": close}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), StatusCode::OK);
    let (stop_watching, failed_jobs) = store.watch_failed_jobs();
    let until_close = (close + chrono::Duration::milliseconds(60) - Utc::now())
        .to_std()
        .unwrap();
    tokio::time::sleep(until_close).await;
    store.pg.stop(StopMode::Fast).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    store.pg.restart().await;
    let back = Instant::now();

    let drawn = eventually(Duration::from_secs(15), || async {
        let drop = drops::Entity::find_by_id(drop_id)
            .one(&store.db)
            .await
            .ok()??;
        drop.drawn_at
    })
    .await;
    let drawn_after = back.elapsed();
    assert!(drawn.is_some(), "never drawn after Postgres was back");
    // What one draw leaves, and nothing more however often it was tried.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let holds = reservations::Entity::find()
        .filter(reservations::Column::DropId.eq(drop_id))
        .count(&store.db)
        .await
        .unwrap();
    let waiting = waitlist_entries::Entity::find()
        .filter(waitlist_entries::Column::DropId.eq(drop_id))
        .count(&store.db)
        .await
        .unwrap();
    let mails = email_messages::Entity::find().all(&store.db).await.unwrap();
    let offers = mails
        .iter()
        .filter(|m| m.kind == MessageKind::HoldOffer)
        .count();
    let waitlisted = mails
        .iter()
        .filter(|m| m.kind == MessageKind::DrawWaitlisted)
        .count();
    eprintln!(
        "drawn {drawn_after:?} after Postgres was back: {holds} holds, {waiting} waiting, {offers} offer and {waitlisted} waitlist emails"
    );
    assert_eq!(holds, UNITS as u64, "one hold per unit");
    assert_eq!(waiting, (ENTRANTS - UNITS) as u64, "everyone else waits");
    assert_eq!(
        (offers, waitlisted),
        (UNITS, ENTRANTS - UNITS),
        "one email each"
    );
    let _ = stop_watching.send(());
    let failed_jobs = failed_jobs.await.unwrap();
    assert!(
        failed_jobs.is_empty(),
        "the draw job counted a failed attempt for the outage: {failed_jobs:?}"
    );
    let audit = entity::drops::audit(&store.db, drop_id).await.unwrap();
    assert!(audit.holds(), "invariant broken: {audit:?}");
    store.assert_every_process_up();
}

/// A retention pass that meets Postgres away is tried again within seconds of its return,
/// not a whole `RETENTION_INTERVAL_SECS` later: the passes fall at about 1 s, 31 s and 61 s
/// after the workers start, Postgres is away from 3 s to 35 s, so the second pass fails; an
/// old row written at 36 s must be gone well before the third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_pass_that_met_postgres_away_is_retried_within_seconds() {
    use entity::models::idempotency_keys;
    use sea_orm::ConnectionTrait;

    let store = Store::start_with(40, &[("RETENTION_INTERVAL_SECS", "30".to_owned())]).await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    store.pg.stop(StopMode::Immediate).await;
    tokio::time::sleep(Duration::from_secs(35).saturating_sub(started.elapsed())).await;
    store.pg.restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let written = store
        .db
        .execute_unprepared(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, created_at) \
             SELECT id, 'old-key', 'hash', now() - interval '2 days' FROM users LIMIT 1",
        )
        .await
        .expect("an old idempotency key is written");
    assert_eq!(written.rows_affected(), 1);

    let purged = eventually(
        Duration::from_secs(55).saturating_sub(started.elapsed()),
        || async {
            let left = idempotency_keys::Entity::find()
                .filter(idempotency_keys::Column::Key.eq("old-key"))
                .count(&store.db)
                .await
                .ok()?;
            (left == 0).then_some(started.elapsed())
        },
    )
    .await;
    assert!(
        purged.is_some(),
        "the old row was still there 55 s after the workers started: the pass after the failed \
         one waits for the next regular interval (logs in {})",
        store.logs.display()
    );
}
