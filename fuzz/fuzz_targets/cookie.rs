#![no_main]
//! The signed touch cookie decoder over arbitrary values: never panics,
//! never accepts a value it did not sign, and round-trips what it did.

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use touchgate::identity::Keys;
use touchgate::identity::cookie::{self, Verified};
use touchgate::touch;

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys::derive(b"fuzz-secret-0123456789"));
static OLD: LazyLock<Keys> = LazyLock::new(|| Keys::derive(b"fuzz-previous-0123456789"));

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    for name in [cookie::FIRST_TOUCH, cookie::LAST_TOUCH] {
        match cookie::decode_touch(&KEYS, Some(&OLD), name, &value, touch::channel) {
            Verified::Invalid => {}
            Verified::Current(t) | Verified::Previous(t) => {
                // Only reachable with a forged MAC: a real finding.
                panic!("accepted an unsigned cookie: {t:?}");
            }
        }
    }
    let _ = cookie::is_valid_id(&value);
    // Whatever a touch holds, its cookie decodes back to it (values cut at
    // the cookie's field bound).
    let text: String = value.chars().filter(|c| !c.is_control()).take(60).collect();
    let stored = cookie::StoredTouch {
        touch: touchgate::event::TouchAt {
            touch: touchgate::event::Touch {
                source: Some(text.clone()),
                medium: Some("cpc".into()),
                campaign: (!text.is_empty()).then(|| text.clone()),
                channel: touch::channel(Some(&text), Some("cpc"), Some(&text)).to_string(),
                valid: true,
                ..Default::default()
            },
            at: time::OffsetDateTime::from_unix_timestamp(1_764_316_800).unwrap(),
        },
        click: None,
    };
    let encoded = cookie::encode_touch(&KEYS, cookie::FIRST_TOUCH, &stored);
    assert!(encoded.len() < 1024);
    match cookie::decode_touch(&KEYS, None, cookie::FIRST_TOUCH, &encoded, touch::channel) {
        Verified::Current(back) => {
            // Values are cut at 80 bytes, on a character boundary, in the cookie only.
            let back = back.touch.touch.source.unwrap_or_default();
            assert!(text.starts_with(&back) && back.len() <= 80 && (back.len() == text.len() || text.len() > 80));
        }
        other => panic!("own cookie rejected: {other:?}"),
    }
});
