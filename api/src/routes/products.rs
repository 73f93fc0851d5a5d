use chrono::Utc;
use entity::catalog;
use poem::Request;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};

use super::ApiTags;
use crate::{
    cache::catalog::{Catalog, Product},
    cache::rendered::RenderedJson,
    http::client::limit_key_of,
    http::error::{ApiError, ApiResult, ErrorCode},
    http::text::Email,
    state::AppState,
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
    /// minutes, the address is already confirmed, or its inbox had its confirmations for
    /// the day; the answer is the same either way.
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
    /// link's Confirm button (`POST /api/subscriptions/confirm?token=...`) is pressed will the
    /// address get the restock alert — one email, the next time the product comes back.
    /// Signing up again is harmless. 409 `product_in_stock` when it can be bought right now.
    ///
    /// Against mail-bombing, one inbox is sent at most `NOTIFY_ME_EMAILS_PER_MAILBOX_PER_DAY`
    /// confirmation emails a day across all products (counted case-insensitively and without
    /// a `+tag`); past that the answer is the same 202 and nothing is sent. One client
    /// address may ask `NOTIFY_ME_PER_ADDRESS_PER_HOUR` times an hour: 429
    /// `too_many_requests` past it.
    #[oai(path = "/:id/notify-me", method = "post", operation_id = "notifyMe")]
    async fn notify_me(
        &self,
        req: &Request,
        id: Path<i64>,
        body: Json<NotifyMeRequest>,
    ) -> ApiResult<NotifyMeResponse> {
        let limits = &self.state.settings.notify_me;
        let from = format!("notify-ip:{}", limit_key_of(req));
        let window = self.state.limiter.hit(&from, PER_ADDRESS_WINDOW).await;
        if window.count > limits.per_address_per_hour {
            return Err(ApiError::too_many(
                ErrorCode::TooManyRequests,
                "too many sign-ups from this address; try again later",
                window.resets_in.as_secs_f64().ceil() as u64,
            ));
        }
        let email = body.0.email.into_value();
        let subscribed = catalog::subscribe(
            &self.state.db,
            id.0,
            &email,
            limits.emails_per_mailbox_per_day,
            Utc::now(),
        )
        .await?;
        if let Some(message_id) = subscribed.confirmation_message_id {
            self.state.effects.emails_queued(&[message_id]).await;
        }
        Ok(NotifyMeResponse::Accepted(Json(NotifyMeAccepted {
            message: "Check your inbox and confirm; we will email you once when it is back.".into(),
        })))
    }
}

/// The window of `NOTIFY_ME_PER_ADDRESS_PER_HOUR`.
const PER_ADDRESS_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);
