//! `Idempotency-Key`: a retried request gets the answer of the first, whatever its type.

use std::future::Future;

use chrono::Utc;
use entity::idempotency::{self, Begin, IdempotencyKey};
use poem::http::StatusCode;
use poem_openapi::types::{ParseFromJSON, ToJSON};

use crate::http::error::{ApiError, ApiResult, ErrorBody, ErrorCode};

/// Runs `operation` once per `(user, key)`: a retry with the same key gets the stored answer
/// (its `T` on success, or the same error), the same key for another `request` gets 422, and
/// a retry while the first is still running gets 409. Without a key it simply runs. Server
/// failures are not stored, so a retry after one runs again.
///
/// # Errors
/// Whatever `operation` answers, or the refusals above.
pub async fn once<T, F, Fut>(
    db: &entity::db::Db,
    user_id: i64,
    key: Option<&str>,
    request: &str,
    operation: F,
) -> ApiResult<T>
where
    T: ToJSON + ParseFromJSON,
    F: FnOnce() -> Fut,
    Fut: Future<Output = ApiResult<T>>,
{
    let Some(raw) = key else {
        return operation().await;
    };
    let key = IdempotencyKey::parse(raw).map_err(ApiError::bad_request)?;
    match idempotency::begin(db, user_id, &key, request, Utc::now()).await? {
        Begin::Proceed => {}
        Begin::Replay { status, body } => return replay(status, &body),
        Begin::Mismatch => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used for a different request",
            ));
        }
        Begin::InFlight => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::RequestInProgress,
                "a request with this Idempotency-Key is still being processed",
            ));
        }
    }
    let outcome = operation().await;
    let stored = match &outcome {
        Ok(value) => Some((StatusCode::OK.as_u16(), value.to_json_string())),
        Err(e) if e.status.is_client_error() => {
            Some((e.status.as_u16(), e.body().to_json_string()))
        }
        Err(_) => None,
    };
    match stored {
        Some((status, body)) => {
            idempotency::complete(db, user_id, &key, status, body).await?;
        }
        None => idempotency::abandon(db, user_id, &key).await?,
    }
    outcome
}

/// The stored answer: a success is stored with status 200 whatever the route answers with
/// (the route wraps it), an error with its own status.
fn replay<T: ParseFromJSON>(status: u16, body: &str) -> ApiResult<T> {
    let json: serde_json::Value = serde_json::from_str(body)?;
    if status < 300 {
        return T::parse_from_json(Some(json)).map_err(|e| unreadable(&e.into_message()));
    }
    let error =
        ErrorBody::parse_from_json(Some(json)).map_err(|e| unreadable(&e.into_message()))?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CONFLICT);
    Err(ApiError::new(status, error.code, error.message))
}

fn unreadable(reason: &str) -> ApiError {
    #[derive(Debug, thiserror::Error)]
    #[error("stored idempotent answer is unreadable: {0}")]
    struct Unreadable(String);
    ApiError::internal(&Unreadable(reason.to_owned()))
}
