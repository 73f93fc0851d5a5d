//! Taking a hold: one conditional decrement and the hold's row, committed together.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
    sea_query::{LockBehavior, LockType},
};

use super::{
    ReservationStatus, ReserveOutcome, Reserved, SoldOut, Stock, check_on_sale,
    check_purchase_limit, holds::end_hold, insert_hold, take_units,
};
use crate::{
    Error,
    db::{begin_write, is_foreign_key_violation, is_unique_violation},
    error::Result,
    models::{drops, reservations},
};

/// Holds one unit of `drop_id` for `user_id` until `now + ttl`.
///
/// The hot row (`drops`) is touched last, by one conditional decrement, so its lock is held
/// only for that statement and the commit. If no unit is free but a hold is overdue, that hold
/// is expired and its unit handed over in the same transaction, so stock returns to buyers
/// the instant a hold ends rather than when a job gets round to it.
///
/// # Errors
/// `DropNotFound`, `DropNotActive`, `AlreadyReserved`, `PurchaseLimitReached`, or database
/// failure. Sold out is an outcome, not an error, because it carries what may be cached.
pub async fn reserve(
    db: &impl crate::db::Conn,
    drop_id: i64,
    user_id: i64,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<ReserveOutcome> {
    if db.get_database_backend() == DbBackend::Postgres {
        if let Some(reserved) =
            reserve_in_one_statement(db, drop_id, user_id, now + ttl, now).await?
        {
            return Ok(ReserveOutcome::Reserved(reserved));
        }
        // After a sell-out every buyer still in flight lands here: answer the plain sold-out
        // case with one read instead of a transaction. A buyer with a rule of their own (a
        // hold already, the limit reached) goes on, to be told that as SQLite tells it.
        if let Some(plain) = plainly_sold_out(db, drop_id, &[user_id], now).await?
            && plain.ruled.is_empty()
        {
            return Ok(ReserveOutcome::SoldOut(plain.sold_out));
        }
    }
    // The general path (all of SQLite, and Postgres's refusals and takeovers), in one
    // transaction.
    let txn = begin_write(db).await?;
    // A transaction that waited for its turn acts at the moment it runs: holds that fell due
    // while it waited are due for it too.
    let now = std::cmp::max(now, Utc::now());
    let drop = drops::Entity::find_by_id(drop_id)
        .one(&txn)
        .await?
        .ok_or(Error::DropNotFound)?;
    check_on_sale(&drop, now)?;
    check_purchase_limit(&txn, &drop, user_id).await?;
    let reservation = insert_hold(&txn, &drop, user_id, now + ttl, now).await?;
    if let Some((stock, took_over)) = take_unit_or_due_hold(&txn, drop_id, now).await? {
        txn.commit().await?;
        return Ok(ReserveOutcome::Reserved(Reserved {
            reservation,
            stock,
            took_over,
        }));
    }
    let until = next_end(&txn, drop_id, reservation.id).await?;
    txn.rollback().await?;
    Ok(ReserveOutcome::SoldOut(SoldOut {
        version: drop.stock_version,
        until,
    }))
}

/// A drop with no unit to take, and the asking buyers whose own rule answers them instead.
#[derive(Debug)]
pub struct PlainlySoldOut {
    pub sold_out: SoldOut,
    /// Buyers who hold a unit of the drop already or reached its purchase limit: the general
    /// path answers them `already_reserved` or `purchase_limit_reached`, on either backend.
    pub ruled: Vec<i64>,
}

/// `Some` when the drop is open, has no unit left and no hold is due, so no takeover is
/// possible: what [`reserve`] answers every buyer then — except those of `buyers` with a
/// rule of their own, listed — in one query. Postgres only.
///
/// # Errors
/// Database failure.
pub async fn plainly_sold_out(
    db: &impl crate::db::Conn,
    drop_id: i64,
    buyers: &[i64],
    now: DateTime<Utc>,
) -> Result<Option<PlainlySoldOut>> {
    // "Due" is judged by the statement's own start time, which is when its snapshot is taken:
    // a request that waited for a connection must not judge by when it arrived.
    const SQL: &str = r#"
        SELECT d.stock_version,
               (SELECT min(r.expires_at) FROM reservations r
                 WHERE r.drop_id = d.id AND r.status = $3) AS next_due,
               statement_timestamp() AS checked_at,
               array_to_string(ARRAY(
                   SELECT b.user_id FROM unnest($5::text::bigint[]) AS b(user_id)
                    WHERE EXISTS (SELECT 1 FROM reservations r
                                   WHERE r.drop_id = d.id AND r.user_id = b.user_id
                                     AND r.status = $3)
                       OR (SELECT count(*) FROM purchases p
                            WHERE p.drop_id = d.id AND p.user_id = b.user_id) >= d.max_per_user
               ), ',') AS ruled
          FROM drops d
         WHERE d.id = $1
           AND d.available_stock = 0
           AND d.starts_at <= $2
           AND (d.ends_at IS NULL OR d.ends_at > $2)
           AND (d.mode = $4 OR d.drawn_at IS NOT NULL)"#;
    let statement = Statement::from_sql_and_values(
        DbBackend::Postgres,
        SQL,
        [
            drop_id.into(),
            now.into(),
            ReservationStatus::Active.into(),
            drops::DropMode::FirstCome.into(),
            // An array literal (`{1,2,3}`): ids are integers, so nothing needs quoting.
            crate::db::postgres_array(buyers).into(),
        ],
    );
    let Some(row) = db.query_one_raw(statement).await? else {
        return Ok(None);
    };
    let ruled: String = row.try_get("", "ruled")?;
    let ruled = ruled
        .split(',')
        .filter_map(|id| id.parse::<i64>().ok())
        .collect();
    let version: i64 = row.try_get("", "stock_version")?;
    let next_due: Option<DateTime<Utc>> = row.try_get("", "next_due")?;
    let checked_at: DateTime<Utc> = row.try_get("", "checked_at")?;
    if next_due.is_some_and(|due| due <= std::cmp::max(now, checked_at)) {
        return Ok(None);
    }
    Ok(Some(PlainlySoldOut {
        sold_out: SoldOut {
            version,
            until: next_due,
        },
        ruled,
    }))
}

/// The common case on Postgres, in one autocommit statement: take a unit if the drop is open,
/// has stock and the buyer is under the limit, and record the hold. The drop's row is locked
/// only while that one statement runs, which is what bounds a flash sale's throughput. `None`
/// when any condition failed; the transactional path then works out which, and tries a
/// takeover.
async fn reserve_in_one_statement(
    db: &impl crate::db::Conn,
    drop_id: i64,
    user_id: i64,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<Reserved>> {
    const SQL: &str = r#"
        WITH taken AS (
            UPDATE drops
               SET available_stock = available_stock - 1,
                   stock_version = stock_version + 1,
                   updated_at = $3,
                   sold_out_at = COALESCE(sold_out_at,
                                          CASE WHEN available_stock = 1 THEN $3::timestamptz END)
             WHERE id = $1
               AND available_stock > 0
               AND starts_at <= $3
               AND (ends_at IS NULL OR ends_at > $3)
               -- `check_on_sale`: a draw's units go to its winners
               AND (mode = $6 OR drawn_at IS NOT NULL)
               -- the per-buyer rule of `check_purchase_limit`
               AND (SELECT count(*) FROM purchases p WHERE p.drop_id = $1 AND p.user_id = $2) < max_per_user
         RETURNING id, available_stock, stock_version, price_cents, currency
        ), hold AS (
            INSERT INTO reservations
                   (drop_id, user_id, status, expires_at, created_at, price_cents, currency)
            SELECT id, $2, $5, $4, $3, price_cents, currency FROM taken
         RETURNING id, drop_id, user_id, status, expires_at, created_at, ended_at, price_cents,
                   currency
        )
        SELECT hold.id, hold.drop_id, hold.user_id, hold.status, hold.expires_at, hold.created_at,
               hold.ended_at, hold.price_cents, hold.currency, taken.available_stock,
               taken.stock_version
          FROM hold CROSS JOIN taken"#;
    let statement = Statement::from_sql_and_values(
        DbBackend::Postgres,
        SQL,
        [
            drop_id.into(),
            user_id.into(),
            now.into(),
            expires_at.into(),
            ReservationStatus::Active.into(),
            drops::DropMode::FirstCome.into(),
        ],
    );
    let row = match db.query_one_raw(statement).await {
        Ok(row) => row,
        Err(e) if is_unique_violation(&e) => return Err(Error::AlreadyReserved),
        // The statement locked the drop's row: the missing parent is the buyer's account.
        Err(e) if is_foreign_key_violation(&e) => return Err(Error::AccountGone),
        Err(e) => return Err(e.into()),
    };
    let Some(row) = row else { return Ok(None) };
    let reservation = reservations::Model::from_query_result(&row, "")?;
    let stock = Stock {
        drop_id,
        available_stock: row.try_get("", "available_stock")?,
        version: row.try_get("", "stock_version")?,
    };
    Ok(Some(Reserved {
        reservation,
        stock,
        took_over: None,
    }))
}

/// A unit for the hold just inserted: from the counter, or else from an overdue hold taken
/// over (returned beside the stock); `None` when neither is left.
///
/// Concurrent takeovers each lock a different overdue hold (SKIP LOCKED on Postgres; SQLite
/// has one writer at a time), and a due hold that a sweep or another takeover is ending right
/// now is waited for, so nobody is refused while a due hold is left. When no due hold is
/// left, the counter is read once more: a sweep may have given a unit back after it was first
/// read and before the due holds were looked at. A due hold of a drop with a line is left to
/// its expiry, which offers the unit to the first in line: a racing reserve never takes it
/// over.
async fn take_unit_or_due_hold(
    txn: &DatabaseTransaction,
    drop_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<(Stock, Option<reservations::Model>)>> {
    let mut last_look = false;
    for _ in 0..MAX_TAKEOVER_ROUNDS {
        if let Some(stock) = take_unit_or_let_go(txn, drop_id, now).await? {
            return Ok(Some((stock, None)));
        }
        // The line is looked at only once the counter said no: a plain reserve pays nothing.
        if last_look || super::waitlist::has_waiters(txn, drop_id).await? {
            break;
        }
        let now = std::cmp::max(now, Utc::now());
        if let Some(ended) = take_over_due_hold(txn, drop_id, now).await? {
            let stock = take_units(txn, drop_id, now, 0)
                .await?
                .ok_or(Error::DropNotFound)?;
            return Ok(Some((stock, Some(ended))));
        }
        last_look = !wait_for_busy_due_hold(txn, drop_id, now).await?;
    }
    Ok(None)
}

/// When the next active hold of `drop_id` other than `except` ends: until then a sold-out
/// answer stands.
async fn next_end(
    txn: &DatabaseTransaction,
    drop_id: i64,
    except: i64,
) -> Result<Option<DateTime<Utc>>> {
    Ok(reservations::Entity::find()
        .select_only()
        .column_as(reservations::Column::ExpiresAt.min(), "until")
        .filter(reservations::Column::DropId.eq(drop_id))
        .filter(reservations::Column::Status.eq(ReservationStatus::Active))
        .filter(reservations::Column::Id.ne(except))
        .into_tuple::<Option<DateTime<Utc>>>()
        .one(txn)
        .await?
        .flatten())
}

/// Takes one unit, in a savepoint that is rolled back when there is none. A refused
/// conditional update can still leave the drop's row locked (Postgres locks the newest
/// version of a row a concurrent transaction changed before it rechecks the condition), and
/// this transaction may next wait for a due hold that the expiry sweep or job has locked —
/// while they wait for the drop's row: a deadlock. Rolling back to the savepoint lets go.
async fn take_unit_or_let_go(
    txn: &DatabaseTransaction,
    drop_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<Stock>> {
    if txn.get_database_backend() != DbBackend::Postgres {
        return take_units(txn, drop_id, now, -1).await;
    }
    let attempt = txn.begin().await?;
    match take_units(&attempt, drop_id, now, -1).await? {
        Some(stock) => {
            attempt.commit().await?;
            Ok(Some(stock))
        }
        None => {
            attempt.rollback().await?;
            Ok(None)
        }
    }
}

/// How often a reserve on a sold-out drop looks again after waiting for a due hold someone
/// else was ending; each round, someone else got a unit, so this bounds a reserve's wait by
/// the buyers ahead of it, not by chance.
const MAX_TAKEOVER_ROUNDS: usize = 32;

/// Ends the oldest due hold of a drop that no other transaction is ending (holds others have
/// locked are skipped rather than waited for), returning it as it now is.
async fn take_over_due_hold(
    txn: &impl ConnectionTrait,
    drop_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<reservations::Model>> {
    let Some(candidate) = due_hold_to_lock(txn, drop_id, now).await? else {
        return Ok(None);
    };
    end_hold(txn, candidate, ReservationStatus::Expired, None, now).await
}

async fn due_hold_to_lock(
    txn: &impl ConnectionTrait,
    drop_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<i64>> {
    let mut query = reservations::Entity::find()
        .select_only()
        .column(reservations::Column::Id)
        .filter(reservations::Column::Status.eq(ReservationStatus::Active))
        .filter(reservations::Column::ExpiresAt.lte(now))
        .filter(reservations::Column::DropId.eq(drop_id))
        .order_by_asc(reservations::Column::ExpiresAt)
        .limit(1);
    if txn.get_database_backend() == DbBackend::Postgres {
        query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    Ok(query.into_tuple().one(txn).await?)
}

/// Waits until a due hold of the drop that another transaction has locked (a sweep expiring
/// it, or another takeover) is settled. `false` when there is none to wait for.
async fn wait_for_busy_due_hold(
    txn: &impl ConnectionTrait,
    drop_id: i64,
    now: DateTime<Utc>,
) -> Result<bool> {
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(false);
    }
    let busy: Option<i64> = reservations::Entity::find()
        .select_only()
        .column(reservations::Column::Id)
        .filter(reservations::Column::Status.eq(ReservationStatus::Active))
        .filter(reservations::Column::ExpiresAt.lte(now))
        .filter(reservations::Column::DropId.eq(drop_id))
        .limit(1)
        .into_tuple()
        .one(txn)
        .await?;
    let Some(id) = busy else { return Ok(false) };
    // Blocks until the other transaction commits or rolls back; then look again.
    reservations::Entity::find_by_id(id)
        .lock(LockType::Update)
        .one(txn)
        .await?;
    Ok(true)
}
