//! The waitlist of a sold-out drop, and what happens to a unit that comes back while it is not
//! empty: the unit becomes a personal hold (an *offer*) for the first in line, in the
//! transaction that returned it, so it is never on general sale while someone waits.
//!
//! Every path that gives units back — an expiry (job, sweep), a release, an admin adding
//! stock — ends in [`settle_units`], which locks the drop's row first: unit returns and joins
//! of one drop are serialised, so each returned unit makes exactly one offer, however many
//! workers and instances run. An offer is an ordinary active hold with the drop's TTL, bought
//! through the purchase endpoint; when it runs out unbought, its unit is settled the same way
//! and passes to the next in line.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, LockType},
};

use super::{
    ReservationStatus, Stock, check_on_sale, check_purchase_limit, insert_hold, take_units,
};
use crate::{
    Error,
    db::{begin_write, insert_unique},
    error::Result,
    mail::{self, OfferPayload},
    models::{
        drops, reservations, users,
        waitlist_entries::{self, WaitStatus},
    },
};

/// A buyer's place on a drop's waitlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub drop_id: i64,
    pub status: WaitStatus,
    /// 1 for the first in line; `None` once offered.
    pub position: Option<u64>,
    /// Buyers waiting in all.
    pub length: u64,
    /// The personal hold, once offered.
    pub reservation_id: Option<i64>,
}

/// A returned unit made into a personal hold for the first in line, and the email telling
/// them (written in the same transaction).
#[derive(Clone, Debug)]
pub struct Offer {
    pub hold: reservations::Model,
    pub message_id: i64,
}

/// Joins the line of a drop that is open and sold out.
///
/// # Errors
/// `DropNotFound`, `DropNotActive`, `DropNotSoldOut`, `AlreadyReserved` (the buyer holds a
/// unit of it), `PurchaseLimitReached`, `AlreadyWaiting`, or database failure.
pub async fn join(
    db: &impl crate::db::Conn,
    drop_id: i64,
    user_id: i64,
    now: DateTime<Utc>,
) -> Result<Place> {
    let txn = begin_write(db).await?;
    let drop = lock_drop(&txn, drop_id).await?;
    check_on_sale(&drop, now)?;
    if drop.available_stock > 0 {
        return Err(Error::DropNotSoldOut);
    }
    if holds_unit(&txn, drop_id, user_id).await? {
        return Err(Error::AlreadyReserved);
    }
    check_purchase_limit(&txn, &drop, user_id).await?;
    let entry = waiting_entry(drop_id, user_id, now);
    let entry = insert_unique(&txn, entry, Error::AlreadyWaiting).await?;
    let place = place_of(&txn, &entry).await?;
    txn.commit().await?;
    Ok(place)
}

/// A new entry at the end of a drop's line.
pub(super) fn waiting_entry(
    drop_id: i64,
    user_id: i64,
    now: DateTime<Utc>,
) -> waitlist_entries::ActiveModel {
    waitlist_entries::ActiveModel {
        drop_id: Set(drop_id),
        user_id: Set(user_id),
        status: Set(WaitStatus::Waiting),
        reservation_id: Set(None),
        created_at: Set(now),
        offered_at: Set(None),
        ..Default::default()
    }
}

/// The buyer's place in the line (or their offer).
///
/// # Errors
/// `NotWaiting` when the buyer has no entry for the drop, or database failure.
pub async fn place(db: &impl ConnectionTrait, drop_id: i64, user_id: i64) -> Result<Place> {
    let entry = entry_of(db, drop_id, user_id)
        .await?
        .ok_or(Error::NotWaiting)?;
    place_of(db, &entry).await
}

/// Leaves the line. An entry already offered is done with: its hold is the buyer's to buy or
/// let go.
///
/// # Errors
/// `NotWaiting` when the buyer is not waiting for the drop, or database failure.
pub async fn leave(db: &impl crate::db::Conn, drop_id: i64, user_id: i64) -> Result<()> {
    let left = waitlist_entries::Entity::delete_many()
        .filter(waitlist_entries::Column::DropId.eq(drop_id))
        .filter(waitlist_entries::Column::UserId.eq(user_id))
        .filter(waitlist_entries::Column::Status.eq(WaitStatus::Waiting))
        .exec(db)
        .await?;
    if left.rows_affected == 0 {
        return Err(Error::NotWaiting);
    }
    Ok(())
}

