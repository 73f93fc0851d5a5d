//! The email ledger: one row per message, and the queue the mail pump works from.
//!
//! A row is written in the same transaction as the fact that calls for it (a sign-up, a
//! restock fan-out), unique by its dedupe key, so a job that runs twice writes one row. The
//! pump *claims* due rows in batches by pushing `next_attempt_at` past a lease, so two
//! workers never both send a row; a row that is `sent` is never claimed again, and a row
//! whose claim ran out (its worker died) is due again.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
    sea_query::{CaseStatement, Expr, ExprTrait, LockBehavior, LockType},
};
use serde::{Deserialize, Serialize};

use crate::{
    Error,
    catalog::{
        SubscriptionStatus, is_available,
        waves::{self, Opened, Turn, Waves},
    },
    db::begin_write,
    error::Result,
    models::{email_messages, products, restock_events, subscriptions},
    tokens::{self, LinkKey},
};

pub use crate::models::email_messages::{MessageKind, MessageStatus};

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
    let addressee = Addressee {
        recipient: recipient.to_owned(),
        subscription_id: None,
    };
    let dedupe_key = format!("offer:{}", offer.reservation_id);
    let row = ledger_row(MessageKind::HoldOffer, addressee, dedupe_key, offer, now)?;
    Ok(email_messages::Entity::insert(row)
        .exec_with_returning(txn)
        .await?
        .id)
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
    let addressee = Addressee {
        recipient: recipient.to_owned(),
        subscription_id: None,
    };
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
    Ok(email_messages::Entity::insert(row)
        .exec_with_returning(txn)
        .await?
        .id)
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
                let addressee = Addressee {
                    recipient: recipient.clone(),
                    subscription_id: None,
                };
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
    Ok(email_messages::Entity::insert(row)
        .exec_with_returning(txn)
        .await?
        .id)
}

