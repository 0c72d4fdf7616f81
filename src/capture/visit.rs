//! One request's view of the visitor: identity from the cookies, the touch
//! this request carries, the touch headers for the app, the cookies for
//! the browser, and the landing event.

use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use std::net::IpAddr;
use time::OffsetDateTime;

use super::{Capture, Class, consent};
use crate::config::{CacheableResponses, EventIp};
use crate::event::{
    AdClick, Client, Consent, Envelope, Event, Origin, Page, TcfAds, Touch, TouchAt,
};
use crate::identity::Purpose;
use crate::identity::cookie::{self, ClickId, ClickKind, StoredTouch, Verified};
use crate::touch::{self, Observation};

pub static X_TOUCH_DEVICE: HeaderName = HeaderName::from_static("x-touch-device");
pub static X_TOUCH_SESSION: HeaderName = HeaderName::from_static("x-touch-session");
pub static X_TOUCH_FIRST: HeaderName = HeaderName::from_static("x-touch-first");
pub static X_TOUCH_LAST: HeaderName = HeaderName::from_static("x-touch-last");
pub static X_TOUCH_ID: HeaderName = HeaderName::from_static("x-touch-id");

const YEAR_400_DAYS: i64 = 400 * 24 * 3600;

#[derive(Debug, Clone)]
pub struct Visit {
    pub now: OffsetDateTime,
    pub consent: Consent,
    /// In `consent.mode = "tcf"`: what the TC string grants ad platforms.
    pub tcf: Option<TcfAds>,
    /// Raw ids: only ever in cookies, never in a header or an event.
    device: Option<String>,
    session: Option<String>,
    pub device_hash: Option<String>,
    pub session_hash: Option<String>,
    pub new_session: bool,
    pub first: Option<StoredTouch>,
    pub last: Option<StoredTouch>,
    first_dirty: bool,
    last_dirty: bool,
    /// Set the identity cookies on the response (page loads and forms).
    refresh: bool,
    /// This request's own touch, when it is a landing.
    pub touch: Option<Touch>,
    pub landing: bool,
    pub touchpoint_id: Option<String>,
    pub page: Option<Page>,
}

