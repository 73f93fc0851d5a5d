//! The pump's side of the ledger: due rows claimed under a lease (two workers never both
//! send one), their links minted, and each settled as sent, retried or failed.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
    sea_query::{CaseStatement, Expr, ExprTrait, LockBehavior, LockType},
};

use super::{Content, MessageKind, MessageStatus};
use crate::{
    db::begin_write,
    error::Result,
    models::{
        email_messages,
        subscriptions::{self, SubscriptionStatus},
    },
    tokens::{self, LinkKey},
};

/// A claimed message, ready to render and send.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub id: i64,
    pub kind: MessageKind,
    pub recipient: String,
    pub payload: Content,
    /// This try's number, counting from 1.
    pub attempt: i32,
    /// Tokens for the links the email carries. Only their hashes are stored. The confirm
    /// token is minted afresh as the email is written (the newest confirmation's link is the
    /// one that works); the unsubscribe token is derived from the subscription and the
    /// [`LinkKey`], the same in every email, so each email's link works until it is used.
    /// The confirm token is set for confirmation emails only; offers, which belong to no
    /// subscription, carry neither.
    pub confirm_token: Option<String>,
    pub unsubscribe_token: Option<String>,
}

/// Claims up to `limit` queued rows that are due — never tried, or whose backoff or previous
/// claim ran out — oldest first, holding each for `lease`, and mints the link tokens their
/// emails carry. Three statements in one transaction, whatever `limit` is: the rows are read
/// `FOR UPDATE SKIP LOCKED` on Postgres (workers claiming at once take disjoint rows; SQLite
/// has one writer), marked claimed, and their subscriptions given fresh token hashes. A row
/// whose subscriber left is settled as skipped and not returned; a row whose previous claim
/// ended with no outcome recorded counts a lapsed claim (it may have been sent already).
///
/// Report each returned row with [`mark_sent`] (or [`mark_sent_many`]), [`retry_at`] or
/// [`mark_failed`]; a row not reported is claimed again when its lease runs out.
///
/// # Errors
/// Database failure.
pub async fn claim_due(
    db: &impl crate::db::Conn,
    limit: u64,
    lease: Duration,
    links: &LinkKey,
    now: DateTime<Utc>,
) -> Result<Vec<Outgoing>> {
    let txn = begin_write(db).await?;
    let rows = due_rows(&txn, limit, now).await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    take_leases(&txn, &rows, now + lease, now).await?;
    let subscription_ids: Vec<i64> = rows.iter().filter_map(|r| r.subscription_id).collect();
    let subscriptions: HashMap<i64, subscriptions::Model> = subscriptions::Entity::find()
        .filter(subscriptions::Column::Id.is_in(subscription_ids))
        .all(&txn)
        .await?
        .into_iter()
        .map(|s| (s.id, s))
        .collect();
    let mut ready = Vec::with_capacity(rows.len());
    let mut skipped = Vec::new();
    for row in rows {
        let subscription = row.subscription_id.and_then(|id| subscriptions.get(&id));
        match (
            sendable(&row, subscription),
            Content::read(row.kind, row.payload.clone()),
        ) {
            (Some(pending_confirmation), Ok(payload)) => {
                ready.push((row, payload, pending_confirmation));
            }
            (None, _) => skipped.push(row.id),
            (Some(_), Err(e)) => {
                let reason = format!("unreadable payload: {e}");
                settle(&txn, &[row.id], Settled::failed(&reason), now).await?;
            }
        }
    }
    let skip = "skipped: the subscription is gone, unsubscribed or already confirmed";
    settle(&txn, &skipped, Settled::failed(skip), now).await?;
    let needs_tokens: HashMap<i64, (bool, DateTime<Utc>)> = ready
        .iter()
        .filter_map(|(row, _, pending)| {
            let sub = row.subscription_id.and_then(|id| subscriptions.get(&id))?;
            Some((sub.id, (*pending, sub.created_at)))
        })
        .collect();
    let minted = mint_tokens(&txn, &needs_tokens, links).await?;
    txn.commit().await?;
    Ok(ready
        .into_iter()
        .map(|(row, payload, _)| {
            let (confirm_token, unsubscribe_token) = row
                .subscription_id
                .and_then(|id| minted.get(&id).cloned())
                .map_or((None, None), |(confirm, unsubscribe)| {
                    (confirm, Some(unsubscribe))
                });
            Outgoing {
                id: row.id,
                kind: row.kind,
                recipient: row.recipient,
                payload,
                attempt: row.attempts + 1,
                confirm_token,
                unsubscribe_token,
            }
        })
        .collect())
}

