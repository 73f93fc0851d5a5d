//! `reservations` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "reservations")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub drop_id: i64,
    pub user_id: i64,
    pub status: ReservationStatus,
    pub expires_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub ended_at: Option<DateTimeUtc>,
    /// The drop's price when the hold was taken: what a purchase of it costs.
    pub price_cents: i64,
    pub currency: String,
}

/// Where a hold is in its life: `active` until bought, let go, or past its `expires_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
pub enum ReservationStatus {
    Active,
    Purchased,
    Expired,
    Released,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
