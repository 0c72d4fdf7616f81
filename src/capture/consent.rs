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
//! - `tcf`: nothing unless the IAB TCF v2.2 string in `euconsent-v2`
//!   grants it, mapped as Google maps TCF purposes to Consent Mode
//!   ([`tcf_consent`]). A missing, malformed or outdated string is no
//!   consent. `Sec-GPC: 1` still withdraws ads consent.
//! - `off`: consent is handled elsewhere; everything is captured.

use http::HeaderMap;
use time::OffsetDateTime;

use super::tcf::{self, TcString};
use crate::config::{ConsentConfig, ConsentMode};
use crate::event::{Consent, TcfAds};

/// The cookie the CMP keeps the TC string in.
pub const TCF_COOKIE: &str = "euconsent-v2";

/// What the request says about consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub consent: Consent,
    /// In `tcf` mode with a usable string: what the ad platforms need
    /// beyond `consent.ads`.
    pub tcf: Option<TcfAds>,
    /// In `tcf` mode without a usable string: why (`missing`,
    /// `malformed`, `outdated`), for `touchgate_consent_tcf_invalid_total`.
    pub tcf_invalid: Option<&'static str>,
}

pub fn evaluate(cfg: &ConsentConfig, headers: &HeaderMap, now: OffsetDateTime) -> Decision {
    let gpc = headers.get("sec-gpc").is_some_and(|v| v.as_bytes() == b"1");
    let consent = match cfg.mode {
        ConsentMode::Tcf => return evaluate_tcf(headers, gpc, now),
        ConsentMode::Off => Consent {
            analytics: true,
            ads: true,
        },
        ConsentMode::Gpc => Consent {
            analytics: !gpc,
            ads: !gpc,
        },
        ConsentMode::Cookie => match cookie_value(headers, &cfg.cookie) {
            None => Consent {
                analytics: false,
                ads: false,
            },
            Some(value) => {
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
        },
    };
    Decision {
        consent,
        tcf: None,
        tcf_invalid: None,
    }
}

fn evaluate_tcf(headers: &HeaderMap, gpc: bool, now: OffsetDateTime) -> Decision {
    let none = |why| Decision {
        consent: Consent {
            analytics: false,
            ads: false,
        },
        tcf: None,
        tcf_invalid: Some(why),
    };
    let Some(value) = cookie_value(headers, TCF_COOKIE) else {
        return none("missing");
    };
    match tcf::decode(value) {
        Err(e) => none(e.reason()),
        Ok(tc) if tc.outdated(now) => none("outdated"),
        Ok(tc) => {
            let (mut consent, ads) = tcf_consent(&tc);
            consent.ads &= !gpc;
            Decision {
                consent,
                tcf: Some(ads),
                tcf_invalid: None,
            }
        }
    }
}

/// TCF purposes as Google's Consent Mode reads them (`ad_storage` =
/// purpose 1, `ad_user_data` = purposes 1 and 7, `ad_personalization` =
/// purposes 3 and 4), and touchgate's consent from them: analytics needs
/// purpose 1 (touchgate's identity cookies are storage on the device);
/// ads needs analytics and `ad_user_data`, since every ad-platform sink
/// sends user data for measurement.
pub fn tcf_consent(tc: &TcString) -> (Consent, TcfAds) {
    let storage = tc.purpose(1);
    let ad_user_data = storage && tc.purpose(7);
    let consent = Consent {
        analytics: storage,
        ads: storage && ad_user_data,
    };
    let ads = TcfAds {
        ad_user_data,
        ad_personalization: tc.purpose(3) && tc.purpose(4),
        google: tc.vendor(tcf::GOOGLE_VENDOR_ID),
    };
    (consent, ads)
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
    use crate::capture::tcf::TcString;
    use http::HeaderValue;

    const NOW: OffsetDateTime = time::macros::datetime!(2026-11-29 10:00:00 UTC);

    fn cfg(mode: ConsentMode) -> ConsentConfig {
        ConsentConfig {
            mode,
            cookie: "CookieConsent".into(),
            analytics_grants: vec!["statistics:true".into()],
            ads_grants: vec!["marketing:true".into()],
        }
    }

    fn eval(mode: ConsentMode, h: &HeaderMap) -> Consent {
        evaluate(&cfg(mode), h, NOW).consent
    }

    const ALL: Consent = Consent {
        analytics: true,
        ads: true,
    };
    const NONE: Consent = Consent {
        analytics: false,
        ads: false,
    };

    #[test]
    fn modes() {
        let mut h = HeaderMap::new();
        assert_eq!(eval(ConsentMode::Gpc, &h), ALL);
        assert_eq!(eval(ConsentMode::Cookie, &h), NONE);
        h.insert("sec-gpc", HeaderValue::from_static("1"));
        assert_eq!(eval(ConsentMode::Gpc, &h), NONE);
        assert_eq!(eval(ConsentMode::Off, &h), ALL);
        assert_eq!(evaluate(&cfg(ConsentMode::Gpc), &h, NOW).tcf_invalid, None);
    }

    #[test]
    fn cookiebot_value_percent_encoded() {
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_static("a=1; CookieConsent={stamp:%27x%27%2Cnecessary:true%2Cstatistics:true%2Cmarketing:false}"),
        );
        assert_eq!(
            eval(ConsentMode::Cookie, &h),
            Consent {
                analytics: true,
                ads: false
            }
        );
    }

    fn tc(purposes: &[u8], vendors: &[u16], updated: OffsetDateTime) -> String {
        tcf::encode(&TcString {
            version: 2,
            created: updated,
            last_updated: updated,
            cmp_id: 7,
            vendor_list_version: 100,
            policy_version: 5,
            purposes_consent: purposes.iter().fold(0, |m, p| m | 1 << (p - 1)),
            vendor_consents: vendors.to_vec(),
        })
    }

    fn with_tcf(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!("a=1; {TCF_COOKIE}={value}")).unwrap(),
        );
        h
    }

    /// Purposes → (analytics, ads, ad_user_data, ad_personalization).
    #[test]
    fn tcf_purposes_map_as_google_documents() {
        let day = time::Duration::days(1);
        for (purposes, want) in [
            (&[1, 2, 3, 4, 7][..], (true, true, true, true)),
            (&[1, 7], (true, true, true, false)),
            (&[1, 3, 4], (true, false, false, true)),
            (&[1, 3], (true, false, false, false)),
            (&[7, 3, 4], (false, false, false, true)),
            (&[], (false, false, false, false)),
        ] {
            let d = evaluate(
                &cfg(ConsentMode::Tcf),
                &with_tcf(&tc(purposes, &[755], NOW - day)),
                NOW,
            );
            let ads = d.tcf.unwrap();
            assert_eq!(
                (
                    d.consent.analytics,
                    d.consent.ads,
                    ads.ad_user_data,
                    ads.ad_personalization
                ),
                want,
                "{purposes:?}"
            );
            assert!(ads.google);
            assert_eq!(d.tcf_invalid, None);
        }
        let no_google = evaluate(
            &cfg(ConsentMode::Tcf),
            &with_tcf(&tc(&[1, 7], &[1, 2, 754], NOW - day)),
            NOW,
        );
        assert!(no_google.consent.ads);
        assert!(!no_google.tcf.unwrap().google);
        // Sec-GPC still withdraws ads.
        let mut h = with_tcf(&tc(&[1, 7], &[755], NOW - day));
        h.insert("sec-gpc", HeaderValue::from_static("1"));
        let d = evaluate(&cfg(ConsentMode::Tcf), &h, NOW);
        assert!(d.consent.analytics && !d.consent.ads);
    }

    #[test]
    fn missing_malformed_or_outdated_strings_are_no_consent() {
        let tcf = cfg(ConsentMode::Tcf);
        let old = NOW - time::Duration::days(400);
        for (h, why) in [
            (HeaderMap::new(), "missing"),
            (with_tcf("%%%not-base64"), "malformed"),
            (with_tcf("CAAA"), "malformed"),
            (with_tcf(&tc(&[1, 7], &[755], old)), "outdated"),
            // A TCF v1 string.
            (with_tcf("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"), "outdated"),
        ] {
            let d = evaluate(&tcf, &h, NOW);
            assert_eq!(d.consent, NONE, "{why}");
            assert_eq!(d.tcf, None, "{why}");
            assert_eq!(d.tcf_invalid, Some(why));
        }
    }
}
