//! Contentful webhooks at the edge: request verification, and turning a delivery into a
//! domain [`CmsDelivery`].
//!
//! Verification is Contentful's "request verification" exactly as `@contentful/node-apps-toolkit`
//! implements it (`verifyRequest`/`signRequest`), so a webhook signed by Contentful verifies
//! here byte for byte:
//!
//! * canonical request = `METHOD` `\n` normalised path `\n` signed headers `\n` raw body;
//! * signed headers: the request's headers named in `x-contentful-signed-headers` (names
//!   lower-cased and trimmed, values trimmed), plus that header itself and
//!   `x-contentful-timestamp`, sorted by name, each `name:value`, joined by `;` — the
//!   signed-headers value is the sorted list of those names joined by `,`;
//! * the path is normalised as the toolkit does: the query (up to a second `?`) is
//!   `querystring.escape`d, then the whole is passed through `encodeURI`;
//! * signature = lower-case hex HMAC-SHA256 keyed with the secret, compared in constant time.

use std::collections::BTreeMap;

use entity::catalog::{self, CmsAction, CmsDelivery, ProductFields, ProductName, Slug};
use hmac::{Hmac, Mac};
use poem::http::HeaderMap;
use serde_json::Value;
use sha2::Sha256;

pub const SIGNATURE: &str = "x-contentful-signature";
pub const SIGNED_HEADERS: &str = "x-contentful-signed-headers";
pub const TIMESTAMP: &str = "x-contentful-timestamp";
pub const TOPIC: &str = "x-contentful-topic";
pub const IDEMPOTENCY_KEY: &str = "x-contentful-idempotency-key";

/// The content type id of catalog products in Contentful.
pub const PRODUCT_CONTENT_TYPE: &str = "product";

