//! What an outside probe found (issue #12), each shown from the outside: guesses sent at
//! once, NUL bytes and absurd dates, refresh-token families, sockets after logout, the price
//! a hold locks in, links a browser would run, and unsigned webhook topics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{net::IpAddr, time::Duration};

use chrono::Utc;
use common::{Delivery, PUBLISH, Smtp, entry, store};
use reqwest::{Method, StatusCode};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use tests::{
    Backend, TestApp, both_backends, spawn_app, spawn_app_with, user_from, wait_for_frame,
};

const PASSWORD: &str = "password one";

/// A login sent from `from` (any address of 127.0.0.0/8 reaches the store).
async fn login_from(app: &TestApp, from: &str, email: &str, password: &str) -> StatusCode {
    let from: IpAddr = from.parse().unwrap();
    let client = reqwest::Client::builder()
        .local_address(from)
        .build()
        .unwrap();
    client
        .post(format!("{}/api/auth/login", app.address))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

async fn concurrent_guesses_verify_at_most_the_limit(backend: Backend) {
    let app = spawn_app(backend).await;
    app.signup("guessed@example.com", PASSWORD).await;
    let guesses = (0..29).map(|n| {
        let app = &app;
        async move {
            login_from(
                app,
                "127.0.0.1",
                "guessed@example.com",
                &format!("guess {n:04}"),
            )
            .await
        }
    });
    let answers = futures::future::join_all(guesses).await;
    let verified = answers
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let refused = answers
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(
        (verified, refused),
        (5, 24),
        "at most LOGIN_MAX_FAILURES guesses are checked: {answers:?}"
    );
    let right = login_from(&app, "127.0.0.1", "guessed@example.com", PASSWORD).await;
    assert_eq!(
        right,
        StatusCode::TOO_MANY_REQUESTS,
        "the right password after 29 guesses"
    );
}

async fn a_lockout_from_one_address_does_not_lock_the_owner_out(backend: Backend) {
    let app = spawn_app(backend).await;
    app.signup("owner@example.com", PASSWORD).await;
    for _ in 0..6 {
        login_from(&app, "127.0.0.1", "owner@example.com", "not the password").await;
    }
    assert_eq!(
        login_from(&app, "127.0.0.1", "owner@example.com", PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the guessing address is locked"
    );
    assert_eq!(
        login_from(&app, "127.0.0.2", "owner@example.com", PASSWORD).await,
        StatusCode::OK,
        "the owner, elsewhere, signs in"
    );
}

async fn guesses_from_many_addresses_slow_the_account_down(backend: Backend) {
    let app = spawn_app(backend).await;
    app.signup("spread@example.com", PASSWORD).await;
    // 4 × LOGIN_MAX_FAILURES attempts, five per address, use up the account's fast lane.
    for n in 0..20 {
        let from = format!("127.0.1.{}", n / 5 + 1);
        let status = login_from(&app, &from, "spread@example.com", "not the password").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {n} from {from}");
    }
    let at_once =
        futures::future::join_all(
            (1..=4).map(|n| {
                let app = &app;
                async move {
                    login_from(app, &format!("127.0.2.{n}"), "spread@example.com", "nope").await
                }
            }),
        )
        .await;
    assert_eq!(
        at_once
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count(),
        3,
        "one attempt per second on a slowed account: {at_once:?}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        login_from(&app, "127.0.3.1", "spread@example.com", PASSWORD).await,
        StatusCode::OK,
        "the owner gets through after a moment"
    );
}

async fn nul_bytes_and_absurd_dates_are_refused_at_the_edge(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    for path in [
        "/api/products/%00",
        "/api/products/a%1Bb",
        "/api/drops/%00",
        "/api/subscriptions/confirm?token=%00",
    ] {
        let answer = app.get(path, None).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{path}: {:?}",
            answer.body
        );
    }
    let drops = [
        json!({"name": "a\u{0}b", "priceCents": 100, "totalStock": 1}),
        json!({"name": "a\u{1b}[31mb", "priceCents": 100, "totalStock": 1}),
        json!({"name": "a\r\nb", "priceCents": 100, "totalStock": 1}),
        json!({"name": "ok", "description": "a\u{0}b", "priceCents": 100, "totalStock": 1}),
        json!({"name": "ok", "priceCents": 100, "totalStock": 1, "startsAt": "-262143-01-01T00:00:00Z"}),
        json!({"name": "ok", "priceCents": 100, "totalStock": 1, "endsAt": "+262142-12-31T23:59:59Z"}),
        json!({"name": "ok", "priceCents": 100, "totalStock": 1, "startsAt": "1970-01-01T00:00:00Z"}),
    ];
    for body in drops {
        let answer = app
            .post("/api/admin/drops", Some(&admin.token), body.clone())
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {:?}",
            answer.body
        );
    }
    let products = [
        json!({"name": "a\u{0}b", "priceCents": 100, "inStock": true}),
        json!({"name": "ok", "slug": "ok\u{0}", "priceCents": 100, "inStock": true}),
        json!({"name": "ok", "description": "a\u{0}b", "priceCents": 100, "inStock": true}),
        json!({"name": "ok", "imageUrl": "javascript:alert(1)", "priceCents": 100, "inStock": true}),
        json!({"name": "ok", "imageUrl": "data:image/png;base64,AAAA", "priceCents": 100, "inStock": true}),
        json!({"name": "ok", "imageUrl": "http://example.com/a.png", "priceCents": 100, "inStock": true}),
    ];
    for body in products {
        let answer = app
            .post("/api/admin/products", Some(&admin.token), body.clone())
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {:?}",
            answer.body
        );
    }
    let signup = app
        .post(
            "/api/auth/signup",
            None,
            json!({"email": "nul@example.com", "password": PASSWORD, "displayName": "N\u{0}L"}),
        )
        .await;
    assert_eq!(signup.status, StatusCode::BAD_REQUEST, "{:?}", signup.body);
    // Nothing was stored, and the store still answers.
    assert_eq!(
        entity::models::drops::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        entity::models::products::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        entity::models::users::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        1
    );

    let fine = app
        .post(
            "/api/admin/products",
            Some(&admin.token),
            json!({"name": "Acacia", "description": "Line one\nline two\ttabbed",
                   "imageUrl": "https://cdn.example.com/acacia.png", "priceCents": 100, "inStock": true}),
        )
        .await;
    assert_eq!(fine.status, StatusCode::CREATED, "{:?}", fine.body);
    assert_eq!(fine.body["description"], "Line one\nline two\ttabbed");
}

