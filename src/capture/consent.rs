//! Consent: whether this visitor may be identified (analytics) and whether
//! their events may reach ad platforms (ads).
//!
//! Modes (`[consent] mode`):
//! - `gpc` (default): consent unless the browser sends `Sec-GPC: 1`.
//! - `cookie`: nothing unless the CMP's consent cookie grants it (opt-in).
//!   The cookie value is percent-decoded and searched for the configured
//!   grant substrings, which covers the common CMP formats: Cookiebot
//!   (`CookieConsent`: `statistics:true`, `marketing:true`), OneTrust
//!   (`OptanonConsent`: `C0002:1`, `C0004:1`), or a cookie of your own.
//!   `Sec-GPC: 1` still withdraws ads consent.
//! - `off`: consent is handled elsewhere; everything is captured.

use http::HeaderMap;

use crate::config::{ConsentConfig, ConsentMode};
use crate::event::Consent;

pub fn evaluate(cfg: &ConsentConfig, headers: &HeaderMap) -> Consent {
    let gpc = headers.get("sec-gpc").is_some_and(|v| v.as_bytes() == b"1");
    match cfg.mode {
        ConsentMode::Off => Consent {
            analytics: true,
            ads: true,
        },
        ConsentMode::Gpc => Consent {
            analytics: !gpc,
            ads: !gpc,
        },
        ConsentMode::Cookie => {
            let Some(value) = cookie_value(headers, &cfg.cookie) else {
                return Consent {
                    analytics: false,
                    ads: false,
                };
            };
            let decoded = percent_decode(value);
            let grants = |list: &[String]| {
                list.iter()
                    .any(|g| !g.is_empty() && decoded.contains(g.as_str()))
            };
            let analytics = grants(&cfg.analytics_grants);
            Consent {
                analytics,
                // Ads without analytics would send events we may not record.
                ads: analytics && grants(&cfg.ads_grants) && !gpc,
            }
        }
    }
}

/// The first value of cookie `name` in any `Cookie` line.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

fn percent_decode(v: &str) -> String {
    form_urlencoded::parse(format!("v={}", v.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cfg(mode: ConsentMode) -> ConsentConfig {
        ConsentConfig {
            mode,
            cookie: "CookieConsent".into(),
            analytics_grants: vec!["statistics:true".into()],
            ads_grants: vec!["marketing:true".into()],
        }
    }

    #[test]
    fn modes() {
        let mut h = HeaderMap::new();
        assert_eq!(
            evaluate(&cfg(ConsentMode::Gpc), &h),
            Consent {
                analytics: true,
                ads: true
            }
        );
        assert_eq!(
            evaluate(&cfg(ConsentMode::Cookie), &h),
            Consent {
                analytics: false,
                ads: false
            }
        );
        h.insert("sec-gpc", HeaderValue::from_static("1"));
        assert_eq!(
            evaluate(&cfg(ConsentMode::Gpc), &h),
            Consent {
                analytics: false,
                ads: false
            }
        );
        assert_eq!(
            evaluate(&cfg(ConsentMode::Off), &h),
            Consent {
                analytics: true,
                ads: true
            }
        );
    }

    #[test]
    fn cookiebot_value_percent_encoded() {
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_static("a=1; CookieConsent={stamp:%27x%27%2Cnecessary:true%2Cstatistics:true%2Cmarketing:false}"),
        );
        assert_eq!(
            evaluate(&cfg(ConsentMode::Cookie), &h),
            Consent {
                analytics: true,
                ads: false
            }
        );
    }
}
