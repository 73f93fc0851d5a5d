//! The email ledger: one row per message, the outbox the send jobs work from.
//!
//! A row is written in the same transaction as the fact that calls for it (a sign-up, a
//! restock fan-out), unique by its dedupe key, so a job that runs twice writes one row. A send
//! *claims* its row by pushing `next_attempt_at` past a lease, so two jobs for one row never
//! both send it; a row that is `sent` is never claimed again.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait},
};
use serde::{Deserialize, Serialize};

use crate::{
    Error,
    catalog::{SubscriptionStatus, is_available},
    db::begin_write,
    error::Result,
    models::{email_messages, products, restock_events, subscriptions},
    tokens,
};

pub use crate::models::email_messages::{MessageKind, MessageStatus};

/// What a message is about, as it was when the row was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub product_id: i64,
    pub product_name: String,
    pub product_slug: String,
    #[serde(default)]
    pub restock_event_id: Option<i64>,
}

/// Writes the confirmation email of a sign-up.
///
/// # Errors
/// Database failure.
pub async fn queue_confirmation(
    txn: &impl ConnectionTrait,
    subscription: &subscriptions::Model,
    product: &products::Model,
    now: DateTime<Utc>,
) -> Result<i64> {
    let payload = Payload {
        product_id: product.id,
        product_name: product.name.clone(),
        product_slug: product.slug.clone(),
        restock_event_id: None,
    };
    let row = new_row(
        MessageKind::SubscriptionConfirmation,
        subscription,
        format!(
            "confirm:{}:{}",
            subscription.id,
            now.timestamp_nanos_opt().unwrap_or_default()
        ),
        &payload,
        now,
    )?;
    Ok(email_messages::Entity::insert(row)
        .exec_with_returning(txn)
        .await?
        .id)
}

fn new_row(
    kind: MessageKind,
    subscription: &subscriptions::Model,
    dedupe_key: String,
    payload: &Payload,
    now: DateTime<Utc>,
) -> Result<email_messages::ActiveModel> {
    let payload = serde_json::to_value(payload).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(email_messages::ActiveModel {
        kind: Set(kind),
        recipient: Set(subscription.email.clone()),
        subscription_id: Set(Some(subscription.id)),
        dedupe_key: Set(dedupe_key),
        payload: Set(payload),
        status: Set(MessageStatus::Queued),
        attempts: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    })
}

pub fn alert_dedupe_key(restock_event_id: i64, subscription_id: i64) -> String {
    format!("restock:{restock_event_id}:subscription:{subscription_id}")
}

/// One batch of a restock fan-out.
#[derive(Clone, Debug, Default)]
pub struct FanOut {
    /// Ledger rows written, in signup order.
    pub message_ids: Vec<i64>,
    /// More confirmed subscribers may be waiting.
    pub more: bool,
}

/// Marks up to `batch` confirmed subscribers of a product notified, in signup order, and
/// returns them, with whether more may be waiting. A conditional update, so concurrent
/// fan-outs never claim anyone twice.
async fn claim_subscribers(
    txn: &impl ConnectionTrait,
    product_id: i64,
    batch: u64,
    now: DateTime<Utc>,
) -> Result<(Vec<subscriptions::Model>, bool)> {
    let candidates: Vec<i64> = subscriptions::Entity::find()
        .select_only()
        .column(subscriptions::Column::Id)
        .filter(subscriptions::Column::ProductId.eq(product_id))
        .filter(subscriptions::Column::Status.eq(SubscriptionStatus::Confirmed))
        .order_by_asc(subscriptions::Column::Id)
        .limit(batch)
        .into_tuple()
        .all(txn)
        .await?;
    if candidates.is_empty() {
        return Ok((Vec::new(), false));
    }
    let more = u64::try_from(candidates.len()).unwrap_or(u64::MAX) >= batch;
    let mut claimed = subscriptions::Entity::update_many()
        .col_expr(
            subscriptions::Column::Status,
            Expr::value(SubscriptionStatus::Notified),
        )
        .col_expr(subscriptions::Column::NotifiedAt, Expr::value(now))
        .filter(subscriptions::Column::Id.is_in(candidates))
        .filter(subscriptions::Column::Status.eq(SubscriptionStatus::Confirmed))
        .exec_with_returning(txn)
        .await?;
    claimed.sort_by_key(|s| s.id);
    Ok((claimed, more))
}

