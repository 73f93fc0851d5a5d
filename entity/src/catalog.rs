//! Catalog products, restock events and "notify me" subscriptions.
//!
//! A product is *available* when `in_stock` is set and its quantity (when tracked) is above
//! zero. A restock is the move from unavailable to available; it is recorded as a
//! `restock_events` row in the same transaction as the change that caused it, whether that
//! change came from the Contentful webhook or the admin API.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait},
};

use crate::{
    EmailAddress, Error,
    db::{begin_write, is_unique_violation},
    error::Result,
    mail,
    models::{products, restock_events, subscriptions, webhook_deliveries},
    tokens,
};

pub mod subscription_status {
    /// Signed up, confirmation email sent, link not yet followed.
    pub const PENDING: &str = "pending";
    /// Will be alerted at the next restock.
    pub const CONFIRMED: &str = "confirmed";
    /// Alerted; signing up again re-arms the subscription.
    pub const NOTIFIED: &str = "notified";
    pub const UNSUBSCRIBED: &str = "unsubscribed";
}

/// How long a pending subscription waits before a new sign-up sends another confirmation.
pub const CONFIRMATION_RESEND_AFTER: Duration = Duration::minutes(10);

/// A product's URL name: lower-case letters, digits and single dashes, with at least one
/// letter so it can never be mistaken for an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    /// # Errors
    /// A message saying what is wrong with the slug.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let slug = raw.trim().to_lowercase();
        if slug.is_empty() || slug.len() > 100 {
            return Err("slug must be 1 to 100 characters".into());
        }
        let valid = slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !slug.starts_with('-')
            && !slug.ends_with('-')
            && !slug.contains("--")
            && slug.chars().any(|c| c.is_ascii_lowercase());
        if !valid {
            return Err(
                "slug may contain only a-z, 0-9 and single dashes, and needs a letter".into(),
            );
        }
        Ok(Self(slug))
    }

    /// Derives a slug from a product name ("Wildflower Honey 500 g" → `wildflower-honey-500-g`).
    ///
    /// # Errors
    /// The name has no letters to make a slug from.
    pub fn from_name(name: &str) -> Result<Self, String> {
        let mut slug = String::new();
        for c in name.trim().to_lowercase().chars() {
            if c.is_ascii_alphanumeric() {
                slug.push(c);
            } else if !slug.is_empty() && !slug.ends_with('-') {
                slug.push('-');
            }
        }
        let slug: String = slug.trim_end_matches('-').chars().take(100).collect();
        Self::parse(slug.trim_end_matches('-'))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A non-blank product name of at most 200 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    /// # Errors
    /// The name is blank or too long.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("name must not be blank".into());
        }
        if name.chars().count() > 200 {
            return Err("name must be at most 200 characters".into());
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Everything that describes a product, parsed. `None` in `currency` or `image_url` keeps
/// the current value (`USD` and no image for a new product); `Some(None)` removes the image.
#[derive(Clone, Debug)]
pub struct ProductFields {
    pub slug: Slug,
    pub name: ProductName,
    pub description: String,
    pub price_cents: i64,
    pub currency: Option<String>,
    pub image_url: Option<Option<String>>,
    pub in_stock: bool,
    pub stock_quantity: Option<i32>,
}

/// A partial edit from the admin API; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct ProductPatch {
    pub slug: Option<Slug>,
    pub name: Option<ProductName>,
    pub description: Option<String>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
    pub image_url: Option<Option<String>>,
    pub in_stock: Option<bool>,
    pub stock_quantity: Option<Option<i32>>,
    pub visible: Option<bool>,
}

/// A product after a write, with the restock it caused (if it came back in stock).
#[derive(Clone, Debug)]
pub struct Change {
    pub product: products::Model,
    pub restock: Option<restock_events::Model>,
}

/// A product as shown to visitors.
#[derive(Clone, Debug)]
pub struct ProductView {
    pub product: products::Model,
    /// Confirmed subscribers not yet alerted.
    pub waiting_count: i64,
}

pub fn is_available(product: &products::Model) -> bool {
    product.in_stock && product.stock_quantity != Some(0)
}

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
        .filter(subscriptions::Column::Status.eq(subscription_status::CONFIRMED))
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
    use sea_orm::PaginatorTrait;
    let count = subscriptions::Entity::find()
        .filter(subscriptions::Column::ProductId.eq(product_id))
        .filter(subscriptions::Column::Status.eq(subscription_status::CONFIRMED))
        .count(db)
        .await?;
    Ok(i64::try_from(count).unwrap_or(i64::MAX))
}

