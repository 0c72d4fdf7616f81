//! The PII guard over [`Event`], the last line of defence: before an event
//! is queued, [`guard`] scans every string in it and replaces each e-mail,
//! phone, IP or card shape with a marker (`[email]`, `[phone]`, `[ip]`,
//! `[card]`), keeping the rest of the string (`hi bob@example.com` →
//! `hi [email]`). The shapes are found by the scanner in `scan.rs`; the
//! field names that are never captured, whatever the config says, are in
//! `fields.rs`.
//!
//! The guard destructures `Event` and every type inside it field by field,
//! with no `..`: a field added to any of them does not compile until the
//! guard says whether it is scanned, checked, or holds no text.

mod fields;
mod scan;

pub use fields::is_never_captured;
pub use scan::{looks_like_card, scrub_free_text};

use std::borrow::Cow;

use serde_json::Value;

use crate::event::{Client, Consent, Event, Page, Touch, TouchAt, UserAgent};

/// Scrubs one string in place; true when something was replaced.
fn scrub_string(s: &mut String) -> bool {
    match scrub_free_text(s) {
        Cow::Borrowed(_) => false,
        Cow::Owned(o) => {
            *s = o;
            true
        }
    }
}

/// An integer long enough to be a phone or card number is scanned as text
/// (a number field holding a phone is still a phone) and, if it matches,
/// becomes the marker string.
fn scrub_number(v: &mut Value) -> bool {
    let Value::Number(n) = v else { return false };
    if !(n.is_u64() || n.is_i64()) {
        return false;
    }
    let text = n.to_string();
    if text.len() < 7 {
        return false;
    }
    match scrub_free_text(&text) {
        Cow::Owned(o) => {
            *v = Value::String(o);
            true
        }
        Cow::Borrowed(_) => false,
    }
}

