//! Retention: rows that only record the past are deleted once nothing can need them.
//!
//! Each operation deletes one batch of at most `batch` rows, the oldest first, and returns how
//! many it deleted; the caller repeats until a batch comes back short. A batch is one
//! statement (`DELETE ... WHERE id IN (SELECT id ... LIMIT n)`), so no pass holds locks for
//! long. On Postgres the batch's rows are picked `FOR UPDATE SKIP LOCKED`, so several workers
//! running the pass at once delete different rows instead of waiting on each other; deleting
//! a row twice is impossible anyway, so any overlap is harmless.
//!
//! The caller passes the cutoff (its `now` less the time to keep), so tests move the clock by
//! passing a later `now`.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    sea_query::{Expr, ExprTrait, LockBehavior, LockType, Order, Query, SimpleExpr},
};

use crate::{
    error::Result,
    models::{
        email_messages::{self, MessageKind, MessageStatus},
        idempotency_keys, mail_quotas,
        reservations::{self, ReservationStatus},
        restock_events, sessions, webhook_deliveries,
    },
};

/// A kind of row that only records the past, and when one is old enough that nothing can
/// need it: ended before the `cutoff` the caller derives from its setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// Idempotency keys made before the cutoff. A client retries a request within minutes;
    /// after that the same key simply starts a new request.
    IdempotencyKeys,
    /// Sessions that ended (revoked, or past their absolute lifetime) before the cutoff. A
    /// live session is never old enough: it is neither revoked nor expired.
    Sessions,
    /// Verified Contentful deliveries received before the cutoff. Contentful retries a
    /// delivery within hours, so its idempotency key is not needed for months; a replay
    /// older than that is still refused as `stale` by the entry's version.
    WebhookDeliveries,
    /// Emails that reached `sent` or `failed` before the cutoff. A queued email is never
    /// deleted.
    ///
    /// A restock alert's row is also what stops the same alert going out twice: its dedupe
    /// key (restock event, subscription) is unique, and a fan-out writes no row (so sends
    /// nothing) where one exists. Only the fan-out of a product's *latest* restock can still
    /// run (the reconciler and a confirmation only re-run that one; a new restock has a new
    /// id and new keys), so an alert row is deleted only once a newer restock of its product
    /// exists, or its subscription is gone. Each subscriber's alert of the latest restock
    /// stays until the next restock: one row per subscriber at most.
    Emails,
    /// Holds that ended unbought (expired or released) before the cutoff. Active holds are
    /// part of the stock count and purchased ones carry their purchase (deleting one would
    /// delete the sale with it), so neither is ever deleted.
    Holds,
    /// Mail-bombing counters (`mail_quotas`) whose day-long window opened before the cutoff
    /// (the caller passes a day ago: [`crate::catalog::quota::WINDOW`]). An ended window
    /// counts nothing; the mailbox's next sign-up opens a new one.
    MailQuotas,
}

/// Deletes one batch of at most `batch` rows of `record` that ended before `cutoff`, the
/// oldest first, and returns how many it deleted.
///
/// # Errors
/// Database failure.
pub async fn delete_old(
    db: &impl ConnectionTrait,
    record: Record,
    cutoff: DateTime<Utc>,
    batch: u64,
) -> Result<u64> {
    match record {
        Record::IdempotencyKeys => {
            let old = Condition::all().add(idempotency_keys::Column::CreatedAt.lt(cutoff));
            delete_batch::<idempotency_keys::Entity>(db, idempotency_keys::Column::Id, old, batch)
                .await
        }
        Record::Sessions => {
            let ended = Condition::any()
                .add(sessions::Column::RevokedAt.lt(cutoff))
                .add(sessions::Column::ExpiresAt.lt(cutoff));
            delete_batch::<sessions::Entity>(db, sessions::Column::Id, ended, batch).await
        }
        Record::WebhookDeliveries => {
            let old = Condition::all().add(webhook_deliveries::Column::ReceivedAt.lt(cutoff));
            delete_batch::<webhook_deliveries::Entity>(
                db,
                webhook_deliveries::Column::Id,
                old,
                batch,
            )
            .await
        }
        Record::Emails => {
            let settled = settled_emails(db.get_database_backend(), cutoff);
            delete_batch::<email_messages::Entity>(db, email_messages::Column::Id, settled, batch)
                .await
        }
        Record::MailQuotas => {
            let ended = Condition::all().add(mail_quotas::Column::WindowStart.lt(cutoff));
            delete_batch::<mail_quotas::Entity>(db, mail_quotas::Column::Mailbox, ended, batch)
                .await
        }
        Record::Holds => {
            let ended_unbought = Condition::all()
                .add(
                    reservations::Column::Status
                        .is_in([ReservationStatus::Expired, ReservationStatus::Released]),
                )
                .add(reservations::Column::EndedAt.lt(cutoff));
            delete_batch::<reservations::Entity>(
                db,
                reservations::Column::Id,
                ended_unbought,
                batch,
            )
            .await
        }
    }
}

/// Emails settled before `cutoff` whose row can no longer be needed (see [`Record::Emails`]).
fn settled_emails(backend: DbBackend, cutoff: DateTime<Utc>) -> Condition {
    let newer_restock = Query::select()
        .expr(Expr::val(1))
        .from(restock_events::Entity)
        .and_where(
            Expr::col((restock_events::Entity, restock_events::Column::ProductId))
                .eq(payload_number(backend, "product_id")),
        )
        .and_where(
            Expr::col((restock_events::Entity, restock_events::Column::Id))
                .gt(payload_number(backend, "restock_event_id")),
        )
        .to_owned();
    let cannot_be_recreated = Condition::any()
        .add(email_messages::Column::Kind.ne(MessageKind::RestockAlert))
        .add(email_messages::Column::SubscriptionId.is_null())
        .add(Expr::exists(newer_restock));
    Condition::all()
        .add(email_messages::Column::Status.is_in([MessageStatus::Sent, MessageStatus::Failed]))
        .add(email_messages::Column::UpdatedAt.lt(cutoff))
        .add(cannot_be_recreated)
}

/// A number from an email's JSON payload. The two backends spell JSON access differently;
/// the key is a constant, never input.
fn payload_number(backend: DbBackend, key: &'static str) -> SimpleExpr {
    let column = r#""email_messages"."payload""#;
    match backend {
        DbBackend::Postgres => Expr::cust(format!("CAST({column} ->> '{key}' AS BIGINT)")),
        _ => Expr::cust(format!("json_extract({column}, '$.{key}')")),
    }
}

/// Deletes up to `batch` rows of `E` matching `condition`, lowest ids (the oldest) first.
async fn delete_batch<E: EntityTrait>(
    db: &impl ConnectionTrait,
    id: E::Column,
    condition: Condition,
    batch: u64,
) -> Result<u64> {
    let oldest = Query::select()
        .column((E::default(), id))
        .from(E::default())
        .cond_where(condition)
        .order_by((E::default(), id), Order::Asc)
        .limit(batch)
        // Ignored on SQLite, which has one writer anyway.
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned();
    let deleted = E::delete_many()
        .filter(Expr::col((E::default(), id)).in_subquery(oldest))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected)
}
