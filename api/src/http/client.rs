//! Who sent a request, as every per-address limit counts it.
//!
//! The TCP peer, unless that peer is a proxy the operator trusts (`TRUSTED_PROXIES`): then the
//! client is the rightmost address in the proxies' chain (`Forwarded`, or `X-Forwarded-For`
//! when there is no `Forwarded`) that is not itself a trusted proxy. Everything left of it
//! was written by the client and proves nothing; a spoofed header from a peer nobody trusts
//! is ignored altogether.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use poem::{Request, http::HeaderMap};
use worker::settings::AbuseSettings;

/// The client's address (see the module's documentation), with the operator's trusted proxies
/// from the request's data (the app carries the [`AbuseSettings`]). `0.0.0.0` for a request
/// that came over no TCP connection (none does in this server).
pub fn client_ip(req: &Request) -> IpAddr {
    let Some(peer) = req
        .remote_addr()
        .as_socket_addr()
        .map(std::net::SocketAddr::ip)
    else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    match req.data::<AbuseSettings>() {
        Some(settings) => resolve(peer, req.headers(), settings),
        None => peer.to_canonical(),
    }
}

/// The client behind `peer`, given the request's headers and whom the operator trusts.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, settings: &AbuseSettings) -> IpAddr {
    let mut client = peer.to_canonical();
    if !settings.trusts(client) {
        return client;
    }
    for hop in forwarded_chain(headers).into_iter().rev() {
        // An unreadable hop (`unknown`, an obfuscated name): nobody trusted vouches for
        // anything left of it, so the last address a trusted proxy gave is the client.
        let Some(hop) = hop else {
            return client;
        };
        client = hop.to_canonical();
        if !settings.trusts(client) {
            return client;
        }
    }
    client
}

/// The key every per-address limit counts under: an IPv4 address, or the /64 of an IPv6 one
/// (one household or phone gets a whole /64, so counting single v6 addresses counts nothing).
pub fn limit_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & (u128::MAX << 64);
            format!("{}/64", Ipv6Addr::from(network))
        }
    }
}

/// [`limit_key`] of the request's client.
pub fn limit_key_of(req: &Request) -> String {
    limit_key(client_ip(req))
}

/// The proxies' chain, left (the original client, as claimed) to right (the hop nearest us),
/// from every `Forwarded` header in order, or else from every `X-Forwarded-For` header. `None`
/// for a hop that names no address.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<Option<IpAddr>> = headers
        .get_all("forwarded")
        .iter()
        .flat_map(|value| {
            let value = value.to_str().ok();
            // An unreadable header is one unreadable hop.
            let elements: Vec<&str> = value.map_or_else(|| vec![""], |v| v.split(',').collect());
            elements.into_iter().map(forwarded_for).collect::<Vec<_>>()
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| match value.to_str() {
            Ok(v) => v.split(',').map(node).collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect()
}

/// The `for=` address of one `Forwarded` element (RFC 7239), `None` when it names none.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| node(value))?
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`, any of them in double quotes.
fn node(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim().trim_matches('"').trim();
    if let Some(rest) = raw.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(ip) = raw.parse() {
        return Some(ip);
    }
    // `v4:port`; a bare v6 address parsed above.
    let (host, port) = raw.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(trusted: &str) -> AbuseSettings {
        let vars = HashMap::from([
            ("TRUSTED_PROXIES".to_owned(), trusted.to_owned()),
            (
                "JWT_ACCESS_SECRET".to_owned(),
                "a-test-secret-of-at-least-thirty-two-bytes".to_owned(),
            ),
            (
                "DATA_DIR".to_owned(),
                std::env::temp_dir().display().to_string(),
            ),
        ]);
        worker::Settings::from_vars(vars)
            .unwrap_or_else(|e| unreachable!("{e}"))
            .abuse
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap_or_else(|_| unreachable!()));
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn a_peer_nobody_trusts_is_the_client_whatever_it_claims() {
        let client = resolve(
            ip("198.51.100.7"),
            &headers(&[("x-forwarded-for", "203.0.113.9")]),
            &settings(""),
        );
        assert_eq!(client, ip("198.51.100.7"));
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = settings("127.0.0.1/32, 10.0.0.0/8");
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.5")]);
        assert_eq!(
            resolve(ip("127.0.0.1"), &chain, &trusted),
            ip("203.0.113.9")
        );
        // Two headers are one list.
        let split = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9:5123"),
        ]);
        assert_eq!(
            resolve(ip("127.0.0.1"), &split, &trusted),
            ip("203.0.113.9")
        );
        // Forwarded wins over X-Forwarded-For.
        let both = headers(&[
            (
                "forwarded",
                r#"for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711""#,
            ),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(
            resolve(ip("10.1.2.3"), &both, &trusted),
            ip("2001:db8:cafe::17")
        );
        // Only proxies in the chain: the leftmost is the client.
        let inside = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.5")]);
        assert_eq!(resolve(ip("127.0.0.1"), &inside, &trusted), ip("10.9.9.9"));
        // No header: the proxy itself.
        assert_eq!(
            resolve(ip("127.0.0.1"), &headers(&[]), &trusted),
            ip("127.0.0.1")
        );
        // An unreadable hop: the last address a trusted proxy vouched for.
        let hidden = headers(&[("forwarded", "for=198.51.100.1, for=_hidden, for=10.0.0.5")]);
        assert_eq!(resolve(ip("127.0.0.1"), &hidden, &trusted), ip("10.0.0.5"));
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(
            limit_key(ip("2001:db8:1:2:ffff:1:2:3")),
            limit_key(ip("2001:db8:1:2::9"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:3::1")),
            limit_key(ip("2001:db8:1:2::1"))
        );
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(limit_key(ip("192.0.2.1")), "192.0.2.1");
    }
}