impl Capture {
    /// `None` for the pass-through case: no capture and no touchgate
    /// cookie, so nothing to add.
    pub fn visit(&self, parts: &Parts, class: Class, tls: bool, peer: IpAddr) -> Option<Visit> {
        let capture = matches!(class, Class::Navigation | Class::Form(_));
        if !capture && !has_touchgate_cookie(&parts.headers) {
            return None;
        }
        let now = OffsetDateTime::now_utc();
        let decision = consent::evaluate(&self.cfg.consent, &parts.headers, now);
        // Counted where consent decides something: page loads and forms,
        // not each asset a visitor with touchgate cookies fetches.
        if let Some(reason) = decision.tcf_invalid.filter(|_| capture) {
            self.metrics
                .consent_tcf_invalid_total
                .get_or_create(&crate::metrics::ReasonLabel {
                    reason: reason.into(),
                })
                .inc();
        }
        let consent = decision.consent;
        let mut v = Visit {
            now,
            consent,
            tcf: decision.tcf,
            device: None,
            session: None,
            device_hash: None,
            session_hash: None,
            new_session: false,
            first: None,
            last: None,
            first_dirty: false,
            last_dirty: false,
            refresh: capture && consent.analytics,
            touch: None,
            landing: false,
            touchpoint_id: None,
            page: None,
        };
        if consent.analytics {
            self.read_cookies(&parts.headers, &mut v);
        }
        if !capture {
            self.hash_ids(&mut v);
            return Some(v);
        }
        if consent.analytics {
            if v.device.is_none() {
                v.device = Some(cookie::new_id());
            }
            if v.session.is_none() {
                v.session = Some(cookie::new_id());
                v.new_session = true;
            }
            self.hash_ids(&mut v);
        }

        let host = super::request_host(parts).unwrap_or("");
        let referrer = parts
            .headers
            .get(header::REFERER)
            .and_then(|r| r.to_str().ok());
        let query = parts.uri.query();
        let observed = if matches!(class, Class::Navigation)
            && referrer.is_none()
            && !query.is_some_and(touch::query_may_carry_campaign)
        {
            // Cheap path for the common direct page load.
            Observation::Direct
        } else {
            touch::observe(&self.rules, query, referrer, host)
        };
        let (this_touch, click) = match observed {
            Observation::Touch { mut touch, fbclid } => {
                // Before the touch reaches a cookie, a header or an event:
                // people put e-mails in utm_content.
                self.scrub_touch(&mut touch);
                let click = ad_click(query, fbclid.as_deref());
                (Some(touch), click)
            }
            Observation::Direct if v.new_session || v.first.is_none() => {
                (Some(Touch::direct()), None)
            }
            _ => (None, None),
        };
        v.landing = matches!(class, Class::Navigation)
            && this_touch
                .as_ref()
                .is_some_and(|t| !t.is_direct() || (consent.analytics && v.new_session));
        if let Some(t) = &this_touch
            && consent.analytics
        {
            v.remember(t, click, now);
        }
        if v.landing {
            v.touch = this_touch;
        }
        if v.landing || matches!(class, Class::Form(_)) {
            let scheme = self.scheme(tls, peer, &parts.headers);
            let url = touch::canonical_url(scheme, host, parts.uri.path(), query);
            let floor10 = (now.unix_timestamp() / 10 * 10).to_string();
            // Without consent there is no device to key on: a random nonce
            // keeps distinct visitors from colliding into one id.
            let nonce;
            let who = match &v.device_hash {
                Some(d) => d.as_str(),
                None => {
                    nonce = cookie::new_id();
                    nonce.as_str()
                }
            };
            v.touchpoint_id = Some(self.keys.hex(
                Purpose::Touchpoint,
                &[who.as_bytes(), url.as_bytes(), floor10.as_bytes()],
            ));
            v.page = Some(Page {
                url,
                path: parts.uri.path().to_string(),
                referrer_host: referrer.and_then(touch::referrer_host),
            });
        }
        Some(v)
    }

