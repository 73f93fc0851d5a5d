//! Catalog products, restock events and "notify me" subscriptions.
//!
//! A product is *available* when `in_stock` is set and its quantity (when tracked) is above
//! zero. A restock is the move from unavailable to available; it is recorded as a
//! `restock_events` row in the same transaction as the change that caused it, whether that
//! change came from the Contentful webhook or the admin API.

//!
//! - [`products`]: listing and editing products, and recording restocks.
//! - [`cms`]: applying a verified Contentful delivery.
//! - [`subscriptions`]: "notify me", its confirmation and unsubscribe links.
//! - [`quota`]: the daily cap on confirmation emails per mailbox.
//! - [`waves`]: pacing a restock's alerts in waves sized to the stock.

use chrono::Duration;

pub use crate::models::subscriptions::SubscriptionStatus;
use crate::{
    error::Violation,
    models::{products as product_rows, restock_events},
    text,
};

mod cms;
pub mod fanout;
mod products;
pub mod quota;
mod subscriptions;
pub mod waves;

pub use cms::{CmsAction, CmsDelivery, CmsOutcome, DeliveryOutcome, apply_cms};
pub use products::{create, find_visible, list, update, visible_products, waiting_count};
pub use subscriptions::{
    Confirmed, Subscribed, confirm, confirm_token_exists, subscribe, unfinished_restocks,
    unsubscribe, unsubscribe_token_exists,
};

/// How long a pending subscription waits before a new sign-up sends another confirmation.
pub const CONFIRMATION_RESEND_AFTER: Duration = Duration::minutes(10);

/// A product's URL name: lower-case letters, digits and single dashes, with at least one
/// letter so it can never be mistaken for an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    /// # Errors
    /// A message saying what is wrong with the slug.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let slug = raw.trim().to_lowercase();
        if slug.is_empty() || slug.len() > 100 {
            return Err("slug must be 1 to 100 characters".into());
        }
        let valid = slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !slug.starts_with('-')
            && !slug.ends_with('-')
            && !slug.contains("--")
            && slug.chars().any(|c| c.is_ascii_lowercase());
        if !valid {
            return Err(
                "slug may contain only a-z, 0-9 and single dashes, and needs a letter".into(),
            );
        }
        Ok(Self(slug))
    }

    /// Derives a slug from a product name ("Wildflower Honey 500 g" → `wildflower-honey-500-g`).
    ///
    /// # Errors
    /// The name has no letters to make a slug from.
    pub fn from_name(name: &str) -> Result<Self, String> {
        let mut slug = String::new();
        for c in name.trim().to_lowercase().chars() {
            if c.is_ascii_alphanumeric() {
                slug.push(c);
            } else if !slug.is_empty() && !slug.ends_with('-') {
                slug.push('-');
            }
        }
        let slug: String = slug.trim_end_matches('-').chars().take(100).collect();
        Self::parse(slug.trim_end_matches('-'))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Slug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A non-blank product name of at most 200 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    /// # Errors
    /// The name is blank, too long, or holds control characters.
    pub fn parse(raw: &str) -> Result<Self, Violation> {
        text::single_line("name", raw, 200).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ProductName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The most characters of a product's description (Contentful's long text holds more; an
/// entry past this is rejected rather than cut).
pub const MAX_DESCRIPTION: usize = 20_000;

/// A product's description: plain text of at most [`MAX_DESCRIPTION`] characters, line
/// breaks allowed.
///
/// # Errors
/// Too long, or holding control characters other than tabs and line breaks.
pub fn parse_description(raw: &str) -> Result<String, Violation> {
    text::multi_line("description", raw, MAX_DESCRIPTION)
}

/// A product photo's address: `https:` (or `http:` on localhost).
///
/// # Errors
/// Any other scheme (`javascript:`, `data:`), or no host.
pub fn parse_image_url(raw: &str) -> Result<String, Violation> {
    text::web_url("imageUrl", raw)
}

/// Everything that describes a product, parsed. `None` in `currency` or `image_url` keeps
/// the current value (`USD` and no image for a new product); `Some(None)` removes the image.
#[derive(Clone, Debug)]
pub struct ProductFields {
    pub slug: Slug,
    pub name: ProductName,
    pub description: String,
    pub price_cents: i64,
    pub currency: Option<String>,
    pub image_url: Option<Option<String>>,
    pub in_stock: bool,
    pub stock_quantity: Option<i32>,
}

/// A partial edit from the admin API; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct ProductPatch {
    pub slug: Option<Slug>,
    pub name: Option<ProductName>,
    pub description: Option<String>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
    pub image_url: Option<Option<String>>,
    pub in_stock: Option<bool>,
    pub stock_quantity: Option<Option<i32>>,
    pub visible: Option<bool>,
}

/// A product after a write, with the restock it caused (if it came back in stock).
#[derive(Clone, Debug)]
pub struct Change {
    pub product: product_rows::Model,
    pub restock: Option<restock_events::Model>,
}

/// A product as shown to visitors.
#[derive(Clone, Debug)]
pub struct ProductView {
    pub product: product_rows::Model,
    /// Confirmed subscribers not yet alerted.
    pub waiting_count: i64,
}

pub fn is_available(product: &product_rows::Model) -> bool {
    product.in_stock && product.stock_quantity != Some(0)
}

#[cfg(test)]
mod tests {
    use super::{ProductName, Slug};

    #[test]
    fn slugs_are_normalised_and_never_look_like_ids() {
        assert_eq!(
            Slug::parse(" Acacia-Honey ").map(|s| s.as_str().to_owned()),
            Ok("acacia-honey".into())
        );
        for bad in ["", "123", "a--b", "-a", "a-", "a b", "ä"] {
            assert!(Slug::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_slug_can_be_derived_from_a_name() {
        assert_eq!(
            Slug::from_name("Wildflower Honey, 500 g!").map(|s| s.as_str().to_owned()),
            Ok("wildflower-honey-500-g".into())
        );
        assert!(Slug::from_name("¡¡¡").is_err());
    }

    #[test]
    fn names_must_not_be_blank() {
        assert!(ProductName::parse("   ").is_err());
        assert!(ProductName::parse("a\u{0}b").is_err());
        assert!(ProductName::parse("a\u{1b}b").is_err());
        assert_eq!(
            ProductName::parse(" Heather honey ").map(|n| n.as_str().to_owned()),
            Ok("Heather honey".into())
        );
    }
}
