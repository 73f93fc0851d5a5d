//! "Notify me" subscriptions: double opt-in, one-click unsubscribe, and which restocks still
//! owe their subscribers an alert.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait},
};

use super::{CONFIRMATION_RESEND_AFTER, is_available, quota};
use crate::{
    EmailAddress, Error,
    db::{begin_write, is_unique_violation},
    error::Result,
    mail,
    models::{
        products, restock_events,
        subscriptions::{self, SubscriptionStatus},
    },
    tokens,
};

/// A sign-up: the subscription, and the confirmation email to send (if one is due).
#[derive(Clone, Debug)]
pub struct Subscribed {
    pub subscription: subscriptions::Model,
    pub confirmation_message_id: Option<i64>,
}

/// "Notify me" for `email` on a product that is out of stock. Idempotent: one row per product
/// and address, and at most one confirmation email per [`CONFIRMATION_RESEND_AFTER`], and
/// only while the address's mailbox is under `emails_per_day` confirmations (see
/// [`quota`]). Whether an email went out is not the caller's to tell anyone: the answer is
/// the same either way.
///
/// # Errors
/// `ProductNotFound`, `ProductInStock`, or database failure.
pub async fn subscribe(
    db: &impl crate::db::Conn,
    product_id: i64,
    email: &EmailAddress,
    emails_per_day: u32,
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
    let due = existing
        .as_ref()
        .is_none_or(|sub| confirmation_due(sub, now));
    let send = due && quota::take(&txn, email, emails_per_day, now).await?;
    let subscription = match existing {
        Some(sub) => rearm(&txn, sub, now, send).await?,
        None => match insert_pending(&txn, product_id, email, now, send).await {
            Ok(created) => created,
            Err(Error::Database(e)) if is_unique_violation(&e) => {
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
            Err(e) => return Err(e),
        },
    };
    let confirmation_message_id = if send {
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

async fn insert_pending(
    txn: &impl ConnectionTrait,
    product_id: i64,
    email: &EmailAddress,
    now: DateTime<Utc>,
    send: bool,
) -> Result<subscriptions::Model> {
    let row = subscriptions::ActiveModel {
        product_id: Set(product_id),
        email: Set(email.as_str().to_owned()),
        status: Set(SubscriptionStatus::Pending),
        // Placeholders: the send job sets the real tokens as it writes the email.
        confirm_token_hash: Set(tokens::hash(&tokens::generate())),
        unsubscribe_token_hash: Set(tokens::hash(&tokens::generate())),
        // Unset when the mailbox's quota held the email back: the next sign-up may send it.
        confirmation_sent_at: Set(send.then_some(now)),
        created_at: Set(now),
        ..Default::default()
    };
    Ok(subscriptions::Entity::insert(row)
        .exec_with_returning(txn)
        .await?)
}

/// Whether signing up again owes a confirmation email: a pending or unsubscribed address
/// not mailed in the last [`CONFIRMATION_RESEND_AFTER`].
fn confirmation_due(sub: &subscriptions::Model, now: DateTime<Utc>) -> bool {
    let recently_mailed = sub
        .confirmation_sent_at
        .is_some_and(|at| now - at < CONFIRMATION_RESEND_AFTER);
    matches!(
        sub.status,
        SubscriptionStatus::Pending | SubscriptionStatus::Unsubscribed
    ) && !recently_mailed
}

/// Signing up again: a pending or unsubscribed address starts over (`send`: with a
/// confirmation email now), an alerted one is armed for the next restock.
async fn rearm(
    txn: &impl ConnectionTrait,
    sub: subscriptions::Model,
    now: DateTime<Utc>,
    send: bool,
) -> Result<subscriptions::Model> {
    match sub.status {
        SubscriptionStatus::Pending | SubscriptionStatus::Unsubscribed => {
            let mut active: subscriptions::ActiveModel = sub.into();
            active.status = Set(SubscriptionStatus::Pending);
            active.confirmed_at = Set(None);
            active.notified_at = Set(None);
            if send {
                active.confirmation_sent_at = Set(Some(now));
            }
            Ok(active.update(txn).await?)
        }
        SubscriptionStatus::Notified => {
            // The address was confirmed before: re-arm for the next restock.
            let mut active: subscriptions::ActiveModel = sub.into();
            active.status = Set(SubscriptionStatus::Confirmed);
            active.notified_at = Set(None);
            Ok(active.update(txn).await?)
        }
        SubscriptionStatus::Confirmed => Ok(sub),
    }
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
    db: &impl crate::db::Conn,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Confirmed> {
    let txn = begin_write(db).await?;
    let sub = subscriptions::Entity::find()
        .filter(subscriptions::Column::ConfirmTokenHash.eq(tokens::hash(token)))
        .one(&txn)
        .await?
        .ok_or(Error::InvalidToken)?;
    let subscription = match sub.status {
        SubscriptionStatus::Pending => {
            let mut active: subscriptions::ActiveModel = sub.into();
            active.status = Set(SubscriptionStatus::Confirmed);
            active.confirmed_at = Set(Some(now));
            active.update(&txn).await?
        }
        SubscriptionStatus::Unsubscribed => return Err(Error::InvalidToken),
        SubscriptionStatus::Confirmed | SubscriptionStatus::Notified => sub,
    };
    let product = products::Entity::find_by_id(subscription.product_id)
        .one(&txn)
        .await?
        .ok_or(Error::ProductNotFound)?;
    let pending_restock_id = if product.visible
        && is_available(&product)
        && subscription.status == SubscriptionStatus::Confirmed
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
pub async fn unsubscribe(db: &impl crate::db::Conn, token: &str) -> Result<subscriptions::Model> {
    let txn = begin_write(db).await?;
    let sub = subscriptions::Entity::find()
        .filter(subscriptions::Column::UnsubscribeTokenHash.eq(tokens::hash(token)))
        .one(&txn)
        .await?
        .ok_or(Error::InvalidToken)?;
    let sub = if sub.status == SubscriptionStatus::Unsubscribed {
        sub
    } else {
        let mut active: subscriptions::ActiveModel = sub.into();
        active.status = Set(SubscriptionStatus::Unsubscribed);
        active.update(&txn).await?
    };
    txn.commit().await?;
    Ok(sub)
}

/// Whether a confirmation token is valid for a subscription it can still confirm, without
/// using it (for the page a GET shows).
///
/// # Errors
/// Database failure.
pub async fn confirm_token_exists(db: &impl ConnectionTrait, token: &str) -> Result<bool> {
    Ok(subscriptions::Entity::find()
        .filter(subscriptions::Column::ConfirmTokenHash.eq(tokens::hash(token)))
        .filter(subscriptions::Column::Status.ne(SubscriptionStatus::Unsubscribed))
        .one(db)
        .await?
        .is_some())
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
        .filter(subscriptions::Column::Status.eq(SubscriptionStatus::Confirmed))
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
