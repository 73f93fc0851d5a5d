//! Spent proof-of-work challenges: each solves one request. A challenge is kept (by its
//! signature) until it expires, when its solution would be refused anyway, so a solution is
//! never accepted twice, by any instance.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use crate::{db::is_unique_violation, error::Result, models::spent_challenges};

/// Records the challenge as spent: `true` the first time, `false` when it was spent before.
/// Challenges that expired are forgotten on the way.
///
/// # Errors
/// Database failure.
pub async fn spend(
    db: &impl ConnectionTrait,
    signature: &str,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool> {
    spent_challenges::Entity::delete_many()
        .filter(spent_challenges::Column::ExpiresAt.lt(now))
        .exec(db)
        .await?;
    let row = spent_challenges::ActiveModel {
        signature: Set(signature.to_owned()),
        expires_at: Set(expires_at),
    };
    match spent_challenges::Entity::insert(row)
        .exec_without_returning(db)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
