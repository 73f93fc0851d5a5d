//! Limits on what anyone may do without an account: "notify me" (which sends email to an
//! address nobody proved is theirs) and live sockets (which cost memory while open).
//! Client addresses are counted as the limits count them everywhere: an IPv4 address, or an
//! IPv6 /64.

use super::{SettingsError, env::Vars};

#[derive(Clone, Debug)]
pub struct NotifyMeSettings {
    /// Confirmation emails one mailbox is sent per day, across every product
    /// (`NOTIFY_ME_EMAILS_PER_MAILBOX_PER_DAY`, default 3). Past it, "notify me" still
    /// answers 202 and sends nothing.
    pub emails_per_mailbox_per_day: u32,
    /// "Notify me" requests per client address per hour (`NOTIFY_ME_PER_ADDRESS_PER_HOUR`,
    /// default 30); more are 429 `too_many_requests`.
    pub per_address_per_hour: u32,
}

impl NotifyMeSettings {
    pub(super) fn read(env: &Vars) -> Result<Self, SettingsError> {
        Ok(Self {
            emails_per_mailbox_per_day: env.positive("NOTIFY_ME_EMAILS_PER_MAILBOX_PER_DAY", 3)?,
            per_address_per_hour: env.positive("NOTIFY_ME_PER_ADDRESS_PER_HOUR", 30)?,
        })
    }
}

#[derive(Clone, Debug)]
pub struct LiveSettings {
    /// Live sockets per process, `/ws` and Socket.IO sessions together
    /// (`LIVE_MAX_SOCKETS`, default 10,000). A Socket.IO long-polling session holds no
    /// connection, so `HTTP_MAX_CONNECTIONS` alone would not bound it.
    pub max_sockets: usize,
    /// Live sockets per client address (`LIVE_MAX_SOCKETS_PER_ADDRESS`, default 64).
    pub max_sockets_per_address: usize,
    /// New sockets (`/ws` upgrades and Socket.IO handshakes) per client address per minute,
    /// per process (`LIVE_HANDSHAKES_PER_ADDRESS_PER_MINUTE`, default 120).
    pub handshakes_per_address_per_minute: u32,
}

impl LiveSettings {
    pub(super) fn read(env: &Vars) -> Result<Self, SettingsError> {
        Ok(Self {
            max_sockets: env.positive("LIVE_MAX_SOCKETS", 10_000)?,
            max_sockets_per_address: env.positive("LIVE_MAX_SOCKETS_PER_ADDRESS", 64)?,
            handshakes_per_address_per_minute: env
                .positive("LIVE_HANDSHAKES_PER_ADDRESS_PER_MINUTE", 120)?,
        })
    }
}
