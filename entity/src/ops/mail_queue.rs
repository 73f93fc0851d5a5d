//! The email ledger seen as a queue, for the operations console: its rows counted by state,
//! paged, retried and discarded. Every count reads a partial index (queued, failed, recently
//! sent rows), never the ledger's history.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};

use super::ItemState;
use crate::{
    error::Result,
    models::email_messages::{self, Column, MessageStatus},
};

/// The ledger's rows by state, and what it sent and gave up on lately.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub ready: u64,
    pub in_flight: u64,
    pub retrying: u64,
    pub failed: u64,
    /// Sent in the last 15 minutes.
    pub done_recently: u64,
    /// When the oldest ready row became due.
    pub oldest_ready_at: Option<DateTime<Utc>>,
    /// Sent in the last 1, 5 and 15 minutes.
    pub sent: [u64; 3],
    /// Given up on in the last 1, 5 and 15 minutes.
    pub failed_lately: [u64; 3],
}

/// The windows throughput is counted over.
pub const WINDOWS_MINUTES: [i64; 3] = [1, 5, 15];

fn queued() -> Condition {
    // Written out (like the pump's claim) so the partial index of queued rows serves it.
    Condition::all().add(Expr::cust("email_messages.status = 'queued'"))
}

fn due(now: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(Column::NextAttemptAt.is_null())
        .add(Column::NextAttemptAt.lte(now))
}

/// Which rows a state is. A queued row not yet due is held by a pump (its lease: no error
/// recorded) or waiting out a backoff (the error it is retried for).
fn state_condition(state: ItemState, now: DateTime<Utc>) -> Condition {
    match state {
        ItemState::Ready => queued().add(due(now)),
        ItemState::InFlight => queued()
            .add(Column::NextAttemptAt.gt(now))
            .add(Column::LastError.is_null()),
        // The ledger schedules nothing but retries.
        ItemState::Scheduled => Condition::all().add(Expr::cust("1 = 0")),
        ItemState::Retrying => queued()
            .add(Column::NextAttemptAt.gt(now))
            .add(Column::LastError.is_not_null()),
        ItemState::Failed => Condition::all().add(Expr::cust("email_messages.status = 'failed'")),
        ItemState::Done => Condition::all().add(Expr::cust("email_messages.status = 'sent'")),
    }
}

