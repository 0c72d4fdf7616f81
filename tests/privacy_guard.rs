//! The PII guard over whole events: a corpus of e-mails, phones, IPs and card
//! numbers placed everywhere an event carries text, and the look-alikes it
//! must leave alone.

use proptest::prelude::*;
use serde_json::json;
use touchgate::event::{Client, Event, Origin, Page, Touch, TouchAt, UserAgent};
use touchgate::privacy::{guard, is_never_captured, looks_like_card, scrub_free_text};

fn base_event() -> Event {
    let t = time::macros::datetime!(2026-11-29 10:00:00 UTC);
    let mut e = Event::new(
        "9f86d081884c7d659a2feaa0c55ad015".into(),
        "signup_submitted".into(),
        Origin::Proxy,
        t,
        t,
    );
    e.device_id = Some("0123456789abcdef0123456789abcdef".into());
    e.session_id = Some("fedcba9876543210fedcba9876543210".into());
    e.lead_id = Some("11112222333344445555666677778888".into());
    e.touchpoint_id = Some("abcdefabcdefabcdefabcdefabcdefab".into());
    e.natural_key = Some("11112222333344445555666677778888|2026-11-29".into());
    e.page = Some(Page {
        url: "https://shop.example/signup?utm_campaign=spring_sale_2026&utm_medium=cpc&utm_source=google".into(),
        path: "/signup".into(),
        referrer_host: Some("www.google.com".into()),
    });
    e.touch = Some(Touch {
        source: Some("google".into()),
        medium: Some("cpc".into()),
        campaign: Some("spring_sale_2026".into()),
        term: Some("running shoes size 42".into()),
        content: Some("v1.2.3 banner 19.99".into()),
        campaign_id: Some("123456".into()),
        click_id_type: Some("gclid".into()),
        channel: "Paid Search".into(),
        channel_ga4: None,
        valid: true,
    });
    e.first_touch = Some(TouchAt {
        touch: Touch::direct(),
        at: t,
    });
    e.client = Client {
        ip_prefix: Some("203.0.113.0/24".into()),
        context: Some(json!({"cid": "evt_1764316800123", "ux": {"lcp": 1234.5}})),
        user_agent: Some(UserAgent {
            family: "Chrome".into(),
            bot: false,
        }),
    };
    e.status = Some(302);
    e.properties.insert("plan".into(), json!("pro"));
    e
}

/// Where a corpus value is placed in the event.
#[derive(Debug, Clone, Copy)]
enum Place {
    UtmContent,
    UtmTerm,
    PageUrlRaw,
    PageUrlEncoded,
    PagePath,
    FirstTouchCampaign,
    Context,
    Property,
    NestedProperty,
    NaturalKey,
}

const PLACES: [Place; 10] = [
    Place::UtmContent,
    Place::UtmTerm,
    Place::PageUrlRaw,
    Place::PageUrlEncoded,
    Place::PagePath,
    Place::FirstTouchCampaign,
    Place::Context,
    Place::Property,
    Place::NestedProperty,
    Place::NaturalKey,
];

