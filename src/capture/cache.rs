//! Whether a shared cache (a CDN, a caching proxy) may store a response,
//! read from its status and `Cache-Control` / `Expires` (RFC 9111), and
//! how to make it private. touchgate never adds one visitor's identity
//! cookies to a response that a shared cache could hand to the next
//! visitor.

use http::HeaderMap;
use http::header::{self, HeaderValue};

/// Statuses a cache may store without explicit freshness (RFC 9110
/// §15.1, "heuristically cacheable").
const HEURISTIC: [u16; 12] = [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// A shared cache may store this response: `Cache-Control` says `public`
/// or gives it a freshness (`s-maxage`, `max-age`, `Expires`) or asks only
/// for revalidation (`no-cache`), or says nothing that forbids it and the
/// status is heuristically cacheable. `private` (even qualified) and
/// `no-store` keep it out of shared caches.
pub fn shared_cacheable(status: u16, headers: &HeaderMap) -> bool {
    let mut explicit = false;
    for d in directives(headers) {
        match d.name.to_ascii_lowercase().as_str() {
            "private" | "no-store" => return false,
            "public" | "s-maxage" | "max-age" | "no-cache" => explicit = true,
            _ => {}
        }
    }
    explicit || headers.contains_key(header::EXPIRES) || HEURISTIC.contains(&status)
}

/// Rewrite `Cache-Control` so that no shared cache stores the response:
/// `private`, keeping the directives that still mean something to the
/// browser's own cache (`max-age`, `no-cache`, `must-revalidate`, …) and
/// dropping those addressed to shared caches (`public`, `s-maxage`,
/// `proxy-revalidate`).
pub fn make_private(headers: &mut HeaderMap) {
    let mut out = String::from("private");
    for d in directives(headers) {
        let name = d.name.to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "public" | "private" | "s-maxage" | "proxy-revalidate"
        ) {
            continue;
        }
        out.push_str(", ");
        out.push_str(d.text);
    }
    match HeaderValue::from_str(&out) {
        Ok(v) => {
            headers.insert(header::CACHE_CONTROL, v);
        }
        Err(_) => {
            // Only reachable if the app sent bytes that are not text;
            // plain `private` is then the safe answer.
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        }
    }
}

/// One `Cache-Control` directive as written: its name and the whole
/// `name[=value]` text.
struct Directive<'a> {
    name: &'a str,
    text: &'a str,
}

/// Every directive of every `Cache-Control` line, split at commas outside
/// quoted strings (`no-cache="set-cookie, x"` is one directive).
fn directives(headers: &HeaderMap) -> impl Iterator<Item = Directive<'_>> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_list)
        .filter_map(|text| {
            let text = text.trim();
            let name = text.split('=').next().unwrap_or("").trim();
            (!name.is_empty()).then_some(Directive { name, text })
        })
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    rest = Some(&s[i + 1..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(cc: &[&str], extra: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in cc {
            m.append(header::CACHE_CONTROL, v.parse().unwrap());
        }
        for (k, v) in extra {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn what_a_shared_cache_may_store() {
        type Case<'a> = (u16, &'a [&'a str], &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            (200, &["public, max-age=600"], &[], true),
            (200, &["s-maxage=60"], &[], true),
            (200, &["max-age=60"], &[], true),
            (200, &["no-cache"], &[], true),
            (302, &["public"], &[], true),
            (200, &[], &[], true),
            (404, &[], &[], true),
            (301, &[], &[], true),
            (302, &[], &[], false),
            (303, &[], &[], false),
            (500, &[], &[], false),
            (
                302,
                &[],
                &[("expires", "Thu, 01 Dec 2094 16:00:00 GMT")],
                true,
            ),
            (200, &["private"], &[], false),
            (200, &["no-store"], &[], false),
            (200, &["public", "no-store"], &[], false),
            (200, &["PUBLIC, Max-Age=5"], &[], true),
            (200, &["private=\"set-cookie\", public"], &[], false),
            (
                200,
                &["no-cache=\"set-cookie, private\", max-age=5"],
                &[],
                true,
            ),
            (500, &["must-revalidate"], &[], false),
            (200, &["must-revalidate"], &[], true),
        ];
        for (status, cc, extra, want) in cases {
            assert_eq!(
                shared_cacheable(*status, &h(cc, extra)),
                *want,
                "{status} {cc:?} {extra:?}"
            );
        }
    }

    #[test]
    fn made_private_keeps_what_the_browser_uses() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "private"),
            (&["public, max-age=600"], "private, max-age=600"),
            (
                &["s-maxage=60, max-age=10", "must-revalidate"],
                "private, max-age=10, must-revalidate",
            ),
            (&["public,proxy-revalidate"], "private"),
            (&["no-cache=\"a, b\", Public"], "private, no-cache=\"a, b\""),
        ];
        for (cc, want) in cases {
            let mut m = h(cc, &[]);
            make_private(&mut m);
            assert_eq!(m.get_all(header::CACHE_CONTROL).iter().count(), 1);
            assert_eq!(m[header::CACHE_CONTROL], *want, "{cc:?}");
            assert!(!shared_cacheable(200, &m));
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn directive() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("public".to_string()),
                Just("private".to_string()),
                Just("no-store".to_string()),
                Just("no-cache".to_string()),
                Just("must-revalidate".to_string()),
                Just("proxy-revalidate".to_string()),
                Just("immutable".to_string()),
                (0u32..100000).prop_map(|n| format!("max-age={n}")),
                (0u32..100000).prop_map(|n| format!("S-MaxAge={n}")),
                "[a-z-]{1,10}=\"[ -!#-~,]{0,10}\"",
            ]
        }

        proptest! {
            /// After `make_private`, no shared cache may store it, whatever
            /// it said before; doing it twice changes nothing more.
            #[test]
            fn private_is_private(
                lines in proptest::collection::vec(
                    proptest::collection::vec(directive(), 0..4).prop_map(|d| d.join(", ")),
                    0..3,
                ),
                status in 100u16..600,
            ) {
                let mut m = HeaderMap::new();
                for l in &lines {
                    if let Ok(v) = HeaderValue::from_str(l) {
                        m.append(header::CACHE_CONTROL, v);
                    }
                }
                make_private(&mut m);
                prop_assert!(!shared_cacheable(status, &m));
                let once = m.clone();
                make_private(&mut m);
                prop_assert_eq!(once, m);
            }

            /// Splitting never loses or invents a character outside the
            /// separating commas.
            #[test]
            fn list_splitting_is_lossless(s in "[ -~]{0,40}") {
                let parts: Vec<&str> = split_list(&s).collect();
                prop_assert_eq!(parts.join(","), s);
            }
        }
    }
}
