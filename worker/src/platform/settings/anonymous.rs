//! Limits on what anyone may do without an account: "notify me" (which sends email to an
//! address nobody proved is theirs). Live sockets' limits are the api's (`api::settings`).
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
