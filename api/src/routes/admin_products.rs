use chrono::Utc;
use entity::catalog::{self, ProductFields, ProductName, ProductPatch, ProductView, Slug};
use poem_openapi::{
    ApiResponse, Object, OpenApi, param::Path, payload::Json, types::MaybeUndefined,
};

use super::ApiTags;
use crate::{
    auth::AdminAuth,
    cache::catalog::Product,
    http::error::{ApiError, ApiResult},
    http::text::{CurrencyCode, Description, Name, SlugText, Text},
    state::AppState,
};

pub struct AdminProductsApi {
    pub state: AppState,
}

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct NewProductRequest {
    /// Shown to visitors and in emails; not blank.
    name: Name,
    /// Derived from the name when left out (`product-` and a random suffix when the name has
    /// no Latin letter or digit). Lower-case letters, digits and single dashes, with at
    /// least one letter.
    slug: Option<SlugText>,
    /// Plain text.
    description: Option<Description>,
    /// Price in the currency's minor unit (cents).
    #[oai(validator(minimum(value = "0"), maximum(value = "100000000000")))]
    price_cents: i64,
    /// ISO 4217 code; `USD` by default.
    currency: Option<CurrencyCode>,
    /// Absolute `https:` URL of a product photo (`http:` only on localhost).
    #[oai(validator(
        max_length = 2000,
        pattern = r"^(https://[A-Za-z0-9.-]+|http://(localhost|127\.0\.0\.1|\[::1\]))(:[0-9]{1,5})?([/?#][^\x00-\x20\x7f-\x9f]*)?$"
    ))]
    image_url: Option<Text>,
    /// Whether it can be bought now.
    in_stock: bool,
    /// Units on hand, if you track them; 0 means sold out whatever `inStock` says.
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000000")))]
    stock_quantity: Option<i32>,
}

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct ProductPatchRequest {
    /// Not blank.
    name: Option<Name>,
    /// Lower-case letters, digits and single dashes, with at least one letter; must stay
    /// unique.
    slug: Option<SlugText>,
    description: Option<Description>,
    /// Price in the currency's minor unit (cents).
    #[oai(validator(minimum(value = "0"), maximum(value = "100000000000")))]
    price_cents: Option<i64>,
    /// ISO 4217 code.
    currency: Option<CurrencyCode>,
    /// `null` removes the image.
    #[oai(validator(
        max_length = 2000,
        pattern = r"^(https://[A-Za-z0-9.-]+|http://(localhost|127\.0\.0\.1|\[::1\]))(:[0-9]{1,5})?([/?#][^\x00-\x20\x7f-\x9f]*)?$"
    ))]
    image_url: MaybeUndefined<Text>,
    /// Turning a sold-out product back in stock alerts its confirmed subscribers, exactly as
    /// a Contentful publish would.
    in_stock: Option<bool>,
    /// `null` stops tracking the quantity. 0 → a positive number is a restock.
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000000")))]
    stock_quantity: MaybeUndefined<i32>,
    /// `false` takes the product off the store (as a Contentful unpublish does).
    visible: Option<bool>,
}

#[derive(ApiResponse)]
enum Created {
    /// The product exists.
    #[oai(status = 201)]
    Created(Json<Product>),
}

/// A slug derived from the name; a name with no Latin letter to make one from ("日本茶")
/// gets a generated one rather than a refusal.
fn slug_from_name(name: &ProductName) -> ApiResult<Slug> {
    Slug::from_name(name.as_str())
        .or_else(|_| {
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            Slug::parse(&format!("product-{}", &suffix[..12]))
        })
        .map_err(ApiError::bad_request)
}

fn image_url(raw: &str) -> ApiResult<String> {
    catalog::parse_image_url(raw).map_err(ApiError::bad_request)
}

async fn view(state: &AppState, product: entity::models::products::Model) -> ApiResult<Product> {
    let waiting_count = catalog::waiting_count(&state.db, product.id).await?;
    Ok(ProductView {
        product,
        waiting_count,
    }
    .into())
}

#[OpenApi(prefix_path = "/api/admin/products", tag = "ApiTags::Admin")]
impl AdminProductsApi {
    /// Create a product
    ///
    /// For stores that do not use Contentful, and for trying things out in Swagger UI.
    /// 409 `slug_taken` when another product has the slug.
    #[oai(path = "/", method = "post", operation_id = "createProduct")]
    async fn create(&self, _admin: AdminAuth, body: Json<NewProductRequest>) -> ApiResult<Created> {
        let body = body.0;
        let name = body.name.into_value();
        let fields = ProductFields {
            slug: match body.slug {
                Some(slug) => slug.into_value(),
                None => slug_from_name(&name)?,
            },
            name,
            description: body
                .description
                .map(Description::into_value)
                .unwrap_or_default(),
            price_cents: body.price_cents,
            currency: body.currency.map(|code| code.into_value().into_string()),
            image_url: Some(body.image_url.as_deref().map(image_url).transpose()?),
            in_stock: body.in_stock,
            stock_quantity: body.stock_quantity,
        };
        let change = catalog::create(&self.state.db, fields, Utc::now()).await?;
        self.state.effects.product_changed(&change).await;
        Ok(Created::Created(Json(
            view(&self.state, change.product).await?,
        )))
    }

    /// Edit a product, or bring it back in stock
    ///
    /// Fields left out stay as they are. Bringing a sold-out product back (`inStock`
    /// false → true, or `stockQuantity` 0 → more) records a restock, broadcasts
    /// `product_restocked` on `/ws` and emails its confirmed subscribers — the same flow as
    /// the Contentful webhook.
    #[oai(path = "/:id", method = "patch", operation_id = "updateProduct")]
    async fn update(
        &self,
        _admin: AdminAuth,
        id: Path<i64>,
        body: Json<ProductPatchRequest>,
    ) -> ApiResult<Json<Product>> {
        let body = body.0;
        let patch = ProductPatch {
            slug: body.slug.map(SlugText::into_value),
            name: body.name.map(Name::into_value),
            description: body.description.map(Description::into_value),
            price_cents: body.price_cents,
            currency: body.currency.map(|code| code.into_value().into_string()),
            image_url: maybe(body.image_url)
                .map(|url| url.as_deref().map(image_url).transpose())
                .transpose()?,
            in_stock: body.in_stock,
            stock_quantity: maybe(body.stock_quantity),
            visible: body.visible,
        };
        let change = catalog::update(&self.state.db, id.0, patch, Utc::now()).await?;
        self.state.effects.product_changed(&change).await;
        Ok(Json(view(&self.state, change.product).await?))
    }
}

/// Absent → leave alone; `null` → clear; a value → set.
fn maybe<T>(value: MaybeUndefined<T>) -> Option<Option<T>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}
