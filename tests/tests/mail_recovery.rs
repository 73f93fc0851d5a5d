//! A send that dies with its worker: the row it claimed goes out through another worker soon
//! after the claim's lease ends, once, and is counted as a lapsed claim; a worker killed mid
//! fan-out loses no alert; Redis flushed or restarted loses no mail (the ledger is the queue).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use common::{Smtp, store_with};
use entity::{
    accounts::Role,
    catalog::SubscriptionStatus,
    mail::MessageStatus,
    models::{email_messages, subscriptions},
};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, Database, DatabaseConnection, EntityTrait};
use serde_json::json;
use tests::{
    Backend, both_backends, eventually, free_port, fresh_postgres_database, mint_user,
    process::{Process, wait_ready},
    test_redis_url,
};

/// The lease the test store runs with; short, so the test does not wait long.
const LEASE_SECS: i64 = 2;

async fn a_row_claimed_by_a_killed_worker_is_sent_once_after_its_lease(backend: Backend) {
    let lease = LEASE_SECS.to_string();
    let store = store_with(backend, Smtp::Accepting, &[("MAIL_LEASE_SECS", &lease)]).await;
    let product = json!({"name": "Heather Honey", "price": 12.5, "inStock": false});
    let id = store.publish("entry-1", 1, product).await.body["productId"]
        .as_i64()
        .unwrap();
    // A confirmed subscriber's alert, written as a worker that claimed it and died before
    // sending leaves it: one attempt counted, held until the lease ends, no outcome.
    let claimed_at = Utc::now();
    let lease = chrono::Duration::seconds(LEASE_SECS);
    let subscription = confirmed_subscription(&store.app.db, id, "ann@example.com").await;
    let message_id = claimed_alert(&store.app.db, &subscription, claimed_at + lease).await;

    let mail = store.smtp.wait_for("ann@example.com", 1).await;

    assert_eq!(mail[0]["subject"], "Heather Honey is back in stock");
    // The server accepts the message a moment before the send records it.
    let row = eventually(Duration::from_secs(5), || async {
        entity::mail::find(&store.app.db, message_id)
            .await
            .expect("query")
            .filter(|row| row.status != MessageStatus::Queued)
    })
    .await
    .expect("the row is settled");
    assert_eq!(
        (row.status, row.attempts, row.lapsed_claims),
        (MessageStatus::Sent, 2, 1),
        "the dead claim is counted as lapsed"
    );
    let sent_at = row.sent_at.expect("sent_at");
    let lease_end = claimed_at + lease;
    assert!(
        sent_at >= lease_end,
        "sent at {sent_at}, lease held until {lease_end}"
    );
    // Within the pump's poll (2 s) of the lease's end, and some slack for a loaded machine.
    assert!(
        sent_at - lease_end < chrono::Duration::seconds(5),
        "sent at {sent_at}, {} after the lease ended",
        sent_at - lease_end
    );
    let text = store.app.metrics().await;
    assert!(text.contains("honeydrop_mail_lapsed_claims 1\n"), "{text}");
    // A `sent` row is never claimed again: one copy, now and later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(store.smtp.messages_to("ann@example.com").len(), 1);
}

/// A confirmed subscription, written directly.
async fn confirmed_subscription(
    db: &DatabaseConnection,
    product_id: i64,
    email: &str,
) -> subscriptions::Model {
    confirmed(product_id, email.to_owned(), Utc::now())
        .insert(db)
        .await
        .expect("subscription")
}

/// A subscription as confirmation leaves it.
fn confirmed(product_id: i64, email: String, now: DateTime<Utc>) -> subscriptions::ActiveModel {
    let hash = || entity::tokens::hash(&entity::tokens::generate());
    subscriptions::ActiveModel {
        product_id: Set(product_id),
        email: Set(email),
        status: Set(SubscriptionStatus::Confirmed),
        confirm_token_hash: Set(hash()),
        unsubscribe_token_hash: Set(hash()),
        confirmed_at: Set(Some(now)),
        created_at: Set(now),
        ..Default::default()
    }
}

