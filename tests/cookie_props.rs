//! Any cookie string either verifies or is rejected, and never panics;
//! what touchgate signs always verifies.

use proptest::prelude::*;
use touchgate::event::{Touch, TouchAt};
use touchgate::identity::Keys;
use touchgate::identity::cookie::{self, StoredTouch, Verified};
use touchgate::touch;

fn keys() -> Keys {
    Keys::derive(b"property-test-secret-0123")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_values_are_rejected_without_panicking(value in ".{0,2000}") {
        let k = keys();
        for name in [cookie::FIRST_TOUCH, cookie::LAST_TOUCH] {
            prop_assert_eq!(cookie::decode_touch(&k, None, name, &value, touch::channel), Verified::Invalid);
        }
        let _ = cookie::is_valid_id(&value);
    }

    #[test]
    fn v1_shaped_garbage_is_rejected(payload in "[A-Za-z0-9_-]{0,1500}", mac in "[A-Za-z0-9_-]{0,40}") {
        let value = format!("v1.{payload}.{mac}");
        prop_assert_eq!(cookie::decode_touch(&keys(), None, cookie::FIRST_TOUCH, &value, touch::channel), Verified::Invalid);
    }

    #[test]
    fn signed_touches_round_trip(source in "[^\\p{C}]{1,120}", campaign in proptest::option::of("[^\\p{C}]{0,120}"), at in 0i64..4_000_000_000) {
        let stored = StoredTouch {
            touch: TouchAt {
                touch: Touch {
                    source: Some(source.clone()),
                    medium: Some("cpc".into()),
                    campaign: campaign.clone(),
                    channel: touch::channel(Some(&source), Some("cpc"), campaign.as_deref()).to_string(),
                    valid: true,
                    ..Touch::default()
                },
                at: time::OffsetDateTime::from_unix_timestamp(at).unwrap(),
            },
            click: None,
        };
        let k = keys();
        let value = cookie::encode_touch(&k, cookie::LAST_TOUCH, &stored);
        prop_assert!(value.len() + cookie::LAST_TOUCH.len() < 1024);
        match cookie::decode_touch(&k, None, cookie::LAST_TOUCH, &value, touch::channel) {
            Verified::Current(back) => {
                prop_assert_eq!(back.touch.at, stored.touch.at);
                // Fields are cut at 80 bytes in the cookie, on a character boundary.
                let src = back.touch.touch.source.unwrap();
                prop_assert!(source.starts_with(&src) && src.len() <= 80);
            }
            other => prop_assert!(false, "own cookie rejected: {:?}", other),
        }
    }
}
