//! `meta_capi` sink: Meta Conversions API.
//!
//! One request per ≤ 1,000 events: `POST {base}/{api_version}/{pixel_id}/events`
//! with `{"data": [...], "access_token": "…"}` (base `https://graph.facebook.com`,
//! or `endpoint`). Each server event carries `event_name` (from the `events`
//! mapping), `event_time` (unix seconds of `occurred_at`), `event_id` (the
//! client context `cid` when the page sent one, so Meta dedupes this event
//! against the browser pixel's, else touchgate's `event_id`),
//! `action_source = "website"`, `event_source_url` and `user_data`.
//!
//! `user_data` comes only from the envelope's `AdMatch`: `em`, `ph`,
//! `external_id` and the form's `user_data` keys (`fn`, `ln`, `ct`, `st`,
//! `zp`, `country`, `db`, `ge`), each SHA-256 hex computed at capture time
//! from the normalized value, which is never stored; and `fbc`.
//! `client_user_agent` and `client_ip_address` are sent only when the sink
//! opts in (`send_user_agent`, `send_client_ip`): otherwise the raw user
//! agent and IP never leave.
//!
//! Meta refuses a whole request when one event is invalid, so [`Sink::check`]
//! validates each event locally first (age ≤ 7 days, not in the future, a
//! source URL, the user agent when it is sent, at least one match key,
//! well-formed hashes).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;

use super::ad_platform;
use super::http_client::{self, HttpClient, StatusClass};
use super::{DeliveryConfig, Sink, SinkBuildError, SinkError};
use crate::event::{Envelope, Event};

/// Meta takes at most this many events in one request.
pub const MAX_EVENTS_PER_REQUEST: usize = 1000;
/// Meta refuses a request holding an event older than 7 days; an hour of
/// margin leaves room for the time the event waits in a batch.
const MAX_AGE: time::Duration = time::Duration::hours(7 * 24 - 1);
/// Clocks of app servers and touchgate replicas may disagree a little.
const MAX_FUTURE: time::Duration = time::Duration::minutes(5);
const DEFAULT_BASE: &str = "https://graph.facebook.com";
/// Error codes of the Graph API that mean "try again later": unknown and
/// temporary errors (1, 2) and the rate limits (4, 17, 32, 341, 613, 80004).
const TRANSIENT_CODES: [i64; 8] = [1, 2, 4, 17, 32, 341, 613, 80004];
/// An expired or revoked access token: the events are fine, the credential
/// is not, so keep them until an operator fixes it (or `max_age` passes).
const TOKEN_ERROR_CODE: i64 = 190;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaCapiSinkConfig {
    pub name: Option<String>,
    pub pixel_id: String,
    pub access_token_env: String,
    /// Replaces `https://graph.facebook.com` (tests, egress proxies).
    pub endpoint: Option<String>,
    /// Graph API version in the request path.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// touchgate event name → Meta event name (`signup_submitted = "Lead"`).
    /// Only these events are forwarded.
    #[serde(default)]
    pub events: BTreeMap<String, String>,
    /// Events Manager "Test events" code; events sent with it are not used
    /// for ads.
    pub test_event_code: Option<String>,
    /// Time allowed for one request, answer included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Send `client_ip_address` (the raw client IP). Off: no raw IP leaves.
    #[serde(default)]
    pub send_client_ip: bool,
    /// Send `client_user_agent`, which Meta documents as required for
    /// website events. Off: Meta may refuse the events or match fewer.
    #[serde(default)]
    pub send_user_agent: bool,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_api_version() -> String {
    "v25.0".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(20)
}

impl MetaCapiSinkConfig {
    pub fn validate(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut bad = |k: &str, m: String| problems.push((k.to_string(), m));
        if self.pixel_id.is_empty() || !self.pixel_id.bytes().all(|b| b.is_ascii_digit()) {
            bad(
                "pixel_id",
                "the pixel id is a number, e.g. \"123456789012345\"".into(),
            );
        }
        match env(&self.access_token_env) {
            None => bad(
                "access_token_env",
                format!(
                    "environment variable {} is not set (a Conversions API access token from Events Manager)",
                    self.access_token_env
                ),
            ),
            Some(t) if t.trim().is_empty() => bad(
                "access_token_env",
                format!("environment variable {} is empty", self.access_token_env),
            ),
            Some(_) => {}
        }
        if let Some(e) = &self.endpoint
            && let Err(m) = ad_platform::base_url(e)
        {
            bad("endpoint", m);
        }
        if !valid_api_version(&self.api_version) {
            bad(
                "api_version",
                "a Graph API version looks like \"v25.0\"".into(),
            );
        }
        if self.events.is_empty() {
            bad(
                "events",
                "no event is forwarded: map touchgate events to Meta events, e.g. events = { signup_submitted = \"Lead\" }".into(),
            );
        }
        for (from, to) in &self.events {
            if to.trim().is_empty() || to.len() > 100 || to.chars().any(char::is_control) {
                bad(
                    &format!("events.{from}"),
                    "a Meta event name is 1 to 100 printable characters".into(),
                );
            }
        }
        if let Some(code) = &self.test_event_code
            && (code.is_empty() || !code.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            bad(
                "test_event_code",
                "a test event code is letters and digits, e.g. \"TEST12345\"".into(),
            );
        }
        if self.timeout.is_zero() {
            bad("timeout", "must be more than zero".into());
        }
        if self.delivery.max_age > Duration::from_secs(7 * 24 * 3600) {
            bad(
                "delivery.max_age",
                "Meta refuses events older than 7 days; set max_age to 7d or less".into(),
            );
        }
        problems
    }
}

fn valid_api_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let mut parts = rest.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(a), Some(b), None)
            if !a.is_empty() && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
    )
}