/// A restock alert for `subscription`, claimed once and held until `lease_end`.
async fn claimed_alert(
    db: &DatabaseConnection,
    subscription: &subscriptions::Model,
    lease_end: chrono::DateTime<Utc>,
) -> i64 {
    let now = Utc::now();
    let payload = json!({
        "product_id": subscription.product_id,
        "product_name": "Heather Honey",
        "product_slug": "heather-honey",
    });
    email_messages::ActiveModel {
        kind: Set(entity::mail::MessageKind::RestockAlert),
        recipient: Set(subscription.email.clone()),
        subscription_id: Set(Some(subscription.id)),
        dedupe_key: Set(format!("test:{}", subscription.id)),
        payload: Set(payload),
        status: Set(MessageStatus::Queued),
        attempts: Set(1),
        next_attempt_at: Set(Some(lease_end)),
        lapsed_claims: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("ledger row")
    .id
}

both_backends!(a_row_claimed_by_a_killed_worker_is_sent_once_after_its_lease);

/// `kill -9` of one of two workers in the middle of a restock fan-out, as an operator would
/// see it (real binaries, Postgres, Redis, an SMTP server): every subscriber is alerted
/// within 30 s of the kill, and a second copy only where the killed worker's send had been
/// accepted by the server but not yet recorded (at-least-once for a send cut off mid-way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_fan_out_leaves_every_alert_delivered_within_30_s() {
    const SUBSCRIBERS: usize = 200;
    let smtp = common::SmtpServer::start(Smtp::Accepting).await;
    let mut store = Distributed::start(&smtp, 2, test_redis_url()).await;
    let product_id = store.product_out_of_stock().await;
    subscribe_confirmed(&store.db, product_id, SUBSCRIBERS).await;

    store.restock(product_id).await;
    let some_out = eventually(Duration::from_secs(20), || async {
        let out = smtp.messages().len();
        (out >= 10).then_some(out)
    })
    .await
    .expect("the fan-out started");
    store.workers.remove(0).kill_hard();
    let killed = std::time::Instant::now();

    assert!(some_out < SUBSCRIBERS, "the fan-out ended before the kill");
    let settled = eventually(Duration::from_secs(30), || async {
        let rows = email_messages::Entity::find()
            .all(&store.db)
            .await
            .expect("ledger");
        let all_sent = rows.iter().all(|m| m.status == MessageStatus::Sent);
        (rows.len() == SUBSCRIBERS && all_sent).then_some(rows)
    })
    .await;
    let waited = killed.elapsed();
    let ledger =
        settled.unwrap_or_else(|| panic!("the ledger was not all sent {waited:?} after the kill"));
    let got = recipients(&smtp);
    assert_eq!(got.len(), SUBSCRIBERS, "subscribers alerted");
    // The killed worker had at most WORKER_CONCURRENCY (16) sends in flight, and only a send
    // the server accepted but the worker never recorded is sent again.
    let duplicates = smtp.messages().len() - SUBSCRIBERS;
    assert!(
        duplicates <= 16,
        "{duplicates} duplicates from one killed worker"
    );
    for (recipient, copies) in got.iter().filter(|(_, copies)| **copies > 1) {
        let row = ledger
            .iter()
            .find(|m| &m.recipient == recipient)
            .expect("row");
        assert!(
            row.attempts >= 2,
            "{recipient} got {copies} copies from a row claimed once: {row:?}"
        );
    }
}

/// Redis flushed, then down and back, while a restock fan-out runs: every subscriber still
/// gets exactly one alert (the mail pump works from the ledger, not from Redis), and the
/// worker rides it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushed_and_restarted_mid_fan_out_still_alerts_everyone_once() {
    const SUBSCRIBERS: usize = 200;
    let smtp = common::SmtpServer::start(Smtp::Accepting).await;
    let mut redis = tests::process::RedisServer::start().await;
    let mut store = Distributed::start(&smtp, 1, redis.url()).await;
    let product_id = store.product_out_of_stock().await;
    subscribe_confirmed(&store.db, product_id, SUBSCRIBERS).await;

    store.restock(product_id).await;
    let started = eventually(Duration::from_secs(20), || async {
        (smtp.messages().len() >= 10).then_some(())
    })
    .await;
    assert!(started.is_some(), "the fan-out started");
    redis.flush().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart().await;
    assert!(
        smtp.messages().len() < SUBSCRIBERS,
        "the fan-out ended before the faults"
    );

    let ledger = eventually(Duration::from_secs(60), || async {
        let rows = email_messages::Entity::find()
            .all(&store.db)
            .await
            .expect("ledger");
        let all_sent = rows.iter().all(|m| m.status == MessageStatus::Sent);
        (rows.len() == SUBSCRIBERS && all_sent).then_some(rows)
    })
    .await
    .expect("every alert sent after the faults");
    let got = recipients(&smtp);
    assert_eq!(got.len(), SUBSCRIBERS, "subscribers alerted");
    // Mail never goes through Redis (the ledger is the queue): nothing is cut off, nothing is
    // sent twice.
    assert_eq!(smtp.messages().len(), SUBSCRIBERS, "duplicates");
    assert!(
        ledger
            .iter()
            .all(|m| m.attempts == 1 && m.lapsed_claims == 0),
        "a row claimed twice"
    );
    assert_eq!(store.workers[0].exited(), None, "the worker gave up");
}

