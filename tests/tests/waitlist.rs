//! The waitlist of a sold-out drop: who may join, and where a returned unit goes — to the
//! first in line as a personal hold, never to a racing reserve.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Smtp, store_with};
use entity::models::{reservations, waitlist_entries};
use reqwest::StatusCode;
use sea_orm::{EntityTrait, QueryOrder};
use serde_json::json;
use tests::{Backend, TestApp, TestUser, both_backends, spawn_app, spawn_app_with, wait_for_frame};

async fn reserve(app: &TestApp, user: &TestUser, drop_id: i64) -> tests::Answer {
    let path = format!("/api/drops/{drop_id}/reserve");
    app.post(&path, Some(&user.token), json!({})).await
}

async fn join(app: &TestApp, user: &TestUser, drop_id: i64) -> tests::Answer {
    let path = format!("/api/drops/{drop_id}/waitlist");
    app.post(&path, Some(&user.token), json!({})).await
}

async fn place(app: &TestApp, user: &TestUser, drop_id: i64) -> tests::Answer {
    let path = format!("/api/drops/{drop_id}/waitlist");
    app.get(&path, Some(&user.token)).await
}

async fn leave(app: &TestApp, user: &TestUser, drop_id: i64) -> tests::Answer {
    let path = format!("/api/drops/{drop_id}/waitlist");
    app.request(reqwest::Method::DELETE, &path, Some(&user.token), None)
        .await
}

async fn available(app: &TestApp, drop_id: i64) -> i64 {
    let drop = app.get(&format!("/api/drops/{drop_id}"), None).await;
    drop.body["availableStock"]
        .as_i64()
        .expect("availableStock")
}

fn code(answer: &tests::Answer) -> (StatusCode, &str) {
    (answer.status, answer.body["code"].as_str().unwrap_or(""))
}

async fn joining_follows_the_rules_and_the_line_keeps_its_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 1).await;
    let [holder, ann, bob, cat] = [
        app.customer("holder").await,
        app.customer("ann").await,
        app.customer("bob").await,
        app.customer("cat").await,
    ];

    let early = join(&app, &ann, drop_id).await;
    assert_eq!(
        code(&early),
        (StatusCode::CONFLICT, "drop_not_sold_out"),
        "{early:?}"
    );
    assert_eq!(reserve(&app, &holder, drop_id).await.status, 201);
    let holding = join(&app, &holder, drop_id).await;
    assert_eq!(code(&holding), (StatusCode::CONFLICT, "already_reserved"));

    let first = join(&app, &ann, drop_id).await;
    let again = join(&app, &ann, drop_id).await;
    let second = join(&app, &bob, drop_id).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert_eq!(
        (
            &first.body["status"],
            &first.body["position"],
            &first.body["length"]
        ),
        (&json!("waiting"), &json!(1), &json!(1))
    );
    assert_eq!(code(&again), (StatusCode::CONFLICT, "already_waiting"));
    assert_eq!(
        (&second.body["position"], &second.body["length"]),
        (&json!(2), &json!(2))
    );
    let anonymous = app
        .post(&format!("/api/drops/{drop_id}/waitlist"), None, json!({}))
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let unknown = join(&app, &cat, 999_999).await;
    assert_eq!(code(&unknown), (StatusCode::NOT_FOUND, "drop_not_found"));
    let stranger = place(&app, &cat, drop_id).await;
    assert_eq!(code(&stranger), (StatusCode::NOT_FOUND, "not_waiting"));

    assert_eq!(leave(&app, &ann, drop_id).await.status, 204);
    let gone = place(&app, &ann, drop_id).await;
    assert_eq!(code(&gone), (StatusCode::NOT_FOUND, "not_waiting"));
    let twice = leave(&app, &ann, drop_id).await;
    assert_eq!(code(&twice), (StatusCode::NOT_FOUND, "not_waiting"));
    let moved_up = place(&app, &bob, drop_id).await;
    assert_eq!(
        (&moved_up.body["position"], &moved_up.body["length"]),
        (&json!(1), &json!(1))
    );
}

