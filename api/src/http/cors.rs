//! One CORS policy for the whole port (REST, OpenAPI, `/ws`, Socket.IO's long-polling), from
//! `CORS_ALLOWED_ORIGINS`.

use std::time::Duration;

use crate::settings::AllowedOrigins;
use hyper::header::HeaderValue;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

/// Allowed origins get their origin echoed back, any method and header, no credentials, and
/// a preflight cached for a day. Others get no `Access-Control-Allow-*` headers, so the
/// browser keeps the answer from their page; their requests are still served, since a
/// same-origin page (the storefront) sends `Origin` on its own POSTs and WebSockets too.
pub fn layer(allowed: &AllowedOrigins) -> CorsLayer {
    let origins = match allowed {
        AllowedOrigins::Any => AllowOrigin::mirror_request(),
        AllowedOrigins::Only(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        ),
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(Duration::from_secs(86_400))
}
