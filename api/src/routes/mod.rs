//! One OpenApi struct per resource, each under its tag.

use poem_openapi::Tags;

pub mod admin_drops;
pub mod admin_product_stats;
pub mod admin_products;
pub mod auth;
pub mod dev_outbox;
pub mod diagnostics;
pub mod drops;
pub mod health;
pub mod products;
pub mod reservations;
pub mod subscriptions;
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
        reservations::ReservationsApi,
        products::ProductsApi,
        subscriptions::SubscriptionsApi,
        admin_drops::AdminDropsApi,
        admin_products::AdminProductsApi,
        admin_product_stats::AdminProductStatsApi,
        dev_outbox::DevOutboxApi,
        webhooks::WebhooksApi,
        diagnostics::DiagnosticsApi,
        health::HealthApi,
    )
}
