//! One request's view of the visitor: identity from the cookies, the touch
//! this request carries, the touch headers for the app, the cookies for
//! the browser, and the landing event.

use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use std::net::IpAddr;
use time::OffsetDateTime;

use super::{Capture, Class, consent};
use crate::config::{CacheableResponses, EventIp};
use crate::event::{Client, Consent, Envelope, Event, Origin, Page, Touch, TouchAt};
use crate::identity::Purpose;
use crate::identity::cookie::{self, StoredTouch, Verified};
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
        let consent = consent::evaluate(&self.cfg.consent, &parts.headers);
        let mut v = Visit {
            now,
            consent,
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
        let (this_touch, fbclid) = match observed {
            Observation::Touch { mut touch, fbclid } => {
                // Before the touch reaches a cookie, a header or an event:
                // people put e-mails in utm_content.
                self.scrub_touch(&mut touch);
                (Some(touch), fbclid)
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
            v.remember(t, fbclid, now);
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
    fn remember(&mut self, t: &Touch, fbclid: Option<String>, now: OffsetDateTime) {
        // To the second, as the cookie keeps it: the landing event and every
        // later event that reads the touch from its cookie give the same `at`.
        let at = now.replace_nanosecond(0).unwrap_or(now);
        let stored = StoredTouch {
            touch: TouchAt {
                touch: t.clone(),
                at,
            },
            fbclid,
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
        self.last.as_ref().and_then(|s| s.fbclid.as_deref())
    }
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
