//! Catalog and restock alerts, end to end: signed Contentful deliveries, double opt-in,
//! fan-out and sending against a real SMTP server process, one-click unsubscribe, and the
//! live `product_restocked` frame.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Delivery, PUBLISH, Smtp, UNPUBLISH, entry, link_token, store};
use entity::{
    catalog::DeliveryOutcome,
    mail::{MessageKind, MessageStatus},
};
use reqwest::StatusCode;
use serde_json::json;
use tests::{Backend, both_backends, spawn_app, wait_for_frame};

fn honey(in_stock: bool) -> serde_json::Value {
    json!({
        "name": "Heather Honey",
        "slug": "heather-honey",
        "description": "Dark, from the moors.",
        "price": 12.5,
        "inStock": in_stock,
    })
}

async fn a_signed_publish_creates_a_product(backend: Backend) {
    let store = store(backend, Smtp::Accepting).await;

    let answer = store
        .publish(
            "entry-1",
            3,
            json!({"name": "Acacia Honey", "price": 9.99, "inStock": true, "stockQuantity": 12}),
        )
        .await;

    assert_eq!(answer.body["outcome"], "applied");
    let product = store.product("acacia-honey").await;
    assert_eq!(product["name"], "Acacia Honey");
    assert_eq!(product["priceCents"], 999);
    assert_eq!(product["inStock"], true);
    assert_eq!(product["stockQuantity"], 12);
    assert_eq!(product["waitingCount"], 0);
    let by_id = store.product(&product["id"].to_string()).await;
    assert_eq!(by_id["slug"], "acacia-honey");
    let listed = store.app.get("/api/products?inStock=true", None).await;
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1));
    let sold_out = store.app.get("/api/products?inStock=false", None).await;
    assert_eq!(sold_out.body.as_array().map(Vec::len), Some(0));
    let deliveries = store.deliveries().await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        (deliveries[0].outcome, deliveries[0].entry_version),
        (DeliveryOutcome::Applied, Some(3))
    );
}

async fn unpublishing_hides_the_product(backend: Backend) {
    let store = store(backend, Smtp::Accepting).await;
    store.publish("entry-1", 1, honey(true)).await;

    let body = json!({"sys": {"id": "entry-1", "type": "DeletedEntry", "version": 2}});
    let answer = store.deliver(&Delivery::new(UNPUBLISH, &body)).await;

    assert_eq!(
        (answer.status, answer.body["outcome"].as_str()),
        (StatusCode::OK, Some("hidden"))
    );
    let gone = store.app.get("/api/products/heather-honey", None).await;
    assert_eq!(
        (gone.status, gone.code()),
        (StatusCode::NOT_FOUND, "product_not_found")
    );
}

