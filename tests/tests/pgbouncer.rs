//! The distributed store with every process behind one PgBouncer in transaction mode —
//! Debian's 1.18, which has no protocol-level prepared statements — and a small server pool:
//! two `api` and two `worker` binaries with `DATABASE_POOL_MODE=transaction`, migrations
//! straight to Postgres (`DATABASE_MIGRATION_URL`). Sign-up and sign-in, a stampede of
//! reserves, a purchase, holds expiring, and a restock alert reaching the SMTP server.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::{collections::HashMap, time::Duration};

use common::{Smtp, SmtpServer, link_token};
use entity::accounts::Role;
use reqwest::StatusCode;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tests::{
    TestUser, fresh_postgres_database, mint_user,
    process::{PgBouncer, Process, two_apis_two_workers},
    test_redis_url,
};

const JWT_SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
const TTL_SECS: i64 = 2;
/// The bouncer's server connections: fewer than the four processes' pools add up to
/// (2 × (8 + 4) + 2 × 8 = 40).
const SERVER_CONNECTIONS: u32 = 20;
const STOCK: usize = 10;
const BUYERS: usize = 40;

/// Two api processes (their URLs) and two workers, every one connected through `bouncer`.
struct Store {
    apis: [String; 2],
    db: DatabaseConnection,
    admin: TestUser,
    jwt: api::auth::Jwt,
    smtp: SmtpServer,
    logs: tempfile::TempDir,
    _processes: Vec<Process>,
    /// Dropped after the processes, before the database.
    bouncer: PgBouncer,
    _database: tests::TestDatabase,
}

