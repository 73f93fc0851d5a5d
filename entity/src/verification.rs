//! Verified buyers: a new account is sent a link that proves it receives mail at its
//! address; following it (by POST) stamps `email_verified_at`. Drops may take only verified
//! buyers (`require_verified`).

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, sea_query::Expr,
};

use crate::{
    EmailAddress, Error,
    accounts::{self, DisplayName, Role},
    db::begin_write,
    error::Result,
    mail,
    models::users,
    tokens,
};

/// A new customer account and its verification email, in one transaction: the account
/// never exists without the email that can verify it.
///
/// # Errors
/// `EmailTaken`, or database failure.
pub async fn sign_up(
    db: &impl crate::db::Conn,
    email: &EmailAddress,
    display_name: &DisplayName,
    password_hash: String,
    now: DateTime<Utc>,
) -> Result<(users::Model, i64)> {
    let txn = begin_write(db).await?;
    let user = accounts::create_user(
        &txn,
        email,
        display_name,
        password_hash,
        Role::Customer,
        now,
    )
    .await?;
    let message_id = mail::queue_verification(&txn, user.id, &user.email, now).await?;
    txn.commit().await?;
    Ok((user, message_id))
}

/// Another verification email for an account not verified yet; `None` when it is verified.
///
/// # Errors
/// `AccountGone`, or database failure.
pub async fn send_again(
    db: &impl crate::db::Conn,
    user_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<i64>> {
    let user = users::Entity::find_by_id(user_id)
        .one(db)
        .await?
        .ok_or(Error::AccountGone)?;
    if user.email_verified_at.is_some() {
        return Ok(None);
    }
    Ok(Some(
        mail::queue_verification(db, user.id, &user.email, now).await?,
    ))
}

/// The account a verification link names, if the link is genuine and current (the page
/// shown before the button is pressed).
///
/// # Errors
/// `InvalidToken` for a malformed, forged or expired link, or one of an account gone or
/// whose address changed; database failure.
pub async fn account_of(
    db: &impl ConnectionTrait,
    key: &str,
    token: &str,
    now: DateTime<Utc>,
) -> Result<users::Model> {
    let (user_id, expires) = tokens::read_verification_token(token).ok_or(Error::InvalidToken)?;
    if expires < now.timestamp() {
        return Err(Error::InvalidToken);
    }
    let user = users::Entity::find_by_id(user_id)
        .one(db)
        .await?
        .ok_or(Error::InvalidToken)?;
    if !tokens::verification_matches(key, token, user.id, &user.email) {
        return Err(Error::InvalidToken);
    }
    Ok(user)
}

/// Marks the account the link names as verified (once: following it again changes nothing).
///
/// # Errors
/// As [`account_of`].
pub async fn verify(
    db: &impl crate::db::Conn,
    key: &str,
    token: &str,
    now: DateTime<Utc>,
) -> Result<users::Model> {
    let user = account_of(db, key, token, now).await?;
    if user.email_verified_at.is_some() {
        return Ok(user);
    }
    users::Entity::update_many()
        .col_expr(users::Column::EmailVerifiedAt, Expr::value(now))
        .filter(users::Column::Id.eq(user.id))
        .filter(users::Column::EmailVerifiedAt.is_null())
        .exec(db)
        .await?;
    Ok(users::Model {
        email_verified_at: Some(now),
        ..user
    })
}

/// Whether the account has verified its address. `AccountGone` when there is no account.
///
/// # Errors
/// `AccountGone`, or database failure.
pub async fn is_verified(db: &impl ConnectionTrait, user_id: i64) -> Result<bool> {
    let verified: Option<Option<DateTime<Utc>>> = users::Entity::find_by_id(user_id)
        .select_only()
        .column(users::Column::EmailVerifiedAt)
        .into_tuple()
        .one(db)
        .await?;
    verified.map(|at| at.is_some()).ok_or(Error::AccountGone)
}
