//! Listing and editing catalog products. A restock is recorded in the same transaction as the
//! change that caused it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};

use super::{Change, ProductFields, ProductName, ProductPatch, ProductView, Slug, is_available};
use crate::{
    Error,
    db::{begin_write, is_unique_violation},
    error::Result,
    models::{
        products, restock_events,
        subscriptions::{self, SubscriptionStatus},
    },
};

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

/// Visible products with their waiting counts, optionally only those (not) in stock.
///
/// # Errors
/// Database failure.
pub async fn list(db: &impl ConnectionTrait, in_stock: Option<bool>) -> Result<Vec<ProductView>> {
    let products: Vec<_> = visible_products(db)
        .await?
        .into_iter()
        .filter(|p| in_stock.is_none_or(|wanted| is_available(p) == wanted))
        .collect();
    let counts: HashMap<i64, i64> = subscriptions::Entity::find()
        .select_only()
        .column(subscriptions::Column::ProductId)
        .column_as(subscriptions::Column::Id.count(), "waiting")
        .filter(subscriptions::Column::Status.eq(SubscriptionStatus::Confirmed))
        .group_by(subscriptions::Column::ProductId)
        .into_tuple::<(i64, i64)>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    Ok(products
        .into_iter()
        .map(|product| ProductView {
            waiting_count: counts.get(&product.id).copied().unwrap_or(0),
            product,
        })
        .collect())
}

/// A visible product by numeric id or by slug.
///
/// # Errors
/// `ProductNotFound`, or database failure.
pub async fn find_visible(db: &impl ConnectionTrait, id_or_slug: &str) -> Result<ProductView> {
    let query = products::Entity::find().filter(products::Column::Visible.eq(true));
    let query = match id_or_slug.parse::<i64>() {
        Ok(id) => query.filter(products::Column::Id.eq(id)),
        Err(_) => query.filter(products::Column::Slug.eq(id_or_slug.trim().to_lowercase())),
    };
    let product = query.one(db).await?.ok_or(Error::ProductNotFound)?;
    let waiting_count = waiting_count(db, product.id).await?;
    Ok(ProductView {
        product,
        waiting_count,
    })
}

/// # Errors
/// Database failure.
pub async fn waiting_count(db: &impl ConnectionTrait, product_id: i64) -> Result<i64> {
    let count = subscriptions::Entity::find()
        .filter(subscriptions::Column::ProductId.eq(product_id))
        .filter(subscriptions::Column::Status.eq(SubscriptionStatus::Confirmed))
        .count(db)
        .await?;
    Ok(i64::try_from(count).unwrap_or(i64::MAX))
}

/// Creates a product by hand (stores without Contentful).
///
/// # Errors
/// `SlugTaken`, or database failure.
pub async fn create(
    db: &impl crate::db::Conn,
    fields: ProductFields,
    now: DateTime<Utc>,
) -> Result<Change> {
    let txn = begin_write(db).await?;
    let change = write_product(&txn, None, fields, None, now).await?;
    txn.commit().await?;
    Ok(change)
}

/// Edits a product by hand. Bringing it back in stock is a restock like any other.
///
/// # Errors
/// `ProductNotFound`, `SlugTaken`, or database failure.
pub async fn update(
    db: &impl crate::db::Conn,
    id: i64,
    patch: ProductPatch,
    now: DateTime<Utc>,
) -> Result<Change> {
    let txn = begin_write(db).await?;
    let current = products::Entity::find_by_id(id)
        .one(&txn)
        .await?
        .ok_or(Error::ProductNotFound)?;
    let fields = ProductFields {
        slug: match patch.slug {
            Some(slug) => slug,
            None => Slug(current.slug.clone()),
        },
        name: patch
            .name
            .unwrap_or_else(|| ProductName(current.name.clone())),
        description: patch
            .description
            .unwrap_or_else(|| current.description.clone()),
        price_cents: patch.price_cents.unwrap_or(current.price_cents),
        currency: patch.currency.or_else(|| Some(current.currency.clone())),
        image_url: patch.image_url,
        in_stock: patch.in_stock.unwrap_or(current.in_stock),
        stock_quantity: patch.stock_quantity.unwrap_or(current.stock_quantity),
    };
    let visible = patch.visible.unwrap_or(current.visible);
    let mut change = write_product(&txn, Some(current), fields, None, now).await?;
    if change.product.visible != visible {
        let mut active: products::ActiveModel = change.product.into();
        active.visible = Set(visible);
        change.product = active.update(&txn).await?;
    }
    txn.commit().await?;
    Ok(change)
}

/// Inserts or updates a product inside `txn`, recording a restock event when it came back.
pub(super) async fn write_product(
    txn: &impl ConnectionTrait,
    current: Option<products::Model>,
    fields: ProductFields,
    cms: Option<(&str, i64)>,
    now: DateTime<Utc>,
) -> Result<Change> {
    let was_available = current.as_ref().map(is_available);
    let mut active: products::ActiveModel = match &current {
        Some(model) => model.clone().into(),
        None => products::ActiveModel {
            currency: Set("USD".into()),
            image_url: Set(None),
            created_at: Set(now),
            ..Default::default()
        },
    };
    active.slug = Set(fields.slug.0);
    active.name = Set(fields.name.0);
    active.description = Set(fields.description);
    active.price_cents = Set(fields.price_cents);
    if let Some(currency) = fields.currency {
        active.currency = Set(currency);
    }
    if let Some(image) = fields.image_url {
        active.image_url = Set(image);
    }
    active.in_stock = Set(fields.in_stock);
    active.stock_quantity = Set(fields.stock_quantity);
    active.visible = Set(true);
    active.updated_at = Set(now);
    if let Some((entry_id, version)) = cms {
        active.cms_entry_id = Set(Some(entry_id.to_owned()));
        active.cms_version = Set(Some(version));
    }
    let saved = if current.is_some() {
        active.update(txn).await
    } else {
        products::Entity::insert(active)
            .exec_with_returning(txn)
            .await
    };
    let product = match saved {
        Ok(product) => product,
        Err(e) if is_unique_violation(&e) => return Err(Error::SlugTaken),
        Err(e) => return Err(e.into()),
    };
    let restock = if was_available == Some(false) && is_available(&product) {
        let event = restock_events::ActiveModel {
            product_id: Set(product.id),
            cms_version: Set(product.cms_version),
            created_at: Set(now),
            ..Default::default()
        };
        Some(
            restock_events::Entity::insert(event)
                .exec_with_returning(txn)
                .await?,
        )
    } else {
        None
    };
    Ok(Change { product, restock })
}