/// Scrubs a JSON value: every string, every object key, and long integers
/// ([`scrub_number`]). Iterative, so no depth of nesting can exhaust the
/// stack.
fn scrub_value(root: &mut Value) -> bool {
    let mut changed = scrub_number(root);
    let mut stack = vec![root];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => changed |= scrub_string(s),
            Value::Array(a) => {
                for c in a.iter_mut() {
                    changed |= scrub_number(c);
                    stack.push(c);
                }
            }
            Value::Object(m) => {
                let bad: Vec<String> = m
                    .keys()
                    .filter(|k| scan::contains_shape(k))
                    .cloned()
                    .collect();
                for k in bad {
                    if let Some(val) = m.remove(&k) {
                        m.insert(scrub_free_text(&k).into_owned(), val);
                        changed = true;
                    }
                }
                for c in m.values_mut() {
                    changed |= scrub_number(c);
                    stack.push(c);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    changed
}

fn is_hash_id(s: &str) -> bool {
    // No early exit, so the check vectorizes.
    s.len() == 32
        && s.bytes()
            .fold(true, |ok, b| ok & matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// IPv4 /24-or-shorter or IPv6 /48-or-shorter network, with no host bits.
fn is_truncated_prefix(s: &str) -> bool {
    match s.parse::<ipnet::IpNet>() {
        Ok(net) => {
            let max = match net {
                ipnet::IpNet::V4(_) => 24,
                ipnet::IpNet::V6(_) => 48,
            };
            net.prefix_len() <= max && net.addr() == net.network()
        }
        Err(_) => false,
    }
}

/// The field paths the guard reports, as metric labels.
struct Findings(Vec<&'static str>);

impl Findings {
    fn hit(&mut self, field: &'static str) {
        if !self.0.contains(&field) {
            self.0.push(field);
        }
    }

    fn string(&mut self, field: &'static str, s: &mut String) {
        if scrub_string(s) {
            self.hit(field);
        }
    }

    fn opt(&mut self, field: &'static str, s: &mut Option<String>) {
        if let Some(s) = s {
            self.string(field, s);
        }
    }

    fn hash_id(&mut self, field: &'static str, s: &mut Option<String>) {
        if let Some(s) = s
            && !is_hash_id(s)
        {
            self.string(field, s);
        }
    }

    /// Scans a touch; returns which of its fields (bit `i` for
    /// `labels[i]`) were redacted.
    fn touch(&mut self, labels: &[&'static str; 8], t: &mut Touch) -> u8 {
        let Touch {
            source,
            medium,
            campaign,
            term,
            content,
            campaign_id,
            click_id_type,
            channel,
            // One of the fixed GA4 channel names, set by touchgate.
            channel_ga4: _,
            // A flag: no text.
            valid: _,
        } = t;
        let fields = [
            source,
            medium,
            campaign,
            term,
            content,
            campaign_id,
            click_id_type,
        ];
        let mut hits = 0u8;
        for (i, field) in fields.into_iter().enumerate() {
            if let Some(s) = field
                && scrub_string(s)
            {
                self.hit(labels[i]);
                hits |= 1 << i;
            }
        }
        if scrub_string(channel) {
            self.hit(labels[7]);
            hits |= 1 << 7;
        }
        hits
    }

    /// A touch equal to one already scanned (`scanned` is that touch after
    /// its scan, `hits` what the scan redacted): the same redactions,
    /// reported under this touch's own labels, without a second scan.
    fn touch_copy(&mut self, labels: &[&'static str; 8], scanned: &Touch, hits: u8, t: &mut Touch) {
        if hits == 0 {
            return;
        }
        t.clone_from(scanned);
        for (i, label) in labels.iter().enumerate() {
            if hits & (1 << i) != 0 {
                self.hit(label);
            }
        }
    }
}

/// The three touches of an event. For a new visitor's landing, `first_touch`
/// and `last_touch` are copies of `touch`, and a returning visitor's first
/// and last touch are often the same: a touch equal to one scanned before it
/// (compared before either is changed) takes that scan's result rather than
/// being scanned again. The scanner depends on nothing but the text, so the
/// outcome, labels included, is what three scans would give.
fn touches(
    r: &mut Findings,
    touch: &mut Option<Touch>,
    first_touch: &mut Option<TouchAt>,
    last_touch: &mut Option<TouchAt>,
) {
    // `at` is a timestamp: no text.
    let first = first_touch.as_mut().map(|TouchAt { touch, at: _ }| touch);
    let last = last_touch.as_mut().map(|TouchAt { touch, at: _ }| touch);
    let same = |a: &Option<&mut Touch>, b: &Option<&mut Touch>| match (a, b) {
        (Some(a), Some(b)) => **a == **b,
        _ => false,
    };
    let touch = touch.as_mut();
    let first_is_touch = same(&first, &touch);
    let last_is_touch = same(&last, &touch);
    let last_is_first = same(&last, &first);

    let touch_hits = touch.map(|t| (r.touch(&TOUCH, t), &*t));
    let first_hits = first.map(|t| match touch_hits.filter(|_| first_is_touch) {
        Some((hits, scanned)) => {
            r.touch_copy(&FIRST_TOUCH, scanned, hits, t);
            (hits, &*t)
        }
        None => (r.touch(&FIRST_TOUCH, t), &*t),
    });
    if let Some(t) = last {
        let earlier = match (touch_hits, first_hits) {
            (Some(h), _) if last_is_touch => Some(h),
            (_, Some(h)) if last_is_first => Some(h),
            _ => None,
        };
        match earlier {
            Some((hits, scanned)) => r.touch_copy(&LAST_TOUCH, scanned, hits, t),
            None => {
                r.touch(&LAST_TOUCH, t);
            }
        }
    }
}

const TOUCH: [&str; 8] = [
    "touch.source",
    "touch.medium",
    "touch.campaign",
    "touch.term",
    "touch.content",
    "touch.campaign_id",
    "touch.click_id_type",
    "touch.channel",
];
const FIRST_TOUCH: [&str; 8] = [
    "first_touch.source",
    "first_touch.medium",
    "first_touch.campaign",
    "first_touch.term",
    "first_touch.content",
    "first_touch.campaign_id",
    "first_touch.click_id_type",
    "first_touch.channel",
];
const LAST_TOUCH: [&str; 8] = [
    "last_touch.source",
    "last_touch.medium",
    "last_touch.campaign",
    "last_touch.term",
    "last_touch.content",
    "last_touch.campaign_id",
    "last_touch.click_id_type",
    "last_touch.channel",
];

/// The PII guard: redacts e-mail, phone, IP and card shapes in every string
/// of the event and returns the field paths it changed (each once), for
/// `touchgate_pii_redacted_total{field}`.
///
/// Skipped: the id fields (`event_id`, `device_id`, `session_id`,
/// `user_id`, `lead_id`, `touchpoint_id`) when they are 32 lowercase hex,
/// the form every keyed hash has; any other value in them is scanned. The
/// `client.ip_prefix` is not scanned (it is an IP by design) but checked:
/// anything other than an IPv4 /24 or IPv6 /48 network (or shorter) is
/// removed and reported. `properties` and `client.context` are reported
/// as one label each, whatever their keys, to keep metric labels bounded.
pub fn guard(event: &mut Event) -> Vec<&'static str> {
    let Event {
        schema,
        event_id,
        event_name,
        // An enum, timestamps, a status code and consent flags: no text.
        origin: _,
        occurred_at: _,
        received_at: _,
        device_id,
        session_id,
        user_id,
        lead_id,
        touchpoint_id,
        natural_key,
        page,
        touch,
        first_touch,
        last_touch,
        client:
            Client {
                ip_prefix,
                context,
                user_agent,
            },
        status: _,
        capture,
        consent: Consent {
            analytics: _,
            ads: _,
        },
        properties,
    } = event;
    let mut r = Findings(Vec::new());
    r.string("schema", schema);
    r.string("event_name", event_name);
    if !is_hash_id(event_id) {
        r.string("event_id", event_id);
    }
    r.hash_id("device_id", device_id);
    r.hash_id("session_id", session_id);
    r.hash_id("user_id", user_id);
    r.hash_id("lead_id", lead_id);
    r.hash_id("touchpoint_id", touchpoint_id);
    r.opt("natural_key", natural_key);
    if let Some(Page {
        url,
        path,
        referrer_host,
    }) = page
    {
        r.string("page.url", url);
        r.string("page.path", path);
        r.opt("page.referrer_host", referrer_host);
    }
    touches(&mut r, touch, first_touch, last_touch);
    if ip_prefix
        .as_deref()
        .is_some_and(|p| !is_truncated_prefix(p))
    {
        *ip_prefix = None;
        r.hit("client.ip_prefix");
    }
    if let Some(ctx) = context
        && scrub_value(ctx)
    {
        r.hit("client.context");
    }
    // `bot` is a flag: no text.
    if let Some(UserAgent { family, bot: _ }) = user_agent {
        r.string("client.user_agent", family);
    }
    r.opt("capture", capture);
    let mut props = Value::Object(std::mem::take(properties));
    if scrub_value(&mut props) {
        r.hit("properties");
    }
    if let Value::Object(m) = props {
        *properties = m;
    }
    r.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_with(touch: Option<Touch>, first: Option<Touch>, last: Option<Touch>) -> Event {
        let t = time::macros::datetime!(2026-11-29 10:00:00 UTC);
        let mut e = Event::new(
            "9f86d081884c7d659a2feaa0c55ad015".into(),
            "landing".into(),
            crate::event::Origin::Proxy,
            t,
            t,
        );
        let at = |touch| crate::event::TouchAt { touch, at: t };
        e.touch = touch;
        e.first_touch = first.map(at);
        e.last_touch = last.map(at);
        e
    }

    /// The guard before equal touches were scanned once: each touch on
    /// its own.
    fn scan_each_touch(e: &mut Event) -> Vec<&'static str> {
        let mut r = Findings(Vec::new());
        if let Some(t) = &mut e.touch {
            r.touch(&TOUCH, t);
        }
        if let Some(t) = &mut e.first_touch {
            r.touch(&FIRST_TOUCH, &mut t.touch);
        }
        if let Some(t) = &mut e.last_touch {
            r.touch(&LAST_TOUCH, &mut t.touch);
        }
        r.0
    }

    #[test]
    fn equal_touches_are_redacted_alike_under_their_own_labels() {
        let clean = Touch {
            source: Some("google".into()),
            medium: Some("cpc".into()),
            campaign: Some("spring_sale_2026".into()),
            channel: "Paid Search".into(),
            valid: true,
            ..Touch::default()
        };
        let dirty = Touch {
            content: Some("hi bob@example.com".into()),
            term: Some("call 415 555 0123".into()),
            ..clean.clone()
        };
        let other = Touch {
            campaign: Some("promo 203.0.113.7".into()),
            ..clean.clone()
        };
        let opts = [None, Some(&clean), Some(&dirty), Some(&other)];
        for touch in opts {
            for first in opts {
                for last in opts {
                    let mut e = event_with(touch.cloned(), first.cloned(), last.cloned());
                    let mut expected = e.clone();
                    let expected_labels = scan_each_touch(&mut expected);
                    let mut r = Findings(Vec::new());
                    touches(&mut r, &mut e.touch, &mut e.first_touch, &mut e.last_touch);
                    assert_eq!(e, expected, "{touch:?} {first:?} {last:?}");
                    assert_eq!(r.0, expected_labels, "{touch:?} {first:?} {last:?}");
                }
            }
        }
        let mut e = event_with(Some(dirty.clone()), Some(dirty.clone()), Some(dirty));
        let labels = guard(&mut e);
        for t in [
            e.touch.as_ref().unwrap(),
            &e.first_touch.as_ref().unwrap().touch,
            &e.last_touch.as_ref().unwrap().touch,
        ] {
            assert_eq!(t.content.as_deref(), Some("hi [email]"));
            assert_eq!(t.term.as_deref(), Some("call [phone]"));
        }
        assert_eq!(
            labels,
            [
                "touch.term",
                "touch.content",
                "first_touch.term",
                "first_touch.content",
                "last_touch.term",
                "last_touch.content",
            ]
        );
    }

    #[test]
    fn a_last_touch_unlike_the_touch_is_still_scanned() {
        let clean = Touch {
            source: Some("google".into()),
            medium: Some("cpc".into()),
            channel: "Paid Search".into(),
            valid: true,
            ..Touch::default()
        };
        let dirty = Touch {
            content: Some("ad for bob@example.com".into()),
            ..clean.clone()
        };
        let mut e = event_with(Some(clean.clone()), Some(clean.clone()), Some(dirty));
        let labels = guard(&mut e);
        assert_eq!(labels, ["last_touch.content"]);
        assert_eq!(e.touch.as_ref(), Some(&clean));
        assert_eq!(e.first_touch.as_ref().map(|t| &t.touch), Some(&clean));
        assert_eq!(
            e.last_touch.unwrap().touch.content.as_deref(),
            Some("ad for [email]")
        );
    }
}

#[cfg(test)]
mod every_field {
    use super::*;
    use crate::event::Origin;

    /// An event with `pii` planted in every string it can hold, nested ones
    /// and JSON keys included. Built field by field with no `..`, so that a
    /// new field does not compile until it is planted here too.
    fn planted(pii: &str) -> Event {
        let at = time::macros::datetime!(2026-11-29 10:00:00 UTC);
        let text = |field: &str| format!("{field} holds {pii}");
        let touch = |of: &str| Touch {
            source: Some(text(&format!("{of}.source"))),
            medium: Some(text(&format!("{of}.medium"))),
            campaign: Some(text(&format!("{of}.campaign"))),
            term: Some(text(&format!("{of}.term"))),
            content: Some(text(&format!("{of}.content"))),
            campaign_id: Some(text(&format!("{of}.campaign_id"))),
            click_id_type: Some(text(&format!("{of}.click_id_type"))),
            channel: text(&format!("{of}.channel")),
            channel_ga4: None,
            valid: true,
        };
        let object = |value: serde_json::Value| match value {
            Value::Object(m) => m,
            _ => unreachable!("a JSON object literal"),
        };
        Event {
            schema: text("schema"),
            event_id: text("event_id"),
            event_name: text("event_name"),
            origin: Origin::Ingest,
            occurred_at: at,
            received_at: at,
            device_id: Some(text("device_id")),
            session_id: Some(text("session_id")),
            user_id: Some(text("user_id")),
            lead_id: Some(text("lead_id")),
            touchpoint_id: Some(text("touchpoint_id")),
            natural_key: Some(text("natural_key")),
            page: Some(Page {
                url: text("page.url"),
                path: text("page.path"),
                referrer_host: Some(text("page.referrer_host")),
            }),
            touch: Some(touch("touch")),
            // One touch equal to `touch` (its scan is reused), one not.
            first_touch: Some(TouchAt {
                touch: touch("first_touch"),
                at,
            }),
            last_touch: Some(TouchAt {
                touch: touch("touch"),
                at,
            }),
            client: Client {
                ip_prefix: Some(pii.to_string()),
                context: Some(serde_json::json!({
                    "cid": text("client.context.cid"),
                    pii: "a key",
                    "ux": [text("client.context.ux"), {"deep": text("client.context.deep")}],
                })),
                user_agent: Some(UserAgent {
                    family: text("client.user_agent"),
                    bot: false,
                }),
            },
            status: Some(200),
            capture: Some(text("capture")),
            consent: Consent {
                analytics: true,
                ads: true,
            },
            properties: object(serde_json::json!({
                "plan": text("properties.plan"),
                pii: "a key",
                "list": [text("properties.list"), {"deep": text("properties.deep")}],
            })),
        }
    }

    /// Every string value of `v` and every object key, apart.
    fn texts(v: &Value, values: &mut Vec<String>, keys: &mut Vec<String>) {
        match v {
            Value::String(s) => values.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|c| texts(c, values, keys)),
            Value::Object(m) => {
                for (k, c) in m {
                    keys.push(k.clone());
                    texts(c, values, keys);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    #[test]
    fn pii_in_every_string_field_is_redacted_or_refused() {
        let mut every_label = vec![
            "schema",
            "event_name",
            "event_id",
            "device_id",
            "session_id",
            "user_id",
            "lead_id",
            "touchpoint_id",
            "natural_key",
            "page.url",
            "page.path",
            "page.referrer_host",
        ];
        every_label.extend(TOUCH);
        every_label.extend(FIRST_TOUCH);
        every_label.extend(LAST_TOUCH);
        every_label.extend([
            "client.ip_prefix",
            "client.context",
            "client.user_agent",
            "capture",
            "properties",
        ]);
        for (pii, marker) in [
            ("bob.smith@example.com", "[email]"),
            ("+1 415 555 0123", "[phone]"),
            ("(415) 555-0123", "[phone]"),
            ("203.0.113.7", "[ip]"),
            ("2001:db8::7", "[ip]"),
            ("4111 1111 1111 1111", "[card]"),
            ("5555-5555-5555-4444", "[card]"),
        ] {
            let mut event = planted(pii);
            let (mut planted_values, mut planted_keys) = (Vec::new(), Vec::new());
            texts(
                &serde_json::to_value(&event).unwrap(),
                &mut planted_values,
                &mut planted_keys,
            );

            let labels = guard(&mut event);
            assert_eq!(labels, every_label, "{pii}");
            // Refused: a client IP prefix that is no truncated network.
            assert_eq!(event.client.ip_prefix, None, "{pii}");

            let json = serde_json::to_value(&event).unwrap();
            let (mut values, mut keys) = (Vec::new(), Vec::new());
            texts(&json, &mut values, &mut keys);
            for s in values.iter().chain(&keys) {
                assert!(!s.contains(pii), "{pii} left in {s:?}");
            }
            // Redacted: every other planted string keeps its text and has
            // the marker in place of the shape.
            let planted: Vec<&String> = planted_values
                .iter()
                .filter(|s| s.contains(" holds "))
                .collect();
            let redacted: Vec<&String> = values.iter().filter(|s| s.contains(" holds ")).collect();
            assert_eq!(redacted.len(), planted.len(), "{pii}");
            for (before, after) in planted.iter().zip(&redacted) {
                assert_eq!(**after, before.replace(pii, marker), "{pii}");
            }
            // Keys too, in both free-form objects.
            assert_eq!(keys.len(), planted_keys.len(), "{pii}");
            assert_eq!(json["client"]["context"][marker], "a key", "{pii}");
            assert_eq!(json["properties"][marker], "a key", "{pii}");
        }
    }
}