/// Creates a product by hand (stores without Contentful).
///
/// # Errors
/// `SlugTaken`, or database failure.
pub async fn create(
    db: &DatabaseConnection,
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
    db: &DatabaseConnection,
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
async fn write_product(
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

pub mod outcome {
    pub const APPLIED: &str = "applied";
    pub const HIDDEN: &str = "hidden";
    pub const STALE: &str = "stale";
    pub const DUPLICATE: &str = "duplicate";
    pub const IGNORED: &str = "ignored";
    pub const REJECTED: &str = "rejected";
}

/// What a delivery did; every one is recorded in `webhook_deliveries`.
#[derive(Clone, Debug)]
pub struct CmsOutcome {
    /// One of [`outcome`].
    pub outcome: &'static str,
    pub detail: Option<String>,
    pub change: Option<Change>,
}

/// Applies a Contentful delivery: at most once per idempotency key, never going back to an
/// older `sys.version`, and recording the delivery in the same transaction.
///
/// # Errors
/// Database failure (the caller answers 5xx so Contentful retries).
pub async fn apply_cms(
    db: &DatabaseConnection,
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
            let result = CmsOutcome {
                outcome: outcome::DUPLICATE,
                detail: Some("idempotency key already seen".into()),
                change: None,
            };
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
            Ok(CmsOutcome {
                outcome: outcome::DUPLICATE,
                detail: Some("idempotency key already seen".into()),
                change: None,
            })
        }
        Err(e) => Err(e),
    }
}

async fn decide(
    txn: &impl ConnectionTrait,
    delivery: &CmsDelivery,
    now: DateTime<Utc>,
) -> Result<CmsOutcome> {
    let plain = |outcome: &'static str, detail: &str| CmsOutcome {
        outcome,
        detail: Some(detail.to_owned()),
        change: None,
    };
    let (entry_id, fields) = match (&delivery.action, &delivery.entry_id) {
        (CmsAction::Ignore(reason), _) => return Ok(plain(outcome::IGNORED, reason)),
        (CmsAction::Reject(reason), _) => return Ok(plain(outcome::REJECTED, reason)),
        (_, None) => return Ok(plain(outcome::REJECTED, "the entry has no sys.id")),
        (CmsAction::Hide, Some(id)) => (id.as_str(), None),
        (CmsAction::Publish(fields), Some(id)) => (id.as_str(), Some(fields)),
    };
    let current = products::Entity::find()
        .filter(products::Column::CmsEntryId.eq(entry_id))
        .one(txn)
        .await?;
    let applied_version = current.as_ref().and_then(|p| p.cms_version);
    match fields {
        None => {
            let Some(current) = current else {
                return Ok(plain(outcome::IGNORED, "no product for this entry"));
            };
            if let (Some(new), Some(old)) = (delivery.version, applied_version)
                && new < old
            {
                return Ok(plain(
                    outcome::STALE,
                    &format!("version {new} is older than the applied {old}"),
                ));
            }
            let mut active: products::ActiveModel = current.into();
            active.visible = Set(false);
            active.updated_at = Set(now);
            if let Some(version) = delivery.version {
                active.cms_version = Set(Some(Ord::max(version, applied_version.unwrap_or(0))));
            }
            let product = active.update(txn).await?;
            Ok(CmsOutcome {
                outcome: outcome::HIDDEN,
                detail: None,
                change: Some(Change {
                    product,
                    restock: None,
                }),
            })
        }
        Some(fields) => {
            let Some(version) = delivery.version else {
                return Ok(plain(outcome::REJECTED, "the entry has no sys.version"));
            };
            if let Some(old) = applied_version
                && version <= old
            {
                return Ok(plain(
                    outcome::STALE,
                    &format!("version {version} is not newer than the applied {old}"),
                ));
            }
            let slug_owner = products::Entity::find()
                .filter(products::Column::Slug.eq(fields.slug.as_str()))
                .one(txn)
                .await?;
            if slug_owner.is_some_and(|p| p.cms_entry_id.as_deref() != Some(entry_id)) {
                return Ok(plain(
                    outcome::REJECTED,
                    &format!("slug {:?} belongs to another product", fields.slug.as_str()),
                ));
            }
            let change = write_product(
                txn,
                current,
                (**fields).clone(),
                Some((entry_id, version)),
                now,
            )
            .await?;
            Ok(CmsOutcome {
                outcome: outcome::APPLIED,
                detail: None,
                change: Some(change),
            })
        }
    }
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
        outcome: Set(result.outcome.to_owned()),
        detail: Set(result.detail.clone()),
        received_at: Set(now),
        ..Default::default()
    };
    webhook_deliveries::Entity::insert(row)
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// A sign-up: the subscription, and the confirmation email to send (if one is due).
#[derive(Clone, Debug)]
pub struct Subscribed {
    pub subscription: subscriptions::Model,
    pub confirmation_message_id: Option<i64>,
}