/// Whether anyone waits for the drop: a due hold of such a drop is left to the expiry (which
/// offers its unit), not taken over by a racing reserve.
///
/// # Errors
/// Database failure.
pub async fn has_waiters(db: &impl ConnectionTrait, drop_id: i64) -> Result<bool> {
    Ok(waiting(drop_id).count(db).await? > 0)
}

/// Gives `returned` units of a drop back: first to the line, as offers (one each, in joining
/// order), the rest to general sale. Units already on sale while buyers wait (a join that
/// raced a return) are offered too. Locks the drop's row first, so concurrent returns and
/// joins of one drop take turns and no unit is offered twice.
///
/// # Errors
/// `DropNotFound`, or database failure.
pub async fn settle_units(
    txn: &impl ConnectionTrait,
    drop_id: i64,
    returned: i32,
    default_ttl: Duration,
    now: DateTime<Utc>,
) -> Result<(Vec<Offer>, Stock)> {
    // Lock the drop's row first — by the update that gives the units back, the same lock
    // every stock move takes — then look at the line: with nobody waiting (the common case)
    // the lock is held no longer than a plain return holds it.
    let mut stock = if returned == 0 {
        Stock::from(&lock_drop(txn, drop_id).await?)
    } else {
        take_units(txn, drop_id, now, returned)
            .await?
            .ok_or(Error::DropNotFound)?
    };
    if !has_waiters(txn, drop_id).await? {
        return Ok((Vec::new(), stock));
    }
    let drop = drops::Entity::find_by_id(drop_id)
        .one(txn)
        .await?
        .ok_or(Error::DropNotFound)?;
    let ttl = offer_ttl(&drop, default_ttl);
    let mut offers = Vec::new();
    let mut passed_over = Vec::new();
    while i32::try_from(offers.len()).unwrap_or(i32::MAX) < stock.available_stock {
        let Some(next) = waiting(drop_id)
            .filter(waitlist_entries::Column::Id.is_not_in(passed_over.iter().copied()))
            .order_by_asc(waitlist_entries::Column::Id)
            .one(txn)
            .await?
        else {
            break;
        };
        // An account with no history is passed over, keeping its place (see `established`).
        if !established(txn, &next).await? {
            passed_over.push(next.id);
            continue;
        }
        // Someone who holds a unit or reached the limit since joining is out of the line.
        let at_limit = match check_purchase_limit(txn, &drop, next.user_id).await {
            Ok(()) => false,
            Err(Error::PurchaseLimitReached) => true,
            Err(other) => return Err(other),
        };
        if at_limit || holds_unit(txn, drop_id, next.user_id).await? {
            waitlist_entries::Entity::delete_by_id(next.id)
                .exec(txn)
                .await?;
            continue;
        }
        offers.push(offer(txn, &drop, &next, ttl, now).await?);
    }
    if !offers.is_empty() {
        let offered = i32::try_from(offers.len()).unwrap_or(i32::MAX);
        stock = take_units(txn, drop_id, now, -offered)
            .await?
            .ok_or(Error::DropNotFound)?;
    }
    Ok((offers, stock))
}

/// Whether a waiting buyer is offered units: an account that verified its email, or that
/// held a unit of any drop before it joined this line. Bot accounts made for the line have
/// neither, and would each make the real buyers behind them wait a whole offer's time; they
/// keep their place, and are offered a unit once they verify.
async fn established(txn: &impl ConnectionTrait, entry: &waitlist_entries::Model) -> Result<bool> {
    let verified = users::Entity::find_by_id(entry.user_id)
        .filter(users::Column::EmailVerifiedAt.is_not_null())
        .count(txn)
        .await?
        > 0;
    if verified {
        return Ok(true);
    }
    let held_before = reservations::Entity::find()
        .filter(reservations::Column::UserId.eq(entry.user_id))
        .filter(reservations::Column::CreatedAt.lt(entry.created_at))
        .count(txn)
        .await?
        > 0;
    Ok(held_before)
}

