//! How the mail, retention and Contentful groups are read from the environment.

use super::{
    MailSettings, MailTransport, Mode, RetentionSettings, Secret, SettingsError,
    env::{Vars, chrono_secs, invalid},
};

impl MailSettings {
    pub(super) fn read(
        env: &Vars,
        mode: Mode,
        data_dir: &std::path::Path,
    ) -> Result<Self, SettingsError> {
        let smtp_url = env.get("SMTP_URL").map(Secret::new);
        if let Some(url) = &smtp_url
            && !(url.expose().starts_with("smtp://") || url.expose().starts_with("smtps://"))
        {
            return Err(invalid("SMTP_URL", "must start with smtp:// or smtps://"));
        }
        let transport = match (env.get("MAIL_TRANSPORT"), &smtp_url) {
            (None | Some("smtp"), Some(_)) => MailTransport::Smtp,
            (Some("smtp"), None) => {
                return Err(SettingsError::Missing {
                    name: "SMTP_URL",
                    hint: " when MAIL_TRANSPORT=smtp",
                });
            }
            (Some("outbox"), None) => MailTransport::Outbox,
            (Some("outbox"), Some(_)) => {
                return Err(invalid(
                    "MAIL_TRANSPORT",
                    "outbox writes mail to files, yet SMTP_URL is set: unset one of them",
                ));
            }
            (None, None) if mode == Mode::Embedded => MailTransport::Outbox,
            (None, None) => MailTransport::Missing,
            (Some(other), _) => {
                return Err(invalid(
                    "MAIL_TRANSPORT",
                    format!("expected smtp or outbox, got {other:?}"),
                ));
            }
        };
        let lease = env.secs("MAIL_LEASE_SECS", 15, 2)?;
        Ok(Self {
            transport,
            smtp_url,
            from: env
                .get("MAIL_FROM")
                .unwrap_or("Honeydrop <no-reply@honeydrop.local>")
                .to_owned(),
            outbox_dir: data_dir.join("outbox"),
            rate_per_sec: env.positive("MAIL_RATE_PER_SEC", 10_000)?,
            max_attempts: env.positive("MAIL_MAX_ATTEMPTS", 6)?,
            retry_base: env.millis("MAIL_RETRY_BASE_MS", 30_000)?,
            lease: chrono_secs(lease),
            send_timeout: lease / 2,
            connections: env.positive("MAIL_CONNECTIONS", 16)?,
            poll_interval: env.millis("MAIL_POLL_MS", 2_000)?,
            restock_waves: entity::catalog::waves::Waves {
                factor: i32::from(env.parse::<u16>("RESTOCK_WAVE_FACTOR")?.unwrap_or(3)),
                interval: chrono_secs(env.secs("RESTOCK_WAVE_INTERVAL_SECS", 600, 1)?),
            },
        })
    }
}

impl RetentionSettings {
    pub(super) fn read(env: &Vars) -> Result<Self, SettingsError> {
        let hour = chrono::Duration::hours(1);
        let day = chrono::Duration::days(1);
        Ok(Self {
            interval: env.secs("RETENTION_INTERVAL_SECS", 3600, 1)?,
            idempotency_keys: env
                .span("RETENTION_IDEMPOTENCY_HOURS", hour)?
                .unwrap_or(hour * 24),
            sessions: env
                .span("RETENTION_SESSIONS_DAYS", day)?
                .unwrap_or(day * 30),
            webhook_deliveries: env
                .span("RETENTION_WEBHOOKS_DAYS", day)?
                .unwrap_or(day * 90),
            emails: env.span("RETENTION_EMAILS_DAYS", day)?.unwrap_or(day * 90),
            holds: env.span("RETENTION_HOLDS_DAYS", day)?,
        })
    }
}
