//! The event: one JSON object per line in the file sink, the same object in
//! every other sink. Field names are fixed by CONTRACT.md ("Events").

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Bumped only on a breaking change of the JSON shape.
pub const SCHEMA: &str = "touchgate/1";

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
    /// GA4 default channel group name.
    pub channel: String,
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

/// A touch remembered in a cookie, with the time it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TouchAt {
    #[serde(flatten)]
    pub touch: Touch,
    #[serde(with = "time::serde::rfc3339")]
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
        let t = t.to_offset(time::UtcOffset::UTC);
        let (y, mo, d) = (t.year(), t.month() as u8, t.day());
        let (h, mi, s, ms) = (t.hour(), t.minute(), t.second(), t.millisecond());
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }

    pub fn parse(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
        OffsetDateTime::parse(s, &Rfc3339).map(|t| t.to_offset(time::UtcOffset::UTC))
    }

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
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
