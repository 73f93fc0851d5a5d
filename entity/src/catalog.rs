//! Catalog products, restock events and "notify me" subscriptions.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::{error::Result, models::products};

/// Every product shown to visitors, by name.
///
/// # Errors
/// Database failure.
pub async fn visible_products(db: &impl ConnectionTrait) -> Result<Vec<products::Model>> {
    Ok(products::Entity::find()
        .filter(products::Column::Visible.eq(true))
        .order_by_asc(products::Column::Name)
        .order_by_asc(products::Column::Id)
        .limit(1000)
        .all(db)
        .await?)
}
