//! How the Redis group is read: one server (`REDIS_URL`), or a master found through
//! Sentinel (`REDIS_SENTINELS`, `REDIS_MASTER_NAME`). Either one makes the mode distributed.

use super::{
    RedisSettings, Secret, SentinelSettings, SettingsError,
    env::{Vars, invalid},
};

impl RedisSettings {
    pub(super) fn read(env: &Vars) -> Result<Option<Self>, SettingsError> {
        let sentinel = SentinelSettings::read(env)?;
        let url = match (env.get("REDIS_URL"), &sentinel) {
            (None, None) => return Ok(None),
            // Only the master's credentials and database come from the URL.
            (None, Some(_)) => "redis://127.0.0.1",
            (Some(url), _) => url,
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(invalid(
                "REDIS_URL",
                "must start with redis:// or rediss://",
            ));
        }
        if sentinel.is_some() && url.starts_with("rediss://") {
            return Err(invalid(
                "REDIS_URL",
                "rediss:// is not supported with REDIS_SENTINELS: use redis://",
            ));
        }
        Ok(Some(Self {
            url: Secret::new(url),
            prefix: env.get("REDIS_PREFIX").unwrap_or("honeydrop").to_owned(),
            sentinel,
        }))
    }
}

impl SentinelSettings {
    fn read(env: &Vars) -> Result<Option<Self>, SettingsError> {
        let Some(list) = env.get("REDIS_SENTINELS") else {
            if env.get("REDIS_MASTER_NAME").is_some() {
                return Err(invalid(
                    "REDIS_MASTER_NAME",
                    "is set, but REDIS_SENTINELS (the sentinels that know it) is not",
                ));
            }
            return Ok(None);
        };
        let mut sentinels = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let valid = entry.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid {
                return Err(invalid(
                    "REDIS_SENTINELS",
                    format!("{entry:?}: expected host:port, comma-separated"),
                ));
            }
            sentinels.push(entry.to_owned());
        }
        if sentinels.is_empty() {
            return Err(invalid("REDIS_SENTINELS", "names no sentinel"));
        }
        let Some(master_name) = env.get("REDIS_MASTER_NAME") else {
            return Err(SettingsError::Missing {
                name: "REDIS_MASTER_NAME",
                hint: " with REDIS_SENTINELS: the master's name the sentinels monitor",
            });
        };
        Ok(Some(Self {
            sentinels,
            master_name: master_name.to_owned(),
        }))
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<RedisSettings>, SettingsError> {
        let vars = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        RedisSettings::read(&Vars(vars))
    }

    fn error_of(settings: Result<Option<RedisSettings>, SettingsError>) -> String {
        settings.err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn sentinels_alone_make_the_mode_distributed() {
        let settings = read(&[
            ("REDIS_SENTINELS", "10.0.0.1:26379, sentinel-b:26379"),
            ("REDIS_MASTER_NAME", "honeydrop"),
        ])
        .expect("valid")
        .expect("distributed");
        let sentinel = settings.sentinel.expect("sentinel");
        assert_eq!(sentinel.sentinels, ["10.0.0.1:26379", "sentinel-b:26379"]);
        assert_eq!(sentinel.master_name, "honeydrop");
        assert!(
            read(&[]).expect("valid").is_none(),
            "embedded without either"
        );
    }

    #[test]
    fn sentinel_settings_name_their_variable_when_wrong() {
        let err = error_of(read(&[("REDIS_SENTINELS", "a:26379,b")]));
        assert!(err.starts_with("REDIS_SENTINELS is invalid"), "{err}");
        let err = error_of(read(&[("REDIS_SENTINELS", "a:26379")]));
        assert!(err.starts_with("REDIS_MASTER_NAME is required"), "{err}");
        let err = error_of(read(&[("REDIS_MASTER_NAME", "m")]));
        assert!(err.starts_with("REDIS_MASTER_NAME is invalid"), "{err}");
        let err = error_of(read(&[
            ("REDIS_SENTINELS", "a:26379"),
            ("REDIS_MASTER_NAME", "m"),
            ("REDIS_URL", "rediss://secure:6380"),
        ]));
        assert!(err.starts_with("REDIS_URL is invalid"), "{err}");
    }
}
