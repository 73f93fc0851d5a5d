//! Demand figures of drops: how many tried, held, let go, bought, waited and entered. Read
//! from the rows in one snapshot (the reserve attempts are counted by the api instances and
//! added to the drop's row every second), so every figure counts all instances and workers.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{CaseStatement, Expr, ExprTrait, Query},
};

use super::ReservationStatus;
use crate::{
    Error,
    error::Result,
    models::{
        draw_entries, drops, purchases, reservations,
        waitlist_entries::{self, WaitStatus},
    },
};

/// One drop's demand figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropStats {
    pub drop_id: i64,
    /// Reserve requests, answered or refused (sold out, limit, ...).
    pub reserve_attempts: i64,
    /// Holds taken, waitlist offers and draw wins included.
    pub holds: i64,
    pub active_holds: i64,
    pub expiries: i64,
    pub releases: i64,
    pub purchases: i64,
    pub starts_at: DateTime<Utc>,
    /// When the drop first had no unit left.
    pub sold_out_at: Option<DateTime<Utc>>,
    /// Buyers waiting in line now.
    pub waitlist_length: i64,
    /// Returned units offered to the line, and those offers bought.
    pub offers_made: i64,
    pub offers_taken: i64,
    pub draw_entries: i64,
    pub draw_winners: i64,
}

impl DropStats {
    /// Purchases per hold, 0 to 1; `None` before the first hold.
    pub fn conversion(&self) -> Option<f64> {
        (self.holds > 0).then(|| self.purchases as f64 / self.holds as f64)
    }

    /// From opening to the first sell-out.
    pub fn time_to_sell_out(&self) -> Option<Duration> {
        self.sold_out_at.map(|at| at - self.starts_at)
    }
}

/// The figures of one drop.
///
/// # Errors
/// `DropNotFound`, or database failure.
pub async fn stats(db: &impl crate::db::Conn, drop_id: i64) -> Result<DropStats> {
    stats_of(db, &[drop_id])
        .await?
        .pop()
        .ok_or(Error::DropNotFound)
}

/// The figures of the drops open now or closed within a day, newest first (at most `limit`):
/// what `/metrics` shows.
///
/// # Errors
/// Database failure.
pub async fn recent(db: &impl crate::db::Conn, limit: u64) -> Result<Vec<DropStats>> {
    let since = Utc::now() - Duration::days(1);
    let ids: Vec<i64> = drops::Entity::find()
        .select_only()
        .column(drops::Column::Id)
        .filter(
            drops::Column::EndsAt
                .is_null()
                .or(drops::Column::EndsAt.gt(since)),
        )
        .order_by_desc(drops::Column::Id)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?;
    stats_of(db, &ids).await
}

