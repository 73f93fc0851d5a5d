//! Ending holds unbought: expiry (the delayed job, the sweep) and early release. Each is one
//! transaction that ends the hold and gives its unit back — to the first buyer on the
//! drop's waitlist if anyone waits (see [`super::waitlist`]) — and is safe to run twice.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect, Statement, sea_query::Expr,
};

use chrono::Duration;

use super::{
    ReservationStatus, Stock,
    waitlist::{self, Offer},
};
use crate::{
    Error,
    db::begin_write,
    error::Result,
    models::{reservations, waitlist_entries::WaitStatus},
};

#[derive(Clone, Debug)]
pub struct Ended {
    pub reservation: reservations::Model,
    pub stock: Stock,
    /// What the returned unit became for the waitlist (and, after a sweep, units of the
    /// same drop that were on sale while buyers waited).
    pub offers: Vec<Offer>,
}

/// Ends an active hold (optionally only its owner's), returning it as it now is.
pub(super) async fn end_hold(
    txn: &impl ConnectionTrait,
    id: i64,
    new_status: ReservationStatus,
    owner: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Option<reservations::Model>> {
    let mut update = reservations::Entity::update_many()
        .col_expr(reservations::Column::Status, Expr::value(new_status))
        .col_expr(reservations::Column::EndedAt, Expr::value(now))
        .filter(reservations::Column::Id.eq(id))
        .filter(reservations::Column::Status.eq(ReservationStatus::Active));
    // Only a due hold expires, and only one not yet due can be released.
    update = match new_status {
        ReservationStatus::Expired => update.filter(reservations::Column::ExpiresAt.lte(now)),
        ReservationStatus::Released => update.filter(reservations::Column::ExpiresAt.gt(now)),
        ReservationStatus::Active | ReservationStatus::Purchased => update,
    };
    if let Some(user_id) = owner {
        update = update.filter(reservations::Column::UserId.eq(user_id));
    }
    Ok(update.exec_with_returning(txn).await?.into_iter().next())
}

/// Expires a hold if it is still active and due, and gives its unit back. Safe to run any
/// number of times: only the first run that finds it due changes anything.
///
/// # Errors
/// Database failure.
pub async fn expire(
    db: &impl crate::db::Conn,
    reservation_id: i64,
    offer_ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Option<Ended>> {
    let txn = begin_write(db).await?;
    let Some(reservation) =
        end_hold(&txn, reservation_id, ReservationStatus::Expired, None, now).await?
    else {
        txn.rollback().await?;
        return Ok(None);
    };
    give_back(txn, reservation, offer_ttl, now).await.map(Some)
}

/// Expires up to `limit` overdue holds; what the expiry sweep runs. On Postgres the holds of
/// drops nobody waits for in one statement ([`expire_due_in_one_statement`]) and the others
/// one transaction each, so their units become offers; on SQLite one transaction per hold.
///
/// # Errors
/// Database failure.
pub async fn expire_overdue(
    db: &impl crate::db::Conn,
    now: DateTime<Utc>,
    limit: u64,
    offer_ttl: Duration,
) -> Result<Vec<Ended>> {
    let postgres = db.get_database_backend() == DbBackend::Postgres;
    let mut ended = if postgres {
        expire_due_in_one_statement(db, now, limit).await?
    } else {
        Vec::new()
    };
    if postgres {
        offer_what_went_on_sale(db, &mut ended, offer_ttl, now).await?;
    }
    for id in overdue_holds(db, now, limit, postgres).await? {
        if let Some(e) = expire(db, id, offer_ttl, now).await? {
            ended.push(e);
        }
    }
    Ok(ended)
}

/// A buyer who joined a drop's line while the one-statement sweep was giving its units back
/// (the sweep read the line before the join committed) must not see them sold to someone
/// else: those units are offered to the line at once.
async fn offer_what_went_on_sale(
    db: &impl crate::db::Conn,
    ended: &mut [Ended],
    offer_ttl: Duration,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut drop_ids: Vec<i64> = ended.iter().map(|e| e.stock.drop_id).collect();
    drop_ids.sort_unstable();
    drop_ids.dedup();
    if drop_ids.is_empty() {
        return Ok(());
    }
    for drop_id in waitlist::drops_with_waiters(db, drop_ids).await? {
        let txn = begin_write(db).await?;
        let (offers, stock) = waitlist::settle_units(&txn, drop_id, 0, offer_ttl, now).await?;
        txn.commit().await?;
        if let Some(last) = ended.iter_mut().rev().find(|e| e.stock.drop_id == drop_id) {
            last.offers.extend(offers);
            last.stock = stock;
        }
    }
    Ok(())
}

/// Up to `limit` due holds expired and their units given back in one statement, one stock
/// bump per drop: thousands of holds falling due in the same second are back on sale in
/// milliseconds, not one transaction each. Holds another worker is ending are skipped
/// (`SKIP LOCKED`), so workers sweeping at once share the work and never do it twice; drops
/// are locked in id order, so two sweeps never deadlock on them, and `FOR NO KEY UPDATE`
/// (what an `UPDATE` takes), so a reserve whose new hold's foreign key holds `KEY SHARE` on
/// the drop, and which then waits for a due hold this sweep is ending, does not deadlock
/// with it.
async fn expire_due_in_one_statement(
    db: &impl crate::db::Conn,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Ended>> {
    // `status = 'active'` is written out, not bound: only a literal lets the planner use the
    // partial index of active holds in every plan (a bound value cannot prove the predicate
    // in a generic plan). It is `ReservationStatus::Active`'s value.
    const SQL: &str = r#"
        WITH due AS (
            SELECT id FROM reservations
             WHERE status = 'active' AND expires_at <= $2
               -- a unit of a drop with a line goes to the line, one hold at a time
               AND NOT EXISTS (SELECT 1 FROM waitlist_entries w
                                WHERE w.drop_id = reservations.drop_id AND w.status = $5)
             ORDER BY expires_at
             LIMIT $3
               FOR UPDATE SKIP LOCKED
        ), ended AS (
            UPDATE reservations r
               SET status = $4, ended_at = $2
              FROM due
             WHERE r.id = due.id AND r.status = $1
         RETURNING r.id, r.drop_id, r.user_id, r.status, r.expires_at, r.created_at, r.ended_at,
                   r.price_cents, r.currency
        ), returned AS (
            SELECT drop_id, count(*) AS units FROM ended GROUP BY drop_id
        ), locked AS (
            SELECT d.id FROM drops d JOIN returned ON returned.drop_id = d.id
             ORDER BY d.id
               FOR NO KEY UPDATE OF d
        ), stock AS (
            UPDATE drops d
               SET available_stock = d.available_stock + returned.units,
                   stock_version = d.stock_version + 1,
                   updated_at = $2
              FROM returned JOIN locked ON locked.id = returned.drop_id
             WHERE d.id = returned.drop_id
         RETURNING d.id AS stock_drop_id, d.available_stock, d.stock_version
        )
        SELECT ended.*, stock.available_stock, stock.stock_version
          FROM ended JOIN stock ON stock.stock_drop_id = ended.drop_id
         ORDER BY ended.expires_at"#;
    let statement = Statement::from_sql_and_values(
        DbBackend::Postgres,
        SQL,
        [
            ReservationStatus::Active.into(),
            now.into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
            ReservationStatus::Expired.into(),
            WaitStatus::Waiting.into(),
        ],
    );
    let mut ended = Vec::new();
    for row in db.query_all_raw(statement).await? {
        let reservation = reservations::Model::from_query_result(&row, "")?;
        let stock = Stock {
            drop_id: reservation.drop_id,
            available_stock: row.try_get("", "available_stock")?,
            version: row.try_get("", "stock_version")?,
        };
        ended.push(Ended {
            reservation,
            stock,
            offers: Vec::new(),
        });
    }
    Ok(ended)
}

/// When the next active hold falls due, if any (by the partial index on active holds).
///
/// # Errors
/// Database failure.
pub async fn next_due(db: &impl ConnectionTrait) -> Result<Option<DateTime<Utc>>> {
    Ok(reservations::Entity::find()
        .select_only()
        .column_as(reservations::Column::ExpiresAt.min(), "next_due")
        // Written out, not bound, so every plan can use the partial index (see above).
        .filter(Expr::cust("status = 'active'"))
        .into_tuple::<Option<DateTime<Utc>>>()
        .one(db)
        .await?
        .flatten())
}

/// Gives the unit of a hold just ended back (to the line first) and commits.
async fn give_back(
    txn: DatabaseTransaction,
    reservation: reservations::Model,
    offer_ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Ended> {
    let (offers, stock) =
        waitlist::settle_units(&txn, reservation.drop_id, 1, offer_ttl, now).await?;
    txn.commit().await?;
    Ok(Ended {
        reservation,
        stock,
        offers,
    })
}

/// Lets a hold go early: the unit is available again at once. A hold already due is
/// recorded as what it is, an expiry.
///
/// # Errors
/// `ReservationNotFound` (also another user's), `AlreadyPurchased`, `ReservationExpired`;
/// releasing a released hold again succeeds without change (`Ok(None)`).
pub async fn release(
    db: &impl crate::db::Conn,
    reservation_id: i64,
    user_id: i64,
    offer_ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Option<Ended>> {
    let txn = begin_write(db).await?;
    let owner = Some(user_id);
    let mut ended = end_hold(
        &txn,
        reservation_id,
        ReservationStatus::Released,
        owner,
        now,
    )
    .await?;
    if ended.is_none() {
        ended = end_hold(&txn, reservation_id, ReservationStatus::Expired, owner, now).await?;
    }
    let Some(reservation) = ended else {
        txn.rollback().await?;
        return match owned(db, reservation_id, user_id).await?.status {
            ReservationStatus::Released => Ok(None),
            ReservationStatus::Purchased => Err(Error::AlreadyPurchased),
            ReservationStatus::Active | ReservationStatus::Expired => {
                Err(Error::ReservationExpired)
            }
        };
    };
    give_back(txn, reservation, offer_ttl, now).await.map(Some)
}

/// The caller's reservation, or `ReservationNotFound` — also for someone else's, so ids do
/// not reveal other buyers' holds.
pub(super) async fn owned(
    db: &impl ConnectionTrait,
    reservation_id: i64,
    user_id: i64,
) -> Result<reservations::Model> {
    reservations::Entity::find_by_id(reservation_id)
        .filter(reservations::Column::UserId.eq(user_id))
        .one(db)
        .await?
        .ok_or(Error::ReservationNotFound)
}

/// Ids of active holds that are due, oldest first; with `waited_for_only`, only those of
/// drops someone waits for.
async fn overdue_holds(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    limit: u64,
    waited_for_only: bool,
) -> Result<Vec<i64>> {
    let mut query = reservations::Entity::find()
        .select_only()
        .column(reservations::Column::Id)
        // Written out, not bound, so every plan can use the partial index of active holds.
        .filter(Expr::cust("reservations.status = 'active'"))
        .filter(reservations::Column::ExpiresAt.lte(now));
    if waited_for_only {
        query = query.filter(Expr::cust_with_values(
            "EXISTS (SELECT 1 FROM waitlist_entries w WHERE w.drop_id = reservations.drop_id \
             AND w.status = $1)",
            [WaitStatus::Waiting],
        ));
    }
    Ok(query
        .order_by_asc(reservations::Column::ExpiresAt)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?)
}

#[cfg(test)]
mod tests {
    use sea_orm::ActiveEnum;

    use super::ReservationStatus;

    /// The statements here write `'active'` out (for the partial index of active holds): it
    /// must stay the enum's value.
    #[test]
    fn the_status_written_out_is_the_enums() {
        assert_eq!(ReservationStatus::Active.to_value(), "active");
    }
}
