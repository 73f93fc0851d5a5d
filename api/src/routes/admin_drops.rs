use chrono::{DateTime, Utc};
use entity::{drops, models};
use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};

use super::ApiTags;
use crate::{
    auth::BearerAuth,
    error::{ApiError, ApiResult},
    state::AppState,
};

pub struct AdminDropsApi;

const MAX_STOCK: i32 = 1_000_000;

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct NewDropRequest {
    #[oai(validator(min_length = 1, max_length = 200))]
    name: String,
    #[oai(validator(max_length = 5000))]
    description: Option<String>,
    #[oai(validator(minimum(value = "0"), maximum(value = "100000000000")))]
    price_cents: i64,
    /// ISO 4217 code; `USD` by default.
    currency: Option<String>,
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000")))]
    total_stock: i32,
    /// Opens now by default.
    starts_at: Option<DateTime<Utc>>,
    /// Open-ended by default.
    ends_at: Option<DateTime<Utc>>,
    /// 1 by default.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    max_per_user: Option<i32>,
}

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct DropPatchRequest {
    #[oai(validator(min_length = 1, max_length = 200))]
    name: Option<String>,
    #[oai(validator(max_length = 5000))]
    description: Option<String>,
    #[oai(validator(minimum(value = "0"), maximum(value = "100000000000")))]
    price_cents: Option<i64>,
    starts_at: Option<DateTime<Utc>>,
    /// A new closing time (to extend or shorten the drop).
    ends_at: Option<DateTime<Utc>>,
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    max_per_user: Option<i32>,
    /// Units to add; they go on sale at once and are broadcast like any stock change.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000")))]
    add_stock: Option<i32>,
}

/// A drop as administrators see it.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct AdminDrop {
    id: i64,
    name: String,
    description: String,
    price_cents: i64,
    currency: String,
    total_stock: i32,
    available_stock: i32,
    version: i64,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
    max_per_user: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<models::drops::Model> for AdminDrop {
    fn from(d: models::drops::Model) -> Self {
        Self {
            id: d.id,
            name: d.name,
            description: d.description,
            price_cents: d.price_cents,
            currency: d.currency,
            total_stock: d.total_stock,
            available_stock: d.available_stock,
            version: d.stock_version,
            starts_at: d.starts_at,
            ends_at: d.ends_at,
            max_per_user: d.max_per_user,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

#[derive(ApiResponse)]
enum Created {
    /// The drop exists.
    #[oai(status = 201)]
    Created(Json<AdminDrop>),
}

/// Three upper-case letters, as ISO 4217 spells currencies.
pub fn parse_currency(raw: Option<&str>) -> ApiResult<String> {
    let currency = raw.unwrap_or("USD").trim().to_ascii_uppercase();
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(ApiError::bad_request(
            "currency must be a three-letter ISO 4217 code",
        ));
    }
    Ok(currency)
}

#[OpenApi(prefix_path = "/api/admin/drops", tag = "ApiTags::Admin")]
impl AdminDropsApi {
    /// Create a drop
    #[oai(path = "/", method = "post")]
    async fn create(
        &self,
        Data(state): Data<&AppState>,
        auth: BearerAuth,
        body: Json<NewDropRequest>,
    ) -> ApiResult<Created> {
        auth.0.require_admin()?;
        let now = Utc::now();
        let body = body.0;
        let starts_at = body.starts_at.unwrap_or(now);
        if body.ends_at.is_some_and(|end| end <= starts_at) {
            return Err(ApiError::bad_request("endsAt must be after startsAt"));
        }
        let name = body.name.trim().to_owned();
        if name.is_empty() {
            return Err(ApiError::bad_request("name must not be blank"));
        }
        let new = drops::NewDrop {
            name,
            description: body.description.unwrap_or_default(),
            price_cents: body.price_cents,
            currency: parse_currency(body.currency.as_deref())?,
            total_stock: body.total_stock.min(MAX_STOCK),
            starts_at,
            ends_at: body.ends_at,
            max_per_user: body.max_per_user.unwrap_or(1),
        };
        let drop = drops::create(&state.db, new, now).await?;
        state.publish_stock(drops::Stock::from(&drop)).await;
        Ok(Created::Created(Json(drop.into())))
    }

    /// Edit a drop, extend it, or add stock
    #[oai(path = "/:id", method = "patch")]
    async fn update(
        &self,
        Data(state): Data<&AppState>,
        auth: BearerAuth,
        id: Path<i64>,
        body: Json<DropPatchRequest>,
    ) -> ApiResult<Json<AdminDrop>> {
        auth.0.require_admin()?;
        let body = body.0;
        let current = drops::find(&state.db, id.0)
            .await?
            .ok_or(entity::Error::DropNotFound)?;
        let starts_at = body.starts_at.unwrap_or(current.starts_at);
        if body
            .ends_at
            .or(current.ends_at)
            .is_some_and(|end| end <= starts_at)
        {
            return Err(ApiError::bad_request("endsAt must be after startsAt"));
        }
        if let Some(add) = body.add_stock
            && current.total_stock.saturating_add(add) > MAX_STOCK
        {
            return Err(ApiError::bad_request(format!(
                "total stock may not exceed {MAX_STOCK}"
            )));
        }
        let patch = drops::DropPatch {
            name: body
                .name
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty()),
            description: body.description,
            price_cents: body.price_cents,
            starts_at: body.starts_at,
            ends_at: body.ends_at.map(Some),
            max_per_user: body.max_per_user,
            add_stock: body.add_stock,
        };
        let drop = drops::update(&state.db, id.0, patch, Utc::now()).await?;
        if drop.stock_version != current.stock_version {
            state.publish_stock(drops::Stock::from(&drop)).await;
        }
        Ok(Json(drop.into()))
    }

    /// Every drop, newest first
    #[oai(path = "/", method = "get")]
    async fn list(
        &self,
        Data(state): Data<&AppState>,
        auth: BearerAuth,
    ) -> ApiResult<Json<Vec<AdminDrop>>> {
        auth.0.require_admin()?;
        Ok(Json(
            drops::list_all(&state.db)
                .await?
                .into_iter()
                .map(AdminDrop::from)
                .collect(),
        ))
    }
}
