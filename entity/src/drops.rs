//! Limited drops: reserve one unit for a while, buy it, or let it go back.
//!
//! Invariant, for every drop at every instant:
//! `available_stock + active holds + purchases = total_stock`. Every operation below moves one
//! unit between those three in a single transaction, and `stock_version` grows with each move.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, FromQueryResult,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
    sea_query::{Expr, ExprTrait, LockBehavior, LockType},
};

use crate::{
    Error,
    db::{begin_write, is_foreign_key_violation, is_unique_violation},
    error::Result,
    models::{drops, purchases, reservations, users},
};

pub mod status {
    pub const ACTIVE: &str = "active";
    pub const PURCHASED: &str = "purchased";
    pub const EXPIRED: &str = "expired";
    pub const RELEASED: &str = "released";
}

/// A drop's stock after a change, as broadcast to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stock {
    pub drop_id: i64,
    pub available_stock: i32,
    pub version: i64,
}

impl From<&drops::Model> for Stock {
    fn from(d: &drops::Model) -> Self {
        Self {
            drop_id: d.id,
            available_stock: d.available_stock,
            version: d.stock_version,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Reserved {
    pub reservation: reservations::Model,
    pub stock: Stock,
    /// An overdue hold whose unit this reservation took over (exact expiry).
    pub took_over: Option<reservations::Model>,
}

/// Why a reserve was refused as sold out, with what the caller may cache: no unit can free up
/// before `until` unless a stock event with a newer version says so.
#[derive(Clone, Copy, Debug)]
pub struct SoldOut {
    pub version: i64,
    pub until: Option<DateTime<Utc>>,
}

pub enum ReserveOutcome {
    Reserved(Reserved),
    SoldOut(SoldOut),
}

#[derive(Clone, Debug)]
pub struct NewDrop {
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub currency: String,
    pub total_stock: i32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub max_per_user: i32,
}

/// # Errors
/// Database failure.
pub async fn create(
    db: &impl ConnectionTrait,
    new: NewDrop,
    now: DateTime<Utc>,
) -> Result<drops::Model> {
    let model = drops::ActiveModel {
        name: Set(new.name),
        description: Set(new.description),
        price_cents: Set(new.price_cents),
        currency: Set(new.currency),
        total_stock: Set(new.total_stock),
        available_stock: Set(new.total_stock),
        stock_version: Set(0),
        starts_at: Set(new.starts_at),
        ends_at: Set(new.ends_at),
        max_per_user: Set(new.max_per_user),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    };
    Ok(drops::Entity::insert(model).exec_with_returning(db).await?)
}

#[derive(Clone, Debug, Default)]
pub struct DropPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price_cents: Option<i64>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<Option<DateTime<Utc>>>,
    pub max_per_user: Option<i32>,
    /// Units to add to both total and available stock.
    pub add_stock: Option<i32>,
}

/// Edits a drop; added stock becomes available at once and bumps the version.
///
/// # Errors
/// `DropNotFound`, or database failure.
pub async fn update(
    db: &DatabaseConnection,
    id: i64,
    patch: DropPatch,
    now: DateTime<Utc>,
) -> Result<drops::Model> {
    let txn = begin_write(db).await?;
    let mut update = drops::Entity::update_many()
        .col_expr(drops::Column::UpdatedAt, Expr::value(now))
        .filter(drops::Column::Id.eq(id));
    if let Some(v) = patch.name {
        update = update.col_expr(drops::Column::Name, Expr::value(v));
    }
    if let Some(v) = patch.description {
        update = update.col_expr(drops::Column::Description, Expr::value(v));
    }
    if let Some(v) = patch.price_cents {
        update = update.col_expr(drops::Column::PriceCents, Expr::value(v));
    }
    if let Some(v) = patch.starts_at {
        update = update.col_expr(drops::Column::StartsAt, Expr::value(v));
    }
    if let Some(v) = patch.ends_at {
        update = update.col_expr(drops::Column::EndsAt, Expr::value(v));
    }
    if let Some(v) = patch.max_per_user {
        update = update.col_expr(drops::Column::MaxPerUser, Expr::value(v));
    }
    if let Some(n) = patch.add_stock.filter(|n| *n > 0) {
        update = update
            .col_expr(
                drops::Column::TotalStock,
                Expr::col(drops::Column::TotalStock).add(n),
            )
            .col_expr(
                drops::Column::AvailableStock,
                Expr::col(drops::Column::AvailableStock).add(n),
            )
            .col_expr(
                drops::Column::StockVersion,
                Expr::col(drops::Column::StockVersion).add(1),
            );
    }
    let updated = update
        .exec_with_returning(&txn)
        .await?
        .into_iter()
        .next()
        .ok_or(Error::DropNotFound)?;
    txn.commit().await?;
    Ok(updated)
}

/// # Errors
/// Database failure.
pub async fn find(db: &impl ConnectionTrait, id: i64) -> Result<Option<drops::Model>> {
    Ok(drops::Entity::find_by_id(id).one(db).await?)
}

pub fn is_open(drop: &drops::Model, now: DateTime<Utc>) -> bool {
    drop.starts_at <= now && drop.ends_at.is_none_or(|end| end > now)
}

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
    db: &DatabaseConnection,
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
        // case with one read instead of a transaction.
        if let Some(sold_out) = plainly_sold_out(db, drop_id, now).await? {
            return Ok(ReserveOutcome::SoldOut(sold_out));
        }
    }
    reserve_in_transaction(db, drop_id, user_id, ttl, now).await
}