/// The figures of `drop_ids` (those that exist), in one snapshot, in the order given.
async fn stats_of(db: &impl crate::db::Conn, drop_ids: &[i64]) -> Result<Vec<DropStats>> {
    if drop_ids.is_empty() {
        return Ok(Vec::new());
    }
    let txn = crate::db::begin_snapshot(db).await?;
    let rows = drops::Entity::find()
        .filter(drops::Column::Id.is_in(drop_ids.iter().copied()))
        .all(&txn)
        .await?;
    let mut by_id: HashMap<i64, DropStats> = rows
        .into_iter()
        .map(|d| {
            let stats = DropStats {
                drop_id: d.id,
                reserve_attempts: d.reserve_attempts,
                starts_at: d.starts_at,
                sold_out_at: d.sold_out_at,
                ..DropStats::default()
            };
            (d.id, stats)
        })
        .collect();
    let ids: Vec<i64> = by_id.keys().copied().collect();
    add_holds_and_offers(&txn, &ids, &mut by_id).await?;
    add_draws(&txn, &ids, &mut by_id).await?;
    add_purchases(&txn, &ids, &mut by_id).await?;
    txn.commit().await?;
    Ok(drop_ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// Holds by how they ended, the waitlist's length and the offers made.
async fn add_holds_and_offers(
    db: &impl ConnectionTrait,
    ids: &[i64],
    by_id: &mut HashMap<i64, DropStats>,
) -> Result<()> {
    for (drop_id, status, n) in count_by::<reservations::Entity, ReservationStatus>(
        db,
        reservations::Column::DropId,
        reservations::Column::Status,
        ids,
    )
    .await?
    {
        if let Some(s) = by_id.get_mut(&drop_id) {
            s.holds += n;
            match status {
                ReservationStatus::Active => s.active_holds += n,
                ReservationStatus::Expired => s.expiries += n,
                ReservationStatus::Released => s.releases += n,
                ReservationStatus::Purchased => {}
            }
        }
    }
    for (drop_id, status, n) in count_by::<waitlist_entries::Entity, WaitStatus>(
        db,
        waitlist_entries::Column::DropId,
        waitlist_entries::Column::Status,
        ids,
    )
    .await?
    {
        if let Some(s) = by_id.get_mut(&drop_id) {
            match status {
                WaitStatus::Waiting => s.waitlist_length += n,
                WaitStatus::Offered => s.offers_made += n,
            }
        }
    }
    Ok(())
}

/// A draw's entries and winners.
async fn add_draws(
    db: &impl ConnectionTrait,
    ids: &[i64],
    by_id: &mut HashMap<i64, DropStats>,
) -> Result<()> {
    let won: Expr = CaseStatement::new()
        .case(draw_entries::Column::Won.eq(true), 1)
        .finally(0)
        .into();
    for (drop_id, entries, winners) in draw_entries::Entity::find()
        .select_only()
        .column(draw_entries::Column::DropId)
        .column_as(draw_entries::Column::Id.count(), "entries")
        .column_as(won.sum(), "winners")
        .filter(draw_entries::Column::DropId.is_in(ids.iter().copied()))
        .group_by(draw_entries::Column::DropId)
        .into_tuple::<(i64, i64, Option<i64>)>()
        .all(db)
        .await?
    {
        if let Some(s) = by_id.get_mut(&drop_id) {
            s.draw_entries = entries;
            s.draw_winners = winners.unwrap_or(0);
        }
    }
    Ok(())
}

/// Purchases, and those that bought a waitlist offer.
async fn add_purchases(
    db: &impl ConnectionTrait,
    ids: &[i64],
    by_id: &mut HashMap<i64, DropStats>,
) -> Result<()> {
    let offered = Query::select()
        .column(waitlist_entries::Column::ReservationId)
        .from(waitlist_entries::Entity)
        .and_where(Expr::col(waitlist_entries::Column::DropId).is_in(ids.iter().copied()))
        .and_where(Expr::col(waitlist_entries::Column::ReservationId).is_not_null())
        .to_owned();
    for (drop_id, offer, n) in purchases::Entity::find()
        .select_only()
        .column(purchases::Column::DropId)
        .column_as(
            purchases::Column::ReservationId.in_subquery(offered),
            "offer",
        )
        .column_as(purchases::Column::Id.count(), "n")
        .filter(purchases::Column::DropId.is_in(ids.iter().copied()))
        .group_by(purchases::Column::DropId)
        .group_by(Expr::col("offer"))
        .into_tuple::<(i64, bool, i64)>()
        .all(db)
        .await?
    {
        if let Some(s) = by_id.get_mut(&drop_id) {
            s.purchases += n;
            if offer {
                s.offers_taken += n;
            }
        }
    }
    Ok(())
}

/// Rows of `E` per drop and state: `(drop id, state, count)`.
async fn count_by<E, S>(
    db: &impl ConnectionTrait,
    drop: E::Column,
    state: E::Column,
    ids: &[i64],
) -> Result<Vec<(i64, S, i64)>>
where
    E: EntityTrait,
    S: sea_orm::TryGetable,
{
    Ok(E::find()
        .select_only()
        .column(drop)
        .column(state)
        .column_as(Expr::col(drop).count(), "n")
        .filter(drop.is_in(ids.iter().copied()))
        .group_by(drop)
        .group_by(state)
        .into_tuple::<(i64, S, i64)>()
        .all(db)
        .await?)
}

/// Adds reserve requests counted by an api instance to their drops' rows, in one statement;
/// ids of drops that do not exist are ignored.
///
/// # Errors
/// Database failure.
pub async fn add_reserve_attempts(db: &impl ConnectionTrait, counts: &[(i64, i64)]) -> Result<()> {
    if counts.is_empty() {
        return Ok(());
    }
    let mut added = CaseStatement::new();
    for (drop_id, n) in counts {
        added = added.case(drops::Column::Id.eq(*drop_id), *n);
    }
    let added: Expr = added.finally(0).into();
    drops::Entity::update_many()
        .col_expr(
            drops::Column::ReserveAttempts,
            Expr::col(drops::Column::ReserveAttempts).add(added),
        )
        .filter(drops::Column::Id.is_in(counts.iter().map(|(id, _)| *id)))
        .exec(db)
        .await?;
    Ok(())
}
