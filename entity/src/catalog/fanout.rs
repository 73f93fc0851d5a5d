//! The restock fan-out: confirmed subscribers claimed in signup order, in waves sized to the
//! stock, and one alert row written to the email ledger for each, in one transaction.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, LockType},
};

use super::{
    SubscriptionStatus, is_available,
    waves::{self, Opened, Turn, Waves},
};
use crate::{
    db::begin_write,
    error::Result,
    mail::{MessageKind, MessageStatus, Payload, alert_dedupe_key, new_row},
    models::{email_messages, products, restock_events, subscriptions},
};
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
