use chrono::Utc;
use entity::drops;
use poem::web::Data;
use poem_openapi::{ApiResponse, OpenApi, param::Path, payload::Json};

use super::{
    ApiTags,
    drops::{Purchase, Reservation},
};
use crate::{auth::BearerAuth, error::ApiResult, state::AppState};

pub struct ReservationsApi;

#[derive(ApiResponse)]
enum Released {
    /// The hold is over and its unit is on sale again (or it was already released).
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/api", tag = "ApiTags::Reservations")]
impl ReservationsApi {
    /// Let a hold go early
    ///
    /// The unit goes back on sale at once — or, if buyers wait for the drop, becomes a
    /// personal hold for the first in line.
    #[oai(path = "/reservations/:id", method = "delete")]
    async fn release(
        &self,
        Data(state): Data<&AppState>,
        auth: BearerAuth,
        id: Path<i64>,
    ) -> ApiResult<Released> {
        let offer_ttl = state.settings.drops.reservation_ttl;
        let released = drops::release(&state.db, id.0, auth.0.user_id, offer_ttl, Utc::now());
        if let Some(ended) = released.await? {
            state.effects.hold_ended(&ended).await;
        }
        Ok(Released::NoContent)
    }

    /// Your holds, newest first
    #[oai(path = "/reservations", method = "get")]
    async fn list_reservations(
        &self,
        Data(state): Data<&AppState>,
        auth: BearerAuth,
    ) -> ApiResult<Json<Vec<Reservation>>> {
        let found = drops::reservations_of(&state.db, auth.0.user_id).await?;
        Ok(Json(found.into_iter().map(Reservation::from).collect()))
    }

    /// Your purchases, newest first
    #[oai(path = "/purchases", method = "get")]
    async fn list_purchases(
        &self,
        Data(state): Data<&AppState>,
        auth: BearerAuth,
    ) -> ApiResult<Json<Vec<Purchase>>> {
        let found = drops::purchases_of(&state.db, auth.0.user_id).await?;
        Ok(Json(found.into_iter().map(Purchase::from).collect()))
    }
}
