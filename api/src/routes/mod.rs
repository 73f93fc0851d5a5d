//! One OpenApi struct per resource, each under its tag.

use poem_openapi::Tags;

pub mod admin_drop_stats;
pub mod admin_drops;
pub mod admin_product_stats;
pub mod admin_products;
pub mod auth;
pub mod dev_outbox;
pub mod diagnostics;
pub mod draws;
pub mod drops;
pub mod health;
pub mod products;
pub mod reservations;
pub mod subscriptions;
pub mod waitlist;
pub mod webhooks;

#[derive(Tags)]
pub enum ApiTags {
    /// Accounts and sessions: sign up, sign in, refresh, sign out.
    Auth,
    /// Limited drops: browse, reserve for a short hold, buy.
    Drops,
    /// Your holds and purchases.
    Reservations,
    /// Catalog products, "notify me when back in stock", and its confirm and unsubscribe links.
    Products,
    /// Signed webhooks from the CMS (Contentful).
    Webhooks,
    /// Store administration (admin accounts only).
    Admin,
    /// Liveness and readiness for load balancers and orchestrators.
    Health,
}

/// All resources, in the order Swagger UI lists them.
pub fn apis() -> impl poem_openapi::OpenApi {
    (
        auth::AuthApi,
        drops::DropsApi,
        waitlist::WaitlistApi,
        draws::DrawsApi,
        reservations::ReservationsApi,
        products::ProductsApi,
        subscriptions::SubscriptionsApi,
        admin_drops::AdminDropsApi,
        admin_drop_stats::AdminDropStatsApi,
        admin_products::AdminProductsApi,
        admin_product_stats::AdminProductStatsApi,
        dev_outbox::DevOutboxApi,
        webhooks::WebhooksApi,
        diagnostics::DiagnosticsApi,
        health::HealthApi,
    )
}

#[cfg(test)]
mod tests {
    use poem_openapi::OpenApiService;
    use serde_json::Value;

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

    #[test]
    fn every_body_the_document_allows_fits_under_the_default_body_limit() {
        let default_limit = 128 * 1024;
        let spec: Value =
            serde_json::from_str(&OpenApiService::new(super::apis(), "Honeydrop", "test").spec())
                .unwrap_or_default();
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
}
