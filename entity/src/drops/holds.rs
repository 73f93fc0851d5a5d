//! Ending holds unbought: expiry (the delayed job, the sweep) and early release. Each is one
//! transaction that ends the hold and gives its unit back, and is safe to run twice.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};

use super::{ReservationStatus, Stock, take_units};
use crate::{Error, db::begin_write, error::Result, models::reservations};

#[derive(Clone, Debug)]
pub struct Ended {
    pub reservation: reservations::Model,
    pub stock: Stock,
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
    db: &DatabaseConnection,
    reservation_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<Ended>> {
    let txn = begin_write(db).await?;
    let Some(reservation) =
        end_hold(&txn, reservation_id, ReservationStatus::Expired, None, now).await?
    else {
        txn.rollback().await?;
        return Ok(None);
    };
    let stock = take_units(&txn, reservation.drop_id, now, 1)
        .await?
        .ok_or(Error::DropNotFound)?;
    txn.commit().await?;
    Ok(Some(Ended { reservation, stock }))
}

/// Expires up to `limit` overdue holds; what the periodic sweep runs.
///
/// # Errors
/// Database failure.
pub async fn expire_overdue(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Ended>> {
    let mut ended = Vec::new();
    for id in overdue_holds(db, now, limit).await? {
        if let Some(e) = expire(db, id, now).await? {
            ended.push(e);
        }
    }
    Ok(ended)
}

/// Lets a hold go early: the unit is available again at once. A hold already due is
/// recorded as what it is, an expiry.
///
/// # Errors
/// `ReservationNotFound` (also another user's), `AlreadyPurchased`, `ReservationExpired`;
/// releasing a released hold again succeeds without change (`Ok(None)`).
pub async fn release(
    db: &DatabaseConnection,
    reservation_id: i64,
    user_id: i64,
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
    let stock = take_units(&txn, reservation.drop_id, now, 1)
        .await?
        .ok_or(Error::DropNotFound)?;
    txn.commit().await?;
    Ok(Some(Ended { reservation, stock }))
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

/// Ids of active holds that are due, oldest first.
async fn overdue_holds(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<i64>> {
    Ok(reservations::Entity::find()
        .select_only()
        .column(reservations::Column::Id)
        .filter(reservations::Column::Status.eq(ReservationStatus::Active))
        .filter(reservations::Column::ExpiresAt.lte(now))
        .order_by_asc(reservations::Column::ExpiresAt)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?)
}
