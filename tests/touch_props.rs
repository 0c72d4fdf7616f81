//! Properties of the touch rules over arbitrary input.

use proptest::prelude::*;
use touchgate::touch::{
    self, Observation, TouchRules, canonical_url, channel, clean, normalize,
    query_may_carry_campaign,
};

const CHANNELS: &[&str] = &[
    "Direct",
    "Cross-network",
    "Paid Shopping",
    "Paid Search",
    "Paid Social",
    "Paid Video",
    "Display",
    "Paid Other",
    "Organic Shopping",
    "Organic Social",
    "Organic Video",
    "Organic Search",
    "Referral",
    "Email",
    "Affiliates",
    "Audio",
    "SMS",
    "Mobile Push Notifications",
    "Unassigned",
    "AI Assistants",
];

fn assert_clean(v: &str) {
    assert!(!v.is_empty());
    assert!(v.chars().count() <= 100, "{v:?}");
    assert!(!v.chars().any(char::is_control), "{v:?}");
    assert_eq!(v, v.trim());
    assert!(!v.contains("  "), "{v:?}");
    assert_eq!(clean(v).as_deref(), Some(v), "idempotent");
}

/// Query strings made of campaign keys, click ids and noise, with raw,
/// percent-encoded and arbitrary values.
fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("utm_source".to_string()),
        Just("utm_medium".to_string()),
        Just("utm_campaign".to_string()),
        Just("utm_id".to_string()),
        Just("utm_x".to_string()),
        Just("gclid".to_string()),
        Just("fbclid".to_string()),
        Just("srsltid".to_string()),
        Just("utm%5Fsource".to_string()),
        "[a-z_%]{0,8}",
    ];
    let value = prop_oneof![
        "[A-Za-z0-9 +%._-]{0,20}",
        any::<String>(),
        "(%[0-9A-Fa-f]{2}){0,12}",
    ];
    prop::collection::vec((key, value), 0..6).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={}", v.replace('&', "%26")))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn referrer() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(https?|android-app)://[a-zA-Z0-9.\\-\\[\\]:]{0,30}(/[a-z/?=&#.]{0,20})?",
        Just("https://www.google.co.uk/".to_string()),
        Just("https://x.com/i/grok".to_string()),
        "https://[a-z0-9]{1,6}\\.(mail\\.live\\.com|mail\\.yahoo\\.net|images\\.search\\.yahoo\\.com|google\\.(de|co\\.uk)|doubleclick\\.net)/[a-z?=&]{0,12}",
        "https://(chatgpt\\.com|deref-gmx\\.net|www\\.google\\.com/(aclk|url\\?sa=D)|www\\.amazon\\.de)/?[a-z]{0,8}",
    ]
}

