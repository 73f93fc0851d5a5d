//! Applying a verified Contentful delivery: at most once per idempotency key, never going
//! back to an older `sys.version`, and recorded with its outcome.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
};

use super::{Change, ProductFields, products::write_product};
pub use crate::models::webhook_deliveries::DeliveryOutcome;
use crate::{
    Error,
    db::{begin_write, is_unique_violation},
    error::Result,
    models::{products, webhook_deliveries},
};

/// What a Contentful delivery asks for, once parsed at the edge.
#[derive(Clone, Debug)]
pub enum CmsAction {
    /// `Entry.publish` of a product: create or update it.
    Publish(Box<ProductFields>),
    /// `unpublish`, `archive` or `delete`: take it off the store.
    Hide,
    /// Acknowledged and deliberately not acted on (`auto_save`, other content types).
    Ignore(String),
    /// Can never be applied as sent (no name, say); acknowledged so Contentful stops retrying.
    Reject(String),
}

/// One verified webhook delivery.
#[derive(Clone, Debug)]
pub struct CmsDelivery {
    pub idempotency_key: Option<String>,
    pub topic: String,
    pub entry_id: Option<String>,
    pub version: Option<i64>,
    pub action: CmsAction,
}

/// What a delivery did; every one is recorded in `webhook_deliveries`.
#[derive(Clone, Debug)]
pub struct CmsOutcome {
    pub outcome: DeliveryOutcome,
    pub detail: Option<String>,
    pub change: Option<Change>,
}

impl CmsOutcome {
    /// A delivery that changed nothing, and why.
    fn unchanged(outcome: DeliveryOutcome, detail: &str) -> Self {
        Self {
            outcome,
            detail: Some(detail.to_owned()),
            change: None,
        }
    }

    fn duplicate() -> Self {
        Self::unchanged(DeliveryOutcome::Duplicate, "idempotency key already seen")
    }
}

/// Applies a Contentful delivery: at most once per idempotency key, never going back to an
/// older `sys.version`, and recording the delivery in the same transaction.
///
/// # Errors
/// Database failure (the caller answers 5xx so Contentful retries).
pub async fn apply_cms(
    db: &impl crate::db::Conn,
    delivery: CmsDelivery,
    now: DateTime<Utc>,
) -> Result<CmsOutcome> {
    let txn = begin_write(db).await?;
    if let Some(key) = &delivery.idempotency_key {
        let seen = webhook_deliveries::Entity::find()
            .filter(webhook_deliveries::Column::IdempotencyKey.eq(key.as_str()))
            .one(&txn)
            .await?;
        if seen.is_some() {
            let result = CmsOutcome::duplicate();
            // The key is unique, so the replay is recorded without it.
            record(&txn, &delivery, None, &result, now).await?;
            txn.commit().await?;
            return Ok(result);
        }
    }
    let result = decide(&txn, &delivery, now).await?;
    let recorded = record(
        &txn,
        &delivery,
        delivery.idempotency_key.as_deref(),
        &result,
        now,
    )
    .await;
    match recorded {
        Ok(()) => {
            txn.commit().await?;
            Ok(result)
        }
        Err(Error::Database(e)) if is_unique_violation(&e) => {
            // The same delivery raced us and won; it applied the change.
            txn.rollback().await?;
            Ok(CmsOutcome::duplicate())
        }
        Err(e) => Err(e),
    }
}

async fn decide(
    txn: &impl ConnectionTrait,
    delivery: &CmsDelivery,
    now: DateTime<Utc>,
) -> Result<CmsOutcome> {
    let (entry_id, fields) = match (&delivery.action, &delivery.entry_id) {
        (CmsAction::Ignore(reason), _) => {
            return Ok(CmsOutcome::unchanged(DeliveryOutcome::Ignored, reason));
        }
        (CmsAction::Reject(reason), _) => {
            return Ok(CmsOutcome::unchanged(DeliveryOutcome::Rejected, reason));
        }
        (_, None) => {
            return Ok(CmsOutcome::unchanged(
                DeliveryOutcome::Rejected,
                "the entry has no sys.id",
            ));
        }
        (CmsAction::Hide, Some(id)) => (id.as_str(), None),
        (CmsAction::Publish(fields), Some(id)) => (id.as_str(), Some(fields)),
    };
    let current = products::Entity::find()
        .filter(products::Column::CmsEntryId.eq(entry_id))
        .one(txn)
        .await?;
    match fields {
        None => hide(txn, current, delivery.version, now).await,
        Some(fields) => publish(txn, current, entry_id, fields, delivery.version, now).await,
    }
}

