//! `draw_entries` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "draw_entries")]
pub struct Model {
    /// Published after the draw: the draw's order is computed from these ids and the seed.
    #[sea_orm(primary_key)]
    pub id: i64,
    pub drop_id: i64,
    pub user_id: i64,
    pub created_at: DateTimeUtc,
    /// Place in the draw's order (1 first), once drawn.
    pub position: Option<i32>,
    /// Got a hold in the draw (the first `units` of the order).
    pub won: bool,
    /// The canonical verified mailbox the entry was made with: one entry per mailbox and
    /// draw, however many accounts share it. `None` for an unverified entrant.
    pub mailbox: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
