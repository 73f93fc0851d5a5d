//! Fair against bots: what a drop asks of its buyers (a verified email, a solved challenge),
//! checked before a hold, a waitlist place or a draw entry, and how many of those one
//! address may take of it. The rules themselves are kept in memory by
//! [`crate::cache::drop_rules`].

use std::time::Duration;

use poem::Request;

use worker::settings::AbuseSettings;

use crate::{
    abuse::limiter::Limiter,
    cache::drop_rules::{DropRules, VerifiedAccounts},
    http::{
        client::limit_key_of,
        error::{ApiError, ApiResult, ErrorCode},
    },
};

/// What the checks read, borrowed from the app's state (`AppState::admission`).
#[derive(Clone, Copy)]
pub struct Admission<'a> {
    pub abuse: &'a AbuseSettings,
    pub db: &'a entity::db::Db,
    pub limiter: &'a Limiter,
    pub rules: &'a DropRules,
    pub verified: &'a VerifiedAccounts,
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
    limiter: &'a Limiter,
    key: String,
}

impl<'a> AddressSlot<'a> {
    /// # Errors
    /// 429 `address_limit_reached` when the address has taken its share.
    pub async fn take(
        admission: Admission<'a>,
        req: &Request,
        taking: Taking,
        drop_id: i64,
    ) -> ApiResult<Self> {
        let Admission { abuse, limiter, .. } = admission;
        let key = format!(
            "drop-address:{}:{drop_id}:{}",
            taking.key(),
            limit_key_of(req)
        );
        let window = limiter.hit(&key, abuse.drop_address_window).await;
        let slot = Self { limiter, key };
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
        self.limiter.unhit(&self.key).await;
    }
}

/// At most `SIGNUPS_PER_ADDRESS_PER_HOUR` new accounts per address (an IPv6 /64).
///
/// # Errors
/// 429 `too_many_requests` past it.
pub async fn limit_signups(admission: Admission<'_>, req: &Request) -> ApiResult<()> {
    let key = format!("signup-address:{}", limit_key_of(req));
    let window = admission.limiter.hit(&key, Duration::from_secs(3600)).await;
    if window.count > admission.abuse.signups_per_address_per_hour {
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
    admission: Admission<'a>,
    req: &Request,
    user_id: i64,
    drop_id: i64,
    taking: Taking,
    challenge_solution: Option<&str>,
) -> ApiResult<AddressSlot<'a>> {
    let Admission {
        abuse,
        db,
        rules,
        verified,
        ..
    } = admission;
    if let Some(rules) = rules.of(db, drop_id).await? {
        if rules.require_verified {
            verified.require(db, user_id).await?;
        }
        if rules.require_challenge && matches!(taking, Taking::Hold) {
            crate::abuse::challenge::spend(abuse, db, challenge_solution).await?;
        }
    }
    AddressSlot::take(admission, req, taking, drop_id).await
}