/// Takes the entry's product off the store, unless the delivery is older than what was
/// applied.
async fn hide(
    txn: &impl ConnectionTrait,
    current: Option<products::Model>,
    version: Option<i64>,
    now: DateTime<Utc>,
) -> Result<CmsOutcome> {
    let Some(current) = current else {
        return Ok(CmsOutcome::unchanged(
            DeliveryOutcome::Ignored,
            "no product for this entry",
        ));
    };
    let applied_version = current.cms_version;
    if let (Some(new), Some(old)) = (version, applied_version)
        && new < old
    {
        return Ok(CmsOutcome::unchanged(
            DeliveryOutcome::Stale,
            &format!("version {new} is older than the applied {old}"),
        ));
    }
    let mut active: products::ActiveModel = current.into();
    active.visible = Set(false);
    active.updated_at = Set(now);
    if let Some(version) = version {
        active.cms_version = Set(Some(Ord::max(version, applied_version.unwrap_or(0))));
    }
    let product = active.update(txn).await?;
    Ok(CmsOutcome {
        outcome: DeliveryOutcome::Hidden,
        detail: None,
        change: Some(Change {
            product,
            restock: None,
        }),
    })
}

/// Creates or updates the entry's product from a newer version than the one applied.
async fn publish(
    txn: &impl ConnectionTrait,
    current: Option<products::Model>,
    entry_id: &str,
    fields: &ProductFields,
    version: Option<i64>,
    now: DateTime<Utc>,
) -> Result<CmsOutcome> {
    let Some(version) = version else {
        return Ok(CmsOutcome::unchanged(
            DeliveryOutcome::Rejected,
            "the entry has no sys.version",
        ));
    };
    if let Some(old) = current.as_ref().and_then(|p| p.cms_version)
        && version <= old
    {
        return Ok(CmsOutcome::unchanged(
            DeliveryOutcome::Stale,
            &format!("version {version} is not newer than the applied {old}"),
        ));
    }
    let slug_owner = products::Entity::find()
        .filter(products::Column::Slug.eq(fields.slug.as_str()))
        .one(txn)
        .await?;
    if slug_owner.is_some_and(|p| p.cms_entry_id.as_deref() != Some(entry_id)) {
        return Ok(CmsOutcome::unchanged(
            DeliveryOutcome::Rejected,
            &format!("slug {:?} belongs to another product", fields.slug.as_str()),
        ));
    }
    let cms = Some((entry_id, version));
    let change = write_product(txn, current, fields.clone(), cms, now).await?;
    Ok(CmsOutcome {
        outcome: DeliveryOutcome::Applied,
        detail: None,
        change: Some(change),
    })
}

async fn record(
    txn: &impl ConnectionTrait,
    delivery: &CmsDelivery,
    key: Option<&str>,
    result: &CmsOutcome,
    now: DateTime<Utc>,
) -> Result<()> {
    let row = webhook_deliveries::ActiveModel {
        idempotency_key: Set(key.map(str::to_owned)),
        topic: Set(delivery.topic.chars().take(200).collect()),
        entry_id: Set(delivery.entry_id.clone()),
        entry_version: Set(delivery.version),
        outcome: Set(result.outcome),
        detail: Set(result.detail.clone()),
        received_at: Set(now),
        ..Default::default()
    };
    webhook_deliveries::Entity::insert(row)
        .exec_without_returning(txn)
        .await?;
    Ok(())
}
