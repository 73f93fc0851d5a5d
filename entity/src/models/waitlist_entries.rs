//! `waitlist_entries` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "waitlist_entries")]
pub struct Model {
    /// Grows with every join: the line's order.
    #[sea_orm(primary_key)]
    pub id: i64,
    pub drop_id: i64,
    pub user_id: i64,
    pub status: WaitStatus,
    /// The personal hold a returned unit became, once offered.
    pub reservation_id: Option<i64>,
    pub created_at: DateTimeUtc,
    pub offered_at: Option<DateTimeUtc>,
}

/// `waiting` in line, until a returned unit is `offered` to the buyer as a personal hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
pub enum WaitStatus {
    Waiting,
    Offered,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