fn new_row(
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

/// A queued ledger row, not yet tried.
fn ledger_row(
    kind: MessageKind,
    to: Addressee,
    dedupe_key: String,
    payload: &impl Serialize,
    now: DateTime<Utc>,
) -> Result<email_messages::ActiveModel> {
    let payload = serde_json::to_value(payload).map_err(|e| Error::Invalid(e.to_string()))?;
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

/// One batch of a restock fan-out.
#[derive(Clone, Debug, Default)]
pub struct FanOut {
    /// Ledger rows written, in signup order.
    pub message_ids: Vec<i64>,
    /// More confirmed subscribers may be waiting, and the current wave allows them.
    pub more: bool,
    /// This batch spent its wave while subscribers may wait: the next wave may open then.
    pub next_wave_at: Option<DateTime<Utc>>,
}

/// Marks up to `batch` confirmed subscribers of a product notified, in signup order, and
/// returns them, with whether more may be waiting. A conditional update, so concurrent
/// fan-outs never claim anyone twice.
async fn claim_subscribers(
    txn: &impl ConnectionTrait,
    product_id: i64,
    batch: u64,
    now: DateTime<Utc>,
) -> Result<(Vec<subscriptions::Model>, bool)> {
    let candidates: Vec<i64> = subscriptions::Entity::find()
        .select_only()
        .column(subscriptions::Column::Id)
        .filter(subscriptions::Column::ProductId.eq(product_id))
        .filter(subscriptions::Column::Status.eq(SubscriptionStatus::Confirmed))
        .order_by_asc(subscriptions::Column::Id)
        .limit(batch)
        .into_tuple()
        .all(txn)
        .await?;
    if candidates.is_empty() {
        return Ok((Vec::new(), false));
    }
    let more = u64::try_from(candidates.len()).unwrap_or(u64::MAX) >= batch;
    let mut claimed = subscriptions::Entity::update_many()
        .col_expr(
            subscriptions::Column::Status,
            Expr::value(SubscriptionStatus::Notified),
        )
        .col_expr(subscriptions::Column::NotifiedAt, Expr::value(now))
        .filter(subscriptions::Column::Id.is_in(candidates))
        .filter(subscriptions::Column::Status.eq(SubscriptionStatus::Confirmed))
        .exec_with_returning(txn)
        .await?;
    claimed.sort_by_key(|s| s.id);
    Ok((claimed, more))
}

/// Writes one alert per claimed subscriber (none twice: the dedupe key is per subscription
/// and restock) and returns the ids of those still queued, in signup order.
async fn write_alerts(
    txn: &impl ConnectionTrait,
    restock: &restock_events::Model,
    wave: i32,
    product: &products::Model,
    claimed: &[subscriptions::Model],
    now: DateTime<Utc>,
) -> Result<Vec<i64>> {
    let payload = Payload {
        product_id: product.id,
        product_name: product.name.clone(),
        product_slug: product.slug.clone(),
        restock_event_id: Some(restock.id),
    };
    let keys: Vec<String> = claimed
        .iter()
        .map(|s| alert_dedupe_key(restock.id, s.id))
        .collect();
    let existing: Vec<String> = email_messages::Entity::find()
        .select_only()
        .column(email_messages::Column::DedupeKey)
        .filter(email_messages::Column::DedupeKey.is_in(keys.clone()))
        .into_tuple()
        .all(txn)
        .await?;
    let rows = claimed
        .iter()
        .zip(&keys)
        .filter(|(_, key)| !existing.contains(key))
        .map(|(sub, key)| {
            let mut row = new_row(MessageKind::RestockAlert, sub, key.clone(), &payload, now)?;
            row.wave = Set(Some(wave));
            Ok(row)
        })
        .collect::<Result<Vec<_>>>()?;
    if !rows.is_empty() {
        email_messages::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(email_messages::Entity::find()
        .select_only()
        .column(email_messages::Column::Id)
        .filter(email_messages::Column::DedupeKey.is_in(keys))
        .filter(email_messages::Column::Status.eq(MessageStatus::Queued))
        .order_by_asc(email_messages::Column::Id)
        .into_tuple()
        .all(txn)
        .await?)
}

/// Takes the next confirmed subscribers of the restocked product, in signup order — at most
/// `batch`, and no more than the restock's current wave allows ([`waves`]) — marks them
/// notified and writes one alert each, all in one transaction that holds the restock's row.
/// Subscribers are claimed by a conditional update, so concurrent fan-outs never alert
/// anyone twice.
///
/// Nothing happens when the product is no longer visible and in stock: its subscribers stay
/// confirmed for the next restock, and this restock's waves stop.
///
/// # Errors
/// Database failure.
pub async fn fan_out(
    db: &impl crate::db::Conn,
    restock_event_id: i64,
    batch: u64,
    pacing: Waves,
    now: DateTime<Utc>,
) -> Result<FanOut> {
    let txn = begin_write(db).await?;
    let mut find = restock_events::Entity::find_by_id(restock_event_id);
    if txn.get_database_backend() == DbBackend::Postgres {
        find = find.lock(LockType::Update);
    }
    let Some(restock) = find.one(&txn).await? else {
        return Ok(FanOut::default());
    };
    let product = products::Entity::find_by_id(restock.product_id)
        .one(&txn)
        .await?
        .filter(|p| p.visible && is_available(p));
    let Some(product) = product else {
        if restock.next_wave_at.is_some() {
            stop_waves(&txn, restock.id).await?;
            txn.commit().await?;
        }
        return Ok(FanOut::default());
    };
    let Turn::Alert {
        up_to,
        wave,
        opened,
    } = waves::turn(&restock, &product, pacing, now)
    else {
        return Ok(FanOut::default());
    };
    let take = up_to.map_or(batch, |left| {
        std::cmp::min(batch, u64::try_from(left).unwrap_or(0))
    });
    let (claimed, more) = claim_subscribers(&txn, product.id, take, now).await?;
    let message_ids = write_alerts(&txn, &restock, wave, &product, &claimed, now).await?;
    let alerted = i32::try_from(claimed.len()).unwrap_or(i32::MAX);
    save_turn(&txn, &restock, opened, alerted).await?;
    txn.commit().await?;
    let wave_spent = up_to.is_some_and(|left| alerted >= left);
    let next_wave_at = opened
        .map_or(restock.next_wave_at, |o| o.next_wave_at)
        .filter(|_| wave_spent);
    Ok(FanOut {
        message_ids,
        more: more && !wave_spent,
        next_wave_at,
    })
}

/// Records a fan-out's turn on its restock: the wave it opened, and the alerts it wrote.
async fn save_turn(
    txn: &impl ConnectionTrait,
    restock: &restock_events::Model,
    opened: Option<Opened>,
    alerted: i32,
) -> Result<()> {
    let mut update = restock_events::Entity::update_many()
        .col_expr(
            restock_events::Column::Alerted,
            Expr::value(restock.alerted.saturating_add(alerted)),
        )
        .filter(restock_events::Column::Id.eq(restock.id));
    if let Some(o) = opened {
        update = update
            .col_expr(restock_events::Column::Waves, Expr::value(o.waves))
            .col_expr(
                restock_events::Column::AlertLimit,
                Expr::value(o.alert_limit),
            )
            .col_expr(
                restock_events::Column::NextWaveAt,
                Expr::value(o.next_wave_at),
            );
    }
    update.exec(txn).await?;
    Ok(())
}

/// The product sold out (or was hidden): no further wave of this restock opens.
async fn stop_waves(txn: &impl ConnectionTrait, restock_event_id: i64) -> Result<()> {
    let never: Option<DateTime<Utc>> = None;
    restock_events::Entity::update_many()
        .col_expr(restock_events::Column::NextWaveAt, Expr::value(never))
        .filter(restock_events::Column::Id.eq(restock_event_id))
        .exec(txn)
        .await?;
    Ok(())
}

/// A claimed message, ready to render and send.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub id: i64,
    pub kind: MessageKind,
    pub recipient: String,
    pub payload: Content,
    /// This try's number, counting from 1.
    pub attempt: i32,
    /// Tokens for the links the email carries. Only their hashes are stored. The confirm
    /// token is minted afresh as the email is written (the newest confirmation's link is the
    /// one that works); the unsubscribe token is derived from the subscription and the
    /// [`LinkKey`], the same in every email, so each email's link works until it is used.
    /// The confirm token is set for confirmation emails only; offers, which belong to no
    /// subscription, carry neither.
    pub confirm_token: Option<String>,
    pub unsubscribe_token: Option<String>,
}

/// Claims up to `limit` queued rows that are due — never tried, or whose backoff or previous
/// claim ran out — oldest first, holding each for `lease`, and mints the link tokens their
/// emails carry. Three statements in one transaction, whatever `limit` is: the rows are read
/// `FOR UPDATE SKIP LOCKED` on Postgres (workers claiming at once take disjoint rows; SQLite
/// has one writer), marked claimed, and their subscriptions given fresh token hashes. A row
/// whose subscriber left is settled as skipped and not returned; a row whose previous claim
/// ended with no outcome recorded counts a lapsed claim (it may have been sent already).
///
/// Report each returned row with [`mark_sent`] (or [`mark_sent_many`]), [`retry_at`] or
/// [`mark_failed`]; a row not reported is claimed again when its lease runs out.
///
/// # Errors
/// Database failure.
pub async fn claim_due(
    db: &impl crate::db::Conn,
    limit: u64,
    lease: Duration,
    links: &LinkKey,
    now: DateTime<Utc>,
) -> Result<Vec<Outgoing>> {
    let txn = begin_write(db).await?;
    let rows = due_rows(&txn, limit, now).await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    take_leases(&txn, &rows, now + lease, now).await?;
    let subscription_ids: Vec<i64> = rows.iter().filter_map(|r| r.subscription_id).collect();
    let subscriptions: HashMap<i64, subscriptions::Model> = subscriptions::Entity::find()
        .filter(subscriptions::Column::Id.is_in(subscription_ids))
        .all(&txn)
        .await?
        .into_iter()
        .map(|s| (s.id, s))
        .collect();
    let mut ready = Vec::with_capacity(rows.len());
    let mut skipped = Vec::new();
    for row in rows {
        let subscription = row.subscription_id.and_then(|id| subscriptions.get(&id));
        match (
            sendable(&row, subscription),
            Content::read(row.kind, row.payload.clone()),
        ) {
            (Some(pending_confirmation), Ok(payload)) => {
                ready.push((row, payload, pending_confirmation));
            }
            (None, _) => skipped.push(row.id),
            (Some(_), Err(e)) => {
                let reason = format!("unreadable payload: {e}");
                settle(&txn, &[row.id], Settled::failed(&reason), now).await?;
            }
        }
    }
    let skip = "skipped: the subscription is gone, unsubscribed or already confirmed";
    settle(&txn, &skipped, Settled::failed(skip), now).await?;
    let needs_tokens: HashMap<i64, (bool, DateTime<Utc>)> = ready
        .iter()
        .filter_map(|(row, _, pending)| {
            let sub = row.subscription_id.and_then(|id| subscriptions.get(&id))?;
            Some((sub.id, (*pending, sub.created_at)))
        })
        .collect();
    let minted = mint_tokens(&txn, &needs_tokens, links).await?;
    txn.commit().await?;
    Ok(ready
        .into_iter()
        .map(|(row, payload, _)| {
            let (confirm_token, unsubscribe_token) = row
                .subscription_id
                .and_then(|id| minted.get(&id).cloned())
                .map_or((None, None), |(confirm, unsubscribe)| {
                    (confirm, Some(unsubscribe))
                });
            Outgoing {
                id: row.id,
                kind: row.kind,
                recipient: row.recipient,
                payload,
                attempt: row.attempts + 1,
                confirm_token,
                unsubscribe_token,
            }
        })
        .collect())
}

/// Up to `limit` queued rows due at `now`, oldest first; on Postgres locked, skipping rows
/// another worker is claiming.
async fn due_rows(
    txn: &DatabaseTransaction,
    limit: u64,
    now: DateTime<Utc>,
) -> Result<Vec<email_messages::Model>> {
    let mut due = email_messages::Entity::find()
        // Written out, not bound: only a literal lets every plan (a generic one too) use the
        // partial index of queued rows. It is `MessageStatus::Queued`'s value.
        .filter(Expr::cust("email_messages.status = 'queued'"))
        .filter(
            Condition::any()
                .add(email_messages::Column::NextAttemptAt.is_null())
                .add(email_messages::Column::NextAttemptAt.lte(now)),
        )
        .order_by_asc(email_messages::Column::Id)
        .limit(limit);
    if txn.get_database_backend() == DbBackend::Postgres {
        due = due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    Ok(due.all(txn).await?)
}

/// Whether a claimed row still has a reader: `Some(true)` for a confirmation its subscription
/// still awaits, `Some(false)` for an alert to a subscriber who has not left or an offer,
/// `None` to skip.
fn sendable(
    row: &email_messages::Model,
    subscription: Option<&subscriptions::Model>,
) -> Option<bool> {
    match (row.kind, subscription) {
        (MessageKind::SubscriptionConfirmation, Some(sub))
            if sub.status == SubscriptionStatus::Pending =>
        {
            Some(true)
        }
        (MessageKind::RestockAlert, Some(sub))
            if sub.status != SubscriptionStatus::Unsubscribed =>
        {
            Some(false)
        }
        (
            MessageKind::HoldOffer | MessageKind::DrawWaitlisted | MessageKind::AccountVerification,
            _,
        ) => Some(false),
        _ => None,
    }
}

/// Counts an attempt on each row and holds it until `until`. A row tried before whose last
/// claim left neither an error nor a verdict lapsed (its worker died mid-send): counted. The
/// previous error is cleared, so the next lapse of this row is counted too.
async fn take_leases(
    txn: &impl ConnectionTrait,
    rows: &[email_messages::Model],
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<()> {
    use email_messages::Column;
    let lapsed = Condition::all()
        .add(Column::Attempts.gt(0))
        .add(Column::LastError.is_null());
    email_messages::Entity::update_many()
        .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
        .col_expr(
            Column::LapsedClaims,
            Expr::col(Column::LapsedClaims).add(Expr::case(lapsed, 1).finally(0)),
        )
        .col_expr(Column::LastError, Expr::value(None::<String>))
        .col_expr(Column::NextAttemptAt, Expr::value(until))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.is_in(rows.iter().map(|r| r.id)))
        .exec(txn)
        .await?;
    Ok(())
}

/// Link tokens for the emails about to go out, one pair per subscription whatever the number
/// of its emails in the batch: the subscription's unsubscribe token always (derived, the
/// same every time; its hash is written in case it is the first), a new confirmation token
/// while the subscription awaits one (only the newest confirmation's link works). One
/// statement.
async fn mint_tokens(
    txn: &impl ConnectionTrait,
    subscriptions: &HashMap<i64, (bool, DateTime<Utc>)>,
    links: &LinkKey,
) -> Result<HashMap<i64, (Option<String>, String)>> {
    use subscriptions::Column;
    if subscriptions.is_empty() {
        return Ok(HashMap::new());
    }
    let minted: HashMap<i64, (Option<String>, String)> = subscriptions
        .iter()
        .map(|(id, (pending, created_at))| {
            let unsubscribe = links.unsubscribe_token(*id, *created_at);
            (*id, (pending.then(tokens::generate), unsubscribe))
        })
        .collect();
    let mut unsubscribe = CaseStatement::new();
    let mut confirm: Option<CaseStatement> = None;
    for (id, (confirm_token, unsubscribe_token)) in &minted {
        let this = Column::Id.eq(*id);
        unsubscribe = unsubscribe.case(this.clone(), tokens::hash(unsubscribe_token));
        if let Some(token) = confirm_token {
            let case = confirm.take().unwrap_or_default();
            confirm = Some(case.case(this, tokens::hash(token)));
        }
    }
    let mut update = subscriptions::Entity::update_many()
        .col_expr(
            Column::UnsubscribeTokenHash,
            unsubscribe
                .finally(Expr::col(Column::UnsubscribeTokenHash))
                .into(),
        )
        .filter(Column::Id.is_in(minted.keys().copied()));
    if let Some(confirm) = confirm {
        update = update.col_expr(
            Column::ConfirmTokenHash,
            confirm.finally(Expr::col(Column::ConfirmTokenHash)).into(),
        );
    }
    update.exec(txn).await?;
    Ok(minted)
}

/// Claims that ended with no outcome recorded, over the rows the ledger keeps: each may have
/// sent its message once more than the ledger says.
///
/// # Errors
/// Database failure.
pub async fn lapsed_claims(db: &impl ConnectionTrait) -> Result<i64> {
    let total: Option<Option<i64>> = email_messages::Entity::find()
        .select_only()
        .column_as(
            Expr::col(email_messages::Column::LapsedClaims).sum(),
            "total",
        )
        .filter(email_messages::Column::LapsedClaims.gt(0))
        .into_tuple()
        .one(db)
        .await?;
    Ok(total.flatten().unwrap_or(0))
}

/// What an attempt's outcome writes to a queued row.
struct Settled<'a> {
    status: MessageStatus,
    error: Option<&'a str>,
    next_attempt_at: Option<DateTime<Utc>>,
    sent_at: Option<DateTime<Utc>>,
}

impl<'a> Settled<'a> {
    fn failed(error: &'a str) -> Self {
        Self {
            status: MessageStatus::Failed,
            error: Some(error),
            next_attempt_at: None,
            sent_at: None,
        }
    }
}

/// Writes an attempt's outcome to the rows that are still queued.
async fn settle(
    db: &impl ConnectionTrait,
    message_ids: &[i64],
    outcome: Settled<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    if message_ids.is_empty() {
        return Ok(());
    }
    email_messages::Entity::update_many()
        .col_expr(email_messages::Column::Status, Expr::value(outcome.status))
        .col_expr(
            email_messages::Column::LastError,
            Expr::value(outcome.error.map(truncate)),
        )
        .col_expr(
            email_messages::Column::NextAttemptAt,
            Expr::value(outcome.next_attempt_at),
        )
        .col_expr(email_messages::Column::SentAt, Expr::value(outcome.sent_at))
        .col_expr(email_messages::Column::UpdatedAt, Expr::value(now))
        .filter(email_messages::Column::Id.is_in(message_ids.iter().copied()))
        .filter(email_messages::Column::Status.eq(MessageStatus::Queued))
        .exec(db)
        .await?;
    Ok(())
}

/// # Errors
/// Database failure.
pub async fn mark_sent(
    db: &impl ConnectionTrait,
    message_id: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    mark_sent_many(db, &[message_id], now).await
}

/// Records that the SMTP server accepted these messages: one statement for the lot.
///
/// # Errors
/// Database failure.
pub async fn mark_sent_many(
    db: &impl ConnectionTrait,
    message_ids: &[i64],
    now: DateTime<Utc>,
) -> Result<()> {
    let sent = Settled {
        status: MessageStatus::Sent,
        error: None,
        next_attempt_at: None,
        sent_at: Some(now),
    };
    settle(db, message_ids, sent, now).await
}

/// Records a transient failure; the row may be tried again from `at`.
///
/// # Errors
/// Database failure.
pub async fn retry_at(
    db: &impl ConnectionTrait,
    message_id: i64,
    error: &str,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<()> {
    let deferred = Settled {
        status: MessageStatus::Queued,
        error: Some(error),
        next_attempt_at: Some(at),
        sent_at: None,
    };
    settle(db, &[message_id], deferred, now).await
}

/// Gives up on a row (a permanent rejection, or too many attempts): the dead letter.
///
/// # Errors
/// Database failure.
pub async fn mark_failed(
    db: &impl ConnectionTrait,
    message_id: i64,
    error: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    settle(db, &[message_id], Settled::failed(error), now).await
}

fn truncate(error: &str) -> String {
    error.chars().take(2000).collect()
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
