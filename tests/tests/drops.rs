#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{
    Backend, TestApp, TestUser, both_backends, send_frame, spawn_app, spawn_app_with,
    wait_for_frame,
};

async fn reserve(app: &TestApp, user: &TestUser, drop_id: i64) -> tests::Answer {
    app.post(
        &format!("/api/drops/{drop_id}/reserve"),
        Some(&user.token),
        json!({}),
    )
    .await
}

async fn purchase(app: &TestApp, user: &TestUser, reservation_id: i64) -> tests::Answer {
    app.post(
        &format!("/api/drops/{reservation_id}/purchase"),
        Some(&user.token),
        json!({}),
    )
    .await
}

fn expires_at(answer: &tests::Answer) -> DateTime<Utc> {
    answer.body["expiresAt"]
        .as_str()
        .expect("expiresAt")
        .parse()
        .expect("timestamp")
}

async fn sleep_until(at: DateTime<Utc>) {
    let left = (at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left).await;
}

async fn four_hundred_buyers_on_forty_units_buy_exactly_forty(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 40).await;
    let mut buyers = Vec::new();
    for i in 0..400 {
        buyers.push(app.customer(&format!("buyer{i}")).await);
    }

    let answers = join_all(buyers.iter().map(|b| reserve(&app, b, drop_id))).await;

    let created = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    let sold_out = answers
        .iter()
        .filter(|a| a.status == StatusCode::CONFLICT && a.code() == "sold_out")
        .count();
    assert_eq!(
        created,
        40,
        "statuses: {:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert_eq!(sold_out, 360);
    let audit = app.audit(drop_id).await;
    assert!(audit.holds(), "{audit:?}");
    assert_eq!((audit.available_stock, audit.active_holds), (0, 40));
}

async fn an_expired_hold_gives_its_unit_back_and_says_so_live(backend: Backend) {
    let app = spawn_app_with(backend, &[("RESERVATION_TTL_SECS", "2")]).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 3).await;
    let buyer = app.customer("hasty").await;
    let (mut socket, snapshot) = app.websocket(None).await;
    assert!(
        snapshot["data"]["drops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["dropId"] == drop_id)
    );

    let hold = reserve(&app, &buyer, drop_id).await;
    assert_eq!(hold.status, StatusCode::CREATED);
    assert_eq!(hold.body["status"], "active");
    let taken = wait_for_frame(&mut socket, "stock_update", Duration::from_secs(5), |d| {
        d["dropId"] == drop_id && d["version"].as_i64() >= Some(1)
    })
    .await;
    assert_eq!(
        taken.expect("stock_update after reserve")["data"]["availableStock"],
        2
    );

    let back = wait_for_frame(&mut socket, "stock_update", Duration::from_secs(8), |d| {
        d["dropId"] == drop_id && d["availableStock"] == 3 && d["version"].as_i64() >= Some(2)
    })
    .await
    .expect("stock_update after expiry");
    let at: DateTime<Utc> = Utc::now();
    assert!(
        at >= expires_at(&hold),
        "stock came back before the hold ended"
    );
    assert!(back["data"]["version"].as_i64().unwrap() >= 2);
    let audit = app.audit(drop_id).await;
    assert!(audit.holds() && audit.available_stock == 3, "{audit:?}");

    let late = purchase(&app, &buyer, hold.body["id"].as_i64().unwrap()).await;
    assert_eq!(
        (late.status, late.code()),
        (StatusCode::GONE, "reservation_expired")
    );
}

async fn the_next_buyer_gets_the_unit_the_instant_a_hold_ends(backend: Backend) {
    // No sweep to help: only exact expiry (takeover on reserve) can hand the unit over at once.
    let app = spawn_app_with(
        backend,
        &[
            ("RESERVATION_TTL_SECS", "2"),
            ("SWEEP_INTERVAL_MS", "600000"),
        ],
    )
    .await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 1).await;
    let (first, second) = (app.customer("first").await, app.customer("second").await);

    let hold = reserve(&app, &first, drop_id).await;
    assert_eq!(hold.status, StatusCode::CREATED);
    let refused = reserve(&app, &second, drop_id).await;
    assert_eq!(refused.code(), "sold_out");

    sleep_until(expires_at(&hold)).await;
    let taken_over = reserve(&app, &second, drop_id).await;
    assert_eq!(
        taken_over.status,
        StatusCode::CREATED,
        "{:?}",
        taken_over.body
    );

    let late = purchase(&app, &first, hold.body["id"].as_i64().unwrap()).await;
    assert_eq!(late.code(), "reservation_expired");
    let bought = purchase(&app, &second, taken_over.body["id"].as_i64().unwrap()).await;
    assert_eq!(bought.status, StatusCode::CREATED);
    let audit = app.audit(drop_id).await;
    assert!(
        audit.holds() && audit.purchases == 1 && audit.available_stock == 0,
        "{audit:?}"
    );
}

