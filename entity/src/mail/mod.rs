//! The email ledger: one row per message, and the queue the mail pump works from.
//!
//! A row is written in the same transaction as the fact that calls for it (a sign-up, a
//! restock fan-out), unique by its dedupe key, so a job that runs twice writes one row. The
//! pump *claims* due rows in batches by pushing `next_attempt_at` past a lease, so two
//! workers never both send a row; a row that is `sent` is never claimed again, and a row
//! whose claim ran out (its worker died) is due again.

//!
//! This file writes rows (the payloads and one writer per kind of message); [`claims`] is the
//! pump's side: claiming due rows, minting their links, settling them. The restock fan-out
//! that writes alerts in waves lives with the catalog (`crate::catalog::fanout`).

mod claims;

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};
use serde::{Deserialize, Serialize};

use crate::{
    Error,
    error::Result,
    models::{email_messages, products, subscriptions},
};

pub use crate::models::email_messages::{MessageKind, MessageStatus};
pub use claims::{
    Outgoing, claim_due, lapsed_claims, mark_failed, mark_sent, mark_sent_many, retry_at,
};

/// What a confirmation or restock alert is about, as it was when the row was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub product_id: i64,
    pub product_name: String,
    pub product_slug: String,
    #[serde(default)]
    pub restock_event_id: Option<i64>,
}

/// What a waitlist offer says: which drop's unit is held for the buyer, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferPayload {
    pub drop_id: i64,
    pub drop_name: String,
    pub reservation_id: i64,
    pub expires_at: DateTime<Utc>,
    /// The hold is a draw's win, not a returned unit.
    #[serde(default)]
    pub won_draw: bool,
}

/// What the email to a draw's entrant who did not win says: their place on the waitlist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitlistedPayload {
    pub drop_id: i64,
    pub drop_name: String,
    pub position: u64,
}

/// What an account's verification email is about: the account (its address is the
/// recipient). The link's token is minted as the email is written, never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationPayload {
    pub user_id: i64,
}

/// A claimed message's content, by its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// "Verify your email": a new account's link.
    Verification(VerificationPayload),
    /// A confirmation or a restock alert.
    Product(Payload),
    /// A waitlist offer, or a draw's winning hold.
    Offer(OfferPayload),
    /// A draw not won: the entrant's place on the waitlist.
    Waitlisted(WaitlistedPayload),
}

impl Content {
    fn read(kind: MessageKind, json: serde_json::Value) -> serde_json::Result<Self> {
        Ok(match kind {
            MessageKind::HoldOffer => Self::Offer(serde_json::from_value(json)?),
            MessageKind::DrawWaitlisted => Self::Waitlisted(serde_json::from_value(json)?),
            MessageKind::AccountVerification => Self::Verification(serde_json::from_value(json)?),
            MessageKind::SubscriptionConfirmation | MessageKind::RestockAlert => {
                Self::Product(serde_json::from_value(json)?)
            }
        })
    }
}

/// Writes the email telling a buyer that a unit of a drop is held for them, in the
/// transaction that made the offer.
///
/// # Errors
/// Database failure.
pub async fn queue_offer(
    txn: &impl ConnectionTrait,
    recipient: &str,
    offer: &OfferPayload,
    now: DateTime<Utc>,
) -> Result<i64> {
    let addressee = Addressee::person(recipient.to_owned());
    let dedupe_key = format!("offer:{}", offer.reservation_id);
    let row = ledger_row(MessageKind::HoldOffer, addressee, dedupe_key, offer, now)?;
    write_one(txn, row).await
}

/// Writes an account's verification email, in the transaction that created the account (or
/// asked again).
///
/// # Errors
/// Database failure.
pub async fn queue_verification(
    txn: &impl ConnectionTrait,
    user_id: i64,
    recipient: &str,
    now: DateTime<Utc>,
) -> Result<i64> {
    let addressee = Addressee::person(recipient.to_owned());
    let dedupe_key = format!(
        "verify:{user_id}:{}",
        now.timestamp_nanos_opt().unwrap_or_default()
    );
    let payload = VerificationPayload { user_id };
    let row = ledger_row(
        MessageKind::AccountVerification,
        addressee,
        dedupe_key,
        &payload,
        now,
    )?;
    write_one(txn, row).await
}

