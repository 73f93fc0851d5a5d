//! Draw drops (raffles) with verifiable fairness.
//!
//! A draw drop takes entries — one per buyer — from `starts_at` until `entries_close_at`.
//! When it is created the store draws a secret 32-byte seed and publishes its SHA-256 (the
//! commitment). At the close, [`draw`] orders the entries by
//! `SHA-256(seed ‖ entry id as 8 bytes big-endian)`, ascending ([`order`]); the first
//! `available_stock` entries win a personal hold (an offer, with the drop's offer TTL), the
//! rest join the waitlist in that order, and the seed is published. Anyone holding the seed
//! and the list of entry ids can recompute the order and check both the commitment and the
//! winners.
//!
//! Entries and the draw take turns on the drop's row (an entry shares it, the draw locks it),
//! so an entry either is in the draw or is refused as late; the draw runs once however many
//! workers try, because it checks `drawn_at` under that lock.

use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{CaseStatement, Expr, ExprTrait, LockType},
};
use sha2::{Digest, Sha256};

use super::{
    Stock, is_open, take_units,
    waitlist::{Offer, lock_drop, make_offer, offer_ttl, waiting_entry},
};
use crate::{
    Error,
    db::{begin_write, insert_unique},
    error::Result,
    mail::{self, WaitlistedPayload},
    models::{
        draw_entries,
        drops::{self, DropMode},
        users, waitlist_entries,
    },
};

/// A fresh seed (hex) and its commitment, `SHA-256(seed bytes)` (hex).
pub(super) fn new_seed() -> (String, String) {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    (hex::encode(seed), hex::encode(Sha256::digest(seed)))
}

/// The draw's order of `entry_ids` under `seed`: sorted by `SHA-256(seed ‖ id as 8 bytes
/// big-endian)`, ascending, compared bytewise (ties, which SHA-256 makes unheard of, by id).
/// A uniformly random order for a seed nobody could choose after seeing the entries.
pub fn order(seed: &[u8], entry_ids: &[i64]) -> Vec<i64> {
    let mut keyed: Vec<([u8; 32], i64)> = entry_ids
        .iter()
        .map(|&id| {
            let key = Sha256::new()
                .chain_update(seed)
                .chain_update(id.to_be_bytes())
                .finalize();
            (key.into(), id)
        })
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, id)| id).collect()
}

/// A buyer's entry in a draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub entry_id: i64,
    pub drop_id: i64,
    pub entries_close_at: Option<DateTime<Utc>>,
    /// Place in the draw's order, once drawn.
    pub position: Option<i32>,
    pub won: bool,
}

impl Entry {
    fn of(entry: &draw_entries::Model, drop: &drops::Model) -> Self {
        Self {
            entry_id: entry.id,
            drop_id: entry.drop_id,
            entries_close_at: drop.entries_close_at,
            position: entry.position,
            won: entry.won,
        }
    }
}

/// Enters the buyer in a draw drop's draw.
///
/// # Errors
/// `DropNotFound`, `NotADraw`, `DropNotActive` (entries have not opened), `EntriesClosed`,
/// `AlreadyEntered`, or database failure.
pub async fn enter(
    db: &impl crate::db::Conn,
    drop_id: i64,
    user_id: i64,
    now: DateTime<Utc>,
) -> Result<Entry> {
    let txn = begin_write(db).await?;
    // Shared: entries go side by side, and the draw (which locks the row) waits for them.
    let mut query = drops::Entity::find_by_id(drop_id);
    if txn.get_database_backend() == DbBackend::Postgres {
        query = query.lock(LockType::Share);
    }
    let drop = query.one(&txn).await?.ok_or(Error::DropNotFound)?;
    if drop.mode != DropMode::Draw {
        return Err(Error::NotADraw);
    }
    if drop.drawn_at.is_some() || drop.entries_close_at.is_none_or(|close| close <= now) {
        return Err(Error::EntriesClosed);
    }
    if !is_open(&drop, now) {
        return Err(Error::DropNotActive);
    }
    // A draw of verified buyers is one entry per person: per verified mailbox, however many
    // accounts lead to it.
    let mailbox = if drop.require_verified {
        let email: Option<String> = users::Entity::find_by_id(user_id)
            .select_only()
            .column(users::Column::Email)
            .into_tuple()
            .one(&txn)
            .await?;
        Some(crate::email_address::mailbox_of(
            &email.ok_or(Error::AccountGone)?.to_lowercase(),
        ))
    } else {
        None
    };
    let entry = draw_entries::ActiveModel {
        drop_id: Set(drop_id),
        user_id: Set(user_id),
        created_at: Set(now),
        position: Set(None),
        won: Set(false),
        mailbox: Set(mailbox),
        ..Default::default()
    };
    let entry = insert_unique(&txn, entry, Error::AlreadyEntered).await?;
    txn.commit().await?;
    Ok(Entry::of(&entry, &drop))
}