    fn read_cookies(&self, headers: &HeaderMap, v: &mut Visit) {
        let lines = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|h| h.to_str().ok());
        for pair in lines.flat_map(|l| l.split(';')) {
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            match name {
                cookie::DEVICE | cookie::SESSION => {
                    if cookie::is_valid_id(value) {
                        let slot = if name == cookie::DEVICE {
                            &mut v.device
                        } else {
                            &mut v.session
                        };
                        *slot = Some(value.to_string());
                    } else {
                        self.reject(name);
                    }
                }
                cookie::FIRST_TOUCH | cookie::LAST_TOUCH => {
                    let decoded = cookie::decode_touch(
                        &self.keys,
                        self.previous_keys.as_ref(),
                        name,
                        value,
                        |s, m, c| self.rules.channel(s, m, c),
                    );
                    let (stored, dirty) = match decoded {
                        Verified::Current(t) => (Some(t), false),
                        // Re-signed with the current secret on this response.
                        Verified::Previous(t) => (Some(t), true),
                        Verified::Invalid => {
                            self.reject(name);
                            (None, false)
                        }
                    };
                    if name == cookie::FIRST_TOUCH {
                        v.first = stored;
                        v.first_dirty = dirty;
                    } else {
                        v.last = stored;
                        v.last_dirty = dirty;
                    }
                }
                _ => {}
            }
        }
    }

    /// The ids as they leave touchgate (headers, events): keyed hashes,
    /// computed once the raw ids are final.
    fn hash_ids(&self, v: &mut Visit) {
        v.device_hash = v
            .device
            .as_deref()
            .map(|d| self.keys.hex(Purpose::Device, &[d.as_bytes()]));
        v.session_hash = v
            .session
            .as_deref()
            .map(|s| self.keys.hex(Purpose::Session, &[s.as_bytes()]));
    }

    fn scrub_touch(&self, t: &mut Touch) {
        let fields = [
            ("touch.source", &mut t.source),
            ("touch.medium", &mut t.medium),
            ("touch.campaign", &mut t.campaign),
            ("touch.term", &mut t.term),
            ("touch.content", &mut t.content),
            ("touch.campaign_id", &mut t.campaign_id),
        ];
        for (name, value) in fields {
            let Some(v) = value else { continue };
            if let std::borrow::Cow::Owned(clean) = crate::privacy::scrub_free_text(v) {
                *v = clean;
                self.metrics
                    .pii_redacted_total
                    .get_or_create(&crate::metrics::FieldLabel {
                        field: name.to_string(),
                    })
                    .inc();
            }
        }
    }

    fn reject(&self, cookie_name: &str) {
        self.metrics
            .cookie_rejected_total
            .get_or_create(&crate::metrics::CookieLabel {
                cookie: cookie_name.to_string(),
            })
            .inc();
    }

    /// The `x-touch-*` headers for the app. Client-sent ones were already
    /// removed; these are serialized as RFC 8941 dictionaries by `sfv`, so
    /// no value can break out of its header.
    pub fn touch_headers(&self, v: &Visit, headers: &mut HeaderMap) {
        if !v.consent.analytics {
            if let Some(id) = &v.touchpoint_id
                && let Ok(h) = HeaderValue::from_str(id)
            {
                headers.insert(X_TOUCH_ID.clone(), h);
            }
            return;
        }
        for (name, value) in [
            (&X_TOUCH_DEVICE, &v.device_hash),
            (&X_TOUCH_SESSION, &v.session_hash),
            (&X_TOUCH_ID, &v.touchpoint_id),
        ] {
            if let Some(value) = value
                && let Ok(h) = HeaderValue::from_str(value)
            {
                headers.insert(name.clone(), h);
            }
        }
        let dictionary = |s: &StoredTouch| {
            touch_dictionary(&s.touch).and_then(|d| HeaderValue::from_str(&d).ok())
        };
        let first = v.first.as_ref().and_then(dictionary);
        // A new visitor's first and last touch are the same touch: one
        // serialization serves both headers.
        let last = match (&v.first, &v.last) {
            (Some(f), Some(l)) if f.touch == l.touch => first.clone(),
            (_, l) => l.as_ref().and_then(dictionary),
        };
        for (name, value) in [(&X_TOUCH_FIRST, first), (&X_TOUCH_LAST, last)] {
            if let Some(h) = value {
                headers.insert(name.clone(), h);
            }
        }
    }

    /// The identity cookies on the response to this visit, unless a shared
    /// cache may store it: then, per `identity.cacheable_responses`, the
    /// response is made `Cache-Control: private` (and the cookies set), or
    /// no cookie is set on it. Counted either way.
    pub fn response_cookies(&self, v: &Visit, secure: bool, status: u16, headers: &mut HeaderMap) {
        if !v.refresh {
            return;
        }
        if super::cache::shared_cacheable(status, headers) {
            let action = match self.cfg.identity.cacheable_responses {
                CacheableResponses::Private => {
                    super::cache::make_private(headers);
                    "private"
                }
                CacheableResponses::Skip => "skip",
            };
            self.metrics
                .cacheable_cookie_responses_total
                .get_or_create(&crate::metrics::ActionLabel {
                    action: action.into(),
                })
                .inc();
            if action == "skip" {
                return;
            }
        }
        self.set_cookies(v, secure, headers);
    }

    /// `Set-Cookie` for the identity cookies, on page loads and forms.
    pub fn set_cookies(&self, v: &Visit, secure: bool, headers: &mut HeaderMap) {
        if !v.refresh {
            return;
        }
        let secure = secure || self.cfg.identity.secure_cookies;
        let session_age = self.cfg.identity.session_timeout.as_secs() as i64;
        let domain = self.cfg.identity.cookie_domain.as_deref();
        let mut set = |name: &'static str, value: &str, max_age: i64| {
            let line = set_cookie_line(name, value, secure, domain, max_age);
            if let Ok(h) = HeaderValue::from_str(&line) {
                headers.append(header::SET_COOKIE, h);
            }
        };
        if let Some(d) = &v.device {
            set(cookie::DEVICE, d, YEAR_400_DAYS);
        }
        if let Some(s) = &v.session {
            set(cookie::SESSION, s, session_age);
        }
        if let Some(t) = v.first.as_ref().filter(|_| v.first_dirty || v.landing) {
            set(
                cookie::FIRST_TOUCH,
                &cookie::encode_touch(&self.keys, cookie::FIRST_TOUCH, t),
                YEAR_400_DAYS,
            );
        }
        if let Some(t) = v.last.as_ref().filter(|_| v.last_dirty || v.landing) {
            set(
                cookie::LAST_TOUCH,
                &cookie::encode_touch(&self.keys, cookie::LAST_TOUCH, t),
                YEAR_400_DAYS,
            );
        }
    }

    /// The fields every event captured on the request path shares.
    pub fn base_event(
        &self,
        v: &Visit,
        event_id: String,
        event_name: &str,
        ip: IpAddr,
        parts: &Parts,
    ) -> Event {
        let mut e = Event::new(
            event_id,
            event_name.to_string(),
            Origin::Proxy,
            v.now,
            v.now,
        );
        e.device_id = v.device_hash.clone();
        e.session_id = v.session_hash.clone();
        e.touchpoint_id = v.touchpoint_id.clone();
        e.page = v.page.clone();
        e.first_touch = v.first.as_ref().map(|s| s.touch.clone());
        e.last_touch = v.last.as_ref().map(|s| s.touch.clone());
        e.consent = v.consent;
        e.client = Client {
            ip_prefix: match self.cfg.privacy.client_ip {
                EventIp::Truncate => Some(crate::identity::ip::prefix_string(ip)),
                EventIp::Drop => None,
            },
            context: None,
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|u| u.to_str().ok())
                .map(super::user_agent::reduce),
        };
        e
    }

    /// The landing event: `event_id` = `touchpoint_id`.
    pub fn landing_event(&self, v: &Visit, ip: IpAddr, parts: &Parts) -> Option<Envelope> {
        if !v.landing {
            return None;
        }
        let id = v.touchpoint_id.clone()?;
        let mut e = self.base_event(v, id, "landing", ip, parts);
        e.touch = v.touch.clone();
        Some(Envelope::new(e))
    }
}