async fn a_restock_mails_every_confirmed_subscriber_exactly_once(backend: Backend) {
    let store = store(backend, Smtp::Accepting).await;
    let id = store.publish("entry-1", 1, honey(false)).await.body["productId"]
        .as_i64()
        .unwrap();
    store.confirmed_subscriber(id, "ann@example.com").await;
    store.confirmed_subscriber(id, "bob@example.com").await;
    store.notify_me(id, "pending@example.com").await;
    store.confirmed_subscriber(id, "leaver@example.com").await;
    store.smtp.wait_for("pending@example.com", 1).await;
    // The leaver changes their mind with the link in their confirmation email.
    let confirmation = store.smtp.messages_to("leaver@example.com").remove(0);
    let token = link_token(&confirmation, "/api/subscriptions/unsubscribe?token=");
    let left = store
        .app
        .client
        .post(format!(
            "{}/api/subscriptions/unsubscribe?token={token}",
            store.app.address
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(left.status(), StatusCode::OK);
    assert_eq!(store.product(&id.to_string()).await["waitingCount"], 2);

    store.publish("entry-1", 2, honey(true)).await;

    for email in ["ann@example.com", "bob@example.com"] {
        let mail = store.smtp.wait_for(email, 2).await;
        assert_eq!(
            mail[1]["subject"], "Heather Honey is back in stock",
            "{email}"
        );
    }
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (email, expected) in [
        ("ann@example.com", 2),
        ("bob@example.com", 2),
        ("pending@example.com", 1),
        ("leaver@example.com", 1),
    ] {
        assert_eq!(
            store.smtp.messages_to(email).len(),
            expected,
            "{email}: confirmation + alerts"
        );
    }
    assert_eq!(
        store.subscription_status(id, "ann@example.com").await,
        "notified"
    );
    assert_eq!(
        store.subscription_status(id, "pending@example.com").await,
        "pending"
    );
    assert_eq!(store.product(&id.to_string()).await["waitingCount"], 0);
    let alerts: Vec<_> = store
        .ledger()
        .await
        .into_iter()
        .filter(|m| m.kind == MessageKind::RestockAlert)
        .collect();
    assert_eq!(alerts.len(), 2);
    assert!(
        alerts
            .iter()
            .all(|m| m.status == MessageStatus::Sent && m.attempts == 1),
        "{alerts:?}"
    );
}

async fn the_alert_offers_one_click_unsubscribe_and_both_parts(backend: Backend) {
    let store = store(backend, Smtp::Accepting).await;
    let id = store.publish("entry-1", 1, honey(false)).await.body["productId"]
        .as_i64()
        .unwrap();
    store.confirmed_subscriber(id, "ann@example.com").await;

    store.publish("entry-1", 2, honey(true)).await;

    let alert = store.smtp.wait_for("ann@example.com", 2).await.remove(1);
    let headers = &alert["headers"];
    let list_unsubscribe = headers["list-unsubscribe"]
        .as_str()
        .expect("List-Unsubscribe header");
    assert!(
        list_unsubscribe
            .starts_with("<https://shop.example.com/api/subscriptions/unsubscribe?token=")
            && list_unsubscribe.ends_with('>'),
        "{list_unsubscribe}"
    );
    assert_eq!(
        headers["list-unsubscribe-post"],
        "List-Unsubscribe=One-Click"
    );
    assert_eq!(alert["content_type"], "multipart/alternative");
    let text = alert["text"].as_str().expect("text part");
    let html = alert["html"].as_str().expect("html part");
    for part in [text, html] {
        assert!(part.contains("Heather Honey"), "{part}");
        assert!(
            part.contains("https://shop.example.com/api/products/heather-honey"),
            "{part}"
        );
        assert!(
            part.contains("/api/subscriptions/unsubscribe?token="),
            "{part}"
        );
    }
    let token = link_token(&alert, "/api/subscriptions/unsubscribe?token=");
    assert!(
        list_unsubscribe.contains(&token),
        "the header and the visible link differ"
    );
}

async fn post_unsubscribes_and_get_does_not(backend: Backend) {
    let store = store(backend, Smtp::Accepting).await;
    let id = store.publish("entry-1", 1, honey(false)).await.body["productId"]
        .as_i64()
        .unwrap();
    store.confirmed_subscriber(id, "ann@example.com").await;
    store.confirmed_subscriber(id, "bob@example.com").await;
    store.publish("entry-1", 2, honey(true)).await;
    let url = |email: &str, store: &common::Store| {
        let alert = store.smtp.messages_to(email).remove(1);
        let header = alert["headers"]["list-unsubscribe"]
            .as_str()
            .unwrap()
            .to_owned();
        header
            .trim_matches(|c| c == '<' || c == '>')
            .replace("https://shop.example.com", &store.app.address)
    };
    store.smtp.wait_for("ann@example.com", 2).await;
    store.smtp.wait_for("bob@example.com", 2).await;
    let ann = url("ann@example.com", &store);
    let bob = url("bob@example.com", &store);

    let page = store.app.client.get(&ann).send().await.expect("sent");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("method=\"post\""));
    assert_eq!(
        store.subscription_status(id, "ann@example.com").await,
        "notified",
        "GET changed state"
    );

    // RFC 8058: the mail client POSTs the form body, with no cookie or auth.
    let one_click = store
        .app
        .client
        .post(&ann)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("sent");
    assert_eq!(one_click.status(), StatusCode::OK);
    assert_eq!(
        store.subscription_status(id, "ann@example.com").await,
        "unsubscribed"
    );

    let empty = store.app.client.post(&bob).send().await.expect("sent");
    assert_eq!(empty.status(), StatusCode::OK);
    assert_eq!(
        store.subscription_status(id, "bob@example.com").await,
        "unsubscribed"
    );

    let unknown = store
        .app
        .client
        .post(format!(
            "{}/api/subscriptions/unsubscribe?token=nope",
            store.app.address
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

async fn forged_stale_replayed_and_older_deliveries_change_nothing(backend: Backend) {
    let store = store(backend, Smtp::Accepting).await;
    let first = Delivery::new(PUBLISH, &entry("entry-1", 5, honey(true)));
    assert_eq!(store.deliver(&first).await.body["outcome"], "applied");
    let renamed = |version| {
        let mut fields = honey(false);
        fields["name"] = json!("Renamed");
        entry("entry-1", version, fields)
    };

    let mut wrong_secret = Delivery::new(PUBLISH, &renamed(6));
    wrong_secret.secret = "f".repeat(64);
    let forged = store.deliver(&wrong_secret).await;
    assert_eq!(
        (forged.status, forged.code()),
        (StatusCode::UNAUTHORIZED, "invalid_signature")
    );

    let unsigned = store
        .deliver_tampered(&Delivery::new(PUBLISH, &renamed(6)), |h| {
            h.retain(|(k, _)| k != "X-Contentful-Signature");
        })
        .await;
    assert_eq!(
        (unsigned.status, unsigned.code()),
        (StatusCode::UNAUTHORIZED, "invalid_signature")
    );

    let mut stale = Delivery::new(PUBLISH, &renamed(6));
    stale.timestamp_ms -= 31_000;
    let stale = store.deliver(&stale).await;
    assert_eq!(
        (stale.status, stale.code()),
        (StatusCode::UNAUTHORIZED, "invalid_signature")
    );

    let mut replay = Delivery::new(PUBLISH, &renamed(7));
    replay.idempotency_key = first.idempotency_key.clone();
    let replayed = store.deliver(&replay).await;
    assert_eq!(
        (replayed.status, replayed.body["outcome"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );

    let older = store.deliver(&Delivery::new(PUBLISH, &renamed(4))).await;
    assert_eq!(
        (older.status, older.body["outcome"].as_str()),
        (StatusCode::OK, Some("stale"))
    );
    let same = store.deliver(&Delivery::new(PUBLISH, &renamed(5))).await;
    assert_eq!(same.body["outcome"], "stale");

    let product = store.product("heather-honey").await;
    assert_eq!(
        (product["name"].as_str(), product["inStock"].as_bool()),
        (Some("Heather Honey"), Some(true))
    );
    let outcomes: Vec<_> = store
        .deliveries()
        .await
        .into_iter()
        .map(|d| d.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            DeliveryOutcome::Applied,
            DeliveryOutcome::Duplicate,
            DeliveryOutcome::Stale,
            DeliveryOutcome::Stale
        ],
        "refused requests are not recorded"
    );

    let newer = store.deliver(&Delivery::new(PUBLISH, &renamed(8))).await;
    assert_eq!(newer.body["outcome"], "applied");
    assert_eq!(store.product("heather-honey").await["name"], "Renamed");
}

async fn an_entry_that_can_never_apply_is_acknowledged_with_its_reason(backend: Backend) {
    let store = store(backend, Smtp::Accepting).await;

    let answer = store
        .deliver(&Delivery::new(
            PUBLISH,
            &entry("entry-9", 1, json!({"price": 3})),
        ))
        .await;
    let ignored = store
        .deliver(&Delivery::new(
            "ContentManagement.Entry.auto_save",
            &entry("entry-9", 2, honey(true)),
        ))
        .await;

    assert_eq!(
        (answer.status, answer.body["outcome"].as_str()),
        (StatusCode::OK, Some("rejected"))
    );
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("no name"),
        "{:?}",
        answer.body
    );
    assert_eq!(
        (ignored.status, ignored.body["outcome"].as_str()),
        (StatusCode::OK, Some("ignored"))
    );
    let recorded = store.deliveries().await;
    assert_eq!(recorded.len(), 2);
    assert!(
        recorded[0]
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("no name")
    );
    let listed = store.app.get("/api/products", None).await;
    assert_eq!(listed.body, json!([]));
}

async fn without_a_secret_the_webhook_refuses_everything(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = serde_json::to_vec(&entry("entry-1", 1, honey(true))).unwrap();
    let answer = tests::answer(
        app.client
            .post(format!("{}/api/webhooks/contentful", app.address))
            .header(
                "content-type",
                "application/vnd.contentful.management.v1+json",
            )
            .header("x-contentful-topic", PUBLISH)
            .body(body)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "webhook_disabled")
    );
    assert_eq!(app.get("/api/products", None).await.body, json!([]));
}

async fn a_websocket_client_hears_about_a_restock(backend: Backend) {
    let store = store(backend, Smtp::Accepting).await;
    let id = store
        .publish(
            "entry-1",
            1,
            json!({"name": "Heather Honey", "price": 12.5, "inStock": true, "stockQuantity": 0}),
        )
        .await
        .body["productId"]
        .as_i64()
        .unwrap();
    let (mut socket, snapshot) = store.app.websocket(None).await;
    assert_eq!(snapshot["data"]["products"][0]["productId"], id);
    assert_eq!(
        snapshot["data"]["products"][0]["inStock"], false,
        "a quantity of 0 is sold out"
    );

    store
        .publish(
            "entry-1",
            2,
            json!({"name": "Heather Honey", "price": 12.5, "inStock": true, "stockQuantity": 40}),
        )
        .await;

    let frame = wait_for_frame(
        &mut socket,
        "product_restocked",
        Duration::from_secs(5),
        |d| d["productId"] == id,
    )
    .await
    .expect("product_restocked frame");
    assert_eq!(
        frame["data"],
        json!({"productId": id, "slug": "heather-honey", "name": "Heather Honey", "stockQuantity": 40})
    );
}

async fn an_admin_restock_runs_the_same_flow_as_the_webhook(backend: Backend) {
    let store = store(backend, Smtp::Accepting).await;
    let admin = store.app.admin().await;
    let created = store
        .app
        .post(
            "/api/admin/products",
            Some(&admin.token),
            json!({"name": "Clover Honey", "priceCents": 800, "inStock": true, "stockQuantity": 0}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(
        created.body["inStock"], false,
        "a quantity of 0 is sold out"
    );
    let id = created.body["id"].as_i64().unwrap();
    store.confirmed_subscriber(id, "ann@example.com").await;
    let (mut socket, _) = store.app.websocket(None).await;

    let customer = store.app.customer("not-an-admin").await;
    let refused = store
        .app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/admin/products/{id}"),
            Some(&customer.token),
            Some(json!({"stockQuantity": 5})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let restocked = store
        .app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/admin/products/{id}"),
            Some(&admin.token),
            Some(json!({"stockQuantity": 5})),
        )
        .await;

    assert_eq!(restocked.status, StatusCode::OK, "{:?}", restocked.body);
    assert_eq!(restocked.body["inStock"], true);
    wait_for_frame(
        &mut socket,
        "product_restocked",
        Duration::from_secs(5),
        |d| d["productId"] == id,
    )
    .await
    .expect("product_restocked frame");
    let mail = store.smtp.wait_for("ann@example.com", 2).await;
    assert_eq!(mail[1]["subject"], "Clover Honey is back in stock");
}

async fn a_flaky_smtp_server_still_gets_exactly_one_copy(backend: Backend) {
    let store = store(backend, Smtp::FailingTimes(2)).await;
    let id = store.publish("entry-1", 1, honey(false)).await.body["productId"]
        .as_i64()
        .unwrap();

    store.notify_me(id, "ann@example.com").await;

    store.smtp.wait_for("ann@example.com", 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(store.smtp.messages_to("ann@example.com").len(), 1);
    let ledger = store.ledger().await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        (ledger[0].status, ledger[0].attempts),
        (MessageStatus::Sent, 3),
        "{:?}",
        ledger[0]
    );
}

async fn a_rejecting_smtp_server_leaves_the_row_failed(backend: Backend) {
    let store = store(backend, Smtp::Rejecting).await;
    let id = store.publish("entry-1", 1, honey(false)).await.body["productId"]
        .as_i64()
        .unwrap();

    store.notify_me(id, "ann@example.com").await;

    let failed = tests::eventually(Duration::from_secs(15), || async {
        let ledger = store.ledger().await;
        ledger
            .into_iter()
            .find(|m| m.status != MessageStatus::Queued)
    })
    .await
    .expect("the email was tried");
    assert_eq!(
        (failed.status, failed.attempts),
        (MessageStatus::Failed, 1),
        "{failed:?}"
    );
    assert!(
        failed
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("550"),
        "{failed:?}"
    );
    assert!(store.smtp.messages().is_empty());
}

async fn notify_me_refuses_in_stock_products_and_bad_input(backend: Backend) {
    let store = store(backend, Smtp::Accepting).await;
    let id = store.publish("entry-1", 1, honey(true)).await.body["productId"]
        .as_i64()
        .unwrap();
    let notify = |product: i64, email: &'static str| {
        let path = format!("/api/products/{product}/notify-me");
        let app = &store.app;
        async move { app.post(&path, None, json!({"email": email})).await }
    };

    let in_stock = notify(id, "ann@example.com").await;
    let bad_email = notify(id, "not-an-email").await;
    let unknown = notify(id + 1000, "ann@example.com").await;
    let no_such_slug = store.app.get("/api/products/no-such-honey", None).await;
    let bad_token = store
        .app
        .get("/api/subscriptions/confirm?token=forged", None)
        .await;

    assert_eq!(
        (in_stock.status, in_stock.code()),
        (StatusCode::CONFLICT, "product_in_stock")
    );
    assert_eq!(
        (bad_email.status, bad_email.code()),
        (StatusCode::BAD_REQUEST, "validation_failed")
    );
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::NOT_FOUND, "product_not_found")
    );
    assert_eq!(
        (no_such_slug.status, no_such_slug.code()),
        (StatusCode::NOT_FOUND, "product_not_found")
    );
    assert_eq!(
        (bad_token.status, bad_token.code()),
        (StatusCode::NOT_FOUND, "invalid_token")
    );
}

async fn signing_up_again_is_idempotent(backend: Backend) {
    let store = store(backend, Smtp::Accepting).await;
    let id = store.publish("entry-1", 1, honey(false)).await.body["productId"]
        .as_i64()
        .unwrap();

    store.notify_me(id, "ann@example.com").await;
    store.smtp.wait_for("ann@example.com", 1).await;
    store.notify_me(id, " ANN@example.com ").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    assert_eq!(
        store.smtp.messages_to("ann@example.com").len(),
        1,
        "a second confirmation within 10 minutes"
    );
    use entity::models::subscriptions;
    use sea_orm::{EntityTrait, PaginatorTrait};
    assert_eq!(
        subscriptions::Entity::find()
            .count(&store.app.db)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.ledger().await.len(), 1);
}

async fn the_reconciler_recovers_a_lost_fan_out_and_the_pump_finds_unannounced_mail(
    backend: Backend,
) {
    let store = common::store_with(
        backend,
        Smtp::Accepting,
        &[("RECONCILE_INTERVAL_SECS", "1")],
    )
    .await;
    let id = store.publish("entry-1", 1, honey(false)).await.body["productId"]
        .as_i64()
        .unwrap();
    let other = store
        .publish(
            "entry-2",
            1,
            json!({"name": "Clover Honey", "price": 8, "inStock": false}),
        )
        .await
        .body["productId"]
        .as_i64()
        .unwrap();
    store.confirmed_subscriber(id, "ann@example.com").await;

    // Write the facts as the api would, but never enqueue their jobs: as if Redis lost them.
    let now = chrono::Utc::now();
    let restock = entity::catalog::ProductPatch {
        in_stock: Some(true),
        ..Default::default()
    };
    let change = entity::catalog::update(&store.app.db, id, restock, now)
        .await
        .expect("restocked");
    assert!(change.restock.is_some());
    let bob = entity::EmailAddress::parse("bob@example.com").unwrap();
    let signed_up = entity::catalog::subscribe(&store.app.db, other, &bob, u32::MAX, now)
        .await
        .expect("signed up");
    assert!(signed_up.confirmation_message_id.is_some());

    let alert = store.smtp.wait_for("ann@example.com", 2).await.remove(1);
    assert_eq!(alert["subject"], "Heather Honey is back in stock");
    let confirmation = store.smtp.wait_for("bob@example.com", 1).await.remove(0);
    assert_eq!(
        confirmation["subject"],
        "Confirm: tell me when Clover Honey is back"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        store.smtp.messages_to("ann@example.com").len(),
        2,
        "the reconciler alerted twice"
    );
}

async fn admin_product_edits_are_checked(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let customer = app.customer("shopper").await;
    let honey = json!({"name": "Acacia Honey", "priceCents": 900, "inStock": false});

    let created = app
        .post("/api/admin/products", Some(&admin.token), honey.clone())
        .await;
    let taken = app
        .post("/api/admin/products", Some(&admin.token), honey.clone())
        .await;
    let bad_slug = app
        .post(
            "/api/admin/products",
            Some(&admin.token),
            json!({"name": "X", "slug": "no spaces", "priceCents": 1, "inStock": true}),
        )
        .await;
    let not_admin = app
        .post("/api/admin/products", Some(&customer.token), honey.clone())
        .await;
    let anonymous = app.post("/api/admin/products", None, honey).await;
    let missing = app
        .request(
            reqwest::Method::PATCH,
            "/api/admin/products/999999",
            Some(&admin.token),
            Some(json!({"inStock": true})),
        )
        .await;

    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["slug"], "acacia-honey");
    assert_eq!(
        (taken.status, taken.code()),
        (StatusCode::CONFLICT, "slug_taken")
    );
    assert_eq!(
        (bad_slug.status, bad_slug.code()),
        (StatusCode::BAD_REQUEST, "validation_failed")
    );
    assert_eq!(not_admin.status, StatusCode::FORBIDDEN);
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "product_not_found")
    );

    let id = created.body["id"].as_i64().unwrap();
    let path = format!("/api/admin/products/{id}");
    let patch = |body| {
        app.request(
            reqwest::Method::PATCH,
            &path,
            Some(&admin.token),
            Some(body),
        )
    };
    let with_image = patch(json!({"imageUrl": "https://img.example.com/a.jpg"})).await;
    assert_eq!(with_image.body["imageUrl"], "https://img.example.com/a.jpg");
    let renamed = patch(json!({"name": "Acacia Honey 500 g"})).await;
    assert_eq!(
        renamed.body["imageUrl"], "https://img.example.com/a.jpg",
        "left-out fields stay"
    );
    let cleared = patch(json!({"imageUrl": null})).await;
    assert_eq!(cleared.body["imageUrl"], serde_json::Value::Null);
}

