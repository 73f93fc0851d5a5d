//! Restock alerts in waves sized to the stock: 1,000 subscribers and 10 units at factor 3
//! get 30 alerts, 30 more after the interval, and none once the product sells out.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use chrono::Utc;
use entity::{
    catalog::SubscriptionStatus,
    mail::MessageKind,
    models::{email_messages, subscriptions},
};
use reqwest::{Method, StatusCode};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;
use tests::{Backend, TestApp, TestUser, both_backends, spawn_app_with};

const INTERVAL_SECS: u64 = 3;

async fn create_product(app: &TestApp, admin: &TestUser, stock_quantity: Option<i32>) -> i64 {
    let answer = app
        .post(
            "/api/admin/products",
            Some(&admin.token),
            json!({"name": "Heather Honey", "priceCents": 1_250, "inStock": false, "stockQuantity": stock_quantity.map(|_| 0)}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    answer.body["id"].as_i64().unwrap()
}

async fn set_stock(
    app: &TestApp,
    admin: &TestUser,
    id: i64,
    in_stock: bool,
    quantity: Option<i32>,
) {
    let mut body = json!({"inStock": in_stock});
    if let Some(quantity) = quantity {
        body["stockQuantity"] = json!(quantity);
    }
    let path = format!("/api/admin/products/{id}");
    let answer = app
        .request(Method::PATCH, &path, Some(&admin.token), Some(body))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
}

/// `n` confirmed subscribers, inserted in signup order (the confirmation flow itself is
/// tested in `catalog.rs`).
async fn confirmed_subscribers(app: &TestApp, product_id: i64, n: usize) -> Vec<i64> {
    let now = Utc::now();
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let rows = chunk.iter().map(|i| subscriptions::ActiveModel {
            product_id: Set(product_id),
            email: Set(format!("fan{i}@example.com")),
            status: Set(SubscriptionStatus::Confirmed),
            confirm_token_hash: Set(entity::tokens::hash(&entity::tokens::generate())),
            unsubscribe_token_hash: Set(entity::tokens::hash(&entity::tokens::generate())),
            confirmation_sent_at: Set(Some(now)),
            confirmed_at: Set(Some(now)),
            notified_at: Set(None),
            created_at: Set(now),
            ..Default::default()
        });
        let inserted = subscriptions::Entity::insert_many(rows)
            .exec_with_returning(&app.db)
            .await
            .unwrap();
        ids.extend(inserted.iter().map(|s| s.id));
    }
    ids
}

/// The restock alerts written so far, oldest first: (subscription, wave).
async fn alerts(app: &TestApp) -> Vec<(i64, Option<i32>)> {
    email_messages::Entity::find()
        .filter(email_messages::Column::Kind.eq(MessageKind::RestockAlert))
        .order_by_asc(email_messages::Column::Id)
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.subscription_id.unwrap(), m.wave))
        .collect()
}