impl Visit {
    fn remember(&mut self, t: &Touch, click: Option<ClickId>, now: OffsetDateTime) {
        // To the second, as the cookie keeps it: the landing event and every
        // later event that reads the touch from its cookie give the same `at`.
        let at = now.replace_nanosecond(0).unwrap_or(now);
        let stored = StoredTouch {
            touch: TouchAt {
                touch: t.clone(),
                at,
            },
            click,
        };
        // First touch is set once; last touch is the last non-direct one,
        // direct only while nothing else is known.
        if self.first.is_none() {
            self.first = Some(stored.clone());
            self.first_dirty = true;
        }
        if !t.is_direct() || self.last.is_none() {
            self.last = Some(stored);
            self.last_dirty = true;
        }
    }

    /// The raw fbclid of the last touch (for the Meta `fbc` match key).
    pub fn last_fbclid(&self) -> Option<&str> {
        self.last.as_ref()?.click_of(ClickKind::Fbclid)
    }

    /// The latest Google Ads click (`gclid`, `gbraid` or `wbraid`) of the
    /// two touch cookies, with the time of the click, when it is at most
    /// [`CLICK_MAX_AGE`] old at `now`: Google refuses older ones.
    pub fn google_click(&self) -> Option<AdClick> {
        [&self.last, &self.first]
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let c = s.click.as_ref().filter(|c| c.kind.is_google())?;
                Some(AdClick {
                    kind: c.kind.as_str().to_string(),
                    value: c.value.clone(),
                    at: s.touch.at,
                })
            })
            .filter(|c| c.at <= self.now && self.now - c.at <= CLICK_MAX_AGE)
            .max_by_key(|c| c.at)
    }
}

