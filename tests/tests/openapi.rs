//! The OpenAPI document says what the server does: optional fields are left out rather than
//! `null`, every refused status is documented, 405s name the allowed methods, a string field
//! takes only a string, and the largest body the document allows is accepted.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{Backend, both_backends, spawn_app};

async fn optional_fields_are_left_out_not_null(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 3).await;
    let drop = app.get(&format!("/api/drops/{drop_id}"), None).await;
    assert_eq!(drop.status, StatusCode::OK);
    assert!(drop.body.get("endsAt").is_none(), "{}", drop.body);

    let product = app
        .post(
            "/api/admin/products",
            Some(&admin.token),
            json!({"name": "Plain honey", "priceCents": 900, "inStock": true}),
        )
        .await;
    assert_eq!(product.status, StatusCode::CREATED, "{}", product.body);
    for field in ["imageUrl", "stockQuantity"] {
        assert!(
            product.body.get(field).is_none(),
            "{field}: {}",
            product.body
        );
    }

    let ready = app.get("/readyz", None).await;
    match backend {
        Backend::Embedded => assert!(ready.body.get("redis").is_none(), "{}", ready.body),
        Backend::PostgresRedis => assert_eq!(ready.body["redis"], "ok"),
    }
}

async fn a_number_where_a_string_belongs_is_a_bad_request(backend: Backend) {
    let app = spawn_app(backend).await;
    for body in [
        json!({"email": "ivy@example.com", "password": 123_456_789}),
        json!({"email": "ivy@example.com", "password": "password one", "displayName": true}),
    ] {
        let answer = app.post("/api/auth/signup", None, body.clone()).await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{body}"
        );
    }
    let admin = app.admin().await;
    let answer = app
        .post(
            "/api/admin/drops",
            Some(&admin.token),
            json!({"name": 12345, "priceCents": 100, "totalStock": 1}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
}

both_backends!(
    optional_fields_are_left_out_not_null,
    a_number_where_a_string_belongs_is_a_bad_request,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_is_answered_405_with_the_allowed_ones() {
    let app = spawn_app(Backend::Embedded).await;
    for (method, path, allowed) in [
        (Method::DELETE, "/api/auth/login", "POST"),
        (Method::PUT, "/api/drops/1", "GET, HEAD"),
        (Method::POST, "/healthz", "GET, HEAD"),
    ] {
        let answer = app.request(method.clone(), path, None, None).await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            "{method} {path}"
        );
        assert_eq!(answer.headers["allow"], allowed, "{method} {path}");
    }
}

/// The document's limits fit under the body limit even with every character escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_product_the_document_allows_is_accepted() {
    let app = spawn_app(Backend::Embedded).await;
    let admin = app.admin().await;
    let spec = app.get("/openapi.json", None).await.body;
    let limit = |schema: &str, field: &str| {
        spec["components"]["schemas"][schema]["properties"][field]["maxLength"]
            .as_u64()
            .unwrap() as usize
    };
    // 😀 outside the BMP: 12 bytes a character as a JSON escape.
    let escaped = |n: usize| r"\ud83d\ude00".repeat(n);
    let body = format!(
        r#"{{"name": "{}", "slug": "{}", "description": "{}", "priceCents": 100, "currency": "eur", "imageUrl": "https://example.com/{}", "inStock": true}}"#,
        escaped(limit("NewProductRequest", "name")),
        "a".repeat(limit("NewProductRequest", "slug")),
        escaped(limit("NewProductRequest", "description")),
        r"\u0061".repeat(limit("NewProductRequest", "imageUrl") - 20),
    );
    assert!(body.len() > 64 * 1024, "{} bytes", body.len());
    let answer = tests::answer(
        app.client
            .post(format!("{}/api/admin/products", app.address))
            .bearer_auth(&admin.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_the_statuses_the_routes_answer() {
    let app = spawn_app(Backend::Embedded).await;
    let spec = app.get("/openapi.json", None).await.body;
    let responses =
        |path: &str, method: &str| -> Value { spec["paths"][path][method]["responses"].clone() };
    let signup = responses("/api/auth/signup", "post");
    for status in ["400", "413", "415", "429"] {
        assert!(signup.get(status).is_some(), "signup lacks {status}");
    }
    let webhook = responses("/api/webhooks/contentful", "post");
    assert!(webhook.get("503").is_some(), "webhook lacks 503");
    let email = &spec["components"]["schemas"]["SignupRequest"]["properties"]["email"];
    assert!(email["pattern"].is_string(), "{email}");
}

/// Bytes a JSON value valid under `schema` can take at most, with every character of a
/// string sent as a `\u` escape (12 bytes for a character outside the BMP). `None`: no
/// bound (a string without `maxLength`, an array without `maxItems`).
fn largest(schema: &Value, spec: &Value) -> Option<usize> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next()?;
        return largest(&spec["components"]["schemas"][name], spec);
    }
    if let Some(values) = schema["enum"].as_array() {
        return values.iter().map(|v| v.to_string().len()).max();
    }
    // A value valid under all of them is bounded by the tightest bound among them (a
    // part that only describes, like `{"description": ...}`, bounds nothing).
    if let Some(all) = schema["allOf"].as_array() {
        return all.iter().filter_map(|s| largest(s, spec)).min();
    }
    match schema["type"].as_str() {
        Some("string") if schema["format"] == "date-time" => Some(64),
        Some("string") => usize::try_from(schema["maxLength"].as_u64()? * 12 + 2).ok(),
        Some("integer" | "number" | "boolean") => Some(24),
        Some("object") => {
            let properties = schema["properties"].as_object()?;
            let fields: Option<usize> = properties
                .iter()
                .map(|(key, value)| Some(key.len() + 4 + largest(value, spec)?))
                .sum();
            Some(fields? + 2)
        }
        Some("array") => {
            let items = usize::try_from(schema["maxItems"].as_u64()?).ok()?;
            Some(items * (largest(&schema["items"], spec)? + 1) + 2)
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_the_document_allows_fits_under_the_default_body_limit() {
    let app = spawn_app(Backend::Embedded).await;
    let default_limit = 128 * 1024;
    let spec = app.get("/openapi.json", None).await.body;
    let paths = spec["paths"].as_object().cloned().unwrap_or_default();
    let mut checked = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().cloned().unwrap_or_default() {
            let json = operation["requestBody"]["content"]
                .as_object()
                .and_then(|content| {
                    content
                        .iter()
                        .find(|(kind, _)| kind.starts_with("application/json"))
                })
                .map(|(_, media)| media["schema"].clone());
            let Some(schema) = json else {
                continue;
            };
            let size = largest(&schema, &spec);
            assert!(
                size.is_some_and(|s| s <= default_limit),
                "{method} {path}: a valid body can take {size:?} bytes"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} JSON bodies found");
}

/// Every field with a fixed set of values is an enum in the document, so a client knows the
/// values and a server typo cannot reach the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_sets_list_their_values() {
    let app = spawn_app(Backend::Embedded).await;
    let spec = app.get("/openapi.json", None).await.body;
    let schemas = &spec["components"]["schemas"];
    let values = |object: &str, field: &str| -> Vec<String> {
        let property = &schemas[object]["properties"][field];
        let schema = match property["$ref"].as_str() {
            Some(reference) => &schemas[reference.trim_start_matches("#/components/schemas/")],
            None => property,
        };
        let listed = schema["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{object}.{field} is not an enum: {property}"));
        listed
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        values("Drop", "status"),
        ["live", "upcoming", "entries_open"]
    );
    assert_eq!(
        values("Reservation", "status"),
        ["active", "purchased", "expired", "released"]
    );
    assert_eq!(values("WaitlistPlace", "status"), ["waiting", "offered"]);
    assert_eq!(values("User", "role"), ["customer", "admin"]);
    assert_eq!(values("AuthResponse", "tokenType"), ["Bearer"]);
    assert_eq!(
        values("DeliveryResult", "outcome"),
        [
            "applied",
            "hidden",
            "stale",
            "duplicate",
            "ignored",
            "rejected"
        ]
    );
    assert_eq!(values("Readiness", "status"), ["ok", "unavailable"]);
    assert_eq!(values("Readiness", "mode"), ["embedded", "distributed"]);
}
