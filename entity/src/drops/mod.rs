//! Limited drops: reserve one unit for a while, buy it, or let it go back.
//!
//! Invariant, for every drop at every instant:
//! `available_stock + active holds + purchases = total_stock`. Every operation moves units
//! between those three in a single transaction, and `stock_version` grows with each move.
//!
//! - [`admin`]: creating and editing drops, from parsed input.
//! - [`reserve`]: taking a hold, including the exact-expiry takeover of a due hold.
//! - [`batch`]: taking holds for many buyers of one drop in one statement (Postgres).
//! - [`holds`]: ending holds — expiry (job, sweep) and early release.
//! - [`purchase`]: buying a held unit.
//! - [`views`]: what the listings and sockets show.
//! - [`waitlist`]: the line of a sold-out drop, and offers of returned units to it.
//! - [`stats`]: demand figures — attempts, holds, expiries, purchases, the line, the draw.
//! - [`draw`]: draw drops — entries, the verifiable draw, its winners and waitlist.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    sea_query::{CaseStatement, Expr, ExprTrait, Func},
};

pub use crate::models::reservations::ReservationStatus;
use crate::{
    Error,
    db::{is_foreign_key_violation, is_unique_violation},
    error::Result,
    models::{
        drops::{self, DropMode},
        purchases, reservations,
    },
};

mod admin;
mod batch;
pub mod draw;
mod holds;
mod purchase;
mod reserve;
pub mod stats;
mod views;
pub mod waitlist;

pub use admin::{DropInput, DropPatch, MAX_STOCK, NewDrop, Updated, create, update};
pub use batch::{Batch, reserve_batch};
pub use holds::{Ended, expire, expire_overdue, next_due, release};
pub use purchase::purchase;
pub use reserve::{PlainlySoldOut, plainly_sold_out, reserve};
pub use views::{
    BuyerView, DropView, HolderView, list_all, list_public, open_stock, purchases_of,
    reservations_of, view,
};

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

/// # Errors
/// Database failure.
pub async fn find(db: &impl ConnectionTrait, id: i64) -> Result<Option<drops::Model>> {
    Ok(drops::Entity::find_by_id(id).one(db).await?)
}

pub fn is_open(drop: &drops::Model, now: DateTime<Utc>) -> bool {
    drop.starts_at <= now && drop.ends_at.is_none_or(|end| end > now)
}

/// Whether a unit of `drop` may be held now: it is open and, for a draw drop, drawn (until
/// then its units belong to the draw). The one-statement reserves on Postgres state the same
/// rule in their SQL.
fn check_on_sale(drop: &drops::Model, now: DateTime<Utc>) -> Result<()> {
    if drop.mode == DropMode::Draw && drop.drawn_at.is_none() {
        return Err(Error::DrawPending);
    }
    if !is_open(drop, now) {
        return Err(Error::DropNotActive);
    }
    Ok(())
}

/// The per-buyer rule: a buyer may take a hold on a drop, and buy it, only while their
/// purchases of that drop are fewer than its `max_per_user`. (The one-statement reserve on
/// Postgres states the same rule in its SQL.)
async fn check_purchase_limit(
    txn: &impl ConnectionTrait,
    drop: &drops::Model,
    user_id: i64,
) -> Result<()> {
    let bought = purchases::Entity::find()
        .filter(purchases::Column::DropId.eq(drop.id))
        .filter(purchases::Column::UserId.eq(user_id))
        .count(txn)
        .await?;
    if bought >= u64::try_from(drop.max_per_user).unwrap_or(1) {
        return Err(Error::PurchaseLimitReached);
    }
    Ok(())
}

/// The hold's row, at the drop's price now; one active hold per buyer and drop is a unique
/// index. Also a waitlist offer's hold.
async fn insert_hold(
    txn: &impl ConnectionTrait,
    drop: &drops::Model,
    user_id: i64,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<reservations::Model> {
    let hold = reservations::ActiveModel {
        drop_id: Set(drop.id),
        price_cents: Set(drop.price_cents),
        currency: Set(drop.currency.clone()),
        user_id: Set(user_id),
        status: Set(ReservationStatus::Active),
        expires_at: Set(expires_at),
        created_at: Set(now),
        ended_at: Set(None),
        ..Default::default()
    };
    match reservations::Entity::insert(hold)
        .exec_with_returning(txn)
        .await
    {
        Ok(r) => Ok(r),
        Err(e) if is_unique_violation(&e) => Err(Error::AlreadyReserved),
        // The drop was read in this transaction: the missing parent is the buyer's account.
        Err(e) if is_foreign_key_violation(&e) => Err(Error::AccountGone),
        Err(e) => Err(e.into()),
    }
}

/// Moves `delta` units into (positive) or out of (negative) `available_stock`, never below
/// zero, and bumps the version. `None` when the guard refused (no stock to take).
pub(crate) async fn take_units(
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
        .col_expr(drops::Column::SoldOutAt, first_sold_out(delta, now))
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

/// `sold_out_at` after moving `delta` units: kept once set, set to `now` when they leave none.
fn first_sold_out(delta: i32, now: DateTime<Utc>) -> Expr {
    let now_if_none_left: Expr = CaseStatement::new()
        .case(
            Expr::col(drops::Column::AvailableStock).add(delta).eq(0),
            Expr::value(now),
        )
        .into();
    Func::coalesce([Expr::col(drops::Column::SoldOutAt), now_if_none_left]).into()
}

/// Checks the invariant for one drop; used by tests and the admin view.
///
/// # Errors
/// `DropNotFound`, or database failure.
pub async fn audit(db: &impl crate::db::Conn, drop_id: i64) -> Result<Audit> {
    // One snapshot for all three counts: under READ COMMITTED a sweep committing between
    // them would make a sound drop look broken.
    let txn = crate::db::begin_snapshot(db).await?;
    let drop = drops::Entity::find_by_id(drop_id)
        .one(&txn)
        .await?
        .ok_or(Error::DropNotFound)?;
    let active = reservations::Entity::find()
        .filter(reservations::Column::DropId.eq(drop_id))
        .filter(reservations::Column::Status.eq(ReservationStatus::Active))
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