/// Timestamps before 2020 are refused outright, as the toolkit does.
const EARLIEST_TIMESTAMP_MS: i64 = 1_577_836_800_000;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the {0} header is missing")]
    Missing(&'static str),
    #[error("the {0} header is malformed")]
    Malformed(&'static str),
    #[error("the request is older (or newer) than the allowed window")]
    Stale,
    #[error("the {0} header must be among the signed headers")]
    Unsigned(&'static str),
    #[error("the signature does not match")]
    Mismatch,
}

/// Checks a request's signature and age. `now_ms` and `ttl_ms` are unix milliseconds.
///
/// A timestamp further in the future than the TTL is refused too (the toolkit only checks
/// the past): a signed request must not stay replayable until some far-off instant.
///
/// # Errors
/// Why the request is not one Contentful signed within the last `ttl_ms`.
pub fn verify(
    secret: &str,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_ms: i64,
    ttl_ms: i64,
) -> Result<(), VerifyError> {
    let normalized = normalize_headers(headers);
    let signature = normalized
        .get(SIGNATURE)
        .ok_or(VerifyError::Missing(SIGNATURE))?;
    let signature = hex::decode(signature).map_err(|_| VerifyError::Malformed(SIGNATURE))?;
    if signature.len() != 32 {
        return Err(VerifyError::Malformed(SIGNATURE));
    }
    let signed: Vec<String> = normalized
        .get(SIGNED_HEADERS)
        .ok_or(VerifyError::Missing(SIGNED_HEADERS))?
        .split(',')
        .map(str::to_owned)
        .collect();
    if signed.len() < 2 {
        return Err(VerifyError::Malformed(SIGNED_HEADERS));
    }
    // The topic decides what a delivery does (publish or delete): Contentful signs it, and an
    // unsigned one could be changed in flight within the TTL.
    if !signed.iter().any(|name| name == TOPIC) {
        return Err(VerifyError::Unsigned(TOPIC));
    }
    let timestamp: i64 = normalized
        .get(TIMESTAMP)
        .ok_or(VerifyError::Missing(TIMESTAMP))?
        .parse()
        .map_err(|_| VerifyError::Malformed(TIMESTAMP))?;
    if timestamp <= EARLIEST_TIMESTAMP_MS {
        return Err(VerifyError::Malformed(TIMESTAMP));
    }
    if now_ms - timestamp >= ttl_ms || timestamp - now_ms >= ttl_ms {
        return Err(VerifyError::Stale);
    }
    let picked: BTreeMap<String, String> = normalized
        .into_iter()
        .filter(|(name, _)| signed.contains(name))
        .collect();
    let mut mac = keyed(secret);
    mac.update(&canonical(method, path_and_query, picked, body, timestamp).0);
    mac.verify_slice(&signature)
        .map_err(|_| VerifyError::Mismatch)
}

/// Signs a request as Contentful does: returns `(signature, signed_headers)` for the given
/// headers (names and values as they will be sent) and timestamp.
pub fn sign(
    secret: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timestamp_ms: i64,
) -> (String, String) {
    let normalized: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    let (canonical, signed_headers) =
        canonical(method, path_and_query, normalized, body, timestamp_ms);
    let mut mac = keyed(secret);
    mac.update(&canonical);
    (hex::encode(mac.finalize().into_bytes()), signed_headers)
}

fn keyed(secret: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

/// The canonical request and the signed-headers value it contains.
fn canonical(
    method: &str,
    path_and_query: &str,
    mut headers: BTreeMap<String, String>,
    body: &[u8],
    timestamp_ms: i64,
) -> (Vec<u8>, String) {
    headers.insert(TIMESTAMP.to_owned(), timestamp_ms.to_string());
    headers.insert(SIGNED_HEADERS.to_owned(), String::new());
    let signed_headers = headers.keys().cloned().collect::<Vec<_>>().join(",");
    headers.insert(SIGNED_HEADERS.to_owned(), signed_headers.clone());
    let header_line = headers
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(";");
    let mut out = Vec::with_capacity(body.len() + 256);
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(normalize_path(path_and_query).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(header_line.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(body);
    (out, signed_headers)
}

/// Header names lower-cased and trimmed, values trimmed; repeated headers joined by `, `
/// (as Node presents them to the toolkit).
fn normalize_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).trim().to_owned();
        out.entry(name.as_str().trim().to_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

/// `encodeURI(search ? pathname + "?" + querystring.escape(search) : pathname)`, where
/// `[pathname, search] = uri.split("?")`.
fn normalize_path(uri: &str) -> String {
    let mut parts = uri.split('?');
    let pathname = parts.next().unwrap_or_default();
    let joined = match parts.next().filter(|s| !s.is_empty()) {
        Some(search) => format!("{pathname}?{}", percent_encode(search, "-_.!~*'()")),
        None => pathname.to_owned(),
    };
    percent_encode(&joined, "-_.!~*'();/?:@&=+$,#")
}

/// Percent-encodes every byte except ASCII letters, digits and `keep`, with upper-case hex,
/// as JavaScript's `encodeURI`/`encodeURIComponent` do.
fn percent_encode(input: &str, keep: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for byte in input.bytes() {
        if byte.is_ascii_alphanumeric() || (byte.is_ascii() && keep.contains(char::from(byte))) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Turns a verified delivery into what the domain should do with it. Nothing here fails:
/// whatever cannot be applied becomes [`CmsAction::Reject`] or [`CmsAction::Ignore`] with
/// its reason, to be recorded and acknowledged.
pub fn parse_delivery(
    topic: Option<&str>,
    idempotency_key: Option<&str>,
    body: &[u8],
    locale: &str,
) -> CmsDelivery {
    let topic = topic.unwrap_or_default().trim().to_owned();
    let idempotency_key = idempotency_key
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| {
            if k.len() <= 200 {
                k.to_owned()
            } else {
                entity::tokens::hash(k)
            }
        });
    let mut delivery = CmsDelivery {
        idempotency_key,
        topic,
        entry_id: None,
        version: None,
        action: CmsAction::Ignore(String::new()),
    };
    let json: Value = match serde_json::from_slice(body) {
        Ok(json) => json,
        Err(e) => {
            delivery.action = CmsAction::Reject(format!("the body is not JSON: {e}"));
            return delivery;
        }
    };
    let sys = &json["sys"];
    delivery.version = sys["version"].as_i64();
    match sys["id"].as_str().map(entry_id).transpose() {
        Ok(id) => {
            delivery.entry_id = id;
            delivery.action = action(&delivery.topic, &json, locale);
        }
        Err(reason) => delivery.action = CmsAction::Reject(reason),
    }
    delivery
}

/// Contentful entry ids are 1 to 64 letters, digits, `-`, `_` and `.`; anything else (a NUL
/// byte, say) could never name an entry and is not stored.
fn entry_id(raw: &str) -> Result<String, String> {
    let valid = (1..=64).contains(&raw.len())
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(raw.to_owned())
    } else {
        Err("sys.id must be 1 to 64 letters, digits, '-', '_' or '.'".into())
    }
}

fn action(topic: &str, json: &Value, locale: &str) -> CmsAction {
    let mut parts = topic.split('.');
    let (Some(_), Some(entity), Some(event)) = (parts.next(), parts.next(), parts.next()) else {
        return CmsAction::Ignore(format!("topic {topic:?} is not acted on"));
    };
    if entity != "Entry" {
        return CmsAction::Ignore(format!("{entity} events are not acted on"));
    }
    let content_type = json["sys"]["contentType"]["sys"]["id"].as_str();
    match event {
        "publish" => {
            if content_type != Some(PRODUCT_CONTENT_TYPE) {
                return CmsAction::Ignore(format!(
                    "content type {content_type:?} is not {PRODUCT_CONTENT_TYPE:?}"
                ));
            }
            match product_fields(&json["fields"], locale) {
                Ok(fields) => CmsAction::Publish(Box::new(fields)),
                Err(reason) => CmsAction::Reject(reason),
            }
        }
        "unpublish" | "archive" | "delete" => match content_type {
            Some(other) if other != PRODUCT_CONTENT_TYPE => CmsAction::Ignore(format!(
                "content type {other:?} is not {PRODUCT_CONTENT_TYPE:?}"
            )),
            _ => CmsAction::Hide,
        },
        other => CmsAction::Ignore(format!("Entry.{other} is not acted on")),
    }
}

/// The product fields of an entry in `locale`.
///
/// # Errors
/// Why the entry can never become a product.
pub fn product_fields(fields: &Value, locale: &str) -> Result<ProductFields, String> {
    let field = |name: &str| {
        let value = &fields[name][locale];
        (!value.is_null()).then_some(value)
    };
    let name = field("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the entry has no name in locale {locale}"))?;
    let name = ProductName::parse(name)?;
    let slug = match field("slug") {
        Some(slug) => Slug::parse(slug.as_str().ok_or("slug must be text")?)?,
        None => Slug::from_name(name.as_str())?,
    };
    let description = match field("description") {
        Some(d) => catalog::parse_description(d.as_str().ok_or("description must be text")?)?,
        None => String::new(),
    };
    let price = field("price")
        .ok_or("the entry has no price")?
        .as_f64()
        .ok_or("price must be a number")?;
    if !(0.0..=1_000_000_000.0).contains(&price) {
        return Err("price must be between 0 and 1000000000".into());
    }
    #[allow(clippy::cast_possible_truncation)]
    let price_cents = (price * 100.0).round() as i64;
    let in_stock = match field("inStock") {
        Some(v) => v.as_bool().ok_or("inStock must be a boolean")?,
        None => false,
    };
    let stock_quantity = match field("stockQuantity") {
        Some(v) => Some(
            v.as_i64()
                .and_then(|q| i32::try_from(q).ok())
                .filter(|q| *q >= 0)
                .ok_or("stockQuantity must be a whole number, 0 or more")?,
        ),
        None => None,
    };
    Ok(ProductFields {
        slug,
        name,
        description,
        price_cents,
        currency: None,
        image_url: None,
        in_stock,
        stock_quantity,
    })
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::panic)]
mod tests {
    use poem::http::{HeaderMap, HeaderName, HeaderValue};

    use super::*;

    const SECRET: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const AT: i64 = 1_767_225_600_000;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        map
    }

    // Both vectors were produced with Contentful's own toolkit, independently of this code:
    //
    //   npm install @contentful/node-apps-toolkit
    //   node -e '
    //     const { signRequest } = require("@contentful/node-apps-toolkit");
    //     const secret = "a".repeat(32) + "b".repeat(32);
    //     console.log(signRequest(secret, { method: "POST", path: "/api/webhooks/contentful",
    //       headers: { "Content-Type": "application/vnd.contentful.management.v1+json",
    //                  "X-Contentful-Topic": "ContentManagement.Entry.publish" },
    //       body: "{\"sys\":{\"id\":\"honey-1\",\"type\":\"Entry\",\"version\":3}}" }, 1767225600000));
    //     console.log(signRequest(secret, { method: "POST",
    //       path: "/api/webhooks/contentful?space=main&x=a b",
    //       headers: { " X-Contentful-Topic ": "  ContentManagement.Entry.publish  " },
    //       body: "héllo" }, 1767225600000));'
    const VECTOR_BODY: &str = r#"{"sys":{"id":"honey-1","type":"Entry","version":3}}"#;
    const VECTOR_SIGNATURE: &str =
        "438bf03138d4cba82a2db66a5be482e46442ee262d6b0e23f6f97557a0d29a98";
    const VECTOR_SIGNED: &str =
        "content-type,x-contentful-signed-headers,x-contentful-timestamp,x-contentful-topic";
    const QUERY_SIGNATURE: &str =
        "71384f5afeeeba995c86d98d991614ede8931983759b3352ce304108e89669e8";

    fn vector_request() -> HeaderMap {
        headers(&[
            (
                "content-type",
                "application/vnd.contentful.management.v1+json",
            ),
            ("x-contentful-topic", "ContentManagement.Entry.publish"),
            ("x-contentful-signature", VECTOR_SIGNATURE),
            ("x-contentful-signed-headers", VECTOR_SIGNED),
            ("x-contentful-timestamp", "1767225600000"),
            ("x-unsigned-extra", "ignored"),
        ])
    }

    #[test]
    fn signing_matches_contentfuls_toolkit() {
        let signed = sign(
            SECRET,
            "POST",
            "/api/webhooks/contentful",
            &[
                (
                    "Content-Type",
                    "application/vnd.contentful.management.v1+json",
                ),
                ("X-Contentful-Topic", "ContentManagement.Entry.publish"),
            ],
            VECTOR_BODY.as_bytes(),
            AT,
        );
        assert_eq!(signed, (VECTOR_SIGNATURE.into(), VECTOR_SIGNED.into()));
    }

    #[test]
    fn paths_with_queries_and_untrimmed_headers_match_the_toolkit() {
        let (signature, _) = sign(
            SECRET,
            "POST",
            "/api/webhooks/contentful?space=main&x=a b",
            &[(
                " X-Contentful-Topic ",
                "  ContentManagement.Entry.publish  ",
            )],
            "héllo".as_bytes(),
            AT,
        );
        assert_eq!(signature, QUERY_SIGNATURE);
    }

    /// Verifies a request to the webhook's path, signed with the vector's secret, received
    /// at `now`, with the default 30 s tolerance.
    fn verify_at(request: &HeaderMap, body: &[u8], now: i64) -> Result<(), VerifyError> {
        verify(
            SECRET,
            "POST",
            "/api/webhooks/contentful",
            request,
            body,
            now,
            30_000,
        )
    }

    #[test]
    fn a_toolkit_signed_request_verifies() {
        let verified = verify_at(&vector_request(), VECTOR_BODY.as_bytes(), AT + 1_000);
        assert_eq!(verified, Ok(()));
    }

    #[test]
    fn any_change_to_a_signed_request_fails_verification() {
        let ok = |body: &str, path: &str, secret: &str| {
            verify(
                secret,
                "POST",
                path,
                &vector_request(),
                body.as_bytes(),
                AT,
                30_000,
            )
        };
        let tampered = VECTOR_BODY.replace('3', "4");
        assert_eq!(
            ok(&tampered, "/api/webhooks/contentful", SECRET),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            ok(VECTOR_BODY, "/api/webhooks/other", SECRET),
            Err(VerifyError::Mismatch)
        );
        let other_secret = "c".repeat(64);
        assert_eq!(
            ok(VECTOR_BODY, "/api/webhooks/contentful", &other_secret),
            Err(VerifyError::Mismatch)
        );
        let mut changed_header = vector_request();
        changed_header.insert(
            "x-contentful-topic",
            HeaderValue::from_static("ContentManagement.Entry.delete"),
        );
        assert_eq!(
            verify_at(&changed_header, VECTOR_BODY.as_bytes(), AT),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn stale_missing_and_malformed_signatures_are_refused() {
        let body = VECTOR_BODY.as_bytes();
        assert_eq!(
            verify_at(&vector_request(), body, AT + 30_000),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify_at(&vector_request(), body, AT - 60_000),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify_at(&HeaderMap::new(), body, AT),
            Err(VerifyError::Missing(SIGNATURE))
        );
        let mut bad = vector_request();
        bad.insert("x-contentful-signature", HeaderValue::from_static("zz"));
        assert_eq!(
            verify_at(&bad, body, AT),
            Err(VerifyError::Malformed(SIGNATURE))
        );
    }

    #[test]
    fn a_topic_left_out_of_the_signed_headers_is_refused() {
        let path = "/api/webhooks/contentful";
        let content_type = "application/vnd.contentful.management.v1+json";
        let (signature, signed) = sign(
            SECRET,
            "POST",
            path,
            &[("Content-Type", content_type)],
            VECTOR_BODY.as_bytes(),
            AT,
        );
        let at = AT.to_string();
        let request = headers(&[
            ("content-type", content_type),
            ("x-contentful-topic", "ContentManagement.Entry.delete"),
            ("x-contentful-signature", &signature),
            ("x-contentful-signed-headers", &signed),
            ("x-contentful-timestamp", &at),
        ]);
        assert_eq!(
            verify_at(&request, VECTOR_BODY.as_bytes(), AT),
            Err(VerifyError::Unsigned(TOPIC))
        );
    }

    /// The delivery is refused with a reason that mentions `why`.
    fn assert_rejected(delivery: &CmsDelivery, why: &str) {
        assert!(
            matches!(&delivery.action, CmsAction::Reject(reason) if reason.contains(why)),
            "{delivery:?}"
        );
    }

    #[test]
    fn entry_ids_and_names_with_control_characters_are_rejected_not_stored() {
        let topic = Some("ContentManagement.Entry.publish");
        let bad_id =
            br#"{"sys":{"id":"e\u0000","version":2,"contentType":{"sys":{"id":"product"}}},
            "fields":{"name":{"en-US":"Honey"},"price":{"en-US":5}}}"#;
        let delivery = parse_delivery(topic, None, bad_id, "en-US");
        assert_rejected(&delivery, "sys.id");
        assert_eq!(delivery.entry_id, None);
        let bad_name = br#"{"sys":{"id":"e1","version":2,"contentType":{"sys":{"id":"product"}}},
            "fields":{"name":{"en-US":"Ho\u0000ney"},"price":{"en-US":5}}}"#;
        let delivery = parse_delivery(topic, None, bad_name, "en-US");
        assert_rejected(&delivery, "control");
    }

    #[test]
    fn entries_without_a_name_are_rejected_with_a_reason() {
        let body = br#"{"sys":{"id":"e1","version":2,"contentType":{"sys":{"id":"product"}}},
            "fields":{"price":{"en-US":5}}}"#;
        let delivery = parse_delivery(Some("ContentManagement.Entry.publish"), None, body, "en-US");
        assert_rejected(&delivery, "no name");
    }

    #[test]
    fn publish_fields_are_read_in_the_configured_locale() {
        let body = br#"{"sys":{"id":"e1","version":2,"contentType":{"sys":{"id":"product"}}},
            "fields":{"name":{"de-DE":"Waldhonig"},"price":{"de-DE":12.5},
                      "inStock":{"de-DE":true},"stockQuantity":{"de-DE":7}}}"#;
        let delivery = parse_delivery(
            Some("ContentManagement.Entry.publish"),
            Some("k1"),
            body,
            "de-DE",
        );
        let CmsAction::Publish(fields) = delivery.action else {
            panic!("not a publish: {delivery:?}");
        };
        assert_eq!(fields.slug.as_str(), "waldhonig");
        assert_eq!(fields.price_cents, 1250);
        assert_eq!((fields.in_stock, fields.stock_quantity), (true, Some(7)));
        assert_eq!(delivery.version, Some(2));
    }

    #[test]
    fn other_topics_and_content_types_are_ignored() {
        let body = br#"{"sys":{"id":"e1","version":2,"contentType":{"sys":{"id":"blogPost"}}}}"#;
        for topic in [
            "ContentManagement.Entry.auto_save",
            "ContentManagement.Asset.publish",
            "ContentManagement.Entry.publish",
            "nonsense",
        ] {
            let delivery = parse_delivery(Some(topic), None, body, "en-US");
            assert!(matches!(delivery.action, CmsAction::Ignore(_)), "{topic}");
        }
    }
}
