#![no_main]
//! observe() and canonical_url() over arbitrary query bytes: no panic, the
//! pre-check never misses a campaign observe() finds, values stay clean, and
//! the canonical query is a fixed point.

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use touchgate::touch::{self, Observation, TouchRules};

static RULES: LazyLock<TouchRules> = LazyLock::new(TouchRules::default);

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    let may = touch::query_may_carry_campaign(&query);
    let obs = touch::observe(&RULES, Some(&query), None, "www.example.com");
    if let Observation::Touch { touch, fbclid } = &obs {
        assert!(may, "pre-check missed {query:?}");
        for v in [
            &touch.source,
            &touch.medium,
            &touch.campaign,
            &touch.term,
            &touch.content,
        ]
        .into_iter()
        .flatten()
        {
            assert!(!v.is_empty() && v.chars().count() <= 100 && !v.chars().any(char::is_control));
            assert_eq!(touch::clean(v).as_deref(), Some(v.as_str()));
        }
        if let Some(f) = fbclid {
            assert!(f.bytes().all(|b| b.is_ascii_graphic()));
        }
    }

    let url = touch::canonical_url("https", "Www.Example.com:443", "/landing", Some(&query));
    assert!(url.starts_with("https://www.example.com/landing"));
    if let Some((_, q)) = url.split_once('?') {
        let again = touch::canonical_url("https", "www.example.com", "/landing", Some(q));
        assert_eq!(again, url);
    }
});