/// One server event, as the Conversions API documents it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerEvent {
    pub event_name: String,
    pub event_time: i64,
    pub event_id: String,
    pub action_source: &'static str,
    pub event_source_url: String,
    pub user_data: UserData,
}

/// `user_data`: hashed match keys, the click id, and the user agent and
/// IP when the sink opts in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserData {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub em: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ph: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external_id: Vec<String>,
    /// `fn`, `ln`, `ct`, `st`, `zp`, `country`, `db`, `ge`.
    #[serde(flatten)]
    pub customer: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fbc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip_address: Option<String>,
}

/// What a sink sends beyond the hashed keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Raw {
    pub user_agent: bool,
    pub client_ip: bool,
}

#[derive(Serialize)]
struct EventsRequest<'a> {
    data: &'a [ServerEvent],
    access_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    test_event_code: Option<&'a str>,
}

/// The id Meta dedupes on: the client context `cid` when the page sent one
/// (the browser pixel used the same), else touchgate's `event_id`.
pub fn dedupe_id(event: &Event) -> &str {
    event
        .client
        .context
        .as_ref()
        .and_then(|c| c.get("cid"))
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty() && c.len() <= 128 && !c.chars().any(char::is_control))
        .unwrap_or(&event.event_id)
}

/// Build the server event for `envelope` under the Meta name `meta_name`,
/// or say why Meta would refuse it. Pure: `now` is given.
pub fn server_event(
    envelope: &Envelope,
    meta_name: &str,
    raw: Raw,
    now: OffsetDateTime,
) -> Result<ServerEvent, String> {
    let event = &envelope.event;
    if event.occurred_at < now - MAX_AGE {
        return Err(format!(
            "occurred at {}, too old: Meta refuses events older than 7 days",
            crate::event::rfc3339_millis::format(event.occurred_at)
        ));
    }
    if event.occurred_at > now + MAX_FUTURE {
        return Err(format!(
            "occurred at {}, in the future",
            crate::event::rfc3339_millis::format(event.occurred_at)
        ));
    }
    let m = envelope
        .ad_match
        .as_ref()
        .ok_or("no ad match keys were captured for this event (em, ph, external_id, fbc)")?;
    let source_url = m
        .event_source_url
        .as_deref()
        .or(event.page.as_ref().map(|p| p.url.as_str()))
        .filter(|u| !u.is_empty())
        .ok_or("no event_source_url: Meta requires it for website events")?;
    match url::Url::parse(source_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => return Err("event_source_url is not an absolute http(s) URL".into()),
    }
    let user_agent = if raw.user_agent {
        let ua = m
            .client_user_agent
            .as_deref()
            .filter(|ua| !ua.trim().is_empty())
            .ok_or("no client_user_agent: Meta requires it for website events")?;
        Some(ua.to_string())
    } else {
        None
    };
    let client_ip_address = if raw.client_ip {
        m.client_ip
            .as_deref()
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
            .map(str::to_string)
    } else {
        None
    };
    let hashed = |key: &str, v: &Option<String>| -> Result<Vec<String>, String> {
        match v {
            None => Ok(Vec::new()),
            Some(h) if is_sha256_hex(h) => Ok(vec![h.clone()]),
            Some(_) => Err(format!(
                "{key} is not a SHA-256 hex digest; refusing to send it"
            )),
        }
    };
    let em = hashed("em", &m.em)?;
    let ph = hashed("ph", &m.ph)?;
    let external_id = hashed("external_id", &m.external_id)?;
    if let Some(fbc) = &m.fbc
        && !is_fbc(fbc)
    {
        return Err("fbc is not of the form fb.1.<milliseconds>.<fbclid>".into());
    }
    let mut customer = BTreeMap::new();
    for (key, h) in &m.user_data {
        if !crate::identity::match_keys::META_KEYS.contains(&key.as_str()) {
            continue;
        }
        customer.insert(key.clone(), hashed(key, &Some(h.clone()))?);
    }
    if em.is_empty() && ph.is_empty() && external_id.is_empty() && m.fbc.is_none() {
        return Err("no customer information to match on (em, ph, external_id or fbc)".into());
    }
    Ok(ServerEvent {
        event_name: meta_name.to_string(),
        event_time: event.occurred_at.unix_timestamp(),
        event_id: dedupe_id(event).to_string(),
        action_source: "website",
        event_source_url: source_url.to_string(),
        user_data: UserData {
            em,
            ph,
            external_id,
            customer,
            fbc: m.fbc.clone(),
            client_user_agent: user_agent,
            client_ip_address,
        },
    })
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `fb.1.<creation time in ms>.<fbclid>` (Meta's `_fbc` cookie format).
pub fn is_fbc(s: &str) -> bool {
    let mut parts = s.splitn(4, '.');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("fb"), Some(_), Some(ms), Some(clid))
            if !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit())
                && !clid.is_empty() && !clid.chars().any(|c| c.is_control() || c.is_whitespace())
    )
}

