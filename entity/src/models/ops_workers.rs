//! `ops_workers` table: each worker process's last report, and whether it was quieted.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "ops_workers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub started_at: DateTimeUtc,
    pub last_heartbeat: DateTimeUtc,
    /// Items held now, by queue: `{"ExpireReservation": 2, "mail": 16}`.
    pub in_flight: Json,
    pub smtp_busy: i32,
    pub rss_bytes: i64,
    /// Items finished per queue in each of the last 15 minutes, newest last:
    /// `{"ExpireReservation": {"done": [..15], "failed": [..15]}}`.
    pub throughput: Json,
    /// An operator asked it to take no new work.
    pub quiet: bool,
    /// It said goodbye (a clean shutdown); a stale row that did not is shown as gone.
    pub stopped: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
