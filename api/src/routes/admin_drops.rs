use chrono::{DateTime, Utc};
use entity::{drops, models};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};

use super::{
    ApiTags,
    drops::{DropFields, SaleMode},
};
use crate::{
    auth::AdminAuth,
    http::error::ApiResult,
    http::text::{CurrencyCode, Description, Name},
    state::AppState,
};

pub struct AdminDropsApi {
    pub state: AppState,
}

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct NewDropRequest {
    /// Not blank.
    name: Name,
    description: Option<Description>,
    /// Price in the currency's minor unit (cents).
    #[oai(validator(minimum(value = "0"), maximum(value = "100000000000")))]
    price_cents: i64,
    /// ISO 4217 code; `USD` by default.
    currency: Option<CurrencyCode>,
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000")))]
    total_stock: i32,
    /// Opens now by default.
    starts_at: Option<DateTime<Utc>>,
    /// Open-ended by default. Must be after `startsAt` (400 otherwise).
    ends_at: Option<DateTime<Utc>>,
    /// 1 by default.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    max_per_user: Option<i32>,
    /// `first_come` by default. A `draw` takes entries from `startsAt` until
    /// `entriesCloseAt`, then draws its winners with a seed committed to now (`seedHash`).
    mode: Option<SaleMode>,
    /// Required for a draw, refused otherwise: in the future, after `startsAt` and before
    /// `endsAt`.
    entries_close_at: Option<DateTime<Utc>>,
    /// How long waitlist offers and a draw's winning holds last; the store's hold TTL by
    /// default, 900 for a draw.
    #[oai(validator(minimum(value = "10"), maximum(value = "604800")))]
    offer_ttl_seconds: Option<i32>,
    /// Only accounts with a verified email may reserve, join the waitlist or enter the draw
    /// (others get 403 `email_unverified`). On by default for a draw, off otherwise.
    require_verified: Option<bool>,
    /// Reserving takes a solved proof-of-work challenge (`GET /api/challenge`, solution in
    /// `X-Altcha`). Off by default.
    require_challenge: Option<bool>,
}

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct DropPatchRequest {
    /// Not blank.
    name: Option<Name>,
    description: Option<Description>,
    #[oai(validator(minimum(value = "0"), maximum(value = "100000000000")))]
    price_cents: Option<i64>,
    starts_at: Option<DateTime<Utc>>,
    /// A new closing time (to extend or shorten the drop); must be after the drop's
    /// `startsAt` (400 otherwise).
    ends_at: Option<DateTime<Utc>>,
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    max_per_user: Option<i32>,
    /// Units to add; they go on sale at once and are broadcast like any stock change.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000")))]
    add_stock: Option<i32>,
    /// A draw's new close of entries (in the future, before the draw): extends them or
    /// closes them sooner; the draw follows it.
    entries_close_at: Option<DateTime<Utc>>,
    /// Only verified accounts may reserve, join the waitlist or enter the draw.
    require_verified: Option<bool>,
    /// Reserving takes a solved proof-of-work challenge.
    require_challenge: Option<bool>,
}

/// A drop as administrators see it.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct AdminDrop {
    #[oai(flatten)]
    drop: DropFields,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<models::drops::Model> for AdminDrop {
    fn from(d: models::drops::Model) -> Self {
        Self {
            created_at: d.created_at,
            updated_at: d.updated_at,
            drop: d.into(),
        }
    }
}

#[derive(ApiResponse)]
enum Created {
    /// The drop exists.
    #[oai(status = 201)]
    Created(Json<AdminDrop>),
}

#[OpenApi(prefix_path = "/api/admin/drops", tag = "ApiTags::Admin")]
impl AdminDropsApi {
    /// Create a drop
    ///
    /// A drop sells `totalStock` units from `startsAt` (now when left out) until `endsAt` (open
    /// ended when left out), at most `maxPerUser` to a buyer; `mode` `draw` takes entries
    /// instead of holds until `entriesCloseAt`.
    #[oai(path = "/", method = "post", operation_id = "createDrop")]
    async fn create(&self, _admin: AdminAuth, body: Json<NewDropRequest>) -> ApiResult<Created> {
        let now = Utc::now();
        let body = body.0;
        let input = drops::DropInput {
            name: body.name.into(),
            description: body.description.map(String::from),
            price_cents: body.price_cents,
            currency: body.currency.map(String::from),
            total_stock: body.total_stock,
            starts_at: body.starts_at,
            ends_at: body.ends_at,
            max_per_user: body.max_per_user,
            mode: body.mode.map(Into::into),
            entries_close_at: body.entries_close_at,
            offer_ttl_secs: body.offer_ttl_seconds,
            require_verified: body.require_verified,
            require_challenge: body.require_challenge,
        };
        let drop = drops::create(&self.state.db, drops::NewDrop::parse(input, now)?, now).await?;
        self.state.effects.drop_created(&drop).await;
        Ok(Created::Created(Json(drop.into())))
    }

    /// Edit a drop, extend it, or add stock
    ///
    /// Fields left out stay as they are. Added stock goes to waiting buyers first (as personal
    /// holds), the rest back on sale, with a `stock_update` to every socket. 404
    /// `drop_not_found` for an unknown id.
    #[oai(path = "/:id", method = "patch", operation_id = "updateDrop")]
    async fn update(
        &self,
        _admin: AdminAuth,
        id: Path<i64>,
        body: Json<DropPatchRequest>,
    ) -> ApiResult<Json<AdminDrop>> {
        let body = body.0;
        let patch = drops::DropPatch {
            name: body.name.map(String::from),
            description: body.description.map(String::from),
            price_cents: body.price_cents,
            starts_at: body.starts_at,
            ends_at: body.ends_at,
            max_per_user: body.max_per_user,
            add_stock: body.add_stock,
            entries_close_at: body.entries_close_at,
            require_verified: body.require_verified,
            require_challenge: body.require_challenge,
        };
        let offer_ttl = self.state.settings.drops.reservation_ttl;
        let updated = drops::update(&self.state.db, id.0, patch, offer_ttl, Utc::now()).await?;
        self.state.effects.drop_edited(&updated).await;
        Ok(Json(updated.drop.into()))
    }

    /// Every drop, newest first
    ///
    /// Past, live and future drops with their stock counters, for the admin screens.
    #[oai(path = "/", method = "get", operation_id = "listAllDrops")]
    async fn list(&self, _admin: AdminAuth) -> ApiResult<Json<Vec<AdminDrop>>> {
        let all = drops::list_all(&self.state.db).await?;
        Ok(Json(all.into_iter().map(AdminDrop::from).collect()))
    }
}