/// Four claimers beside the store's own pump, all at once, as five workers would: no row is
/// claimed twice. The extra claimers never send, so their rows go out through the pump when
/// their lease runs out — each address gets exactly one email, and each of those rows shows
/// one lapsed claim.
async fn workers_claiming_at_once_never_share_a_row(backend: Backend) {
    const SIGN_UPS: usize = 40;
    let store = common::store_with(backend, Smtp::Accepting, &[("MAIL_LEASE_SECS", "2")]).await;
    let id = store.publish("entry-1", 1, honey(false)).await.body["productId"]
        .as_i64()
        .unwrap();
    let db = &store.app.db;
    // Written straight to the ledger, with no wake-up: the pump finds them at its next poll.
    for n in 0..SIGN_UPS {
        let address = entity::EmailAddress::parse(&format!("s{n}@example.com")).unwrap();
        entity::catalog::subscribe(db, id, &address, u32::MAX, chrono::Utc::now())
            .await
            .expect("signed up");
    }
    let lease = chrono::Duration::seconds(2);
    let links = entity::tokens::LinkKey::new("test-secret-that-is-at-least-32-bytes-long");
    let claims = futures::future::join_all(
        (0..4).map(|_| entity::mail::claim_due(db, 100, lease, &links, chrono::Utc::now())),
    )
    .await;
    let mut held: Vec<i64> = claims
        .into_iter()
        .flat_map(|claimed| claimed.expect("claimed"))
        .map(|outgoing| outgoing.id)
        .collect();
    let claimed = held.len();
    held.sort_unstable();
    held.dedup();
    assert_eq!(held.len(), claimed, "a row claimed twice");

    for n in 0..SIGN_UPS {
        store.smtp.wait_for(&format!("s{n}@example.com"), 1).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    assert_eq!(store.smtp.messages().len(), SIGN_UPS, "one email each");
    for row in store.ledger().await {
        let lapsed = i32::from(held.contains(&row.id));
        assert_eq!(
            (row.status, row.attempts, row.lapsed_claims),
            (MessageStatus::Sent, 1 + lapsed, lapsed),
            "{row:?}"
        );
    }
}

both_backends!(
    workers_claiming_at_once_never_share_a_row,
    admin_product_edits_are_checked,
    the_reconciler_recovers_a_lost_fan_out_and_the_pump_finds_unannounced_mail,
    a_signed_publish_creates_a_product,
    unpublishing_hides_the_product,
    a_restock_mails_every_confirmed_subscriber_exactly_once,
    the_alert_offers_one_click_unsubscribe_and_both_parts,
    post_unsubscribes_and_get_does_not,
    forged_stale_replayed_and_older_deliveries_change_nothing,
    an_entry_that_can_never_apply_is_acknowledged_with_its_reason,
    without_a_secret_the_webhook_refuses_everything,
    a_websocket_client_hears_about_a_restock,
    an_admin_restock_runs_the_same_flow_as_the_webhook,
    a_flaky_smtp_server_still_gets_exactly_one_copy,
    a_rejecting_smtp_server_leaves_the_row_failed,
    notify_me_refuses_in_stock_products_and_bad_input,
    signing_up_again_is_idempotent,
);
