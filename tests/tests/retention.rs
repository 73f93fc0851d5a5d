//! The retention pass: with the clock moved forward, exactly the rows whose time is up and
//! that are in a final state are deleted; live, queued, active and still-needed rows stay.
//!
//! Rows are dated from the real "now" onwards, so the pass the worker runs by itself at start
//! (with the real clock) never finds them old; each test runs its own pass at a later `now`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use entity::{
    EmailAddress,
    catalog::{ProductFields, ProductName, ProductPatch, Slug, SubscriptionStatus},
    idempotency::IdempotencyKey,
    models::{
        email_messages, ended_sessions, idempotency_keys, reservations, sessions, subscriptions,
        webhook_deliveries,
    },
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
};
use serde_json::json;
use tests::{Backend, TestApp, both_backends, spawn_app, spawn_app_with};
use worker::runtime::{Purged, purge_old_rows};

/// An hour from now: the rows these tests date are then newer than anything the running
/// app writes by the real clock.
fn ahead_of_the_worker() -> DateTime<Utc> {
    Utc::now() + Duration::hours(1)
}

/// An app whose worker leaves the email ledger alone, so a queued row stays queued and a
/// sent one keeps the date the test gave it. A separate worker (distributed mode) is stopped:
/// its mail pump's first look could otherwise fall after the test's first rows. One inside
/// the api (embedded mode) cannot be: after its first look it looks once an hour (rows
/// written straight through `entity` wake nobody), its reconciler does not re-run
/// fan-outs, and rows meant to stay queued wait for a retry far ahead.
async fn app_with_a_quiet_ledger(backend: Backend) -> TestApp {
    let quiet = [
        ("RECONCILE_INTERVAL_SECS", "3600"),
        ("MAIL_POLL_MS", "3600000"),
    ];
    let mut app = spawn_app_with(backend, &quiet).await;
    if let Some(worker) = app.worker.take() {
        worker.stop().await;
    }
    app
}

async fn purge(app: &TestApp, now: DateTime<Utc>) -> Purged {
    purge_old_rows(&app.db, &app.state.settings.retention, now)
        .await
        .expect("retention pass")
}

async fn ids<E>(db: &DatabaseConnection) -> BTreeSet<i64>
where
    E: EntityTrait,
    E::Model: HasId,
{
    E::find()
        .all(db)
        .await
        .unwrap()
        .iter()
        .map(HasId::id)
        .collect()
}

trait HasId {
    fn id(&self) -> i64;
}

macro_rules! has_id {
    ($($model:path),+) => { $(impl HasId for $model { fn id(&self) -> i64 { self.id } })+ };
}
has_id!(
    idempotency_keys::Model,
    sessions::Model,
    webhook_deliveries::Model,
    email_messages::Model,
    reservations::Model
);

async fn idempotency_key(app: &TestApp, user_id: i64, key: &str, at: DateTime<Utc>) -> i64 {
    let key = IdempotencyKey::parse(key).unwrap();
    entity::idempotency::begin(&app.db, user_id, &key, "request-hash", at)
        .await
        .expect("key stored");
    idempotency_keys::Entity::find()
        .filter(idempotency_keys::Column::UserId.eq(user_id))
        .filter(idempotency_keys::Column::Key.eq(key.as_str()))
        .one(&app.db)
        .await
        .unwrap()
        .expect("key row")
        .id
}

async fn idempotency_keys_go_a_day_after_they_were_made(backend: Backend) {
    let app = spawn_app(backend).await;
    let buyer = app.customer("buyer").await;
    let t0 = Utc::now();
    let old = idempotency_key(&app, buyer.id, "first", t0).await;
    let recent = idempotency_key(&app, buyer.id, "second", t0 + Duration::hours(2)).await;

    let purged = purge(&app, t0 + Duration::hours(25)).await;

    assert_eq!(purged.idempotency_keys, 1);
    let left = ids::<idempotency_keys::Entity>(&app.db).await;
    assert!(!left.contains(&old), "a 25-hour-old key survived");
    assert_eq!(left, BTreeSet::from([recent]));
}

async fn session(app: &TestApp, user_id: i64, lifetime: Duration, at: DateTime<Utc>) -> i64 {
    entity::accounts::start_session(&app.db, user_id, lifetime, at)
        .await
        .expect("session")
        .0
        .id
}

