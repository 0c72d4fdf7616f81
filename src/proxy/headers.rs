//! Header hygiene between the client, touchgate and the upstream.
//!
//! RFC 9110 §7.6.1: hop-by-hop fields, and every field named in any
//! `Connection` line, are removed before forwarding. `HeaderMap::remove`
//! removes one name; `get_all` is used so that every `Connection` line is
//! honoured, not just the first.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

use crate::config::ForwardIp;
use crate::identity::ip;

/// Fields that describe one connection, never the message.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether a field name is one of the hop-by-hop names above (for code
/// that works on raw field lines rather than a `HeaderMap`).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(name))
}

/// Remove hop-by-hop fields and the fields `Connection` names. `TE:
/// trailers` survives (it is how a client says it accepts trailers), and an
/// upgrade request keeps `Upgrade` with `Connection: upgrade` so the
/// upstream can answer 101.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names first: most messages carry at most
    // `Connection`, and each `remove` of an absent name still hashes it.
    let mut present = [false; HOP_BY_HOP.len()];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // The usual `Connection: keep-alive` names a field removed below
        // anyway: skipping it keeps this from allocating per request.
        .filter(|name| !is_hop_by_hop(name.as_bytes()))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let upgrade = if keep_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    let present = HOP_BY_HOP
        .iter()
        .zip(present)
        .filter_map(|(name, here)| here.then_some(name));
    for name in listed.iter().chain(present) {
        // `remove` drops every value of the name (all lines).
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(u) = upgrade {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Remove every header whose name starts with `x-touch-`: those are
/// touchgate's to set, and a client must not be able to forge them.
pub fn strip_touch_headers(headers: &mut HeaderMap) {
    // Fast path: most requests carry none.
    if !headers.keys().any(is_touch_header) {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_touch_header(n))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

fn is_touch_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-touch-")
}

/// What the forwarded headers say about the original request.
pub struct Forwarded<'a> {
    pub client_ip: IpAddr,
    pub policy: ForwardIp,
    /// "http" or "https": what the client used to reach touchgate.
    pub proto: &'static str,
    pub host: Option<&'a str>,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Overwrite — never append to — the forwarded headers, so a client cannot
/// smuggle an address past the IP policy.
pub fn set_forwarded(headers: &mut HeaderMap, f: &Forwarded<'_>) {
    // `insert` replaces every line the client sent; only the names left
    // unset need a `remove`.
    let ip = match f.policy {
        ForwardIp::Raw => Some(ip::canonical(f.client_ip)),
        ForwardIp::Truncate => Some(ip::truncate(f.client_ip)),
        ForwardIp::Drop => None,
    };
    let mut forwarded = String::with_capacity(128);
    match ip {
        Some(ip) => {
            let mut xff = String::with_capacity(48);
            push_ip(&mut xff, ip);
            match ip {
                IpAddr::V4(_) => {
                    forwarded.push_str("for=");
                    forwarded.push_str(&xff);
                    forwarded.push(';');
                }
                IpAddr::V6(_) => {
                    forwarded.push_str("for=\"[");
                    forwarded.push_str(&xff);
                    forwarded.push_str("]\";");
                }
            }
            match HeaderValue::from_str(&xff) {
                Ok(v) => headers.insert(X_FORWARDED_FOR.clone(), v),
                Err(_) => headers.remove(&X_FORWARDED_FOR),
            };
        }
        None => {
            headers.remove(&X_FORWARDED_FOR);
        }
    }
    forwarded.push_str("proto=");
    forwarded.push_str(f.proto);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(f.proto));
    // The host came from the client: forward it only if it is a plain
    // authority, quoted in `Forwarded` per RFC 7239.
    match f
        .host
        .filter(|h| is_plain_authority(h))
        .map(HeaderValue::from_str)
    {
        Some(Ok(v)) => {
            if let Some(host) = f.host {
                forwarded.push_str(";host=\"");
                forwarded.push_str(host);
                forwarded.push('"');
            }
            headers.insert(X_FORWARDED_HOST.clone(), v);
        }
        _ => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    match HeaderValue::from_str(&forwarded) {
        Ok(v) => headers.insert(FORWARDED.clone(), v),
        Err(_) => headers.remove(&FORWARDED),
    };
}

/// An address as `Display` writes it; IPv4 without the formatting
/// machinery, since every proxied request writes one.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

fn is_plain_authority(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

/// Append this hop to `Via` (RFC 9110 §7.6.3).
pub fn add_via(headers: &mut HeaderMap, version: http::Version) {
    let hop = match version {
        http::Version::HTTP_2 => "2 touchgate",
        http::Version::HTTP_10 => "1.0 touchgate",
        _ => "1.1 touchgate",
    };
    headers.append(header::VIA, HeaderValue::from_static(hop));
}

/// Whether the request asks for a protocol upgrade (WebSocket).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v.as_bytes(), b"upgrade"))
}

/// Whether a comma-separated field value (`Connection`, say) lists
/// `token`, compared case-insensitively.
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn addresses_are_written_as_display_writes_them(bits in proptest::prelude::any::<u128>(), v4 in proptest::prelude::any::<u32>()) {
            for ip in [IpAddr::from(std::net::Ipv4Addr::from(v4)), IpAddr::from(std::net::Ipv6Addr::from(bits))] {
                let mut out = String::new();
                push_ip(&mut out, ip);
                proptest::prop_assert_eq!(out, ip.to_string());
            }
        }
    }

    #[test]
    fn every_connection_line_is_honoured() {
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("x-a, keep-alive"),
        );
        h.append(header::CONNECTION, HeaderValue::from_static("x-b"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("2"));
        h.insert("x-c", HeaderValue::from_static("3"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-a").is_none() && h.get("x-b").is_none());
        assert_eq!(h.get("x-c").unwrap(), "3");
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
    }

    #[test]
    fn upgrade_survives_only_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade_request(&h));
        let mut kept = h.clone();
        strip_hop_by_hop(&mut kept, true);
        assert_eq!(kept.get(header::UPGRADE).unwrap(), "websocket");
        strip_hop_by_hop(&mut h, false);
        assert!(h.get(header::UPGRADE).is_none());
    }

    #[test]
    fn forwarded_is_overwritten_per_policy() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        let f = Forwarded {
            client_ip: "203.0.113.77".parse().unwrap(),
            policy: ForwardIp::Truncate,
            proto: "https",
            host: Some("shop.example"),
        };
        set_forwarded(&mut h, &f);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.0");
        assert_eq!(
            h.get("forwarded").unwrap(),
            "for=203.0.113.0;proto=https;host=\"shop.example\""
        );
        set_forwarded(
            &mut h,
            &Forwarded {
                policy: ForwardIp::Drop,
                ..f
            },
        );
        assert!(h.get("x-forwarded-for").is_none());
        assert_eq!(
            h.get("forwarded").unwrap(),
            "proto=https;host=\"shop.example\""
        );
        let v6 = Forwarded {
            client_ip: "2001:db8:1:2::9".parse().unwrap(),
            policy: ForwardIp::Raw,
            proto: "http",
            host: Some("bad\"host"),
        };
        set_forwarded(&mut h, &v6);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "2001:db8:1:2::9");
        assert_eq!(
            h.get("forwarded").unwrap(),
            "for=\"[2001:db8:1:2::9]\";proto=http"
        );
        assert!(h.get("x-forwarded-host").is_none());
    }

    #[test]
    fn touch_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("x-touch-device", HeaderValue::from_static("forged"));
        h.insert("x-touch-first", HeaderValue::from_static("forged"));
        h.insert("x-touchy", HeaderValue::from_static("kept"));
        strip_touch_headers(&mut h);
        assert_eq!(h.len(), 1);
    }
}
