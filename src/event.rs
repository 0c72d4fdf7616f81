//! The event: one JSON object per line in the file sink, the same object in
//! every other sink. Field names are fixed by CONTRACT.md ("Events").

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Bumped only on a breaking change of the JSON shape.
pub const SCHEMA: &str = "touchgate/1";

/// The event name of a form attempt: one per post to a configured form,
/// confirmed or not (`properties.form_event`, `properties.confirmed`,
/// `properties.reason`). It feeds the attempt/confirmed ratio of
/// `touchgate report`; the ad-platform sinks never receive it.
pub const FORM_ATTEMPT: &str = "form_attempt";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Proxy,
    Ingest,
    Beacon,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Proxy => "proxy",
            Origin::Ingest => "ingest",
            Origin::Beacon => "beacon",
        }
    }
}

/// A normalized touch: where this visit came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touch {
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub term: Option<String>,
    pub content: Option<String>,
    /// `utm_id`, an extension of the contract's touch fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// Which click id was present (`gclid`, `fbclid`, …), never its value.
    pub click_id_type: Option<String>,
    /// Channel group name under the configured rules (`touch.channels`).
    pub channel: String,
    /// GA4's default channel group, when the extended rules give another
    /// `channel`; absent when the two agree or GA4's rules are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_ga4: Option<String>,
    /// Source and medium present and the channel is not "Unassigned".
    pub valid: bool,
}

impl Touch {
    pub fn direct() -> Touch {
        Touch {
            source: Some("(direct)".into()),
            medium: Some("(none)".into()),
            channel: "Direct".into(),
            valid: true,
            ..Touch::default()
        }
    }

    pub fn is_direct(&self) -> bool {
        self.channel == "Direct"
    }
}

/// A touch remembered in a cookie, with the time it happened: written
/// like every timestamp of an event (RFC 3339, UTC, milliseconds), read
/// in any RFC 3339 form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TouchAt {
    #[serde(flatten)]
    pub touch: Touch,
    #[serde(with = "rfc3339_millis")]
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Canonical URL: lowercase scheme and host, no default port, no
    /// fragment, only campaign parameters, sorted.
    pub url: String,
    pub path: String,
    pub referrer_host: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAgent {
    pub family: String,
    pub bot: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Client {
    /// IPv4 /24 or IPv6 /48 network, or null (`privacy.client_ip`).
    pub ip_prefix: Option<String>,
    /// The decoded client context object (`cid`, `exp`, `ux`), or null.
    pub context: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<UserAgent>,
}

/// What the visitor consented to when the event was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub analytics: bool,
    pub ads: bool,
}

