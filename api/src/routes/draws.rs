//! Draw drops: enter, see your entry, and check the draw.

use chrono::{DateTime, Utc};
use entity::drops::draw::{self, Entry, Record};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};

use super::ApiTags;
use crate::{
    abuse::fairness::{self, Taking},
    auth::BearerAuth,
    http::error::ApiResult,
    state::AppState,
};

pub struct DrawsApi {
    pub state: AppState,
}

/// Your entry in a draw.
#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
struct DrawEntry {
    /// Published in the draw's record after the draw: find yourself there.
    entry_id: i64,
    drop_id: i64,
    entries_close_at: Option<DateTime<Utc>>,
    /// Your place in the draw's order (1 first), once drawn.
    position: Option<i32>,
    /// You won a hold (see `hold_offered`, or `GET /api/me/reservations`).
    won: bool,
}

impl From<Entry> for DrawEntry {
    fn from(e: Entry) -> Self {
        Self {
            entry_id: e.entry_id,
            drop_id: e.drop_id,
            entries_close_at: e.entries_close_at,
            position: e.position,
            won: e.won,
        }
    }
}

/// What anyone can check of a draw.
#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
struct DrawRecord {
    drop_id: i64,
    /// SHA-256 (hex) of the seed's 32 bytes, published since the drop was created.
    seed_hash: String,
    entries_close_at: Option<DateTime<Utc>>,
    /// Entries so far (all of them once drawn).
    entries: u64,
    drawn_at: Option<DateTime<Utc>>,
    /// The seed (hex, 32 bytes), published once drawn.
    seed: Option<String>,
    /// Every entry in draw order, once drawn: the first ones won.
    order: Vec<DrawnEntry>,
}

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct DrawnEntry {
    entry_id: i64,
    won: bool,
}

impl From<Record> for DrawRecord {
    fn from(r: Record) -> Self {
        Self {
            drop_id: r.drop_id,
            seed_hash: r.seed_hash,
            entries_close_at: r.entries_close_at,
            entries: r.entries,
            drawn_at: r.drawn_at,
            seed: r.seed,
            order: r
                .order
                .into_iter()
                .map(|(entry_id, won)| DrawnEntry { entry_id, won })
                .collect(),
        }
    }
}

#[derive(ApiResponse)]
enum Entered {
    /// You are in the draw.
    #[oai(status = 201)]
    Created(Json<DrawEntry>),
}

#[OpenApi(prefix_path = "/api/drops", tag = "ApiTags::Drops")]
impl DrawsApi {
    /// Enter a draw
    ///
    /// One entry per buyer, from the drop's `startsAt` until its `entriesCloseAt`. At the
    /// close the winners are drawn: each gets a personal hold (`hold_offered` and
    /// `draw_result` on your signed-in sockets, and an email), the rest join the waitlist in
    /// draw order (`draw_result` with your `position`, and an email). 409 `not_a_draw`,
    /// `entries_closed`, `already_entered`, `drop_not_active` (entries not open yet); 404
    /// `drop_not_found`. A draw with `requireVerified` (the default for draws) takes only
    /// verified accounts (403 `email_unverified`) and one entry per person: accounts whose
    /// addresses lead to one mailbox (case, `+tags`, Gmail's dots) enter once (409
    /// `already_entered`). One address makes at most `HOLDS_PER_DROP_PER_ADDRESS` entries
    /// (429 `address_limit_reached`).
    #[oai(path = "/:dropId/entries", method = "post", operation_id = "enterDraw")]
    async fn enter(
        &self,
        req: &poem::Request,
        auth: BearerAuth,
        #[oai(name = "dropId")] drop_id: Path<i64>,
    ) -> ApiResult<Entered> {
        let user_id = auth.0.user_id;
        let slot = fairness::admit(
            self.state.admission(),
            req,
            user_id,
            drop_id.0,
            Taking::DrawEntry,
            None,
        )
        .await?;
        let entry = slot
            .kept_if(draw::enter(&self.state.db, drop_id.0, user_id, Utc::now()).await)
            .await?;
        Ok(Entered::Created(Json(entry.into())))
    }

    /// Your entry in a draw
    ///
    /// 404 `not_entered` when you have not entered it.
    #[oai(
        path = "/:dropId/entries/me",
        method = "get",
        operation_id = "getMyDrawEntry"
    )]
    async fn mine(
        &self,
        auth: BearerAuth,
        #[oai(name = "dropId")] drop_id: Path<i64>,
    ) -> ApiResult<Json<DrawEntry>> {
        let entry = draw::entry_of(&self.state.db, drop_id.0, auth.0.user_id).await?;
        Ok(Json(entry.into()))
    }

    /// A draw's record, to check it
    ///
    /// The seed's commitment from the start; after the draw, the seed and every entry id in
    /// draw order. The order is the entry ids sorted by `SHA-256(seed ‖ entry id as 8 bytes
    /// big-endian)`, ascending (README, "Draw drops"): anyone can recompute it. 409
    /// `not_a_draw`; 404 `drop_not_found`.
    #[oai(path = "/:dropId/draw", method = "get", operation_id = "getDrawRecord")]
    async fn record(
        &self,
        #[oai(name = "dropId")] drop_id: Path<i64>,
    ) -> ApiResult<Json<DrawRecord>> {
        Ok(Json(draw::record(&self.state.db, drop_id.0).await?.into()))
    }
}
