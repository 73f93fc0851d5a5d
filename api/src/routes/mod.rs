//! One OpenApi struct per resource, each under its tag. Each holds the [`AppState`] its
//! handlers use, given when the API is built ([`apis`]), so a handler cannot run without it
//! (poem's `Data` extractor would find it missing only at request time, as a 500).

use poem_openapi::Tags;

use crate::state::AppState;

/// A closed set of values on the wire: a poem-openapi `Enum` (so the OpenAPI document lists
/// its values and a typo does not compile) mirroring the domain enum of the same variants,
/// with the conversion from it. The domain enums stay free of HTTP concerns.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident from $domain:path {
        $($(#[$variant_meta:meta])* $variant:ident),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(poem_openapi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
        #[oai(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$variant_meta])* $variant),+
        }

        impl From<$domain> for $name {
            fn from(value: $domain) -> Self {
                use $domain as Domain;
                match value {
                    $(Domain::$variant => Self::$variant),+
                }
            }
        }
    };
}

pub mod admin_drop_stats;
pub mod admin_drops;
pub mod admin_product_stats;
pub mod admin_products;
pub mod auth;
pub mod challenge;
pub mod dev_outbox;
pub mod diagnostics;
pub mod draws;
pub mod drops;
pub mod health;
pub mod operations;
pub mod products;
pub mod reservations;
pub mod subscriptions;
pub mod verification;
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
    /// The job system, for the people who run the workers: queues, items, failures, pauses,
    /// worker processes and the audit trail (admin accounts only).
    Operations,
    /// Liveness and readiness for load balancers and orchestrators.
    Health,
}

/// All resources, in the order Swagger UI lists them, each holding the state its handlers use.
pub fn apis(state: &AppState) -> impl poem_openapi::OpenApi + use<> {
    (
        (
            auth::AuthApi {
                state: state.clone(),
            },
            verification::VerificationApi {
                state: state.clone(),
            },
            challenge::ChallengeApi {
                state: state.clone(),
            },
        ),
        drops::DropsApi {
            state: state.clone(),
        },
        waitlist::WaitlistApi {
            state: state.clone(),
        },
        draws::DrawsApi {
            state: state.clone(),
        },
        reservations::ReservationsApi {
            state: state.clone(),
        },
        products::ProductsApi {
            state: state.clone(),
        },
        subscriptions::SubscriptionsApi {
            state: state.clone(),
        },
        admin_drops::AdminDropsApi {
            state: state.clone(),
        },
        admin_drop_stats::AdminDropStatsApi {
            state: state.clone(),
        },
        admin_products::AdminProductsApi {
            state: state.clone(),
        },
        admin_product_stats::AdminProductStatsApi {
            state: state.clone(),
        },
        operations::OperationsApi {
            state: state.clone(),
        },
        dev_outbox::DevOutboxApi {
            state: state.clone(),
        },
        webhooks::WebhooksApi {
            state: state.clone(),
        },
        diagnostics::DiagnosticsApi {
            state: state.clone(),
        },
        health::HealthApi {
            state: state.clone(),
        },
    )
}
