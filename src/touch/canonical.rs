//! The canonical page URL: one spelling per landing page and campaign, so
//! that equal visits hash to equal touchpoint ids.

use std::borrow::Cow;

use super::host;
use super::params::is_campaign_key;

/// Lowercase scheme and host, no default port (80 for http, 443 for https),
/// no fragment, path as given (`/` when empty), and of the query only the
/// campaign parameters (`utm_*` and click ids), sorted by key then value and
/// re-encoded with `application/x-www-form-urlencoded`. Values are kept raw
/// (decoded, then encoded again), not normalized.
pub fn canonical_url(scheme: &str, host: &str, path: &str, query: Option<&str>) -> String {
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

    let mut url = String::with_capacity(scheme.len() + name.len() + path.len() + 16);
    url.push_str(&scheme);
    url.push_str("://");
    url.push_str(&name);
    if let Some(port) = port {
        url.push(':');
        url.push_str(&port);
    }
    url.push_str(path);
    if let Some(q) = query.map(campaign_query).filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(&q);
    }
    url
}

/// The campaign parameters of a raw query, sorted and re-encoded.
pub fn campaign_query(query: &str) -> String {
    let query = query.split('#').next().unwrap_or_default();
    let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| is_campaign_key(k))
        .collect();
    pairs.sort();
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}