async fn purchase_and_expiry_never_both_win(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("RESERVATION_TTL_SECS", "1"), ("SWEEP_INTERVAL_MS", "50")],
    )
    .await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 30).await;
    let mut trials = Vec::new();
    let app = &app;
    for i in 0..30 {
        let buyer = app.customer(&format!("racer{i}")).await;
        trials.push(async move {
            let hold = reserve(app, &buyer, drop_id).await;
            assert_eq!(hold.status, StatusCode::CREATED);
            // Aim the purchase at the boundary, a little before or after it.
            let offset = chrono::Duration::milliseconds((i as i64 % 7 - 3) * 15);
            sleep_until(expires_at(&hold) + offset).await;
            let bought = purchase(app, &buyer, hold.body["id"].as_i64().unwrap()).await;
            assert!(
                bought.status == StatusCode::CREATED || bought.code() == "reservation_expired",
                "{:?}",
                bought.body
            );
            bought.status == StatusCode::CREATED
        });
    }
    let bought = join_all(trials).await.into_iter().filter(|b| *b).count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let audit = app.audit(drop_id).await;
    assert!(audit.holds(), "{audit:?}");
    assert_eq!(
        audit.purchases, bought as i64,
        "purchases recorded differ from purchases answered"
    );
    assert_eq!(audit.active_holds, 0);
    assert_eq!(
        audit.available_stock,
        30 - bought as i64,
        "an expired unit was also sold, or a sold unit came back"
    );
}

async fn a_purchase_retried_with_its_idempotency_key_happens_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 5).await;
    let buyer = app.customer("careful").await;
    let hold = reserve(&app, &buyer, drop_id).await.body["id"]
        .as_i64()
        .unwrap();
    let buy = |reservation: i64, key: &'static str| {
        let req = app
            .client
            .post(format!("{}/api/drops/{reservation}/purchase", app.address))
            .bearer_auth(&buyer.token)
            .header("Idempotency-Key", key);
        async move { tests::answer(req.send().await.expect("sent")).await }
    };

    let (a, b) = tokio::join!(buy(hold, "key-1"), buy(hold, "key-1"));
    let first = [&a, &b]
        .into_iter()
        .find(|x| x.status == StatusCode::CREATED)
        .expect("one succeeded");
    for other in [&a, &b] {
        assert!(
            other.status == StatusCode::CREATED && other.body == first.body
                || other.code() == "request_in_progress",
            "{:?}",
            other.body
        );
    }
    let replay = buy(hold, "key-1").await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(
        replay.body, first.body,
        "a replay returns the stored response"
    );

    let other_hold = reserve(&app, &app.customer("other").await, drop_id)
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    let reused = buy(other_hold, "key-1").await;
    assert_eq!(
        (reused.status, reused.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );

    let without_key = purchase(&app, &buyer, hold).await;
    assert_eq!(without_key.code(), "already_purchased");
    assert_eq!(app.audit(drop_id).await.purchases, 1);
}

