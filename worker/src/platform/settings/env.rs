//! Reading the environment: variables by name, parsed and checked with messages that name
//! them, and the files a first start generates (a secret, written owner-only).

use std::{collections::HashMap, fmt, str::FromStr, time::Duration};

use rand::RngCore;

use super::{Secret, SettingsError};

/// Whole seconds as read from a variable, for the domain's `chrono` arithmetic.
pub fn chrono_secs(value: Duration) -> chrono::Duration {
    chrono::Duration::from_std(value).unwrap_or(chrono::Duration::MAX)
}

pub struct Vars(pub HashMap<String, String>);

/// `true`/`false`/`1`/`0`.
pub struct Flag(pub bool);

impl FromStr for Flag {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => Ok(Flag(true)),
            "0" | "false" | "no" => Ok(Flag(false)),
            _ => Err("expected true or false".into()),
        }
    }
}

impl Vars {
    /// A variable set to an empty string counts as unset, as platforms often do.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    pub fn parse<T: FromStr>(&self, name: &'static str) -> Result<Option<T>, SettingsError>
    where
        T::Err: fmt::Display,
    {
        self.get(name)
            .map(|raw| {
                raw.parse::<T>()
                    .map_err(|e| invalid(name, format!("{raw:?}: {e}")))
            })
            .transpose()
    }

    pub fn positive<T>(&self, name: &'static str, default: T) -> Result<T, SettingsError>
    where
        T: FromStr + PartialOrd + Default,
        T::Err: fmt::Display,
    {
        let value = self.parse(name)?.unwrap_or(default);
        if value <= T::default() {
            return Err(invalid(name, "must be greater than zero"));
        }
        Ok(value)
    }

    pub fn secs(
        &self,
        name: &'static str,
        default: u64,
        min: u64,
    ) -> Result<Duration, SettingsError> {
        let value: u64 = self.parse(name)?.unwrap_or(default);
        if value < min {
            return Err(invalid(name, format!("must be at least {min}")));
        }
        Ok(Duration::from_secs(value))
    }

    /// A whole number of `unit`s, from 1 up to about a century; `None` when unset.
    pub fn span(
        &self,
        name: &'static str,
        unit: chrono::Duration,
    ) -> Result<Option<chrono::Duration>, SettingsError> {
        let century = chrono::Duration::days(36_525);
        let Some(count) = self.parse::<u32>(name)? else {
            return Ok(None);
        };
        match unit.checked_mul(i32::try_from(count).unwrap_or(i32::MAX)) {
            Some(span) if count >= 1 && span <= century => Ok(Some(span)),
            _ => Err(invalid(name, "must be at least 1 and at most 100 years")),
        }
    }

    pub fn millis(&self, name: &'static str, default: u64) -> Result<Duration, SettingsError> {
        let value: u64 = self.positive(name, default)?;
        Ok(Duration::from_millis(value))
    }
}

pub fn invalid(name: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        name,
        reason: reason.into(),
    }
}

pub(super) fn ensure_dir(dir: &std::path::Path) -> Result<(), SettingsError> {
    create_private_dir(dir).map_err(|source| SettingsError::Io {
        path: dir.display().to_string(),
        source,
    })
}

/// Creates `dir` (and any missing parents) so that only its owner can enter it (0700): the
/// data directory holds the database, the signing secret and the outbox. A directory that
/// already exists keeps its mode (it may be shared, like `/tmp`); its files are 0600
/// whatever it is.
///
/// # Errors
/// The directory cannot be created.
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Makes sure the SQLite file at `path` exists and only its owner can read it (0600) before
/// SQLite opens it: SQLite would create it world-readable, and gives its `-wal` and `-shm`
/// files the main file's mode.
pub(super) fn private_database_file(path: &std::path::Path) -> Result<(), SettingsError> {
    let io = |source| SettingsError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    options.open(path).map(drop).map_err(io)
}

/// Embedded mode keeps a generated signing key under the data directory, so tokens survive a
/// restart without the operator configuring anything.
pub(super) fn generated_secret(data_dir: &std::path::Path) -> Result<Secret, SettingsError> {
    ensure_dir(data_dir)?;
    let path = data_dir.join("jwt_access_secret");
    let io = |source| SettingsError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(existing) if existing.trim().len() >= 32 => {
            // Written 0644 by versions before write_private: the owner's alone from now on.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
            }
            return Ok(Secret::new(existing.trim()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &secret).map_err(io)?;
    Ok(Secret::new(secret))
}

/// Writes a file only its owner can read (0600): the generated secret and the demo admin's
/// password sit in it.
///
/// # Errors
/// The file cannot be written.
pub fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // A file left by an older version may be readable by others: tighten it first.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    options.open(path)?.write_all(contents.as_bytes())
}
