//! The inbox is not a weapon (issue 28): "notify me" cannot mail-bomb an address, a link
//! scanner cannot confirm a subscription, and every email's unsubscribe link keeps working.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Smtp, Store, link_token, store_with};
use entity::mail::MessageKind;
use futures::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::json;
use tests::{Backend, both_backends};

/// A sold-out product, published through the signed webhook.
async fn sold_out(store: &Store, n: usize) -> i64 {
    let fields = json!({
        "name": format!("Honey {n}"),
        "slug": format!("honey-{n}"),
        "description": "Gone for now.",
        "price": 9.5,
        "inStock": false,
    });
    store.publish(&format!("entry-{n}"), 1, fields).await.body["productId"]
        .as_i64()
        .unwrap()
}

async fn sign_up(store: &Store, product_id: i64, email: &str) -> StatusCode {
    store
        .app
        .post(
            &format!("/api/products/{product_id}/notify-me"),
            None,
            json!({ "email": email }),
        )
        .await
        .status
}

/// Confirmation emails the store wrote to its ledger (its outbox) for `domain`.
async fn confirmations_to(store: &Store, domain: &str) -> usize {
    store
        .ledger()
        .await
        .iter()
        .filter(|m| {
            m.kind == MessageKind::SubscriptionConfirmation && m.recipient.ends_with(domain)
        })
        .count()
}

/// Messages the SMTP server took for `domain`.
fn delivered_to(store: &Store, domain: &str) -> usize {
    store
        .smtp
        .messages()
        .iter()
        .filter(|m| {
            m["rcpt_tos"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|a| a.as_str().is_some_and(|a| a.ends_with(domain)))
            })
        })
        .count()
}

