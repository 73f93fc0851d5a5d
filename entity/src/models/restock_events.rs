//! `restock_events` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "restock_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub product_id: i64,
    pub cms_version: Option<i64>,
    pub created_at: DateTimeUtc,
    /// Waves of alerts opened so far (0 before the first fan-out).
    pub waves: i32,
    /// Alerts the opened waves allow in all; `None`: everyone at once (no tracked stock).
    pub alert_limit: Option<i32>,
    /// Alerts written for this restock.
    pub alerted: i32,
    /// When the next wave may open, while the product stays in stock.
    pub next_wave_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
