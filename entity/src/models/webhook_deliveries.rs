//! `webhook_deliveries` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub idempotency_key: Option<String>,
    pub topic: String,
    pub entry_id: Option<String>,
    pub entry_version: Option<i64>,
    pub outcome: DeliveryOutcome,
    pub detail: Option<String>,
    pub received_at: DateTimeUtc,
}

/// What a verified webhook delivery did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text", rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// A product was created or updated.
    Applied,
    /// A product was taken off the store.
    Hidden,
    /// An older `sys.version` than the one applied.
    Stale,
    /// An idempotency key seen before.
    Duplicate,
    /// A topic or content type we do not act on.
    Ignored,
    /// Can never be applied as sent.
    Rejected,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
