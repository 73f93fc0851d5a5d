//! One OpenApi struct per resource, each under its tag.

use poem_openapi::Tags;

pub mod admin_drops;
pub mod auth;
pub mod diagnostics;
pub mod drops;
pub mod health;
pub mod reservations;

#[derive(Tags)]
pub enum ApiTags {
    /// Accounts and sessions: sign up, sign in, refresh, sign out.
    Auth,
    /// Limited drops: browse, reserve for a short hold, buy.
    Drops,
    /// Your holds and purchases.
    Reservations,
    /// Store administration (admin accounts only).
    Admin,
    /// Liveness and readiness for load balancers and orchestrators.
    Health,
}

/// All resources, in the order Swagger UI lists them.
pub fn apis() -> (
    auth::AuthApi,
    drops::DropsApi,
    reservations::ReservationsApi,
    admin_drops::AdminDropsApi,
    diagnostics::DiagnosticsApi,
    health::HealthApi,
) {
    (
        auth::AuthApi,
        drops::DropsApi,
        reservations::ReservationsApi,
        admin_drops::AdminDropsApi,
        diagnostics::DiagnosticsApi,
        health::HealthApi,
    )
}
