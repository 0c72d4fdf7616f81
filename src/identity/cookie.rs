//! Identity cookies: random ids and signed, compact touch cookies.
//!
//! `tg_did` and `tg_sid` hold 128 random bits, base64url (22 characters).
//! `tg_ft` and `tg_lt` hold a touch: `v2.<payload>.<mac>`, where the payload
//! is length-prefixed fields in base64url and the MAC is a keyed blake3
//! over the cookie name, the version and the payload (so a first-touch
//! cookie cannot be replayed as a last-touch one). A cookie whose MAC fails
//! is absent. The payload holds the touch's fields, one ad-platform click
//! id (kind and value: `gclid`, `gbraid`, `wbraid` or `fbclid`) and the
//! time of the touch, which is the time of the click. `v1` cookies, whose
//! click slot could hold only an fbclid, are still read.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use time::OffsetDateTime;

use super::hash::Keys;
use crate::event::{Touch, TouchAt};

pub const DEVICE: &str = "tg_did";
pub const SESSION: &str = "tg_sid";
pub const FIRST_TOUCH: &str = "tg_ft";
pub const LAST_TOUCH: &str = "tg_lt";

/// Longest field kept in a touch cookie, in bytes: seven fields at this
/// bound plus a click id keep the whole cookie under 1 KiB. Touch values
/// longer than this (normalization caps them at 100 characters) are cut at
/// a character boundary in the cookie only.
const FIELD_MAX: usize = 80;
/// Longest click id kept. A click id must reach its platform byte for byte,
/// so a longer one is not kept at all rather than cut.
pub const CLICK_ID_MAX: usize = 100;
const MAC_LEN: usize = 16;

/// A fresh random id: 128 bits, base64url.
pub fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    B64.encode(bytes)
}

/// Whether a cookie value is an id touchgate could have minted.
pub fn is_valid_id(v: &str) -> bool {
    v.len() == 22
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A touch as a cookie holds it: the touch, when it happened, and the raw
/// ad-platform click id (only for the ad-platform sinks; never in an event,
/// a header or a log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTouch {
    pub touch: TouchAt,
    pub click: Option<ClickId>,
}

impl StoredTouch {
    /// The raw click id of `kind`, if this touch holds one.
    pub fn click_of(&self, kind: ClickKind) -> Option<&str> {
        self.click
            .as_ref()
            .filter(|c| c.kind == kind)
            .map(|c| c.value.as_str())
    }
}

/// The click ids an ad platform takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickKind {
    Fbclid,
    Gclid,
    Gbraid,
    Wbraid,
}

impl ClickKind {
    pub const ALL: [ClickKind; 4] = [
        ClickKind::Fbclid,
        ClickKind::Gclid,
        ClickKind::Gbraid,
        ClickKind::Wbraid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClickKind::Fbclid => "fbclid",
            ClickKind::Gclid => "gclid",
            ClickKind::Gbraid => "gbraid",
            ClickKind::Wbraid => "wbraid",
        }
    }

    pub fn is_google(self) -> bool {
        self != ClickKind::Fbclid
    }

    fn tag(self) -> u8 {
        match self {
            ClickKind::Fbclid => 1,
            ClickKind::Gclid => 2,
            ClickKind::Gbraid => 3,
            ClickKind::Wbraid => 4,
        }
    }

    fn from_tag(tag: u8) -> Option<ClickKind> {
        ClickKind::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

/// A raw click id value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickId {
    pub kind: ClickKind,
    pub value: String,
}

impl ClickId {
    /// A click id as the platform wants it back: 1 to [`CLICK_ID_MAX`]
    /// printable ASCII bytes, else nothing (never altered).
    pub fn new(kind: ClickKind, value: &str) -> Option<ClickId> {
        let ok = !value.is_empty()
            && value.len() <= CLICK_ID_MAX
            && value.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| ClickId {
            kind,
            value: value.to_string(),
        })
    }
}