/// The error object of a Graph API answer.
#[derive(Debug, Default, Deserialize)]
struct GraphError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    error_subcode: Option<i64>,
    #[serde(default)]
    is_transient: bool,
    #[serde(default)]
    error_user_msg: Option<String>,
    #[serde(default)]
    fbtrace_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error: GraphError,
}

#[derive(Debug, Deserialize)]
struct OkAnswer {
    events_received: Option<usize>,
}

/// Judge a non-retryable-by-status answer: 2xx is delivered; a Graph error
/// marked transient, a rate limit or a token problem is retryable; any other
/// refusal rejects the batch with Meta's own message.
fn judge(status: http::StatusCode, body: &[u8], sent: usize) -> Result<(), SinkError> {
    if status.is_success() {
        if let Ok(OkAnswer {
            events_received: Some(n),
        }) = serde_json::from_slice(body)
            && n != sent
        {
            tracing::warn!(
                sent,
                received = n,
                "meta_capi: Meta counted a different number of events"
            );
        }
        return Ok(());
    }
    let error = serde_json::from_slice::<ErrorAnswer>(body)
        .map(|a| a.error)
        .ok();
    let message = match &error {
        Some(e) => {
            let mut m = format!("Meta answered HTTP {status}");
            if let Some(c) = e.code {
                m.push_str(&format!(", code {c}"));
            }
            if let Some(s) = e.error_subcode {
                m.push_str(&format!("/{s}"));
            }
            m.push_str(&format!(": {}", e.message));
            if let Some(u) = e.error_user_msg.as_deref().filter(|u| !u.is_empty()) {
                m.push_str(&format!(" ({u})"));
            }
            if let Some(t) = &e.fbtrace_id {
                m.push_str(&format!(" [fbtrace_id {t}]"));
            }
            m
        }
        None => format!(
            "Meta answered HTTP {status}: {}",
            http_client::snippet(body)
        ),
    };
    let retry = match &error {
        Some(e) => {
            e.is_transient
                || e.code
                    .is_some_and(|c| TRANSIENT_CODES.contains(&c) || c == TOKEN_ERROR_CODE)
        }
        None => false,
    } || http_client::classify(status) == StatusClass::Fatal;
    if retry {
        Err(http_client::retryable(message))
    } else {
        Err(SinkError::Rejected { message })
    }
}