/// `Some` when the drop is open, has no unit left and no hold is due, so no takeover is
/// possible: what the transactional path would conclude, in one query.
async fn plainly_sold_out(
    db: &DatabaseConnection,
    drop_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<SoldOut>> {
    // "Due" is judged by the statement's own start time, which is when its snapshot is taken:
    // a request that waited for a connection must not judge by when it arrived.
    const SQL: &str = r#"
        SELECT d.stock_version,
               (SELECT min(r.expires_at) FROM reservations r
                 WHERE r.drop_id = d.id AND r.status = 'active') AS next_due,
               statement_timestamp() AS checked_at
          FROM drops d
         WHERE d.id = $1
           AND d.available_stock = 0
           AND d.starts_at <= $2
           AND (d.ends_at IS NULL OR d.ends_at > $2)"#;
    let statement =
        Statement::from_sql_and_values(DbBackend::Postgres, SQL, [drop_id.into(), now.into()]);
    let Some(row) = db.query_one_raw(statement).await? else {
        return Ok(None);
    };
    let version: i64 = row.try_get("", "stock_version")?;
    let next_due: Option<DateTime<Utc>> = row.try_get("", "next_due")?;
    let checked_at: DateTime<Utc> = row.try_get("", "checked_at")?;
    if next_due.is_some_and(|due| due <= std::cmp::max(now, checked_at)) {
        return Ok(None);
    }
    Ok(Some(SoldOut {
        version,
        until: next_due,
    }))
}

/// The common case on Postgres, in one autocommit statement: take a unit if the drop is open,
/// has stock and the buyer is under the limit, and record the hold. The drop's row is locked
/// only while that one statement runs, which is what bounds a flash sale's throughput. `None`
/// when any condition failed; the transactional path then works out which, and tries a
/// takeover.
async fn reserve_in_one_statement(
    db: &DatabaseConnection,
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
                   updated_at = $3
             WHERE id = $1
               AND available_stock > 0
               AND starts_at <= $3
               AND (ends_at IS NULL OR ends_at > $3)
               AND (SELECT count(*) FROM purchases p WHERE p.drop_id = $1 AND p.user_id = $2) < max_per_user
         RETURNING id, available_stock, stock_version
        ), hold AS (
            INSERT INTO reservations (drop_id, user_id, status, expires_at, created_at)
            SELECT id, $2, 'active', $4, $3 FROM taken
         RETURNING id, drop_id, user_id, status, expires_at, created_at, ended_at
        )
        SELECT hold.id, hold.drop_id, hold.user_id, hold.status, hold.expires_at, hold.created_at,
               hold.ended_at, taken.available_stock, taken.stock_version
          FROM hold CROSS JOIN taken"#;
    let statement = Statement::from_sql_and_values(
        DbBackend::Postgres,
        SQL,
        [
            drop_id.into(),
            user_id.into(),
            now.into(),
            expires_at.into(),
        ],
    );
    let row = match db.query_one_raw(statement).await {
        Ok(row) => row,
        Err(e) if is_unique_violation(&e) => return Err(Error::AlreadyReserved),
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

/// The general path (all of SQLite, and Postgres's refusals and takeovers), in one transaction.
async fn reserve_in_transaction(
    db: &DatabaseConnection,
    drop_id: i64,
    user_id: i64,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<ReserveOutcome> {
    let txn = begin_write(db).await?;
    // A transaction that waited for its turn acts at the moment it runs: holds that fell due
    // while it waited are due for it too.
    let now = std::cmp::max(now, Utc::now());
    let drop = drops::Entity::find_by_id(drop_id)
        .one(&txn)
        .await?
        .ok_or(Error::DropNotFound)?;
    if !is_open(&drop, now) {
        return Err(Error::DropNotActive);
    }
    let bought = purchases::Entity::find()
        .filter(purchases::Column::DropId.eq(drop_id))
        .filter(purchases::Column::UserId.eq(user_id))
        .count(&txn)
        .await?;
    if bought >= u64::try_from(drop.max_per_user).unwrap_or(1) {
        return Err(Error::PurchaseLimitReached);
    }
    let hold = reservations::ActiveModel {
        drop_id: Set(drop_id),
        user_id: Set(user_id),
        status: Set(status::ACTIVE.to_owned()),
        expires_at: Set(now + ttl),
        created_at: Set(now),
        ended_at: Set(None),
        ..Default::default()
    };
    let reservation = match reservations::Entity::insert(hold)
        .exec_with_returning(&txn)
        .await
    {
        Ok(r) => r,
        Err(e) if is_unique_violation(&e) => return Err(Error::AlreadyReserved),
        Err(e) if is_foreign_key_violation(&e) => return Err(Error::DropNotFound),
        Err(e) => return Err(e.into()),
    };

    // Sold out by the counter? An overdue hold still gives its unit to this buyer. Concurrent
    // takeovers each lock a different overdue hold (SKIP LOCKED on Postgres; SQLite has one
    // writer at a time), and a due hold that a sweep or another takeover is ending right now
    // is waited for, so nobody is refused while a due hold is left.
    for _ in 0..MAX_TAKEOVER_ROUNDS {
        if let Some(stock) = take_units(&txn, drop_id, now, -1).await? {
            txn.commit().await?;
            return Ok(ReserveOutcome::Reserved(Reserved {
                reservation,
                stock,
                took_over: None,
            }));
        }
        let now = std::cmp::max(now, Utc::now());
        if let Some(candidate) = overdue_hold_to_take(&txn, drop_id, now).await?
            && let Some(ended) = end_hold(&txn, candidate, status::EXPIRED, None, now).await?
        {
            let stock = take_units(&txn, drop_id, now, 0)
                .await?
                .ok_or(Error::DropNotFound)?;
            txn.commit().await?;
            return Ok(ReserveOutcome::Reserved(Reserved {
                reservation,
                stock,
                took_over: Some(ended),
            }));
        }
        if !wait_for_busy_due_hold(&txn, drop_id, now).await? {
            break;
        }
    }

    let until = reservations::Entity::find()
        .select_only()
        .column_as(reservations::Column::ExpiresAt.min(), "until")
        .filter(reservations::Column::DropId.eq(drop_id))
        .filter(reservations::Column::Status.eq(status::ACTIVE))
        .filter(reservations::Column::Id.ne(reservation.id))
        .into_tuple::<Option<DateTime<Utc>>>()
        .one(&txn)
        .await?
        .flatten();
    txn.rollback().await?;
    Ok(ReserveOutcome::SoldOut(SoldOut {
        version: drop.stock_version,
        until,
    }))
}

/// Moves `delta` units into (positive) or out of (negative) `available_stock`, never below
/// zero, and bumps the version. `None` when the guard refused (no stock to take).
async fn take_units(
    txn: &impl ConnectionTrait,
    drop_id: i64,
    now: DateTime<Utc>,
    delta: i32,
) -> Result<Option<Stock>> {
    let mut update = drops::Entity::update_many()
        .col_expr(
            drops::Column::AvailableStock,
            Expr::col(drops::Column::AvailableStock).add(delta),
        )
        .col_expr(
            drops::Column::StockVersion,
            Expr::col(drops::Column::StockVersion).add(1),
        )
        .col_expr(drops::Column::UpdatedAt, Expr::value(now))
        .filter(drops::Column::Id.eq(drop_id));
    if delta < 0 {
        update = update.filter(drops::Column::AvailableStock.gte(-delta));
    }
    Ok(update
        .exec_with_returning(txn)
        .await?
        .first()
        .map(Stock::from))
}

/// Ids of active holds that are due, oldest first.
async fn overdue_holds(
    db: &impl ConnectionTrait,
    drop_id: Option<i64>,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<i64>> {
    let mut query = reservations::Entity::find()
        .select_only()
        .column(reservations::Column::Id)
        .filter(reservations::Column::Status.eq(status::ACTIVE))
        .filter(reservations::Column::ExpiresAt.lte(now));
    if let Some(drop_id) = drop_id {
        query = query.filter(reservations::Column::DropId.eq(drop_id));
    }
    Ok(query
        .order_by_asc(reservations::Column::ExpiresAt)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?)
}

/// How often a reserve on a sold-out drop looks again after waiting for a due hold someone
/// else was ending; each round, someone else got a unit, so this bounds a reserve's wait by
/// the buyers ahead of it, not by chance.
const MAX_TAKEOVER_ROUNDS: usize = 32;

/// The oldest due hold of a drop, locked for this transaction; holds other takeovers have
/// locked are skipped rather than waited for.
async fn overdue_hold_to_take(
    txn: &impl ConnectionTrait,
    drop_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<i64>> {
    let mut query = reservations::Entity::find()
        .select_only()
        .column(reservations::Column::Id)
        .filter(reservations::Column::Status.eq(status::ACTIVE))
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
        .filter(reservations::Column::Status.eq(status::ACTIVE))
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

/// Ends an active hold (optionally only its owner's), returning it as it now is.
async fn end_hold(
    txn: &impl ConnectionTrait,
    id: i64,
    new_status: &str,
    owner: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Option<reservations::Model>> {
    let mut update = reservations::Entity::update_many()
        .col_expr(reservations::Column::Status, Expr::value(new_status))
        .col_expr(reservations::Column::EndedAt, Expr::value(now))
        .filter(reservations::Column::Id.eq(id))
        .filter(reservations::Column::Status.eq(status::ACTIVE));
    if new_status == status::EXPIRED {
        update = update.filter(reservations::Column::ExpiresAt.lte(now));
    }
    if let Some(user_id) = owner {
        update = update.filter(reservations::Column::UserId.eq(user_id));
    }
    Ok(update.exec_with_returning(txn).await?.into_iter().next())
}

#[derive(Clone, Debug)]
pub struct Ended {
    pub reservation: reservations::Model,
    pub stock: Stock,
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
    let Some(reservation) = end_hold(&txn, reservation_id, status::EXPIRED, None, now).await?
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
    for id in overdue_holds(db, None, now, limit).await? {
        if let Some(e) = expire(db, id, now).await? {
            ended.push(e);
        }
    }
    Ok(ended)
}

/// Lets a hold go early: the unit is available again at once.
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
    let ended = match end_hold(&txn, reservation_id, status::RELEASED, Some(user_id), now).await? {
        Some(r) if r.expires_at <= now => {
            // Already due: record it as what it is, an expiry.
            end_status(&txn, r.id, status::EXPIRED).await?;
            Some(reservations::Model {
                status: status::EXPIRED.to_owned(),
                ..r
            })
        }
        other => other,
    };
    let Some(reservation) = ended else {
        txn.rollback().await?;
        return match owned(db, reservation_id, user_id).await?.status.as_str() {
            status::RELEASED => Ok(None),
            status::PURCHASED => Err(Error::AlreadyPurchased),
            _ => Err(Error::ReservationExpired),
        };
    };
    let stock = take_units(&txn, reservation.drop_id, now, 1)
        .await?
        .ok_or(Error::DropNotFound)?;
    txn.commit().await?;
    Ok(Some(Ended { reservation, stock }))
}

async fn end_status(txn: &impl ConnectionTrait, id: i64, new_status: &str) -> Result<()> {
    reservations::Entity::update_many()
        .col_expr(reservations::Column::Status, Expr::value(new_status))
        .filter(reservations::Column::Id.eq(id))
        .exec(txn)
        .await?;
    Ok(())
}

/// The caller's reservation, or `ReservationNotFound` — also for someone else's, so ids do
/// not reveal other buyers' holds.
async fn owned(
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

/// Buys a held unit. The hold must be active and not yet due *now*: purchase never trusts
/// that an expiry job has run.
///
/// # Errors
/// `ReservationNotFound`, `ReservationExpired`, `ReservationReleased`, `AlreadyPurchased`,
/// `PurchaseLimitReached`, or database failure.
pub async fn purchase(
    db: &DatabaseConnection,
    reservation_id: i64,
    user_id: i64,
    now: DateTime<Utc>,
) -> Result<purchases::Model> {
    let txn = begin_write(db).await?;
    let bought = reservations::Entity::update_many()
        .col_expr(reservations::Column::Status, Expr::value(status::PURCHASED))
        .col_expr(reservations::Column::EndedAt, Expr::value(now))
        .filter(reservations::Column::Id.eq(reservation_id))
        .filter(reservations::Column::UserId.eq(user_id))
        .filter(reservations::Column::Status.eq(status::ACTIVE))
        .filter(reservations::Column::ExpiresAt.gt(now))
        .exec_with_returning(&txn)
        .await?
        .into_iter()
        .next();
    let Some(reservation) = bought else {
        txn.rollback().await?;
        return Err(
            match owned(db, reservation_id, user_id).await?.status.as_str() {
                status::PURCHASED => Error::AlreadyPurchased,
                status::RELEASED => Error::ReservationReleased,
                _ => Error::ReservationExpired,
            },
        );
    };
    let drop = drops::Entity::find_by_id(reservation.drop_id)
        .one(&txn)
        .await?
        .ok_or(Error::DropNotFound)?;
    // The limit was checked when the hold was taken, but a purchase of the buyer's previous
    // hold may have committed while that reserve ran; only one hold per buyer and drop can be
    // active, so checking again here makes the limit exact.
    let bought = purchases::Entity::find()
        .filter(purchases::Column::DropId.eq(drop.id))
        .filter(purchases::Column::UserId.eq(user_id))
        .count(&txn)
        .await?;
    if bought >= u64::try_from(drop.max_per_user).unwrap_or(1) {
        txn.rollback().await?;
        return Err(Error::PurchaseLimitReached);
    }
    let purchase = purchases::ActiveModel {
        reservation_id: Set(reservation.id),
        user_id: Set(user_id),
        drop_id: Set(drop.id),
        amount_cents: Set(drop.price_cents),
        currency: Set(drop.currency),
        created_at: Set(now),
        ..Default::default()
    };
    let purchase = purchases::Entity::insert(purchase)
        .exec_with_returning(&txn)
        .await?;
    txn.commit().await?;
    Ok(purchase)
}

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
        .inner_join(users::Entity)
        .filter(reservations::Column::DropId.is_in(ids.clone()))
        .filter(reservations::Column::Status.eq(status::ACTIVE))
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
            .inner_join(users::Entity)
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

/// Checks the invariant for one drop; used by tests and the admin view.
///
/// # Errors
/// `DropNotFound`, or database failure.
pub async fn audit(db: &DatabaseConnection, drop_id: i64) -> Result<Audit> {
    let txn = db.begin().await?;
    let drop = drops::Entity::find_by_id(drop_id)
        .one(&txn)
        .await?
        .ok_or(Error::DropNotFound)?;
    let active = reservations::Entity::find()
        .filter(reservations::Column::DropId.eq(drop_id))
        .filter(reservations::Column::Status.eq(status::ACTIVE))
        .count(&txn)
        .await?;
    let sold = purchases::Entity::find()
        .filter(purchases::Column::DropId.eq(drop_id))
        .count(&txn)
        .await?;
    txn.commit().await?;
    Ok(Audit {
        total_stock: i64::from(drop.total_stock),
        available_stock: i64::from(drop.available_stock),
        active_holds: i64::try_from(active).unwrap_or(i64::MAX),
        purchases: i64::try_from(sold).unwrap_or(i64::MAX),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Audit {
    pub total_stock: i64,
    pub available_stock: i64,
    pub active_holds: i64,
    pub purchases: i64,
}

impl Audit {
    pub fn holds(&self) -> bool {
        self.available_stock + self.active_holds + self.purchases == self.total_stock
    }
}
