//! A JSON string that is a string: poem-openapi's `String` also takes a number or a boolean
//! (`"password": 123456789` would become `"123456789"`), which the OpenAPI document does not
//! allow. Request bodies use [`Text`] for their string fields, so anything else is a 400.
//!
//! [`Name`], [`Description`], [`SlugText`], [`CurrencyCode`] and [`Email`] are the text
//! fields several bodies share: each states its constraints in the document once and checks
//! them with the domain's own rule when parsed, keeping what the rule made of the text (a
//! [`Slug`](entity::catalog::Slug), an [`EmailAddress`](entity::EmailAddress)), so a handler
//! never parses it again. All of them, and [`Text`], are one type, [`Checked`], under a
//! different [`Rule`].

use std::{borrow::Cow, fmt, ops::Deref};

use entity::{
    EmailAddress,
    catalog::{ProductName, Slug},
    currency::Currency,
};
use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::Value;

use crate::http::error::REFUSED_FIELD;

/// What a [`Checked`] text field allows: the document's constraints and the domain's check
/// (the same rule, so a body the document allows is never refused for its text).
pub trait Rule: Send + Sync + 'static {
    const MIN_CHARS: usize;
    /// `None`: no bound in the type (a field's validators may still set one).
    const MAX_CHARS: Option<usize>;
    /// The rule as an ECMA-262 regular expression, for the document.
    const PATTERN: Option<&'static str>;
    /// What the domain makes of a text that obeys the rule.
    type Value: AsRef<str> + Send + Sync;
    /// The domain's check: the domain's value, or what is wrong with the text.
    fn check(raw: &str) -> Result<Self::Value, String>;
}

/// Any JSON string; a field's `validator` attributes state and check its constraints.
pub struct AnyString;

impl Rule for AnyString {
    const MIN_CHARS: usize = 0;
    const MAX_CHARS: Option<usize> = None;
    const PATTERN: Option<&'static str> = None;
    type Value = String;
    fn check(raw: &str) -> Result<String, String> {
        Ok(raw.to_owned())
    }
}

/// A display name (of a drop or a product): one line, not blank, at most 200 characters.
pub struct NameRule;

impl Rule for NameRule {
    const MIN_CHARS: usize = 1;
    const MAX_CHARS: Option<usize> = Some(200);
    const PATTERN: Option<&'static str> = Some(
        r"^[^\x00-\x1f\x7f-\x9f]*[^ \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
    );
    type Value = ProductName;
    fn check(raw: &str) -> Result<ProductName, String> {
        Ok(ProductName::parse(raw)?)
    }
}

/// A description: plain text, tabs and line breaks allowed, at most 5,000 characters.
pub struct DescriptionRule;

impl Rule for DescriptionRule {
    const MIN_CHARS: usize = 0;
    const MAX_CHARS: Option<usize> = Some(5_000);
    const PATTERN: Option<&'static str> = Some(r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$");
    type Value = String;
    fn check(raw: &str) -> Result<String, String> {
        Ok(entity::text::multi_line("description", raw, 5_000)?)
    }
}

/// A product's URL name: lower-case letters, digits and single dashes, at least one letter.
pub struct SlugRule;

impl Rule for SlugRule {
    const MIN_CHARS: usize = 0;
    const MAX_CHARS: Option<usize> = Some(100);
    const PATTERN: Option<&'static str> = Some(r"^([a-z0-9]+-)*[0-9]*[a-z][a-z0-9]*(-[a-z0-9]+)*$");
    type Value = Slug;
    /// Exactly as written: the domain would also take `" Acacia "` as `acacia`, which the
    /// document does not allow.
    fn check(raw: &str) -> Result<Slug, String> {
        let slug = Slug::parse(raw)?;
        if slug.as_str() != raw {
            return Err("slug must be written in lower case, without spaces".into());
        }
        Ok(slug)
    }
}

/// An ISO 4217 code, in either case.
pub struct CurrencyRule;

impl Rule for CurrencyRule {
    const MIN_CHARS: usize = 0;
    const MAX_CHARS: Option<usize> = Some(3);
    const PATTERN: Option<&'static str> = Some(r"^[A-Za-z]{3}$");
    type Value = Currency;
    /// Exactly three letters: the domain would also take `" eur"`, which the document does
    /// not allow.
    fn check(raw: &str) -> Result<Currency, String> {
        if raw.len() != 3 {
            return Err("currency must be a three-letter ISO 4217 code".into());
        }
        Ok(Currency::parse(Some(raw))?)
    }
}

/// An email address as a person types it: the domain's rule, with only spaces or tabs
/// around it. The pattern is the document's only (ECMA-262, with a look-ahead for "no two
/// dots in a row"); [`EmailAddress::parse`] is what checks.
pub struct EmailRule;

impl Rule for EmailRule {
    const MIN_CHARS: usize = 0;
    const MAX_CHARS: Option<usize> = Some(254);
    const PATTERN: Option<&'static str> = Some(
        r"^[ \t]*(?!.*\.\.)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{0,62}[A-Za-z0-9!#$%&'*+/=?^_`{|}~-])?@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+[ \t]*$",
    );
    type Value = EmailAddress;
    /// The domain trims any white space; the document allows only spaces and tabs.
    fn check(raw: &str) -> Result<EmailAddress, String> {
        let address = raw.trim_matches([' ', '\t']);
        if address.trim() != address {
            return Err("email must not start or end with a line break".into());
        }
        EmailAddress::parse(address)
    }
}