async fn releasing_a_hold_puts_the_unit_back_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 1).await;
    let buyer = app.customer("fickle").await;
    let (mut socket, _) = app.websocket(None).await;
    let hold = reserve(&app, &buyer, drop_id).await.body["id"]
        .as_i64()
        .unwrap();
    // Teaches the instance that the drop is sold out: the release must un-teach it at once.
    let patient = app.customer("patient").await;
    assert_eq!(reserve(&app, &patient, drop_id).await.code(), "sold_out");

    let released = app
        .request(
            Method::DELETE,
            &format!("/api/reservations/{hold}"),
            Some(&buyer.token),
            None,
        )
        .await;
    assert_eq!(released.status, StatusCode::NO_CONTENT);
    let frame = wait_for_frame(&mut socket, "stock_update", Duration::from_secs(5), |d| {
        d["dropId"] == drop_id && d["availableStock"] == 1 && d["version"].as_i64() >= Some(2)
    })
    .await;
    assert!(frame.is_some(), "no stock_update after release");
    let again = app
        .request(
            Method::DELETE,
            &format!("/api/reservations/{hold}"),
            Some(&buyer.token),
            None,
        )
        .await;
    assert_eq!(
        again.status,
        StatusCode::NO_CONTENT,
        "releasing twice is harmless"
    );
    assert_eq!(
        purchase(&app, &buyer, hold).await.code(),
        "reservation_released"
    );
    let next = reserve(&app, &patient, drop_id).await;
    assert_eq!(
        next.status,
        StatusCode::CREATED,
        "a free unit was refused: {:?}",
        next.body
    );
    assert!(app.audit(drop_id).await.holds());
}

async fn reserve_and_purchase_refuse_what_they_must(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 5).await;
    let (ann, bob) = (app.customer("ann").await, app.customer("bob").await);

    assert_eq!(reserve(&app, &ann, 999_999).await.code(), "drop_not_found");
    let hold = reserve(&app, &ann, drop_id).await;
    assert_eq!(hold.status, StatusCode::CREATED);
    assert_eq!(
        reserve(&app, &ann, drop_id).await.code(),
        "already_reserved"
    );
    let hold_id = hold.body["id"].as_i64().unwrap();
    let theirs = purchase(&app, &bob, hold_id).await;
    assert_eq!(
        (theirs.status, theirs.code()),
        (StatusCode::NOT_FOUND, "reservation_not_found")
    );
    assert_eq!(
        purchase(&app, &ann, 999_999).await.code(),
        "reservation_not_found"
    );
    let bought = purchase(&app, &ann, hold_id).await;
    assert_eq!(bought.status, StatusCode::CREATED);
    assert_eq!(bought.body["amountCents"], 12_000);
    assert_eq!(bought.body["reservationId"], hold_id);
    assert_eq!(
        purchase(&app, &ann, hold_id).await.code(),
        "already_purchased"
    );
    assert_eq!(
        reserve(&app, &ann, drop_id).await.code(),
        "purchase_limit_reached"
    );
    assert_eq!(reserve(&app, &ann, -1).await.code(), "drop_not_found");
    let unauthenticated = app
        .post(&format!("/api/drops/{drop_id}/reserve"), None, json!({}))
        .await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    let not_a_number = app
        .post("/api/drops/abc/reserve", Some(&ann.token), json!({}))
        .await;
    assert_eq!(not_a_number.status, StatusCode::BAD_REQUEST);

    let later = app
        .post(
            "/api/admin/drops",
            Some(&admin.token),
            json!({"name": "Tomorrow", "priceCents": 100, "totalStock": 3, "startsAt": (Utc::now() + chrono::Duration::hours(2)).to_rfc3339()}),
        )
        .await;
    let later_id = later.body["id"].as_i64().unwrap();
    assert_eq!(
        reserve(&app, &bob, later_id).await.code(),
        "drop_not_active"
    );

    let mine = app.get("/api/reservations", Some(&ann.token)).await;
    assert_eq!(mine.body.as_array().unwrap().len(), 1);
    assert_eq!(mine.body[0]["status"], "purchased");
    let purchases = app.get("/api/purchases", Some(&ann.token)).await;
    assert_eq!(purchases.body[0]["reservationId"], hold_id);
    assert!(app.audit(drop_id).await.holds());
}

