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
