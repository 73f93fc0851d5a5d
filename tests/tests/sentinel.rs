//! Redis failover under Sentinel: two `api` and two `worker` binaries find the master through
//! three sentinels of the test's own (`REDIS_SENTINELS`, `REDIS_MASTER_NAME`). While holds fall
//! due and a restock alert fans out, the primary is killed (SIGKILL); the sentinels promote
//! the replica, and without a restart every process follows it: holds still expire, every
//! alert is sent once, later restocks are mailed, and sockets on both apis see later changes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use common::{Smtp, SmtpServer, link_token};
use entity::accounts::Role;
use reqwest::StatusCode;
use sea_orm::{
    ColumnTrait, ConnectOptions, Database, DatabaseConnection, EntityTrait, QueryFilter,
};
use serde_json::{Value, json};
use tests::{
    TestUser, fresh_postgres_database, mint_user,
    process::{Process, two_apis_two_workers},
    sentinel::{MASTER_NAME, SentinelGroup},
};

const JWT_SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
const TTL_SECS: i64 = 3;
const SUBSCRIBERS: usize = 5;
const HOLDS: usize = 8;
const STOCK: i64 = 20;
/// From the promotion, the longest any process may take to use the new master.
const FOLLOW_WITHIN: Duration = Duration::from_secs(10);
const RECONCILE_SECS: u64 = 5;
/// A restock's alert through the job queue arrives within this (the reconciler, every
/// [`RECONCILE_SECS`], would mostly come later).
const QUEUED_ALERT_WITHIN: Duration = Duration::from_secs(2);

struct Store {
    apis: [String; 2],
    processes: Vec<Process>,
    db: DatabaseConnection,
    admin: TestUser,
    jwt: api::auth::Jwt,
    smtp: SmtpServer,
    logs: tempfile::TempDir,
    group: SentinelGroup,
    _database: tests::TestDatabase,
}

impl Store {
    async fn start() -> Self {
        let group = SentinelGroup::start().await;
        let database = fresh_postgres_database().await;
        let smtp = SmtpServer::start(Smtp::Accepting).await;
        let logs = tempfile::tempdir().expect("dir");
        let env = HashMap::from([
            ("DATA_DIR", logs.path().display().to_string()),
            ("DATABASE_URL", database.url().to_owned()),
            ("DATABASE_MAX_CONNECTIONS", "4".to_owned()),
            ("REDIS_SENTINELS", group.sentinels()),
            ("REDIS_MASTER_NAME", MASTER_NAME.to_owned()),
            ("SMTP_URL", smtp.url()),
            ("JWT_ACCESS_SECRET", JWT_SECRET.to_owned()),
            ("RESERVATION_TTL_SECS", TTL_SECS.to_string()),
            ("RESTOCK_WAVE_FACTOR", "0".to_owned()),
            // A job a worker had fetched from the old primary as it died is in flight on the
            // new master and nobody runs it: the reconciler re-derives it from Postgres.
            ("RECONCILE_INTERVAL_SECS", RECONCILE_SECS.to_string()),
            ("DEMO_DATA", "false".to_owned()),
        ]);
        let (processes, apis) = two_apis_two_workers(&env, logs.path()).await;
        let mut direct = ConnectOptions::new(database.url());
        direct.max_connections(2).sqlx_logging(false);
        let db = Database::connect(direct).await.expect("test connects");
        let jwt = api::auth::Jwt::new(JWT_SECRET, Duration::from_secs(3600));
        let admin = mint_user(&db, &jwt, "ops", Role::Admin).await;
        Self {
            apis,
            processes,
            db,
            admin,
            jwt,
            smtp,
            logs,
            group,
            _database: database,
        }
    }

    fn logs(&self) -> String {
        tests::process::log_tails(self.logs.path(), 25)
    }

    async fn call(
        &self,
        api: usize,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        tests::process::call_json(&self.apis[api % 2], method, path, token, body).await
    }

