//! Worker processes report in: each writes its row every heartbeat, and reads back whether an
//! operator quieted it.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    sea_query::OnConflict,
};

use crate::{error::Result, models::ops_workers};

/// What a worker says of itself at each heartbeat.
#[derive(Clone, Debug)]
pub struct Report {
    pub name: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub in_flight: serde_json::Value,
    pub smtp_busy: i32,
    pub rss_bytes: i64,
    pub throughput: serde_json::Value,
    /// It is shutting down cleanly: shown as stopped, not gone.
    pub stopped: bool,
}

/// Writes `report` as the worker's row and answers whether the worker is quieted.
///
/// # Errors
/// Database failure.
pub async fn heartbeat(
    db: &impl ConnectionTrait,
    report: Report,
    now: DateTime<Utc>,
) -> Result<bool> {
    let name = report.name.clone();
    let row = ops_workers::ActiveModel {
        name: Set(report.name),
        host: Set(report.host),
        pid: Set(report.pid),
        version: Set(report.version),
        started_at: Set(report.started_at),
        last_heartbeat: Set(now),
        in_flight: Set(report.in_flight),
        smtp_busy: Set(report.smtp_busy),
        rss_bytes: Set(report.rss_bytes),
        throughput: Set(report.throughput),
        quiet: Set(false),
        stopped: Set(report.stopped),
    };
    use ops_workers::Column as C;
    ops_workers::Entity::insert(row)
        .on_conflict(
            OnConflict::column(C::Name)
                .update_columns([
                    C::LastHeartbeat,
                    C::InFlight,
                    C::SmtpBusy,
                    C::RssBytes,
                    C::Throughput,
                    C::Stopped,
                ])
                .to_owned(),
        )
        .exec(db)
        .await?;
    Ok(ops_workers::Entity::find_by_id(name)
        .one(db)
        .await?
        .is_some_and(|w| w.quiet))
}

/// The workers heard from since `since`, newest first by start.
///
/// # Errors
/// Database failure.
pub async fn recent(
    db: &impl ConnectionTrait,
    since: DateTime<Utc>,
) -> Result<Vec<ops_workers::Model>> {
    Ok(ops_workers::Entity::find()
        .filter(ops_workers::Column::LastHeartbeat.gte(since))
        .order_by_desc(ops_workers::Column::StartedAt)
        .order_by_asc(ops_workers::Column::Name)
        .all(db)
        .await?)
}

/// Quiets the worker `name`: it takes no new work from its next heartbeat on. `false` when
/// no such worker ever reported.
///
/// # Errors
/// Database failure.
pub async fn quiet(db: &impl ConnectionTrait, name: &str) -> Result<bool> {
    let updated = ops_workers::Entity::update_many()
        .col_expr(
            ops_workers::Column::Quiet,
            sea_orm::sea_query::Expr::value(true),
        )
        .filter(ops_workers::Column::Name.eq(name))
        .exec(db)
        .await?;
    Ok(updated.rows_affected > 0)
}

/// Forgets workers not heard from since `before`.
///
/// # Errors
/// Database failure.
pub async fn forget_before(db: &impl ConnectionTrait, before: DateTime<Utc>) -> Result<u64> {
    let deleted = ops_workers::Entity::delete_many()
        .filter(ops_workers::Column::LastHeartbeat.lt(before))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected)
}