/// A unit let go while three wait is offered to the first (socket frame, email, `offered` in
/// the API) and never sold to a racing reserve; the first lets it expire, and it passes to
/// the second, who buys it through the purchase endpoint.
async fn a_returned_unit_goes_down_the_line_and_never_to_a_racer(backend: Backend) {
    let store = store_with(backend, Smtp::Accepting, &[("RESERVATION_TTL_SECS", "2")]).await;
    let app = &store.app;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 1).await;
    let [holder, ann, bob, cat, racer] = [
        app.customer("holder").await,
        app.customer("ann").await,
        app.customer("bob").await,
        app.customer("cat").await,
        app.customer("racer").await,
    ];
    let held = reserve(app, &holder, drop_id).await;
    let held_id = held.body["id"].as_i64().expect("hold id");
    for buyer in [&ann, &bob, &cat] {
        assert_eq!(join(app, buyer, drop_id).await.status, 201);
    }
    let (mut anns, _) = app.websocket(Some(&ann.token)).await;
    let (mut bobs, _) = app.websocket(Some(&bob.token)).await;

    let released = app
        .request(
            reqwest::Method::DELETE,
            &format!("/api/reservations/{held_id}"),
            Some(&holder.token),
            None,
        )
        .await;
    assert_eq!(released.status, 204);

    let offered = wait_for_frame(&mut anns, "hold_offered", Duration::from_secs(5), |d| {
        d["dropId"] == drop_id
    })
    .await
    .expect("ann hears of her offer");
    let offer_id = offered["data"]["reservationId"].as_i64().expect("id");
    let anns_place = place(app, &ann, drop_id).await;
    assert_eq!(
        (
            &anns_place.body["status"],
            &anns_place.body["reservationId"]
        ),
        (&json!("offered"), &json!(offer_id))
    );
    assert_eq!(
        code(&reserve(app, &racer, drop_id).await),
        (StatusCode::CONFLICT, "sold_out")
    );
    assert_eq!(available(app, drop_id).await, 0);
    let mail = store.smtp.wait_for(&ann.email, 1).await;
    let subject = mail[0]["subject"].as_str().unwrap_or_default();
    assert!(subject.ends_with("is held for you"), "{subject}");
    let bobs_place = place(app, &bob, drop_id).await;
    assert_eq!(bobs_place.body["position"], 1);

    // Ann lets it run out: the racer keeps trying at the instant it falls due, and loses.
    let expires: DateTime<Utc> = offered["data"]["expiresAt"]
        .as_str()
        .expect("expiresAt")
        .parse()
        .expect("instant");
    tokio::time::sleep((expires - Utc::now()).to_std().unwrap_or_default()).await;
    for _ in 0..5 {
        let raced = reserve(app, &racer, drop_id).await;
        assert_eq!(
            code(&raced),
            (StatusCode::CONFLICT, "sold_out"),
            "{raced:?}"
        );
    }
    let passed = wait_for_frame(&mut bobs, "hold_offered", Duration::from_secs(5), |d| {
        d["dropId"] == drop_id
    })
    .await
    .expect("bob hears the offer passed to him");
    let bobs_offer = passed["data"]["reservationId"].as_i64().expect("id");
    let bought = app
        .post(
            &format!("/api/drops/{bobs_offer}/purchase"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(bought.status, StatusCode::CREATED, "{bought:?}");

    let audit = app.audit(drop_id).await;
    assert!(audit.holds(), "{audit:?}");
    assert_eq!((audit.purchases, audit.available_stock), (1, 0));
    assert_eq!(place(app, &cat, drop_id).await.body["position"], 1);
}

/// Stock an admin adds goes to the line first; what is left goes on sale.
async fn added_stock_is_offered_to_the_line_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 1).await;
    let [holder, ann, bob] = [
        app.customer("holder").await,
        app.customer("ann").await,
        app.customer("bob").await,
    ];
    assert_eq!(reserve(&app, &holder, drop_id).await.status, 201);
    assert_eq!(join(&app, &ann, drop_id).await.status, 201);
    assert_eq!(join(&app, &bob, drop_id).await.status, 201);

    let patched = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/admin/drops/{drop_id}"),
            Some(&admin.token),
            Some(json!({"addStock": 3})),
        )
        .await;

    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(patched.body["availableStock"], 1);
    for buyer in [&ann, &bob] {
        assert_eq!(place(&app, buyer, drop_id).await.body["status"], "offered");
    }
    assert_eq!(available(&app, drop_id).await, 1);
    let audit = app.audit(drop_id).await;
    assert!(audit.holds(), "{audit:?}");
    assert_eq!(audit.active_holds, 3);
}

