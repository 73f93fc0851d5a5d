//! What an email says: the templates (text and HTML, rendered with minijinja) and the
//! message a claimed ledger row becomes.

use entity::mail::{Content, MessageKind, OfferPayload, Outgoing, Payload, WaitlistedPayload};
use lettre::{
    Message,
    message::{
        Mailbox, MessageBuilder, MultiPart,
        header::{HeaderName, HeaderValue},
    },
};
use minijinja::{Environment, Value, context};

use super::{Mailer, SendError};

const TEMPLATES: [(&str, &str); 10] = [
    (
        "verify_email.txt",
        include_str!("../../templates/verify_email.txt"),
    ),
    (
        "verify_email.html",
        include_str!("../../templates/verify_email.html"),
    ),
    (
        "confirmation.txt",
        include_str!("../../templates/confirmation.txt"),
    ),
    (
        "confirmation.html",
        include_str!("../../templates/confirmation.html"),
    ),
    (
        "restock_alert.txt",
        include_str!("../../templates/restock_alert.txt"),
    ),
    (
        "restock_alert.html",
        include_str!("../../templates/restock_alert.html"),
    ),
    (
        "hold_offer.txt",
        include_str!("../../templates/hold_offer.txt"),
    ),
    (
        "hold_offer.html",
        include_str!("../../templates/hold_offer.html"),
    ),
    (
        "draw_waitlisted.txt",
        include_str!("../../templates/draw_waitlisted.txt"),
    ),
    (
        "draw_waitlisted.html",
        include_str!("../../templates/draw_waitlisted.html"),
    ),
];

const LIST_UNSUBSCRIBE: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe");
const LIST_UNSUBSCRIBE_POST: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe-Post");

/// The templates, parsed once.
///
/// # Errors
/// A template does not parse.
pub(super) fn load() -> Result<Environment<'static>, minijinja::Error> {
    let mut templates = Environment::new();
    for (name, source) in TEMPLATES {
        templates.add_template(name, source)?;
    }
    Ok(templates)
}

impl Mailer {
    /// Renders a claimed ledger row into a complete message.
    ///
    /// # Errors
    /// `Permanent`: the address or a template is unusable, so retrying cannot help.
    pub fn compose(&self, outgoing: &Outgoing) -> Result<Message, SendError> {
        let permanent = |e: &dyn std::fmt::Display| SendError::Permanent(e.to_string());
        let to: Mailbox = outgoing.recipient.parse().map_err(|e| permanent(&e))?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .message_id(None);
        let (builder, template, ctx) = match &outgoing.payload {
            Content::Product(product) => self.about_product(builder, outgoing, product)?,
            Content::Offer(offer) => self.offer(builder, offer),
            Content::Waitlisted(place) => self.waitlisted(builder, place),
            Content::Verification(account) => {
                self.verification(builder, &outgoing.recipient, account)
            }
        };
        let render = |suffix: &str| {
            self.templates
                .get_template(&format!("{template}.{suffix}"))
                .and_then(|t| t.render(&ctx))
                .map_err(|e| permanent(&e))
        };
        builder
            .multipart(MultiPart::alternative_plain_html(
                render("txt")?,
                render("html")?,
            ))
            .map_err(|e| permanent(&e))
    }

    /// A confirmation or a restock alert: links to the product and to unsubscribe.
    fn about_product(
        &self,
        builder: MessageBuilder,
        outgoing: &Outgoing,
        product: &Payload,
    ) -> Result<(MessageBuilder, &'static str, Value), SendError> {
        let base = &self.base_url;
        // Links are built from the configured base URL, a slug ([a-z0-9-]) and a URL-safe
        // token: nothing to escape, and escaping `/` would only make them unreadable.
        let link = Value::from_safe_string;
        let Some(unsubscribe_token) = &outgoing.unsubscribe_token else {
            return Err(SendError::Permanent(
                "a product email without an unsubscribe token".into(),
            ));
        };
        let product_url = link(format!("{base}/api/products/{}", product.product_slug));
        let unsubscribe_url =
            format!("{base}/api/subscriptions/unsubscribe?token={unsubscribe_token}");
        Ok(match outgoing.kind {
            MessageKind::SubscriptionConfirmation => {
                let Some(token) = &outgoing.confirm_token else {
                    return Err(SendError::Permanent(
                        "a confirmation without a token".into(),
                    ));
                };
                let confirm_url = format!("{base}/api/subscriptions/confirm?token={token}");
                (
                    builder.subject(format!(
                        "Confirm: tell me when {} is back",
                        product.product_name
                    )),
                    "confirmation",
                    context! {
                        product_name => product.product_name,
                        product_url => product_url,
                        confirm_url => link(confirm_url),
                        unsubscribe_url => link(unsubscribe_url),
                    },
                )
            }
            MessageKind::HoldOffer
            | MessageKind::DrawWaitlisted
            | MessageKind::AccountVerification => {
                return Err(SendError::Permanent(
                    "a drop's email written with a product's content".into(),
                ));
            }
            MessageKind::RestockAlert => (
                builder
                    .subject(format!("{} is back in stock", product.product_name))
                    // RFC 8058 one-click unsubscribe: mail clients POST to this URL.
                    .raw_header(HeaderValue::new(
                        LIST_UNSUBSCRIBE,
                        format!("<{unsubscribe_url}>"),
                    ))
                    .raw_header(HeaderValue::new(
                        LIST_UNSUBSCRIBE_POST,
                        "List-Unsubscribe=One-Click".to_owned(),
                    )),
                "restock_alert",
                context! {
                    product_name => product.product_name,
                    product_url => product_url,
                    unsubscribe_url => link(unsubscribe_url),
                },
            ),
        })
    }

    /// A waitlist offer: the drop, the deadline, and a link to the storefront.
    fn offer(
        &self,
        builder: MessageBuilder,
        offer: &OfferPayload,
    ) -> (MessageBuilder, &'static str, Value) {
        let storefront_url =
            Value::from_safe_string(format!("{}/#drop-{}", self.base_url, offer.drop_id));
        (
            builder.subject(format!("{} is held for you", offer.drop_name)),
            "hold_offer",
            context! {
                drop_name => offer.drop_name,
                expires_at => offer.expires_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                storefront_url => storefront_url,
                won_draw => offer.won_draw,
            },
        )
    }

    /// A draw not won: the entrant's place on the waitlist, and a link to the storefront.
    fn waitlisted(
        &self,
        builder: MessageBuilder,
        place: &WaitlistedPayload,
    ) -> (MessageBuilder, &'static str, Value) {
        let storefront_url =
            Value::from_safe_string(format!("{}/#drop-{}", self.base_url, place.drop_id));
        (
            builder.subject(format!(
                "The {} draw: you are number {} on the waitlist",
                place.drop_name, place.position
            )),
            "draw_waitlisted",
            context! {
                drop_name => place.drop_name,
                position => place.position,
                storefront_url => storefront_url,
            },
        )
    }
}
