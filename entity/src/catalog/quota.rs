//! A daily cap on the confirmation emails one mailbox is sent, across every product, so
//! "notify me" (anonymous by design) cannot be used to mail-bomb an inbox.
//!
//! Counted per canonical mailbox ([`EmailAddress::mailbox`]: lower-case, plus-tag removed),
//! in a fixed window that opens with the mailbox's first email and lasts a day. Taking a
//! unit is one upsert that only succeeds under the cap, so concurrent sign-ups for one
//! mailbox cannot overshoot it: Postgres locks the row for the upsert (the second waits and
//! re-checks the cap), SQLite has one writer. It runs in the sign-up's transaction, so a
//! sign-up that rolls back gives its unit back.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ConnectionTrait,
    sea_query::{Expr, ExprTrait, OnConflict, Query},
};

use crate::{EmailAddress, error::Result, models::mail_quotas};

/// How long a mailbox's window lasts.
pub const WINDOW: Duration = Duration::days(1);

/// Counts one confirmation email to `email`'s mailbox if its window has room for it under
/// `per_day`; `false` (and nothing counted) when it has not.
///
/// # Errors
/// Database failure.
pub async fn take(
    db: &impl ConnectionTrait,
    email: &EmailAddress,
    per_day: u32,
    now: DateTime<Utc>,
) -> Result<bool> {
    use mail_quotas::Column;
    let limit = i32::try_from(per_day).unwrap_or(i32::MAX);
    if limit == 0 {
        return Ok(false);
    }
    let existing = |column: Column| Expr::col((mail_quotas::Entity, column));
    let expired = existing(Column::WindowStart).lte(now - WINDOW);
    let statement = Query::insert()
        .into_table(mail_quotas::Entity)
        .columns([Column::Mailbox, Column::WindowStart, Column::Sent])
        .values_panic([email.mailbox().into(), now.into(), 1.into()])
        .on_conflict(
            OnConflict::column(Column::Mailbox)
                .value(
                    Column::WindowStart,
                    Expr::case(expired.clone(), now).finally(existing(Column::WindowStart)),
                )
                .value(
                    Column::Sent,
                    Expr::case(expired.clone(), 1).finally(existing(Column::Sent).add(1)),
                )
                .action_and_where(expired.or(existing(Column::Sent).lt(limit)))
                .to_owned(),
        )
        .returning_col(Column::Sent)
        .to_owned();
    Ok(db.query_one(&statement).await?.is_some())
}