async fn the_drop_list_shows_holders_buyers_and_what_opens_soon(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 10).await;
    let soon = app
        .post(
            "/api/admin/drops",
            Some(&admin.token),
            json!({"name": "Soon", "priceCents": 100, "totalStock": 3, "startsAt": (Utc::now() + chrono::Duration::hours(3)).to_rfc3339()}),
        )
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    let far = app
        .post(
            "/api/admin/drops",
            Some(&admin.token),
            json!({"name": "Far", "priceCents": 100, "totalStock": 3, "startsAt": (Utc::now() + chrono::Duration::days(9)).to_rfc3339()}),
        )
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    let (holder, buyer) = (app.customer("holder").await, app.customer("buyer").await);
    reserve(&app, &holder, drop_id).await;
    let bought = reserve(&app, &buyer, drop_id).await.body["id"]
        .as_i64()
        .unwrap();
    purchase(&app, &buyer, bought).await;

    let list = app.get("/api/drops", None).await;
    assert_eq!(list.status, StatusCode::OK);
    let drops = list.body.as_array().unwrap();
    let live = drops
        .iter()
        .find(|d| d["id"] == drop_id)
        .expect("live drop listed");
    assert_eq!(live["status"], "live");
    assert_eq!(live["availableStock"], 8);
    assert_eq!(live["totalStock"], 10);
    assert_eq!(live["activeReservations"][0]["displayName"], "holder");
    assert_eq!(live["recentBuyers"][0]["displayName"], "buyer");
    assert_eq!(
        drops
            .iter()
            .find(|d| d["id"] == soon)
            .expect("upcoming listed")["status"],
        "upcoming"
    );
    assert!(
        drops.iter().all(|d| d["id"] != far),
        "a drop nine days out is not 'soon'"
    );

    // The listing is cached briefly, but a stock change shows at once.
    reserve(&app, &app.customer("latecomer").await, drop_id).await;
    let relisted = app.get("/api/drops", None).await;
    let live_again = relisted
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == drop_id)
        .cloned()
        .unwrap();
    assert_eq!(
        live_again["availableStock"], 7,
        "a cached listing hid a stock change"
    );
    assert_eq!(
        live_again["activeReservations"].as_array().unwrap().len(),
        2
    );

    let one = app.get(&format!("/api/drops/{drop_id}"), None).await;
    assert_eq!(one.body["version"], live_again["version"]);
    assert_eq!(
        app.get("/api/drops/424242", None).await.code(),
        "drop_not_found"
    );
}

