use chrono::Utc;
use entity::catalog;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};

use super::ApiTags;
use crate::{
    error::ApiResult,
    product_listing::{Catalog, Product},
    rendered::RenderedJson,
    state::AppState,
    text::Email,
};

pub struct ProductsApi {
    pub state: AppState,
}

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct NotifyMeRequest {
    /// Where to send the confirmation and, once confirmed, the restock alert.
    email: Email,
}

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct NotifyMeAccepted {
    /// What happens next.
    message: String,
}

#[derive(ApiResponse)]
enum NotifyMeResponse {
    /// Accepted. A confirmation email is on its way unless one was sent in the last 10
    /// minutes or the address is already confirmed; the answer is the same either way.
    #[oai(status = 202)]
    Accepted(Json<NotifyMeAccepted>),
}

#[OpenApi(prefix_path = "/api/products", tag = "ApiTags::Products")]
impl ProductsApi {
    /// Catalog products
    ///
    /// Every product on the store, by name. `inStock=true` lists only what can be bought now,
    /// `inStock=false` only what is sold out.
    #[oai(path = "/", method = "get", operation_id = "listProducts")]
    async fn list(
        &self,
        #[oai(name = "inStock")] in_stock: Query<Option<bool>>,
    ) -> ApiResult<RenderedJson<Vec<Product>>> {
        let load = || async {
            Ok::<_, entity::Error>(Catalog::render(catalog::list(&self.state.db, None).await?))
        };
        let rendered = self.state.caches.products.get_or_load(load).await?;
        Ok(rendered.listing(in_stock.0).clone())
    }

    /// One product, by id or slug
    ///
    /// A number is read as the id, anything else as the slug. 404 `product_not_found` for an
    /// unknown or hidden product.
    #[oai(path = "/:idOrSlug", method = "get", operation_id = "getProduct")]
    async fn get(
        &self,
        #[oai(
            name = "idOrSlug",
            validator(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")
        )]
        id_or_slug: Path<String>,
    ) -> ApiResult<Json<Product>> {
        Ok(Json(
            catalog::find_visible(&self.state.db, &id_or_slug.0)
                .await?
                .into(),
        ))
    }

    /// Email me when it is back in stock
    ///
    /// No account needed. Double opt-in: we send a confirmation email, and only after its
    /// link (`GET /api/subscriptions/confirm?token=...`) is followed will the address get the
    /// restock alert — one email, the next time the product comes back. Signing up again is
    /// harmless. 409 `product_in_stock` when it can be bought right now.
    #[oai(path = "/:id/notify-me", method = "post", operation_id = "notifyMe")]
    async fn notify_me(
        &self,
        id: Path<i64>,
        body: Json<NotifyMeRequest>,
    ) -> ApiResult<NotifyMeResponse> {
        let email = body.0.email.into_value();
        let subscribed = catalog::subscribe(&self.state.db, id.0, &email, Utc::now()).await?;
        if let Some(message_id) = subscribed.confirmation_message_id {
            self.state.effects.emails_queued(&[message_id]).await;
        }
        Ok(NotifyMeResponse::Accepted(Json(NotifyMeAccepted {
            message: "Check your inbox and confirm; we will email you once when it is back.".into(),
        })))
    }
}