/// Waits for `count` deliveries to `domain`, then a moment more to see that no more come.
async fn exactly_delivered(store: &Store, domain: &str, count: usize) {
    let arrived = tests::eventually(Duration::from_secs(20), || async {
        (delivered_to(store, domain) >= count).then_some(())
    })
    .await;
    assert!(arrived.is_some(), "{count} emails did not reach {domain}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(delivered_to(store, domain), count);
}

async fn a_flood_of_plus_tagged_addresses_reaches_the_inbox_its_daily_number_of_times(
    backend: Backend,
) {
    let store = store_with(
        backend,
        Smtp::Accepting,
        &[
            ("NOTIFY_ME_EMAILS_PER_MAILBOX_PER_DAY", "3"),
            ("NOTIFY_ME_PER_ADDRESS_PER_HOUR", "1000"),
        ],
    )
    .await;
    let product = sold_out(&store, 1).await;

    let answers: Vec<StatusCode> = stream::iter(0..150)
        .map(|n| {
            let store = &store;
            async move { sign_up(store, product, &format!("Flood+{n}@victim.example")).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    assert!(
        answers.iter().all(|s| *s == StatusCode::ACCEPTED),
        "{answers:?}"
    );
    assert_eq!(confirmations_to(&store, "@victim.example").await, 3);
    exactly_delivered(&store, "@victim.example", 3).await;
}

async fn one_inbox_on_ten_sold_out_products_gets_its_daily_number_of_emails(backend: Backend) {
    let store = store_with(
        backend,
        Smtp::Accepting,
        &[("NOTIFY_ME_EMAILS_PER_MAILBOX_PER_DAY", "3")],
    )
    .await;
    let mut products = Vec::new();
    for n in 0..10 {
        products.push(sold_out(&store, n).await);
    }

    for product in &products {
        assert_eq!(
            sign_up(&store, *product, "victim@victim.example").await,
            StatusCode::ACCEPTED,
            "past the quota the answer is the same"
        );
    }

    assert_eq!(confirmations_to(&store, "@victim.example").await, 3);
    exactly_delivered(&store, "@victim.example", 3).await;
    // Another inbox is not held back by the victim's.
    assert_eq!(
        sign_up(&store, products[9], "ann@example.com").await,
        StatusCode::ACCEPTED
    );
    store.smtp.wait_for("ann@example.com", 1).await;
}

async fn one_client_address_asking_too_often_is_told_to_slow_down(backend: Backend) {
    let store = store_with(
        backend,
        Smtp::Accepting,
        &[("NOTIFY_ME_PER_ADDRESS_PER_HOUR", "5")],
    )
    .await;
    let product = sold_out(&store, 1).await;
    for n in 0..5 {
        let email = format!("person{n}@example.com");
        assert_eq!(sign_up(&store, product, &email).await, StatusCode::ACCEPTED);
    }

    let refused = store
        .app
        .post(
            &format!("/api/products/{product}/notify-me"),
            None,
            json!({ "email": "person5@example.com" }),
        )
        .await;

    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        refused.body
    );
    assert_eq!(refused.code(), "too_many_requests");
    assert_eq!(confirmations_to(&store, "@example.com").await, 5);
}

async fn only_a_post_confirms_a_subscription(backend: Backend) {
    let store = store_with(backend, Smtp::Accepting, &[]).await;
    let product = sold_out(&store, 1).await;
    assert_eq!(
        sign_up(&store, product, "ann@example.com").await,
        StatusCode::ACCEPTED
    );
    let email = store.smtp.wait_for("ann@example.com", 1).await.remove(0);
    let token = link_token(&email, "/api/subscriptions/confirm?token=");
    let link = format!(
        "{}/api/subscriptions/confirm?token={token}",
        store.app.address
    );

    // What a mail gateway's link scanner does.
    let head = store.app.client.head(&link).send().await.expect("sent");
    let page = store.app.client.get(&link).send().await.expect("sent");

    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("method=\"post\"") && html.contains("Confirm"),
        "{html}"
    );
    assert_eq!(
        store.subscription_status(product, "ann@example.com").await,
        "pending",
        "GET or HEAD confirmed"
    );

    let confirmed = store.app.client.post(&link).send().await.expect("sent");

    assert_eq!(confirmed.status(), StatusCode::OK);
    assert!(
        confirmed
            .text()
            .await
            .unwrap()
            .contains("You're on the list")
    );
    assert_eq!(
        store.subscription_status(product, "ann@example.com").await,
        "confirmed"
    );
    let unknown = store
        .app
        .get("/api/subscriptions/confirm?token=nope", None)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.code(), "invalid_token");
}

async fn the_confirmation_emails_unsubscribe_link_works_after_the_alert_was_sent(backend: Backend) {
    let store = store_with(backend, Smtp::Accepting, &[]).await;
    let product = sold_out(&store, 1).await;
    store.confirmed_subscriber(product, "ann@example.com").await;
    let restocked = json!({
        "name": "Honey 1", "slug": "honey-1", "description": "Back.", "price": 9.5, "inStock": true,
    });
    store.publish("entry-1", 2, restocked).await;
    let emails = store.smtp.wait_for("ann@example.com", 2).await;
    let marker = "/api/subscriptions/unsubscribe?token=";
    let first = link_token(&emails[0], marker);

    assert_eq!(
        first,
        link_token(&emails[1], marker),
        "each email has its own link"
    );
    let unsubscribed = store
        .app
        .client
        .post(format!("{}{marker}{first}", store.app.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(unsubscribed.status(), StatusCode::OK);
    assert_eq!(
        store.subscription_status(product, "ann@example.com").await,
        "unsubscribed"
    );
}

both_backends!(
    a_flood_of_plus_tagged_addresses_reaches_the_inbox_its_daily_number_of_times,
    one_inbox_on_ten_sold_out_products_gets_its_daily_number_of_emails,
    one_client_address_asking_too_often_is_told_to_slow_down,
    only_a_post_confirms_a_subscription,
    the_confirmation_emails_unsubscribe_link_works_after_the_alert_was_sent,
);