/// Makes `entry`'s personal hold and the email that tells its buyer.
async fn offer(
    txn: &impl ConnectionTrait,
    drop: &drops::Model,
    entry: &waitlist_entries::Model,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Offer> {
    let offer = make_offer(txn, drop, entry.user_id, ttl, false, now).await?;
    waitlist_entries::Entity::update_many()
        .col_expr(
            waitlist_entries::Column::Status,
            Expr::value(WaitStatus::Offered),
        )
        .col_expr(
            waitlist_entries::Column::ReservationId,
            Expr::value(offer.hold.id),
        )
        .col_expr(waitlist_entries::Column::OfferedAt, Expr::value(now))
        .filter(waitlist_entries::Column::Id.eq(entry.id))
        .exec(txn)
        .await?;
    Ok(offer)
}

/// A personal hold of one unit of `drop` for `user_id` (a waitlist offer or a draw's win),
/// and the email that tells them, written in the same transaction.
pub(super) async fn make_offer(
    txn: &impl ConnectionTrait,
    drop: &drops::Model,
    user_id: i64,
    ttl: Duration,
    won_draw: bool,
    now: DateTime<Utc>,
) -> Result<Offer> {
    let hold = insert_hold(txn, drop, user_id, now + ttl, now).await?;
    let buyer = users::Entity::find_by_id(user_id)
        .one(txn)
        .await?
        .ok_or(Error::NotWaiting)?;
    let content = OfferPayload {
        drop_id: drop.id,
        drop_name: drop.name.clone(),
        reservation_id: hold.id,
        expires_at: hold.expires_at,
        won_draw,
    };
    let message_id = mail::queue_offer(txn, &buyer.email, &content, now).await?;
    Ok(Offer { hold, message_id })
}

/// How long `drop`'s offers (and a draw's winning holds) last: its own TTL, or the store's.
pub(super) fn offer_ttl(drop: &drops::Model, default: Duration) -> Duration {
    drop.offer_ttl_secs
        .map_or(default, |secs| Duration::seconds(i64::from(secs)))
}

/// The drop's row, locked until the transaction ends (on Postgres; SQLite has one writer).
/// `FOR NO KEY UPDATE`, the lock an `UPDATE` of the row takes: it serialises stock moves, but
/// not a reserve that inserted a hold (its foreign-key check holds `KEY SHARE` on the drop)
/// and may next wait for a due hold this transaction is ending — that would deadlock.
pub(super) async fn lock_drop(txn: &impl ConnectionTrait, drop_id: i64) -> Result<drops::Model> {
    let mut query = drops::Entity::find_by_id(drop_id);
    if txn.get_database_backend() == DbBackend::Postgres {
        query = query.lock(LockType::NoKeyUpdate);
    }
    query.one(txn).await?.ok_or(Error::DropNotFound)
}

async fn holds_unit(txn: &impl ConnectionTrait, drop_id: i64, user_id: i64) -> Result<bool> {
    let held = reservations::Entity::find()
        .filter(reservations::Column::DropId.eq(drop_id))
        .filter(reservations::Column::UserId.eq(user_id))
        .filter(reservations::Column::Status.eq(ReservationStatus::Active))
        .count(txn)
        .await?;
    Ok(held > 0)
}

fn waiting(drop_id: i64) -> sea_orm::Select<waitlist_entries::Entity> {
    waitlist_entries::Entity::find()
        .filter(waitlist_entries::Column::DropId.eq(drop_id))
        .filter(waitlist_entries::Column::Status.eq(WaitStatus::Waiting))
}

async fn entry_of(
    db: &impl ConnectionTrait,
    drop_id: i64,
    user_id: i64,
) -> Result<Option<waitlist_entries::Model>> {
    Ok(waitlist_entries::Entity::find()
        .filter(waitlist_entries::Column::DropId.eq(drop_id))
        .filter(waitlist_entries::Column::UserId.eq(user_id))
        .one(db)
        .await?)
}

async fn place_of(db: &impl ConnectionTrait, entry: &waitlist_entries::Model) -> Result<Place> {
    let length = waiting(entry.drop_id).count(db).await?;
    let position = match entry.status {
        WaitStatus::Waiting => Some(
            waiting(entry.drop_id)
                .filter(waitlist_entries::Column::Id.lte(entry.id))
                .count(db)
                .await?,
        ),
        WaitStatus::Offered => None,
    };
    Ok(Place {
        drop_id: entry.drop_id,
        status: entry.status,
        position,
        length,
        reservation_id: entry.reservation_id,
    })
}

/// Ids of the drops among `drop_ids` that have buyers waiting.
///
/// # Errors
/// Database failure.
pub async fn drops_with_waiters(db: &impl ConnectionTrait, drop_ids: Vec<i64>) -> Result<Vec<i64>> {
    Ok(waitlist_entries::Entity::find()
        .select_only()
        .column(waitlist_entries::Column::DropId)
        .distinct()
        .filter(waitlist_entries::Column::DropId.is_in(drop_ids))
        .filter(waitlist_entries::Column::Status.eq(WaitStatus::Waiting))
        .into_tuple()
        .all(db)
        .await?)
}
