//! Client IP handling: which address is the client's, and how much of it
//! may leave the process.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The network an address belongs to: IPv4 /24, IPv6 /48. IPv4-mapped IPv6
/// addresses are treated as IPv4.
pub fn truncate(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], 0))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    }
}

/// `203.0.113.0/24` or `2001:db8:1::/48`.
pub fn prefix_string(ip: IpAddr) -> String {
    match truncate(ip) {
        v4 @ IpAddr::V4(_) => format!("{v4}/24"),
        v6 @ IpAddr::V6(_) => format!("{v6}/48"),
    }
}

pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The client address: the socket peer, unless the peer is a trusted proxy,
/// in which case `x-forwarded-for` is walked from the right through trusted
/// hops and the first untrusted address is the client. Anything a client
/// could spoof (the left part of the header) is never believed.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    // Every `x-forwarded-for` line, in order, split on commas.
    let hops: Vec<&str> = forwarded_for
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(client, trusted) {
                    return client;
                }
            }
            // A garbled hop ends the trusted chain: the last good address wins.
            Err(_) => return client,
        }
    }
    client
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_v4_and_v6() {
        assert_eq!(
            prefix_string("203.0.113.77".parse().unwrap()),
            "203.0.113.0/24"
        );
        assert_eq!(
            prefix_string("2001:db8:1:2:3::4".parse().unwrap()),
            "2001:db8:1::/48"
        );
        assert_eq!(
            prefix_string("::ffff:198.51.100.9".parse().unwrap()),
            "198.51.100.0/24"
        );
    }

    #[test]
    fn forwarded_for_only_through_trusted_hops() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let xff = ["1.2.3.4, 198.51.100.1, 10.2.2.2"];
        assert_eq!(
            client_ip(peer, xff.iter().copied(), &trusted),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        let untrusted_peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            client_ip(untrusted_peer, xff.iter().copied(), &trusted),
            untrusted_peer
        );
        assert_eq!(client_ip(peer, ["garbage"].iter().copied(), &trusted), peer);
    }
}
