//! Buying a held unit.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};

use super::{ReservationStatus, check_purchase_limit, holds::owned};
use crate::{
    Error,
    db::begin_write,
    error::Result,
    models::{drops, purchases, reservations},
};

/// Buys a held unit at the price locked into the hold when it was taken. The hold must be
/// active and not yet due *now*: purchase never trusts that an expiry job has run. A hold
/// taken while the drop was open is honoured until its own `expires_at`, even if the drop
/// has closed since (the buyer was promised that window).
///
/// # Errors
/// `ReservationNotFound`, `ReservationExpired`, `ReservationReleased`, `AlreadyPurchased`,
/// `PurchaseLimitReached`, or database failure.
pub async fn purchase(
    db: &impl crate::db::Conn,
    reservation_id: i64,
    user_id: i64,
    now: DateTime<Utc>,
) -> Result<purchases::Model> {
    let txn = begin_write(db).await?;
    let bought = reservations::Entity::update_many()
        .col_expr(
            reservations::Column::Status,
            Expr::value(ReservationStatus::Purchased),
        )
        .col_expr(reservations::Column::EndedAt, Expr::value(now))
        .filter(reservations::Column::Id.eq(reservation_id))
        .filter(reservations::Column::UserId.eq(user_id))
        .filter(reservations::Column::Status.eq(ReservationStatus::Active))
        .filter(reservations::Column::ExpiresAt.gt(now))
        .exec_with_returning(&txn)
        .await?
        .into_iter()
        .next();
    let Some(reservation) = bought else {
        txn.rollback().await?;
        return Err(match owned(db, reservation_id, user_id).await?.status {
            ReservationStatus::Purchased => Error::AlreadyPurchased,
            ReservationStatus::Released => Error::ReservationReleased,
            ReservationStatus::Active | ReservationStatus::Expired => Error::ReservationExpired,
        });
    };
    let drop = drops::Entity::find_by_id(reservation.drop_id)
        .one(&txn)
        .await?
        .ok_or(Error::DropNotFound)?;
    // The limit was checked when the hold was taken, but a purchase of the buyer's previous
    // hold may have committed while that reserve ran; only one hold per buyer and drop can be
    // active, so checking again here makes the limit exact.
    if let Err(refused) = check_purchase_limit(&txn, &drop, user_id).await {
        txn.rollback().await?;
        return Err(refused);
    }
    let purchase = purchases::ActiveModel {
        reservation_id: Set(reservation.id),
        user_id: Set(user_id),
        drop_id: Set(drop.id),
        amount_cents: Set(reservation.price_cents),
        currency: Set(reservation.currency),
        created_at: Set(now),
        ..Default::default()
    };
    let purchase = purchases::Entity::insert(purchase)
        .exec_with_returning(&txn)
        .await?;
    txn.commit().await?;
    Ok(purchase)
}
