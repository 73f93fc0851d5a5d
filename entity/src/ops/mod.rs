//! What the operations console keeps in the database: paused queues, worker reports, the
//! audit trail, and the mail ledger seen as a queue. In the database rather than Redis so a
//! pause outlives a Redis restart and every backend answers alike.

pub mod mail_queue;
pub mod workers;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::{
    error::Result,
    models::{ops_audit, ops_pauses},
};

/// The queues that are paused now, by name.
///
/// # Errors
/// Database failure.
pub async fn paused(db: &impl ConnectionTrait) -> Result<Vec<ops_pauses::Model>> {
    Ok(ops_pauses::Entity::find().all(db).await?)
}

/// Pauses `queue` for every process. Pausing a paused queue keeps its first pause.
///
/// # Errors
/// Database failure.
pub async fn pause(
    db: &impl ConnectionTrait,
    queue: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let row = ops_pauses::ActiveModel {
        queue: Set(queue.to_owned()),
        paused_by: Set(by.to_owned()),
        paused_at: Set(now),
    };
    ops_pauses::Entity::insert(row)
        .on_conflict_do_nothing_on([ops_pauses::Column::Queue])
        .exec(db)
        .await?;
    Ok(())
}

/// Resumes `queue`; resuming a running queue changes nothing.
///
/// # Errors
/// Database failure.
pub async fn resume(db: &impl ConnectionTrait, queue: &str) -> Result<()> {
    ops_pauses::Entity::delete_by_id(queue.to_owned())
        .exec(db)
        .await?;
    Ok(())
}

/// One operator action, as the audit trail records it.
#[derive(Clone, Debug)]
pub struct Action<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub item: Option<&'a str>,
    pub affected: u64,
}

/// # Errors
/// Database failure.
pub async fn record(
    db: &impl ConnectionTrait,
    action: Action<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    let row = ops_audit::ActiveModel {
        at: Set(now),
        actor: Set(action.actor.to_owned()),
        action: Set(action.action.to_owned()),
        target: Set(action.target.to_owned()),
        item: Set(action.item.map(str::to_owned)),
        affected: Set(i64::try_from(action.affected).unwrap_or(i64::MAX)),
        ..Default::default()
    };
    ops_audit::Entity::insert(row).exec(db).await?;
    Ok(())
}

/// The newest actions first, `limit` of them, older than `before` (an id) when given.
///
/// # Errors
/// Database failure.
pub async fn audit(
    db: &impl ConnectionTrait,
    before: Option<i64>,
    limit: u64,
) -> Result<Vec<ops_audit::Model>> {
    let mut query = ops_audit::Entity::find()
        .order_by_desc(ops_audit::Column::Id)
        .limit(limit);
    if let Some(before) = before {
        query = query.filter(sea_orm::ColumnTrait::lt(&ops_audit::Column::Id, before));
    }
    Ok(query.all(db).await?)
}

/// Where an item of a queue is. Every queue, apalis's and the mail ledger, answers in these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ItemState {
    /// Due, waiting for a worker.
    Ready,
    /// Due later.
    Scheduled,
    /// Taken by a worker now.
    InFlight,
    /// Failed at least once and due again later.
    Retrying,
    /// Given up on: waits for an operator to retry or discard it.
    Failed,
    /// Finished.
    Done,
}

impl ItemState {
    pub const ALL: [Self; 6] = [
        Self::Ready,
        Self::Scheduled,
        Self::InFlight,
        Self::Retrying,
        Self::Failed,
        Self::Done,
    ];
}
