#![no_main]
//! Referrer classification over arbitrary input: the first line is the
//! `Referer`, the rest the request host. No panic, and the outcomes agree
//! with each other.

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use touchgate::touch::{self, Observation, TouchRules};

static RULES: LazyLock<TouchRules> = LazyLock::new(TouchRules::default);

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (referrer, host) = text.split_once('\n').unwrap_or((&text, "www.example.com"));

    let bare = touch::referrer_host(referrer);
    if let Some(h) = &bare {
        assert!(!h.is_empty() && !h.bytes().any(|b| b.is_ascii_uppercase()));
    }
    let class = touch::referrer::classify(referrer);
    assert_eq!(class.is_some(), bare.is_some());

    match touch::observe(&RULES, None, Some(referrer), host) {
        Observation::Direct => assert!(bare.is_none()),
        Observation::Internal => assert!(bare.is_some()),
        Observation::Touch { touch, fbclid } => {
            assert!(bare.is_some());
            assert!(fbclid.is_none() && touch.click_id_type.is_none());
            assert!(touch.medium.is_some());
            assert!(touch.campaign.is_none() && touch.term.is_none());
        }
    }
});
