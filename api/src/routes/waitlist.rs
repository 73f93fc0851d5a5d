//! The waitlist of a sold-out drop: join, see your place, leave.

use chrono::Utc;
use entity::drops::waitlist::{self, Place};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};

use super::ApiTags;
use crate::{
    abuse::fairness::{self, Taking},
    auth::BearerAuth,
    http::error::ApiResult,
    state::AppState,
};

pub struct WaitlistApi {
    pub state: AppState,
}

wire_enum! {
    /// Where a waitlist place stands.
    WaitlistStatus from entity::models::waitlist_entries::WaitStatus {
        /// In line.
        Waiting,
        /// A unit came back and is held for you (`reservationId`), to buy with
        /// `POST /api/drops/{reservationId}/purchase` before it expires.
        Offered,
    }
}

/// Your place on a drop's waitlist.
#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct WaitlistPlace {
    drop_id: i64,
    status: WaitlistStatus,
    /// 1 when you are next; absent once offered.
    position: Option<u64>,
    /// Buyers waiting for the drop.
    length: u64,
    /// Your personal hold, once offered.
    reservation_id: Option<i64>,
}

impl From<Place> for WaitlistPlace {
    fn from(p: Place) -> Self {
        Self {
            drop_id: p.drop_id,
            status: p.status.into(),
            position: p.position,
            length: p.length,
            reservation_id: p.reservation_id,
        }
    }
}

#[derive(ApiResponse)]
enum Joined {
    /// You are in line.
    #[oai(status = 201)]
    Created(Json<WaitlistPlace>),
}

#[derive(ApiResponse)]
enum Left {
    /// You are out of the line.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/api/drops", tag = "ApiTags::Drops")]
impl WaitlistApi {
    /// Join a sold-out drop's waitlist
    ///
    /// While the drop is open and sold out. When a unit comes back (a hold expires or is let
    /// go, or stock is added), it becomes a personal hold for the first in line — never back
    /// on general sale while someone waits — with the usual hold TTL; you are told by a
    /// `hold_offered` event on your signed-in WebSocket and Socket.IO connections and by
    /// email. An offer not bought in time passes to the next in line. One entry per buyer:
    /// 409 `drop_not_sold_out`, `already_waiting`, `already_reserved` (you hold a unit),
    /// `purchase_limit_reached`, `drop_not_active`; 404 `drop_not_found`. A drop with
    /// `requireVerified` takes only verified accounts (403 `email_unverified`); one address
    /// takes at most `HOLDS_PER_DROP_PER_ADDRESS` places (429 `address_limit_reached`).
    #[oai(
        path = "/:dropId/waitlist",
        method = "post",
        operation_id = "joinWaitlist"
    )]
    async fn join(
        &self,
        req: &poem::Request,
        auth: BearerAuth,
        #[oai(name = "dropId")] drop_id: Path<i64>,
    ) -> ApiResult<Joined> {
        let user_id = auth.0.user_id;
        let slot = fairness::admit(
            self.state.admission(),
            req,
            user_id,
            drop_id.0,
            Taking::WaitlistPlace,
            None,
        )
        .await?;
        let place = slot
            .kept_if(waitlist::join(&self.state.db, drop_id.0, user_id, Utc::now()).await)
            .await?;
        Ok(Joined::Created(Json(place.into())))
    }

    /// Your place on a drop's waitlist
    ///
    /// Your position and the line's length, or your offer. 404 `not_waiting` when you have
    /// no entry for the drop.
    #[oai(
        path = "/:dropId/waitlist",
        method = "get",
        operation_id = "getWaitlistPlace"
    )]
    async fn place(
        &self,
        auth: BearerAuth,
        #[oai(name = "dropId")] drop_id: Path<i64>,
    ) -> ApiResult<Json<WaitlistPlace>> {
        let place = waitlist::place(&self.state.db, drop_id.0, auth.0.user_id).await?;
        Ok(Json(place.into()))
    }

    /// Leave a drop's waitlist
    ///
    /// 404 `not_waiting` when you are not in line (an offer already made is yours to buy or
    /// let go).
    #[oai(
        path = "/:dropId/waitlist",
        method = "delete",
        operation_id = "leaveWaitlist"
    )]
    async fn leave(
        &self,
        auth: BearerAuth,
        #[oai(name = "dropId")] drop_id: Path<i64>,
    ) -> ApiResult<Left> {
        waitlist::leave(&self.state.db, drop_id.0, auth.0.user_id).await?;
        Ok(Left::NoContent)
    }
}
