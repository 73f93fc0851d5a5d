//! One error shape for every failure: `{"code": "sold_out", "message": "..."}`.
//!
//! Codes are a stable snake_case enum listed in the OpenAPI document. Internal failures are
//! logged with their cause chain and answer an opaque 500.

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{
    ApiResponse, Enum, Object,
    payload::Json,
    registry::{MetaResponses, Registry},
};

/// How poem-openapi words a field its validators refuse ("... verification failed ..."), and
/// how [`crate::http::text::Checked`] words its own refusals, so both answer `validation_failed`.
pub const REFUSED_FIELD: &str = "verification failed";

/// Every error code the API can answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    ValidationFailed,
    /// A JSON body names one key twice in one object (parsers disagree on which counts).
    DuplicateJsonKey,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    TooManyRequests,
    /// No room for another live socket (`/ws` or Socket.IO): 429 when this client address
    /// has its share open (`LIVE_MAX_SOCKETS_PER_ADDRESS`), 503 when the instance is full
    /// (`LIVE_MAX_SOCKETS`); retry after `Retry-After`.
    TooManySockets,
    EmailTaken,
    InvalidCredentials,
    AccountLocked,
    DropNotFound,
    SoldOut,
    AlreadyReserved,
    PurchaseLimitReached,
    DropNotActive,
    /// The drop has stock: reserve instead of joining its waitlist.
    DropNotSoldOut,
    AlreadyWaiting,
    NotWaiting,
    /// A draw drop before its draw: enter the draw instead of reserving.
    DrawPending,
    NotADraw,
    EntriesClosed,
    AlreadyEntered,
    NotEntered,
    ReservationNotFound,
    ReservationExpired,
    ReservationReleased,
    AlreadyPurchased,
    IdempotencyKeyReused,
    RequestInProgress,
    ProductNotFound,
    SlugTaken,
    ProductInStock,
    InvalidToken,
    InvalidSignature,
    WebhookDisabled,
    OutboxDisabled,
    InternalError,
    ServiceUnavailable,
    /// The store is at its limits right now (no database connection came free in time):
    /// retry after `Retry-After` seconds.
    Overloaded,
    /// The database is not answering (restarting, unreachable, or our connection was cut):
    /// nothing was done unless said otherwise; retry after `Retry-After` seconds.
    DatabaseUnavailable,
    /// No job queue by that name (the operations console).
    QueueNotFound,
    /// No item by that id in the queue: never there, or finished and removed.
    ItemNotFound,
    WorkerNotFound,
    /// A paging cursor this listing did not give out (404: the page it names is not there).
    InvalidCursor,
    /// An operator paused the queue this needs, or quieted every worker that would take it
    /// (a worker ping).
    QueuePaused,
    /// The drop takes only accounts with a verified email (403): follow the link of the
    /// verification email, or ask for another (`POST /api/auth/verification`).
    EmailUnverified,
    /// The account's email is verified already (409).
    AlreadyVerified,
    /// This address (an IPv6 /64) took as many holds, waitlist places or draw entries of this
    /// drop as one address may (429; `Retry-After` says when the count resets).
    AddressLimitReached,
    /// This takes a solved proof-of-work challenge in `X-Altcha` (403): fetch one from
    /// `GET /api/challenge`.
    ChallengeRequired,
    /// The `X-Altcha` solution is malformed, wrong, expired or already spent (403): solve a
    /// new challenge.
    ChallengeFailed,
}

/// The body of every error response.
#[derive(Clone, Debug, Object)]
pub struct ErrorBody {
    /// Stable, machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation; wording may change.
    pub message: String,
}