/// # Errors
/// Database failure.
pub async fn counts(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<Counts> {
    let count = |condition: Condition| email_messages::Entity::find().filter(condition).count(db);
    let sent_since = |minutes: i64| {
        count(
            state_condition(ItemState::Done, now)
                .add(Column::SentAt.gt(now - Duration::minutes(minutes))),
        )
    };
    let failed_since = |minutes: i64| {
        count(
            state_condition(ItemState::Failed, now)
                .add(Column::UpdatedAt.gt(now - Duration::minutes(minutes))),
        )
    };
    let oldest = email_messages::Entity::find()
        .filter(state_condition(ItemState::Ready, now))
        .order_by_asc(Column::Id)
        .one(db)
        .await?
        .map(|row| row.next_attempt_at.unwrap_or(row.created_at));
    let sent = [
        sent_since(1).await?,
        sent_since(5).await?,
        sent_since(15).await?,
    ];
    Ok(Counts {
        ready: count(state_condition(ItemState::Ready, now)).await?,
        in_flight: count(state_condition(ItemState::InFlight, now)).await?,
        retrying: count(state_condition(ItemState::Retrying, now)).await?,
        failed: count(state_condition(ItemState::Failed, now)).await?,
        done_recently: sent[2],
        oldest_ready_at: oldest,
        sent,
        failed_lately: [
            failed_since(1).await?,
            failed_since(5).await?,
            failed_since(15).await?,
        ],
    })
}

/// A page of rows in `state`, after the row `after` (an id) when given. Rows still to send
/// come oldest first; sent and failed rows newest first.
///
/// # Errors
/// Database failure.
pub async fn page(
    db: &impl ConnectionTrait,
    state: ItemState,
    after: Option<i64>,
    limit: u64,
    now: DateTime<Utc>,
) -> Result<Vec<email_messages::Model>> {
    let newest_first = matches!(state, ItemState::Failed | ItemState::Done);
    let mut query = email_messages::Entity::find()
        .filter(state_condition(state, now))
        .limit(limit);
    query = if newest_first {
        query.order_by_desc(Column::Id)
    } else {
        query.order_by_asc(Column::Id)
    };
    if let Some(after) = after {
        query = query.filter(if newest_first {
            Column::Id.lt(after)
        } else {
            Column::Id.gt(after)
        });
    }
    Ok(query.all(db).await?)
}

/// The state a row is in now.
pub fn state_of(row: &email_messages::Model, now: DateTime<Utc>) -> ItemState {
    match row.status {
        MessageStatus::Sent => ItemState::Done,
        MessageStatus::Failed => ItemState::Failed,
        MessageStatus::Queued => match row.next_attempt_at {
            Some(at) if at > now && row.last_error.is_some() => ItemState::Retrying,
            Some(at) if at > now => ItemState::InFlight,
            _ => ItemState::Ready,
        },
    }
}

/// Sends a failed row again, as if new: due now, its attempts reset. `Some(1)` when it
/// was failed, `Some(0)` when it is queued or sent already (nothing to do: safe to repeat),
/// `None` when there is no such row.
///
/// # Errors
/// Database failure.
pub async fn retry(db: &impl ConnectionTrait, id: i64, now: DateTime<Utc>) -> Result<Option<u64>> {
    let changed = requeue(db, Some(id), now).await?;
    unless_gone(db, id, changed).await
}

/// Sends every failed row again. Returns how many.
///
/// # Errors
/// Database failure.
pub async fn retry_all(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<u64> {
    requeue(db, None, now).await
}

async fn requeue(db: &impl ConnectionTrait, id: Option<i64>, now: DateTime<Utc>) -> Result<u64> {
    let mut update = email_messages::Entity::update_many()
        .col_expr(Column::Status, Expr::value(MessageStatus::Queued))
        .col_expr(Column::Attempts, Expr::value(0))
        .col_expr(Column::LastError, Expr::value(None::<String>))
        .col_expr(Column::NextAttemptAt, Expr::value(None::<DateTime<Utc>>))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Status.eq(MessageStatus::Failed));
    if let Some(id) = id {
        update = update.filter(Column::Id.eq(id));
    }
    Ok(update.exec(db).await?.rows_affected)
}

/// Makes a row waiting out a retry's backoff due now. `Some(0)` when it is not waiting;
/// `None` when there is no such row.
///
/// # Errors
/// Database failure.
pub async fn run_now(
    db: &impl ConnectionTrait,
    id: i64,
    now: DateTime<Utc>,
) -> Result<Option<u64>> {
    let changed = email_messages::Entity::update_many()
        .col_expr(Column::NextAttemptAt, Expr::value(None::<DateTime<Utc>>))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(state_condition(ItemState::Retrying, now))
        .exec(db)
        .await?
        .rows_affected;
    unless_gone(db, id, changed).await
}

/// Deletes a failed row: the operator gave up on it. Rows still queued or sent are kept
/// (`Some(0)`); `None` when there is no such row.
///
/// # Errors
/// Database failure.
pub async fn discard(db: &impl ConnectionTrait, id: i64) -> Result<Option<u64>> {
    let deleted = email_messages::Entity::delete_many()
        .filter(Column::Id.eq(id))
        .filter(Column::Status.eq(MessageStatus::Failed))
        .exec(db)
        .await?
        .rows_affected;
    unless_gone(db, id, deleted).await
}

/// Deletes every failed row. Returns how many.
///
/// # Errors
/// Database failure.
pub async fn discard_all(db: &impl ConnectionTrait) -> Result<u64> {
    Ok(email_messages::Entity::delete_many()
        .filter(Column::Status.eq(MessageStatus::Failed))
        .exec(db)
        .await?
        .rows_affected)
}

/// What an action on row `id` changed, or `None` when there is no such row (nothing changed
/// and nothing is there to change).
async fn unless_gone(db: &impl ConnectionTrait, id: i64, changed: u64) -> Result<Option<u64>> {
    if changed == 0
        && email_messages::Entity::find_by_id(id)
            .one(db)
            .await?
            .is_none()
    {
        return Ok(None);
    }
    Ok(Some(changed))
}