pub type Text = Checked<AnyString>;
pub type SlugText = Checked<SlugRule>;
pub type CurrencyCode = Checked<CurrencyRule>;
pub type Name = Checked<NameRule>;
pub type Description = Checked<DescriptionRule>;
pub type Email = Checked<EmailRule>;

/// A string field that obeys `R`, as the document says, held as the domain's value.
pub struct Checked<R: Rule>(R::Value);

impl<R: Rule> Checked<R> {
    /// The domain's value the text was parsed into.
    pub fn into_value(self) -> R::Value {
        self.0
    }
}

impl<R: Rule> Deref for Checked<R> {
    type Target = str;

    fn deref(&self) -> &str {
        self.0.as_ref()
    }
}

impl<R: Rule> AsRef<str> for Checked<R> {
    fn as_ref(&self) -> &str {
        self.0.as_ref()
    }
}

impl<R: Rule> From<Checked<R>> for String {
    fn from(text: Checked<R>) -> Self {
        text.as_ref().to_owned()
    }
}

/// Passwords pass through here: never print the value.
impl<R: Rule> fmt::Debug for Checked<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Text({} chars)", self.as_ref().chars().count())
    }
}

impl<R: Rule> Type for Checked<R> {
    const IS_REQUIRED: bool = true;

    type RawValueType = Self;

    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        String::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut schema = MetaSchema::new("string");
        schema.min_length = (R::MIN_CHARS > 0).then_some(R::MIN_CHARS);
        schema.max_length = R::MAX_CHARS;
        schema.pattern = R::PATTERN.map(str::to_owned);
        MetaSchemaRef::Inline(Box::new(schema))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }

    fn is_empty(&self) -> bool {
        self.as_ref().is_empty()
    }
}

impl<R: Rule> ParseFromJSON for Checked<R> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            // Worded as poem-openapi's validators word a refusal: whichever check catches a
            // field, the client gets 400 `validation_failed`.
            Value::String(text) => within_length::<R>(&text)
                .and_then(|()| R::check(&text))
                .map(Self)
                .map_err(|why| ParseError::custom(format!("{REFUSED_FIELD}: {why}"))),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

/// The lengths the document states, counted on the text as sent (the domain's own check may
/// trim it first).
fn within_length<R: Rule>(text: &str) -> Result<(), String> {
    let chars = text.chars().count();
    if chars < R::MIN_CHARS || R::MAX_CHARS.is_some_and(|max| chars > max) {
        return Err(format!(
            "must be {} to {} characters",
            R::MIN_CHARS,
            R::MAX_CHARS.unwrap_or(usize::MAX)
        ));
    }
    Ok(())
}

impl<R: Rule> ToJSON for Checked<R> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.as_ref().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_a_json_string_is_text() {
        assert_eq!(
            Text::parse_from_json(Some(json!("123456789")))
                .ok()
                .map(String::from),
            Some("123456789".to_owned())
        );
        for other in [json!(123_456_789), json!(true), json!(null), json!(["a"])] {
            assert!(
                Text::parse_from_json(Some(other.clone())).is_err(),
                "{other}"
            );
        }
    }

    #[test]
    fn a_slug_and_a_currency_are_taken_only_as_the_document_writes_them() {
        assert!(SlugText::parse_from_json(Some(json!("acacia-honey"))).is_ok());
        for bad in ["AAA", " acacia", "acacia--honey", "-acacia", "123"] {
            assert!(
                SlugText::parse_from_json(Some(json!(bad))).is_err(),
                "{bad}"
            );
        }
        assert!(CurrencyCode::parse_from_json(Some(json!("eur"))).is_ok());
        for bad in [" EUR", "EURO", "E1R"] {
            assert!(
                CurrencyCode::parse_from_json(Some(json!(bad))).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_email_is_taken_with_spaces_or_tabs_around_it_and_nothing_else() {
        assert_eq!(
            Email::parse_from_json(Some(json!(" Ann@Example.COM\t")))
                .map(String::from)
                .ok(),
            Some("ann@example.com".to_owned())
        );
        for bad in [
            "\nann@example.com",
            "ann@example.com\u{a0}",
            "ann@example",
            "a b@x.com",
            "a..b@example.com",
        ] {
            assert!(Email::parse_from_json(Some(json!(bad))).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_name_is_one_line_and_not_blank_and_says_so_in_its_schema() {
        assert_eq!(
            Name::parse_from_json(Some(json!("  Golden Jar ")))
                .map(String::from)
                .ok(),
            Some("Golden Jar".to_owned())
        );
        for bad in [
            json!(" \u{3000} "),
            json!("two\nlines"),
            json!("x".repeat(201)),
            // 201 characters as sent, though 199 once trimmed: the document counts as sent.
            json!(format!(" {} ", "x".repeat(199))),
            json!(7),
        ] {
            assert!(Name::parse_from_json(Some(bad.clone())).is_err(), "{bad}");
        }
        let MetaSchemaRef::Inline(schema) = Name::schema_ref() else {
            panic!("an inline schema");
        };
        assert_eq!((schema.min_length, schema.max_length), (Some(1), Some(200)));
        assert!(Description::parse_from_json(Some(json!("a\tb\nc"))).is_ok());
        assert!(Description::parse_from_json(Some(json!("bell\u{7}"))).is_err());
    }
}