async fn wait_for_alerts(app: &TestApp, count: usize, within: Duration) -> Vec<(i64, Option<i32>)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let written = alerts(app).await;
        if written.len() >= count || tokio::time::Instant::now() > deadline {
            return written;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn alerts_go_out_in_waves_sized_to_the_stock_until_it_sells_out(backend: Backend) {
    let interval = INTERVAL_SECS.to_string();
    let app = spawn_app_with(
        backend,
        &[
            ("RESTOCK_WAVE_INTERVAL_SECS", &interval),
            ("RECONCILE_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    let admin = app.admin().await;
    let product = create_product(&app, &admin, Some(0)).await;
    let fans = confirmed_subscribers(&app, product, 1_000).await;

    set_stock(&app, &admin, product, true, Some(10)).await;
    let first = wait_for_wave(&app, 30, Duration::from_secs(10)).await;
    assert_eq!(
        first,
        fans[..30]
            .iter()
            .map(|id| (*id, Some(1)))
            .collect::<Vec<_>>(),
        "the first 30 in signup order"
    );
    // Nothing more until the interval has passed.
    tokio::time::sleep(Duration::from_secs(INTERVAL_SECS) / 2).await;
    assert_eq!(
        alerts(&app).await.len(),
        30,
        "the second wave waits for the interval"
    );

    let second = wait_for_wave(&app, 60, Duration::from_secs(INTERVAL_SECS + 10)).await;
    let expected: Vec<_> = fans[30..60].iter().map(|id| (*id, Some(2))).collect();
    assert_eq!(second[30..], expected[..], "the next 30, as wave 2");

    // Sold out: the waves stop.
    set_stock(&app, &admin, product, true, Some(0)).await;
    tokio::time::sleep(Duration::from_secs(INTERVAL_SECS * 2 + 1)).await;
    assert_eq!(
        alerts(&app).await.len(),
        60,
        "no wave after the product sold out"
    );
    let stats = app
        .get(
            &format!("/api/admin/products/{product}/stats"),
            Some(&admin.token),
        )
        .await;
    let restock = &stats.body["recentRestocks"][0];
    let by_wave: Vec<(i64, i64)> = restock["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let alerts = &w["alerts"];
            let total = ["queued", "sent", "failed"]
                .iter()
                .map(|k| alerts[k].as_i64().unwrap())
                .sum();
            (w["wave"].as_i64().unwrap(), total)
        })
        .collect();
    assert_eq!(by_wave, [(1, 30), (2, 30)], "{stats:?}");
    assert!(
        restock.get("nextWaveAt").is_none(),
        "no wave to come: {stats:?}"
    );
}

/// Waits for `count` alerts and checks that no more than that went out.
async fn wait_for_wave(app: &TestApp, count: usize, within: Duration) -> Vec<(i64, Option<i32>)> {
    let written = wait_for_alerts(app, count, within).await;
    assert_eq!(written.len(), count, "alerts written");
    written
}

async fn a_product_without_a_tracked_quantity_alerts_everyone_at_once(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    let admin = app.admin().await;
    let product = create_product(&app, &admin, None).await;
    let fans = confirmed_subscribers(&app, product, 120).await;

    set_stock(&app, &admin, product, true, None).await;
    let written = wait_for_wave(&app, 120, Duration::from_secs(10)).await;
    assert_eq!(
        written,
        fans.iter().map(|id| (*id, Some(1))).collect::<Vec<_>>()
    );
}

both_backends!(
    alerts_go_out_in_waves_sized_to_the_stock_until_it_sells_out,
    a_product_without_a_tracked_quantity_alerts_everyone_at_once,
);

/// A worker that dies between waves is replaced by the reconciler: the next wave still opens,
/// and nobody is alerted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_opens_the_next_wave_when_its_job_is_lost() {
    let interval = INTERVAL_SECS.to_string();
    let app = spawn_app_with(
        Backend::PostgresRedis,
        &[
            ("RESTOCK_WAVE_INTERVAL_SECS", &interval),
            ("RECONCILE_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    let admin = app.admin().await;
    let product = create_product(&app, &admin, Some(0)).await;
    confirmed_subscribers(&app, product, 100).await;
    set_stock(&app, &admin, product, true, Some(5)).await;
    wait_for_wave(&app, 15, Duration::from_secs(10)).await;

    // Lose every queued job (the scheduled next wave among them).
    let mut redis = redis::Client::open(tests::test_redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let prefix = app.vars["REDIS_PREFIX"].clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut redis)
            .await
            .unwrap();
    }

    let written = wait_for_wave(&app, 30, Duration::from_secs(INTERVAL_SECS + 10)).await;
    let mut subscribers: Vec<i64> = written.iter().map(|(s, _)| *s).collect();
    subscribers.sort_unstable();
    subscribers.dedup();
    assert_eq!(subscribers.len(), 30, "nobody alerted twice");
}