proptest! {
    #[test]
    fn clean_is_bounded_and_idempotent(s in any::<String>()) {
        if let Some(v) = clean(&s) {
            assert_clean(&v);
        }
    }

    #[test]
    fn clean_handles_whitespace_and_controls(s in "[ \\t\\n\\x00-\\x1f\\x7f\\u{85}\\u{a0}\\u{200b}\\u{202e}a-zA-ZİẞΣ]{0,300}") {
        if let Some(v) = clean(&s) {
            assert_clean(&v);
        }
    }

    #[test]
    fn normalize_never_panics(s in "[%+a-zA-Z0-9 \\x00-\\x1f]{0,300}|(%[0-9a-fA-F]{2}){0,200}") {
        if let Some(v) = normalize(&s) {
            assert_clean(&v);
        }
    }

    #[test]
    fn observe_never_panics(q in query(), r in referrer(), host in any::<String>()) {
        let rules = TouchRules::default();
        let obs = touch::observe(&rules, Some(&q), Some(&r), &host);
        if let Observation::Touch { touch, fbclid } = &obs {
            for v in [&touch.source, &touch.medium, &touch.campaign, &touch.term, &touch.content, &touch.campaign_id].into_iter().flatten() {
                assert_clean(v);
            }
            assert!(CHANNELS.contains(&touch.channel.as_str()));
            assert_eq!(touch.valid, touch.source.is_some() && touch.medium.is_some() && touch.channel != "Unassigned");
            if let Some(f) = fbclid {
                assert!(f.bytes().all(|b| b.is_ascii_graphic()) && f.len() <= 500);
            }
        }
        // The pre-check never misses what observe finds in the query.
        let query_only = touch::observe(&rules, Some(&q), None, &host);
        if query_only != Observation::Direct {
            prop_assert!(query_may_carry_campaign(&q), "{q:?}");
        }
    }

    #[test]
    fn precheck_never_misses_arbitrary_queries(q in any::<String>()) {
        let rules = TouchRules::default();
        if touch::observe(&rules, Some(&q), None, "example.com") != Observation::Direct {
            prop_assert!(query_may_carry_campaign(&q), "{q:?}");
        }
    }

    #[test]
    fn canonical_url_is_stable(scheme in "[a-zA-Z]{0,6}", host in "[a-zA-Z0-9.:\\[\\]]{0,20}", path in "(/[a-zA-Z0-9#%]{0,8}){0,3}", q in query()) {
        let url = canonical_url(&scheme, &host, &path, Some(&q));
        // Canonicalizing the canonical query again changes nothing.
        if let Some((_, cq)) = url.split_once('?') {
            let again = canonical_url(&scheme, &host, &path, Some(cq));
            prop_assert_eq!(&again, &url);
        }
        prop_assert!(!url.contains('#'));
    }

    #[test]
    fn canonical_url_never_panics(scheme in any::<String>(), host in any::<String>(), path in any::<String>(), q in any::<String>()) {
        let _ = canonical_url(&scheme, &host, &path, Some(&q));
    }

    /// Classification is total: every referrer and query, under either
    /// rule set, gives exactly one known channel (or says internal/direct),
    /// and the referrer's work is bounded by its length.
    #[test]
    fn classification_is_total(q in query(), r in referrer(), ext in any::<bool>()) {
        let channels = if ext { touch::RuleSet::Extended } else { touch::RuleSet::Ga4 };
        let rules = TouchRules::new(&touchgate::config::TouchConfig { channels, ..Default::default() });
        for query in [Some(q.as_str()), None] {
            match touch::observe(&rules, query, Some(&r), "www.example.com") {
                Observation::Touch { touch, .. } => {
                    prop_assert!(CHANNELS.contains(&touch.channel.as_str()));
                    if !ext {
                        prop_assert!(touch.channel != "AI Assistants");
                        prop_assert_eq!(touch.channel_ga4.as_deref(), None);
                    }
                    if let Some(g) = &touch.channel_ga4 {
                        prop_assert!(CHANNELS.contains(&g.as_str()) && *g != touch.channel);
                    }
                }
                Observation::Internal | Observation::Direct => {}
            }
        }
    }

    /// Hosts with many labels (the parent walk is bounded) and long paths.
    #[test]
    fn deep_hosts_classify(labels in prop::collection::vec("[a-z0-9-]{1,12}", 1..200), path in "(/[a-z]{0,20}){0,50}") {
        let host = labels.join(".");
        let c = touch::referrer::classify(&format!("https://{host}{path}"));
        if let Some(c) = c {
            prop_assert!(c.host.len() <= host.len());
        }
    }

    /// Every user agent gets one family and one bot flag, without panic.
    #[test]
    fn every_user_agent_reduces(ua in any::<String>()) {
        let r = touchgate::capture::user_agent::reduce(&ua);
        prop_assert!(!r.family.is_empty());
        if ua.trim().is_empty() {
            prop_assert!(r.bot);
        }
    }

    #[test]
    fn channel_is_always_a_known_group(s in any::<Option<String>>(), m in any::<Option<String>>(), c in any::<Option<String>>()) {
        let ch = channel(s.as_deref(), m.as_deref(), c.as_deref());
        prop_assert!(CHANNELS.contains(&ch));
    }
}