/// The buyer's entry in a draw.
///
/// # Errors
/// `DropNotFound`, `NotEntered`, or database failure.
pub async fn entry_of(db: &impl ConnectionTrait, drop_id: i64, user_id: i64) -> Result<Entry> {
    let drop = super::find(db, drop_id).await?.ok_or(Error::DropNotFound)?;
    let entry = draw_entries::Entity::find()
        .filter(draw_entries::Column::DropId.eq(drop_id))
        .filter(draw_entries::Column::UserId.eq(user_id))
        .one(db)
        .await?
        .ok_or(Error::NotEntered)?;
    Ok(Entry::of(&entry, &drop))
}

/// What anyone may see of a draw: the commitment, and once drawn the seed and every entry in
/// draw order.
#[derive(Clone, Debug)]
pub struct Record {
    pub drop_id: i64,
    pub seed_hash: String,
    pub entries_close_at: Option<DateTime<Utc>>,
    pub entries: u64,
    pub drawn_at: Option<DateTime<Utc>>,
    /// Published once drawn.
    pub seed: Option<String>,
    /// Entry ids in draw order with whether each won; empty until drawn.
    pub order: Vec<(i64, bool)>,
}

/// # Errors
/// `DropNotFound`, `NotADraw`, or database failure.
pub async fn record(db: &impl ConnectionTrait, drop_id: i64) -> Result<Record> {
    let drop = super::find(db, drop_id).await?.ok_or(Error::DropNotFound)?;
    let (DropMode::Draw, Some(seed_hash)) = (drop.mode, drop.seed_hash.clone()) else {
        return Err(Error::NotADraw);
    };
    let entries = draw_entries::Entity::find()
        .filter(draw_entries::Column::DropId.eq(drop_id))
        .count(db)
        .await?;
    let drawn = drop.drawn_at.is_some();
    let order = if drawn {
        draw_entries::Entity::find()
            .select_only()
            .column(draw_entries::Column::Id)
            .column(draw_entries::Column::Won)
            .filter(draw_entries::Column::DropId.eq(drop_id))
            .order_by_asc(draw_entries::Column::Position)
            .into_tuple()
            .all(db)
            .await?
    } else {
        Vec::new()
    };
    Ok(Record {
        drop_id,
        seed_hash,
        entries_close_at: drop.entries_close_at,
        entries,
        drawn_at: drop.drawn_at,
        seed: drop.seed.filter(|_| drawn),
        order,
    })
}

/// A draw done: the winners' offers, the waitlisted entrants, and the drop's stock after.
#[derive(Clone, Debug)]
pub struct Drawn {
    pub offers: Vec<Offer>,
    pub waitlisted: Vec<Waitlisted>,
    /// The emails to the waitlisted, written with the draw.
    pub letters: Vec<i64>,
    pub stock: Stock,
}

/// An entrant who did not win, and their place on the waitlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waitlisted {
    pub user_id: i64,
    pub drop_id: i64,
    pub position: u64,
}