/// The documented error responses (for OpenAPI); [`ApiError`] is what handlers return.
#[derive(ApiResponse)]
#[allow(dead_code)]
enum ErrorResponse {
    /// Malformed request: bad JSON, a missing or invalid field.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, invalid or revoked token, or bad webhook signature.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// Signed in, but not allowed.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such resource (or not yours).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request conflicts with the current state (sold out, already reserved, ...).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The resource existed but is no longer usable (an expired reservation).
    #[oai(status = 410)]
    Gone(Json<ErrorBody>),
    /// The body is larger than `MAX_BODY_BYTES` (128 KiB by default).
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/json` where JSON is expected.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// Well-formed but unacceptable (an idempotency key reused for another request).
    #[oai(status = 422)]
    Unprocessable(Json<ErrorBody>),
    /// Rate limit or account lockout; `Retry-After` says when to try again.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorBody>, #[oai(header = "Retry-After")] u64),
    /// Something failed on our side; the details are in our logs.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// A dependency or feature is unavailable (a disabled webhook, the job queue down,
    /// `database_unavailable`), or `overloaded`: the store is at its limits right now.
    /// `Retry-After`, when present, says when to try again.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>, #[oai(header = "Retry-After")] Option<u64>),
}

/// Requests refused as overloaded since the process started (for `/metrics`).
pub static OVERLOADED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Requests refused because the database was not answering (for `/metrics`).
pub static DATABASE_UNAVAILABLE: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ValidationFailed,
            message,
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this needs an admin account",
        )
    }

    /// 403 with `code`: signed in, but this needs more (a verified email, a solved challenge).
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn too_many(code: ErrorCode, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    /// 503 `overloaded` with `Retry-After: 1`: the request did nothing, and may be sent again.
    pub fn overloaded() -> Self {
        OVERLOADED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Overloaded,
                "the store is busy right now; try again in a moment",
            )
        }
    }

    /// 503 `database_unavailable` with `Retry-After: 1`: the database is restarting or out of
    /// reach. A write cut off at its commit may have taken effect; a retry finds out (a hold
    /// then answers `already_reserved`, a purchase with the same `Idempotency-Key` its result).
    pub fn database_unavailable() -> Self {
        DATABASE_UNAVAILABLE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::DatabaseUnavailable,
                "the database is not answering right now; try again in a moment",
            )
        }
    }

    /// Logs the cause chain and answers an opaque 500.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %entity::error::chain(error), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            "something went wrong on our side",
        )
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

impl From<entity::Error> for ApiError {
    fn from(error: entity::Error) -> Self {
        use entity::Error as E;
        let (status, code) = match &error {
            E::DropNotFound => (StatusCode::NOT_FOUND, ErrorCode::DropNotFound),
            E::SoldOut => (StatusCode::CONFLICT, ErrorCode::SoldOut),
            E::AlreadyReserved => (StatusCode::CONFLICT, ErrorCode::AlreadyReserved),
            E::PurchaseLimitReached => (StatusCode::CONFLICT, ErrorCode::PurchaseLimitReached),
            E::DropNotActive => (StatusCode::CONFLICT, ErrorCode::DropNotActive),
            E::DropNotSoldOut => (StatusCode::CONFLICT, ErrorCode::DropNotSoldOut),
            E::AlreadyWaiting => (StatusCode::CONFLICT, ErrorCode::AlreadyWaiting),
            E::NotWaiting => (StatusCode::NOT_FOUND, ErrorCode::NotWaiting),
            E::DrawPending => (StatusCode::CONFLICT, ErrorCode::DrawPending),
            E::NotADraw => (StatusCode::CONFLICT, ErrorCode::NotADraw),
            E::EntriesClosed => (StatusCode::CONFLICT, ErrorCode::EntriesClosed),
            E::AlreadyEntered => (StatusCode::CONFLICT, ErrorCode::AlreadyEntered),
            E::NotEntered => (StatusCode::NOT_FOUND, ErrorCode::NotEntered),
            E::ReservationNotFound => (StatusCode::NOT_FOUND, ErrorCode::ReservationNotFound),
            E::ReservationExpired => (StatusCode::GONE, ErrorCode::ReservationExpired),
            E::ReservationReleased => (StatusCode::GONE, ErrorCode::ReservationReleased),
            E::AlreadyPurchased => (StatusCode::CONFLICT, ErrorCode::AlreadyPurchased),
            E::EmailTaken => (StatusCode::CONFLICT, ErrorCode::EmailTaken),
            E::ProductNotFound => (StatusCode::NOT_FOUND, ErrorCode::ProductNotFound),
            E::SlugTaken => (StatusCode::CONFLICT, ErrorCode::SlugTaken),
            E::ProductInStock => (StatusCode::CONFLICT, ErrorCode::ProductInStock),
            E::InvalidToken => (StatusCode::NOT_FOUND, ErrorCode::InvalidToken),
            E::AccountGone => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            E::Invalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::ValidationFailed),
            E::Internal(_) => return Self::internal(&error),
            E::Database(db) if entity::db::is_overload(db) => {
                tracing::warn!(error = %entity::error::chain(&error), "overloaded");
                return Self::overloaded();
            }
            E::Database(db) if entity::db::is_unavailable(db) => {
                tracing::warn!(error = %entity::error::chain(&error), "database unavailable");
                return Self::database_unavailable();
            }
            E::Database(_) => return Self::internal(&error),
        };
        Self::new(status, code, error.to_string())
    }
}

/// Failures of our own machinery, not of the request: logged with their cause, opaque 500.
macro_rules! internal_errors {
    ($($error:ty),+ $(,)?) => {
        $(
            impl From<$error> for ApiError {
                fn from(error: $error) -> Self {
                    Self::internal(&error)
                }
            }
        )+
    };
}

internal_errors!(
    jsonwebtoken::errors::Error,
    serde_json::Error,
    std::io::Error,
    tokio::task::JoinError,
);

/// The job queue (Redis in distributed mode) did not take a job: nothing was done, and the
/// request may be sent again shortly.
impl From<worker::queue::QueueError> for ApiError {
    fn from(error: worker::queue::QueueError) -> Self {
        tracing::warn!(error = %entity::error::chain(&error), "job queue unavailable");
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ServiceUnavailable,
                "the job queue is unavailable; try again shortly",
            )
        }
    }
}

/// The console's reads and actions on the job stores.
impl From<worker::ops::InspectError> for ApiError {
    fn from(error: worker::ops::InspectError) -> Self {
        use worker::ops::InspectError as E;
        match error {
            // Like an unknown link token: the page it names is not there.
            E::BadCursor => Self::new(
                StatusCode::NOT_FOUND,
                ErrorCode::InvalidCursor,
                error.to_string(),
            ),
            E::Database(db) => entity::Error::Database(db).into(),
            E::Redis(_) => {
                tracing::warn!(error = %entity::error::chain(&error), "job store unavailable");
                Self {
                    retry_after: Some(1),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::ServiceUnavailable,
                        "the job store is unavailable; try again shortly",
                    )
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = Json(self.body()).with_status(self.status).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(value) = secs.to_string().parse()
        {
            response
                .headers_mut()
                .insert(poem::http::header::RETRY_AFTER, value);
        }
        response
    }
}

impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        ErrorResponse::meta()
    }

    fn register(registry: &mut Registry) {
        ErrorResponse::register(registry);
    }
}

impl From<ApiError> for poem::Error {
    fn from(error: ApiError) -> Self {
        poem::Error::from_response(error.into_response())
    }
}

/// Gives poem's own errors (unknown route, wrong method, unreadable JSON, body too large) the
/// same JSON shape as ours. Responses that already carry our JSON pass through untouched.
pub async fn uniform(error: poem::Error) -> Response {
    let status = error.status();
    let message = error.to_string();
    let response = error.into_response();
    let is_json = response
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return response;
    }
    let code = match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::TooManyRequests,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::ServiceUnavailable,
        // A field the OpenAPI document's own constraints refuse (length, pattern, range): the
        // same code as the domain's checks give, whichever of the two catches it.
        StatusCode::BAD_REQUEST if message.contains(REFUSED_FIELD) => ErrorCode::ValidationFailed,
        s if s.is_client_error() => ErrorCode::BadRequest,
        _ => ErrorCode::InternalError,
    };
    let message = match code {
        ErrorCode::NotFound => "no such route".to_owned(),
        ErrorCode::MethodNotAllowed => "method not allowed on this route".to_owned(),
        ErrorCode::PayloadTooLarge => "request body is too large".to_owned(),
        ErrorCode::InternalError => {
            tracing::error!(%status, error = %message, "unhandled error");
            "something went wrong on our side".to_owned()
        }
        _ => message,
    };
    let status = if status.is_server_error() && code != ErrorCode::ServiceUnavailable {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        status
    };
    ApiError::new(status, code, message).into_response()
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_failure_is_an_opaque_500_and_a_broken_rule_a_400() {
        let ours = ApiError::from(entity::Error::Internal("cannot hash password: oom".into()));
        assert_eq!(ours.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(ours.code, ErrorCode::InternalError);
        assert!(!ours.message.contains("oom"), "the cause stays in the log");

        let theirs = ApiError::from(entity::Error::Invalid(entity::error::Violation::Negative(
            "priceCents",
        )));
        assert_eq!(theirs.status, StatusCode::BAD_REQUEST);
        assert_eq!(theirs.code, ErrorCode::ValidationFailed);
        assert_eq!(theirs.message, "priceCents must not be negative");
    }
}
