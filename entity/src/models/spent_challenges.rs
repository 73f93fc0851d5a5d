//! `spent_challenges` table: proof-of-work challenges already used, kept until they expire.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "spent_challenges")]
pub struct Model {
    /// The challenge's signature: unique to the challenge, and unforgeable.
    #[sea_orm(primary_key, auto_increment = false)]
    pub signature: String,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
