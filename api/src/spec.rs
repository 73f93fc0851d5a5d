//! The OpenAPI document as served at `/openapi.json`: poem-openapi's, plus what its types
//! cannot say. An optional request field (`Option<T>`, `MaybeUndefined<T>`) takes `null`
//! (the same as leaving it out, or "clear it" where the field says so), so the document
//! marks it `nullable`. Response fields are left out when unset, never `null`.

use std::collections::BTreeSet;

use poem::{Endpoint, Response, endpoint::make_sync};
use serde_json::{Value, json};

/// `raw`, from `OpenApiService::spec`, with optional request fields marked nullable.
pub fn finish(raw: &str) -> String {
    let Ok(mut document) = serde_json::from_str::<Value>(raw) else {
        return raw.to_owned();
    };
    let mut requests = BTreeSet::new();
    let bodies: Vec<Value> = document["paths"]
        .as_object()
        .into_iter()
        .flat_map(|paths| paths.values())
        .filter_map(Value::as_object)
        .flat_map(|item| item.values())
        .filter_map(|operation| operation["requestBody"]["content"].as_object())
        .flat_map(|content| content.values())
        .map(|media| media["schema"].clone())
        .collect();
    for schema in &bodies {
        collect_refs(schema, &document, &mut requests);
    }
    for name in requests {
        let schema = &mut document["components"]["schemas"][name.as_str()];
        let required: Vec<Value> = schema["required"].as_array().cloned().unwrap_or_default();
        // `get_mut`, not `[...]`: indexing a JSON object mutably inserts `null` for a missing
        // key, and an enum's schema (no properties) would get `"properties": null`.
        let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (field, property) in properties.iter_mut() {
            if required.iter().any(|r| r == field.as_str()) {
                continue;
            }
            if property.get("$ref").is_some() {
                // A `$ref` takes no sibling keywords in OpenAPI 3.0.
                *property = json!({"allOf": [property.clone()], "nullable": true});
            } else if let Some(property) = property.as_object_mut() {
                property.insert("nullable".into(), Value::Bool(true));
            }
        }
    }
    serde_json::to_string(&document).unwrap_or_else(|_| raw.to_owned())
}

/// Names of the component schemas `schema` uses, directly or through others.
fn collect_refs(schema: &Value, document: &Value, found: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                && found.insert(name.to_owned())
            {
                collect_refs(&document["components"]["schemas"][name], document, found);
            }
            for value in map.values() {
                collect_refs(value, document, found);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_refs(item, document, found);
            }
        }
        _ => {}
    }
}

/// Serves the finished document.
pub fn endpoint(document: String) -> impl Endpoint<Output = Response> {
    make_sync(move |_| {
        Response::builder()
            .content_type("application/json")
            .body(document.clone())
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    #[test]
    fn optional_request_fields_become_nullable_and_responses_stay_as_they_are() {
        let raw = json!({
            "paths": {"/x": {"post": {
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/In"}}}},
                "responses": {"200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Out"}}}}}
            }}},
            "components": {"schemas": {
                "In": {"type": "object", "required": ["a"], "properties": {
                    "a": {"type": "string"}, "b": {"type": "string"}, "c": {"$ref": "#/components/schemas/Inner"},
                    "m": {"$ref": "#/components/schemas/Mode"}
                }},
                "Mode": {"type": "string", "enum": ["one", "two"]},
                "Inner": {"type": "object", "properties": {"d": {"type": "integer"}}},
                "Out": {"type": "object", "properties": {"e": {"type": "string"}}}
            }}
        });
        let done: Value =
            serde_json::from_str(&super::finish(&raw.to_string())).unwrap_or_default();
        let schemas = &done["components"]["schemas"];
        assert!(schemas["In"]["properties"]["a"].get("nullable").is_none());
        assert_eq!(schemas["In"]["properties"]["b"]["nullable"], true);
        assert_eq!(schemas["In"]["properties"]["c"]["nullable"], true);
        assert_eq!(schemas["Inner"]["properties"]["d"]["nullable"], true);
        assert!(schemas["Out"]["properties"]["e"].get("nullable").is_none());
        assert_eq!(
            schemas["Mode"],
            json!({"type": "string", "enum": ["one", "two"]}),
            "an enum a request uses is left as it is"
        );
    }
}