async fn adding_stock_is_broadcast_and_bad_drops_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 1).await;
    let (mut socket, _) = app.websocket(None).await;
    let patched = app
        .request(
            Method::PATCH,
            &format!("/api/admin/drops/{drop_id}"),
            Some(&admin.token),
            Some(json!({"addStock": 4})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert_eq!(
        (
            patched.body["totalStock"].clone(),
            patched.body["availableStock"].clone()
        ),
        (json!(5), json!(5))
    );
    let frame = wait_for_frame(&mut socket, "stock_update", Duration::from_secs(5), |d| {
        d["dropId"] == drop_id && d["version"].as_i64() >= Some(1)
    })
    .await;
    assert_eq!(frame.expect("broadcast")["data"]["availableStock"], 5);

    for bad in [
        json!({"name": "", "priceCents": 1, "totalStock": 1}),
        json!({"name": "x", "priceCents": -1, "totalStock": 1}),
        json!({"name": "x", "priceCents": 1, "totalStock": -5}),
        json!({"name": "x", "priceCents": 1, "totalStock": 1, "currency": "dollars"}),
        json!({"name": "x", "priceCents": 1, "totalStock": 1, "maxPerUser": 0}),
        json!({"name": "x", "priceCents": 1, "totalStock": 1, "startsAt": "2030-01-02T00:00:00Z", "endsAt": "2030-01-01T00:00:00Z"}),
        json!({"name": "x", "priceCents": "cheap", "totalStock": 1}),
    ] {
        let answer = app
            .post("/api/admin/drops", Some(&admin.token), bad.clone())
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{bad} → {:?}",
            answer.body
        );
    }
    let missing = app
        .request(
            Method::PATCH,
            "/api/admin/drops/999999",
            Some(&admin.token),
            Some(json!({"addStock": 1})),
        )
        .await;
    assert_eq!(missing.code(), "drop_not_found");
    assert_eq!(
        app.get("/api/admin/drops", Some(&admin.token))
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn only_the_owner_hears_that_their_hold_expired(backend: Backend) {
    let app = spawn_app_with(backend, &[("RESERVATION_TTL_SECS", "1")]).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 2).await;
    let (owner, stranger) = (app.customer("owner").await, app.customer("stranger").await);
    let (mut owners, _) = app.websocket(Some(&owner.token)).await;
    // The other way to authenticate: an `auth` frame after connecting.
    let (mut strangers, _) = app.websocket(None).await;
    send_frame(
        &mut strangers,
        json!({"event": "auth", "data": {"token": stranger.token}}),
    )
    .await;
    assert!(
        wait_for_frame(
            &mut strangers,
            "authenticated",
            Duration::from_secs(3),
            |_| true
        )
        .await
        .is_some()
    );

    let hold = reserve(&app, &owner, drop_id).await.body["id"]
        .as_i64()
        .unwrap();
    let heard = wait_for_frame(
        &mut owners,
        "reservation_expired",
        Duration::from_secs(8),
        |d| d["reservationId"] == hold,
    )
    .await;
    assert!(heard.is_some(), "owner not told");
    let overheard = wait_for_frame(
        &mut strangers,
        "reservation_expired",
        Duration::from_millis(1500),
        |_| true,
    )
    .await;
    assert!(
        overheard.is_none(),
        "a stranger heard about someone else's hold"
    );
}

async fn a_socket_can_narrow_its_stock_updates_to_some_drops(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let (watched, ignored) = (
        app.create_drop(&admin, 5).await,
        app.create_drop(&admin, 5).await,
    );
    let (mut socket, _) = app.websocket(None).await;
    send_frame(
        &mut socket,
        json!({"event": "subscribe", "data": {"drops": [watched]}}),
    )
    .await;
    assert!(
        wait_for_frame(&mut socket, "subscribed", Duration::from_secs(3), |_| true)
            .await
            .is_some()
    );
    send_frame(&mut socket, json!({"event": "ping"})).await;
    assert!(
        wait_for_frame(&mut socket, "pong", Duration::from_secs(3), |_| true)
            .await
            .is_some()
    );

    let buyer = app.customer("picky").await;
    reserve(&app, &buyer, ignored).await;
    reserve(&app, &buyer, watched).await;
    let frame = wait_for_frame(&mut socket, "stock_update", Duration::from_secs(5), |_| {
        true
    })
    .await
    .expect("frame");
    assert_eq!(
        frame["data"]["dropId"], watched,
        "a filtered-out drop got through: {frame}"
    );

    send_frame(&mut socket, json!({"event": "nonsense"})).await;
    let error: Value = wait_for_frame(&mut socket, "error", Duration::from_secs(3), |_| true)
        .await
        .expect("error frame");
    assert_eq!(error["data"]["code"], "bad_request");
}

both_backends!(
    four_hundred_buyers_on_forty_units_buy_exactly_forty,
    an_expired_hold_gives_its_unit_back_and_says_so_live,
    the_next_buyer_gets_the_unit_the_instant_a_hold_ends,
    purchase_and_expiry_never_both_win,
    a_purchase_retried_with_its_idempotency_key_happens_once,
    releasing_a_hold_puts_the_unit_back_at_once,
    reserve_and_purchase_refuse_what_they_must,
    the_drop_list_shows_holders_buyers_and_what_opens_soon,
    adding_stock_is_broadcast_and_bad_drops_are_refused,
    only_the_owner_hears_that_their_hold_expired,
    a_socket_can_narrow_its_stock_updates_to_some_drops,
);

/// Every api instance relays every event: a socket on instance B sees a reserve made through A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_on_one_instance_sees_a_reserve_made_through_another() {
    let app = spawn_app(Backend::PostgresRedis).await;
    let other = app.spawn_instance().await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 7).await;
    let (mut socket, _) = other.websocket(None).await;
    reserve(&app, &app.customer("remote").await, drop_id).await;
    let frame = wait_for_frame(&mut socket, "stock_update", Duration::from_secs(5), |d| {
        d["dropId"] == drop_id && d["version"].as_i64() >= Some(1)
    })
    .await;
    assert_eq!(
        frame.expect("relayed across instances")["data"]["availableStock"],
        6
    );
}

