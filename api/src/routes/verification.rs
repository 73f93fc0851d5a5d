use std::time::Duration;

use chrono::Utc;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Query, payload::Html, payload::Json};

use super::{
    ApiTags,
    subscriptions::{escape, page},
};
use crate::{
    auth::BearerAuth,
    http::error::{ApiError, ApiResult, ErrorCode},
    state::AppState,
};

pub struct VerificationApi {
    pub state: AppState,
}

/// How often one account may ask for another verification email.
const RESEND_EVERY: Duration = Duration::from_secs(60);

#[derive(Object)]
struct VerificationSent {
    status: SentStatus,
}

/// Always `sent`.
#[derive(poem_openapi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
enum SentStatus {
    Sent,
}

#[derive(ApiResponse)]
enum Resent {
    /// Another verification email is on its way; the links of earlier ones still work.
    #[oai(status = 202)]
    Accepted(Json<VerificationSent>),
}

#[derive(ApiResponse)]
enum VerifyPage {
    /// A page with a button that verifies (by POST). Nothing has changed yet.
    #[oai(status = 200)]
    Page(Html<String>),
}

#[derive(ApiResponse)]
enum Verified {
    /// Verified (also when it already was): a page saying so.
    #[oai(status = 200)]
    Page(Html<String>),
}

#[OpenApi(prefix_path = "/api/auth", tag = "ApiTags::Auth")]
impl VerificationApi {
    /// Send the verification email again
    ///
    /// For the signed-in account, once a minute at most (429 otherwise). 409
    /// `already_verified` once the email is verified.
    #[oai(
        path = "/verification",
        method = "post",
        operation_id = "resendVerification"
    )]
    async fn resend(&self, auth: BearerAuth) -> ApiResult<Resent> {
        let user_id = auth.0.user_id;
        let key = format!("verify-resend:{user_id}");
        let window = self.state.limiter.hit(&key, RESEND_EVERY).await;
        if window.count > 1 {
            return Err(ApiError::too_many(
                ErrorCode::TooManyRequests,
                "a verification email was sent a moment ago; check your inbox",
                window.resets_in.as_secs_f64().ceil() as u64,
            ));
        }
        let Some(message_id) =
            entity::verification::send_again(&self.state.db, user_id, Utc::now()).await?
        else {
            return Err(ApiError::new(
                poem::http::StatusCode::CONFLICT,
                ErrorCode::AlreadyVerified,
                "this account's email is verified already",
            ));
        };
        self.state.effects.emails_queued(&[message_id]).await;
        Ok(Resent::Accepted(Json(VerificationSent {
            status: SentStatus::Sent,
        })))
    }

    /// Verify-email page (changes nothing)
    ///
    /// The link of the verification email. Link scanners and prefetchers follow links with
    /// GET (and HEAD), so this never verifies: it shows a page whose button POSTs to this
    /// same URL. 404 `invalid_token` for a link that is malformed, forged or expired.
    #[oai(
        path = "/verify-email",
        method = "get",
        operation_id = "getVerifyEmailPage"
    )]
    async fn verify_page(
        &self,
        #[oai(validator(max_length = 512, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] token: Query<
            String,
        >,
    ) -> ApiResult<VerifyPage> {
        let key = self.state.settings.abuse.verification_key.expose();
        let user =
            entity::verification::account_of(&self.state.db, key, &token.0, Utc::now()).await?;
        let action = format!("/api/auth/verify-email?token={}", escape(&token.0));
        Ok(VerifyPage::Page(Html(page(
            "Verify your email",
            &format!(
                "<p>Verify <strong>{}</strong> for your Honeydrop account?</p>\
                 <form method=\"post\" action=\"{action}\">\
                 <button type=\"submit\">Verify my email</button></form>",
                escape(&user.email)
            ),
        ))))
    }

    /// Verify an email address
    ///
    /// What the button of the verify-email page sends. Marks the account as verified;
    /// again is harmless. 404 `invalid_token` for a link that is malformed, forged or
    /// expired. The body is not read.
    #[oai(path = "/verify-email", method = "post", operation_id = "verifyEmail")]
    async fn verify(
        &self,
        #[oai(validator(max_length = 512, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))] token: Query<
            String,
        >,
    ) -> ApiResult<Verified> {
        let key = self.state.settings.abuse.verification_key.expose();
        entity::verification::verify(&self.state.db, key, &token.0, Utc::now()).await?;
        Ok(Verified::Page(Html(page(
            "Your email is verified",
            "<p>Thank you. Drops that take only verified buyers are open to you now.</p>",
        ))))
    }
}