pub struct MetaCapiSink {
    name: String,
    uri: String,
    access_token: String,
    events: BTreeMap<String, String>,
    test_event_code: Option<String>,
    raw: Raw,
    client: HttpClient,
}

impl std::fmt::Debug for MetaCapiSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaCapiSink")
            .field("name", &self.name)
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl MetaCapiSink {
    pub fn new(
        cfg: &MetaCapiSinkConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<MetaCapiSink, SinkBuildError> {
        let (access_token, base) = ad_platform::build_parts(
            cfg.validate(env),
            "access_token_env",
            env(&cfg.access_token_env),
            cfg.endpoint.as_deref(),
            DEFAULT_BASE,
        )?;
        Ok(MetaCapiSink {
            name: cfg.name.clone().unwrap_or_else(|| "meta_capi".into()),
            uri: format!("{base}/{}/{}/events", cfg.api_version, cfg.pixel_id),
            access_token,
            events: cfg.events.clone(),
            test_event_code: cfg.test_event_code.clone(),
            raw: Raw {
                user_agent: cfg.send_user_agent,
                client_ip: cfg.send_client_ip,
            },
            client: HttpClient::new(cfg.timeout)
                .map_err(|e| SinkBuildError::Client(format!("TLS setup: {e}")))?,
        })
    }

    /// Go by `name` in metrics and logs instead of `name`/the type from
    /// the config (e.g. the unique name `sink::unique_name` gives).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Form attempts are touchgate's own bookkeeping: never sent, even
    /// when mapped.
    fn meta_name(&self, event: &Event) -> Option<&str> {
        if event.is_attempt() {
            return None;
        }
        self.events.get(&event.event_name).map(String::as_str)
    }
}

#[async_trait]
impl Sink for MetaCapiSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts(&self, envelope: &Envelope) -> bool {
        envelope.event.consent.ads && self.meta_name(&envelope.event).is_some()
    }

    fn check(&self, envelope: &Envelope) -> Result<(), String> {
        let name = self
            .meta_name(&envelope.event)
            .ok_or("event name not mapped in meta_capi events")?;
        server_event(envelope, name, self.raw, OffsetDateTime::now_utc()).map(|_| ())
    }

    async fn send(&self, batch: &[Envelope]) -> Result<(), SinkError> {
        let now = OffsetDateTime::now_utc();
        let mut data = Vec::with_capacity(batch.len());
        for envelope in batch {
            let Some(name) = self
                .meta_name(&envelope.event)
                .filter(|_| envelope.event.consent.ads)
            else {
                continue;
            };
            match server_event(envelope, name, self.raw, now) {
                Ok(e) => data.push(e),
                // `check` passed when the event was queued; what fails now is
                // age (a long outage). Sending it would make Meta refuse the
                // whole request, so it is left out and said so.
                Err(why) => tracing::warn!(
                    sink = %self.name,
                    event_id = %envelope.event.event_id,
                    "meta_capi: event left out: {why}"
                ),
            }
        }
        for chunk in data.chunks(MAX_EVENTS_PER_REQUEST) {
            let body = serde_json::to_vec(&EventsRequest {
                data: chunk,
                access_token: &self.access_token,
                test_event_code: self.test_event_code.as_deref(),
            })
            .map_err(|e| SinkError::Rejected {
                message: format!("cannot encode the request: {e}"),
            })?;
            let answer = self.client.post_json(&self.uri, body).await?;
            judge(answer.status, &answer.body, chunk.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AdMatch, Origin};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-29 10:00:00 UTC);
    const UA: Raw = Raw {
        user_agent: true,
        client_ip: false,
    };

    fn envelope(at: OffsetDateTime) -> Envelope {
        let mut e = Event::new(
            "e1".into(),
            "signup_submitted".into(),
            Origin::Proxy,
            at,
            at,
        );
        e.client.context = Some(serde_json::json!({"cid": "c-42"}));
        Envelope {
            event: e,
            ad_match: Some(AdMatch {
                em: Some("a".repeat(64)),
                fbc: Some("fb.1.1764410000000.AbC-123".into()),
                client_user_agent: Some("Mozilla/5.0".into()),
                event_source_url: Some("https://shop.example/signup?utm_source=fb".into()),
                ..AdMatch::default()
            }),
        }
    }

    #[test]
    fn builds_the_documented_event() {
        let e = server_event(&envelope(NOW), "Lead", UA, NOW).unwrap();
        assert_eq!(e.event_name, "Lead");
        assert_eq!(e.event_time, NOW.unix_timestamp());
        assert_eq!(e.event_id, "c-42");
        assert_eq!(e.action_source, "website");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["user_data"]["em"][0], "a".repeat(64));
        assert!(v["user_data"].get("ph").is_none());
        assert!(v["user_data"].get("client_ip_address").is_none());
        assert_eq!(v["user_data"]["client_user_agent"], "Mozilla/5.0");
    }

    #[test]
    fn user_agent_and_ip_leave_only_when_opted_in() {
        let mut env = envelope(NOW);
        let m = env.ad_match.as_mut().unwrap();
        m.client_ip = Some("203.0.113.7".into());
        m.user_data.insert("fn".into(), "b".repeat(64));
        m.user_data.insert("zp".into(), "c".repeat(64));
        let off = server_event(&env, "Lead", Raw::default(), NOW).unwrap();
        let v = serde_json::to_value(&off).unwrap();
        assert!(v["user_data"].get("client_user_agent").is_none());
        assert!(v["user_data"].get("client_ip_address").is_none());
        assert_eq!(v["user_data"]["fn"][0], "b".repeat(64));
        assert_eq!(v["user_data"]["zp"][0], "c".repeat(64));
        let both = Raw {
            user_agent: true,
            client_ip: true,
        };
        let v = serde_json::to_value(server_event(&env, "Lead", both, NOW).unwrap()).unwrap();
        assert_eq!(v["user_data"]["client_ip_address"], "203.0.113.7");
        assert_eq!(v["user_data"]["client_user_agent"], "Mozilla/5.0");
        // A customer key that is not a digest is refused, never sent.
        env.ad_match
            .as_mut()
            .unwrap()
            .user_data
            .insert("ln".into(), "smith".into());
        assert!(server_event(&env, "Lead", both, NOW).is_err());
    }

    #[test]
    fn event_id_falls_back_without_cid() {
        let mut env = envelope(NOW);
        env.event.client.context = Some(serde_json::json!({"exp": 1}));
        assert_eq!(server_event(&env, "Lead", UA, NOW).unwrap().event_id, "e1");
        env.event.client.context = None;
        assert_eq!(dedupe_id(&env.event), "e1");
    }

    #[test]
    fn refuses_what_meta_would_refuse() {
        let old = server_event(&envelope(NOW - time::Duration::days(7)), "Lead", UA, NOW);
        assert!(old.unwrap_err().contains("7 days"));
        let future = server_event(&envelope(NOW + time::Duration::hours(1)), "Lead", UA, NOW);
        assert!(future.unwrap_err().contains("future"));

        let mut env = envelope(NOW);
        env.ad_match.as_mut().unwrap().client_user_agent = None;
        assert!(
            server_event(&env, "Lead", UA, NOW)
                .unwrap_err()
                .contains("client_user_agent")
        );

        let mut env = envelope(NOW);
        env.ad_match.as_mut().unwrap().em = Some("someone@example.com".into());
        assert!(
            server_event(&env, "Lead", UA, NOW)
                .unwrap_err()
                .contains("SHA-256")
        );

        let mut env = envelope(NOW);
        let m = env.ad_match.as_mut().unwrap();
        m.em = None;
        m.fbc = None;
        assert!(
            server_event(&env, "Lead", UA, NOW)
                .unwrap_err()
                .contains("customer information")
        );

        let mut env = envelope(NOW);
        env.ad_match.as_mut().unwrap().event_source_url = Some("/signup".into());
        assert!(server_event(&env, "Lead", UA, NOW).is_err());

        let mut env = envelope(NOW);
        env.ad_match = None;
        assert!(server_event(&env, "Lead", UA, NOW).is_err());
    }

    #[test]
    fn fbc_format() {
        assert!(is_fbc("fb.1.1764410000000.IwAR2F4-dbP0l7Mn1"));
        assert!(!is_fbc("fb.1..IwAR"));
        assert!(!is_fbc("fb.1.1764410000000."));
        assert!(!is_fbc("IwAR2F4"));
        assert!(!is_fbc("fb.1.17644x.IwAR"));
    }

    #[test]
    fn answers_are_judged() {
        let ok = judge(http::StatusCode::OK, br#"{"events_received":2}"#, 2);
        assert!(ok.is_ok());
        let invalid = br#"{"error":{"message":"Invalid parameter","type":"OAuthException","code":100,"error_subcode":2804003,"error_user_msg":"event_time too old","fbtrace_id":"AbC"}}"#;
        match judge(http::StatusCode::BAD_REQUEST, invalid, 1) {
            Err(SinkError::Rejected { message }) => {
                assert!(message.contains("Invalid parameter"), "{message}");
                assert!(message.contains("event_time too old"), "{message}");
                assert!(message.contains("2804003"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let throttled = br#"{"error":{"message":"Calls to this api have exceeded the rate limit.","code":613}}"#;
        assert!(matches!(
            judge(http::StatusCode::BAD_REQUEST, throttled, 1),
            Err(SinkError::Retryable { .. })
        ));
        let token = br#"{"error":{"message":"Error validating access token","code":190}}"#;
        assert!(matches!(
            judge(http::StatusCode::BAD_REQUEST, token, 1),
            Err(SinkError::Retryable { .. })
        ));
        assert!(matches!(
            judge(http::StatusCode::BAD_REQUEST, b"not json", 1),
            Err(SinkError::Rejected { .. })
        ));
    }

    #[test]
    fn config_is_validated() {
        let toml = r#"
            pixel_id = "12x"
            access_token_env = "NOPE"
            endpoint = "ftp://x"
            api_version = "25"
            events = { signup_submitted = "" }
        "#;
        let cfg: MetaCapiSinkConfig = toml::from_str(toml).unwrap();
        let keys: Vec<String> = cfg
            .validate(&|_| None)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in [
            "pixel_id",
            "access_token_env",
            "endpoint",
            "api_version",
            "events.signup_submitted",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} in {keys:?}");
        }
        let good: MetaCapiSinkConfig = toml::from_str(
            "pixel_id = \"123\"\naccess_token_env = \"T\"\nevents = { signup_submitted = \"Lead\" }\n",
        )
        .unwrap();
        assert!(good.validate(&|_| Some("token".into())).is_empty());
        let none: MetaCapiSinkConfig =
            toml::from_str("pixel_id = \"123\"\naccess_token_env = \"T\"\n").unwrap();
        assert!(
            none.validate(&|_| Some("token".into()))
                .iter()
                .any(|(k, _)| k == "events")
        );
    }

    #[tokio::test]
    async fn form_attempts_are_never_sent() {
        let cfg: MetaCapiSinkConfig = toml::from_str(
            "pixel_id = \"123\"\naccess_token_env = \"T\"\nevents = { signup_submitted = \"Lead\", form_attempt = \"Lead\" }\n",
        )
        .unwrap();
        let sink = MetaCapiSink::new(&cfg, &|_| Some("t".into())).unwrap();
        let mut attempt = envelope(NOW);
        attempt.event.event_name = crate::event::FORM_ATTEMPT.into();
        assert!(!sink.accepts(&attempt));
        assert!(sink.check(&attempt).is_err());
        assert!(sink.accepts(&envelope(NOW)));
    }
}