    /// A product out of stock with `emails` confirmed subscribers; its id.
    async fn product_with_subscribers(&self, name: &str, emails: &[String]) -> i64 {
        let (created, product) = self
            .call(
                0,
                reqwest::Method::POST,
                "/api/admin/products",
                Some(&self.admin.token),
                Some(json!({"name": name, "priceCents": 800, "inStock": true, "stockQuantity": 0})),
            )
            .await;
        assert_eq!(created, StatusCode::CREATED, "{product}");
        let id = product["id"].as_i64().expect("product id");
        for (i, email) in emails.iter().enumerate() {
            let (accepted, body) = self
                .call(
                    i,
                    reqwest::Method::POST,
                    &format!("/api/products/{id}/notify-me"),
                    None,
                    Some(json!({ "email": email })),
                )
                .await;
            assert_eq!(accepted, StatusCode::ACCEPTED, "{body}");
        }
        for (i, email) in emails.iter().enumerate() {
            let confirmation = self.smtp.wait_for(email, 1).await;
            let token = link_token(&confirmation[0], "/api/subscriptions/confirm?token=");
            let path = format!("/api/subscriptions/confirm?token={token}");
            let (confirmed, body) = self.call(i, reqwest::Method::POST, &path, None, None).await;
            assert_eq!(confirmed, StatusCode::OK, "{body}");
        }
        id
    }

    async fn restock(&self, api: usize, product_id: i64) {
        let (restocked, body) = self
            .call(
                api,
                reqwest::Method::PATCH,
                &format!("/api/admin/products/{product_id}"),
                Some(&self.admin.token),
                Some(json!({"stockQuantity": 5})),
            )
            .await;
        assert_eq!(restocked, StatusCode::OK, "{body}");
    }

    async fn reserve(&self, api: usize, drop_id: i64) -> StatusCode {
        let name = format!("b{}", uuid::Uuid::new_v4().simple());
        let buyer = mint_user(&self.db, &self.jwt, &name, Role::Customer).await;
        let path = format!("/api/drops/{drop_id}/reserve");
        let (status, _) = self
            .call(
                api,
                reqwest::Method::POST,
                &path,
                Some(&buyer.token),
                Some(json!({})),
            )
            .await;
        status
    }