impl Default for Consent {
    fn default() -> Self {
        Consent {
            analytics: true,
            ads: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub schema: String,
    pub event_id: String,
    pub event_name: String,
    pub origin: Origin,
    #[serde(with = "rfc3339_millis")]
    pub occurred_at: OffsetDateTime,
    #[serde(with = "rfc3339_millis")]
    pub received_at: OffsetDateTime,
    pub device_id: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub lead_id: Option<String>,
    pub touchpoint_id: Option<String>,
    pub natural_key: Option<String>,
    pub page: Option<Page>,
    pub touch: Option<Touch>,
    pub first_touch: Option<TouchAt>,
    pub last_touch: Option<TouchAt>,
    pub client: Client,
    pub status: Option<u16>,
    /// `"oversize"` when a form body was too large to capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<String>,
    #[serde(default)]
    pub consent: Consent,
    /// Allowlisted extra fields (forms) or `properties` (ingest).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub properties: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    /// An event with the fixed fields set and everything else empty.
    pub fn new(
        event_id: String,
        event_name: String,
        origin: Origin,
        occurred_at: OffsetDateTime,
        received_at: OffsetDateTime,
    ) -> Event {
        Event {
            schema: SCHEMA.to_string(),
            event_id,
            event_name,
            origin,
            occurred_at,
            received_at,
            device_id: None,
            session_id: None,
            user_id: None,
            lead_id: None,
            touchpoint_id: None,
            natural_key: None,
            page: None,
            touch: None,
            first_touch: None,
            last_touch: None,
            client: Client::default(),
            status: None,
            capture: None,
            consent: Consent::default(),
            properties: serde_json::Map::new(),
        }
    }

    /// A form attempt ([`FORM_ATTEMPT`]), not a conversion.
    pub fn is_attempt(&self) -> bool {
        self.origin == Origin::Proxy && self.event_name == FORM_ATTEMPT
    }

    /// The channel the event is counted under in metrics: this request's
    /// touch, else the last touch, else "Direct".
    pub fn channel(&self) -> &str {
        self.touch
            .as_ref()
            .map(|t| t.channel.as_str())
            .or_else(|| self.last_touch.as_ref().map(|t| t.touch.channel.as_str()))
            .unwrap_or("Direct")
    }
}

/// SHA-256 match keys for the ad-platform conversion APIs, computed at
/// capture time from the raw identifier. They travel beside the event (in
/// memory and in the spool record), never inside it, so only the ad-platform
/// sinks ever see them, and no raw identifier is ever written anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdMatch {
    /// sha256 hex of the trimmed, lowercased e-mail (`em`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub em: Option<String>,
    /// sha256 hex of the phone as E.164 digits without `+` (`ph`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ph: Option<String>,
    /// sha256 hex of the lead or user identifier (`external_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Meta click id cookie value, `fb.1.<ms>.<fbclid>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbc: Option<String>,
    /// The raw user agent, which Meta requires for website events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_user_agent: Option<String>,
    /// Page URL with campaign parameters (Meta `event_source_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_source_url: Option<String>,
    /// Meta's other customer-information keys from the form's `user_data`
    /// (`fn`, `ln`, `ct`, `st`, `zp`, `country`, `db`, `ge`), each the
    /// SHA-256 hex of the value normalized as Meta documents.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_data: BTreeMap<String, String>,
    /// The raw client IP, only when a Meta sink opts in (`send_client_ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// The Google Ads click this conversion follows, within 90 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_click: Option<AdClick>,
    /// Enhanced-conversion identifiers, normalized as Google documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google: Option<GoogleMatch>,
    /// In `consent.mode = "tcf"`: the purposes and vendor consents that
    /// ad-platform sinks check beyond ads consent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcf: Option<TcfAds>,
}

/// A click id value with the time of the click.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdClick {
    /// `gclid`, `gbraid`, `wbraid` or `fbclid`.
    pub kind: String,
    pub value: String,
    #[serde(with = "rfc3339_millis")]
    pub at: OffsetDateTime,
}

/// Google's `userIdentifiers`, hashed under Google's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoogleMatch {
    /// SHA-256 hex of the e-mail (gmail.com/googlemail.com without dots
    /// before `@`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// SHA-256 hex of the phone in E.164 with its `+`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<GoogleAddress>,
}

/// Google's `addressInfo`: hashed names, plain country and postal code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoogleAddress {
    pub hashed_first_name: String,
    pub hashed_last_name: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country_code: String,
    pub postal_code: String,
}

/// What a TC string grants the ad platforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcfAds {
    /// Purposes 1 and 7 (Consent Mode `ad_user_data`).
    pub ad_user_data: bool,
    /// Purposes 3 and 4 (Consent Mode `ad_personalization`).
    pub ad_personalization: bool,
    /// Google (GVL vendor 755) has consent.
    pub google: bool,
}

impl AdMatch {
    pub fn is_empty(&self) -> bool {
        *self == AdMatch::default()
    }
}

/// What travels from the request path through the queue and the spool to
/// the sinks: the public event plus the private ad-platform match keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ad_match: Option<AdMatch>,
}

impl Envelope {
    pub fn new(event: Event) -> Envelope {
        Envelope {
            event,
            ad_match: None,
        }
    }
}

