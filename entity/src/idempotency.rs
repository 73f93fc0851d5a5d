//! Idempotency keys: a retried request with the same key gets the stored response instead of
//! running again.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, sea_query::Expr,
};

use crate::{
    db::{is_foreign_key_violation, is_unique_violation},
    error::Result,
    models::idempotency_keys,
};

/// A client-chosen key: 1 to 255 visible ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// # Errors
    /// Empty, too long, or not visible ASCII.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let key = raw.trim();
        if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err("Idempotency-Key must be 1 to 255 visible ASCII characters".into());
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub enum Begin {
    /// First time: go ahead, then `complete` (or `abandon`).
    Proceed,
    /// Done before with the same request: here is what was answered.
    Replay { status: u16, body: String },
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key has not finished yet.
    InFlight,
}

/// Claims `key` for `request_hash`, or reports what happened to it before.
///
/// # Errors
/// Database failure.
pub async fn begin(
    db: &impl ConnectionTrait,
    user_id: i64,
    key: &IdempotencyKey,
    request_hash: &str,
    now: DateTime<Utc>,
) -> Result<Begin> {
    let row = idempotency_keys::ActiveModel {
        user_id: Set(user_id),
        key: Set(key.0.clone()),
        request_hash: Set(request_hash.to_owned()),
        response_status: Set(None),
        response_body: Set(None),
        created_at: Set(now),
        ..Default::default()
    };
    match idempotency_keys::Entity::insert(row).exec(db).await {
        Ok(_) => return Ok(Begin::Proceed),
        Err(e) if is_unique_violation(&e) => {}
        // The key's only parent is the account.
        Err(e) if is_foreign_key_violation(&e) => return Err(crate::Error::AccountGone),
        Err(e) => return Err(e.into()),
    }
    let Some(existing) = find(db, user_id, key).await? else {
        // Abandoned between our insert and our read: treat as in flight; a retry proceeds.
        return Ok(Begin::InFlight);
    };
    if existing.request_hash != request_hash {
        return Ok(Begin::Mismatch);
    }
    Ok(match (existing.response_status, existing.response_body) {
        (Some(status), Some(body)) => Begin::Replay {
            status: u16::try_from(status).unwrap_or(500),
            body,
        },
        _ => Begin::InFlight,
    })
}

async fn find(
    db: &impl ConnectionTrait,
    user_id: i64,
    key: &IdempotencyKey,
) -> Result<Option<idempotency_keys::Model>> {
    Ok(idempotency_keys::Entity::find()
        .filter(idempotency_keys::Column::UserId.eq(user_id))
        .filter(idempotency_keys::Column::Key.eq(key.as_str()))
        .one(db)
        .await?)
}

/// Stores the response to replay.
///
/// # Errors
/// Database failure.
pub async fn complete(
    db: &impl ConnectionTrait,
    user_id: i64,
    key: &IdempotencyKey,
    status: u16,
    body: String,
) -> Result<()> {
    idempotency_keys::Entity::update_many()
        .col_expr(
            idempotency_keys::Column::ResponseStatus,
            Expr::value(i32::from(status)),
        )
        .col_expr(idempotency_keys::Column::ResponseBody, Expr::value(body))
        .filter(idempotency_keys::Column::UserId.eq(user_id))
        .filter(idempotency_keys::Column::Key.eq(key.as_str()))
        .exec(db)
        .await?;
    Ok(())
}

/// Frees the key after a failure on our side, so a retry runs again.
///
/// # Errors
/// Database failure.
pub async fn abandon(db: &impl ConnectionTrait, user_id: i64, key: &IdempotencyKey) -> Result<()> {
    idempotency_keys::Entity::delete_many()
        .filter(idempotency_keys::Column::UserId.eq(user_id))
        .filter(idempotency_keys::Column::Key.eq(key.as_str()))
        .exec(db)
        .await?;
    Ok(())
}