impl Store {
    async fn start() -> Self {
        let database = fresh_postgres_database().await;
        let bouncer = PgBouncer::start(database.url(), SERVER_CONNECTIONS).await;
        let smtp = SmtpServer::start(Smtp::Accepting).await;
        let logs = tempfile::tempdir().expect("dir");
        let env = HashMap::from([
            ("DATA_DIR", logs.path().display().to_string()),
            ("DATABASE_URL", bouncer.url_for(database.url())),
            ("DATABASE_POOL_MODE", "transaction".to_owned()),
            ("DATABASE_MIGRATION_URL", database.url().to_owned()),
            ("REDIS_URL", test_redis_url()),
            (
                "REDIS_PREFIX",
                format!("hdtest:{}", uuid::Uuid::new_v4().simple()),
            ),
            ("SMTP_URL", smtp.url()),
            ("JWT_ACCESS_SECRET", JWT_SECRET.to_owned()),
            ("RESERVATION_TTL_SECS", TTL_SECS.to_string()),
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
            db,
            admin,
            jwt,
            smtp,
            logs,
            _processes: processes,
            bouncer,
            _database: database,
        }
    }

    /// Every process's log and the bouncer's, for a failed assertion to show.
    fn logs(&self) -> String {
        format!(
            "--- pgbouncer\n{}{}",
            self.bouncer.log(),
            tests::process::log_tails(self.logs.path(), 30)
        )
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

    async fn post(
        &self,
        api: usize,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        self.call(api, reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// Server connections Postgres holds for the store's database (not counting the test's).
    async fn server_connections(&self) -> i64 {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                self.db.get_database_backend(),
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            ))
            .await
            .unwrap()
            .expect("a row");
        row.try_get_by_index::<i64>(0).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_transaction_mode_pgbouncer_the_store_sells_expires_and_mails() {
    let store = Store::start().await;

    // Accounts: the first symptom was a 500 at sign-in.
    let (signed_up, body) = store
        .post(
            0,
            "/api/auth/signup",
            None,
            json!({"email": "pat@example.com", "password": "password one"}),
        )
        .await;
    assert_eq!(signed_up, StatusCode::CREATED, "{body}\n{}", store.logs());
    let (signed_in, body) = store
        .post(
            1,
            "/api/auth/login",
            None,
            json!({"email": "pat@example.com", "password": "password one"}),
        )
        .await;
    assert_eq!(signed_in, StatusCode::OK, "{body}");

    // A drop: a stampede of reserves over both apis sells exactly its stock.
    let (created, drop) = store
        .post(
            0,
            "/api/admin/drops",
            Some(&store.admin.token),
            json!({"name": "Bounced drop", "priceCents": 1000, "totalStock": STOCK}),
        )
        .await;
    assert_eq!(created, StatusCode::CREATED, "{drop}\n{}", store.logs());
    let drop_id = drop["id"].as_i64().expect("drop id");
    let url = store.apis[1].replace("http://", "ws://") + "/ws";
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let mut buyers = Vec::new();
    for i in 0..BUYERS {
        buyers.push(mint_user(&store.db, &store.jwt, &format!("buyer{i}"), Role::Customer).await);
    }
    let reserve = format!("/api/drops/{drop_id}/reserve");
    let started = std::time::Instant::now();
    let answers = futures::future::join_all(
        buyers
            .iter()
            .enumerate()
            .map(|(i, buyer)| store.post(i, &reserve, Some(&buyer.token), json!({}))),
    )
    .await;
    let elapsed = started.elapsed();
    eprintln!(
        "{BUYERS} reserves through the bouncer in {} ms ({:.0}/s)",
        elapsed.as_millis(),
        BUYERS as f64 / elapsed.as_secs_f64()
    );
    let holds: Vec<(usize, i64)> = answers
        .iter()
        .enumerate()
        .filter(|(_, (status, _))| *status == StatusCode::CREATED)
        .map(|(i, (_, hold))| (i, hold["id"].as_i64().expect("hold id")))
        .collect();
    let refused = answers
        .iter()
        .filter(|(status, body)| *status == StatusCode::CONFLICT && body["code"] == "sold_out")
        .count();
    assert_eq!(
        (holds.len(), refused),
        (STOCK, BUYERS - STOCK),
        "every reserve is a hold or sold out: {answers:?}\n{}",
        store.logs()
    );
    assert!(
        store.server_connections().await <= i64::from(SERVER_CONNECTIONS),
        "Postgres served the store past the bouncer's pool"
    );

    // One buyer pays; the other holds expire and their units come back, seen on the socket
    // of the other api.
    let (winner, hold_id) = holds[0];
    let (bought, body) = store
        .post(
            winner + 1,
            &format!("/api/drops/{hold_id}/purchase"),
            Some(&buyers[winner].token),
            json!({}),
        )
        .await;
    assert_eq!(bought, StatusCode::CREATED, "{body}");
    let back = i64::try_from(STOCK - 1).unwrap();
    assert!(
        tests::wait_for_stock(&mut socket, drop_id, 0, Duration::from_secs(15)).await,
        "the socket never saw the drop sell out"
    );
    assert!(
        tests::wait_for_stock(&mut socket, drop_id, back, Duration::from_secs(15)).await,
        "the expired holds' units never came back\n{}",
        store.logs()
    );
    let audit = entity::drops::audit(&store.db, drop_id).await.unwrap();
    assert!(
        audit.holds() && audit.purchases == 1 && audit.available_stock == back,
        "{audit:?}"
    );

    // A product: double opt-in and the restock alert, each mail sent once.
    let (created, product) = store
        .post(
            1,
            "/api/admin/products",
            Some(&store.admin.token),
            json!({"name": "Clover Honey", "priceCents": 800, "inStock": true, "stockQuantity": 0}),
        )
        .await;
    assert_eq!(created, StatusCode::CREATED, "{product}");
    let product_id = product["id"].as_i64().expect("product id");
    let email = "ann@example.com";
    let (accepted, body) = store
        .post(
            0,
            &format!("/api/products/{product_id}/notify-me"),
            None,
            json!({ "email": email }),
        )
        .await;
    assert_eq!(accepted, StatusCode::ACCEPTED, "{body}");
    let confirmation = store.smtp.wait_for(email, 1).await;
    let token = link_token(&confirmation[0], "/api/subscriptions/confirm?token=");
    let (confirmed, body) = store
        .call(
            1,
            reqwest::Method::POST,
            &format!("/api/subscriptions/confirm?token={token}"),
            None,
            None,
        )
        .await;
    assert_eq!(confirmed, StatusCode::OK, "{body}");
    let (restocked, body) = store
        .call(
            0,
            reqwest::Method::PATCH,
            &format!("/api/admin/products/{product_id}"),
            Some(&store.admin.token),
            Some(json!({"stockQuantity": 5})),
        )
        .await;
    assert_eq!(restocked, StatusCode::OK, "{body}");
    let mail = store.smtp.wait_for(email, 2).await;
    assert_eq!(mail[1]["subject"], "Clover Honey is back in stock");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.smtp.messages_to(email).len(), 2, "each mail once");
}
