//! `ops_audit` table: every operator action on the job system.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ops_audit")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub at: DateTimeUtc,
    /// The admin's email.
    pub actor: String,
    /// `pause`, `resume`, `retry`, `discard`, `run_now`, `retry_all`, `discard_all`, `quiet`.
    pub action: String,
    /// The queue (or worker) acted on.
    pub target: String,
    /// The item, for an action on one.
    pub item: Option<String>,
    /// How many items the action changed.
    pub affected: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