fn encode(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// Puts `v` in the event; returns the field label the guard should report
/// and the raw text that must not survive.
fn place(e: &mut Event, p: Place, v: &str) -> (&'static str, String) {
    match p {
        Place::UtmContent => {
            e.touch.as_mut().unwrap().content = Some(format!("hi {v}"));
            ("touch.content", v.to_string())
        }
        Place::UtmTerm => {
            e.touch.as_mut().unwrap().term = Some(format!("{v} (call)"));
            ("touch.term", v.to_string())
        }
        Place::PageUrlRaw => {
            e.page.as_mut().unwrap().url =
                format!("https://shop.example/signup?utm_content={v}&utm_source=news");
            ("page.url", v.to_string())
        }
        Place::PageUrlEncoded => {
            let enc = encode(v);
            e.page.as_mut().unwrap().url =
                format!("https://shop.example/signup?utm_content={enc}&utm_source=news");
            ("page.url", enc)
        }
        Place::PagePath => {
            e.page.as_mut().unwrap().path = format!("/u/{v}/profile");
            ("page.path", v.to_string())
        }
        Place::FirstTouchCampaign => {
            e.first_touch.as_mut().unwrap().touch.campaign = Some(format!("promo {v}"));
            ("first_touch.campaign", v.to_string())
        }
        Place::Context => {
            e.client.context = Some(json!({"cid": "abc", "exp": {"hero": v}}));
            ("client.context", v.to_string())
        }
        Place::Property => {
            e.properties
                .insert("note".into(), json!(format!("contact: {v}")));
            ("properties", v.to_string())
        }
        Place::NestedProperty => {
            e.properties
                .insert("items".into(), json!([{"label": v}, 3]));
            ("properties", v.to_string())
        }
        Place::NaturalKey => {
            e.natural_key = Some(format!("{v}|2026-11-29"));
            ("natural_key", v.to_string())
        }
    }
}

const EMAILS: &[&str] = &[
    "bob@example.com",
    "Bob.Smith+promo@Example.co.uk",
    "a_b-c@sub.domain.org",
    "o'neil@example.ie",
    "josé@exämple.com",
    "x@y.io",
    "first.last@company.travel",
    "user@xn--80ak6aa92e.com",
];

const PHONES: &[&str] = &[
    "+1 415 555 0123",
    "+14155550123",
    "(415) 555-0123",
    "415-555-0123",
    "415.555.0123",
    "4155550123",
    "1-800-555-0199",
    "+44 20 7946 0958",
    "+44 (0)20 7946 0958",
    "020 7946 0958",
    "0044 20 7946 0958",
    "+33 1 23 45 67 89",
    "01 23 45 67 89",
    "+49 30 1234567",
    "030 1234567",
    "+81-3-1234-5678",
    "612 345 678",
    "+91 98765 43210",
];

const IPS: &[&str] = &[
    "192.168.1.23",
    "8.8.8.8",
    "203.0.113.77",
    "10.0.0.1:8080",
    "2001:db8::1",
    "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    "fe80::1ff:fe23:4567:890a",
    "::ffff:203.0.113.7",
    "[2001:db8::2]:443",
];

const CARDS: &[&str] = &[
    "4111 1111 1111 1111",
    "4111111111111111",
    "5555-5555-5555-4444",
    "378282246310005",
    "6011 1111 1111 1117",
    "3530111333300000",
    "4222222222222",
];

fn corpus() -> Vec<&'static str> {
    EMAILS
        .iter()
        .chain(PHONES)
        .chain(IPS)
        .chain(CARDS)
        .copied()
        .collect()
}

