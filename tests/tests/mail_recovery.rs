//! A send that dies with its worker: the row it claimed goes out through another worker soon
//! after the claim's lease ends, once.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{Smtp, store_with};
use entity::mail::{Claim, MessageStatus};
use serde_json::json;
use tests::{Backend, both_backends, eventually};

/// The lease the test store runs with; short, so the test does not wait long.
const LEASE_SECS: i64 = 2;

async fn a_row_claimed_by_a_killed_worker_is_sent_once_after_its_lease(backend: Backend) {
    let lease = LEASE_SECS.to_string();
    let store = store_with(backend, Smtp::Accepting, &[("MAIL_LEASE_SECS", &lease)]).await;
    let product = json!({"name": "Heather Honey", "price": 12.5, "inStock": false});
    let id = store.publish("entry-1", 1, product).await.body["productId"]
        .as_i64()
        .unwrap();
    // The ledger row without its job, then claimed by a worker that dies before sending.
    let ann = entity::EmailAddress::parse("ann@example.com").unwrap();
    let signed_up = entity::catalog::subscribe(&store.app.db, id, &ann, Utc::now())
        .await
        .expect("signed up");
    let message_id = signed_up.confirmation_message_id.expect("a confirmation");
    let claimed_at = Utc::now();
    let lease = chrono::Duration::seconds(LEASE_SECS);
    let claim = entity::mail::claim(&store.app.db, message_id, lease, claimed_at)
        .await
        .expect("claimed");
    assert!(matches!(claim, Claim::Ready(_)), "{claim:?}");

    let mail = store.smtp.wait_for("ann@example.com", 1).await;

    assert_eq!(
        mail[0]["subject"],
        "Confirm: tell me when Heather Honey is back"
    );
    // The server accepts the message a moment before the send records it.
    let row = eventually(Duration::from_secs(5), || async {
        entity::mail::find(&store.app.db, message_id)
            .await
            .expect("query")
            .filter(|row| row.status != MessageStatus::Queued)
    })
    .await
    .expect("the row is settled");
    assert_eq!((row.status, row.attempts), (MessageStatus::Sent, 2));
    let sent_at = row.sent_at.expect("sent_at");
    let lease_end = claimed_at + lease;
    assert!(
        sent_at >= lease_end,
        "sent at {sent_at}, lease held until {lease_end}"
    );
    // Not the 20 s "never picked up" threshold on top of the lease: a few seconds at most.
    assert!(
        sent_at - lease_end < chrono::Duration::seconds(8),
        "sent at {sent_at}, {} after the lease ended",
        sent_at - lease_end
    );
    // Two claims in all (the dead send's and the one that sent), and a `sent` row is never
    // claimed again: one copy, now and later.
    assert_eq!(store.smtp.messages_to("ann@example.com").len(), 1);
}

both_backends!(a_row_claimed_by_a_killed_worker_is_sent_once_after_its_lease);
