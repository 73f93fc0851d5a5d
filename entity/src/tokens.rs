//! Opaque secrets handed to users (refresh tokens, email links): random, stored only hashed.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// 256 random bits, URL-safe.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The form a token is stored and looked up in. A fast hash is right here: the token already
/// has 256 bits of entropy, so there is nothing to brute-force.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The key the unsubscribe links of emails are derived from, so every email about one
/// subscription carries the same link and each keeps working until it is used (a link
/// minted afresh per email would stop the older ones). Only the token's hash is stored, as
/// for every other token; without the key a database reader cannot make a link.
#[derive(Clone)]
pub struct LinkKey(Vec<u8>);

impl LinkKey {
    /// From a server secret (the JWT signing secret every process shares).
    pub fn new(secret: &str) -> Self {
        Self(secret.as_bytes().to_vec())
    }

    /// The unsubscribe token of the subscription `id` made at `created_at` (the time keeps
    /// a reused id from inheriting a deleted subscription's link).
    pub fn unsubscribe_token(&self, id: i64, created_at: chrono::DateTime<chrono::Utc>) -> String {
        use hmac::{Hmac, Mac};
        let message = format!(
            "honeydrop unsubscribe link:{id}:{}",
            created_at.timestamp_micros()
        );
        match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mut mac) => {
                mac.update(message.as_bytes());
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            }
            // HMAC takes a key of any length; this arm is never taken.
            Err(_) => generate(),
        }
    }
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey([redacted])")
    }
}

/// An email-verification link's token: `<user id>.<expires, unix seconds>.<MAC>`, the MAC
/// (HMAC-SHA-256 under `key`) binding the account, the address it was sent to and the
/// expiry. Nothing is stored: the link proves itself, and stops working when the account's
/// address changes or the expiry passes.
pub fn verification_token(key: &str, user_id: i64, email: &str, expires: i64) -> String {
    format!(
        "{user_id}.{expires}.{}",
        URL_SAFE_NO_PAD.encode(verification_mac(key, user_id, email, expires))
    )
}

/// The account and expiry a verification token names, before its MAC is checked (that
/// needs the account's address: [`verification_matches`]). `None` when malformed.
pub fn read_verification_token(token: &str) -> Option<(i64, i64)> {
    let mut parts = token.split('.');
    let user_id = parts.next()?.parse().ok()?;
    let expires = parts.next()?.parse().ok()?;
    parts.next()?;
    parts.next().is_none().then_some((user_id, expires))
}

/// Whether `token` was made under `key` for this account and address, in constant time.
pub fn verification_matches(key: &str, token: &str, user_id: i64, email: &str) -> bool {
    use hmac::Mac;
    let Some((named, expires)) = read_verification_token(token) else {
        return false;
    };
    let Some(mac) = token
        .rsplit('.')
        .next()
        .and_then(|m| URL_SAFE_NO_PAD.decode(m).ok())
    else {
        return false;
    };
    named == user_id
        && verifier(key, user_id, email, expires).is_ok_and(|v| v.verify_slice(&mac).is_ok())
}

fn verification_mac(key: &str, user_id: i64, email: &str, expires: i64) -> Vec<u8> {
    use hmac::Mac;
    verifier(key, user_id, email, expires)
        .map(|mac| mac.finalize().into_bytes().to_vec())
        .unwrap_or_default()
}

fn verifier(
    key: &str,
    user_id: i64,
    email: &str,
    expires: i64,
) -> Result<hmac::Hmac<Sha256>, hmac::digest::InvalidLength> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key.as_bytes())?;
    mac.update(format!("verify-email\n{user_id}\n{email}\n{expires}").as_bytes());
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verification_token_proves_its_account_address_and_key_only() {
        let token = verification_token("key", 7, "ann@example.com", 2_000_000_000);
        assert_eq!(read_verification_token(&token), Some((7, 2_000_000_000)));
        assert!(verification_matches("key", &token, 7, "ann@example.com"));
        assert!(!verification_matches("key", &token, 8, "ann@example.com"));
        assert!(!verification_matches("key", &token, 7, "bob@example.com"));
        assert!(!verification_matches("other", &token, 7, "ann@example.com"));
        let forged = token.replace("2000000000", "2000000001");
        assert!(!verification_matches("key", &forged, 7, "ann@example.com"));
        assert_eq!(read_verification_token("7.x.y"), None);
        assert_eq!(read_verification_token("7.1.y.z"), None);
    }
}
