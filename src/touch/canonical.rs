//! The canonical page URL: one spelling per landing page and campaign, so
//! that equal visits hash to equal touchpoint ids.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::host;
use super::normalize::decode;
use super::params::is_campaign_key;

/// Click ids whose values identify one ad click and go only to the ad
/// platform that issued them.
pub const AD_CLICK_KEYS: [&str; 4] = ["gclid", "gbraid", "wbraid", "fbclid"];

/// A parameter the canonical URL keeps.
fn kept(key: &str) -> bool {
    is_campaign_key(key) && !AD_CLICK_KEYS.contains(&key)
}

/// Lowercase scheme and host, no default port (80 for http, 443 for https),
/// no fragment, path as given (`/` when empty), and of the query only the
/// campaign parameters (`utm_*` and click ids), sorted by key then value and
/// re-encoded with `application/x-www-form-urlencoded`. Values are kept raw
/// (decoded, then encoded again), not normalized. The click ids that ad
/// platforms take back ([`AD_CLICK_KEYS`]) are left out: their values reach
/// only the ad-platform sinks, never an event (`click_id_type` says which
/// one was there).
pub fn canonical_url(scheme: &str, host: &str, path: &str, query: Option<&str>) -> String {
    let scheme = scheme.trim();
    let (name, port) = host::split_port(host.trim());
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    };
    let port = port.and_then(|p| match p.parse::<u16>() {
        Ok(n) if Some(n) == default_port => None,
        Ok(n) => Some(Ok(n)),
        Err(_) => Some(Err(p)),
    });

    let path = path.split('#').next().unwrap_or_default();
    let path = if path.is_empty() { "/" } else { path };

    let query_len = query.map_or(0, str::len);
    let mut url = String::with_capacity(scheme.len() + name.len() + path.len() + query_len + 16);
    push_lowercase(&mut url, scheme, true);
    url.push_str("://");
    push_lowercase(&mut url, name, false);
    match port {
        Some(Ok(n)) => {
            url.push(':');
            let _ = write!(url, "{n}");
        }
        Some(Err(p)) => {
            url.push(':');
            url.push_str(p);
        }
        None => {}
    }
    url.push_str(path);
    if let Some(q) = query {
        let mark = url.len();
        url.push('?');
        push_campaign_query(&mut url, q);
        if url.len() == mark + 1 {
            url.truncate(mark);
        }
    }
    url
}

/// Appends `s` lowercased: ASCII only for the scheme (as
/// `to_ascii_lowercase`), Unicode for the host (as `to_lowercase`), without
/// an intermediate String when it is ASCII.
fn push_lowercase(out: &mut String, s: &str, ascii_only: bool) {
    if ascii_only || s.is_ascii() {
        let start = out.len();
        out.push_str(s);
        out[start..].make_ascii_lowercase();
    } else {
        out.push_str(&s.to_lowercase());
    }
}

/// The campaign parameters of a raw query, sorted and re-encoded.
pub fn campaign_query(query: &str) -> String {
    let mut out = String::new();
    push_campaign_query(&mut out, query);
    out
}

/// [`campaign_query`], appended to `out`. Parses like
/// `form_urlencoded::parse`, but decodes a value only when its key is kept.
fn push_campaign_query(out: &mut String, query: &str) {
    let query = query.split('#').next().unwrap_or_default();
    let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key);
        if kept(&key) {
            pairs.push((key, decode(value)));
        }
    }
    pairs.sort();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.extend(form_urlencoded::byte_serialize(key.as_bytes()));
        out.push('=');
        out.extend(form_urlencoded::byte_serialize(value.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The implementation before the allocation-free rewrite.
    fn reference(scheme: &str, host: &str, path: &str, query: Option<&str>) -> String {
        let scheme = scheme.trim().to_ascii_lowercase();
        let (name, port) = host::split_port(host.trim());
        let name = name.to_lowercase();
        let default_port = match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        };
        let port = port.and_then(|p| match p.parse::<u16>() {
            Ok(n) if Some(n) == default_port => None,
            Ok(n) => Some(Cow::Owned(n.to_string())),
            Err(_) => Some(Cow::Borrowed(p)),
        });
        let path = path.split('#').next().unwrap_or_default();
        let path = if path.is_empty() { "/" } else { path };
        let mut url = String::new();
        url.push_str(&scheme);
        url.push_str("://");
        url.push_str(&name);
        if let Some(port) = port {
            url.push(':');
            url.push_str(&port);
        }
        url.push_str(path);
        let campaign = |query: &str| {
            let query = query.split('#').next().unwrap_or_default();
            let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> =
                form_urlencoded::parse(query.as_bytes())
                    .filter(|(k, _)| kept(k))
                    .collect();
            pairs.sort();
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish()
        };
        if let Some(q) = query.map(campaign).filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(&q);
        }
        url
    }

    #[test]
    fn examples_match_the_reference() {
        for (scheme, host, path, query) in [
            (
                "HTTPS",
                "Shop.Example.COM:443",
                "/a#frag",
                Some("b=1&utm_source=G%20x&gclid=a+b#f"),
            ),
            (
                "http",
                "ÄBC.example:8080",
                "",
                Some("utm_a=%FF&&=&utm_a&utm_a=1"),
            ),
            ("ftp", "[::1]:21", "/x", None),
            // A non-ASCII scheme is lowercased as ASCII only, and kept whole.
            ("\u{b47}", "", "", None),
            ("ÀB", "ÀB", "", None),
            ("http", "h:99999", "/", Some("x=1")),
            ("https", "h:0443", "/", Some("utm%5Fsource=a&fbclid=%zz")),
        ] {
            assert_eq!(
                canonical_url(scheme, host, path, query),
                reference(scheme, host, path, query)
            );
        }
    }

    #[test]
    fn ad_click_ids_are_left_out() {
        let url = canonical_url(
            "https",
            "shop.example",
            "/",
            Some("gclid=Cj0&utm_source=g&gbraid=b&wbraid=w&fbclid=IwAR&msclkid=m"),
        );
        assert_eq!(url, "https://shop.example/?msclkid=m&utm_source=g");
    }

    proptest! {
        #[test]
        fn matches_the_reference(
            scheme in "[a-zA-Z ]{0,6}|\\PC{0,6}",
            host in "[a-zA-Z0-9.:\\[\\]ÄİK]{0,20}|\\PC{0,12}",
            path in "(/[a-zA-Z0-9#%]{0,8}){0,3}",
            query in proptest::option::of("([a-z_%5F]{0,9}(=[A-Za-z0-9 +%#._-]{0,12})?&?){0,6}|\\PC{0,30}"),
        ) {
            let q = query.as_deref();
            prop_assert_eq!(canonical_url(&scheme, &host, &path, q), reference(&scheme, &host, &path, q));
        }
    }
}
