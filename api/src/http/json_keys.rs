//! A JSON body that names one key twice is refused (400 `duplicate_json_key`), before any
//! handler reads it: parsers disagree on which of the two counts (serde keeps the last, some
//! keep the first), so a proxy or a signature check in front of us could have read a
//! different request than the one we would act on.

use std::{collections::HashSet, fmt, sync::Arc};

use poem::{Endpoint, IntoResponse, Request, Response, http::StatusCode};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::http::error::{ApiError, ErrorCode};

/// Runs before the handler on every request whose body is declared JSON.
pub async fn refuse_duplicate_keys<E: Endpoint>(
    next: Arc<E>,
    mut req: Request,
) -> poem::Result<Response> {
    let is_json = req
        .header("content-type")
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    if is_json {
        let body = req.take_body().into_bytes().await?;
        if let Some(key) = first_duplicate(&body) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::DuplicateJsonKey,
                format!("the JSON body names the key {key:?} twice in one object"),
            )
            .into());
        }
        req.set_body(body);
    }
    next.call(req).await.map(IntoResponse::into_response)
}

/// The first key named twice in one object of `body`; `None` when there is none, or when
/// `body` is not JSON at all (the handler's own parser then says what is wrong).
pub fn first_duplicate(body: &[u8]) -> Option<String> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    match Walk.deserialize(&mut deserializer) {
        Err(error) => {
            let message = error.to_string();
            message
                .strip_prefix(DUPLICATE)
                .and_then(|rest| rest.split(" at line").next())
                .map(str::to_owned)
        }
        Ok(()) => None,
    }
}

/// Prefix of the error [`Walk`] stops with.
const DUPLICATE: &str = "duplicate key: ";

/// Walks a JSON value, keeping nothing but each object's key set.
#[derive(Clone, Copy)]
struct Walk;

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value_seed(self)?;
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("{DUPLICATE}{key}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::first_duplicate;

    #[test]
    fn a_key_named_twice_in_one_object_is_found_at_any_depth() {
        assert_eq!(first_duplicate(br#"{"a":1,"a":2}"#).as_deref(), Some("a"));
        assert_eq!(
            first_duplicate(br#"{"x":[{"b":1,"c":{"d":1,"d":1}}]}"#).as_deref(),
            Some("d")
        );
        assert_eq!(
            first_duplicate(br#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#),
            None
        );
        assert_eq!(first_duplicate(b"not json"), None);
        assert_eq!(
            first_duplicate(br#"{"a\u0062":1,"ab":2}"#).as_deref(),
            Some("ab")
        );
    }
}
