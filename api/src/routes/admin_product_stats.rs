//! `GET /api/admin/products/{id}/stats`: who is waiting for a product and how its restock
//! alerts went.

use chrono::{DateTime, Utc};
use entity::product_stats::{self, DeliveryCounts, ProductStats, RestockAlerts, SubscriberCounts};
use poem_openapi::{Object, OpenApi, param::Path, payload::Json};

use super::ApiTags;
use crate::{auth::AdminAuth, http::error::ApiResult, state::AppState};

pub struct AdminProductStatsApi {
    pub state: AppState,
}

/// "Notify me" sign-ups by state.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct Subscribers {
    /// Signed up; the confirmation link has not been followed yet.
    pending: i64,
    /// Confirmed and waiting: they get the next restock alert.
    confirmed: i64,
    /// Alerted already (signing up again re-arms them).
    notified: i64,
    unsubscribed: i64,
}

impl From<SubscriberCounts> for Subscribers {
    fn from(c: SubscriberCounts) -> Self {
        Self {
            pending: c.pending,
            confirmed: c.confirmed,
            notified: c.notified,
            unsubscribed: c.unsubscribed,
        }
    }
}

/// Emails of the send ledger by state.
#[derive(Object)]
struct Deliveries {
    /// Written, not sent yet (including retries waiting for their backoff).
    queued: i64,
    /// Accepted by the mail server (or written to the outbox).
    sent: i64,
    /// Given up on after `MAIL_MAX_ATTEMPTS` tries or a permanent rejection.
    failed: i64,
}

impl From<DeliveryCounts> for Deliveries {
    fn from(c: DeliveryCounts) -> Self {
        Self {
            queued: c.queued,
            sent: c.sent,
            failed: c.failed,
        }
    }
}

/// The alerts one restock caused.
#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
struct Restock {
    restock_event_id: i64,
    /// When the product came back in stock.
    at: DateTime<Utc>,
    alerts: Deliveries,
    /// The same alerts by wave (a product with a tracked quantity is alerted in waves of
    /// stock × `RESTOCK_WAVE_FACTOR`), first wave first.
    waves: Vec<Wave>,
    /// When the next wave may open, while the product stays in stock; absent when no wave
    /// is to come.
    next_wave_at: Option<DateTime<Utc>>,
}

/// One wave of a restock's alerts.
#[derive(Object)]
struct Wave {
    /// 1 for the first.
    wave: i32,
    alerts: Deliveries,
}

impl From<RestockAlerts> for Restock {
    fn from(r: RestockAlerts) -> Self {
        Self {
            restock_event_id: r.restock_event_id,
            at: r.at,
            alerts: r.alerts.into(),
            waves: r
                .waves
                .into_iter()
                .map(|w| Wave {
                    wave: w.wave,
                    alerts: w.alerts.into(),
                })
                .collect(),
            next_wave_at: r.next_wave_at,
        }
    }
}

/// Demand for one product.
#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
struct ProductStatsBody {
    product_id: i64,
    subscribers: Subscribers,
    /// Share of sign-ups that followed their confirmation link, 0 to 1; absent before the
    /// first sign-up.
    confirmation_rate: Option<f64>,
    /// Confirmation emails (double opt-in).
    confirmations: Deliveries,
    /// "Back in stock" emails, over every restock.
    alerts: Deliveries,
    /// How many times the product came back in stock.
    restock_count: i64,
    /// The latest 10 restocks, newest first, each with its own alerts.
    recent_restocks: Vec<Restock>,
}

impl From<ProductStats> for ProductStatsBody {
    fn from(s: ProductStats) -> Self {
        Self {
            confirmation_rate: s.confirmation_rate(),
            product_id: s.product_id,
            subscribers: s.subscribers.into(),
            confirmations: s.confirmations.into(),
            alerts: s.alerts.into(),
            restock_count: s.restock_count,
            recent_restocks: s.recent_restocks.into_iter().map(Restock::from).collect(),
        }
    }
}

#[OpenApi(prefix_path = "/api/admin/products", tag = "ApiTags::Admin")]
impl AdminProductStatsApi {
    /// Subscribers and alerts of a product
    ///
    /// "Notify me" subscribers by state (pending, confirmed, notified, unsubscribed), the
    /// confirmation rate, and the confirmation and restock-alert emails by state (queued,
    /// sent, failed), in total, for each of the latest restocks and each of its waves.
    /// Hidden products too.
    /// 404 `product_not_found` for an unknown id.
    #[oai(path = "/:id/stats", method = "get", operation_id = "getProductStats")]
    async fn stats(&self, _admin: AdminAuth, id: Path<i64>) -> ApiResult<Json<ProductStatsBody>> {
        let stats = product_stats::product_stats(&self.state.db, id.0).await?;
        Ok(Json(stats.into()))
    }
}