/// A click id is given to its platform up to 90 days after the click:
/// Google Ads refuses older click conversions, and Meta's `_fbc` cookie
/// lasts as long.
pub const CLICK_MAX_AGE: time::Duration = time::Duration::days(90);

/// The ad-platform click id a landing carries: the Google one (`gclid`,
/// else `gbraid`, else `wbraid`) when there is one, else the fbclid. One
/// per touch, since the cookie keeps one; a Google Ads landing with an
/// fbclid as well is a Google click.
pub fn ad_click(query: Option<&str>, fbclid: Option<&str>) -> Option<ClickId> {
    let google = query.and_then(|q| {
        let mut found: [Option<ClickId>; 3] = Default::default();
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            let (slot, kind) = match k.as_ref() {
                "gclid" => (0, ClickKind::Gclid),
                "gbraid" => (1, ClickKind::Gbraid),
                "wbraid" => (2, ClickKind::Wbraid),
                _ => continue,
            };
            if found[slot].is_none() {
                found[slot] = ClickId::new(kind, &v);
            }
        }
        found.into_iter().flatten().next()
    });
    google.or_else(|| fbclid.and_then(|f| ClickId::new(ClickKind::Fbclid, f)))
}

/// One identity cookie's `Set-Cookie` value, written out directly: the same
/// text as the `cookie` crate's `Display` for a cookie built with
/// `http_only`, `SameSite=Lax`, `Path=/`, `secure`, `max_age` and the
/// optional domain (a test holds the two together), without building a
/// `Cookie` and formatting through `fmt` on every page load.
fn set_cookie_line(
    name: &str,
    value: &str,
    secure: bool,
    domain: Option<&str>,
    max_age: i64,
) -> String {
    use std::fmt::Write;
    let mut line = String::with_capacity(name.len() + value.len() + 96);
    line.push_str(name);
    line.push('=');
    line.push_str(value);
    line.push_str("; HttpOnly; SameSite=Lax");
    if secure {
        line.push_str("; Secure");
    }
    line.push_str("; Path=/");
    if let Some(d) = domain {
        line.push_str("; Domain=");
        line.push_str(d.strip_prefix('.').unwrap_or(d));
    }
    let _ = write!(line, "; Max-Age={max_age}");
    line
}

fn has_touchgate_cookie(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| v.as_bytes().windows(3).any(|w| w == b"tg_"))
}

