//! Fair against bots: what a drop asks of its buyers (a verified email, a solved challenge),
//! and how many holds, waitlist places and draw entries one address may take of it.
//!
//! Both answers are needed on the hot path of every reserve, so they are kept in memory: a
//! drop's rules for [`RULES_FRESH_FOR`] (an admin's change reaches every instance within
//! that; one read however many ask at once), and the accounts known to be verified for good
//! (verification is never undone).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use poem::Request;
use sea_orm::{EntityTrait, QuerySelect};

use crate::{
    client::limit_key_of,
    error::{ApiError, ApiResult, ErrorCode},
    state::AppState,
};

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
    /// drop created a moment later must not be taken without its rules).
    rules: tokio::sync::OnceCell<Option<Rules>>,
}

impl Reading {
    fn serves(&self) -> bool {
        match self.rules.get() {
            Some(Some(_)) => self.started.elapsed() < RULES_FRESH_FOR,
            Some(None) => false,
            // Being read (or a read that failed, which the next caller tries again).
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
        let rules = reading.rules.get_or_try_init(|| read_rules(db, drop_id));
        Ok(*rules.await?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Reading>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn read_rules(db: &entity::db::Db, drop_id: i64) -> Result<Option<Rules>, entity::Error> {
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

/// What a buyer does to a drop, each counted per address on its own.
#[derive(Clone, Copy, Debug)]
pub enum Taking {
    Hold,
    WaitlistPlace,
    DrawEntry,
}

impl Taking {
    fn key(self) -> &'static str {
        match self {
            Self::Hold => "hold",
            Self::WaitlistPlace => "wait",
            Self::DrawEntry => "enter",
        }
    }
}

/// One of the address's `HOLDS_PER_DROP_PER_ADDRESS` for a drop, taken before the action
/// (atomically, so a burst from one address cannot slip past the cap) and given back when the
/// action did not happen.
pub struct AddressSlot<'a> {
    state: &'a AppState,
    key: String,
}

impl<'a> AddressSlot<'a> {
    /// # Errors
    /// 429 `address_limit_reached` when the address has taken its share.
    pub async fn take(
        state: &'a AppState,
        req: &Request,
        taking: Taking,
        drop_id: i64,
    ) -> ApiResult<Self> {
        let abuse = &state.settings.abuse;
        let key = format!(
            "drop-address:{}:{drop_id}:{}",
            taking.key(),
            limit_key_of(req)
        );
        let window = state.limiter.hit(&key, abuse.drop_address_window).await;
        let slot = Self { state, key };
        if window.count > abuse.holds_per_drop_per_address {
            slot.give_back().await;
            return Err(ApiError::too_many(
                ErrorCode::AddressLimitReached,
                "this address has taken as much of this drop as one address may",
                window.resets_in.as_secs_f64().ceil() as u64,
            ));
        }
        Ok(slot)
    }

    /// Keeps the slot when the action happened (`Ok`), gives it back when it did not.
    pub async fn kept_if<T, E>(self, outcome: Result<T, E>) -> Result<T, E> {
        if outcome.is_err() {
            self.give_back().await;
        }
        outcome
    }

    /// The action did not happen: the slot is free again.
    pub async fn give_back(self) {
        self.state.limiter.unhit(&self.key).await;
    }
}

/// At most `SIGNUPS_PER_ADDRESS_PER_HOUR` new accounts per address (an IPv6 /64).
///
/// # Errors
/// 429 `too_many_requests` past it.
pub async fn limit_signups(state: &AppState, req: &Request) -> ApiResult<()> {
    let key = format!("signup-address:{}", limit_key_of(req));
    let window = state.limiter.hit(&key, Duration::from_secs(3600)).await;
    if window.count > state.settings.abuse.signups_per_address_per_hour {
        return Err(ApiError::too_many(
            ErrorCode::TooManyRequests,
            "too many accounts made from this address; try again later",
            window.resets_in.as_secs_f64().ceil() as u64,
        ));
    }
    Ok(())
}

/// What a drop asks of this buyer, checked before they take a hold, a waitlist place or a
/// draw entry: a verified email where the drop requires one (403 `email_unverified`), a
/// solved challenge for a hold where it requires one (403 `challenge_required` /
/// `challenge_failed`), then one of the address's slots (429 `address_limit_reached`).
/// Give the slot back when the action does not happen. An unknown drop is left to the
/// action, which answers 404.
///
/// # Errors
/// As above, or database failure.
pub async fn admit<'a>(
    state: &'a AppState,
    req: &Request,
    user_id: i64,
    drop_id: i64,
    taking: Taking,
    challenge_solution: Option<&str>,
) -> ApiResult<AddressSlot<'a>> {
    if let Some(rules) = state.drop_rules.of(&state.db, drop_id).await? {
        if rules.require_verified {
            state.verified.require(&state.db, user_id).await?;
        }
        if rules.require_challenge && matches!(taking, Taking::Hold) {
            crate::challenge::spend(state, challenge_solution).await?;
        }
    }
    AddressSlot::take(state, req, taking, drop_id).await
}
