//! The OpenAPI document as served at `/openapi.json`: poem-openapi's, plus what its types
//! cannot say. Each fix-up is small and says why at its head:
//!
//! - An optional request field (`Option<T>`, `MaybeUndefined<T>`) takes `null` (the same as
//!   leaving it out, or "clear it" where the field says so), so the document marks it
//!   `nullable` (with the `type` that OpenAPI 3.0 needs beside it). Response fields are left
//!   out when unset, never `null`.
//! - poem-openapi writes `security` only on operations that take a security scheme; the
//!   others are public, and say so with `security: []`.
//! - Every route answers 400 to a control character in its path or query (a middleware, before
//!   any handler), so an operation whose handler cannot fail still documents that 400.

use std::collections::{BTreeMap, BTreeSet};

use poem::{Endpoint, Response, endpoint::make_sync};
use serde_json::{Value, json};

/// `raw`, from `OpenApiService::spec`, finished as the module says.
pub fn finish(raw: &str) -> String {
    let Ok(mut document) = serde_json::from_str::<Value>(raw) else {
        return raw.to_owned();
    };
    mark_nullable(&mut document);
    declare_public_and_refused(&mut document);
    serde_json::to_string(&document).unwrap_or_else(|_| raw.to_owned())
}

/// Optional fields of request bodies (and of the schemas they use) become `nullable`.
fn mark_nullable(document: &mut Value) {
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
        collect_refs(schema, document, &mut requests);
    }
    let types: BTreeMap<String, Value> = document["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, schema)| Some((name.clone(), schema.get("type")?.clone())))
        .collect();
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
                *property = json!({"allOf": [property.clone()]});
            }
            let Some(property) = property.as_object_mut() else {
                continue;
            };
            // `nullable` means something only beside `type` (OpenAPI 3.0.3): a wrapped `$ref`
            // takes the type of the schema it names.
            if !property.contains_key("type")
                && let Some(ty) = wrapped_type(property, &types)
            {
                property.insert("type".into(), ty);
            }
            property.insert("nullable".into(), Value::Bool(true));
        }
    }
}

/// The `type` of the schema an `allOf: [{$ref}, ...]` wrapper names, if it has one.
fn wrapped_type(
    property: &serde_json::Map<String, Value>,
    types: &BTreeMap<String, Value>,
) -> Option<Value> {
    property
        .get("allOf")?
        .as_array()?
        .iter()
        .filter_map(|part| part["$ref"].as_str())
        .filter_map(|r| r.strip_prefix("#/components/schemas/"))
        .find_map(|name| types.get(name).cloned())
}

/// Operations without a security requirement get `security: []`; operations that list no
/// 400 get the one the control-character middleware answers.
fn declare_public_and_refused(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let operations = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(Value::as_object_mut);
    for operation in operations {
        operation
            .entry("security")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(responses) = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
        {
            responses.entry("400").or_insert_with(|| {
                json!({
                    "description": "The path or query holds a control character.",
                    "content": {"application/json; charset=utf-8": {
                        "schema": {"$ref": "#/components/schemas/ErrorBody"}
                    }}
                })
            });
        }
    }
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
        assert_eq!(
            schemas["In"]["properties"]["m"],
            json!({"allOf": [{"$ref": "#/components/schemas/Mode"}], "type": "string", "nullable": true}),
            "a nullable `$ref` is wrapped and typed as the schema it names"
        );
        assert_eq!(schemas["Inner"]["properties"]["d"]["nullable"], true);
        assert!(schemas["Out"]["properties"]["e"].get("nullable").is_none());
        assert_eq!(
            schemas["Mode"],
            json!({"type": "string", "enum": ["one", "two"]}),
            "an enum a request uses is left as it is"
        );
    }

    #[test]
    fn public_operations_say_so_and_every_operation_documents_a_400() {
        let raw = json!({
            "paths": {"/open": {"get": {"responses": {"200": {"description": "ok"}}}},
                      "/closed": {"get": {"security": [{"BearerAuth": []}],
                                          "responses": {"400": {"description": "mine"}}}}},
            "components": {"schemas": {}}
        });
        let done: Value =
            serde_json::from_str(&super::finish(&raw.to_string())).unwrap_or_default();
        let open = &done["paths"]["/open"]["get"];
        assert_eq!(open["security"], json!([]));
        assert_eq!(
            open["responses"]["400"]["content"]["application/json; charset=utf-8"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        let closed = &done["paths"]["/closed"]["get"];
        assert_eq!(closed["security"], json!([{"BearerAuth": []}]));
        assert_eq!(closed["responses"]["400"], json!({"description": "mine"}));
    }
}
