use chrono::Utc;
use entity::catalog;
use poem::{Request, http::StatusCode};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Binary, payload::Json};

use sea_orm::ActiveEnum;

use super::ApiTags;
use crate::{
    http::contentful,
    http::error::{ApiError, ApiResult, ErrorCode},
    state::AppState,
};

pub struct WebhooksApi {
    pub state: AppState,
}

wire_enum! {
    /// What a verified delivery did.
    Outcome from entity::catalog::DeliveryOutcome {
        /// A product was created or updated.
        Applied,
        /// A product was taken off the store.
        Hidden,
        /// An older `sys.version` than the one applied.
        Stale,
        /// An idempotency key seen before.
        Duplicate,
        /// A topic or content type we do not act on.
        Ignored,
        /// Can never be applied as sent; `detail` says why.
        Rejected,
    }
}

/// What a delivery did.
#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
struct DeliveryResult {
    outcome: Outcome,
    detail: Option<String>,
    /// The product the delivery changed, if any.
    product_id: Option<i64>,
}

#[derive(ApiResponse)]
enum DeliveryResponse {
    /// Acknowledged and recorded; Contentful will not retry it.
    #[oai(status = 200)]
    Ok(Json<DeliveryResult>),
}

#[OpenApi(prefix_path = "/api/webhooks", tag = "ApiTags::Webhooks")]
impl WebhooksApi {
    /// Contentful webhook
    ///
    /// Point a Contentful webhook (Settings → Webhooks) at this URL with the `Entry` events
    /// publish, unpublish, archive and delete, and enable request verification with the
    /// secret in `CONTENTFUL_WEBHOOK_SECRET`. The body is Contentful's entry JSON
    /// (`Content-Type: application/vnd.contentful.management.v1+json`).
    ///
    /// Every request must carry a valid `X-Contentful-Signature` (HMAC-SHA256 over method,
    /// path, the headers listed in `X-Contentful-Signed-Headers` and the raw body) and an
    /// `X-Contentful-Timestamp` no more than `CONTENTFUL_WEBHOOK_TTL_SECS` old: otherwise 401
    /// `invalid_signature` and nothing changes. Without a configured secret every request is
    /// refused with 503 `webhook_disabled` (so Contentful keeps retrying until it is set).
    ///
    /// `Entry.publish` of a `product` entry creates or updates the product; `unpublish`,
    /// `archive` and `delete` hide it. A repeated `X-Contentful-Idempotency-Key` or an older
    /// `sys.version` changes nothing. Entries that can never be applied (no name, say) are
    /// acknowledged with 200 and the reason recorded, so Contentful does not retry them; a
    /// temporary failure on our side answers 5xx so it does. Bringing a product back in
    /// stock alerts its confirmed subscribers.
    #[oai(
        path = "/contentful",
        method = "post",
        operation_id = "receiveContentfulWebhook"
    )]
    async fn contentful(
        &self,
        request: &Request,
        body: Binary<Vec<u8>>,
    ) -> ApiResult<DeliveryResponse> {
        verify(&self.state, request, &body.0)?;
        let delivery = contentful::parse_delivery(
            request.header(contentful::TOPIC),
            request.header(contentful::IDEMPOTENCY_KEY),
            &body.0,
            &self.state.settings.contentful.locale,
        );
        let result = catalog::apply_cms(&self.state.db, delivery, Utc::now()).await?;
        tracing::info!(outcome = %result.outcome.to_value(), detail = ?result.detail, "contentful delivery");
        if let Some(change) = &result.change {
            self.state.effects.product_changed(change).await;
        }
        Ok(DeliveryResponse::Ok(Json(DeliveryResult {
            outcome: result.outcome.into(),
            detail: result.detail,
            product_id: result.change.map(|c| c.product.id),
        })))
    }
}

/// Checks Contentful's request signature: 503 while no secret is configured, 401 for a bad
/// or stale signature.
fn verify(state: &AppState, request: &Request, body: &[u8]) -> ApiResult<()> {
    let settings = &state.settings.contentful;
    let Some(secret) = &settings.webhook_secret else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::WebhookDisabled,
            "the Contentful webhook is disabled: CONTENTFUL_WEBHOOK_SECRET is not set",
        ));
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path(), |p| p.as_str());
    let verified = contentful::verify(
        secret.expose(),
        request.method().as_str(),
        path,
        request.headers(),
        body,
        Utc::now().timestamp_millis(),
        settings.webhook_ttl_ms,
    );
    verified.map_err(|error| {
        tracing::warn!(%error, "contentful webhook refused");
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidSignature,
            format!("request verification failed: {error}"),
        )
    })
}