/// Holds that fall due while no worker runs are expired once one is back: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_worker_loses_no_expiry() {
    let mut app = spawn_app_with(Backend::PostgresRedis, &[("RESERVATION_TTL_SECS", "1")]).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 5).await;
    app.worker.take().expect("worker").stop().await;
    for i in 0..5 {
        assert_eq!(
            reserve(&app, &app.customer(&format!("w{i}")).await, drop_id)
                .await
                .status,
            StatusCode::CREATED
        );
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        app.audit(drop_id).await.active_holds,
        5,
        "holds expired with no worker running?"
    );

    let _worker = app.spawn_worker().await;
    let restored = tests::eventually(Duration::from_secs(10), || async {
        let audit = app.audit(drop_id).await;
        (audit.available_stock == 5 && audit.active_holds == 0).then_some(audit)
    })
    .await;
    assert!(
        restored.is_some_and(|a| a.holds()),
        "expiries lost across a worker restart"
    );
}

/// Expiry runs from three places (the delayed job, the sweep, a takeover); whichever comes
/// second must change nothing.
async fn expiring_a_hold_twice_gives_its_unit_back_once(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("RESERVATION_TTL_SECS", "1"),
            ("SWEEP_INTERVAL_MS", "600000"),
        ],
    )
    .await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 2).await;
    let hold = reserve(&app, &app.customer("twice").await, drop_id).await;
    let id = hold.body["id"].as_i64().unwrap();
    let due = expires_at(&hold);
    let ttl = chrono::Duration::seconds(60);

    assert!(
        entity::drops::expire(&app.db, id, ttl, due - chrono::Duration::milliseconds(1))
            .await
            .unwrap()
            .is_none(),
        "expired early"
    );
    let first = entity::drops::expire(&app.db, id, ttl, due).await.unwrap();
    let second = entity::drops::expire(&app.db, id, ttl, due).await.unwrap();
    let later = due + chrono::Duration::seconds(5);
    let swept = entity::drops::expire_overdue(&app.db, later, 100, ttl)
        .await
        .unwrap();
    // The delayed job may have got there first; either way exactly one expiry happened.
    assert!(first.is_none() || second.is_none());
    assert!(swept.iter().all(|e| e.reservation.id != id));
    let audit = app.audit(drop_id).await;
    assert_eq!(
        (audit.available_stock, audit.active_holds),
        (2, 0),
        "{audit:?}"
    );
}

both_backends!(expiring_a_hold_twice_gives_its_unit_back_once);

/// Each hold's expiry job is enqueued, one hold at a time (a reserve alone) or a batch's in
/// one push: with the sweep asleep and nobody reserving, the jobs alone give every unit back.
async fn expiry_jobs_alone_give_every_unit_back(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("RESERVATION_TTL_SECS", "1"),
            ("SWEEP_INTERVAL_MS", "600000"),
        ],
    )
    .await;
    let worker = match backend {
        Backend::PostgresRedis => Some(app.spawn_worker().await),
        Backend::Embedded => None,
    };
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 10).await;
    let mut buyers = Vec::new();
    for n in 0..5 {
        buyers.push(app.customer(&format!("batch{n}")).await);
    }
    // The sweep's first look found nothing due: it now sleeps for the interval.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let alone = reserve(&app, &app.customer("alone").await, drop_id).await;
    assert_eq!(alone.status, StatusCode::CREATED, "{:?}", alone.body);
    // What a batched reserve does: holds taken together, their effects applied together.
    let ttl = chrono::Duration::seconds(1);
    let mut holds = Vec::new();
    let mut stock = None;
    for buyer in &buyers {
        match entity::drops::reserve(&app.state.holds_db, drop_id, buyer.id, ttl, Utc::now())
            .await
            .unwrap()
        {
            entity::drops::ReserveOutcome::Reserved(reserved) => {
                holds.push(reserved.reservation);
                stock = Some(reserved.stock);
            }
            entity::drops::ReserveOutcome::SoldOut(_) => panic!("sold out"),
        }
    }
    app.state.effects.holds_taken(holds, stock.unwrap());
    assert_eq!(app.audit(drop_id).await.active_holds, 6);

    let back = tests::eventually(Duration::from_secs(8), || async {
        let audit = app.audit(drop_id).await;
        (audit.active_holds == 0 && audit.available_stock == 10).then_some(audit)
    })
    .await;
    assert!(back.is_some(), "{:?}", app.audit(drop_id).await);
    if let Some(worker) = worker {
        worker.stop().await;
    }
}