async fn sessions_go_thirty_days_after_they_ended_and_live_ones_stay(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.customer("sleeper").await.id;
    let t0 = Utc::now();
    let live = session(&app, user, Duration::days(60), t0).await;
    let revoked_long_ago = session(&app, user, Duration::days(30), t0).await;
    entity::accounts::revoke(&app.db, revoked_long_ago, t0)
        .await
        .unwrap();
    let expired_long_ago = session(&app, user, Duration::hours(1), t0).await;
    let revoked_lately = session(&app, user, Duration::days(60), t0).await;
    entity::accounts::revoke(&app.db, revoked_lately, t0 + Duration::days(2))
        .await
        .unwrap();
    let expired_lately = session(&app, user, Duration::days(2), t0).await;

    let now = t0 + Duration::days(31);
    purge(&app, now).await;

    let left = ids::<sessions::Entity>(&app.db).await;
    assert!(!left.contains(&revoked_long_ago) && !left.contains(&expired_long_ago));
    // The customer's own one-day session ended 30 days ago as well and is gone with them.
    assert_eq!(left, BTreeSet::from([live, revoked_lately, expired_lately]));
    assert_eq!(
        entity::accounts::live_sessions(&app.db, &[live], now)
            .await
            .unwrap(),
        [live]
    );
}

/// A session deleted before its lifetime is over leaves a tombstone that the api's view of
/// ended sessions reads (a revoked one too, so a view that missed the revocation still
/// learns of it); an expired one leaves none, and tombstones go once their session would
/// have expired.
async fn a_session_deleted_before_it_expired_leaves_a_tombstone_and_an_expired_one_none(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let user = app.customer("deleted").await.id;
    let now = Utc::now();
    let live = session(&app, user, Duration::days(1), now).await;
    let revoked = session(&app, user, Duration::days(1), now).await;
    entity::accounts::revoke(&app.db, revoked, now)
        .await
        .unwrap();
    let expired = session(&app, user, Duration::hours(1), now - Duration::hours(2)).await;
    let stale = ended_sessions::ActiveModel {
        session_id: Set(i64::MAX),
        ended_at: Set(now - Duration::days(2)),
        expires_at: Set(now - Duration::days(1)),
    };
    ended_sessions::Entity::insert(stale)
        .exec(&app.db)
        .await
        .unwrap();
    let since = now - Duration::minutes(1);
    let ended_before = entity::accounts::ended_since(&app.db, since).await.unwrap();
    assert_eq!(ended_before, [revoked], "only the revocation so far");

    sessions::Entity::delete_many()
        .filter(sessions::Column::Id.is_in([live, revoked, expired]))
        .exec(&app.db)
        .await
        .unwrap();

    let mut ended = entity::accounts::ended_since(&app.db, since).await.unwrap();
    ended.sort_unstable();
    assert_eq!(ended, [live, revoked], "from their tombstones");
    let mut tombstones: Vec<i64> = ended_sessions::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.session_id)
        .collect();
    tombstones.sort_unstable();
    assert_eq!(
        tombstones,
        [live, revoked],
        "none for the expired session; the stale tombstone was cleared"
    );
}

async fn delivery(app: &TestApp, received_at: DateTime<Utc>) -> i64 {
    let row = webhook_deliveries::ActiveModel {
        idempotency_key: Set(Some(uuid::Uuid::new_v4().to_string())),
        topic: Set("ContentManagement.Entry.publish".into()),
        entry_id: Set(Some("entry-1".into())),
        entry_version: Set(Some(1)),
        outcome: Set(entity::catalog::DeliveryOutcome::Applied),
        detail: Set(None),
        received_at: Set(received_at),
        ..Default::default()
    };
    webhook_deliveries::Entity::insert(row)
        .exec(&app.db)
        .await
        .expect("delivery stored")
        .last_insert_id
}

async fn webhook_deliveries_go_after_ninety_days(backend: Backend) {
    let app = spawn_app(backend).await;
    let t0 = Utc::now();
    delivery(&app, t0).await;
    let recent = delivery(&app, t0 + Duration::days(2)).await;

    let purged = purge(&app, t0 + Duration::days(91)).await;

    assert_eq!(purged.webhook_deliveries, 1);
    assert_eq!(
        ids::<webhook_deliveries::Entity>(&app.db).await,
        BTreeSet::from([recent])
    );
}

