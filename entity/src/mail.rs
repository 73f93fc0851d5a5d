//! The email ledger: one row per message, the outbox the send jobs work from.
//!
//! A row is written in the same transaction as the fact that calls for it (a sign-up, a
//! restock fan-out), unique by its dedupe key, so a job that runs twice writes one row. A send
//! *claims* its row by pushing `next_attempt_at` past a lease, so two jobs for one row never
//! both send it; a row that is `sent` is never claimed again.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait},
};
use serde::{Deserialize, Serialize};

use crate::{
    Error,
    catalog::{is_available, subscription_status},
    db::begin_write,
    error::Result,
    models::{email_messages, products, restock_events, subscriptions},
    tokens,
};

pub mod kind {
    /// Double opt-in: "confirm that you want to hear when X is back".
    pub const CONFIRMATION: &str = "subscription_confirmation";
    /// "X is back in stock".
    pub const RESTOCK_ALERT: &str = "restock_alert";
}

pub mod status {
    pub const QUEUED: &str = "queued";
    pub const SENT: &str = "sent";
    pub const FAILED: &str = "failed";
}

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
        kind::CONFIRMATION,
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
    kind: &str,
    subscription: &subscriptions::Model,
    dedupe_key: String,
    payload: &Payload,
    now: DateTime<Utc>,
) -> Result<email_messages::ActiveModel> {
    let payload = serde_json::to_value(payload).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(email_messages::ActiveModel {
        kind: Set(kind.to_owned()),
        recipient: Set(subscription.email.clone()),
        subscription_id: Set(Some(subscription.id)),
        dedupe_key: Set(dedupe_key),
        payload: Set(payload),
        status: Set(status::QUEUED.into()),
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
    let candidates: Vec<i64> = subscriptions::Entity::find()
        .select_only()
        .column(subscriptions::Column::Id)
        .filter(subscriptions::Column::ProductId.eq(product.id))
        .filter(subscriptions::Column::Status.eq(subscription_status::CONFIRMED))
        .order_by_asc(subscriptions::Column::Id)
        .limit(batch)
        .into_tuple()
        .all(&txn)
        .await?;
    if candidates.is_empty() {
        return Ok(FanOut::default());
    }
    let more = u64::try_from(candidates.len()).unwrap_or(u64::MAX) >= batch;
    let mut claimed = subscriptions::Entity::update_many()
        .col_expr(
            subscriptions::Column::Status,
            Expr::value(subscription_status::NOTIFIED),
        )
        .col_expr(subscriptions::Column::NotifiedAt, Expr::value(now))
        .filter(subscriptions::Column::Id.is_in(candidates))
        .filter(subscriptions::Column::Status.eq(subscription_status::CONFIRMED))
        .exec_with_returning(&txn)
        .await?;
    claimed.sort_by_key(|s| s.id);
    let payload = Payload {
        product_id: product.id,
        product_name: product.name.clone(),
        product_slug: product.slug.clone(),
        restock_event_id: Some(event.id),
    };
    let keys: Vec<String> = claimed
        .iter()
        .map(|s| alert_dedupe_key(event.id, s.id))
        .collect();
    let existing: Vec<String> = email_messages::Entity::find()
        .select_only()
        .column(email_messages::Column::DedupeKey)
        .filter(email_messages::Column::DedupeKey.is_in(keys.clone()))
        .into_tuple()
        .all(&txn)
        .await?;
    let rows = claimed
        .iter()
        .zip(&keys)
        .filter(|(_, key)| !existing.contains(key))
        .map(|(sub, key)| new_row(kind::RESTOCK_ALERT, sub, key.clone(), &payload, now))
        .collect::<Result<Vec<_>>>()?;
    if !rows.is_empty() {
        email_messages::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await?;
    }
    let message_ids: Vec<i64> = email_messages::Entity::find()
        .select_only()
        .column(email_messages::Column::Id)
        .filter(email_messages::Column::DedupeKey.is_in(keys))
        .filter(email_messages::Column::Status.eq(status::QUEUED))
        .order_by_asc(email_messages::Column::Id)
        .into_tuple()
        .all(&txn)
        .await?;
    txn.commit().await?;
    Ok(FanOut { message_ids, more })
}

/// A claimed message, ready to render and send.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub id: i64,
    pub kind: String,
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
    if message.status != status::QUEUED {
        return Ok(Claim::Done);
    }
    if let Some(at) = message.next_attempt_at
        && at > now
    {
        return Ok(Claim::NotYet(at));
    }
    let claimed = email_messages::Entity::update_many()
        .col_expr(
            email_messages::Column::Attempts,
            Expr::col(email_messages::Column::Attempts).add(1),
        )
        .col_expr(
            email_messages::Column::NextAttemptAt,
            Expr::value(now + lease),
        )
        .col_expr(email_messages::Column::UpdatedAt, Expr::value(now))
        .filter(email_messages::Column::Id.eq(message_id))
        .filter(email_messages::Column::Status.eq(status::QUEUED))
        .filter(email_messages::Column::Attempts.eq(message.attempts))
        .exec(&txn)
        .await?;
    if claimed.rows_affected != 1 {
        return Ok(Claim::NotYet(now + lease));
    }
    let payload: Payload = match serde_json::from_value(message.payload.clone()) {
        Ok(payload) => payload,
        Err(e) => {
            fail(&txn, message_id, &format!("unreadable payload: {e}"), now).await?;
            txn.commit().await?;
            return Ok(Claim::Done);
        }
    };
    let subscription = match message.subscription_id {
        Some(id) => subscriptions::Entity::find_by_id(id).one(&txn).await?,
        None => None,
    };
    let pending_confirmation = match (message.kind.as_str(), &subscription) {
        (kind::CONFIRMATION, Some(sub)) if sub.status == subscription_status::PENDING => true,
        (kind::RESTOCK_ALERT, Some(sub)) if sub.status != subscription_status::UNSUBSCRIBED => {
            false
        }
        _ => {
            fail(
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
    let unsubscribe_token = tokens::generate();
    let mut update = subscriptions::Entity::update_many()
        .col_expr(
            subscriptions::Column::UnsubscribeTokenHash,
            Expr::value(tokens::hash(&unsubscribe_token)),
        )
        .filter(subscriptions::Column::Id.eq(message.subscription_id));
    let confirm_token = pending_confirmation.then(tokens::generate);
    if let Some(token) = &confirm_token {
        update = update.col_expr(
            subscriptions::Column::ConfirmTokenHash,
            Expr::value(tokens::hash(token)),
        );
    }
    update.exec(&txn).await?;
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

/// # Errors
/// Database failure.
pub async fn mark_sent(
    db: &impl ConnectionTrait,
    message_id: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    email_messages::Entity::update_many()
        .col_expr(email_messages::Column::Status, Expr::value(status::SENT))
        .col_expr(email_messages::Column::SentAt, Expr::value(now))
        .col_expr(
            email_messages::Column::NextAttemptAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            email_messages::Column::LastError,
            Expr::value(Option::<String>::None),
        )
        .col_expr(email_messages::Column::UpdatedAt, Expr::value(now))
        .filter(email_messages::Column::Id.eq(message_id))
        .filter(email_messages::Column::Status.eq(status::QUEUED))
        .exec(db)
        .await?;
    Ok(())
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
    email_messages::Entity::update_many()
        .col_expr(
            email_messages::Column::LastError,
            Expr::value(truncate(error)),
        )
        .col_expr(email_messages::Column::NextAttemptAt, Expr::value(at))
        .col_expr(email_messages::Column::UpdatedAt, Expr::value(now))
        .filter(email_messages::Column::Id.eq(message_id))
        .filter(email_messages::Column::Status.eq(status::QUEUED))
        .exec(db)
        .await?;
    Ok(())
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
    fail(db, message_id, error, now).await
}

async fn fail(
    db: &impl ConnectionTrait,
    message_id: i64,
    error: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    email_messages::Entity::update_many()
        .col_expr(email_messages::Column::Status, Expr::value(status::FAILED))
        .col_expr(
            email_messages::Column::LastError,
            Expr::value(truncate(error)),
        )
        .col_expr(
            email_messages::Column::NextAttemptAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(email_messages::Column::UpdatedAt, Expr::value(now))
        .filter(email_messages::Column::Id.eq(message_id))
        .filter(email_messages::Column::Status.eq(status::QUEUED))
        .exec(db)
        .await?;
    Ok(())
}

fn truncate(error: &str) -> String {
    error.chars().take(2000).collect()
}

/// Queued rows nobody is working on: never picked up, or whose lease or backoff ran out more
/// than `grace` ago. Their jobs were lost; the reconciler enqueues them again.
///
/// # Errors
/// Database failure.
pub async fn overdue(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    grace: Duration,
    limit: u64,
) -> Result<Vec<i64>> {
    let cutoff = now - grace;
    Ok(email_messages::Entity::find()
        .select_only()
        .column(email_messages::Column::Id)
        .filter(email_messages::Column::Status.eq(status::QUEUED))
        .filter(
            Expr::col(email_messages::Column::NextAttemptAt)
                .is_null()
                .and(Expr::col(email_messages::Column::UpdatedAt).lt(cutoff))
                .or(Expr::col(email_messages::Column::NextAttemptAt).lt(cutoff)),
        )
        .order_by_asc(email_messages::Column::Id)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?)
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