both_backends!(
    joining_follows_the_rules_and_the_line_keeps_its_order,
    a_returned_unit_goes_down_the_line_and_never_to_a_racer,
    added_stock_is_offered_to_the_line_first,
);

/// Two api instances and two workers (sweeps, expiry jobs) on one drop whose offers keep
/// running out, while racers reserve through both instances: every waiter gets exactly one
/// offer, no unit is offered twice, and no racer gets a unit while anyone is in line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_and_two_workers_make_one_offer_per_returned_unit() {
    const UNITS: usize = 3;
    const WAITERS: usize = 12;
    let app = spawn_app_with(
        Backend::PostgresRedis,
        &[("RESERVATION_TTL_SECS", "1"), ("SWEEP_INTERVAL_MS", "50")],
    )
    .await;
    let other = app.spawn_instance().await;
    let _worker = app.spawn_worker().await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, i32::try_from(UNITS).unwrap()).await;
    let mut holders = Vec::new();
    for n in 0..UNITS {
        let holder = app.customer(&format!("holder{n}")).await;
        assert_eq!(reserve(&app, &holder, drop_id).await.status, 201);
        holders.push(holder);
    }
    let mut waiters = Vec::new();
    for n in 0..WAITERS {
        let waiter = app.customer(&format!("waiter{n}")).await;
        assert_eq!(join(&app, &waiter, drop_id).await.status, 201);
        waiters.push(waiter);
    }
    let racers = [app.customer("racer0").await, app.customer("racer1").await];

    // Racers hammer both instances until the line has run dry and units are on sale again.
    let client = reqwest::Client::new();
    let bases = [app.address.clone(), other.address.clone()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut racing = Vec::new();
    for (racer, base) in racers.iter().zip(bases) {
        let (client, token) = (client.clone(), racer.token.clone());
        racing.push(tokio::spawn(async move {
            let url = format!("{base}/api/drops/{drop_id}/reserve");
            while tokio::time::Instant::now() < deadline {
                let answer = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({}))
                    .send();
                if answer
                    .await
                    .is_ok_and(|a| a.status() == StatusCode::CREATED)
                {
                    return Some(Utc::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        }));
    }
    let mut racers_won = Vec::new();
    for racer in racing {
        racers_won.push(
            racer
                .await
                .expect("racer")
                .expect("a racer got a unit in the end"),
        );
    }

    let entries = waitlist_entries::Entity::find()
        .order_by_asc(waitlist_entries::Column::Id)
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(entries.len(), WAITERS);
    let mut offers: Vec<i64> = entries
        .iter()
        .map(|e| e.reservation_id.expect("every waiter was offered a unit"))
        .collect();
    offers.sort_unstable();
    offers.dedup();
    assert_eq!(offers.len(), WAITERS, "one hold per offer");
    let holds = reservations::Entity::find().all(&app.db).await.unwrap();
    // The holders' holds, one per offer, and the racers' two: nothing else.
    assert_eq!(holds.len(), UNITS + WAITERS + 2);
    let last_offer = entries.iter().filter_map(|e| e.offered_at).max().unwrap();
    for won in racers_won {
        assert!(
            won > last_offer,
            "a racer won at {won} while the line ran until {last_offer}"
        );
    }
    let audit = app.audit(drop_id).await;
    assert!(audit.holds(), "{audit:?}");
}