/// Result of reading a signed cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified<T> {
    /// Signed with the current secret.
    Current(T),
    /// Signed with the previous secret: valid, and to be re-signed.
    Previous(T),
    Invalid,
}

pub fn encode_touch(keys: &Keys, name: &str, stored: &StoredTouch) -> String {
    let t = &stored.touch.touch;
    let mut payload = Vec::with_capacity(256);
    for field in [
        &t.source,
        &t.medium,
        &t.campaign,
        &t.term,
        &t.content,
        &t.campaign_id,
        &t.click_id_type,
    ] {
        push_field(&mut payload, field.as_deref(), FIELD_MAX);
    }
    // A value that does not fit is not kept (see `ClickId::new`).
    match stored
        .click
        .as_ref()
        .filter(|c| c.value.len() <= CLICK_ID_MAX)
    {
        None => payload.push(0xff),
        Some(c) => {
            payload.push(c.kind.tag());
            push_field(&mut payload, Some(&c.value), CLICK_ID_MAX);
        }
    }
    payload.extend_from_slice(&stored.touch.at.unix_timestamp().to_le_bytes());
    let mac = mac(keys, name, Version::V2, &payload);
    format!("v2.{}.{}", B64.encode(&payload), B64.encode(mac))
}

/// The payload layouts: `v1`'s click slot is a bare fbclid, `v2`'s a
/// tagged click id of any kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl Version {
    fn tag(self) -> &'static [u8] {
        match self {
            Version::V1 => b"\0v1\0",
            Version::V2 => b"\0v2\0",
        }
    }
}

/// `channel` recomputes the channel from source, medium and campaign, so a
/// cookie never carries a channel of its own and a change of the grouping
/// rules applies to old cookies too.
pub fn decode_touch(
    keys: &Keys,
    previous: Option<&Keys>,
    name: &str,
    value: &str,
    channel: impl Fn(Option<&str>, Option<&str>, Option<&str>) -> &'static str,
) -> Verified<StoredTouch> {
    let (version, rest) = if let Some(rest) = value.strip_prefix("v2.") {
        (Version::V2, rest)
    } else if let Some(rest) = value.strip_prefix("v1.") {
        (Version::V1, rest)
    } else {
        return Verified::Invalid;
    };
    let Some((payload_b64, mac_b64)) = rest.split_once('.') else {
        return Verified::Invalid;
    };
    // Bound the work on hostile input before decoding.
    if payload_b64.len() > 1400 || mac_b64.len() > 32 {
        return Verified::Invalid;
    }
    let (Ok(payload), Ok(given)) = (B64.decode(payload_b64), B64.decode(mac_b64)) else {
        return Verified::Invalid;
    };
    let verified_with_current = verify(keys, name, version, &payload, &given);
    if !verified_with_current
        && !previous.is_some_and(|p| verify(p, name, version, &payload, &given))
    {
        return Verified::Invalid;
    }
    let Some(stored) = parse_payload(version, &payload, channel) else {
        return Verified::Invalid;
    };
    if verified_with_current {
        Verified::Current(stored)
    } else {
        Verified::Previous(stored)
    }
}