async fn product(db: &DatabaseConnection, slug: &str, at: DateTime<Utc>) -> i64 {
    let fields = ProductFields {
        slug: Slug::parse(slug).unwrap(),
        name: ProductName::parse(slug).unwrap(),
        description: String::new(),
        price_cents: 900,
        currency: None,
        image_url: None,
        in_stock: false,
        stock_quantity: None,
    };
    entity::catalog::create(db, fields, at)
        .await
        .expect("product")
        .product
        .id
}

/// Puts a product in or out of stock; the restock event's id when it came back.
async fn set_in_stock(db: &DatabaseConnection, id: i64, in_stock: bool, at: DateTime<Utc>) -> i64 {
    let patch = ProductPatch {
        in_stock: Some(in_stock),
        ..Default::default()
    };
    let change = entity::catalog::update(db, id, patch, at).await.unwrap();
    change.restock.map_or(0, |r| r.id)
}

async fn confirmed(
    db: &DatabaseConnection,
    product_id: i64,
    email: &str,
    at: DateTime<Utc>,
) -> i64 {
    let token_hash = || entity::tokens::hash(&entity::tokens::generate());
    let row = subscriptions::ActiveModel {
        product_id: Set(product_id),
        email: Set(email.into()),
        status: Set(SubscriptionStatus::Confirmed),
        confirm_token_hash: Set(token_hash()),
        unsubscribe_token_hash: Set(token_hash()),
        confirmed_at: Set(Some(at)),
        created_at: Set(at),
        ..Default::default()
    };
    subscriptions::Entity::insert(row)
        .exec(db)
        .await
        .unwrap()
        .last_insert_id
}

/// The alert of `restock` for `subscription`, after running the restock's fan-out. The
/// worker's reconciler may have run it first; either way there is exactly one row.
async fn alert(db: &DatabaseConnection, restock: i64, subscription: i64, at: DateTime<Utc>) -> i64 {
    entity::catalog::fanout::fan_out(db, restock, 500, Default::default(), at)
        .await
        .unwrap();
    let key = entity::mail::alert_dedupe_key(restock, subscription);
    email_messages::Entity::find()
        .filter(email_messages::Column::DedupeKey.eq(key))
        .one(db)
        .await
        .unwrap()
        .expect("the alert row")
        .id
}

/// A confirmation email row for a new sign-up, written as the api writes it.
async fn confirmation(
    db: &DatabaseConnection,
    product_id: i64,
    email: &str,
    at: DateTime<Utc>,
) -> i64 {
    let email = EmailAddress::parse(email).unwrap();
    entity::catalog::subscribe(db, product_id, &email, u32::MAX, at)
        .await
        .unwrap()
        .confirmation_message_id
        .expect("a confirmation")
}

async fn settled_confirmations_go_after_ninety_days_and_queued_ones_stay(backend: Backend) {
    let app = app_with_a_quiet_ledger(backend).await;
    let db = &app.db;
    let t0 = ahead_of_the_worker();
    let honey = product(db, "clover", t0).await;
    let sent = confirmation(db, honey, "carol@example.com", t0).await;
    entity::mail::mark_sent(db, sent, t0).await.unwrap();
    let failed = confirmation(db, honey, "dave@example.com", t0).await;
    entity::mail::mark_failed(db, failed, "550 no such user", t0)
        .await
        .unwrap();
    let queued = confirmation(db, honey, "eve@example.com", t0).await;
    // Waiting for a retry a year away: no pump will take it, whatever it is doing.
    let later = t0 + Duration::days(365);
    entity::mail::retry_at(db, queued, "421 try later", later, t0)
        .await
        .unwrap();
    let lately = t0 + Duration::days(2);
    let sent_lately = confirmation(db, honey, "frank@example.com", lately).await;
    entity::mail::mark_sent(db, sent_lately, lately)
        .await
        .unwrap();

    let purged = purge(&app, t0 + Duration::days(91)).await;

    assert_eq!(purged.emails, 2);
    assert_eq!(
        ids::<email_messages::Entity>(db).await,
        BTreeSet::from([queued, sent_lately])
    );
}

