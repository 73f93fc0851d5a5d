//! `products` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "products")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub cms_entry_id: Option<String>,
    pub cms_version: Option<i64>,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub currency: String,
    pub image_url: Option<String>,
    pub in_stock: bool,
    pub stock_quantity: Option<i32>,
    pub visible: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