/// Writes one alert per claimed subscriber (none twice: the dedupe key is per subscription
/// and restock) and returns the ids of those still queued, in signup order.
async fn write_alerts(
    txn: &impl ConnectionTrait,
    restock_event_id: i64,
    product: &products::Model,
    claimed: &[subscriptions::Model],
    now: DateTime<Utc>,
) -> Result<Vec<i64>> {
    let payload = Payload {
        product_id: product.id,
        product_name: product.name.clone(),
        product_slug: product.slug.clone(),
        restock_event_id: Some(restock_event_id),
    };
    let keys: Vec<String> = claimed
        .iter()
        .map(|s| alert_dedupe_key(restock_event_id, s.id))
        .collect();
    let existing: Vec<String> = email_messages::Entity::find()
        .select_only()
        .column(email_messages::Column::DedupeKey)
        .filter(email_messages::Column::DedupeKey.is_in(keys.clone()))
        .into_tuple()
        .all(txn)
        .await?;
    let rows = claimed
        .iter()
        .zip(&keys)
        .filter(|(_, key)| !existing.contains(key))
        .map(|(sub, key)| new_row(MessageKind::RestockAlert, sub, key.clone(), &payload, now))
        .collect::<Result<Vec<_>>>()?;
    if !rows.is_empty() {
        email_messages::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(email_messages::Entity::find()
        .select_only()
        .column(email_messages::Column::Id)
        .filter(email_messages::Column::DedupeKey.is_in(keys))
        .filter(email_messages::Column::Status.eq(MessageStatus::Queued))
        .order_by_asc(email_messages::Column::Id)
        .into_tuple()
        .all(txn)
        .await?)
}

/// Takes the next `batch` confirmed subscribers of the restocked product, in signup order,
/// marks them notified and writes one alert each — all in one transaction. Subscribers are
/// claimed by a conditional update, so concurrent fan-outs never alert anyone twice.
///
/// Nothing happens when the product is no longer visible and in stock: its subscribers stay
/// confirmed for the next restock.
///
/// # Errors
/// Database failure.
pub async fn fan_out(
    db: &DatabaseConnection,
    restock_event_id: i64,
    batch: u64,
    now: DateTime<Utc>,
) -> Result<FanOut> {
    let txn = begin_write(db).await?;
    let Some(event) = restock_events::Entity::find_by_id(restock_event_id)
        .one(&txn)
        .await?
    else {
        return Ok(FanOut::default());
    };
    let Some(product) = products::Entity::find_by_id(event.product_id)
        .one(&txn)
        .await?
        .filter(|p| p.visible && is_available(p))
    else {
        return Ok(FanOut::default());
    };
    let (claimed, more) = claim_subscribers(&txn, product.id, batch, now).await?;
    if claimed.is_empty() {
        return Ok(FanOut::default());
    }
    let message_ids = write_alerts(&txn, event.id, &product, &claimed, now).await?;
    txn.commit().await?;
    Ok(FanOut { message_ids, more })
}

/// A claimed message, ready to render and send.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub id: i64,
    pub kind: MessageKind,
    pub recipient: String,
    pub payload: Payload,
    /// This try's number, counting from 1.
    pub attempt: i32,
    /// Fresh tokens for the links the email carries. Only their hashes are stored, so they
    /// are minted as the email is written and never kept; the newest email's links are the
    /// ones that work. The confirm token is set for confirmation emails only.
    pub confirm_token: Option<String>,
    pub unsubscribe_token: String,
}

/// The answer to "may I send this row now?".
#[derive(Clone, Debug)]
pub enum Claim {
    /// Yours: send it, then report with [`mark_sent`], [`retry_at`] or [`mark_failed`].
    Ready(Box<Outgoing>),
    /// Another send holds it, or its backoff has not run out: try again at this instant.
    NotYet(DateTime<Utc>),
    /// Already sent or failed (or skipped now, because its subscriber left): nothing to do.
    Done,
}

