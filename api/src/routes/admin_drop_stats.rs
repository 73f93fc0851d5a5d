//! `GET /api/admin/drops/{id}/stats`: how a drop's demand went.

use chrono::{DateTime, Utc};
use entity::drops::stats::{self, DropStats};
use poem_openapi::{Object, OpenApi, param::Path, payload::Json};

use super::ApiTags;
use crate::{auth::AdminAuth, http::error::ApiResult, state::AppState};

pub struct AdminDropStatsApi {
    pub state: AppState,
}

/// Demand for one drop, counted over every instance and worker.
#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
struct DropStatsBody {
    drop_id: i64,
    /// Reserve requests, served or refused (counted by each api instance and recorded every
    /// second, so the last second may be missing).
    reserve_attempts: i64,
    /// Holds taken, waitlist offers and draw wins included.
    holds: i64,
    /// Holds running now.
    active_holds: i64,
    /// Holds that ran out unbought.
    expiries: i64,
    /// Holds let go by their buyer.
    releases: i64,
    purchases: i64,
    /// Purchases per hold, 0 to 1; absent before the first hold.
    conversion: Option<f64>,
    /// When the drop first had no unit left.
    sold_out_at: Option<DateTime<Utc>>,
    /// From `startsAt` to `soldOutAt`.
    time_to_sell_out_seconds: Option<f64>,
    /// Buyers waiting in line now.
    waitlist_length: i64,
    /// Returned units offered to the line.
    offers_made: i64,
    /// Offers bought.
    offers_taken: i64,
    /// A draw's entries and winners.
    draw_entries: i64,
    draw_winners: i64,
}

impl From<DropStats> for DropStatsBody {
    fn from(s: DropStats) -> Self {
        Self {
            conversion: s.conversion(),
            time_to_sell_out_seconds: s
                .time_to_sell_out()
                .map(|d| d.num_milliseconds() as f64 / 1000.0),
            drop_id: s.drop_id,
            reserve_attempts: s.reserve_attempts,
            holds: s.holds,
            active_holds: s.active_holds,
            expiries: s.expiries,
            releases: s.releases,
            purchases: s.purchases,
            sold_out_at: s.sold_out_at,
            waitlist_length: s.waitlist_length,
            offers_made: s.offers_made,
            offers_taken: s.offers_taken,
            draw_entries: s.draw_entries,
            draw_winners: s.draw_winners,
        }
    }
}

#[OpenApi(prefix_path = "/api/admin/drops", tag = "ApiTags::Admin")]
impl AdminDropStatsApi {
    /// Demand figures of a drop
    ///
    /// Reserve attempts, holds (and how they ended: expired, released, bought), conversion,
    /// time to the first sell-out, the waitlist's length, offers made and bought, and a
    /// draw's entries and winners. 404 `drop_not_found` for an unknown id.
    #[oai(path = "/:id/stats", method = "get", operation_id = "getDropStats")]
    async fn stats(&self, _admin: AdminAuth, id: Path<i64>) -> ApiResult<Json<DropStatsBody>> {
        Ok(Json(stats::stats(&self.state.db, id.0).await?.into()))
    }
}
