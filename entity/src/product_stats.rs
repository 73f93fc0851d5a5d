//! Demand figures of one catalog product: its "notify me" subscribers by state and the
//! restock alerts of the send ledger by outcome, in total and per restock.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait, Query},
};

use crate::{
    Error,
    catalog::SubscriptionStatus,
    error::Result,
    mail::{self, MessageKind, MessageStatus},
    models::{email_messages, products, restock_events, subscriptions},
};

/// How many of the latest restocks get their own alert counts.
pub const RECENT_RESTOCKS: u64 = 10;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriberCounts {
    pub pending: i64,
    pub confirmed: i64,
    pub notified: i64,
    pub unsubscribed: i64,
}

impl SubscriberCounts {
    pub fn total(&self) -> i64 {
        self.pending + self.confirmed + self.notified + self.unsubscribed
    }
}

/// Ledger rows by state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub queued: i64,
    pub sent: i64,
    pub failed: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestockAlerts {
    pub restock_event_id: i64,
    pub at: DateTime<Utc>,
    pub alerts: DeliveryCounts,
    /// The restock's alerts by wave, first wave first.
    pub waves: Vec<WaveAlerts>,
    /// When the next wave may open, while the product stays in stock.
    pub next_wave_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaveAlerts {
    pub wave: i32,
    pub alerts: DeliveryCounts,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductStats {
    pub product_id: i64,
    pub subscribers: SubscriberCounts,
    /// Subscriptions whose confirmation link was followed (whatever they are now).
    pub ever_confirmed: i64,
    pub confirmations: DeliveryCounts,
    pub alerts: DeliveryCounts,
    /// Every restock the product has had.
    pub restock_count: i64,
    /// The latest [`RECENT_RESTOCKS`] restocks, newest first.
    pub recent_restocks: Vec<RestockAlerts>,
}

impl ProductStats {
    /// Share of sign-ups that followed their confirmation link; `None` before the first.
    pub fn confirmation_rate(&self) -> Option<f64> {
        let total = self.subscribers.total();
        (total > 0).then(|| self.ever_confirmed as f64 / total as f64)
    }
}

/// The figures of a product, hidden or not.
///
/// # Errors
/// `ProductNotFound`, or database failure.
pub async fn product_stats(db: &impl crate::db::Conn, product_id: i64) -> Result<ProductStats> {
    // One snapshot for every count: read apart, a fan-out and its sends committing in between
    // showed alerts `sent` for subscribers still counted `confirmed`. (SQLite transactions
    // are snapshots already.)
    let txn = crate::db::begin_snapshot(db).await?;
    let stats = stats_in(&txn, product_id).await?;
    txn.commit().await?;
    Ok(stats)
}

async fn stats_in(db: &impl ConnectionTrait, product_id: i64) -> Result<ProductStats> {
    products::Entity::find_by_id(product_id)
        .one(db)
        .await?
        .ok_or(Error::ProductNotFound)?;

    let subscribers = subscriber_counts(db, product_id).await?;
    let ever_confirmed = count(
        subscriptions::Entity::find()
            .filter(subscriptions::Column::ProductId.eq(product_id))
            .filter(subscriptions::Column::ConfirmedAt.is_not_null())
            .count(db)
            .await?,
    );

    let by_kind = ledger_by_kind_and_status(db, product_id).await?;
    let deliveries = |wanted: MessageKind| {
        let mut counts = DeliveryCounts::default();
        for ((kind, status), n) in &by_kind {
            if *kind == wanted {
                add(&mut counts, *status, *n);
            }
        }
        counts
    };

    let restock_count = count(
        restock_events::Entity::find()
            .filter(restock_events::Column::ProductId.eq(product_id))
            .count(db)
            .await?,
    );
    let recent_restocks = recent_restocks(db, product_id).await?;

    Ok(ProductStats {
        product_id,
        subscribers,
        ever_confirmed,
        confirmations: deliveries(MessageKind::SubscriptionConfirmation),
        alerts: deliveries(MessageKind::RestockAlert),
        restock_count,
        recent_restocks,
    })
}

/// A product's subscribers by state.
async fn subscriber_counts(db: &impl ConnectionTrait, product_id: i64) -> Result<SubscriberCounts> {
    let mut subscribers = SubscriberCounts::default();
    for (status, count) in subscriptions::Entity::find()
        .select_only()
        .column(subscriptions::Column::Status)
        .column_as(subscriptions::Column::Id.count(), "n")
        .filter(subscriptions::Column::ProductId.eq(product_id))
        .group_by(subscriptions::Column::Status)
        .into_tuple::<(SubscriptionStatus, i64)>()
        .all(db)
        .await?
    {
        match status {
            SubscriptionStatus::Pending => subscribers.pending = count,
            SubscriptionStatus::Confirmed => subscribers.confirmed = count,
            SubscriptionStatus::Notified => subscribers.notified = count,
            SubscriptionStatus::Unsubscribed => subscribers.unsubscribed = count,
        }
    }
    Ok(subscribers)
}

/// The latest restocks' alerts, in total and per wave, newest first.
async fn recent_restocks(db: &impl ConnectionTrait, product_id: i64) -> Result<Vec<RestockAlerts>> {
    let restocks = restock_events::Entity::find()
        .filter(restock_events::Column::ProductId.eq(product_id))
        .order_by_desc(restock_events::Column::Id)
        .limit(RECENT_RESTOCKS)
        .all(db)
        .await?;
    let mut recent_restocks = Vec::with_capacity(restocks.len());
    for restock in restocks {
        let waves = alerts_of_restock(db, restock.id).await?;
        let mut alerts = DeliveryCounts::default();
        for wave in &waves {
            alerts.queued += wave.alerts.queued;
            alerts.sent += wave.alerts.sent;
            alerts.failed += wave.alerts.failed;
        }
        recent_restocks.push(RestockAlerts {
            restock_event_id: restock.id,
            at: restock.created_at,
            alerts,
            waves,
            next_wave_at: restock.next_wave_at,
        });
    }
    Ok(recent_restocks)
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn add(counts: &mut DeliveryCounts, status: MessageStatus, n: i64) {
    match status {
        MessageStatus::Queued => counts.queued += n,
        MessageStatus::Sent => counts.sent += n,
        MessageStatus::Failed => counts.failed += n,
    }
}

/// The product's ledger rows (reached through its subscriptions) counted by kind and state.
async fn ledger_by_kind_and_status(
    db: &impl ConnectionTrait,
    product_id: i64,
) -> Result<HashMap<(MessageKind, MessageStatus), i64>> {
    let of_product = Query::select()
        .column(subscriptions::Column::Id)
        .from(subscriptions::Entity)
        .and_where(Expr::col(subscriptions::Column::ProductId).eq(product_id))
        .to_owned();
    Ok(email_messages::Entity::find()
        .select_only()
        .column(email_messages::Column::Kind)
        .column(email_messages::Column::Status)
        .column_as(email_messages::Column::Id.count(), "n")
        .filter(email_messages::Column::SubscriptionId.in_subquery(of_product))
        .group_by(email_messages::Column::Kind)
        .group_by(email_messages::Column::Status)
        .into_tuple::<(MessageKind, MessageStatus, i64)>()
        .all(db)
        .await?
        .into_iter()
        .map(|(kind, status, n)| ((kind, status), n))
        .collect())
}

/// Alerts of one restock by wave, found by their dedupe key ([`mail::alert_dedupe_key`]).
/// Alerts written before waves existed count as wave 1.
async fn alerts_of_restock(
    db: &impl ConnectionTrait,
    restock_event_id: i64,
) -> Result<Vec<WaveAlerts>> {
    let key = mail::alert_dedupe_key(restock_event_id, 0);
    let prefix = key.strip_suffix('0').unwrap_or(&key);
    let mut waves: std::collections::BTreeMap<i32, DeliveryCounts> = Default::default();
    for (wave, status, n) in email_messages::Entity::find()
        .select_only()
        .column(email_messages::Column::Wave)
        .column(email_messages::Column::Status)
        .column_as(email_messages::Column::Id.count(), "n")
        .filter(email_messages::Column::Kind.eq(MessageKind::RestockAlert))
        .filter(email_messages::Column::DedupeKey.starts_with(prefix))
        .group_by(email_messages::Column::Wave)
        .group_by(email_messages::Column::Status)
        .into_tuple::<(Option<i32>, MessageStatus, i64)>()
        .all(db)
        .await?
    {
        add(waves.entry(wave.unwrap_or(1)).or_default(), status, n);
    }
    Ok(waves
        .into_iter()
        .map(|(wave, alerts)| WaveAlerts { wave, alerts })
        .collect())
}