/// Draws a draw drop whose entries have closed; `None` when there is nothing to draw (not a
/// draw, not closed yet, or drawn already — by this or another worker).
///
/// # Errors
/// `DropNotFound`, or database failure.
pub async fn draw(
    db: &impl crate::db::Conn,
    drop_id: i64,
    default_ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Option<Drawn>> {
    let txn = begin_write(db).await?;
    let drop = lock_drop(&txn, drop_id).await?;
    let due = drop.entries_close_at.is_some_and(|close| close <= now);
    let Some(seed) = drop.seed.as_deref().and_then(|s| hex::decode(s).ok()) else {
        return Ok(None);
    };
    if drop.mode != DropMode::Draw || drop.drawn_at.is_some() || !due {
        return Ok(None);
    }
    let entries: Vec<(i64, i64)> = draw_entries::Entity::find()
        .select_only()
        .column(draw_entries::Column::Id)
        .column(draw_entries::Column::UserId)
        .filter(draw_entries::Column::DropId.eq(drop_id))
        .into_tuple()
        .all(&txn)
        .await?;
    let ids: Vec<i64> = entries.iter().map(|(id, _)| *id).collect();
    let drawn = order(&seed, &ids);
    let units = usize::try_from(drop.available_stock)
        .unwrap_or(0)
        .min(drawn.len());
    record_order(&txn, &drawn, units).await?;

    let user_of: std::collections::HashMap<i64, i64> = entries.into_iter().collect();
    let users_in_order: Vec<i64> = drawn
        .iter()
        .filter_map(|id| user_of.get(id))
        .copied()
        .collect();
    let (winners, rest) = users_in_order.split_at(units);
    let ttl = offer_ttl(&drop, default_ttl);
    let mut offers = Vec::with_capacity(winners.len());
    for &user_id in winners {
        offers.push(make_offer(&txn, &drop, user_id, ttl, true, now).await?);
    }
    let (waitlisted, letters) = waitlist_the_rest(&txn, &drop, rest, now).await?;
    let taken = i32::try_from(units).unwrap_or(i32::MAX);
    let stock = if taken > 0 {
        take_units(&txn, drop_id, now, -taken)
            .await?
            .ok_or(Error::DropNotFound)?
    } else {
        Stock::from(&drop)
    };
    drops::Entity::update_many()
        .col_expr(drops::Column::DrawnAt, Expr::value(now))
        .filter(drops::Column::Id.eq(drop_id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(Some(Drawn {
        offers,
        waitlisted,
        letters,
        stock,
    }))
}

/// Writes each entry's place in the draw's order, and marks the first `winners` as won.
async fn record_order(txn: &impl ConnectionTrait, drawn: &[i64], winners: usize) -> Result<()> {
    for (chunk_no, chunk) in drawn.chunks(500).enumerate() {
        let first = chunk_no * 500;
        let mut position = CaseStatement::new();
        let mut won = CaseStatement::new();
        for (offset, &id) in chunk.iter().enumerate() {
            let place = first + offset;
            position = position.case(
                Expr::col(draw_entries::Column::Id).eq(id),
                i32::try_from(place + 1).unwrap_or(i32::MAX),
            );
            won = won.case(Expr::col(draw_entries::Column::Id).eq(id), place < winners);
        }
        draw_entries::Entity::update_many()
            .col_expr(draw_entries::Column::Position, position.into())
            .col_expr(draw_entries::Column::Won, won.into())
            .filter(draw_entries::Column::Id.is_in(chunk.iter().copied()))
            .exec(txn)
            .await?;
    }
    Ok(())
}

/// Puts the entrants who did not win on the waitlist in draw order, and writes each the email
/// that says where they stand.
async fn waitlist_the_rest(
    txn: &impl ConnectionTrait,
    drop: &drops::Model,
    rest: &[i64],
    now: DateTime<Utc>,
) -> Result<(Vec<Waitlisted>, Vec<i64>)> {
    let mut waitlisted = Vec::with_capacity(rest.len());
    let mut letters = Vec::with_capacity(rest.len());
    for (chunk_no, chunk) in rest.chunks(500).enumerate() {
        // Inserted in draw order, so the line's order (by id) is the draw's.
        let rows = chunk
            .iter()
            .map(|&user_id| waiting_entry(drop.id, user_id, now));
        waitlist_entries::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
        let emails: std::collections::HashMap<i64, String> = users::Entity::find()
            .select_only()
            .column(users::Column::Id)
            .column(users::Column::Email)
            .filter(users::Column::Id.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(txn)
            .await?
            .into_iter()
            .collect();
        let mut chunk_letters = Vec::with_capacity(chunk.len());
        for (offset, &user_id) in chunk.iter().enumerate() {
            let position = u64::try_from(chunk_no * 500 + offset + 1).unwrap_or(u64::MAX);
            waitlisted.push(Waitlisted {
                user_id,
                drop_id: drop.id,
                position,
            });
            if let Some(email) = emails.get(&user_id) {
                let content = WaitlistedPayload {
                    drop_id: drop.id,
                    drop_name: drop.name.clone(),
                    position,
                };
                chunk_letters.push((email.clone(), content));
            }
        }
        letters.extend(mail::queue_waitlisted(txn, chunk_letters, now).await?);
    }
    Ok((waitlisted, letters))
}

/// Draw drops whose entries have closed and that are not drawn yet, earliest close first.
///
/// # Errors
/// Database failure.
pub async fn due(db: &impl ConnectionTrait, now: DateTime<Utc>, limit: u64) -> Result<Vec<i64>> {
    Ok(drops::Entity::find()
        .select_only()
        .column(drops::Column::Id)
        .filter(drops::Column::Mode.eq(DropMode::Draw))
        .filter(drops::Column::DrawnAt.is_null())
        .filter(drops::Column::EntriesCloseAt.lte(now))
        .order_by_asc(drops::Column::EntriesCloseAt)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?)
}
