//! Drop day at the machine's limit (issue #10): reserves combined into one statement per drop
//! answer each buyer exactly as alone, never oversell across instances, requests are
//! authenticated without a query each, and an exhausted pool answers 503, never 500.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use tests::{Backend, TestApp, TestUser, both_backends, spawn_app};

async fn reserve_at(
    client: &reqwest::Client,
    base: &str,
    user: &TestUser,
    drop_id: i64,
) -> (StatusCode, String) {
    let answer = client
        .post(format!("{base}/api/drops/{drop_id}/reserve"))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("sent");
    let answer = tests::answer(answer).await;
    (answer.status, answer.code().to_owned())
}

async fn drop_with(app: &TestApp, stock: i32, max_per_user: i32) -> i64 {
    let admin = app.admin().await;
    let created = app
        .post(
            "/api/admin/drops",
            Some(&admin.token),
            json!({"name": "Batch", "priceCents": 100, "totalStock": stock, "maxPerUser": max_per_user}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    created.body["id"].as_i64().unwrap()
}

/// Batched statements serve the buyers they can, in the order asked, and leave the rest to
/// the one-buyer reserve, which refuses each with the reason it would give alone: a buyer
/// who holds already, one at their purchase limit, and — once a batch took the last unit —
/// one who came too late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_serves_whom_it_can_and_the_rest_hear_why_as_if_alone() {
    let app = spawn_app(Backend::PostgresRedis).await;
    let drop_id = drop_with(&app, 6, 1).await;
    let holder = app.customer("holder").await;
    let bought = app.customer("bought").await;
    assert_eq!(
        reserve_at(&app.client, &app.address, &holder, drop_id)
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        reserve_at(&app.client, &app.address, &bought, drop_id)
            .await
            .0,
        StatusCode::CREATED
    );
    let hold = entity::drops::reservations_of(&app.db, bought.id)
        .await
        .unwrap()[0]
        .id;
    let paid = app
        .post(
            &format!("/api/drops/{hold}/purchase"),
            Some(&bought.token),
            json!({}),
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{:?}", paid.body);
    let mut fresh = Vec::new();
    for n in 0..5 {
        fresh.push(app.customer(&format!("fresh{n}")).await);
    }
    let ttl = chrono::Duration::seconds(60);
    let batch = |users: Vec<i64>| {
        let db = app.state.holds_db.clone();
        async move {
            entity::drops::reserve_batch(&db, drop_id, &users, ttl, Utc::now())
                .await
                .unwrap()
        }
    };

    // Four units left; five buyers asked, two of whom cannot be served.
    let first = batch(vec![
        holder.id,
        bought.id,
        fresh[0].id,
        fresh[1].id,
        fresh[2].id,
    ])
    .await;
    let served: Vec<i64> = first.reserved.iter().map(|r| r.user_id).collect();
    assert_eq!(
        served,
        vec![fresh[0].id, fresh[1].id, fresh[2].id],
        "in the order asked"
    );
    assert_eq!(first.stock.map(|s| s.available_stock), Some(1));
    for (user, code) in [
        (&holder, "already_reserved"),
        (&bought, "purchase_limit_reached"),
    ] {
        let (status, got) = reserve_at(&app.client, &app.address, user, drop_id).await;
        assert_eq!((status, got.as_str()), (StatusCode::CONFLICT, code));
    }

    // One unit left, two buyers: the stock runs out inside the batch.
    let second = batch(vec![fresh[3].id, fresh[4].id]).await;
    let served: Vec<i64> = second.reserved.iter().map(|r| r.user_id).collect();
    assert_eq!(served, vec![fresh[3].id]);
    assert_eq!(second.stock.map(|s| s.available_stock), Some(0));
    let (status, code) = reserve_at(&app.client, &app.address, &fresh[4], drop_id).await;
    assert_eq!((status, code.as_str()), (StatusCode::CONFLICT, "sold_out"));
    let audit = app.audit(drop_id).await;
    assert!(
        audit.holds() && audit.active_holds == 5 && audit.purchases == 1,
        "{audit:?}"
    );
}

/// Concurrent requests through the API, the same mix: every buyer gets the answer they
/// would get alone, whatever batches they were combined into.
async fn concurrent_reserves_answer_each_buyer_as_alone(backend: Backend) {
    let app = spawn_app(backend).await;
    let drop_id = drop_with(&app, 20, 1).await;
    let holder = app.customer("holder").await;
    assert_eq!(
        reserve_at(&app.client, &app.address, &holder, drop_id)
            .await
            .0,
        StatusCode::CREATED
    );
    let mut buyers = Vec::new();
    for n in 0..60 {
        buyers.push(app.customer(&format!("buyer{n}")).await);
    }
    let requests = buyers
        .iter()
        .chain(std::iter::repeat_n(&holder, 5))
        .chain(std::iter::repeat_n(&buyers[0], 4))
        .map(|user| reserve_at(&app.client, &app.address, user, drop_id));
    let answers = futures::future::join_all(requests).await;

    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 19, "19 units were left: {answers:?}");
    // Refusals are what the one-buyer reserve says: a holder hears `already_reserved` while
    // units are left and `sold_out` after, as alone.
    assert!(
        answers
            .iter()
            .all(|(s, c)| *s == StatusCode::CREATED || c == "sold_out" || c == "already_reserved"),
        "{answers:?}"
    );
    let holder_answers = &answers[60..65];
    assert!(
        holder_answers
            .iter()
            .all(|(s, _)| *s == StatusCode::CONFLICT),
        "{holder_answers:?}"
    );
    let first_buyer = [&answers[0..1], &answers[65..69]].concat();
    let first_buyer_holds = first_buyer
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert!(
        first_buyer_holds <= 1,
        "one buyer, two holds: {first_buyer:?}"
    );
    let audit = app.audit(drop_id).await;
    assert!(audit.holds(), "{audit:?}");
    assert_eq!(audit.available_stock, 0);
}

/// 300 buyers at once on two instances, 30 units: 30 holds, 270 `sold_out`, no 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_on_two_instances_never_oversell() {
    let app = spawn_app(Backend::PostgresRedis).await;
    let other = app.spawn_instance().await;
    let drop_id = drop_with(&app, 30, 1).await;
    let mut buyers = Vec::new();
    for n in 0..300 {
        buyers.push(app.customer(&format!("crowd{n}")).await);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let requests = buyers.iter().enumerate().map(|(n, user)| {
        let base = if n % 2 == 0 {
            &app.address
        } else {
            &other.address
        };
        reserve_at(&client, base, user, drop_id)
    });
    let answers = futures::future::join_all(requests).await;
    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let sold_out = answers.iter().filter(|(_, c)| c == "sold_out").count();
    assert_eq!((created, sold_out), (30, 270), "{answers:?}");
    let audit = app.audit(drop_id).await;
    assert!(audit.holds() && audit.active_holds == 30, "{audit:?}");
}

async fn metric(app: &TestApp, base: &str, name: &str) -> i64 {
    let text = app
        .metrics_request(base)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// Requests are authenticated from memory; a logout on one instance — or a revocation
/// written straight to the database, as if its event were lost — is refused by another
/// within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_anywhere_is_refused_everywhere_without_a_query_per_request() {
    let app = spawn_app(Backend::PostgresRedis).await;
    let other = app.spawn_instance().await;
    let alice = app.signup("alice@example.com", "password one").await;
    let bob = app.signup("bob@example.com", "password one").await;
    let me = |user: &TestUser| {
        let request = app
            .client
            .get(format!("{}/api/auth/me", other.address))
            .bearer_auth(&user.token);
        async move { request.send().await.unwrap().status() }
    };
    tokio::time::sleep(Duration::from_secs(1)).await; // the view's first read
    let lookups = metric(&app, &other.address, "honeydrop_session_lookups_total").await;
    for _ in 0..50 {
        assert_eq!(me(&alice).await, StatusCode::OK);
    }
    assert_eq!(
        metric(&app, &other.address, "honeydrop_session_lookups_total").await,
        lookups,
        "a request asked the database about its session"
    );

    app.post("/api/auth/logout", Some(&alice.token), json!({}))
        .await;
    let refused = tests::eventually(Duration::from_secs(1), || async {
        (me(&alice).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "the other instance still accepts a logged-out session"
    );

    let session = entity::models::sessions::Entity::find()
        .filter(entity::models::sessions::Column::UserId.eq(bob.id))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    entity::accounts::revoke(&app.db, session.id, Utc::now())
        .await
        .unwrap();
    let refused = tests::eventually(Duration::from_secs(1), || async {
        (me(&bob).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "a revocation without its event was not read back"
    );
}

/// The pool's only connection is taken: a request waits at most the acquire timeout, then
/// gets 503 `overloaded` with `Retry-After`, and it is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_answers_503_with_retry_after() {
    use sea_orm::TransactionTrait;

    let app = tests::spawn_app_with(
        Backend::PostgresRedis,
        &[
            ("DATABASE_MAX_CONNECTIONS", "1"),
            ("DATABASE_ACQUIRE_TIMEOUT_MS", "300"),
        ],
    )
    .await;
    let before = metric(&app, &app.address, "honeydrop_overloaded_total").await;
    let busy = app.state.db.begin().await.unwrap();
    let started = std::time::Instant::now();
    let answer = app.get("/api/products/some-product", None).await;
    let waited = started.elapsed();
    busy.rollback().await.unwrap();
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        "{:?}",
        answer.body
    );
    assert_eq!(answer.headers["retry-after"], "1");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    assert!(metric(&app, &app.address, "honeydrop_overloaded_total").await > before);
    assert_eq!(
        app.get("/api/products", None).await.status,
        StatusCode::OK,
        "and it recovers"
    );
}

both_backends!(concurrent_reserves_answer_each_buyer_as_alone);