async fn a_webhook_with_nul_bytes_is_recorded_as_rejected(backend: Backend) {
    let store = store(backend, Smtp::Accepting).await;
    for fields in [
        entry("honey\u{0}", 1, json!({"name": "Honey", "price": 5})),
        entry("honey-2", 1, json!({"name": "Ho\u{0}ney", "price": 5})),
        entry(
            "honey-3",
            1,
            json!({"name": "Honey", "description": "a\u{0}", "price": 5}),
        ),
    ] {
        let answer = store.deliver(&Delivery::new(PUBLISH, &fields)).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }
    let deliveries = store.deliveries().await;
    assert_eq!(deliveries.len(), 3);
    assert!(
        deliveries
            .iter()
            .all(|d| d.outcome == entity::catalog::DeliveryOutcome::Rejected),
        "{deliveries:?}"
    );
    assert_eq!(
        entity::models::products::Entity::find()
            .count(&store.app.db)
            .await
            .unwrap(),
        0
    );
}

async fn a_webhook_whose_topic_is_not_signed_is_refused(backend: Backend) {
    let store = store(backend, Smtp::Accepting).await;
    let body = entry(
        "honey",
        1,
        json!({"name": "Honey", "price": 5, "inStock": true}),
    );
    let delivery = Delivery::new(PUBLISH, &body);
    let answer = store
        .deliver_tampered(&delivery, |headers| {
            // A signature made without the topic, then the topic set to anything.
            let unsigned: Vec<(&str, &str)> = vec![(
                "Content-Type",
                "application/vnd.contentful.management.v1+json",
            )];
            let (signature, signed) = api::http::contentful::sign(
                common::SECRET,
                "POST",
                "/api/webhooks/contentful",
                &unsigned,
                &delivery.body,
                delivery.timestamp_ms,
            );
            headers.retain(|(k, _)| {
                !k.starts_with("X-Contentful-Signature") && k != "X-Contentful-Signed-Headers"
            });
            headers.push(("X-Contentful-Signature".into(), signature));
            headers.push(("X-Contentful-Signed-Headers".into(), signed));
        })
        .await;
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::UNAUTHORIZED, "invalid_signature"),
        "{:?}",
        answer.body
    );
    assert!(store.deliveries().await.is_empty());
}