/// Claims a queued row for one send attempt, holding it for `lease`.
///
/// # Errors
/// Database failure.
pub async fn claim(
    db: &DatabaseConnection,
    message_id: i64,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Claim> {
    let txn = begin_write(db).await?;
    let Some(message) = email_messages::Entity::find_by_id(message_id)
        .one(&txn)
        .await?
    else {
        return Ok(Claim::Done);
    };
    if message.status != MessageStatus::Queued {
        return Ok(Claim::Done);
    }
    if let Some(at) = message.next_attempt_at
        && at > now
    {
        return Ok(Claim::NotYet(at));
    }
    if !take_lease(&txn, &message, now + lease, now).await? {
        return Ok(Claim::NotYet(now + lease));
    }
    let payload: Payload = match serde_json::from_value(message.payload.clone()) {
        Ok(payload) => payload,
        Err(e) => {
            mark_failed(&txn, message_id, &format!("unreadable payload: {e}"), now).await?;
            txn.commit().await?;
            return Ok(Claim::Done);
        }
    };
    let subscription = match message.subscription_id {
        Some(id) => subscriptions::Entity::find_by_id(id).one(&txn).await?,
        None => None,
    };
    let pending_confirmation = match (message.kind, &subscription) {
        (MessageKind::SubscriptionConfirmation, Some(sub))
            if sub.status == SubscriptionStatus::Pending =>
        {
            true
        }
        (MessageKind::RestockAlert, Some(sub))
            if sub.status != SubscriptionStatus::Unsubscribed =>
        {
            false
        }
        _ => {
            mark_failed(
                &txn,
                message_id,
                "skipped: the subscription is gone, unsubscribed or already confirmed",
                now,
            )
            .await?;
            txn.commit().await?;
            return Ok(Claim::Done);
        }
    };
    let (confirm_token, unsubscribe_token) =
        mint_tokens(&txn, message.subscription_id, pending_confirmation).await?;
    txn.commit().await?;
    Ok(Claim::Ready(Box::new(Outgoing {
        id: message.id,
        kind: message.kind,
        recipient: message.recipient,
        payload,
        attempt: message.attempts + 1,
        confirm_token,
        unsubscribe_token,
    })))
}

/// Counts an attempt and holds the row until `until`, unless another send claimed it since
/// it was read.
async fn take_lease(
    txn: &impl ConnectionTrait,
    message: &email_messages::Model,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let claimed = email_messages::Entity::update_many()
        .col_expr(
            email_messages::Column::Attempts,
            Expr::col(email_messages::Column::Attempts).add(1),
        )
        .col_expr(email_messages::Column::NextAttemptAt, Expr::value(until))
        .col_expr(email_messages::Column::UpdatedAt, Expr::value(now))
        .filter(email_messages::Column::Id.eq(message.id))
        .filter(email_messages::Column::Status.eq(MessageStatus::Queued))
        .filter(email_messages::Column::Attempts.eq(message.attempts))
        .exec(txn)
        .await?;
    Ok(claimed.rows_affected == 1)
}

/// New link tokens for the email about to go out (only the newest email's links work): an
/// unsubscribe token always, a confirmation token while the subscription awaits one.
async fn mint_tokens(
    txn: &impl ConnectionTrait,
    subscription_id: Option<i64>,
    pending_confirmation: bool,
) -> Result<(Option<String>, String)> {
    let unsubscribe_token = tokens::generate();
    let mut update = subscriptions::Entity::update_many()
        .col_expr(
            subscriptions::Column::UnsubscribeTokenHash,
            Expr::value(tokens::hash(&unsubscribe_token)),
        )
        .filter(subscriptions::Column::Id.eq(subscription_id));
    let confirm_token = pending_confirmation.then(tokens::generate);
    if let Some(token) = &confirm_token {
        update = update.col_expr(
            subscriptions::Column::ConfirmTokenHash,
            Expr::value(tokens::hash(token)),
        );
    }
    update.exec(txn).await?;
    Ok((confirm_token, unsubscribe_token))
}

/// What an attempt's outcome writes to a queued row.
struct Settled<'a> {
    status: MessageStatus,
    error: Option<&'a str>,
    next_attempt_at: Option<DateTime<Utc>>,
    sent_at: Option<DateTime<Utc>>,
}

/// Writes an attempt's outcome to a row that is still queued.
async fn settle(
    db: &impl ConnectionTrait,
    message_id: i64,
    outcome: Settled<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    email_messages::Entity::update_many()
        .col_expr(email_messages::Column::Status, Expr::value(outcome.status))
        .col_expr(
            email_messages::Column::LastError,
            Expr::value(outcome.error.map(truncate)),
        )
        .col_expr(
            email_messages::Column::NextAttemptAt,
            Expr::value(outcome.next_attempt_at),
        )
        .col_expr(email_messages::Column::SentAt, Expr::value(outcome.sent_at))
        .col_expr(email_messages::Column::UpdatedAt, Expr::value(now))
        .filter(email_messages::Column::Id.eq(message_id))
        .filter(email_messages::Column::Status.eq(MessageStatus::Queued))
        .exec(db)
        .await?;
    Ok(())
}

