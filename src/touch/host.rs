//! Host names: ports, case, `www.`, and which site a host belongs to.

use std::net::IpAddr;

/// Split `host[:port]` (IPv6 in brackets) into host and port text. A suffix
/// that is not all digits is part of the host.
pub fn split_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => {
                let (host, rest) = authority.split_at(end + 1);
                match rest.strip_prefix(':') {
                    Some(port) if is_port(port) => (host, Some(port)),
                    _ => (authority, None),
                }
            }
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if is_port(port) && !host.contains(':') => (host, Some(port)),
        _ => (authority, None),
    }
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Lowercase, without port and trailing dot; `None` when empty.
pub fn bare(authority: &str) -> Option<String> {
    let (host, _) = split_port(authority.trim());
    let host = host.trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_lowercase())
}

/// The host as a referrer source: without a leading `www.`.
pub fn without_www(host: &str) -> &str {
    match host.strip_prefix("www.") {
        Some(rest) if !rest.is_empty() => rest,
        _ => host,
    }
}

/// The registrable domain (eTLD+1, public suffix list with private
/// entries, so `a.github.io` and `b.github.io` are different sites); `None`
/// for IP addresses and hosts without one (`localhost`).
pub fn site(host: &str) -> Option<&str> {
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    if unbracketed.parse::<IpAddr>().is_ok() {
        return None;
    }
    psl::domain_str(host)
}

/// Do two bare hosts belong to the same site? Hosts without a registrable
/// domain only match themselves.
pub fn same_site(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    matches!((site(a), site(b)), (Some(x), Some(y)) if x == y)
}

/// Is this label a country-code top-level domain? All two-letter TLDs are,
/// and the public suffix list knows which exist.
pub fn is_country_code(label: &str) -> bool {
    label.len() == 2
        && label.bytes().all(|b| b.is_ascii_lowercase())
        && psl::suffix(label.as_bytes()).is_some_and(|s| s.is_known())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(split_port("a.com:80"), ("a.com", Some("80")));
        assert_eq!(split_port("a.com"), ("a.com", None));
        assert_eq!(split_port("[::1]:8080"), ("[::1]", Some("8080")));
        assert_eq!(split_port("[::1]"), ("[::1]", None));
        assert_eq!(split_port("::1"), ("::1", None));
        assert_eq!(split_port("a.com:x"), ("a.com:x", None));
    }

    #[test]
    fn sites() {
        assert!(same_site("shop.example.co.uk", "www.example.co.uk"));
        assert!(!same_site("a.github.io", "b.github.io"));
        assert!(same_site("localhost", "localhost"));
        assert!(!same_site("127.0.0.1", "127.0.0.2"));
        assert!(is_country_code("de"));
        assert!(is_country_code("uk"));
        assert!(!is_country_code("go"));
        assert!(!is_country_code("com"));
    }
}
