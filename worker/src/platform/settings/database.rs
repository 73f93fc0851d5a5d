//! How the database group is read: the URL (which decides SQLite or Postgres), the pools,
//! and how the processes reach Postgres (directly or through a transaction-mode pooler).

use entity::db::PoolMode;

use super::{
    DatabaseSettings, Mode, Secret, SettingsError,
    env::{Vars, ensure_dir, invalid, private_database_file},
};

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl DatabaseSettings {
    pub(super) fn read(
        env: &Vars,
        mode: Mode,
        data_dir: &std::path::Path,
    ) -> Result<Self, SettingsError> {
        if mode == Mode::Distributed {
            // A process sharing Redis's queue with the others but writing to a SQLite file
            // of its own would split the store and lose its writes without a word.
            match env.get("DATABASE_URL") {
                Some(url) if is_postgres(url) => {}
                Some(_) => {
                    return Err(invalid(
                        "DATABASE_URL",
                        "must be a postgres:// or postgresql:// URL in distributed mode (REDIS_URL is set): every process shares one Postgres",
                    ));
                }
                None => {
                    return Err(SettingsError::Missing {
                        name: "DATABASE_URL",
                        hint: " in distributed mode (REDIS_URL is set): the postgres:// URL every process shares",
                    });
                }
            }
        }
        let url = match env.get("DATABASE_URL") {
            Some(url) if is_postgres(url) || url.starts_with("sqlite:") => url.to_owned(),
            Some(_) => {
                return Err(invalid(
                    "DATABASE_URL",
                    "must start with postgres://, postgresql:// or sqlite:",
                ));
            }
            None => {
                ensure_dir(data_dir)?;
                let file = data_dir.join("honeydrop.db");
                private_database_file(&file)?;
                format!("sqlite://{}?mode=rwc", file.display())
            }
        };
        let sqlite = url.starts_with("sqlite:");
        let pool_mode = match env.get("DATABASE_POOL_MODE") {
            None | Some("session") => PoolMode::Session,
            Some("transaction") if sqlite => {
                return Err(invalid(
                    "DATABASE_POOL_MODE",
                    "transaction is for Postgres behind a pooler; DATABASE_URL is SQLite",
                ));
            }
            Some("transaction") => PoolMode::Transaction,
            Some(other) => {
                return Err(invalid(
                    "DATABASE_POOL_MODE",
                    format!("{other:?}: expected session or transaction"),
                ));
            }
        };
        let migration_url = match env.get("DATABASE_MIGRATION_URL") {
            None => url.clone(),
            Some(_) if sqlite => {
                return Err(invalid(
                    "DATABASE_MIGRATION_URL",
                    "is for Postgres; DATABASE_URL is SQLite",
                ));
            }
            Some(direct) if is_postgres(direct) => direct.to_owned(),
            Some(_) => {
                return Err(invalid(
                    "DATABASE_MIGRATION_URL",
                    "must start with postgres:// or postgresql://",
                ));
            }
        };
        Ok(Self {
            url: Secret::new(url),
            max_connections: env.positive("DATABASE_MAX_CONNECTIONS", 8)?,
            holds_connections: env.positive("DATABASE_HOLDS_CONNECTIONS", 4)?,
            acquire_timeout: env.millis("DATABASE_ACQUIRE_TIMEOUT_MS", 2000)?,
            pool_mode,
            migration_url: Secret::new(migration_url),
        })
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<DatabaseSettings, SettingsError> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        DatabaseSettings::read(&Vars(vars), Mode::Distributed, std::path::Path::new("."))
    }

    fn error_of(settings: Result<DatabaseSettings, SettingsError>) -> String {
        settings.err().map(|e| e.to_string()).unwrap_or_default()
    }

    const BOUNCER: (&str, &str) = ("DATABASE_URL", "postgres://app@bouncer:6432/store");

    #[test]
    fn a_transaction_pooler_is_named_and_migrations_may_bypass_it() {
        let direct = read(&[BOUNCER]).expect("defaults");
        assert_eq!(direct.pool_mode, PoolMode::Session);
        assert_eq!(direct.migration_url.expose(), direct.url.expose());

        let pooled = read(&[
            BOUNCER,
            ("DATABASE_POOL_MODE", "transaction"),
            ("DATABASE_MIGRATION_URL", "postgresql://app@db:5432/store"),
        ])
        .expect("pooled");
        assert_eq!(pooled.pool_mode, PoolMode::Transaction);
        assert_eq!(
            pooled.migration_url.expose(),
            "postgresql://app@db:5432/store"
        );
    }

    #[test]
    fn pooler_settings_name_their_variable_when_wrong() {
        let err = error_of(read(&[BOUNCER, ("DATABASE_POOL_MODE", "statement")]));
        assert!(err.starts_with("DATABASE_POOL_MODE is invalid"), "{err}");
        let err = error_of(read(&[BOUNCER, ("DATABASE_MIGRATION_URL", "mysql://db")]));
        assert!(
            err.starts_with("DATABASE_MIGRATION_URL is invalid"),
            "{err}"
        );
        let sqlite = ("DATABASE_URL", "sqlite::memory:");
        let embedded = |pairs: &[(&str, &str)]| {
            let vars = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            DatabaseSettings::read(&Vars(vars), Mode::Embedded, std::path::Path::new("."))
        };
        let err = error_of(embedded(&[sqlite, ("DATABASE_POOL_MODE", "transaction")]));
        assert!(err.starts_with("DATABASE_POOL_MODE is invalid"), "{err}");
        let err = error_of(embedded(&[
            sqlite,
            ("DATABASE_MIGRATION_URL", "postgres://db/store"),
        ]));
        assert!(
            err.starts_with("DATABASE_MIGRATION_URL is invalid"),
            "{err}"
        );
    }
}