/// # Errors
/// Database failure.
pub async fn mark_sent(
    db: &impl ConnectionTrait,
    message_id: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    let sent = Settled {
        status: MessageStatus::Sent,
        error: None,
        next_attempt_at: None,
        sent_at: Some(now),
    };
    settle(db, message_id, sent, now).await
}

/// Records a transient failure; the row may be tried again from `at`.
///
/// # Errors
/// Database failure.
pub async fn retry_at(
    db: &impl ConnectionTrait,
    message_id: i64,
    error: &str,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<()> {
    let deferred = Settled {
        status: MessageStatus::Queued,
        error: Some(error),
        next_attempt_at: Some(at),
        sent_at: None,
    };
    settle(db, message_id, deferred, now).await
}

/// Gives up on a row (a permanent rejection, or too many attempts): the dead letter.
///
/// # Errors
/// Database failure.
pub async fn mark_failed(
    db: &impl ConnectionTrait,
    message_id: i64,
    error: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let failed = Settled {
        status: MessageStatus::Failed,
        error: Some(error),
        next_attempt_at: None,
        sent_at: None,
    };
    settle(db, message_id, failed, now).await
}

fn truncate(error: &str) -> String {
    error.chars().take(2000).collect()
}

/// A lease or backoff that ran out this long ago has no send coming: a retry job scheduled
/// for that instant starts within about a second (run-at is stored in whole seconds), so the
/// reconciler does not race it for nothing.
pub const RESCHEDULE_SLACK: Duration = Duration::seconds(2);

/// Queued rows nobody is working on: never picked up `unclaimed_after` after they were
/// queued or last handed to a job (the job was lost), or whose lease or backoff ran out
/// [`RESCHEDULE_SLACK`] ago (the send holding it died with its worker, or the retry job was
/// lost). There is no longer wait on top of a lease: a lease is sized to outlast its send.
fn overdue(now: DateTime<Utc>, unclaimed_after: Duration) -> Condition {
    Condition::all()
        .add(email_messages::Column::Status.eq(MessageStatus::Queued))
        .add(
            Condition::any()
                .add(
                    Condition::all()
                        .add(email_messages::Column::NextAttemptAt.is_null())
                        .add(email_messages::Column::UpdatedAt.lt(now - unclaimed_after)),
                )
                .add(email_messages::Column::NextAttemptAt.lt(now - RESCHEDULE_SLACK)),
        )
}

/// Takes up to `limit` overdue rows (see [`overdue`]) to hand to new jobs, and marks them
/// handed over (no lease, `updated_at = now`): a row is taken again only if it is still
/// unclaimed `unclaimed_after` later. The mark is conditional, so when several workers
/// reconcile at once each row goes to one of them.
///
/// # Errors
/// Database failure.
pub async fn requeue_overdue(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    unclaimed_after: Duration,
    limit: u64,
) -> Result<Vec<i64>> {
    let candidates: Vec<i64> = email_messages::Entity::find()
        .select_only()
        .column(email_messages::Column::Id)
        .filter(overdue(now, unclaimed_after))
        .order_by_asc(email_messages::Column::Id)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?;
    if candidates.is_empty() {
        return Ok(candidates);
    }
    let mut taken: Vec<i64> = email_messages::Entity::update_many()
        .col_expr(
            email_messages::Column::NextAttemptAt,
            Expr::value(None::<DateTime<Utc>>),
        )
        .col_expr(email_messages::Column::UpdatedAt, Expr::value(now))
        .filter(email_messages::Column::Id.is_in(candidates))
        .filter(overdue(now, unclaimed_after))
        .exec_with_returning(db)
        .await?
        .into_iter()
        .map(|row| row.id)
        .collect();
    taken.sort_unstable();
    Ok(taken)
}

/// # Errors
/// Database failure.
pub async fn find(
    db: &impl ConnectionTrait,
    message_id: i64,
) -> Result<Option<email_messages::Model>> {
    Ok(email_messages::Entity::find_by_id(message_id)
        .one(db)
        .await?)
}