/// Up to `limit` queued rows due at `now`, oldest first; on Postgres locked, skipping rows
/// another worker is claiming.
async fn due_rows(
    txn: &DatabaseTransaction,
    limit: u64,
    now: DateTime<Utc>,
) -> Result<Vec<email_messages::Model>> {
    let mut due = email_messages::Entity::find()
        // Written out, not bound: only a literal lets every plan (a generic one too) use the
        // partial index of queued rows. It is `MessageStatus::Queued`'s value.
        .filter(Expr::cust("email_messages.status = 'queued'"))
        .filter(
            Condition::any()
                .add(email_messages::Column::NextAttemptAt.is_null())
                .add(email_messages::Column::NextAttemptAt.lte(now)),
        )
        .order_by_asc(email_messages::Column::Id)
        .limit(limit);
    if txn.get_database_backend() == DbBackend::Postgres {
        due = due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    Ok(due.all(txn).await?)
}

/// Whether a claimed row still has a reader: `Some(true)` for a confirmation its subscription
/// still awaits, `Some(false)` for an alert to a subscriber who has not left or an offer,
/// `None` to skip.
fn sendable(
    row: &email_messages::Model,
    subscription: Option<&subscriptions::Model>,
) -> Option<bool> {
    match (row.kind, subscription) {
        (MessageKind::SubscriptionConfirmation, Some(sub))
            if sub.status == SubscriptionStatus::Pending =>
        {
            Some(true)
        }
        (MessageKind::RestockAlert, Some(sub))
            if sub.status != SubscriptionStatus::Unsubscribed =>
        {
            Some(false)
        }
        (
            MessageKind::HoldOffer | MessageKind::DrawWaitlisted | MessageKind::AccountVerification,
            _,
        ) => Some(false),
        _ => None,
    }
}

/// Counts an attempt on each row and holds it until `until`. A row tried before whose last
/// claim left neither an error nor a verdict lapsed (its worker died mid-send): counted. The
/// previous error is cleared, so the next lapse of this row is counted too.
async fn take_leases(
    txn: &impl ConnectionTrait,
    rows: &[email_messages::Model],
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<()> {
    use email_messages::Column;
    let lapsed = Condition::all()
        .add(Column::Attempts.gt(0))
        .add(Column::LastError.is_null());
    email_messages::Entity::update_many()
        .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
        .col_expr(
            Column::LapsedClaims,
            Expr::col(Column::LapsedClaims).add(Expr::case(lapsed, 1).finally(0)),
        )
        .col_expr(Column::LastError, Expr::value(None::<String>))
        .col_expr(Column::NextAttemptAt, Expr::value(until))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.is_in(rows.iter().map(|r| r.id)))
        .exec(txn)
        .await?;
    Ok(())
}

/// Link tokens for the emails about to go out, one pair per subscription whatever the number
/// of its emails in the batch: the subscription's unsubscribe token always (derived, the
/// same every time; its hash is written in case it is the first), a new confirmation token
/// while the subscription awaits one (only the newest confirmation's link works). One
/// statement.
async fn mint_tokens(
    txn: &impl ConnectionTrait,
    subscriptions: &HashMap<i64, (bool, DateTime<Utc>)>,
    links: &LinkKey,
) -> Result<HashMap<i64, (Option<String>, String)>> {
    use subscriptions::Column;
    if subscriptions.is_empty() {
        return Ok(HashMap::new());
    }
    let minted: HashMap<i64, (Option<String>, String)> = subscriptions
        .iter()
        .map(|(id, (pending, created_at))| {
            let unsubscribe = links.unsubscribe_token(*id, *created_at);
            (*id, (pending.then(tokens::generate), unsubscribe))
        })
        .collect();
    let mut unsubscribe = CaseStatement::new();
    let mut confirm: Option<CaseStatement> = None;
    for (id, (confirm_token, unsubscribe_token)) in &minted {
        let this = Column::Id.eq(*id);
        unsubscribe = unsubscribe.case(this.clone(), tokens::hash(unsubscribe_token));
        if let Some(token) = confirm_token {
            let case = confirm.take().unwrap_or_default();
            confirm = Some(case.case(this, tokens::hash(token)));
        }
    }
    let mut update = subscriptions::Entity::update_many()
        .col_expr(
            Column::UnsubscribeTokenHash,
            unsubscribe
                .finally(Expr::col(Column::UnsubscribeTokenHash))
                .into(),
        )
        .filter(Column::Id.is_in(minted.keys().copied()));
    if let Some(confirm) = confirm {
        update = update.col_expr(
            Column::ConfirmTokenHash,
            confirm.finally(Expr::col(Column::ConfirmTokenHash)).into(),
        );
    }
    update.exec(txn).await?;
    Ok(minted)
}

/// Claims that ended with no outcome recorded, over the rows the ledger keeps: each may have
/// sent its message once more than the ledger says.
///
/// # Errors
/// Database failure.
pub async fn lapsed_claims(db: &impl ConnectionTrait) -> Result<i64> {
    let total: Option<Option<i64>> = email_messages::Entity::find()
        .select_only()
        .column_as(
            Expr::col(email_messages::Column::LapsedClaims).sum(),
            "total",
        )
        .filter(email_messages::Column::LapsedClaims.gt(0))
        .into_tuple()
        .one(db)
        .await?;
    Ok(total.flatten().unwrap_or(0))
}

/// What an attempt's outcome writes to a queued row.
struct Settled<'a> {
    status: MessageStatus,
    error: Option<&'a str>,
    next_attempt_at: Option<DateTime<Utc>>,
    sent_at: Option<DateTime<Utc>>,
}

impl<'a> Settled<'a> {
    fn failed(error: &'a str) -> Self {
        Self {
            status: MessageStatus::Failed,
            error: Some(error),
            next_attempt_at: None,
            sent_at: None,
        }
    }
}

/// Writes an attempt's outcome to the rows that are still queued.
async fn settle(
    db: &impl ConnectionTrait,
    message_ids: &[i64],
    outcome: Settled<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    if message_ids.is_empty() {
        return Ok(());
    }
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
        .filter(email_messages::Column::Id.is_in(message_ids.iter().copied()))
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
    mark_sent_many(db, &[message_id], now).await
}

/// Records that the SMTP server accepted these messages: one statement for the lot.
///
/// # Errors
/// Database failure.
pub async fn mark_sent_many(
    db: &impl ConnectionTrait,
    message_ids: &[i64],
    now: DateTime<Utc>,
) -> Result<()> {
    let sent = Settled {
        status: MessageStatus::Sent,
        error: None,
        next_attempt_at: None,
        sent_at: Some(now),
    };
    settle(db, message_ids, sent, now).await
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
    settle(db, &[message_id], deferred, now).await
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
    settle(db, &[message_id], Settled::failed(error), now).await
}

fn truncate(error: &str) -> String {
    error.chars().take(2000).collect()
}
