//! Who a request comes from, as every per-address limit counts it.

use std::net::{IpAddr, Ipv4Addr};

use poem::Request;

/// The address a request came from: the TCP peer's (a spoofed `X-Forwarded-For` is not
/// believed). Unspecified when the peer is not an IP socket.
pub fn client_ip(req: &Request) -> IpAddr {
    req.remote_addr()
        .as_socket_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip())
}

/// How the limits key a client: an IPv4 address as it is, an IPv6 address by its /64 (one
/// subscriber's network: a host there may pick any address in it).
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_of_one_network_share_a_key_and_ipv4_stays_whole() {
        let key = |s: &str| address_key(s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
    }
}