/// Every string in a JSON value (keys included), with its path.
fn strings(v: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::String(s) => out.push((path.to_string(), s.clone())),
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                strings(x, &format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                out.push((format!("{path}.<key>"), k.clone()));
                strings(x, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// After the guard, no string of the event (other than the timestamps and
/// the IP prefix, which are shapes by design) has anything left to redact.
fn assert_clean(e: &Event) {
    let v = serde_json::to_value(e).unwrap();
    let mut all = Vec::new();
    strings(&v, "", &mut all);
    for (path, s) in all {
        if path.ends_with("_at") || path == ".client.ip_prefix" || path.ends_with(".at") {
            continue;
        }
        assert_eq!(
            scrub_free_text(&s),
            s.as_str(),
            "{path} still holds a PII shape"
        );
    }
}

#[test]
fn corpus_has_enough_cases() {
    assert!(corpus().len() >= 40, "{}", corpus().len());
}

#[test]
fn no_corpus_value_survives_anywhere() {
    for (n, v) in corpus().into_iter().enumerate() {
        for p in PLACES {
            let mut e = base_event();
            let (label, raw) = place(&mut e, p, v);
            let labels = guard(&mut e);
            let out = serde_json::to_string(&e).unwrap();
            assert!(
                !out.contains(&raw),
                "case {n} {v:?} in {p:?} survived: {out}"
            );
            assert!(
                labels.contains(&label),
                "case {n} {v:?} in {p:?}: labels {labels:?} lack {label}"
            );
            assert_eq!(labels.len(), 1, "{v:?} in {p:?}: {labels:?}");
            assert_clean(&e);
        }
    }
}

#[test]
fn only_the_matched_span_is_replaced() {
    let cases = [
        ("hi bob@example.com", "hi [email]"),
        ("call +1 415 555 0123 today", "call [phone] today"),
        ("(415) 555-0123", "[phone]"),
        ("from 203.0.113.77.", "from [ip]."),
        ("host [2001:db8::1]:443", "host [[ip]]:443"),
        (
            "card 4111 1111 1111 1111 exp 12/28",
            "card [card] exp 12/28",
        ),
        (
            "https://a.example/?utm_content=hi%20bob%40example.com&utm_source=x",
            "https://a.example/?utm_content=hi%20[email]&utm_source=x",
        ),
        (
            "utm_term=call+415+555+0123&x=1",
            "utm_term=call+[phone]&x=1",
        ),
        ("double bob%2540example.com end", "double [email] end"),
        ("2001%3Adb8%3A%3A1", "[ip]"),
        ("bob@example.com2026", "[email]2026"),
        ("mail: bob@example.com.", "mail: [email]."),
        ("2026-11-29 4155550123", "2026-11-29 [phone]"),
        ("a 4155550123@example.com", "a [email]"),
        ("tel:+14155550123;ext=1", "tel:[phone];ext=1"),
        (
            "x=bob@example.com&y=alice@example.org",
            "x=[email]&y=[email]",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(scrub_free_text(input), want, "input {input:?}");
    }
}

#[test]
fn look_alikes_are_left_alone() {
    for s in [
        "19.99",
        "$1,299.99",
        "EUR 1.299,00",
        "2026-11-29",
        "2026-11-29T10:00:00Z",
        "2026-11-29T10:00:00.123Z",
        "2026-11-29 10:00:00",
        "29.11.2026",
        "11/29/2026",
        "9f86d081884c7d659a2feaa0c55ad015",
        "00000000000000000000000000000000",
        "v1.2.3",
        "1.2.3",
        "10.0.19041.1234",
        "Chrome 131.0.6778.85",
        "spring_sale_2026",
        "spring_sale_20261129",
        "black-friday-2026-11-28",
        "42",
        "12345",
        "1234567",
        "12345678",
        "94105-1234",
        "1764316800",
        "1764316800123",
        "20261129103000",
        "Paid Search",
        "(direct)",
        "google / cpc",
        "gclid=Cj0KCQiA4NWrBhD-ARIsAFCKwWsd1234567890abc",
        "order 1000-2000",
        "size 10 x 20 cm",
        "10:30",
        "std::vec::Vec",
        "a :: b",
        "1 2 3 4 5 6 7 8 9 10",
        "@handle",
        "user@localhost",
        "team@home",
        "https://shop.example/signup?utm_campaign=spring_sale_2026&utm_source=google",
        "/p/123456/details",
        "ISBN 978-3-16-148410-0",
        "100%25 cotton",
        "50% off",
    ] {
        assert_eq!(scrub_free_text(s), s, "{s:?} must not be redacted");
    }
}

#[test]
fn ids_that_are_hashes_are_not_scanned_but_others_are() {
    let mut e = base_event();
    assert!(guard(&mut e).is_empty(), "a clean event is unchanged");
    assert_eq!(e, base_event());

    let mut e = base_event();
    e.user_id = Some("bob@example.com".into());
    e.event_id = "4111111111111111".into();
    let labels = guard(&mut e);
    assert_eq!(e.user_id.as_deref(), Some("[email]"));
    assert_eq!(e.event_id, "[card]");
    assert!(labels.contains(&"user_id") && labels.contains(&"event_id"));
}

#[test]
fn ip_prefix_must_be_truncated() {
    for (prefix, kept) in [
        ("203.0.113.0/24", true),
        ("2001:db8:1::/48", true),
        ("203.0.0.0/16", true),
        ("203.0.113.77/24", false),
        ("203.0.113.77/32", false),
        ("203.0.113.77", false),
        ("2001:db8::1/128", false),
        ("bob@example.com", false),
    ] {
        let mut e = base_event();
        e.client.ip_prefix = Some(prefix.into());
        let labels = guard(&mut e);
        assert_eq!(e.client.ip_prefix.is_some(), kept, "{prefix}");
        assert_eq!(labels.contains(&"client.ip_prefix"), !kept, "{prefix}");
    }
}

#[test]
fn numbers_and_keys_in_properties_are_scanned() {
    let mut e = base_event();
    e.properties.insert("phone".into(), json!(4155550123u64));
    e.properties.insert("count".into(), json!(3));
    e.properties.insert("bob@example.com".into(), json!(true));
    e.properties.insert("price".into(), json!(1299.99));
    let labels = guard(&mut e);
    assert_eq!(labels, vec!["properties"]);
    assert_eq!(e.properties["phone"], json!("[phone]"));
    assert_eq!(e.properties["count"], json!(3));
    assert_eq!(e.properties["price"], json!(1299.99));
    assert!(e.properties.contains_key("[email]"));
    assert!(!e.properties.contains_key("bob@example.com"));
}

#[test]
fn deep_nesting_does_not_exhaust_the_stack() {
    let mut v = json!("bob@example.com");
    for _ in 0..100_000 {
        v = serde_json::Value::Array(vec![v]);
    }
    let mut e = base_event();
    e.properties.insert("deep".into(), v);
    assert_eq!(guard(&mut e), vec!["properties"]);
    let mut cur = &e.properties["deep"];
    while let serde_json::Value::Array(a) = cur {
        cur = &a[0];
    }
    assert_eq!(cur, &json!("[email]"));
    // Dropping a 100k-deep value recurses in serde_json; leak it instead.
    std::mem::forget(e);
}

#[test]
fn field_policy() {
    assert!(is_never_captured("user[password]"));
    assert!(is_never_captured("card-cvc"));
    assert!(!is_never_captured("email"));
    assert!(looks_like_card(" 4111-1111-1111-1111 "));
    assert!(!looks_like_card("4111-1111-1111-1112"));
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An independent e-mail shape, for the property test.
fn email_shape() -> regex::Regex {
    regex::Regex::new(r"[A-Za-z0-9._+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}").unwrap()
}

proptest! {
    #[test]
    fn guard_never_panics_and_leaves_no_email(
        pre in "\\PC{0,24}",
        local in "[A-Za-z0-9._+-]{1,12}",
        domain in "[a-z0-9-]{1,10}(\\.[a-z0-9-]{1,6}){0,2}\\.[a-z]{2,6}",
        post in "\\PC{0,24}",
        encode_it in any::<bool>(),
        junk in "\\PC{0,64}",
    ) {
        let email = format!("{local}@{domain}");
        let text = format!("{pre}{email}{post}");
        let text = if encode_it { encode(&text) } else { text };
        let mut e = base_event();
        e.touch.as_mut().unwrap().content = Some(text.clone());
        e.page.as_mut().unwrap().url = format!("https://x.example/?q={text}");
        e.properties.insert("junk".into(), json!(junk));
        e.properties.insert("t".into(), json!([text.clone(), {"k": text}]));
        let _ = guard(&mut e);
        let out = serde_json::to_string(&e).unwrap();
        let re = email_shape();
        prop_assert!(!re.is_match(&out), "email left in {}", out);
        prop_assert!(!out.contains(&email), "raw {} left", email);
        prop_assert!(!percent_decode(&out).contains(&email), "encoded {} left in {}", email, out);
    }

    #[test]
    fn scrub_never_panics(s in "\\PC{0,200}", b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = scrub_free_text(&s);
        let lossy = String::from_utf8_lossy(&b);
        let out = scrub_free_text(&lossy);
        // Scrubbing is idempotent: its output has nothing left to redact.
        prop_assert_eq!(scrub_free_text(&out), out.clone());
    }
}