async fn old_alerts_go_only_once_a_newer_restock_means_they_cannot_be_sent_again(backend: Backend) {
    let app = app_with_a_quiet_ledger(backend).await;
    let db = &app.db;
    let t0 = ahead_of_the_worker();
    let honey = product(db, "heather", t0).await;
    let ann = confirmed(db, honey, "ann@example.com", t0).await;
    let bob = confirmed(db, honey, "bob@example.com", t0).await;
    let first = set_in_stock(db, honey, true, t0).await;
    let ann_first = alert(db, first, ann, t0).await;
    let bob_first = alert(db, first, bob, t0).await;
    entity::mail::mark_sent(db, ann_first, t0).await.unwrap();
    entity::mail::mark_failed(db, bob_first, "550", t0)
        .await
        .unwrap();
    // Sold out, Ann signs up again, and the product is back: a second restock.
    set_in_stock(db, honey, false, t0 + Duration::days(1)).await;
    let again = EmailAddress::parse("ann@example.com").unwrap();
    entity::catalog::subscribe(db, honey, &again, u32::MAX, t0 + Duration::days(1))
        .await
        .unwrap();
    let second = set_in_stock(db, honey, true, t0 + Duration::days(2)).await;
    let ann_second = alert(db, second, ann, t0 + Duration::days(2)).await;
    entity::mail::mark_sent(db, ann_second, t0 + Duration::days(2))
        .await
        .unwrap();

    let now = t0 + Duration::days(200);
    let purged = purge(&app, now).await;

    // The first restock's alerts can never be written again; the second's is what stops Ann
    // getting it twice, so it stays even though it is as old as the others.
    assert_eq!(purged.emails, 2);
    assert_eq!(
        ids::<email_messages::Entity>(db).await,
        BTreeSet::from([ann_second])
    );
    // Ann re-armed again in a race while the product is still in stock: the latest restock's
    // fan-out runs again and finds her alert already written.
    let mut rearmed: subscriptions::ActiveModel = subscriptions::Entity::find_by_id(ann)
        .one(db)
        .await
        .unwrap()
        .unwrap()
        .into();
    rearmed.status = Set(SubscriptionStatus::Confirmed);
    subscriptions::Entity::update(rearmed)
        .exec(db)
        .await
        .unwrap();
    let rerun = entity::catalog::fanout::fan_out(db, second, 500, Default::default(), now)
        .await
        .unwrap();
    assert!(rerun.message_ids.is_empty(), "alerted twice: {rerun:?}");
    assert_eq!(
        email_messages::Entity::find().all(db).await.unwrap().len(),
        1
    );
}

async fn an_alert_whose_subscription_is_gone_goes(backend: Backend) {
    let app = app_with_a_quiet_ledger(backend).await;
    let db = &app.db;
    let t0 = ahead_of_the_worker();
    let honey = product(db, "acacia", t0).await;
    let subscription = confirmed(db, honey, "gone@example.com", t0).await;
    let restock = set_in_stock(db, honey, true, t0).await;
    let sent = alert(db, restock, subscription, t0).await;
    entity::mail::mark_sent(db, sent, t0).await.unwrap();
    subscriptions::Entity::delete_by_id(subscription)
        .exec(db)
        .await
        .unwrap();

    let purged = purge(&app, t0 + Duration::days(91)).await;

    assert_eq!(purged.emails, 1);
    assert!(ids::<email_messages::Entity>(db).await.is_empty());
}

async fn hold(app: &TestApp, drop_id: i64, name: &str) -> (tests::TestUser, i64) {
    let buyer = app.customer(name).await;
    let answer = app
        .post(
            &format!("/api/drops/{drop_id}/reserve"),
            Some(&buyer.token),
            json!({}),
        )
        .await;
    assert!(answer.status.is_success(), "{:?}", answer.body);
    let id = answer.body["id"].as_i64().expect("hold id");
    (buyer, id)
}

