//! The optional proof-of-work challenge, on ALTCHA's open protocol (PoW v2, PBKDF2/SHA-256),
//! through the `altcha` crate: `GET /api/challenge` hands out a signed challenge that
//! expires after `ALTCHA_TTL_SECS`; a request that needs one carries the solution in
//! `X-Altcha`, as the ALTCHA widget sends it (base64 of the JSON `{challenge, solution}`).
//! A solution is spent by its first request: the challenge is kept until it expires, so it
//! is never accepted twice (see `entity::challenges`).

use base64::Engine;
use chrono::{DateTime, Utc};
use poem_openapi::Object;
use worker::settings::AbuseSettings;

use crate::http::error::{ApiError, ApiResult, ErrorCode};

/// The longest `X-Altcha` accepted.
pub const MAX_SOLUTION_CHARS: usize = 4096;

/// A challenge's parameters, as ALTCHA's protocol names them; send them back unchanged.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
pub struct ChallengeParameters {
    /// `PBKDF2/SHA-256`.
    algorithm: String,
    /// PBKDF2 iterations per try.
    cost: u32,
    /// Unix seconds after which the challenge is refused.
    expires_at: Option<u64>,
    /// Bytes of the derived key.
    key_length: u64,
    /// Hex prefix the derived key must start with.
    key_prefix: String,
    /// Hex; the password of try *n* is the nonce's bytes followed by *n* as 4 big-endian
    /// bytes.
    nonce: String,
    /// Hex; the PBKDF2 salt.
    salt: String,
}

/// A signed proof-of-work challenge (ALTCHA PoW v2).
#[derive(Object)]
#[oai(rename_all = "camelCase")]
pub struct Challenge {
    parameters: ChallengeParameters,
    /// HMAC of the parameters: they cannot be changed.
    signature: String,
}

/// A new challenge.
///
/// # Errors
/// The crate failed to make one (it does not with these options).
pub fn issue(abuse: &AbuseSettings) -> ApiResult<Challenge> {
    let expires_at = Utc::now().timestamp().unsigned_abs() + abuse.altcha_ttl.as_secs();
    let challenge = altcha::create_challenge(altcha::CreateChallengeOptions {
        algorithm: "PBKDF2/SHA-256".into(),
        cost: abuse.altcha_cost,
        expires_at: Some(expires_at),
        hmac_signature_secret: Some(abuse.altcha_secret.expose().to_owned()),
        ..Default::default()
    })
    .map_err(|e| ApiError::internal(&e))?;
    let p = challenge.parameters;
    Ok(Challenge {
        parameters: ChallengeParameters {
            algorithm: p.algorithm,
            cost: p.cost,
            expires_at: p.expires_at,
            key_length: u64::try_from(p.key_length).unwrap_or(32),
            key_prefix: p.key_prefix,
            nonce: p.nonce,
            salt: p.salt,
        },
        signature: challenge.signature.unwrap_or_default(),
    })
}

/// Checks and spends the solution in `X-Altcha`.
///
/// # Errors
/// 403 `challenge_required` without one, 403 `challenge_failed` for one that is malformed,
/// wrong, expired or spent already; database failure.
pub async fn spend(
    abuse: &AbuseSettings,
    db: &entity::db::Db,
    solution: Option<&str>,
) -> ApiResult<()> {
    let Some(raw) = solution else {
        return Err(ApiError::refused(
            ErrorCode::ChallengeRequired,
            "this needs a solved challenge in X-Altcha: get one from GET /api/challenge",
        ));
    };
    let failed = |why: &str| ApiError::refused(ErrorCode::ChallengeFailed, why.to_owned());
    let payload = read(raw).ok_or_else(|| failed("X-Altcha is not an ALTCHA payload"))?;
    let secret = abuse.altcha_secret.expose();
    let checked = altcha::verify_solution(altcha::VerifySolutionOptions::new(
        &payload.challenge,
        &payload.solution,
        secret,
    ))
    .map_err(|_| failed("X-Altcha is not an ALTCHA payload"))?;
    if checked.expired {
        return Err(failed("the challenge expired: solve a new one"));
    }
    let (Some(signature), Some(expires_at)) = (
        payload.challenge.signature.as_deref(),
        payload
            .challenge
            .parameters
            .expires_at
            .and_then(|at| DateTime::from_timestamp(i64::try_from(at).ok()?, 0)),
    ) else {
        return Err(failed("the challenge is not one of ours"));
    };
    if !checked.verified {
        return Err(failed(
            "the solution is wrong, or the challenge is not one of ours",
        ));
    }
    if !entity::challenges::spend(db, signature, expires_at, Utc::now()).await? {
        return Err(failed(
            "this challenge was solved and used already: solve a new one",
        ));
    }
    Ok(())
}

/// Base64 (standard or URL-safe, padded or not) of the JSON payload, or the JSON itself.
fn read(raw: &str) -> Option<altcha::Payload> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let raw = raw.trim();
    if raw.starts_with('{') {
        return serde_json::from_str(raw).ok();
    }
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(raw).ok())
        .and_then(|json| serde_json::from_slice(&json).ok())
}
