//! Accounts and sessions: users with argon2id password hashes, and refresh-token families.

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, Version,
    password_hash::phc::{Output, ParamsString, Salt},
};
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QuerySelect, Statement, sea_query::Expr,
};

use crate::{
    EmailAddress, Error,
    db::{begin_write, insert_unique},
    error::Result,
    models::{ended_sessions, sessions, spent_refresh_tokens, users},
    tokens,
};

pub use crate::models::users::Role;

/// A password we are willing to hash: 8 to 128 characters, never truncated.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// # Errors
    /// A message saying which bound was broken.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let chars = raw.chars().count();
        if chars < 8 {
            return Err("password must be at least 8 characters".into());
        }
        if chars > 128 {
            return Err("password must be at most 128 characters".into());
        }
        Ok(Self(raw.to_owned()))
    }

    /// For verifying a login attempt: any length up to the bound is checked against the hash,
    /// so a login with a short password is just a wrong password.
    ///
    /// # Errors
    /// Longer than 128 characters (refused before any hashing work).
    pub fn for_login(raw: &str) -> Result<Self, String> {
        if raw.chars().count() > 128 {
            return Err("password must be at most 128 characters".into());
        }
        Ok(Self(raw.to_owned()))
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// 1 to 64 printable characters, none of them invisible: no bidi overrides or isolates, no
/// zero-width characters (a name shown to other buyers must read as what it is).
#[derive(Clone, Debug)]
pub struct DisplayName(String);

impl DisplayName {
    /// # Errors
    /// Empty, too long, or containing control or invisible formatting characters.
    pub fn parse(raw: &str) -> Result<Self, crate::error::Violation> {
        let name = crate::text::single_line("displayName", raw, 64)?;
        if name.chars().any(is_invisible) {
            return Err(crate::error::Violation::InvisibleCharacters("displayName"));
        }
        Ok(Self(name))
    }

    /// A neutral name for an account that chose none, "Buyer 4821": never derived from the
    /// email, which other buyers must not learn from the drop's public listing.
    pub fn neutral() -> Self {
        use rand::Rng;
        Self(format!("Buyer {}", rand::rng().random_range(1000..10_000)))
    }
}

/// Characters that change how the text around them is shown, or show as nothing: bidi
/// marks, embeddings, overrides and isolates; zero-width spaces and joiners; the word
/// joiner and invisible operators; the byte-order mark; the soft hyphen.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// argon2's working memory (19 MiB at today's parameters), kept by a hashing thread and
/// reused by each of its hashes. Allocating it afresh for every hash fragments the C heap:
/// a burst of sign-ins left 150–300 MB resident for good.
#[derive(Default)]
pub struct HashMemory(Vec<argon2::Block>);

impl HashMemory {
    /// `count` blocks, growing the kept memory the first time.
    fn blocks(&mut self, count: usize) -> &mut [argon2::Block] {
        if self.0.len() < count {
            self.0.resize(count, argon2::Block::new());
        }
        let (blocks, _) = self.0.split_at_mut(count);
        blocks
    }
}

/// Hashes with argon2id at the OWASP minimum (the crate's defaults). CPU-bound for ~20 ms:
/// call it from a blocking thread.
///
/// # Errors
/// Only if argon2 itself fails (it does not for valid parameters).
pub fn hash_password(password: &Password) -> Result<String> {
    hash_password_in(password, &mut HashMemory::default())
}

/// [`hash_password`] in memory the caller keeps.
///
/// # Errors
/// Only if argon2 itself fails.
pub fn hash_password_in(password: &Password, memory: &mut HashMemory) -> Result<String> {
    let failed = |e: &dyn std::fmt::Display| Error::Internal(format!("cannot hash password: {e}"));
    let params = Params::default();
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = Salt::new(&salt).map_err(|e| failed(&e))?;
    let (algorithm, version) = (Algorithm::Argon2id, Version::V0x13);
    let output = compute(
        algorithm,
        version,
        &params,
        password,
        &salt,
        memory,
        Params::DEFAULT_OUTPUT_LEN,
    )
    .map_err(|e| failed(&e))?;
    let hash = PasswordHash {
        algorithm: algorithm.ident(),
        version: Some(version.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(salt),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

fn compute(
    algorithm: Algorithm,
    version: Version,
    params: &Params,
    password: &Password,
    salt: &Salt,
    memory: &mut HashMemory,
    output_len: usize,
) -> Result<Output, argon2::Error> {
    let mut out = vec![0u8; output_len];
    Argon2::new(algorithm, version, params.clone()).hash_password_into_with_memory(
        password.0.as_bytes(),
        salt.as_ref(),
        &mut out,
        memory.blocks(params.block_count()),
    )?;
    Output::new(&out).map_err(|_| argon2::Error::OutputTooLong)
}

/// Whether `password` matches `stored`, and whether `stored` was made with weaker parameters
/// than today's and should be replaced.
pub fn verify_password(password: &Password, stored: &str) -> Verified {
    verify_password_in(password, stored, &mut HashMemory::default())
}

/// [`verify_password`] in memory the caller keeps.
pub fn verify_password_in(password: &Password, stored: &str, memory: &mut HashMemory) -> Verified {
    let no = Verified {
        matches: false,
        needs_rehash: false,
    };
    let Ok(parsed) = PasswordHash::new(stored) else {
        return no;
    };
    let (Ok(params), Ok(algorithm)) = (
        Params::try_from(&parsed),
        Algorithm::try_from(parsed.algorithm.as_str()),
    ) else {
        return no;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return no,
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return no;
    };
    let computed = compute(
        algorithm,
        version,
        &params,
        password,
        salt,
        memory,
        expected.len(),
    );
    // `Output`'s equality is constant-time.
    let matches = computed.is_ok_and(|computed| &computed == expected);
    let current = Params::default();
    let needs_rehash = algorithm != Algorithm::Argon2id
        || params.m_cost() < current.m_cost()
        || params.t_cost() < current.t_cost()
        || params.p_cost() < current.p_cost();
    Verified {
        matches,
        needs_rehash,
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Verified {
    pub matches: bool,
    pub needs_rehash: bool,
}

/// A hash of a random password, verified against when the account does not exist, so an
/// unknown email costs the same time as a wrong password.
///
/// # Errors
/// Only if argon2 fails.
pub fn dummy_hash() -> Result<String> {
    hash_password(&Password(tokens::generate()))
}

/// # Errors
/// `EmailTaken`, or database failure.
pub async fn create_user(
    db: &impl ConnectionTrait,
    email: &EmailAddress,
    display_name: &DisplayName,
    password_hash: String,
    role: Role,
    now: DateTime<Utc>,
) -> Result<users::Model> {
    let user = users::ActiveModel {
        email: Set(email.as_str().to_owned()),
        display_name: Set(display_name.0.clone()),
        password_hash: Set(password_hash),
        role: Set(role),
        created_at: Set(now),
        ..Default::default()
    };
    insert_unique(db, user, Error::EmailTaken).await
}

/// # Errors
/// Database failure.
pub async fn find_by_email(
    db: &impl ConnectionTrait,
    email: &EmailAddress,
) -> Result<Option<users::Model>> {
    Ok(users::Entity::find()
        .filter(users::Column::Email.eq(email.as_str()))
        .one(db)
        .await?)
}

/// # Errors
/// Database failure.
pub async fn find_user(db: &impl ConnectionTrait, id: i64) -> Result<Option<users::Model>> {
    Ok(users::Entity::find_by_id(id).one(db).await?)
}

/// # Errors
/// Database failure.
pub async fn set_password_hash(
    db: &impl ConnectionTrait,
    user_id: i64,
    hash: String,
) -> Result<()> {
    users::Entity::update_many()
        .col_expr(users::Column::PasswordHash, Expr::value(hash))
        .filter(users::Column::Id.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Makes sure `email` is an admin: creates the account, or promotes an existing one (its
/// password is left as its owner set it).
///
/// # Errors
/// Database failure.
pub async fn ensure_admin(
    db: &impl ConnectionTrait,
    email: &EmailAddress,
    password_hash: impl FnOnce() -> Result<String>,
    now: DateTime<Utc>,
) -> Result<users::Model> {
    if let Some(user) = find_by_email(db, email).await? {
        users::Entity::update_many()
            .col_expr(users::Column::Role, Expr::value(Role::Admin))
            .filter(users::Column::Id.eq(user.id))
            .exec(db)
            .await?;
        return Ok(users::Model {
            role: Role::Admin,
            ..user
        });
    }
    create_user(
        db,
        email,
        &DisplayName("Store admin".into()),
        password_hash()?,
        Role::Admin,
        now,
    )
    .await
}

/// A new session and its first refresh token (returned once, stored only hashed).
///
/// # Errors
/// Database failure.
pub async fn start_session(
    db: &impl ConnectionTrait,
    user_id: i64,
    lifetime: Duration,
    now: DateTime<Utc>,
) -> Result<(sessions::Model, String)> {
    let token = tokens::generate();
    let session = sessions::ActiveModel {
        user_id: Set(user_id),
        token_hash: Set(tokens::hash(&token)),
        created_at: Set(now),
        last_used_at: Set(now),
        expires_at: Set(now + lifetime),
        revoked_at: Set(None),
        ..Default::default()
    };
    Ok((
        sessions::Entity::insert(session)
            .exec_with_returning(db)
            .await?,
        token,
    ))
}

pub enum Refreshed {
    /// The token was current: here is its successor.
    Rotated {
        session: sessions::Model,
        refresh_token: String,
    },
    /// The token had already been rotated away (one rotation back or ten): it was stolen or
    /// replayed, so the whole session is now revoked.
    ReuseDetected { session_id: i64 },
    /// Unknown, revoked or past the session's absolute lifetime.
    Invalid,
}

/// Exchanges a refresh token for a new one. Rotation is a compare-and-swap on the current
/// hash, so two concurrent uses of one token cannot both succeed, and every rotated-away
/// token is remembered (in the same transaction), so presenting any of them later ends the
/// session.
///
/// # Errors
/// Database failure.
pub async fn refresh(
    db: &impl crate::db::Conn,
    presented: &str,
    now: DateTime<Utc>,
) -> Result<Refreshed> {
    let presented_hash = tokens::hash(presented);
    let current = sessions::Entity::find()
        .filter(sessions::Column::TokenHash.eq(&presented_hash))
        .one(db)
        .await?;
    let Some(session) = current else {
        let spent = spent_refresh_tokens::Entity::find_by_id(presented_hash)
            .one(db)
            .await?;
        return Ok(match spent {
            Some(spent) => {
                revoke(db, spent.session_id, now).await?;
                Refreshed::ReuseDetected {
                    session_id: spent.session_id,
                }
            }
            None => Refreshed::Invalid,
        });
    };
    if session.revoked_at.is_some() || session.expires_at <= now {
        return Ok(Refreshed::Invalid);
    }
    let next = tokens::generate();
    let txn = begin_write(db).await?;
    let rotated = sessions::Entity::update_many()
        .col_expr(
            sessions::Column::TokenHash,
            Expr::value(tokens::hash(&next)),
        )
        .col_expr(sessions::Column::LastUsedAt, Expr::value(now))
        .filter(sessions::Column::Id.eq(session.id))
        .filter(sessions::Column::TokenHash.eq(&presented_hash))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec_with_returning(&txn)
        .await?
        .into_iter()
        .next();
    let Some(rotated) = rotated else {
        // Someone rotated it between our read and our write: the same token used twice.
        txn.rollback().await?;
        revoke(db, session.id, now).await?;
        return Ok(Refreshed::ReuseDetected {
            session_id: session.id,
        });
    };
    spent_refresh_tokens::Entity::insert(spent_refresh_tokens::ActiveModel {
        token_hash: Set(presented_hash),
        session_id: Set(session.id),
        spent_at: Set(now),
    })
    .exec(&txn)
    .await?;
    txn.commit().await?;
    Ok(Refreshed::Rotated {
        session: rotated,
        refresh_token: next,
    })
}

/// # Errors
/// Database failure.
pub async fn revoke(db: &impl ConnectionTrait, session_id: i64, now: DateTime<Utc>) -> Result<()> {
    sessions::Entity::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::value(now))
        .filter(sessions::Column::Id.eq(session_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Sessions that ended after `since`, revoked or deleted while live (a trigger leaves a
/// tombstone in `ended_sessions` for those): what an api instance's view of ended sessions
/// learns from the database, each by its index on when it ended.
///
/// # Errors
/// Database failure.
pub async fn ended_since(db: &impl ConnectionTrait, since: DateTime<Utc>) -> Result<Vec<i64>> {
    let mut ended: Vec<i64> = sessions::Entity::find()
        .select_only()
        .column(sessions::Column::Id)
        .filter(sessions::Column::RevokedAt.gt(since))
        .into_tuple()
        .all(db)
        .await?;
    let deleted: Vec<i64> = ended_sessions::Entity::find()
        .select_only()
        .column(ended_sessions::Column::SessionId)
        .filter(ended_sessions::Column::EndedAt.gt(since))
        .into_tuple()
        .all(db)
        .await?;
    ended.extend(deleted);
    Ok(ended)
}

/// On Postgres, the sessions among `ids` that meet `condition` (`$1` is the ids, `$2` the
/// optional instant), in one statement for any number of ids (see `postgres_array`): the api
/// asks about a different number of sessions each time.
async fn session_ids_where(
    db: &impl ConnectionTrait,
    condition: &str,
    ids: &[i64],
    now: Option<DateTime<Utc>>,
) -> Result<Vec<i64>> {
    let sql = format!("SELECT id FROM sessions WHERE {condition}");
    let mut values = vec![crate::db::postgres_array(ids).into()];
    values.extend(now.map(Into::into));
    let statement = Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
    let rows = db.query_all_raw(statement).await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get::<i64>("", "id"))
        .collect::<Result<_, _>>()?)
}

/// Which of `ids` are sessions whose access tokens may still be used (not revoked, not
/// expired, not deleted), in one query.
///
/// # Errors
/// Database failure.
pub async fn live_sessions(
    db: &impl ConnectionTrait,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<Vec<i64>> {
    if db.get_database_backend() == DbBackend::Postgres {
        let live = "id = ANY($1::text::bigint[]) AND revoked_at IS NULL AND expires_at > $2";
        return session_ids_where(db, live, ids, Some(now)).await;
    }
    Ok(sessions::Entity::find()
        .select_only()
        .column(sessions::Column::Id)
        .filter(sessions::Column::Id.is_in(ids.iter().copied()))
        .filter(sessions::Column::RevokedAt.is_null())
        .filter(sessions::Column::ExpiresAt.gt(now))
        .into_tuple()
        .all(db)
        .await?)
}

#[cfg(test)]
mod tests {
    use argon2::PasswordHasher;

    use super::*;

    #[test]
    fn passwords_outside_8_to_128_characters_are_refused() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"x".repeat(129)).is_err());
        assert!(Password::parse(&"é".repeat(128)).is_ok());
    }

    #[test]
    fn a_hash_made_with_weaker_parameters_asks_to_be_upgraded()
    -> Result<(), Box<dyn std::error::Error>> {
        let password = Password::parse("correct horse")?;
        let weak = Argon2::from(Params::new(8, 1, 1, None).map_err(|e| e.to_string())?)
            .hash_password(b"correct horse")
            .map_err(|e| e.to_string())?
            .to_string();
        let verified = verify_password(&password, &weak);
        assert!(verified.matches && verified.needs_rehash);
        let strong = hash_password(&password)?;
        let verified = verify_password(&password, &strong);
        assert!(verified.matches && !verified.needs_rehash);
        assert!(!verify_password(&Password::parse("wrong horse")?, &strong).matches);
        Ok(())
    }
}
