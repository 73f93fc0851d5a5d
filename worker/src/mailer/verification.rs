//! The verification email of a new account: a link whose token is minted as the email is
//! written (see `entity::tokens::verification_token`), never stored.

use chrono::Utc;
use entity::mail::VerificationPayload;
use lettre::message::MessageBuilder;
use minijinja::{Value, context};

use super::Mailer;

impl Mailer {
    pub(super) fn verification(
        &self,
        builder: MessageBuilder,
        recipient: &str,
        account: &VerificationPayload,
    ) -> (MessageBuilder, &'static str, Value) {
        let expires = Utc::now() + self.verification_ttl;
        let token = entity::tokens::verification_token(
            self.verification_key.expose(),
            account.user_id,
            recipient,
            expires.timestamp(),
        );
        // The token is digits, dots and URL-safe base64: nothing to escape.
        let verify_url = Value::from_safe_string(format!(
            "{}/api/auth/verify-email?token={token}",
            self.base_url
        ));
        (
            builder.subject("Verify your email for Honeydrop"),
            "verify_email",
            context! {
                verify_url => verify_url,
                expires_at => expires.format("%Y-%m-%d %H:%M").to_string(),
            },
        )
    }
}
