//! A drop's demand figures, from the admin endpoint and `/metrics`, after a day with every
//! kind of ending: a purchase, a release handed to the line, an offer bought, an offer that
//! ran out.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{Backend, TestApp, TestUser, both_backends, spawn_app_with};

async fn reserve(app: &TestApp, user: &TestUser, drop_id: i64) -> tests::Answer {
    let path = format!("/api/drops/{drop_id}/reserve");
    app.post(&path, Some(&user.token), json!({})).await
}

async fn buy(app: &TestApp, user: &TestUser, hold: i64) -> tests::Answer {
    let path = format!("/api/drops/{hold}/purchase");
    app.post(&path, Some(&user.token), json!({})).await
}

async fn stats(app: &TestApp, admin: &TestUser, drop_id: i64) -> tests::Answer {
    let path = format!("/api/admin/drops/{drop_id}/stats");
    app.get(&path, Some(&admin.token)).await
}

/// Waits until the stats satisfy `done` (reserve attempts are recorded every second, expiries
/// when they fall due).
async fn stats_when(
    app: &TestApp,
    admin: &TestUser,
    drop_id: i64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = stats(app, admin, drop_id).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        if done(&answer.body) || tokio::time::Instant::now() > deadline {
            return answer.body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_drops_figures_count_every_attempt_hold_ending_and_offer(backend: Backend) {
    let app = spawn_app_with(backend, &[("RESERVATION_TTL_SECS", "1")]).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 2).await;
    let [ann, bob, cat, dan] = [
        app.customer("ann").await,
        app.customer("bob").await,
        app.customer("cat").await,
        app.customer("dan").await,
    ];
    let ann_hold = reserve(&app, &ann, drop_id).await;
    let bob_hold = reserve(&app, &bob, drop_id).await;
    assert_eq!(
        reserve(&app, &cat, drop_id).await.status,
        StatusCode::CONFLICT
    );
    for waiter in [&cat, &dan] {
        let path = format!("/api/drops/{drop_id}/waitlist");
        assert_eq!(
            app.post(&path, Some(&waiter.token), json!({})).await.status,
            201
        );
    }
    assert!(
        buy(&app, &ann, ann_hold.body["id"].as_i64().unwrap())
            .await
            .status
            .is_success()
    );
    // Bob lets go: the unit is offered to Cat, who buys it.
    let path = format!("/api/reservations/{}", bob_hold.body["id"]);
    assert!(
        app.request(Method::DELETE, &path, Some(&bob.token), None)
            .await
            .status
            .is_success()
    );
    let place = app
        .get(&format!("/api/drops/{drop_id}/waitlist"), Some(&cat.token))
        .await;
    let offer = place.body["reservationId"]
        .as_i64()
        .expect("offered to cat");
    assert!(buy(&app, &cat, offer).await.status.is_success());
    // A unit added goes to Dan, who lets the offer run out; then nobody waits.
    let path = format!("/api/admin/drops/{drop_id}");
    let added = app
        .request(
            Method::PATCH,
            &path,
            Some(&admin.token),
            Some(json!({"addStock": 1})),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK);

    let figures = stats_when(&app, &admin, drop_id, |s| {
        s["expiries"] == 1 && s["reserveAttempts"] == 3
    })
    .await;
    let got = |k: &str| figures[k].as_i64();
    assert_eq!(
        [
            got("reserveAttempts"),
            got("holds"),
            got("activeHolds"),
            got("expiries"),
            got("releases"),
            got("purchases"),
            got("waitlistLength"),
            got("offersMade"),
            got("offersTaken"),
            got("drawEntries"),
        ],
        [
            Some(3),
            Some(4),
            Some(0),
            Some(1),
            Some(1),
            Some(2),
            Some(0),
            Some(2),
            Some(1),
            Some(0)
        ],
        "{figures}"
    );
    assert_eq!(figures["conversion"].as_f64(), Some(0.5));
    assert!(figures["soldOutAt"].is_string(), "{figures}");
    assert!(
        figures["timeToSellOutSeconds"]
            .as_f64()
            .is_some_and(|s| s >= 0.0)
    );

    let metrics = app.metrics().await;
    assert!(
        metrics.contains(&format!(
            "honeydrop_drop_purchases_total{{drop=\"{drop_id}\"}} 2"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "honeydrop_drop_offers_taken_total{{drop=\"{drop_id}\"}} 1"
    )));

    let unknown = stats(&app, &admin, 999_999).await;
    assert_eq!(
        (unknown.status, unknown.body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("drop_not_found"))
    );
    let as_customer = app
        .get(
            &format!("/api/admin/drops/{drop_id}/stats"),
            Some(&ann.token),
        )
        .await;
    assert_eq!(as_customer.status, StatusCode::FORBIDDEN);
}

both_backends!(a_drops_figures_count_every_attempt_hold_ending_and_offer);
