//! The operations console's API, on both backends: queues counted, items paged and acted
//! on, pauses that every worker obeys, worker reports, the audit trail.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{Smtp, store_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{Backend, TestApp, TestUser, both_backends, eventually, spawn_app_with};
use worker::jobs::Ping;

/// Fast heartbeats, so a pause or a quiet shows within a test's patience.
const FAST: [(&str, &str); 1] = [("WORKER_HEARTBEAT_MS", "200")];

async fn queue(app: &TestApp, admin: &TestUser, name: &str) -> Value {
    let answer = app.get("/api/admin/ops/queues", Some(&admin.token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no queue {name} in {:?}", answer.body))
}

async fn act(app: &TestApp, admin: &TestUser, path: &str) -> Value {
    let answer = app
        .post(
            &format!("/api/admin/ops{path}"),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{path}: {:?}", answer.body);
    answer.body
}

fn product(in_stock: bool) -> Value {
    json!({"name": "Heather Honey", "slug": "heather-honey", "price": 12.5, "inStock": in_stock})
}

async fn holds_are_listed_as_scheduled_expiries_and_can_be_run_now(backend: Backend) {
    let app = spawn_app_with(backend, &FAST).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 5).await;
    for name in ["ann", "bob", "cid"] {
        let buyer = app.customer(name).await;
        let held = app
            .post(
                &format!("/api/drops/{drop_id}/reserve"),
                Some(&buyer.token),
                json!({}),
            )
            .await;
        assert_eq!(held.status, StatusCode::CREATED, "{:?}", held.body);
    }

    // Each hold's expiry job is enqueued just after its 201 (off the buyer's path).
    let scheduled = eventually(Duration::from_secs(10), || async {
        let q = queue(&app, &admin, "expiry").await;
        (q["scheduled"] == 3).then_some(q)
    })
    .await;
    let expiry = scheduled.unwrap_or(queue(&app, &admin, "expiry").await);
    assert_eq!(
        (expiry["job"].as_str(), expiry["scheduled"].as_u64()),
        (Some("ExpireReservation"), Some(3)),
        "{expiry}"
    );
    assert!(expiry["paused"].is_null());

    // Two pages of two and one, due first, with a cursor between them.
    let first = app
        .get(
            "/api/admin/ops/queues/expiry/items?state=scheduled&limit=2",
            Some(&admin.token),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let cursor = first.body["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = app
        .get(
            &format!("/api/admin/ops/queues/expiry/items?state=scheduled&limit=2&cursor={cursor}"),
            Some(&admin.token),
        )
        .await;
    let mut ids: Vec<String> = first.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second.body["items"].as_array().unwrap())
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        3,
        "every hold's expiry once: {:?} {:?}",
        first.body,
        second.body
    );

    let item = app
        .get(
            &format!("/api/admin/ops/queues/expiry/items/{}", ids[0]),
            Some(&admin.token),
        )
        .await;
    assert_eq!(item.status, StatusCode::OK, "{:?}", item.body);
    assert_eq!(item.body["state"], "scheduled");
    assert!(
        item.body["payload"]["reservation_id"].is_i64(),
        "{:?}",
        item.body
    );
    let about: Vec<&str> = item.body["about"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["href"].as_str())
        .collect();
    assert_eq!(about, [format!("/api/admin/drops/{drop_id}/stats")]);

    // Run now: the job runs at once and changes nothing (the hold is not due), and the item
    // leaves the schedule. Repeating it finds nothing to do.
    let ran = act(
        &app,
        &admin,
        &format!("/queues/expiry/items/{}/run-now", ids[0]),
    )
    .await;
    assert_eq!(ran["affected"], 1);
    let left = eventually(Duration::from_secs(10), || async {
        let q = queue(&app, &admin, "expiry").await;
        (q["scheduled"] == 2).then_some(q)
    })
    .await;
    assert!(left.is_some(), "the item ran");
    assert_eq!(
        app.audit(drop_id).await.active_holds,
        3,
        "an early expiry job expires nothing"
    );
    let again = app
        .post(
            &format!("/api/admin/ops/queues/expiry/items/{}/run-now", ids[0]),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert!(
        (again.status == StatusCode::OK && again.body["affected"] == 0)
            || again.status == StatusCode::NOT_FOUND,
        "{:?}",
        again
    );

    let audit = app.get("/api/admin/ops/audit", Some(&admin.token)).await;
    assert_eq!(audit.body[0]["action"], "run_now", "{:?}", audit.body);
    assert_eq!(audit.body[0]["target"], "expiry");
    assert_eq!(audit.body[0]["item"].as_str(), Some(ids[0].as_str()));
    assert!(
        audit.body[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("admin-")
    );
}

async fn bad_requests_get_clear_codes_and_customers_get_nothing(backend: Backend) {
    let app = spawn_app_with(backend, &FAST).await;
    let admin = app.admin().await;
    let customer = app.customer("cat").await;
    let token = Some(admin.token.as_str());
    for (path, status, code) in [
        (
            "/api/admin/ops/queues/nope/items",
            StatusCode::NOT_FOUND,
            "queue_not_found",
        ),
        (
            "/api/admin/ops/queues/expiry/items/nope",
            StatusCode::NOT_FOUND,
            "item_not_found",
        ),
        (
            "/api/admin/ops/queues/mail/items/12345",
            StatusCode::NOT_FOUND,
            "item_not_found",
        ),
        (
            "/api/admin/ops/queues/expiry/items?state=scheduled&cursor=%21%21",
            StatusCode::BAD_REQUEST,
            "validation_failed",
        ),
        (
            "/api/admin/ops/queues/expiry/items?state=scheduled&cursor=AAAA",
            StatusCode::NOT_FOUND,
            "invalid_cursor",
        ),
        (
            "/api/admin/ops/queues/mail/items?state=failed&cursor=abc",
            StatusCode::NOT_FOUND,
            "invalid_cursor",
        ),
        (
            "/api/admin/ops/queues/expiry/items?state=sideways",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let answer = app.get(path, token).await;
        assert_eq!(
            (answer.status, answer.code()),
            (status, code),
            "{path}: {:?}",
            answer.body
        );
    }
    for path in [
        "/queues/expiry/items/nope/retry",
        "/queues/mail/items/999/discard",
    ] {
        let answer = app
            .post(&format!("/api/admin/ops{path}"), token, json!({}))
            .await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::NOT_FOUND, "item_not_found"),
            "{path}"
        );
    }
    let answer = app
        .post("/api/admin/ops/workers/nobody/quiet", token, json!({}))
        .await;
    assert_eq!(answer.code(), "worker_not_found");
    let forbidden = app
        .post(
            "/api/admin/ops/queues/mail/pause",
            Some(&customer.token),
            json!({}),
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert!(
        queue(&app, &admin, "mail").await["paused"].is_null(),
        "a refused pause changes nothing"
    );
    let anonymous = app.get("/api/admin/ops/queues", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

async fn pausing_mail_holds_restock_alerts_and_resuming_sends_each_once(backend: Backend) {
    let store = store_with(backend, Smtp::Accepting, &FAST).await;
    let app = &store.app;
    let admin = app.admin().await;
    let id = store.publish("entry-1", 1, product(false)).await.body["productId"]
        .as_i64()
        .unwrap();
    let subscribers: Vec<String> = (0..6).map(|i| format!("sub{i}@example.com")).collect();
    for email in &subscribers {
        store.confirmed_subscriber(id, email).await;
    }

    act(app, &admin, "/queues/mail/pause").await;
    let paused = queue(app, &admin, "mail").await;
    assert!(
        paused["paused"]["by"]
            .as_str()
            .unwrap()
            .starts_with("admin-"),
        "{paused}"
    );
    store.publish("entry-1", 2, product(true)).await;

    // The fan-out writes every alert; none goes out while mail is paused.
    let waiting = eventually(Duration::from_secs(10), || async {
        let q = queue(app, &admin, "mail").await;
        (q["ready"] == 6).then_some(q)
    })
    .await;
    assert!(
        waiting.is_some(),
        "six alerts wait: {}",
        queue(app, &admin, "mail").await
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for email in &subscribers {
        assert_eq!(
            store.smtp.messages_to(email).len(),
            1,
            "{email} got only the confirmation"
        );
    }
    assert!(
        app.metrics()
            .await
            .contains("honeydrop_queue_paused{queue=\"mail\"} 1")
    );

    act(app, &admin, "/queues/mail/resume").await;
    for email in &subscribers {
        store.smtp.wait_for(email, 2).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for email in &subscribers {
        assert_eq!(
            store.smtp.messages_to(email).len(),
            2,
            "{email}: the confirmation and one alert"
        );
    }
    let after = queue(app, &admin, "mail").await;
    assert_eq!(
        (after["ready"].as_u64(), after["paused"].is_null()),
        (Some(0), true),
        "{after}"
    );
    let actions: Vec<String> = app
        .get("/api/admin/ops/audit", Some(&admin.token))
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(actions, ["resume mail", "pause mail"]);
}

async fn failed_mail_is_retried_once_the_server_is_fixed_and_discard_removes_it(backend: Backend) {
    let mut store = store_with(backend, Smtp::Rejecting, &FAST).await;
    let admin = store.app.admin().await;
    let id = store.publish("entry-1", 1, product(false)).await.body["productId"]
        .as_i64()
        .unwrap();
    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        store.notify_me(id, email).await;
    }
    let app = &store.app;
    let failed = eventually(Duration::from_secs(10), || async {
        let q = queue(app, &admin, "mail").await;
        (q["failed"] == 3).then_some(q)
    })
    .await;
    assert!(
        failed.is_some(),
        "three confirmations failed: {}",
        queue(app, &admin, "mail").await
    );
    let page = app
        .get(
            "/api/admin/ops/queues/mail/items?state=failed",
            Some(&admin.token),
        )
        .await;
    let items = page.body["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3, "{:?}", page.body);
    assert!(
        items[0]["lastError"].as_str().unwrap().contains("550"),
        "{:?}",
        items[0]
    );
    assert_eq!(items[0]["payload"]["kind"], "subscription_confirmation");

    // The operator gives up on one, fixes the server, and retries the rest.
    let dropped = items
        .iter()
        .find(|i| i["payload"]["recipient"] == "c@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        act(
            app,
            &admin,
            &format!("/queues/mail/items/{dropped}/discard")
        )
        .await["affected"],
        1
    );
    let gone = app
        .post(
            &format!("/api/admin/ops/queues/mail/items/{dropped}/discard"),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(gone.code(), "item_not_found", "a discarded item is gone");
    store.smtp.restart_as(Smtp::Accepting).await;
    let app = &store.app;
    assert_eq!(
        act(app, &admin, "/queues/mail/retry-failed").await["affected"],
        2
    );
    for email in ["a@example.com", "b@example.com"] {
        store.smtp.wait_for(email, 1).await;
    }
    let retried = items
        .iter()
        .find(|i| i["payload"]["recipient"] == "a@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        act(app, &admin, &format!("/queues/mail/items/{retried}/retry")).await["affected"],
        0,
        "sent: nothing to retry"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for (email, expected) in [
        ("a@example.com", 1),
        ("b@example.com", 1),
        ("c@example.com", 0),
    ] {
        assert_eq!(store.smtp.messages_to(email).len(), expected, "{email}");
    }
    assert_eq!(queue(app, &admin, "mail").await["failed"], 0);
}

async fn a_failed_job_waits_for_an_operator_and_retry_runs_it(backend: Backend) {
    let app = spawn_app_with(backend, &FAST).await;
    let admin = app.admin().await;
    let until = Utc::now() + chrono::Duration::milliseconds(1500);
    let mut pongs = app.state.bus.subscribe();
    let ping = Ping {
        token: "flaky".into(),
        fail_until: Some(until),
    };
    app.state.queue.push(ping).await.expect("pushed");

    let failed = eventually(Duration::from_secs(10), || async {
        let page = app
            .get(
                "/api/admin/ops/queues/ping/items?state=failed",
                Some(&admin.token),
            )
            .await;
        page.body["items"]
            .as_array()
            .and_then(|i| i.first().cloned())
    })
    .await
    .expect("the ping is failed and kept");
    assert!(
        failed["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("asked to fail"),
        "{failed}"
    );
    assert_eq!(queue(&app, &admin, "ping").await["failed"], 1);

    tokio::time::sleep_until(
        tokio::time::Instant::now() + (until - Utc::now()).to_std().unwrap_or_default(),
    )
    .await;
    let id = failed["id"].as_str().unwrap();
    assert_eq!(
        act(&app, &admin, &format!("/queues/ping/items/{id}/retry")).await["affected"],
        1
    );
    let pong = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(worker::events::Event::WorkerPong(p)) = pongs.recv().await
                && p.token == "flaky"
            {
                return p;
            }
        }
    })
    .await;
    assert!(pong.is_ok(), "the retried ping ran");
    assert_eq!(queue(&app, &admin, "ping").await["failed"], 0);
    let again = act(&app, &admin, &format!("/queues/ping/items/{id}/retry")).await;
    assert_eq!(
        again["affected"], 0,
        "a second retry of the same item does nothing"
    );
}

async fn workers_report_in_and_a_quieted_worker_takes_nothing_new(backend: Backend) {
    let app = spawn_app_with(backend, &FAST).await;
    let admin = app.admin().await;
    let running = eventually(Duration::from_secs(10), || async {
        let workers = app
            .get("/api/admin/ops/workers", Some(&admin.token))
            .await
            .body;
        workers
            .as_array()
            .and_then(|w| w.iter().find(|w| w["state"] == "running").cloned())
    })
    .await
    .expect("the worker reports in");
    assert_eq!(running["pid"].as_i64(), Some(i64::from(std::process::id())));
    assert!(running["rssBytes"].as_i64().unwrap() > 0);
    let name = running["name"].as_str().unwrap().to_owned();

    act(&app, &admin, &format!("/workers/{name}/quiet")).await;
    let quiet = eventually(Duration::from_secs(5), || async {
        let workers = app
            .get("/api/admin/ops/workers", Some(&admin.token))
            .await
            .body;
        workers
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == name.as_str() && w["state"] == "quiet")
            .then_some(())
    })
    .await;
    assert!(quiet.is_some(), "shown as quiet");
    // The quieted worker is the only one: the diagnostics ping says so at once, and a ping
    // job waits, ready, with nobody to answer it.
    let ping = app
        .post("/api/admin/worker-ping", Some(&admin.token), json!({}))
        .await;
    assert_eq!(
        (ping.status, ping.code()),
        (StatusCode::CONFLICT, "queue_paused"),
        "{:?}",
        ping.body
    );
    // A quieted worker stops taking new work within a second (it hears of it at once over
    // the bus, then its apalis worker stops).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut pongs = app.state.bus.subscribe();
    let job = Ping {
        token: "unanswered".into(),
        fail_until: None,
    };
    app.state.queue.push(job).await.expect("pushed");
    let answered = tokio::time::timeout(Duration::from_millis(1500), async {
        loop {
            if let Ok(worker::events::Event::WorkerPong(p)) = pongs.recv().await
                && p.token == "unanswered"
            {
                return p.worker;
            }
        }
    })
    .await;
    assert!(
        answered.is_err(),
        "a quiet worker took a new job: {answered:?} ({name} was quieted)"
    );
    assert!(queue(&app, &admin, "ping").await["ready"].as_u64().unwrap() >= 1);
    if backend == Backend::PostgresRedis {
        // Another worker takes what the quiet one leaves, once it has reported in.
        let fresh = app.spawn_worker().await;
        let reported = eventually(Duration::from_secs(10), || async {
            let workers = app
                .get("/api/admin/ops/workers", Some(&admin.token))
                .await
                .body;
            workers
                .as_array()?
                .iter()
                .any(|w| w["name"] == fresh.name.as_str() && w["state"] == "running")
                .then_some(())
        })
        .await;
        assert!(reported.is_some(), "the fresh worker reports in");
        let ping = app
            .post("/api/admin/worker-ping", Some(&admin.token), json!({}))
            .await;
        assert_eq!(ping.status, StatusCode::OK, "{:?}", ping.body);
        assert!(!ping.body["worker"].as_str().unwrap().starts_with(&name));
    }
}

/// `n` confirmed subscribers of a new sold-out product, written straight to the database
/// (the double opt-in is not what this is about); returns the product id and the emails.
async fn product_with_subscribers(app: &TestApp, admin: &TestUser, n: usize) -> (i64, Vec<String>) {
    use entity::models::subscriptions;
    use sea_orm::{ActiveValue::Set, EntityTrait};
    let created = app
        .post(
            "/api/admin/products",
            Some(&admin.token),
            json!({"name": "Fan honey", "priceCents": 900, "inStock": false}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let product_id = created.body["id"].as_i64().unwrap();
    let now = Utc::now();
    let emails: Vec<String> = (0..n).map(|i| format!("fan{i}@example.com")).collect();
    let rows = emails.iter().map(|email| subscriptions::ActiveModel {
        product_id: Set(product_id),
        email: Set(email.clone()),
        status: Set(subscriptions::SubscriptionStatus::Confirmed),
        confirm_token_hash: Set(entity::tokens::hash(&entity::tokens::generate())),
        unsubscribe_token_hash: Set(entity::tokens::hash(&entity::tokens::generate())),
        confirmation_sent_at: Set(Some(now)),
        confirmed_at: Set(Some(now)),
        created_at: Set(now),
        ..Default::default()
    });
    subscriptions::Entity::insert_many(rows)
        .exec(&app.db)
        .await
        .expect("subscribers");
    (product_id, emails)
}

async fn pause_resume_and_retry_all_during_a_fan_out_lose_and_double_nothing(backend: Backend) {
    // The first 15 sends are refused and, with one attempt allowed, fail for good; the rest
    // go out at 40 a second, so the operator acts while the fan-out is still sending.
    let settings = [
        FAST[0],
        ("MAIL_MAX_ATTEMPTS", "1"),
        ("MAIL_RATE_PER_SEC", "40"),
    ];
    let store = store_with(backend, Smtp::FailingTimes(15), &settings).await;
    let app = &store.app;
    let admin = app.admin().await;
    let (product_id, emails) = product_with_subscribers(app, &admin, 120).await;
    let delivered = || store.smtp.messages().len();
    let restocked = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/admin/products/{product_id}"),
            Some(&admin.token),
            Some(json!({"inStock": true})),
        )
        .await;
    assert_eq!(restocked.status, StatusCode::OK, "{:?}", restocked.body);

    let started = eventually(Duration::from_secs(20), || async {
        (delivered() >= 20).then_some(())
    })
    .await;
    assert!(started.is_some(), "the fan-out sends");
    act(app, &admin, "/queues/mail/pause").await;
    // The pumps claim nothing more; the sends they had claimed finish and are recorded.
    let drained = eventually(Duration::from_secs(20), || async {
        (queue(app, &admin, "mail").await["inFlight"] == 0).then_some(())
    })
    .await;
    assert!(
        drained.is_some(),
        "claimed sends finish: {}",
        queue(app, &admin, "mail").await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = delivered();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(delivered(), held, "nothing is sent while mail is paused");
    assert!(held < 105, "the pause landed mid fan-out ({held} sent)");
    assert_eq!(
        queue(app, &admin, "mail").await["failed"],
        15,
        "the refused sends failed for good"
    );

    act(app, &admin, "/queues/mail/resume").await;
    let retried = act(app, &admin, "/queues/mail/retry-failed").await;
    assert_eq!(retried["affected"], 15);
    let all = eventually(Duration::from_secs(30), || async {
        (delivered() >= 120).then_some(())
    })
    .await;
    assert!(
        all.is_some(),
        "every alert went out: {} of 120",
        delivered()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for email in &emails {
        assert_eq!(
            store.smtp.messages_to(email).len(),
            1,
            "{email} got one alert"
        );
    }
    let mail = queue(app, &admin, "mail").await;
    assert_eq!(
        (mail["ready"].as_u64(), mail["failed"].as_u64()),
        (Some(0), Some(0)),
        "{mail}"
    );
}

async fn a_worker_ping_says_when_its_queue_is_paused(backend: Backend) {
    let app = spawn_app_with(backend, &FAST).await;
    let admin = app.admin().await;
    act(&app, &admin, "/queues/ping/pause").await;
    let refused = app
        .post("/api/admin/worker-ping", Some(&admin.token), json!({}))
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "queue_paused"),
        "{:?}",
        refused.body
    );
    act(&app, &admin, "/queues/ping/resume").await;
    let answered = app
        .post("/api/admin/worker-ping", Some(&admin.token), json!({}))
        .await;
    assert_eq!(answered.status, StatusCode::OK, "{:?}", answered.body);
}

both_backends!(
    holds_are_listed_as_scheduled_expiries_and_can_be_run_now,
    bad_requests_get_clear_codes_and_customers_get_nothing,
    pausing_mail_holds_restock_alerts_and_resuming_sends_each_once,
    failed_mail_is_retried_once_the_server_is_fixed_and_discard_removes_it,
    a_failed_job_waits_for_an_operator_and_retry_runs_it,
    workers_report_in_and_a_quieted_worker_takes_nothing_new,
    pause_resume_and_retry_all_during_a_fan_out_lose_and_double_nothing,
    a_worker_ping_says_when_its_queue_is_paused,
);
