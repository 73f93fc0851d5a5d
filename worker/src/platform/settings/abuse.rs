//! What keeps a drop fair against bots: whose address a request comes from, the limits per
//! address, and the proof-of-work challenge.

use std::{net::IpAddr, time::Duration};

use super::{
    Secret, SettingsError,
    env::{Flag, Vars, invalid},
};

/// A block of addresses, `10.0.0.0/8` or `2001:db8::/32` (a bare address is its own block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// # Errors
    /// Not an address, or a prefix longer than the address.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (address, prefix) = match raw.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (raw, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{raw:?} is not an address or a CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{raw:?}: the prefix must be 0 to {max}")),
            },
        };
        Ok(Self { network, prefix })
    }

    /// Whether `ip` lies in this block (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct AbuseSettings {
    /// Peers whose `Forwarded` / `X-Forwarded-For` headers are believed (`TRUSTED_PROXIES`,
    /// comma-separated CIDRs). Empty, the default: nobody's; every request is counted by its
    /// TCP peer.
    pub trusted_proxies: Vec<Cidr>,
    /// Accounts one address (an IPv6 /64) may create per hour (`SIGNUPS_PER_ADDRESS_PER_HOUR`).
    pub signups_per_address_per_hour: u32,
    /// Holds, waitlist places and draw entries one address (an IPv6 /64) may take per drop
    /// within [`Self::drop_address_window`] (`HOLDS_PER_DROP_PER_ADDRESS`).
    pub holds_per_drop_per_address: u32,
    /// The window of that count (`DROP_ADDRESS_WINDOW_SECS`).
    pub drop_address_window: Duration,
    /// Signing email-verification links (derived from the JWT secret).
    pub verification_key: Secret,
    /// How long a verification link works (`EMAIL_VERIFICATION_TTL_SECS`).
    pub verification_ttl: Duration,
    /// Signing the proof-of-work challenges (derived from the JWT secret).
    pub altcha_secret: Secret,
    /// PBKDF2 iterations per try of a challenge (`ALTCHA_COST`).
    pub altcha_cost: u32,
    /// How long a challenge may be solved and spent (`ALTCHA_TTL_SECS`).
    pub altcha_ttl: Duration,
    /// Whether signing up needs a solved challenge (`ALTCHA_ON_SIGNUP`).
    pub altcha_on_signup: bool,
}

impl AbuseSettings {
    pub(super) fn read(env: &Vars, jwt_secret: &Secret) -> Result<Self, SettingsError> {
        const PROXIES: &str = "TRUSTED_PROXIES";
        let trusted_proxies = env
            .get(PROXIES)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|cidr| !cidr.is_empty())
            .map(|cidr| Cidr::parse(cidr).map_err(|reason| invalid(PROXIES, reason)))
            .collect::<Result<Vec<_>, _>>()?;
        let derive = |purpose: &[u8]| {
            use hmac::{Hmac, Mac};
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(jwt_secret.expose().as_bytes())
                .map_err(|e| invalid("JWT_ACCESS_SECRET", e.to_string()))?;
            mac.update(purpose);
            Ok::<_, SettingsError>(Secret::new(hex_of(&mac.finalize().into_bytes())))
        };
        let altcha_cost: u32 = env.positive("ALTCHA_COST", 5_000)?;
        if altcha_cost > 1_000_000 {
            return Err(invalid("ALTCHA_COST", "must be at most 1000000"));
        }
        Ok(Self {
            trusted_proxies,
            signups_per_address_per_hour: env.positive("SIGNUPS_PER_ADDRESS_PER_HOUR", 10)?,
            holds_per_drop_per_address: env.positive("HOLDS_PER_DROP_PER_ADDRESS", 3)?,
            drop_address_window: env.secs("DROP_ADDRESS_WINDOW_SECS", 24 * 3600, 1)?,
            verification_key: derive(b"honeydrop email verification")?,
            verification_ttl: env.secs("EMAIL_VERIFICATION_TTL_SECS", 7 * 24 * 3600, 60)?,
            altcha_secret: derive(b"honeydrop altcha challenges")?,
            altcha_cost,
            altcha_ttl: env.secs("ALTCHA_TTL_SECS", 600, 10)?,
            altcha_on_signup: env.parse::<Flag>("ALTCHA_ON_SIGNUP")?.is_some_and(|f| f.0),
        })
    }

    /// Whether `peer` is one of [`Self::trusted_proxies`].
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|cidr| cidr.contains(peer))
    }
}

fn hex_of(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::Cidr;

    fn ip(s: &str) -> std::net::IpAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn blocks_contain_their_addresses_and_no_others() {
        let lan = Cidr::parse("10.0.0.0/8").unwrap_or_else(|e| unreachable!("{e}"));
        assert!(lan.contains(ip("10.200.1.1")));
        assert!(lan.contains(ip("::ffff:10.0.0.1")));
        assert!(!lan.contains(ip("11.0.0.1")));
        let one = Cidr::parse("127.0.0.1").unwrap_or_else(|e| unreachable!("{e}"));
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap_or_else(|e| unreachable!("{e}"));
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("0.0.0.0/0").is_ok_and(|all| all.contains(ip("8.8.8.8"))));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("proxy.local").is_err());
    }
}
