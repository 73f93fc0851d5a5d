//! `drops` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "drops")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub currency: String,
    pub total_stock: i32,
    pub available_stock: i32,
    pub stock_version: i64,
    pub starts_at: DateTimeUtc,
    pub ends_at: Option<DateTimeUtc>,
    pub max_per_user: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub mode: DropMode,
    /// A draw's entries are taken until then; its winners are drawn at that instant.
    pub entries_close_at: Option<DateTimeUtc>,
    /// SHA-256 (hex) of the draw's seed, published from the drop's creation.
    pub seed_hash: Option<String>,
    /// The draw's seed (hex); secret until the draw, then published.
    pub seed: Option<String>,
    pub drawn_at: Option<DateTimeUtc>,
    /// How long this drop's winners' holds and waitlist offers last; the store's hold TTL
    /// when `None`.
    pub offer_ttl_secs: Option<i32>,
    /// When the drop first had no unit left.
    pub sold_out_at: Option<DateTimeUtc>,
    /// Reserve requests for this drop, counted by the api instances.
    pub reserve_attempts: i64,
    /// Only accounts with a verified email may reserve, join the waitlist or enter the draw.
    pub require_verified: bool,
    /// Reserving takes a solved proof-of-work challenge (ALTCHA).
    pub require_challenge: bool,
}

/// How a drop's units find buyers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
pub enum DropMode {
    /// First come, first served, from `starts_at`.
    FirstCome,
    /// Entries until `entries_close_at`, then a draw; the units go to its winners.
    Draw,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