fn mac(keys: &Keys, name: &str, version: Version, payload: &[u8]) -> [u8; MAC_LEN] {
    let mut data = Vec::with_capacity(name.len() + 4 + payload.len());
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(version.tag());
    data.extend_from_slice(payload);
    let full = keys.mac(&data);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

fn verify(keys: &Keys, name: &str, version: Version, payload: &[u8], given: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.len() == MAC_LEN && bool::from(mac(keys, name, version, payload).ct_eq(given))
}

fn push_field(out: &mut Vec<u8>, v: Option<&str>, max: usize) {
    match v {
        None => out.push(0xff),
        Some(s) => {
            let s = truncate_utf8(s, max);
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn parse_payload(
    version: Version,
    mut p: &[u8],
    channel: impl Fn(Option<&str>, Option<&str>, Option<&str>) -> &'static str,
) -> Option<StoredTouch> {
    let mut fields: [Option<String>; 7] = Default::default();
    for f in fields.iter_mut() {
        *f = take_field(&mut p)?;
    }
    let click = match version {
        Version::V1 => take_field(&mut p)?.map(|value| ClickId {
            kind: ClickKind::Fbclid,
            value,
        }),
        Version::V2 => {
            let (&tag, rest) = p.split_first()?;
            p = rest;
            if tag == 0xff {
                None
            } else {
                let kind = ClickKind::from_tag(tag)?;
                Some(ClickId {
                    kind,
                    value: take_field(&mut p)??,
                })
            }
        }
    };
    let at: [u8; 8] = p.try_into().ok()?;
    let at = OffsetDateTime::from_unix_timestamp(i64::from_le_bytes(at)).ok()?;
    let [
        source,
        medium,
        campaign,
        term,
        content,
        campaign_id,
        click_id_type,
    ] = fields;
    let ch = channel(source.as_deref(), medium.as_deref(), campaign.as_deref());
    let valid = source.is_some() && medium.is_some() && ch != "Unassigned";
    Some(StoredTouch {
        touch: TouchAt {
            touch: Touch {
                source,
                medium,
                campaign,
                term,
                content,
                campaign_id,
                click_id_type,
                channel: ch.to_string(),
                // A cookie keeps no GA4 reading of its own referrer.
                channel_ga4: None,
                valid,
            },
            at,
        },
        click,
    })
}

/// One length-prefixed field (`0xff`: absent); `None` when the payload
/// is cut short or the field is not printable text.
fn take_field(p: &mut &[u8]) -> Option<Option<String>> {
    let (&len, rest) = p.split_first()?;
    *p = rest;
    if len == 0xff {
        return Some(None);
    }
    let len = len as usize;
    if p.len() < len {
        return None;
    }
    let s = std::str::from_utf8(&p[..len]).ok()?;
    // The payload is signed, but a value that reaches headers must be
    // printable whatever a past version wrote.
    if s.chars().any(char::is_control) {
        return None;
    }
    *p = &p[len..];
    Some(Some(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(_s: Option<&str>, m: Option<&str>, _c: Option<&str>) -> &'static str {
        if m == Some("cpc") {
            "Paid Search"
        } else {
            "Unassigned"
        }
    }

    fn sample() -> StoredTouch {
        StoredTouch {
            touch: TouchAt {
                touch: Touch {
                    source: Some("google".into()),
                    medium: Some("cpc".into()),
                    campaign: Some("spring".into()),
                    click_id_type: Some("gclid".into()),
                    channel: "Paid Search".into(),
                    valid: true,
                    ..Touch::default()
                },
                at: OffsetDateTime::from_unix_timestamp(1_764_316_800).unwrap(),
            },
            click: None,
        }
    }

    #[test]
    fn round_trip_and_tamper() {
        let k = Keys::derive(b"0123456789abcdef");
        let v = encode_touch(&k, FIRST_TOUCH, &sample());
        assert!(v.len() < 1024);
        assert_eq!(
            decode_touch(&k, None, FIRST_TOUCH, &v, ch),
            Verified::Current(sample())
        );
        // Another cookie name, another secret, a flipped character: absent.
        assert_eq!(
            decode_touch(&k, None, LAST_TOUCH, &v, ch),
            Verified::Invalid
        );
        let other = Keys::derive(b"fedcba9876543210");
        assert_eq!(
            decode_touch(&other, None, FIRST_TOUCH, &v, ch),
            Verified::Invalid
        );
        let mut bytes = v.clone().into_bytes();
        bytes[5] = if bytes[5] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(
            decode_touch(&k, None, FIRST_TOUCH, &tampered, ch),
            Verified::Invalid
        );
    }

    #[test]
    fn previous_secret_still_verifies() {
        let old = Keys::derive(b"old-secret-0123456");
        let new = Keys::derive(b"new-secret-0123456");
        let v = encode_touch(&old, LAST_TOUCH, &sample());
        assert_eq!(
            decode_touch(&new, Some(&old), LAST_TOUCH, &v, ch),
            Verified::Previous(sample())
        );
        assert_eq!(
            decode_touch(&new, None, LAST_TOUCH, &v, ch),
            Verified::Invalid
        );
    }

    #[test]
    fn largest_touch_fits_in_a_kilobyte() {
        let long = "é".repeat(300);
        let mut s = sample();
        let t = &mut s.touch.touch;
        for f in [
            &mut t.source,
            &mut t.medium,
            &mut t.campaign,
            &mut t.term,
            &mut t.content,
            &mut t.campaign_id,
            &mut t.click_id_type,
        ] {
            *f = Some(long.clone());
        }
        s.click = ClickId::new(ClickKind::Gclid, &"x".repeat(CLICK_ID_MAX));
        assert!(s.click.is_some());
        let v = encode_touch(&Keys::derive(b"0123456789abcdef"), FIRST_TOUCH, &s);
        assert!(v.len() + FIRST_TOUCH.len() < 1024, "{}", v.len());
    }

    #[test]
    fn click_ids_round_trip_with_the_time_of_the_click() {
        let k = Keys::derive(b"0123456789abcdef");
        for kind in ClickKind::ALL {
            let mut s = sample();
            s.click = ClickId::new(kind, "Cj0KCQiA-abc_123");
            let v = encode_touch(&k, LAST_TOUCH, &s);
            let Verified::Current(back) = decode_touch(&k, None, LAST_TOUCH, &v, ch) else {
                panic!("{kind:?}");
            };
            assert_eq!(back.click_of(kind), Some("Cj0KCQiA-abc_123"));
            assert_eq!(back.touch.at, s.touch.at);
            assert_eq!(back, s);
        }
        // Too long or not printable ASCII: not kept rather than altered.
        assert_eq!(
            ClickId::new(ClickKind::Gclid, &"x".repeat(CLICK_ID_MAX + 1)),
            None
        );
        assert_eq!(ClickId::new(ClickKind::Gclid, "a b"), None);
        assert_eq!(ClickId::new(ClickKind::Gclid, ""), None);
    }

    #[test]
    fn v1_cookies_are_still_read() {
        let k = Keys::derive(b"0123456789abcdef");
        let mut payload = Vec::new();
        for f in [
            Some("google"),
            Some("cpc"),
            None,
            None,
            None,
            None,
            Some("fbclid"),
        ] {
            push_field(&mut payload, f, FIELD_MAX);
        }
        push_field(&mut payload, Some("IwAR-1"), CLICK_ID_MAX);
        payload.extend_from_slice(&1_764_316_800i64.to_le_bytes());
        let mac = mac(&k, LAST_TOUCH, Version::V1, &payload);
        let v = format!("v1.{}.{}", B64.encode(&payload), B64.encode(mac));
        let Verified::Current(back) = decode_touch(&k, None, LAST_TOUCH, &v, ch) else {
            panic!("v1 not read");
        };
        assert_eq!(back.click_of(ClickKind::Fbclid), Some("IwAR-1"));
        assert_eq!(back.touch.touch.source.as_deref(), Some("google"));
        // The same payload under the v2 prefix does not verify.
        let as_v2 = format!("v2.{}", &v[3..]);
        assert_eq!(
            decode_touch(&k, None, LAST_TOUCH, &as_v2, ch),
            Verified::Invalid
        );
    }

    #[test]
    fn ids() {
        let id = new_id();
        assert!(is_valid_id(&id));
        assert_ne!(id, new_id());
        assert!(!is_valid_id("short"));
        assert!(!is_valid_id("aaaaaaaaaaaaaaaaaaaa;="));
    }
}