    async fn socket(&self, api: usize) -> tests::WsClient {
        let url = self.apis[api].replace("http://", "ws://") + "/ws";
        tokio_tungstenite::connect_async(url).await.expect("ws").0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_redis_primary_dies_every_process_follows_the_promoted_replica() {
    let mut store = Store::start().await;
    let emails: Vec<String> = (0..SUBSCRIBERS)
        .map(|i| format!("fan{i}@example.com"))
        .collect();
    let during = store
        .product_with_subscribers("Acacia Honey", &emails)
        .await;
    let late_email = "late@example.com".to_owned();
    let after = store
        .product_with_subscribers("Heather Honey", std::slice::from_ref(&late_email))
        .await;
    let (created, drop) = store
        .call(
            0,
            reqwest::Method::POST,
            "/api/admin/drops",
            Some(&store.admin.token),
            Some(json!({"name": "Failover drop", "priceCents": 1000, "totalStock": STOCK})),
        )
        .await;
    assert_eq!(created, StatusCode::CREATED, "{drop}");
    let drop_id = drop["id"].as_i64().expect("drop id");
    let mut sockets = [store.socket(0).await, store.socket(1).await];
    for i in 0..HOLDS {
        assert_eq!(store.reserve(i, drop_id).await, StatusCode::CREATED);
    }

    // The primary dies while the holds are due within seconds and the alert fans out (once
    // the replica has what the primary has: a write Redis acknowledged but had not
    // replicated is lost in any failover, which the reconciler repairs the same way).
    store.restock(1, during).await;
    store.group.wait_until_replicated().await;
    store.group.kill_primary();
    let killed = Instant::now();
    let promoted = tests::eventually(Duration::from_secs(20), || async {
        (store.group.master_port().await == Some(store.group.replica_port)).then_some(())
    })
    .await;
    assert!(
        promoted.is_some(),
        "the sentinels never promoted the replica"
    );
    let promoted_after = killed.elapsed();

    // Both apis answer ready (their Redis connection works) within the bound, unrestarted.
    let promoted_at = Instant::now();
    for base in &store.apis {
        let ready = tests::eventually(FOLLOW_WITHIN, || async {
            let answer = reqwest::get(format!("{base}/readyz")).await.ok()?;
            (answer.status() == StatusCode::OK).then_some(())
        })
        .await;
        assert!(
            ready.is_some(),
            "{base} did not follow the new master\n{}",
            store.logs()
        );
    }
    let ready_after = promoted_at.elapsed();
    // Every process (two apis, two workers) listens on the bus again, on the new master.
    let master = store.group.connection(store.group.replica_port).await;
    let resubscribed = tests::eventually(FOLLOW_WITHIN, || {
        let mut master = master.clone();
        async move {
            let (_, listeners): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("honeydrop:events")
                .query_async(&mut master)
                .await
                .ok()?;
            (listeners == 4).then_some(())
        }
    })
    .await;
    assert!(
        resubscribed.is_some(),
        "not every process subscribed to the new master's bus\n{}",
        store.logs()
    );
    eprintln!(
        "primary killed; replica promoted after {} ms; both apis ready {} ms and every \
         process back on the bus {} ms after the promotion was seen",
        promoted_after.as_millis(),
        ready_after.as_millis(),
        promoted_at.elapsed().as_millis()
    );

    // Holds expired (the sweep needs no Redis) and the drop adds up.
    let all_ended = tests::eventually(Duration::from_secs(15), || async {
        use entity::models::reservations::{Column, Entity, ReservationStatus};
        let holds = Entity::find()
            .filter(Column::DropId.eq(drop_id))
            .all(&store.db)
            .await
            .unwrap();
        holds
            .iter()
            .all(|h| h.status != ReservationStatus::Active)
            .then_some(())
    })
    .await;
    assert!(
        all_ended.is_some(),
        "a hold never expired\n{}",
        store.logs()
    );
    let audit = entity::drops::audit(&store.db, drop_id).await.unwrap();
    assert!(audit.holds() && audit.available_stock == STOCK, "{audit:?}");

    // Later changes, made through either api, reach the sockets of both.
    for (api, available) in [(0, STOCK - 1), (1, STOCK - 2)] {
        assert_eq!(store.reserve(api, drop_id).await, StatusCode::CREATED);
        for (i, socket) in sockets.iter_mut().enumerate() {
            assert!(
                tests::wait_for_stock(socket, drop_id, available, Duration::from_secs(5)).await,
                "the socket on api {i} missed a change made through api {api} after the failover\n{}",
                store.logs()
            );
        }
    }

    // A restock after the failover goes through the new master's job queue to a worker.
    let restocked = Instant::now();
    store.restock(0, after).await;
    store.smtp.wait_for(&late_email, 2).await;
    let alerted_after = restocked.elapsed();
    eprintln!(
        "the alert of a restock after the failover arrived in {} ms",
        alerted_after.as_millis()
    );
    assert!(
        alerted_after < QUEUED_ALERT_WITHIN,
        "the alert took {alerted_after:?}: the job queue did not follow the new master"
    );

    // Every alert of the restock during the failover arrived, once.
    for email in &emails {
        store.smtp.wait_for(email, 2).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for email in emails.iter().chain([&late_email]) {
        assert_eq!(
            store.smtp.messages_to(email).len(),
            2,
            "{email}: a confirmation and one alert"
        );
    }
    let exits: Vec<_> = store.processes.iter_mut().map(Process::exited).collect();
    assert!(
        exits.iter().all(Option::is_none),
        "a process gave up: {exits:?}\n{}",
        store.logs()
    );
}
