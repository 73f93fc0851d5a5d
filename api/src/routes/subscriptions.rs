use chrono::Utc;
use entity::catalog;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::Query,
    payload::{Html, Json},
};

use super::ApiTags;
use crate::{http::error::ApiResult, state::AppState};

pub struct SubscriptionsApi {
    pub state: AppState,
}

#[derive(ApiResponse)]
enum ConfirmResponse {
    /// Confirmed: a page saying so (the Confirm button is pressed in a browser).
    #[oai(status = 200)]
    Confirmed(Html<String>),
}

#[derive(ApiResponse)]
enum ConfirmPage {
    /// A page with a button that confirms (by POST). Nothing has changed yet.
    #[oai(status = 200)]
    Page(Html<String>),
}

#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct Unsubscribed {
    status: UnsubscribedStatus,
}

/// Always `unsubscribed`.
#[derive(poem_openapi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
enum UnsubscribedStatus {
    Unsubscribed,
}

#[derive(ApiResponse)]
enum UnsubscribeResponse {
    /// Unsubscribed (also when it already was): no more email about this product.
    #[oai(status = 200)]
    Unsubscribed(Json<Unsubscribed>),
}

#[derive(ApiResponse)]
enum UnsubscribePage {
    /// A page with a button that unsubscribes (by POST). Nothing has changed yet.
    #[oai(status = 200)]
    Page(Html<String>),
}

#[OpenApi(prefix_path = "/api/subscriptions", tag = "ApiTags::Products")]
impl SubscriptionsApi {
    /// Confirm a "notify me" sign-up
    ///
    /// What the Confirm button of the page at the confirmation email's link posts. Pressing
    /// it again is harmless. 404 `invalid_token` for an unknown token or a subscription
    /// unsubscribed since. The body is not read.
    #[oai(
        path = "/confirm",
        method = "post",
        operation_id = "confirmSubscription"
    )]
    async fn confirm(
        &self,
        #[oai(validator(max_length = 512, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] token: Query<
            String,
        >,
    ) -> ApiResult<ConfirmResponse> {
        let confirmed = catalog::confirm(&self.state.db, &token.0, Utc::now()).await?;
        if let Some(restock_event_id) = confirmed.pending_restock_id {
            self.state.effects.restock_owed(restock_event_id).await;
        }
        let name = escape(&confirmed.product.name);
        Ok(ConfirmResponse::Confirmed(Html(page(
            "You're on the list",
            &format!(
                "<p>We will email you once when <strong>{name}</strong> is back in stock.</p>"
            ),
        ))))
    }

    /// Confirmation page (changes nothing)
    ///
    /// The link in the confirmation email. Mail gateways' link scanners follow every link
    /// with GET or HEAD, so neither confirms: the page's Confirm button POSTs to this same
    /// URL. 404 `invalid_token` for an unknown token or a subscription unsubscribed since.
    #[oai(path = "/confirm", method = "get", operation_id = "getConfirmPage")]
    async fn confirm_page(
        &self,
        #[oai(validator(max_length = 512, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] token: Query<
            String,
        >,
    ) -> ApiResult<ConfirmPage> {
        if !catalog::confirm_token_exists(&self.state.db, &token.0).await? {
            return Err(entity::Error::InvalidToken.into());
        }
        let action = format!("/api/subscriptions/confirm?token={}", escape(&token.0));
        Ok(ConfirmPage::Page(Html(page(
            "Confirm your email",
            &format!(
                "<p>Email me once when this product is back in stock?</p>\
                 <form method=\"post\" action=\"{action}\">\
                 <button type=\"submit\">Confirm</button></form>"
            ),
        ))))
    }

    /// One-click unsubscribe (RFC 8058)
    ///
    /// The `List-Unsubscribe` URL of every restock alert. No cookie or token header needed:
    /// the `token` in the URL is the credential. Mail clients send the RFC 8058 form body
    /// `List-Unsubscribe=One-Click` (`application/x-www-form-urlencoded`); an empty body works
    /// too. The body is not read. 404 `invalid_token` for an unknown token.
    #[oai(path = "/unsubscribe", method = "post", operation_id = "unsubscribe")]
    async fn unsubscribe(
        &self,
        #[oai(validator(max_length = 512, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] token: Query<
            String,
        >,
    ) -> ApiResult<UnsubscribeResponse> {
        catalog::unsubscribe(&self.state.db, &token.0).await?;
        Ok(UnsubscribeResponse::Unsubscribed(Json(Unsubscribed {
            status: UnsubscribedStatus::Unsubscribed,
        })))
    }

    /// Unsubscribe page (changes nothing)
    ///
    /// Link scanners and prefetchers follow links with GET, so GET never unsubscribes: it
    /// shows a page whose button POSTs to this same URL.
    #[oai(
        path = "/unsubscribe",
        method = "get",
        operation_id = "getUnsubscribePage"
    )]
    async fn unsubscribe_page(
        &self,
        #[oai(validator(max_length = 512, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] token: Query<
            String,
        >,
    ) -> ApiResult<UnsubscribePage> {
        if !catalog::unsubscribe_token_exists(&self.state.db, &token.0).await? {
            return Err(entity::Error::InvalidToken.into());
        }
        let action = format!("/api/subscriptions/unsubscribe?token={}", escape(&token.0));
        Ok(UnsubscribePage::Page(Html(page(
            "Unsubscribe",
            &format!(
                "<p>Stop the restock email for this product?</p>\
                 <form method=\"post\" action=\"{action}\">\
                 <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
                 <button type=\"submit\">Unsubscribe</button></form>"
            ),
        ))))
    }
}

pub(super) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title></head><body style=\"font-family: sans-serif\">\
         <h1>{title}</h1>{body}</body></html>"
    )
}

pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
