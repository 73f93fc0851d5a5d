//! What each drop asks of its buyers (a verified email, a solved challenge), and which
//! accounts verified their email, as the reserve's hot path needs them: in memory.
//!
//! A drop's rules are kept for [`RULES_FRESH_FOR`] (an admin's change reaches every instance
//! within that; one read however many ask at once), and the accounts known to be verified
//! for good (verification is never undone).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sea_orm::{DbErr, EntityTrait, QuerySelect};

use crate::http::error::{ApiError, ApiResult, ErrorCode};

/// How long a drop's rules are served from memory.
pub const RULES_FRESH_FOR: Duration = Duration::from_secs(2);

/// What a drop asks of its buyers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub require_verified: bool,
    pub require_challenge: bool,
}

/// Each drop's rules, read once per [`RULES_FRESH_FOR`] however many buyers ask at once:
/// the first asks the database and the others wait for its answer (a drop's opening sends
/// hundreds of reserves in the same millisecond).
#[derive(Default)]
pub struct DropRules(Mutex<HashMap<i64, Arc<Reading>>>);

/// One read of a drop's rules, shared by everyone who asked while it was fresh.
struct Reading {
    started: Instant,
    /// The drop's rules; `None` for an unknown drop, which is never served from memory (a
    /// drop created a moment later must not be taken without its rules). A failed read is
    /// the answer of everyone who waited for it, so a caller waits for one read at most,
    /// never for a chain of them each meeting the database down; the next caller reads anew.
    rules: tokio::sync::OnceCell<Result<Option<Rules>, DbErr>>,
}

impl Reading {
    fn serves(&self) -> bool {
        match self.rules.get() {
            Some(Ok(Some(_))) => self.started.elapsed() < RULES_FRESH_FOR,
            Some(Ok(None) | Err(_)) => false,
            None => true,
        }
    }
}

impl DropRules {
    /// The drop's rules; `None` for an unknown drop (its operation says so).
    ///
    /// # Errors
    /// Database failure.
    pub async fn of(
        &self,
        db: &entity::db::Db,
        drop_id: i64,
    ) -> Result<Option<Rules>, entity::Error> {
        let reading = {
            let mut readings = self.lock();
            match readings.get(&drop_id) {
                Some(reading) if reading.serves() => Arc::clone(reading),
                _ => {
                    if readings.len() > 10_000 {
                        readings.retain(|_, reading| reading.serves());
                    }
                    let reading = Arc::new(Reading {
                        started: Instant::now(),
                        rules: tokio::sync::OnceCell::new(),
                    });
                    readings.insert(drop_id, Arc::clone(&reading));
                    reading
                }
            }
        };
        let read = reading.rules.get_or_init(|| read_rules(db, drop_id)).await;
        read.as_ref()
            .copied()
            .map_err(|error| entity::db::same_failure(error).into())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Reading>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn read_rules(db: &entity::db::Db, drop_id: i64) -> Result<Option<Rules>, DbErr> {
    use entity::models::drops;
    let row: Option<(bool, bool)> = drops::Entity::find_by_id(drop_id)
        .select_only()
        .column(drops::Column::RequireVerified)
        .column(drops::Column::RequireChallenge)
        .into_tuple()
        .one(db)
        .await?;
    Ok(row.map(|(require_verified, require_challenge)| Rules {
        require_verified,
        require_challenge,
    }))
}

/// The most verified accounts remembered per process.
const MAX_KNOWN_VERIFIED: usize = 1_000_000;

/// Accounts known to have verified their email.
#[derive(Default)]
pub struct VerifiedAccounts(Mutex<HashSet<i64>>);

impl VerifiedAccounts {
    /// 403 `email_unverified` unless the account verified its email.
    ///
    /// # Errors
    /// That, 401 for an account that is gone, or database failure.
    pub async fn require(&self, db: &entity::db::Db, user_id: i64) -> ApiResult<()> {
        if self.lock().contains(&user_id) {
            return Ok(());
        }
        if entity::verification::is_verified(db, user_id).await? {
            let mut known = self.lock();
            // A bound on memory: forgetting costs one lookup each.
            if known.len() >= MAX_KNOWN_VERIFIED {
                known.clear();
            }
            known.insert(user_id);
            return Ok(());
        }
        Err(ApiError::refused(
            ErrorCode::EmailUnverified,
            "this drop takes only verified accounts: open the link in your verification email",
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
