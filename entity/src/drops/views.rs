//! What the listings and sockets show of drops.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, JoinType, QueryFilter, QueryOrder, QuerySelect,
    RelationDef, sea_query::ExprTrait,
};

use super::{ReservationStatus, Stock};
use crate::{
    Error,
    error::Result,
    models::{drops, purchases, reservations, users},
};

/// A drop as the public listing shows it.
#[derive(Clone, Debug)]
pub struct DropView {
    pub drop: drops::Model,
    pub active_reservations: Vec<HolderView>,
    pub recent_buyers: Vec<BuyerView>,
}

#[derive(Clone, Debug)]
pub struct HolderView {
    pub reservation_id: i64,
    pub display_name: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct BuyerView {
    pub display_name: String,
    pub purchased_at: DateTime<Utc>,
}

/// Drops open now or opening within `soon`, earliest start first.
///
/// # Errors
/// Database failure.
pub async fn list_public(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    soon: Duration,
) -> Result<Vec<DropView>> {
    let found = drops::Entity::find()
        .filter(drops::Column::StartsAt.lte(now + soon))
        .filter(
            drops::Column::EndsAt
                .is_null()
                .or(drops::Column::EndsAt.gt(now)),
        )
        .order_by_asc(drops::Column::StartsAt)
        .order_by_asc(drops::Column::Id)
        .limit(200)
        .all(db)
        .await?;
    with_people(db, found, now).await
}

/// Every drop, newest first (admin view).
///
/// # Errors
/// Database failure.
pub async fn list_all(db: &impl ConnectionTrait) -> Result<Vec<drops::Model>> {
    Ok(drops::Entity::find()
        .order_by_desc(drops::Column::Id)
        .limit(500)
        .all(db)
        .await?)
}

/// One drop with its holders and buyers.
///
/// # Errors
/// `DropNotFound`, or database failure.
pub async fn view(db: &impl ConnectionTrait, id: i64, now: DateTime<Utc>) -> Result<DropView> {
    let drop = drops::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(Error::DropNotFound)?;
    with_people(db, vec![drop], now)
        .await?
        .pop()
        .ok_or(Error::DropNotFound)
}

/// The join from a row's `user_id` to the user: a hold's or a purchase's buyer.
fn buyer<E: EntityTrait>(user_id: E::Column) -> RelationDef {
    E::belongs_to(users::Entity)
        .from(user_id)
        .to(users::Column::Id)
        .into()
}

async fn with_people(
    db: &impl ConnectionTrait,
    found: Vec<drops::Model>,
    now: DateTime<Utc>,
) -> Result<Vec<DropView>> {
    let ids: Vec<i64> = found.iter().map(|d| d.id).collect();
    let holders: Vec<(i64, i64, DateTime<Utc>, String)> = reservations::Entity::find()
        .select_only()
        .column(reservations::Column::DropId)
        .column(reservations::Column::Id)
        .column(reservations::Column::ExpiresAt)
        .column_as(users::Column::DisplayName, "display_name")
        .join(
            JoinType::InnerJoin,
            buyer::<reservations::Entity>(reservations::Column::UserId),
        )
        .filter(reservations::Column::DropId.is_in(ids.clone()))
        .filter(reservations::Column::Status.eq(ReservationStatus::Active))
        .filter(reservations::Column::ExpiresAt.gt(now))
        .order_by_asc(reservations::Column::ExpiresAt)
        .into_tuple()
        .all(db)
        .await?;
    let mut views = Vec::with_capacity(found.len());
    for drop in found {
        let buyers: Vec<(String, DateTime<Utc>)> = purchases::Entity::find()
            .select_only()
            .column_as(users::Column::DisplayName, "display_name")
            .column(purchases::Column::CreatedAt)
            .join(
                JoinType::InnerJoin,
                buyer::<purchases::Entity>(purchases::Column::UserId),
            )
            .filter(purchases::Column::DropId.eq(drop.id))
            .order_by_desc(purchases::Column::CreatedAt)
            .order_by_desc(purchases::Column::Id)
            .limit(10)
            .into_tuple()
            .all(db)
            .await?;
        views.push(DropView {
            active_reservations: holders
                .iter()
                .filter(|h| h.0 == drop.id)
                .map(|(_, id, expires_at, name)| HolderView {
                    reservation_id: *id,
                    display_name: name.clone(),
                    expires_at: *expires_at,
                })
                .collect(),
            recent_buyers: buyers
                .into_iter()
                .map(|(display_name, purchased_at)| BuyerView {
                    display_name,
                    purchased_at,
                })
                .collect(),
            drop,
        });
    }
    Ok(views)
}

/// The caller's holds, newest first.
///
/// # Errors
/// Database failure.
pub async fn reservations_of(
    db: &impl ConnectionTrait,
    user_id: i64,
) -> Result<Vec<reservations::Model>> {
    Ok(reservations::Entity::find()
        .filter(reservations::Column::UserId.eq(user_id))
        .order_by_desc(reservations::Column::Id)
        .limit(200)
        .all(db)
        .await?)
}

/// The caller's purchases, newest first.
///
/// # Errors
/// Database failure.
pub async fn purchases_of(
    db: &impl ConnectionTrait,
    user_id: i64,
) -> Result<Vec<purchases::Model>> {
    Ok(purchases::Entity::find()
        .filter(purchases::Column::UserId.eq(user_id))
        .order_by_desc(purchases::Column::Id)
        .limit(200)
        .all(db)
        .await?)
}

/// Current stock of every open drop, for a WebSocket snapshot.
///
/// # Errors
/// Database failure.
pub async fn open_stock(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<Vec<Stock>> {
    let open = drops::Entity::find()
        .filter(drops::Column::StartsAt.lte(now + Duration::days(1)))
        .filter(
            drops::Column::EndsAt
                .is_null()
                .or(drops::Column::EndsAt.gt(now)),
        )
        .order_by_asc(drops::Column::Id)
        .all(db)
        .await?;
    Ok(open.iter().map(Stock::from).collect())
}