/// RFC 3339, UTC, always with milliseconds: `2026-11-29T10:00:00.123Z`.
pub mod rfc3339_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub fn format(t: OffsetDateTime) -> String {
        match Stamp::new(t) {
            Some(stamp) => stamp.as_str().to_owned(),
            None => format_any(t),
        }
    }

    /// Any year `time` represents, negative ones included.
    fn format_any(t: OffsetDateTime) -> String {
        let t = t.to_offset(time::UtcOffset::UTC);
        let (y, mo, d) = (t.year(), t.month() as u8, t.day());
        let (h, mi, s, ms) = (t.hour(), t.minute(), t.second(), t.millisecond());
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }

    /// A timestamp of a year in 0..=9999 formatted on the stack, so that
    /// serializing an event does not allocate for its two timestamps.
    struct Stamp([u8; 24]);

    impl Stamp {
        fn new(t: OffsetDateTime) -> Option<Stamp> {
            let t = t.to_offset(time::UtcOffset::UTC);
            let y = u16::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
            let mut b = *b"0000-00-00T00:00:00.000Z";
            let digits = |out: &mut [u8], mut n: u16| {
                for slot in out.iter_mut().rev() {
                    *slot = b'0' + (n % 10) as u8;
                    n /= 10;
                }
            };
            digits(&mut b[0..4], y);
            digits(&mut b[5..7], t.month() as u16);
            digits(&mut b[8..10], t.day().into());
            digits(&mut b[11..13], t.hour().into());
            digits(&mut b[14..16], t.minute().into());
            digits(&mut b[17..19], t.second().into());
            digits(&mut b[20..23], t.millisecond());
            Some(Stamp(b))
        }

        fn as_str(&self) -> &str {
            std::str::from_utf8(&self.0).expect("only ASCII digits and separators")
        }
    }

    pub fn parse(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
        OffsetDateTime::parse(s, &Rfc3339).map(|t| t.to_offset(time::UtcOffset::UTC))
    }

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        match Stamp::new(*t) {
            Some(stamp) => s.serialize_str(stamp.as_str()),
            None => s.serialize_str(&format_any(*t)),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_milliseconds_and_round_trip() {
        let t = time::macros::datetime!(2026-11-29 10:00:00.123 UTC);
        let s = rfc3339_millis::format(t);
        assert_eq!(s, "2026-11-29T10:00:00.123Z");
        assert_eq!(rfc3339_millis::parse(&s).unwrap(), t);
    }

    #[test]
    fn timestamps_format_like_the_format_macro() {
        use time::macros::datetime;
        let reference = |t: OffsetDateTime| {
            let t = t.to_offset(time::UtcOffset::UTC);
            let (y, mo, d) = (t.year(), t.month() as u8, t.day());
            let (h, mi, s, ms) = (t.hour(), t.minute(), t.second(), t.millisecond());
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
        };
        for t in [
            datetime!(2026-11-29 10:00:00 UTC),
            datetime!(2026-01-02 03:04:05.006 UTC),
            datetime!(1999-12-31 23:59:59.999999 UTC),
            datetime!(0000-01-01 00:00:00 UTC),
            datetime!(0042-07-08 09:10:11.012 UTC),
            datetime!(9999-12-31 23:59:59.999 UTC),
            datetime!(-0001-06-15 12:00:00 UTC),
            datetime!(-9999-01-01 00:00:00 UTC),
            datetime!(2026-11-29 23:30:00.5 -02:00),
            datetime!(2026-03-01 00:30:00.25 +01:00),
        ] {
            assert_eq!(rfc3339_millis::format(t), reference(t), "{t}");
            let json = serde_json::to_string(&Wrap(t)).unwrap();
            assert_eq!(json, format!("\"{}\"", reference(t)), "{t}");
        }

        #[derive(Serialize)]
        struct Wrap(#[serde(with = "rfc3339_millis")] OffsetDateTime);
    }

    #[test]
    fn event_json_has_every_contract_field() {
        let t = time::macros::datetime!(2026-11-29 10:00:00 UTC);
        let e = Event::new("ab".into(), "landing".into(), Origin::Proxy, t, t);
        let v = serde_json::to_value(&e).unwrap();
        for k in [
            "schema",
            "event_id",
            "event_name",
            "origin",
            "occurred_at",
            "received_at",
            "device_id",
            "session_id",
            "user_id",
            "lead_id",
            "touchpoint_id",
            "natural_key",
            "page",
            "touch",
            "first_touch",
            "last_touch",
            "client",
            "status",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["schema"], "touchgate/1");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}

#[cfg(test)]
mod full_event_json {
    use super::*;

    /// Every field set, timestamps with and without milliseconds and in a
    /// non-UTC offset.
    fn full_event() -> Envelope {
        use time::macros::datetime;
        let touch = Touch {
            source: Some("google".into()),
            medium: Some("cpc".into()),
            campaign: Some("spring \"sale\"".into()),
            term: Some("running shoes".into()),
            content: Some("ad_b".into()),
            campaign_id: Some("123".into()),
            click_id_type: Some("gclid".into()),
            channel: "Paid Search".into(),
            channel_ga4: None,
            valid: true,
        };
        let mut e = Event::new(
            "0123456789abcdef0123456789abcdef".into(),
            "signup_submitted".into(),
            Origin::Beacon,
            datetime!(2026-11-29 10:00:00.5 +01:00),
            datetime!(2026-11-29 09:00:01.123456 UTC),
        );
        e.device_id = Some("d".into());
        e.session_id = Some("s".into());
        e.user_id = Some("u".into());
        e.lead_id = Some("l".into());
        e.touchpoint_id = Some("t".into());
        e.natural_key = Some("n|2026-11-29".into());
        e.page = Some(Page {
            url: "https://shop.example/?utm_source=google".into(),
            path: "/".into(),
            referrer_host: Some("google.com".into()),
        });
        e.touch = Some(touch.clone());
        e.first_touch = Some(TouchAt {
            touch: Touch::direct(),
            at: datetime!(2026-11-01 00:00:00 UTC),
        });
        e.last_touch = Some(TouchAt {
            touch,
            at: datetime!(2026-11-29 08:59:59.25 UTC),
        });
        e.client.ip_prefix = Some("203.0.113.0/24".into());
        e.client.context = Some(serde_json::json!({"cid": "c", "ux": {"lcp": 1.5}}));
        e.client.user_agent = Some(UserAgent {
            family: "Chrome".into(),
            bot: false,
        });
        e.status = Some(302);
        e.capture = Some("oversize".into());
        e.consent = Consent {
            analytics: true,
            ads: false,
        };
        e.properties.insert("plan".into(), "pro".into());
        let mut env = Envelope::new(e);
        env.ad_match = Some(AdMatch {
            em: Some("e".into()),
            ..AdMatch::default()
        });
        env
    }

    /// The JSON of [`full_event`]: the output must not change by a byte.
    /// Every timestamp, the touches' `at` included, is RFC 3339 UTC with
    /// milliseconds.
    const GOLDEN: &str = r#"{"event":{"schema":"touchgate/1","event_id":"0123456789abcdef0123456789abcdef","event_name":"signup_submitted","origin":"beacon","occurred_at":"2026-11-29T09:00:00.500Z","received_at":"2026-11-29T09:00:01.123Z","device_id":"d","session_id":"s","user_id":"u","lead_id":"l","touchpoint_id":"t","natural_key":"n|2026-11-29","page":{"url":"https://shop.example/?utm_source=google","path":"/","referrer_host":"google.com"},"touch":{"source":"google","medium":"cpc","campaign":"spring \"sale\"","term":"running shoes","content":"ad_b","campaign_id":"123","click_id_type":"gclid","channel":"Paid Search","valid":true},"first_touch":{"source":"(direct)","medium":"(none)","campaign":null,"term":null,"content":null,"click_id_type":null,"channel":"Direct","valid":true,"at":"2026-11-01T00:00:00.000Z"},"last_touch":{"source":"google","medium":"cpc","campaign":"spring \"sale\"","term":"running shoes","content":"ad_b","campaign_id":"123","click_id_type":"gclid","channel":"Paid Search","valid":true,"at":"2026-11-29T08:59:59.250Z"},"client":{"ip_prefix":"203.0.113.0/24","context":{"cid":"c","ux":{"lcp":1.5}},"user_agent":{"family":"Chrome","bot":false}},"status":302,"capture":"oversize","consent":{"analytics":true,"ads":false},"properties":{"plan":"pro"}},"ad_match":{"em":"e"}}"#;

    #[test]
    fn full_event_json_is_byte_identical() {
        assert_eq!(serde_json::to_string(&full_event()).unwrap(), GOLDEN);
        let back: Envelope = serde_json::from_str(GOLDEN).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), GOLDEN);
    }

    /// Touch times as earlier releases wrote them (whole seconds,
    /// nanoseconds, an offset) still read, and are written in the one
    /// format every timestamp of an event has.
    #[test]
    fn older_touch_time_formats_read_back() {
        for (old, new) in [
            ("2026-11-01T00:00:00Z", "2026-11-01T00:00:00.000Z"),
            ("2026-11-29T08:59:59.25Z", "2026-11-29T08:59:59.250Z"),
            ("2026-11-29T08:59:59.123456789Z", "2026-11-29T08:59:59.123Z"),
            ("2026-11-29T09:59:59.5+01:00", "2026-11-29T08:59:59.500Z"),
        ] {
            let line = GOLDEN.replace("2026-11-01T00:00:00.000Z", old);
            let back: Envelope = serde_json::from_str(&line).unwrap();
            let first = back.event.first_touch.as_ref().unwrap();
            assert_eq!(rfc3339_millis::format(first.at), new);
            let json = serde_json::to_string(&back).unwrap();
            assert!(json.contains(&format!(r#""at":"{new}""#)), "{json}");
        }
    }
}