/// The SMTP server killed mid fan-out and back two seconds later: sends that failed are
/// retried with backoff, and every subscriber is alerted; a second copy only for a row tried
/// twice (the server may have taken a message as it died).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smtp_server_killed_mid_fan_out_still_alerts_everyone() {
    const SUBSCRIBERS: usize = 200;
    let mut smtp = common::SmtpServer::start(Smtp::Accepting).await;
    let store = Distributed::start(&smtp, 1, test_redis_url()).await;
    let product_id = store.product_out_of_stock().await;
    subscribe_confirmed(&store.db, product_id, SUBSCRIBERS).await;

    store.restock(product_id).await;
    let started = eventually(Duration::from_secs(20), || async {
        (smtp.messages().len() >= 10).then_some(())
    })
    .await;
    assert!(started.is_some(), "the fan-out started");
    smtp.kill().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    smtp.restart().await;

    let ledger = eventually(Duration::from_secs(60), || async {
        let rows = email_messages::Entity::find()
            .all(&store.db)
            .await
            .expect("ledger");
        let all_sent = rows.iter().all(|m| m.status == MessageStatus::Sent);
        (rows.len() == SUBSCRIBERS && all_sent).then_some(rows)
    })
    .await
    .expect("every alert sent after the SMTP server came back");
    let got = recipients(&smtp);
    assert_eq!(got.len(), SUBSCRIBERS, "subscribers alerted");
    for (recipient, copies) in got.iter().filter(|(_, copies)| **copies > 1) {
        let row = ledger
            .iter()
            .find(|m| &m.recipient == recipient)
            .expect("row");
        assert!(
            row.attempts >= 2,
            "{recipient} got {copies} copies from a row tried once"
        );
    }
}

/// The distributed store run as an operator runs it: the `api` binary and `worker` binaries
/// against a fresh Postgres database and a Redis namespace of its own, sending through `smtp`.
struct Distributed {
    base: String,
    _api: Process,
    workers: Vec<Process>,
    db: DatabaseConnection,
    admin: tests::TestUser,
    _dir: tempfile::TempDir,
    /// Last: dropped after the processes are killed.
    _database: tests::TestDatabase,
}

impl Distributed {
    async fn start(smtp: &common::SmtpServer, workers: usize, redis_url: String) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = "a-shared-secret-of-at-least-32-bytes!!";
        let prefix = format!("hdtest:{}", uuid::Uuid::new_v4().simple());
        let database = fresh_postgres_database().await;
        let env = HashMap::from([
            ("PORT", port.to_string()),
            ("DATA_DIR", dir.path().display().to_string()),
            ("JWT_ACCESS_SECRET", secret.to_owned()),
            ("DATABASE_URL", database.url().to_owned()),
            ("DATABASE_MAX_CONNECTIONS", "4".to_owned()),
            ("REDIS_URL", redis_url),
            // A send the SMTP server did not take is tried again soon.
            ("MAIL_RETRY_BASE_MS", "200".to_owned()),
            // A fan-out job lost with Redis is re-run by the reconciler.
            ("RECONCILE_INTERVAL_SECS", "2".to_owned()),
            ("REDIS_PREFIX", prefix),
            ("SMTP_URL", smtp.url()),
            // Slow enough that a kill lands mid fan-out (20 alerts a second per worker).
            ("MAIL_RATE_PER_SEC", "20".to_owned()),
        ]);
        let base = format!("http://127.0.0.1:{port}");
        let api = Process::start("api", &env, false);
        wait_ready(&base).await;
        let workers = (0..workers)
            .map(|_| Process::start("worker", &env, false))
            .collect();
        let db = Database::connect(env["DATABASE_URL"].as_str())
            .await
            .expect("test connects");
        let jwt = api::auth::Jwt::new(secret, Duration::from_secs(3600));
        let admin = mint_user(&db, &jwt, "ops", Role::Admin).await;
        Self {
            base,
            _api: api,
            workers,
            db,
            admin,
            _dir: dir,
            _database: database,
        }
    }

    async fn product_out_of_stock(&self) -> i64 {
        let created: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/api/admin/products", self.base))
            .bearer_auth(&self.admin.token)
            .json(&json!({"name": "Heather Honey", "priceCents": 1250, "inStock": false}))
            .send()
            .await
            .expect("product created")
            .json()
            .await
            .expect("json");
        created["id"].as_i64().expect("product id")
    }

    /// Back in stock through the admin API, which starts the fan-out.
    async fn restock(&self, product_id: i64) {
        let restocked = reqwest::Client::new()
            .patch(format!("{}/api/admin/products/{product_id}", self.base))
            .bearer_auth(&self.admin.token)
            .json(&json!({"inStock": true}))
            .send()
            .await
            .expect("restocked");
        assert!(restocked.status().is_success());
    }
}

/// Confirmed subscribers of a product, written as confirmation would leave them.
async fn subscribe_confirmed(db: &DatabaseConnection, product_id: i64, count: usize) {
    let now = Utc::now();
    let rows: Vec<_> = (0..count)
        .map(|n| confirmed(product_id, format!("subscriber{n}@example.com"), now))
        .collect();
    subscriptions::Entity::insert_many(rows)
        .exec_without_returning(db)
        .await
        .expect("subscribers");
}

/// How many copies each address received.
fn recipients(smtp: &common::SmtpServer) -> HashMap<String, usize> {
    let mut copies = HashMap::new();
    for message in smtp.messages() {
        for to in message["rcpt_tos"].as_array().into_iter().flatten() {
            *copies
                .entry(to.as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    copies
}