async fn refresh(app: &TestApp, token: &str) -> tests::Answer {
    app.post("/api/auth/refresh", None, json!({"refreshToken": token}))
        .await
}

async fn any_earlier_refresh_token_ends_the_family(backend: Backend) {
    let app = spawn_app(backend).await;
    let r0 = app.signup("family@example.com", PASSWORD).await;
    let r1 = user_from(&refresh(&app, &r0.refresh_token).await.body);
    let r2 = user_from(&refresh(&app, &r1.refresh_token).await.body);
    assert_eq!(
        refresh(&app, &r0.refresh_token).await.status,
        StatusCode::UNAUTHORIZED,
        "two rotations back"
    );
    let current = refresh(&app, &r2.refresh_token).await;
    assert_eq!(
        current.status,
        StatusCode::UNAUTHORIZED,
        "the family died with the reuse: {:?}",
        current.body
    );
    assert_eq!(
        app.get("/api/auth/me", Some(&r2.token)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn a_socket_forgets_its_owner_when_the_session_ends(backend: Backend) {
    let app = spawn_app_with(backend, &[("RESERVATION_TTL_SECS", "2")]).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 5).await;
    let buyer = app.signup("socket@example.com", PASSWORD).await;
    let held = app
        .post(
            &format!("/api/drops/{drop_id}/reserve"),
            Some(&buyer.token),
            json!({}),
        )
        .await;
    assert_eq!(held.status, StatusCode::CREATED, "{:?}", held.body);
    let hold_id = held.body["id"].as_i64().unwrap();
    let (mut socket, _) = app.websocket(Some(&buyer.token)).await;
    assert_eq!(
        app.post("/api/auth/logout", Some(&buyer.token), json!({}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let ended = wait_for_frame(&mut socket, "session_ended", Duration::from_secs(3), |_| {
        true
    })
    .await;
    assert!(ended.is_some(), "the socket was not told its session ended");
    let expired = wait_for_frame(
        &mut socket,
        "reservation_expired",
        Duration::from_secs(5),
        |d| d["reservationId"] == hold_id,
    )
    .await;
    assert!(
        expired.is_none(),
        "a signed-out socket still heard {expired:?}"
    );
    assert_eq!(
        app.audit(drop_id).await.active_holds,
        0,
        "the hold did expire meanwhile"
    );
}

/// The session ends on one instance; the socket on another hears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_reaches_the_sockets_of_every_instance() {
    let app = spawn_app(Backend::PostgresRedis).await;
    let other = app.spawn_instance().await;
    let user = app.signup("far@example.com", PASSWORD).await;
    let (mut socket, _) = other.websocket(Some(&user.token)).await;
    app.post("/api/auth/logout", Some(&user.token), json!({}))
        .await;
    let ended = wait_for_frame(&mut socket, "session_ended", Duration::from_secs(3), |_| {
        true
    })
    .await;
    assert!(ended.is_some(), "the other instance's socket was not told");
}

async fn a_hold_keeps_its_price_and_outlives_the_drop_window(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 5).await;
    let buyer = app.customer("pricey").await;
    let held = app
        .post(
            &format!("/api/drops/{drop_id}/reserve"),
            Some(&buyer.token),
            json!({}),
        )
        .await;
    assert_eq!(held.body["priceCents"], 12_000, "{:?}", held.body);
    let ends_at = (Utc::now() + chrono::Duration::milliseconds(800)).to_rfc3339();
    let patched = app
        .request(
            Method::PATCH,
            &format!("/api/admin/drops/{drop_id}"),
            Some(&admin.token),
            Some(json!({"priceCents": 99_000, "endsAt": ends_at})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let hold_id = held.body["id"].as_i64().unwrap();
    let bought = app
        .post(
            &format!("/api/drops/{hold_id}/purchase"),
            Some(&buyer.token),
            json!({}),
        )
        .await;
    assert_eq!(bought.status, StatusCode::CREATED, "{:?}", bought.body);
    let purchase = entity::models::purchases::Entity::find()
        .filter(entity::models::purchases::Column::ReservationId.eq(hold_id))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        purchase.amount_cents, 12_000,
        "charged the price shown at the hold"
    );
    let late = app
        .post(
            &format!("/api/drops/{drop_id}/reserve"),
            Some(&app.customer("late").await.token),
            json!({}),
        )
        .await;
    assert_eq!(late.code(), "drop_not_active", "{:?}", late.body);
}

both_backends!(
    concurrent_guesses_verify_at_most_the_limit,
    a_lockout_from_one_address_does_not_lock_the_owner_out,
    guesses_from_many_addresses_slow_the_account_down,
    nul_bytes_and_absurd_dates_are_refused_at_the_edge,
    a_webhook_with_nul_bytes_is_recorded_as_rejected,
    a_webhook_whose_topic_is_not_signed_is_refused,
    any_earlier_refresh_token_ends_the_family,
    a_socket_forgets_its_owner_when_the_session_ends,
    a_hold_keeps_its_price_and_outlives_the_drop_window,
);

/// Logins hash with argon2 (19 MiB each): after a burst, the api's memory comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_comes_back_after_a_login_burst() {
    use std::collections::HashMap;

    use tests::process::{Process, wait_ready};

    let dir = tempfile::tempdir().unwrap();
    let port = tests::free_port();
    let env = HashMap::from([
        ("HOST", "127.0.0.1".to_owned()),
        ("PORT", port.to_string()),
        ("DATA_DIR", dir.path().display().to_string()),
        ("AUTH_RATE_LIMIT_PER_MINUTE", "100000".to_owned()),
        ("SIGNUPS_PER_ADDRESS_PER_HOUR", "100000".to_owned()),
        ("HOLDS_PER_DROP_PER_ADDRESS", "100000".to_owned()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
    ]);
    let mut api = Process::start("api", &env, false);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    let client = reqwest::Client::new();
    let signup = client
        .post(format!("{base}/api/auth/signup"))
        .json(&json!({"email": "burst@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), StatusCode::CREATED);
    for _ in 0..4 {
        let logins = (0..50).map(|n| {
            let client = client.clone();
            let url = format!("{base}/api/auth/login");
            async move {
                // Distinct emails: each is verified (against the dummy hash), none locks.
                let email = format!("nobody{n}@example.com");
                client
                    .post(url)
                    .json(&json!({"email": email, "password": PASSWORD}))
                    .send()
                    .await
                    .map(|r| r.status())
            }
        });
        let answers = futures::future::join_all(logins).await;
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Ok(s) if *s == StatusCode::UNAUTHORIZED)),
            "{answers:?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", api.child().id())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        rss_kb <= 100 * 1024,
        "api resident memory after the burst: {} MB",
        rss_kb / 1024
    );
}