/// Writes the emails telling a draw's entrants who did not win their place on the waitlist,
/// in the transaction of the draw, as `(recipient, content)`.
///
/// # Errors
/// Database failure.
pub async fn queue_waitlisted(
    txn: &impl ConnectionTrait,
    letters: Vec<(String, WaitlistedPayload)>,
    now: DateTime<Utc>,
) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(letters.len());
    for chunk in letters.chunks(500) {
        let rows = chunk
            .iter()
            .map(|(recipient, content)| {
                let addressee = Addressee::person(recipient.clone());
                let dedupe_key = format!("draw:{}:{recipient}", content.drop_id);
                ledger_row(
                    MessageKind::DrawWaitlisted,
                    addressee,
                    dedupe_key,
                    content,
                    now,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let written = email_messages::Entity::insert_many(rows)
            .exec_with_returning_keys(txn)
            .await?;
        ids.extend(written);
    }
    Ok(ids)
}

/// Writes the confirmation email of a sign-up.
///
/// # Errors
/// Database failure.
pub async fn queue_confirmation(
    txn: &impl ConnectionTrait,
    subscription: &subscriptions::Model,
    product: &products::Model,
    now: DateTime<Utc>,
) -> Result<i64> {
    let payload = Payload {
        product_id: product.id,
        product_name: product.name.clone(),
        product_slug: product.slug.clone(),
        restock_event_id: None,
    };
    let row = new_row(
        MessageKind::SubscriptionConfirmation,
        subscription,
        format!(
            "confirm:{}:{}",
            subscription.id,
            now.timestamp_nanos_opt().unwrap_or_default()
        ),
        &payload,
        now,
    )?;
    write_one(txn, row).await
}

pub(crate) fn new_row(
    kind: MessageKind,
    subscription: &subscriptions::Model,
    dedupe_key: String,
    payload: &Payload,
    now: DateTime<Utc>,
) -> Result<email_messages::ActiveModel> {
    let addressee = Addressee {
        recipient: subscription.email.clone(),
        subscription_id: Some(subscription.id),
    };
    ledger_row(kind, addressee, dedupe_key, payload, now)
}

/// Who a ledger row goes to: a subscriber, or (an offer) a buyer's account address.
struct Addressee {
    recipient: String,
    subscription_id: Option<i64>,
}

impl Addressee {
    /// An address that is nobody's subscription: an account's, or a draw entrant's.
    fn person(recipient: String) -> Self {
        Self {
            recipient,
            subscription_id: None,
        }
    }
}

/// Inserts one ledger row; its id.
async fn write_one(txn: &impl ConnectionTrait, row: email_messages::ActiveModel) -> Result<i64> {
    Ok(email_messages::Entity::insert(row)
        .exec_with_returning(txn)
        .await?
        .id)
}

/// A queued ledger row, not yet tried.
fn ledger_row(
    kind: MessageKind,
    to: Addressee,
    dedupe_key: String,
    payload: &impl Serialize,
    now: DateTime<Utc>,
) -> Result<email_messages::ActiveModel> {
    let payload = serde_json::to_value(payload)
        .map_err(|e| Error::Internal(format!("cannot serialise the email payload: {e}")))?;
    Ok(email_messages::ActiveModel {
        kind: Set(kind),
        recipient: Set(to.recipient),
        subscription_id: Set(to.subscription_id),
        dedupe_key: Set(dedupe_key),
        payload: Set(payload),
        status: Set(MessageStatus::Queued),
        attempts: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    })
}

pub fn alert_dedupe_key(restock_event_id: i64, subscription_id: i64) -> String {
    format!("restock:{restock_event_id}:subscription:{subscription_id}")
}

/// # Errors
/// Database failure.
pub async fn find(
    db: &impl ConnectionTrait,
    message_id: i64,
) -> Result<Option<email_messages::Model>> {
    Ok(email_messages::Entity::find_by_id(message_id)
        .one(db)
        .await?)
}

#[cfg(test)]
mod tests {
    use sea_orm::ActiveEnum;

    use super::MessageStatus;

    /// The claim writes `'queued'` out (for the partial index of queued rows): it must stay
    /// the enum's value.
    #[test]
    fn the_status_written_out_is_the_enums() {
        assert_eq!(MessageStatus::Queued.to_value(), "queued");
    }
}