both_backends!(expiry_jobs_alone_give_every_unit_back);

/// A hold answered 201 survives a Postgres crash: its pool commits durably, like every other
/// (group commit already spreads the flush over each batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_commit_durably_like_everything_else() {
    use sea_orm::{ConnectionTrait, Statement};
    let app = spawn_app(Backend::PostgresRedis).await;
    let show = |db: sea_orm::DatabaseConnection| async move {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SHOW synchronous_commit",
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<String>("", "synchronous_commit").unwrap()
    };
    assert_eq!(show(app.state.holds_db.pool().clone()).await, "on");
    assert_eq!(show(app.db.clone()).await, "on");
}

/// Buyers who each ask at the instant a different hold ends all get a unit, even while they
/// race each other and the sweep for the same due holds.
async fn buyers_arriving_as_holds_end_all_get_units(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("RESERVATION_TTL_SECS", "1"), ("SWEEP_INTERVAL_MS", "100")],
    )
    .await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 12).await;
    let mut due = Vec::new();
    for i in 0..12 {
        let hold = reserve(&app, &app.customer(&format!("early{i}")).await, drop_id).await;
        due.push(expires_at(&hold));
    }
    let mut arrivals = Vec::new();
    for (i, at) in due.into_iter().enumerate() {
        let buyer = app.customer(&format!("late{i}")).await;
        let app = &app;
        arrivals.push(async move {
            sleep_until(at).await;
            let sent = Utc::now();
            let answer = reserve(app, &buyer, drop_id).await;
            (i, at, sent, Utc::now(), answer)
        });
    }
    let answers = join_all(arrivals).await;
    let refused: Vec<_> = answers
        .iter()
        .filter(|(.., a)| a.status != StatusCode::CREATED)
        .map(|(i, at, sent, answered, a)| {
            format!("#{i} due {at} sent {sent} answered {answered}: {}", a.body)
        })
        .collect();
    if !refused.is_empty() {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
        let holds = entity::models::reservations::Entity::find()
            .filter(entity::models::reservations::Column::DropId.eq(drop_id))
            .order_by_asc(entity::models::reservations::Column::Id)
            .all(&app.db)
            .await
            .unwrap();
        let rows: Vec<String> = holds
            .iter()
            .map(|h| {
                format!(
                    "{} u{} {:?} created {} due {} ended {:?}",
                    h.id, h.user_id, h.status, h.created_at, h.expires_at, h.ended_at
                )
            })
            .collect();
        panic!(
            "refused while due holds were left: {refused:?}\n{}\n{:?}",
            rows.join("\n"),
            app.audit(drop_id).await
        );
    }
    assert!(app.audit(drop_id).await.holds());
}

both_backends!(buyers_arriving_as_holds_end_all_get_units);

/// The per-buyer limit holds at purchase time too: a hold that slipped in beside a purchase
/// (the reserve ran while the previous purchase committed) cannot be bought past the limit.
async fn a_hold_beyond_the_limit_cannot_be_bought(backend: Backend) {
    use sea_orm::{ActiveValue::Set, EntityTrait};
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 5).await;
    let buyer = app.customer("eager").await;
    let first = reserve(&app, &buyer, drop_id).await.body["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        purchase(&app, &buyer, first).await.status,
        StatusCode::CREATED
    );
    // What the race leaves behind: a second active hold for a buyer already at the limit.
    let now = Utc::now();
    let slipped =
        entity::models::reservations::Entity::insert(entity::models::reservations::ActiveModel {
            drop_id: Set(drop_id),
            user_id: Set(buyer.id),
            status: Set(entity::drops::ReservationStatus::Active),
            expires_at: Set(now + chrono::Duration::seconds(60)),
            created_at: Set(now),
            ended_at: Set(None),
            ..Default::default()
        })
        .exec_with_returning(&app.db)
        .await
        .unwrap();
    let refused = purchase(&app, &buyer, slipped.id).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "purchase_limit_reached")
    );
    assert_eq!(app.audit(drop_id).await.purchases, 1);
}

both_backends!(a_hold_beyond_the_limit_cannot_be_bought);