/// "Notify me" for `email` on a product that is out of stock. Idempotent: one row per product
/// and address, and at most one confirmation email per [`CONFIRMATION_RESEND_AFTER`].
///
/// # Errors
/// `ProductNotFound`, `ProductInStock`, or database failure.
pub async fn subscribe(
    db: &DatabaseConnection,
    product_id: i64,
    email: &EmailAddress,
    now: DateTime<Utc>,
) -> Result<Subscribed> {
    let txn = begin_write(db).await?;
    let product = products::Entity::find_by_id(product_id)
        .filter(products::Column::Visible.eq(true))
        .one(&txn)
        .await?
        .ok_or(Error::ProductNotFound)?;
    if is_available(&product) {
        return Err(Error::ProductInStock);
    }
    let existing = subscriptions::Entity::find()
        .filter(subscriptions::Column::ProductId.eq(product_id))
        .filter(subscriptions::Column::Email.eq(email.as_str()))
        .one(&txn)
        .await?;
    let (subscription, send_confirmation) = match existing {
        None => {
            let row = subscriptions::ActiveModel {
                product_id: Set(product_id),
                email: Set(email.as_str().to_owned()),
                status: Set(subscription_status::PENDING.into()),
                // Placeholders: the send job sets the real tokens as it writes the email.
                confirm_token_hash: Set(tokens::hash(&tokens::generate())),
                unsubscribe_token_hash: Set(tokens::hash(&tokens::generate())),
                confirmation_sent_at: Set(Some(now)),
                created_at: Set(now),
                ..Default::default()
            };
            match subscriptions::Entity::insert(row)
                .exec_with_returning(&txn)
                .await
            {
                Ok(created) => (created, true),
                Err(e) if is_unique_violation(&e) => {
                    // A concurrent sign-up for the same address won; that one sends the mail.
                    txn.rollback().await?;
                    let subscription = subscriptions::Entity::find()
                        .filter(subscriptions::Column::ProductId.eq(product_id))
                        .filter(subscriptions::Column::Email.eq(email.as_str()))
                        .one(db)
                        .await?
                        .ok_or(Error::ProductNotFound)?;
                    return Ok(Subscribed {
                        subscription,
                        confirmation_message_id: None,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(sub) => {
            let recently_mailed = sub
                .confirmation_sent_at
                .is_some_and(|at| now - at < CONFIRMATION_RESEND_AFTER);
            match sub.status.as_str() {
                subscription_status::PENDING | subscription_status::UNSUBSCRIBED => {
                    let mut active: subscriptions::ActiveModel = sub.into();
                    active.status = Set(subscription_status::PENDING.into());
                    active.confirmed_at = Set(None);
                    active.notified_at = Set(None);
                    if !recently_mailed {
                        active.confirmation_sent_at = Set(Some(now));
                    }
                    (active.update(&txn).await?, !recently_mailed)
                }
                subscription_status::NOTIFIED => {
                    // The address was confirmed before: re-arm for the next restock.
                    let mut active: subscriptions::ActiveModel = sub.into();
                    active.status = Set(subscription_status::CONFIRMED.into());
                    active.notified_at = Set(None);
                    (active.update(&txn).await?, false)
                }
                _ => (sub, false),
            }
        }
    };
    let confirmation_message_id = if send_confirmation {
        Some(mail::queue_confirmation(&txn, &subscription, &product, now).await?)
    } else {
        None
    };
    txn.commit().await?;
    Ok(Subscribed {
        subscription,
        confirmation_message_id,
    })
}

/// A followed confirmation link.
#[derive(Clone, Debug)]
pub struct Confirmed {
    pub subscription: subscriptions::Model,
    pub product: products::Model,
    /// The product's latest restock when it is already back in stock: the subscriber should
    /// hear about it now rather than at the next restock.
    pub pending_restock_id: Option<i64>,
}

/// Confirms the subscription whose confirmation token this is. Following the link again is
/// harmless.
///
/// # Errors
/// `InvalidToken` (unknown, or unsubscribed since), or database failure.
pub async fn confirm(
    db: &DatabaseConnection,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Confirmed> {
    let txn = begin_write(db).await?;
    let sub = subscriptions::Entity::find()
        .filter(subscriptions::Column::ConfirmTokenHash.eq(tokens::hash(token)))
        .one(&txn)
        .await?
        .ok_or(Error::InvalidToken)?;
    let subscription = match sub.status.as_str() {
        subscription_status::PENDING => {
            let mut active: subscriptions::ActiveModel = sub.into();
            active.status = Set(subscription_status::CONFIRMED.into());
            active.confirmed_at = Set(Some(now));
            active.update(&txn).await?
        }
        subscription_status::UNSUBSCRIBED => return Err(Error::InvalidToken),
        _ => sub,
    };
    let product = products::Entity::find_by_id(subscription.product_id)
        .one(&txn)
        .await?
        .ok_or(Error::ProductNotFound)?;
    let pending_restock_id = if product.visible
        && is_available(&product)
        && subscription.status == subscription_status::CONFIRMED
    {
        latest_restock(&txn, product.id).await?
    } else {
        None
    };
    txn.commit().await?;
    Ok(Confirmed {
        subscription,
        product,
        pending_restock_id,
    })
}

/// One-click unsubscribe (RFC 8058). Repeating it is harmless.
///
/// # Errors
/// `InvalidToken`, or database failure.
pub async fn unsubscribe(db: &DatabaseConnection, token: &str) -> Result<subscriptions::Model> {
    let txn = begin_write(db).await?;
    let sub = subscriptions::Entity::find()
        .filter(subscriptions::Column::UnsubscribeTokenHash.eq(tokens::hash(token)))
        .one(&txn)
        .await?
        .ok_or(Error::InvalidToken)?;
    let sub = if sub.status == subscription_status::UNSUBSCRIBED {
        sub
    } else {
        let mut active: subscriptions::ActiveModel = sub.into();
        active.status = Set(subscription_status::UNSUBSCRIBED.into());
        active.update(&txn).await?
    };
    txn.commit().await?;
    Ok(sub)
}

/// Whether an unsubscribe token is valid, without using it (for the page a GET shows).
///
/// # Errors
/// Database failure.
pub async fn unsubscribe_token_exists(db: &impl ConnectionTrait, token: &str) -> Result<bool> {
    Ok(subscriptions::Entity::find()
        .filter(subscriptions::Column::UnsubscribeTokenHash.eq(tokens::hash(token)))
        .one(db)
        .await?
        .is_some())
}

async fn latest_restock(db: &impl ConnectionTrait, product_id: i64) -> Result<Option<i64>> {
    Ok(restock_events::Entity::find()
        .filter(restock_events::Column::ProductId.eq(product_id))
        .order_by_desc(restock_events::Column::Id)
        .one(db)
        .await?
        .map(|e| e.id))
}

/// Restock events whose product is in stock and still has confirmed subscribers nobody has
/// alerted: the fan-out the reconciler re-runs in case its job was lost.
///
/// # Errors
/// Database failure.
pub async fn unfinished_restocks(db: &impl ConnectionTrait, limit: u64) -> Result<Vec<i64>> {
    let product_ids: Vec<i64> = subscriptions::Entity::find()
        .select_only()
        .column(subscriptions::Column::ProductId)
        .filter(subscriptions::Column::Status.eq(subscription_status::CONFIRMED))
        .distinct()
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?;
    if product_ids.is_empty() {
        return Ok(Vec::new());
    }
    let products = products::Entity::find()
        .filter(products::Column::Id.is_in(product_ids))
        .filter(products::Column::Visible.eq(true))
        .filter(products::Column::InStock.eq(true))
        .filter(
            Expr::col(products::Column::StockQuantity)
                .is_null()
                .or(Expr::col(products::Column::StockQuantity).gt(0)),
        )
        .all(db)
        .await?;
    let mut events = Vec::new();
    for product in products {
        if let Some(id) = latest_restock(db, product.id).await? {
            events.push(id);
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::{ProductName, Slug};

    #[test]
    fn slugs_are_normalised_and_never_look_like_ids() {
        assert_eq!(
            Slug::parse(" Acacia-Honey ").map(|s| s.as_str().to_owned()),
            Ok("acacia-honey".into())
        );
        for bad in ["", "123", "a--b", "-a", "a-", "a b", "ä"] {
            assert!(Slug::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_slug_can_be_derived_from_a_name() {
        assert_eq!(
            Slug::from_name("Wildflower Honey, 500 g!").map(|s| s.as_str().to_owned()),
            Ok("wildflower-honey-500-g".into())
        );
        assert!(Slug::from_name("¡¡¡").is_err());
    }

    #[test]
    fn names_must_not_be_blank() {
        assert!(ProductName::parse("   ").is_err());
        assert_eq!(
            ProductName::parse(" Heather honey ").map(|n| n.as_str().to_owned()),
            Ok("Heather honey".into())
        );
    }
}
