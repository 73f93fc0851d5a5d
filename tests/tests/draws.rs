//! Draw drops: entries, a draw whose winners anyone can re-derive from the revealed seed,
//! winners' holds, and the rest on the waitlist in draw order.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use chrono::Utc;
use entity::models::{
    email_messages::{self, MessageKind},
    reservations, waitlist_entries,
};
use futures::{StreamExt, stream};
use reqwest::{Method, StatusCode};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use tests::{Backend, TestApp, TestUser, both_backends, spawn_app, wait_for_frame};

fn code(answer: &tests::Answer) -> (StatusCode, &str) {
    (answer.status, answer.body["code"].as_str().unwrap_or(""))
}

async fn create_draw(
    app: &TestApp,
    admin: &TestUser,
    units: i32,
    close_in: chrono::Duration,
) -> Value {
    let answer = app
        .post(
            "/api/admin/drops",
            Some(&admin.token),
            json!({
                "name": "Golden Jar draw",
                "priceCents": 4_200,
                "totalStock": units,
                "mode": "draw",
                "entriesCloseAt": Utc::now() + close_in,
            }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    answer.body
}

async fn enter(app: &TestApp, user: &TestUser, drop_id: i64) -> tests::Answer {
    let path = format!("/api/drops/{drop_id}/entries");
    app.post(&path, Some(&user.token), json!({})).await
}

async fn record(app: &TestApp, drop_id: i64) -> Value {
    let answer = app.get(&format!("/api/drops/{drop_id}/draw"), None).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    answer.body
}

/// Closes a draw's entries a moment from now, and waits until it is drawn.
async fn close_and_wait_for_draw(app: &TestApp, admin: &TestUser, drop_id: i64) -> Value {
    let close = Utc::now() + chrono::Duration::milliseconds(300);
    let path = format!("/api/admin/drops/{drop_id}");
    let moved = app
        .request(
            Method::PATCH,
            &path,
            Some(&admin.token),
            Some(json!({"entriesCloseAt": close})),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{moved:?}");
    // Well inside the reconciler's 30 s: the draw comes from the job the moved close
    // scheduled.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let drawn = record(app, drop_id).await;
        if !drawn["drawnAt"].is_null() {
            return drawn;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never drawn: {drawn}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The README's algorithm, written again in Python from its description: the commitment is
/// SHA-256 of the seed's bytes, and the order sorts entry ids by SHA-256(seed ‖ id as 8 bytes
/// big-endian). Prints the commitment and the order.
fn rederive_in_python(seed: &str, entry_ids: &[i64]) -> (String, Vec<i64>) {
    const SCRIPT: &str = r"
import hashlib, json, sys
seed = bytes.fromhex(sys.argv[1])
ids = json.loads(sys.stdin.read())
key = lambda i: hashlib.sha256(seed + i.to_bytes(8, 'big', signed=True)).digest()
print(json.dumps([hashlib.sha256(seed).hexdigest(), sorted(ids, key=key)]))
";
    use std::io::Write;
    let mut python = std::process::Command::new("python3")
        .args(["-c", SCRIPT, seed])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    python
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(entry_ids).unwrap().as_bytes())
        .unwrap();
    let out = python.wait_with_output().expect("python3 ran");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("python's answer")
}

async fn a_draw_of_1000_entries_gives_10_holds_and_a_waitlist_in_draw_order(backend: Backend) {
    const ENTRANTS: usize = 1_000;
    const UNITS: usize = 10;
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop = create_draw(&app, &admin, 10, chrono::Duration::hours(1)).await;
    let drop_id = drop["id"].as_i64().unwrap();
    assert_eq!(drop["mode"], "draw");
    let seed_hash = drop["seedHash"].as_str().expect("committed").to_owned();
    assert_eq!(seed_hash.len(), 64);

    let mut entrants = Vec::with_capacity(ENTRANTS);
    for n in 0..ENTRANTS {
        entrants.push(app.customer(&format!("entrant{n}")).await);
    }
    let entries: Vec<tests::Answer> = stream::iter(&entrants)
        .map(|user| enter(&app, user, drop_id))
        .buffered(16)
        .collect()
        .await;
    let mut entry_of_user = std::collections::HashMap::new();
    for (user, entry) in entrants.iter().zip(&entries) {
        assert_eq!(entry.status, StatusCode::CREATED, "{entry:?}");
        entry_of_user.insert(user.id, entry.body["entryId"].as_i64().unwrap());
    }
    let entry_ids: Vec<i64> = entries
        .iter()
        .map(|e| e.body["entryId"].as_i64().unwrap())
        .collect();

    // Before the draw: the units belong to it, and the seed stays secret.
    let early = record(&app, drop_id).await;
    assert_eq!(
        (early["entries"].as_u64(), early.get("seed")),
        (Some(1_000), None)
    );
    let reserve = app
        .post(
            &format!("/api/drops/{drop_id}/reserve"),
            Some(&entrants[0].token),
            json!({}),
        )
        .await;
    assert_eq!(code(&reserve), (StatusCode::CONFLICT, "draw_pending"));
    let listed = app.get(&format!("/api/drops/{drop_id}"), None).await;
    assert_eq!(listed.body["status"], "entries_open");

    let (mut winners_socket, _) = app.websocket(Some(&entrants[0].token)).await;
    let drawn = close_and_wait_for_draw(&app, &admin, drop_id).await;

    // Anyone can check it: the revealed seed matches the commitment, and an independent
    // implementation of the published algorithm gives the published order.
    let seed = drawn["seed"].as_str().expect("revealed");
    let (commitment, order) = rederive_in_python(seed, &entry_ids);
    assert_eq!(commitment, seed_hash);
    let published: Vec<i64> = drawn["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entryId"].as_i64().unwrap())
        .collect();
    assert_eq!(published, order);
    let won: Vec<bool> = drawn["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["won"].as_bool().unwrap())
        .collect();
    assert!(won[..UNITS].iter().all(|w| *w) && won[UNITS..].iter().all(|w| !*w));

    // The first ten hold a unit each; the other 990 wait in draw order.
    let user_of_entry: std::collections::HashMap<i64, i64> = entry_of_user
        .iter()
        .map(|(user, entry)| (*entry, *user))
        .collect();
    let mut holders: Vec<i64> = reservations::Entity::find()
        .filter(reservations::Column::DropId.eq(drop_id))
        .all(&app.db)
        .await
        .unwrap()
        .iter()
        .map(|h| h.user_id)
        .collect();
    holders.sort_unstable();
    let mut expected: Vec<i64> = order[..UNITS].iter().map(|e| user_of_entry[e]).collect();
    expected.sort_unstable();
    assert_eq!(holders, expected);
    let line: Vec<i64> = waitlist_entries::Entity::find()
        .filter(waitlist_entries::Column::DropId.eq(drop_id))
        .order_by_asc(waitlist_entries::Column::Id)
        .all(&app.db)
        .await
        .unwrap()
        .iter()
        .map(|w| w.user_id)
        .collect();
    let expected_line: Vec<i64> = order[UNITS..].iter().map(|e| user_of_entry[e]).collect();
    assert_eq!(line, expected_line);
    let after = app.get(&format!("/api/drops/{drop_id}"), None).await;
    assert_eq!(
        (
            after.body["availableStock"].as_i64(),
            after.body["status"].as_str()
        ),
        (Some(0), Some("live"))
    );

    // Everyone is told: by email (written with the draw) and on their sockets.
    let letters = |kind| {
        email_messages::Entity::find()
            .filter(email_messages::Column::Kind.eq(kind))
            .count(&app.db)
    };
    assert_eq!(letters(MessageKind::HoldOffer).await.unwrap(), 10);
    assert_eq!(letters(MessageKind::DrawWaitlisted).await.unwrap(), 990);
    let first = &entrants[0];
    let mine = app
        .get(
            &format!("/api/drops/{drop_id}/entries/me"),
            Some(&first.token),
        )
        .await;
    let my_place = order
        .iter()
        .position(|e| *e == entry_of_user[&first.id])
        .unwrap();
    assert_eq!(mine.body["position"].as_u64(), Some(my_place as u64 + 1));
    let told = wait_for_frame(
        &mut winners_socket,
        "draw_result",
        Duration::from_secs(5),
        |d| d["dropId"].as_i64() == Some(drop_id),
    )
    .await
    .expect("the entrant heard the draw's result")["data"]
        .clone();
    if my_place < UNITS {
        assert_eq!(told["won"], true);
        assert!(told["reservationId"].is_i64());
    } else {
        assert_eq!(
            (told["won"].as_bool(), told["position"].as_u64()),
            (Some(false), Some(my_place as u64 - 9))
        );
    }

    // A winner who lets go passes the unit to the first of the draw's waitlist.
    let winner = entrants
        .iter()
        .find(|u| u.id == user_of_entry[&order[0]])
        .unwrap();
    let next = entrants
        .iter()
        .find(|u| u.id == user_of_entry[&order[UNITS]])
        .unwrap();
    let hold = reservations::Entity::find()
        .filter(reservations::Column::UserId.eq(winner.id))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let (mut nexts_socket, _) = app.websocket(Some(&next.token)).await;
    let released = app
        .request(
            Method::DELETE,
            &format!("/api/reservations/{}", hold.id),
            Some(&winner.token),
            None,
        )
        .await;
    assert!(released.status.is_success(), "{released:?}");
    wait_for_frame(
        &mut nexts_socket,
        "hold_offered",
        Duration::from_secs(5),
        |d| d["dropId"].as_i64() == Some(drop_id),
    )
    .await
    .expect("the first of the draw's waitlist was offered the unit");

    let stats = app
        .get(
            &format!("/api/admin/drops/{drop_id}/stats"),
            Some(&admin.token),
        )
        .await;
    assert_eq!(
        (
            stats.body["drawEntries"].as_i64(),
            stats.body["drawWinners"].as_i64()
        ),
        (Some(1_000), Some(10)),
        "{stats:?}"
    );

    // The draw is done: no more entries.
    let late = app.customer("late").await;
    assert_eq!(
        code(&enter(&app, &late, drop_id).await),
        (StatusCode::CONFLICT, "entries_closed")
    );
}

async fn draw_drops_refuse_what_does_not_fit(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let buyer = app.customer("buyer").await;
    let soon = Utc::now() + chrono::Duration::hours(1);
    let refused = [
        json!({"mode": "draw"}),
        json!({"entriesCloseAt": soon}),
        json!({"mode": "draw", "entriesCloseAt": Utc::now() - chrono::Duration::seconds(5)}),
        json!({"mode": "draw", "entriesCloseAt": soon, "endsAt": soon - chrono::Duration::minutes(1)}),
        json!({"mode": "draw", "entriesCloseAt": soon, "offerTtlSeconds": 1}),
        json!({"mode": "raffle", "entriesCloseAt": soon}),
    ];
    for extra in refused {
        let mut body = json!({"name": "Bad draw", "priceCents": 100, "totalStock": 1});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let answer = app
            .post("/api/admin/drops", Some(&admin.token), body.clone())
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body} → {answer:?}"
        );
    }
    let drops = entity::models::drops::Entity::find()
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(drops, 0, "nothing was created");

    let plain = app.create_drop(&admin, 1).await;
    assert_eq!(
        code(&enter(&app, &buyer, plain).await),
        (StatusCode::CONFLICT, "not_a_draw")
    );
    let answer = app.get(&format!("/api/drops/{plain}/draw"), None).await;
    assert_eq!(code(&answer), (StatusCode::CONFLICT, "not_a_draw"));
    assert_eq!(
        code(&enter(&app, &buyer, 999_999).await),
        (StatusCode::NOT_FOUND, "drop_not_found")
    );

    let drop = create_draw(&app, &admin, 2, chrono::Duration::hours(1)).await;
    let drop_id = drop["id"].as_i64().unwrap();
    assert_eq!(
        drop["offerTtlSeconds"], 900,
        "a draw's winners get 15 minutes by default"
    );
    let mine = app
        .get(
            &format!("/api/drops/{drop_id}/entries/me"),
            Some(&buyer.token),
        )
        .await;
    assert_eq!(code(&mine), (StatusCode::NOT_FOUND, "not_entered"));
    assert_eq!(
        enter(&app, &buyer, drop_id).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        code(&enter(&app, &buyer, drop_id).await),
        (StatusCode::CONFLICT, "already_entered")
    );
    let join = app
        .post(
            &format!("/api/drops/{drop_id}/waitlist"),
            Some(&buyer.token),
            json!({}),
        )
        .await;
    assert_eq!(code(&join), (StatusCode::CONFLICT, "draw_pending"));
    let past = app
        .request(
            Method::PATCH,
            &format!("/api/admin/drops/{drop_id}"),
            Some(&admin.token),
            Some(json!({"entriesCloseAt": Utc::now() - chrono::Duration::seconds(1)})),
        )
        .await;
    assert_eq!(past.status, StatusCode::BAD_REQUEST, "{past:?}");

    // Fewer entrants than units: each wins, the rest of the stock goes on sale.
    let drawn = close_and_wait_for_draw(&app, &admin, drop_id).await;
    assert_eq!(drawn["order"].as_array().map(Vec::len), Some(1));
    let after = app.get(&format!("/api/drops/{drop_id}"), None).await;
    assert_eq!(after.body["availableStock"], 1);
    let other = app.customer("other").await;
    let bought = app
        .post(
            &format!("/api/drops/{drop_id}/reserve"),
            Some(&other.token),
            json!({}),
        )
        .await;
    assert_eq!(bought.status, StatusCode::CREATED, "{bought:?}");
}

both_backends!(
    a_draw_of_1000_entries_gives_10_holds_and_a_waitlist_in_draw_order,
    draw_drops_refuse_what_does_not_fit,
);

/// Two workers (each with the job's queue and the reconciler) and four racing calls try the
/// draw: it is done once — ten holds, not twenty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_draw_once() {
    let app =
        tests::spawn_app_with(Backend::PostgresRedis, &[("RECONCILE_INTERVAL_SECS", "1")]).await;
    let _second = app.spawn_worker().await;
    let admin = app.admin().await;
    let drop = create_draw(&app, &admin, 10, chrono::Duration::hours(1)).await;
    let drop_id = drop["id"].as_i64().unwrap();
    for n in 0..40 {
        let user = app.customer(&format!("e{n}")).await;
        assert_eq!(
            enter(&app, &user, drop_id).await.status,
            StatusCode::CREATED
        );
    }
    // Four more draws race the workers' at the close: one of all of them draws.
    let path = format!("/api/admin/drops/{drop_id}");
    let close = Utc::now() + chrono::Duration::milliseconds(500);
    let body = json!({"entriesCloseAt": close});
    let moved = app
        .request(Method::PATCH, &path, Some(&admin.token), Some(body))
        .await;
    assert_eq!(moved.status, StatusCode::OK);
    tokio::time::sleep((close - Utc::now()).to_std().unwrap_or_default()).await;
    let ttl = chrono::Duration::minutes(15);
    let racing = (0..4).map(|_| entity::drops::draw::draw(&app.db, drop_id, ttl, Utc::now()));
    let drawn_here = futures::future::join_all(racing).await;
    let here = drawn_here
        .iter()
        .filter(|d| d.as_ref().unwrap().is_some())
        .count();
    assert!(here <= 1, "{here} racers drew");
    // Let both workers' jobs and reconcilers have their go.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!record(&app, drop_id).await["drawnAt"].is_null());
    let holds = reservations::Entity::find()
        .filter(reservations::Column::DropId.eq(drop_id))
        .count(&app.db)
        .await
        .unwrap();
    let line = waitlist_entries::Entity::find()
        .filter(waitlist_entries::Column::DropId.eq(drop_id))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!((holds, line), (10, 30));
    assert!(
        entity::drops::audit(&app.db, drop_id)
            .await
            .unwrap()
            .holds()
    );
}