/// `source="google", medium="cpc", campaign="spring", channel="Paid Search", at=1764316800`
pub fn touch_dictionary(t: &TouchAt) -> Option<String> {
    use sfv::{KeyRef, RefBareItem, StringRef};
    let mut ser = sfv::DictSerializer::new();
    let fields: [(&str, Option<&str>); 7] = [
        ("source", t.touch.source.as_deref()),
        ("medium", t.touch.medium.as_deref()),
        ("campaign", t.touch.campaign.as_deref()),
        ("term", t.touch.term.as_deref()),
        ("content", t.touch.content.as_deref()),
        ("click_id_type", t.touch.click_id_type.as_deref()),
        ("channel", Some(t.touch.channel.as_str())),
    ];
    for (key, value) in fields {
        let Some(value) = value else { continue };
        let key = KeyRef::from_str(key).ok()?;
        // Printable ASCII is an sf-string; anything else a display string
        // (RFC 9651), which percent-encodes it.
        let item = match StringRef::from_str(value) {
            Ok(s) => RefBareItem::String(s),
            Err(_) => RefBareItem::DisplayString(value),
        };
        let _ = ser.bare_item(key, item);
    }
    let at = sfv::Integer::try_from(t.at.unix_timestamp()).ok()?;
    let _ = ser.bare_item(KeyRef::from_str("at").ok()?, at);
    ser.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ad_click_ids_of_a_landing() {
        let kind = |q: &str, f: Option<&str>| ad_click(Some(q), f).map(|c| (c.kind, c.value));
        assert_eq!(
            kind("gclid=Cj0&gbraid=b", None),
            Some((ClickKind::Gclid, "Cj0".into()))
        );
        assert_eq!(
            kind("wbraid=w&gbraid=b", None),
            Some((ClickKind::Gbraid, "b".into()))
        );
        assert_eq!(
            kind("wbraid=w", None),
            Some((ClickKind::Wbraid, "w".into()))
        );
        assert_eq!(
            kind("fbclid=IwAR", Some("IwAR")),
            Some((ClickKind::Fbclid, "IwAR".into()))
        );
        assert_eq!(
            kind("gclid=g&fbclid=IwAR", Some("IwAR")),
            Some((ClickKind::Gclid, "g".into()))
        );
        // Empty or too long: not a click id to give back.
        assert_eq!(
            kind("gclid=&wbraid=w", None),
            Some((ClickKind::Wbraid, "w".into()))
        );
        assert_eq!(kind(&format!("gclid={}", "a".repeat(101)), None), None);
        assert_eq!(ad_click(None, None), None);
    }

    #[test]
    fn google_clicks_older_than_90_days_are_not_given() {
        let now = time::macros::datetime!(2026-11-29 10:00:00 UTC);
        let stored = |days: i64, value: &str| StoredTouch {
            touch: TouchAt {
                touch: Touch::direct(),
                at: now - time::Duration::days(days),
            },
            click: ClickId::new(ClickKind::Gclid, value),
        };
        let mut v = Visit {
            now,
            consent: Consent::default(),
            tcf: None,
            device: None,
            session: None,
            device_hash: None,
            session_hash: None,
            new_session: false,
            first: Some(stored(89, "first")),
            last: Some(stored(10, "last")),
            first_dirty: false,
            last_dirty: false,
            refresh: false,
            touch: None,
            landing: false,
            touchpoint_id: None,
            page: None,
        };
        let c = v.google_click().unwrap();
        assert_eq!((c.kind.as_str(), c.value.as_str()), ("gclid", "last"));
        assert_eq!(c.at, now - time::Duration::days(10));
        v.last = Some(StoredTouch {
            click: None,
            ..stored(1, "")
        });
        assert_eq!(v.google_click().unwrap().value, "first");
        v.first = Some(stored(91, "first"));
        assert_eq!(v.google_click(), None);
    }

    #[test]
    fn set_cookie_line_matches_the_cookie_crate() {
        for secure in [false, true] {
            for domain in [None, Some("example.com"), Some(".example.com")] {
                for max_age in [0, 1800, YEAR_400_DAYS] {
                    let mut c = ::cookie::Cookie::build(("tg_did", "0123abcd"))
                        .http_only(true)
                        .same_site(::cookie::SameSite::Lax)
                        .path("/")
                        .secure(secure)
                        .max_age(time::Duration::seconds(max_age));
                    if let Some(d) = domain {
                        c = c.domain(d.to_string());
                    }
                    assert_eq!(
                        set_cookie_line("tg_did", "0123abcd", secure, domain, max_age),
                        c.build().to_string()
                    );
                }
            }
        }
    }

    #[test]
    fn dictionary_escapes_hostile_values() {
        let t = TouchAt {
            touch: Touch {
                source: Some("goo\"gle\\".into()),
                medium: Some("cpc".into()),
                campaign: Some("été".into()),
                channel: "Paid Search".into(),
                valid: true,
                ..Touch::default()
            },
            at: OffsetDateTime::from_unix_timestamp(1_764_316_800).unwrap(),
        };
        let d = touch_dictionary(&t).unwrap();
        assert_eq!(
            d,
            r#"source="goo\"gle\\", medium="cpc", campaign=%"%c3%a9t%c3%a9", channel="Paid Search", at=1764316800"#
        );
        assert!(HeaderValue::from_str(&d).is_ok());
        let parsed = sfv::Parser::new(&d).parse::<sfv::Dictionary>();
        assert!(parsed.is_ok(), "{parsed:?}");
    }
}
