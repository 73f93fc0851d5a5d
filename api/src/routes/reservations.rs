use chrono::Utc;
use entity::drops;
use poem_openapi::{ApiResponse, OpenApi, param::Path, payload::Json};

use super::{
    ApiTags,
    drops::{Purchase, Reservation},
};
use crate::{auth::BearerAuth, http::error::ApiResult, state::AppState};

pub struct ReservationsApi {
    pub state: AppState,
}

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
    #[oai(
        path = "/reservations/:id",
        method = "delete",
        operation_id = "releaseReservation"
    )]
    async fn release(&self, auth: BearerAuth, id: Path<i64>) -> ApiResult<Released> {
        let offer_ttl = self.state.settings.drops.reservation_ttl;
        let released = drops::release(&self.state.db, id.0, auth.0.user_id, offer_ttl, Utc::now());
        if let Some(ended) = released.await? {
            self.state.effects.hold_ended(&ended).await;
        }
        Ok(Released::NoContent)
    }

    /// Your holds, newest first
    ///
    /// Every reservation of the signed-in buyer, active or ended (expired, released,
    /// purchased).
    #[oai(
        path = "/reservations",
        method = "get",
        operation_id = "listReservations"
    )]
    async fn list_reservations(&self, auth: BearerAuth) -> ApiResult<Json<Vec<Reservation>>> {
        let found = drops::reservations_of(&self.state.db, auth.0.user_id).await?;
        Ok(Json(found.into_iter().map(Reservation::from).collect()))
    }

    /// Your purchases, newest first
    ///
    /// Every unit the signed-in buyer bought, with the price paid.
    #[oai(path = "/purchases", method = "get", operation_id = "listPurchases")]
    async fn list_purchases(&self, auth: BearerAuth) -> ApiResult<Json<Vec<Purchase>>> {
        let found = drops::purchases_of(&self.state.db, auth.0.user_id).await?;
        Ok(Json(found.into_iter().map(Purchase::from).collect()))
    }
}