async fn holds_stay_unless_configured_then_only_ended_unbought_ones_go(backend: Backend) {
    let app = spawn_app_with(backend, &[("RETENTION_HOLDS_DAYS", "30")]).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 5).await;
    let (buyer, bought) = hold(&app, drop_id, "buyer").await;
    let answer = app
        .post(
            &format!("/api/drops/{bought}/purchase"),
            Some(&buyer.token),
            json!({}),
        )
        .await;
    assert!(answer.status.is_success(), "{:?}", answer.body);
    let (leaver, released) = hold(&app, drop_id, "leaver").await;
    let path = format!("/api/reservations/{released}");
    let answer = app
        .request(reqwest::Method::DELETE, &path, Some(&leaver.token), None)
        .await;
    assert!(answer.status.is_success(), "{:?}", answer.body);
    let (_, expired) = hold(&app, drop_id, "dawdler").await;
    let t0 = Utc::now();
    entity::drops::expire(
        &app.db,
        expired,
        Duration::minutes(1),
        t0 + Duration::minutes(2),
    )
    .await
    .unwrap()
    .expect("expired");
    let (_, active) = hold(&app, drop_id, "holder").await;
    let all = BTreeSet::from([bought, released, expired, active]);

    let mut unset = app.state.settings.retention.clone();
    unset.holds = None;
    let by_default = purge_old_rows(&app.db, &unset, t0 + Duration::days(3650))
        .await
        .unwrap();
    let too_soon = purge(&app, t0 + Duration::days(29)).await;
    assert_eq!((by_default.holds, too_soon.holds), (0, 0));
    assert_eq!(ids::<reservations::Entity>(&app.db).await, all);

    let purged = purge(&app, t0 + Duration::days(31)).await;

    assert_eq!(purged.holds, 2);
    assert_eq!(
        ids::<reservations::Entity>(&app.db).await,
        BTreeSet::from([bought, active])
    );
    assert!(app.audit(drop_id).await.holds());
}

async fn several_workers_purging_at_once_delete_each_row_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let user_id = app.customer("regular").await.id;
    let t0 = Utc::now();
    let row = |n: usize, at: DateTime<Utc>| idempotency_keys::ActiveModel {
        user_id: Set(user_id),
        key: Set(format!("key-{n}")),
        request_hash: Set("hash".into()),
        created_at: Set(at),
        ..Default::default()
    };
    // More than two batches of old keys, and a few recent ones.
    let old = (0..2_500).map(|n| row(n, t0));
    let recent = (2_500..2_510).map(|n| row(n, t0 + Duration::hours(2)));
    idempotency_keys::Entity::insert_many(old.chain(recent).collect::<Vec<_>>())
        .exec_without_returning(&app.db)
        .await
        .unwrap();
    let later = t0 + Duration::hours(25);

    let (first, second) = tokio::join!(purge(&app, later), purge(&app, later));

    assert_eq!(first.idempotency_keys + second.idempotency_keys, 2_500);
    let left = idempotency_keys::Entity::find()
        .order_by_asc(idempotency_keys::Column::Id)
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(left.len(), 10);
    assert!(
        left.iter().all(|k| k.created_at > t0),
        "an old key survived"
    );
}

/// A mailbox's count of confirmation emails matters for its day-long window only.
async fn mail_quotas_go_once_their_day_is_over(backend: Backend) {
    let app = app_with_a_quiet_ledger(backend).await;
    let db = &app.db;
    let t0 = ahead_of_the_worker();
    let honey = product(db, "clover", t0).await;
    confirmation(db, honey, "carol@example.com", t0).await;
    let later = t0 + Duration::hours(20);
    confirmation(db, honey, "dave+news@example.com", later).await;

    let purged = purge(&app, t0 + Duration::hours(25)).await;

    assert_eq!(purged.mail_quotas, 1);
    let left: Vec<String> = entity::models::mail_quotas::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.mailbox)
        .collect();
    assert_eq!(left, ["dave@example.com"]);
}

both_backends!(
    mail_quotas_go_once_their_day_is_over,
    idempotency_keys_go_a_day_after_they_were_made,
    sessions_go_thirty_days_after_they_ended_and_live_ones_stay,
    a_session_deleted_before_it_expired_leaves_a_tombstone_and_an_expired_one_none,
    webhook_deliveries_go_after_ninety_days,
    settled_confirmations_go_after_ninety_days_and_queued_ones_stay,
    old_alerts_go_only_once_a_newer_restock_means_they_cannot_be_sent_again,
    an_alert_whose_subscription_is_gone_goes,
    holds_stay_unless_configured_then_only_ended_unbought_ones_go,
    several_workers_purging_at_once_delete_each_row_once,
);
