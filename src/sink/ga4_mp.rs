//! `ga4_mp` sink: GA4 Measurement Protocol.
//!
//! `POST {base}/mp/collect?measurement_id=…&api_secret=…` (base
//! `https://www.google-analytics.com`, or `endpoint`, e.g. the EU
//! `https://region1.google-analytics.com`), body
//! `{client_id, user_id?, timestamp_micros, consent, events: [{name, params, timestamp_micros}]}`.
//!
//! GA4 answers 2xx to anything, even a payload it then drops, so every limit
//! is enforced here, before sending:
//! - ≤ 25 events per request, all of one `client_id` (a batch is grouped by
//!   client and split), body < 130 kB (a request over it is split in two);
//! - event names ≤ 40 characters, letters, digits and `_`, starting with a
//!   letter, not reserved (`session_start`, …) nor with a reserved prefix
//!   (`ga_`, `google_`, `firebase_`, `gtag.`): mapped names are checked with
//!   the config, own names (`all_events`) by [`Sink::check`];
//! - ≤ 25 params per event, param names as event names (≤ 40 characters),
//!   and property names that GA4 reserves (`session_id`, `gclid`, …) are
//!   refused by `check`; string values longer than 100 characters
//!   (`page_location`: 1,000) are **truncated** on a character boundary,
//!   since a cut campaign name is more useful than a lost conversion;
//! - events older than 72 hours are refused by `check` (GA4 drops them).
//!
//! Identity: `client_id` is a keyed hash of the event's `device_id` under
//! its own purpose key (`Purpose::PlatformClient`): its first 8 hex digits
//! and the next 8, each read as a 32-bit number, joined by a dot, like GA's
//! own `123456789.1700000000`. Stable for a device, it reveals neither the
//! device cookie nor the warehouse's `device_id` (without the secret, the
//! two cannot be joined). Without a device, `user_id` is used the same way;
//! an event with neither is refused. `session_id` is the first 8 hex digits
//! of the same kind of hash of the session, as a number. `user_id` is sent
//! only with `send_user_id = true`.
//!
//! GA4 does not dedupe: a batch retried after a partly failed delivery would
//! count twice, so the sink remembers the `event_id`s it delivered recently
//! (in memory, bounded) and skips them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;
use time::OffsetDateTime;

use super::ad_platform;
use super::http_client::{self, HttpClient, StatusClass};
use super::{DeliveryConfig, Sink, SinkBuildError, SinkError};
use crate::event::{Envelope, Event};
use crate::identity::{Keys, Purpose};

pub const MAX_EVENTS_PER_REQUEST: usize = 25;
pub const MAX_PARAMS_PER_EVENT: usize = 25;
pub const MAX_NAME_CHARS: usize = 40;
pub const MAX_VALUE_CHARS: usize = 100;
pub const MAX_PAGE_LOCATION_CHARS: usize = 1000;
/// "The post body must be smaller than 130 kB."
pub const MAX_BODY_BYTES: usize = 130_000;
/// GA4 accepts events back-dated by at most 72 hours; an hour of margin
/// leaves room for the time an event waits in a batch.
const MAX_AGE: time::Duration = time::Duration::hours(71);
const MAX_FUTURE: time::Duration = time::Duration::minutes(5);
const DEFAULT_BASE: &str = "https://www.google-analytics.com";
/// How many delivered event ids are remembered to skip on a retry.
const RECENT_IDS: usize = 100_000;

/// Event names GA4 reserves for itself (Measurement Protocol reference).
const RESERVED_EVENT_NAMES: [&str; 36] = [
    "ad_activeview",
    "ad_click",
    "ad_exposure",
    "ad_impression",
    "ad_query",
    "ad_reward",
    "adunit_exposure",
    "app_background",
    "app_clear_data",
    "app_exception",
    "app_remove",
    "app_store_refund",
    "app_store_subscription_cancel",
    "app_store_subscription_convert",
    "app_store_subscription_renew",
    "app_update",
    "app_upgrade",
    "dynamic_link_app_open",
    "dynamic_link_app_update",
    "dynamic_link_first_open",
    "error",
    "firebase_campaign",
    "firebase_in_app_message_action",
    "firebase_in_app_message_dismiss",
    "firebase_in_app_message_impression",
    "first_open",
    "first_visit",
    "in_app_purchase",
    "notification_dismiss",
    "notification_foreground",
    "notification_open",
    "notification_receive",
    "os_update",
    "session_start",
    "session_start_with_rollout",
    "user_engagement",
];
/// Parameter names GA4 reserves; touchgate sets `session_id` and
/// `engagement_time_msec` itself, a forwarded property may not.
const RESERVED_PARAM_NAMES: [&str; 4] = [
    "engagement_time_msec",
    "gclid",
    "session_id",
    "session_number",
];
const RESERVED_PREFIXES: [&str; 5] = ["_", "firebase_", "ga_", "google_", "gtag."];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ga4MpSinkConfig {
    pub name: Option<String>,
    pub measurement_id: String,
    pub api_secret_env: String,
    /// Replaces `https://www.google-analytics.com` (EU endpoint, tests).
    pub endpoint: Option<String>,
    /// touchgate event name → GA4 event name (`signup_submitted = "sign_up"`).
    #[serde(default)]
    pub events: BTreeMap<String, String>,
    /// Also forward unmapped events under their own name.
    #[serde(default)]
    pub all_events: bool,
    /// Send the keyed `user_id` as GA4 `user_id` (cross-device reporting).
    #[serde(default)]
    pub send_user_id: bool,
    /// Forward the event's `properties` (scalars only) as event params.
    #[serde(default)]
    pub forward_properties: bool,
    /// `engagement_time_msec` on every event; GA4 needs it non-zero for the
    /// event to show in Realtime and count as engaged.
    #[serde(default = "default_engagement_time_msec")]
    pub engagement_time_msec: u64,
    /// Time allowed for one request, answer included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_engagement_time_msec() -> u64 {
    100
}

fn default_timeout() -> Duration {
    Duration::from_secs(20)
}

impl Ga4MpSinkConfig {
    pub fn validate(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut bad = |k: &str, m: String| problems.push((k.to_string(), m));
        let id_ok = self
            .measurement_id
            .strip_prefix("G-")
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !id_ok {
            bad(
                "measurement_id",
                "a GA4 measurement id looks like \"G-XXXXXXXXXX\"".into(),
            );
        }
        match env(&self.api_secret_env) {
            None => bad(
                "api_secret_env",
                format!(
                    "environment variable {} is not set (a Measurement Protocol API secret of the data stream)",
                    self.api_secret_env
                ),
            ),
            Some(s) if s.trim().is_empty() => bad(
                "api_secret_env",
                format!("environment variable {} is empty", self.api_secret_env),
            ),
            Some(_) => {}
        }
        if let Some(e) = &self.endpoint
            && let Err(m) = ad_platform::base_url(e)
        {
            bad("endpoint", m);
        }
        if self.events.is_empty() && !self.all_events {
            bad(
                "events",
                "no event is forwarded: map events, e.g. events = { signup_submitted = \"sign_up\" }, or set all_events = true".into(),
            );
        }
        for (from, to) in &self.events {
            if let Err(m) = check_event_name(to) {
                bad(&format!("events.{from}"), m);
            }
        }
        if self.timeout.is_zero() {
            bad("timeout", "must be more than zero".into());
        }
        if self.delivery.max_age > Duration::from_secs(72 * 3600) {
            bad(
                "delivery.max_age",
                "GA4 drops events older than 72 hours; set max_age to 72h or less".into(),
            );
        }
        problems
    }
}

/// GA4's rules for an event name.
pub fn check_event_name(name: &str) -> Result<(), String> {
    check_name(name)?;
    if RESERVED_EVENT_NAMES.contains(&name) {
        return Err(format!("\"{name}\" is reserved by GA4"));
    }
    Ok(())
}

/// GA4's rules for a parameter name set from event properties.
pub fn check_param_name(name: &str) -> Result<(), String> {
    check_name(name)?;
    if RESERVED_PARAM_NAMES.contains(&name) {
        return Err(format!("\"{name}\" is reserved by GA4"));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "\"{name}\": a GA4 name is 1 to {MAX_NAME_CHARS} characters"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "\"{name}\": a GA4 name is letters, digits and underscores, starting with a letter"
        ));
    }
    if let Some(p) = RESERVED_PREFIXES.iter().find(|p| name.starts_with(**p)) {
        return Err(format!("\"{name}\": the prefix {p} is reserved by GA4"));
    }
    Ok(())
}

/// GA-style client id from a keyed hash (≥ 16 hex digits): two 32-bit
/// numbers, `"<n1>.<n2>"`.
pub fn client_id(hash: &str) -> Option<String> {
    let a = u32::from_str_radix(hash.get(0..8)?, 16).ok()?;
    let b = u32::from_str_radix(hash.get(8..16)?, 16).ok()?;
    Some(format!("{a}.{b}"))
}

/// Numeric GA4 `session_id` from the keyed session hash.
pub fn session_number(hash: &str) -> Option<u32> {
    u32::from_str_radix(hash.get(0..8)?, 16).ok()
}

/// Cut `s` to at most `max` characters.
pub fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// One event in a Measurement Protocol request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ga4Event {
    pub name: String,
    pub params: Map<String, Value>,
    pub timestamp_micros: i64,
}

/// What decides which request an event goes into.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ga4User {
    pub client_id: String,
    pub user_id: Option<String>,
}

/// How events become GA4 events: the options of the config that shape them.
#[derive(Debug, Clone)]
pub struct EventShaping {
    pub send_user_id: bool,
    pub forward_properties: bool,
    pub engagement_time_msec: u64,
}

/// The keyed hash GA4's `client_id` and `session_id` are read from: a
/// touchgate id (`what`: device or user, or session) under the platform
/// purpose key, so that what Google holds cannot be joined to the
/// warehouse's ids without the secret.
fn platform_hash(keys: &Keys, what: &[u8], id: &str) -> String {
    keys.hex(Purpose::PlatformClient, &[b"ga4", what, id.as_bytes()])
}

/// The GA4 `client_id` touchgate sends for a device (or user) id.
pub fn client_id_for(keys: &Keys, id: &str) -> Option<String> {
    client_id(&platform_hash(keys, b"client", id))
}

/// Build the GA4 event for `event` under `name`, or say why GA4 would drop
/// it. Pure: `keys` and `now` are given.
pub fn ga4_event(
    event: &Event,
    name: &str,
    shape: &EventShaping,
    keys: &Keys,
    now: OffsetDateTime,
) -> Result<(Ga4User, Ga4Event), String> {
    check_event_name(name)?;
    if event.occurred_at < now - MAX_AGE {
        return Err("too old: GA4 drops events older than 72 hours".into());
    }
    if event.occurred_at > now + MAX_FUTURE {
        return Err("occurred in the future".into());
    }
    let client = event
        .device_id
        .as_deref()
        .or(event.user_id.as_deref())
        .and_then(|id| client_id_for(keys, id))
        .ok_or("no device_id or user_id to derive a GA4 client_id from")?;
    let user = Ga4User {
        client_id: client,
        user_id: event.user_id.clone().filter(|_| shape.send_user_id),
    };

    let mut params = Map::new();
    if let Some(s) = event
        .session_id
        .as_deref()
        .and_then(|id| session_number(&platform_hash(keys, b"session", id)))
    {
        params.insert("session_id".into(), Value::from(s));
    }
    params.insert(
        "engagement_time_msec".into(),
        Value::from(shape.engagement_time_msec),
    );
    params.insert(
        "tg_event_id".into(),
        Value::from(truncate_chars(&event.event_id, MAX_VALUE_CHARS)),
    );
    if let Some(page) = &event.page
        && !page.url.is_empty()
    {
        params.insert(
            "page_location".into(),
            Value::from(truncate_chars(&page.url, MAX_PAGE_LOCATION_CHARS)),
        );
    }
    if let Some(t) = event.touch.as_ref().filter(|t| !t.is_direct()) {
        for (k, v) in [
            ("source", &t.source),
            ("medium", &t.medium),
            ("campaign", &t.campaign),
            ("term", &t.term),
            ("content", &t.content),
            ("campaign_id", &t.campaign_id),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                params.insert(k.into(), Value::from(truncate_chars(v, MAX_VALUE_CHARS)));
            }
        }
    }
    if shape.forward_properties {
        for (k, v) in &event.properties {
            check_param_name(k).map_err(|m| format!("property {m}"))?;
            if params.contains_key(k) {
                return Err(format!(
                    "property \"{k}\" collides with a param touchgate sets"
                ));
            }
            let value = match v {
                Value::String(s) => Value::from(truncate_chars(s, MAX_VALUE_CHARS)),
                Value::Number(_) => v.clone(),
                Value::Bool(b) => Value::from(if *b { "true" } else { "false" }),
                // GA4 params are scalars; nested values and nulls stay home.
                Value::Null | Value::Array(_) | Value::Object(_) => continue,
            };
            params.insert(k.clone(), value);
        }
    }
    if params.len() > MAX_PARAMS_PER_EVENT {
        return Err(format!(
            "{} params, GA4 takes at most {MAX_PARAMS_PER_EVENT} per event",
            params.len()
        ));
    }
    let micros = event.occurred_at.unix_timestamp_nanos() / 1000;
    Ok((
        user,
        Ga4Event {
            name: name.to_string(),
            params,
            timestamp_micros: i64::try_from(micros).map_err(|_| "occurred_at out of range")?,
        },
    ))
}

#[derive(Serialize)]
struct Ga4Consent {
    ad_user_data: &'static str,
}

#[derive(Serialize)]
struct CollectRequest<'a> {
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    timestamp_micros: i64,
    /// Only events with ads consent reach this sink.
    consent: Ga4Consent,
    events: &'a [Ga4Event],
}

/// One encoded request and the range of the events it holds.
pub type RequestBody = (Vec<u8>, Range<usize>);

/// Request bodies for one user's events: ≤ 25 events each, and each body
/// under 130 kB (split in halves until it is; a single event cannot exceed
/// it within the per-param limits). Each body comes with the range of
/// `events` it holds.
pub fn request_bodies(user: &Ga4User, events: &[Ga4Event]) -> Result<Vec<RequestBody>, String> {
    let mut out = Vec::new();
    for start in (0..events.len()).step_by(MAX_EVENTS_PER_REQUEST) {
        let end = (start + MAX_EVENTS_PER_REQUEST).min(events.len());
        encode_within_limit(user, events, start..end, &mut out)?;
    }
    Ok(out)
}

fn encode_within_limit(
    user: &Ga4User,
    events: &[Ga4Event],
    range: Range<usize>,
    out: &mut Vec<RequestBody>,
) -> Result<(), String> {
    let part = &events[range.clone()];
    let body = serde_json::to_vec(&CollectRequest {
        client_id: &user.client_id,
        user_id: user.user_id.as_deref(),
        timestamp_micros: part
            .iter()
            .map(|e| e.timestamp_micros)
            .min()
            .unwrap_or_default(),
        consent: Ga4Consent {
            ad_user_data: "GRANTED",
        },
        events: part,
    })
    .map_err(|e| format!("cannot encode the request: {e}"))?;
    if body.len() < MAX_BODY_BYTES {
        out.push((body, range));
        return Ok(());
    }
    if part.len() == 1 {
        return Err(format!(
            "one event encodes to {} bytes, over GA4's 130 kB",
            body.len()
        ));
    }
    let mid = range.start + part.len() / 2;
    encode_within_limit(user, events, range.start..mid, out)?;
    encode_within_limit(user, events, mid..range.end, out)
}

/// Event ids delivered lately, oldest forgotten first.
struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    fn insert(&mut self, id: &str) {
        if self.set.insert(id.to_string()) {
            self.order.push_back(id.to_string());
            if self.order.len() > RECENT_IDS
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

pub struct Ga4MpSink {
    name: String,
    uri: String,
    events: BTreeMap<String, String>,
    all_events: bool,
    shape: EventShaping,
    keys: Keys,
    client: HttpClient,
    delivered: Mutex<RecentIds>,
}

impl std::fmt::Debug for Ga4MpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URI holds the API secret.
        f.debug_struct("Ga4MpSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Ga4MpSink {
    pub fn new(
        cfg: &Ga4MpSinkConfig,
        env: &dyn Fn(&str) -> Option<String>,
        keys: &Keys,
    ) -> Result<Ga4MpSink, SinkBuildError> {
        let (secret, base) = ad_platform::build_parts(
            cfg.validate(env),
            "api_secret_env",
            env(&cfg.api_secret_env),
            cfg.endpoint.as_deref(),
            DEFAULT_BASE,
        )?;
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("measurement_id", &cfg.measurement_id)
            .append_pair("api_secret", &secret)
            .finish();
        Ok(Ga4MpSink {
            name: cfg.name.clone().unwrap_or_else(|| "ga4_mp".into()),
            uri: format!("{base}/mp/collect?{query}"),
            events: cfg.events.clone(),
            all_events: cfg.all_events,
            shape: EventShaping {
                send_user_id: cfg.send_user_id,
                forward_properties: cfg.forward_properties,
                engagement_time_msec: cfg.engagement_time_msec,
            },
            keys: keys.clone(),
            client: HttpClient::new(cfg.timeout)
                .map_err(|e| SinkBuildError::Client(format!("TLS setup: {e}")))?,
            delivered: Mutex::new(RecentIds {
                set: HashSet::new(),
                order: VecDeque::new(),
            }),
        })
    }

    /// Go by `name` in metrics and logs instead of `name`/the type from
    /// the config (e.g. the unique name `sink::unique_name` gives).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Form attempts are touchgate's own bookkeeping: never sent, not
    /// even with `all_events`.
    fn ga4_name<'a>(&'a self, event: &'a Event) -> Option<&'a str> {
        if event.is_attempt() {
            return None;
        }
        match self.events.get(&event.event_name) {
            Some(n) => Some(n),
            None if self.all_events => Some(&event.event_name),
            None => None,
        }
    }

    fn already_delivered(&self, id: &str) -> bool {
        self.delivered
            .lock()
            .map(|d| d.set.contains(id))
            .unwrap_or(false)
    }

    fn remember(&self, ids: &[&str]) {
        if let Ok(mut d) = self.delivered.lock() {
            for id in ids {
                d.insert(id);
            }
        }
    }
}

#[async_trait]
impl Sink for Ga4MpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts(&self, envelope: &Envelope) -> bool {
        envelope.event.consent.ads && self.ga4_name(&envelope.event).is_some()
    }

    fn check(&self, envelope: &Envelope) -> Result<(), String> {
        let name = self
            .ga4_name(&envelope.event)
            .ok_or("event name not mapped in ga4_mp events")?;
        ga4_event(
            &envelope.event,
            name,
            &self.shape,
            &self.keys,
            OffsetDateTime::now_utc(),
        )
        .map(|_| ())
    }

    async fn send(&self, batch: &[Envelope]) -> Result<(), SinkError> {
        let now = OffsetDateTime::now_utc();
        // Group by user, keeping the batch order within each group and the
        // order in which users first appear.
        let mut groups: Vec<(Ga4User, Vec<Ga4Event>, Vec<&str>)> = Vec::new();
        let mut index: HashMap<Ga4User, usize> = HashMap::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for envelope in batch {
            let event = &envelope.event;
            let Some(name) = self.ga4_name(event).filter(|_| event.consent.ads) else {
                continue;
            };
            if !seen.insert(&event.event_id) || self.already_delivered(&event.event_id) {
                continue;
            }
            match ga4_event(event, name, &self.shape, &self.keys, now) {
                Ok((user, e)) => {
                    let i = *index.entry(user.clone()).or_insert_with(|| {
                        groups.push((user, Vec::new(), Vec::new()));
                        groups.len() - 1
                    });
                    groups[i].1.push(e);
                    groups[i].2.push(&event.event_id);
                }
                // `check` passed at queue time; what fails now is age after
                // a long outage. GA4 would drop it silently anyway.
                Err(why) => tracing::warn!(
                    sink = %self.name,
                    event_id = %event.event_id,
                    "ga4_mp: event left out: {why}"
                ),
            }
        }
        for (user, events, ids) in &groups {
            let bodies =
                request_bodies(user, events).map_err(|message| SinkError::Rejected { message })?;
            for (body, range) in bodies {
                let answer = self.client.post_json(&self.uri, body).await?;
                if answer.class() != StatusClass::Delivered {
                    return Err(SinkError::Rejected {
                        message: format!(
                            "GA4 answered HTTP {}: {}",
                            answer.status,
                            http_client::snippet(&answer.body)
                        ),
                    });
                }
                self.remember(&ids[range]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Origin, Page, Touch};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-29 10:00:00 UTC);

    fn keys() -> Keys {
        Keys::derive(b"ga4 test secret")
    }

    fn shape() -> EventShaping {
        EventShaping {
            send_user_id: false,
            forward_properties: true,
            engagement_time_msec: 100,
        }
    }

    fn event() -> Event {
        let mut e = Event::new(
            "e1".into(),
            "signup_submitted".into(),
            Origin::Proxy,
            NOW,
            NOW,
        );
        e.device_id = Some("0000007b6553f100aaaaaaaaaaaaaaaa".into());
        e.session_id = Some("000001c8bbbbbbbbbbbbbbbbbbbbbbbb".into());
        e.user_id = Some("c".repeat(32));
        e.page = Some(Page {
            url: "https://shop.example/signup".into(),
            path: "/signup".into(),
            referrer_host: None,
        });
        e.touch = Some(Touch {
            source: Some("google".into()),
            medium: Some("cpc".into()),
            campaign: Some("x".repeat(150)),
            channel: "Paid Search".into(),
            valid: true,
            ..Touch::default()
        });
        e
    }

    #[test]
    fn names_follow_ga4_rules() {
        assert!(check_event_name("sign_up").is_ok());
        assert!(check_event_name(&"a".repeat(40)).is_ok());
        assert!(check_event_name(&"a".repeat(41)).is_err());
        assert!(check_event_name("1st").is_err());
        assert!(check_event_name("sign-up").is_err());
        assert!(check_event_name("session_start").is_err());
        assert!(check_event_name("ga_thing").is_err());
        assert!(check_event_name("google_x").is_err());
        assert!(check_event_name("firebase_x").is_err());
        assert!(check_param_name("session_id").is_err());
        assert!(check_param_name("plan").is_ok());
    }

    #[test]
    fn ids_are_numeric_and_stable() {
        assert_eq!(
            client_id("0000007b6553f100aaaa").as_deref(),
            Some("123.1700000000")
        );
        assert_eq!(client_id("short"), None);
        assert_eq!(client_id("zzzzzzzzzzzzzzzz"), None);
        assert_eq!(session_number("000001c8bbbb"), Some(456));
    }

    #[test]
    fn builds_params_within_limits() {
        let mut e = event();
        e.properties.insert("plan".into(), Value::from("pro"));
        e.properties.insert("seats".into(), Value::from(3));
        e.properties.insert("trial".into(), Value::from(true));
        e.properties
            .insert("nested".into(), serde_json::json!({"a": 1}));
        let (user, g) = ga4_event(&e, "sign_up", &shape(), &keys(), NOW).unwrap();
        let device = e.device_id.as_deref().unwrap();
        let session = e.session_id.as_deref().unwrap();
        let expected = client_id(&platform_hash(&keys(), b"client", device)).unwrap();
        assert_eq!(user.client_id, expected);
        // Not derivable from the warehouse's device_id.
        assert_ne!(Some(user.client_id.clone()), client_id(device));
        assert_eq!(user.user_id, None);
        assert_eq!(g.name, "sign_up");
        assert_eq!(
            g.params["session_id"],
            session_number(&platform_hash(&keys(), b"session", session)).unwrap()
        );
        assert_ne!(
            Some(g.params["session_id"].as_u64().unwrap() as u32),
            session_number(session)
        );
        // Another secret, another client: only this deployment can link them.
        let (other, _) =
            ga4_event(&e, "sign_up", &shape(), &Keys::derive(b"another"), NOW).unwrap();
        assert_ne!(other.client_id, user.client_id);
        assert_eq!(g.params["engagement_time_msec"], 100);
        assert_eq!(g.params["campaign"].as_str().unwrap().len(), 100);
        assert_eq!(g.params["source"], "google");
        assert_eq!(g.params["trial"], "true");
        assert_eq!(g.params["seats"], 3);
        assert!(g.params.get("nested").is_none());
        assert_eq!(g.timestamp_micros, NOW.unix_timestamp() * 1_000_000);
    }

    #[test]
    fn refuses_what_ga4_would_drop() {
        let mut e = event();
        e.properties.insert("session_id".into(), Value::from("x"));
        assert!(
            ga4_event(&e, "sign_up", &shape(), &keys(), NOW)
                .unwrap_err()
                .contains("reserved")
        );

        let mut e = event();
        for i in 0..30 {
            e.properties.insert(format!("p{i}"), Value::from(i));
        }
        assert!(
            ga4_event(&e, "sign_up", &shape(), &keys(), NOW)
                .unwrap_err()
                .contains("25")
        );

        let mut e = event();
        e.occurred_at = NOW - time::Duration::hours(73);
        assert!(
            ga4_event(&e, "sign_up", &shape(), &keys(), NOW)
                .unwrap_err()
                .contains("72")
        );

        let mut e = event();
        e.device_id = None;
        e.user_id = None;
        assert!(
            ga4_event(&e, "sign_up", &shape(), &keys(), NOW)
                .unwrap_err()
                .contains("client_id")
        );

        assert!(ga4_event(&event(), "user_engagement", &shape(), &keys(), NOW).is_err());
    }

    #[test]
    fn bodies_respect_count_and_size() {
        let (user, g) = ga4_event(&event(), "sign_up", &shape(), &keys(), NOW).unwrap();
        let events = vec![g; 60];
        let bodies = request_bodies(&user, &events).unwrap();
        assert_eq!(bodies.len(), 3);
        let mut total = 0;
        let mut next = 0;
        for (b, range) in &bodies {
            assert_eq!(range.start, next);
            next = range.end;
            let v: Value = serde_json::from_slice(b).unwrap();
            let n = v["events"].as_array().unwrap().len();
            assert!(n <= 25);
            total += n;
            assert!(b.len() < MAX_BODY_BYTES);
        }
        assert_eq!(total, 60);

        // Big events: 25 of them exceed 130 kB and are split.
        let (user, mut g) = ga4_event(&event(), "sign_up", &shape(), &keys(), NOW).unwrap();
        for i in 0..20 {
            g.params
                .insert(format!("p{i}"), Value::from("y".repeat(1000)));
        }
        let bodies = request_bodies(&user, &vec![g; 25]).unwrap();
        assert!(bodies.len() > 1);
        assert!(bodies.iter().all(|(b, _)| b.len() < MAX_BODY_BYTES));
        assert_eq!(bodies.last().unwrap().1.end, 25);
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("abc", 10), "abc");
    }

    #[test]
    fn config_is_validated() {
        let cfg: Ga4MpSinkConfig = toml::from_str(
            "measurement_id = \"UA-1\"\napi_secret_env = \"S\"\nevents = { signup_submitted = \"session_start\" }\n",
        )
        .unwrap();
        let keys: Vec<String> = cfg
            .validate(&|_| None)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in [
            "measurement_id",
            "api_secret_env",
            "events.signup_submitted",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} in {keys:?}");
        }
        let ok: Ga4MpSinkConfig = toml::from_str(
            "measurement_id = \"G-ABC123\"\napi_secret_env = \"S\"\nall_events = true\n",
        )
        .unwrap();
        assert!(ok.validate(&|_| Some("s".into())).is_empty());
    }

    #[tokio::test]
    async fn form_attempts_are_never_sent() {
        let cfg: Ga4MpSinkConfig = toml::from_str(
            "measurement_id = \"G-ABC123\"\napi_secret_env = \"S\"\nall_events = true\nevents = { form_attempt = \"generate_lead\" }\n",
        )
        .unwrap();
        let sink = Ga4MpSink::new(
            &cfg,
            &|_| Some("s".into()),
            &Keys::derive(b"0123456789abcdef"),
        )
        .unwrap();
        let mut e = Event::new(
            "a1".into(),
            crate::event::FORM_ATTEMPT.into(),
            Origin::Proxy,
            NOW,
            NOW,
        );
        assert!(!sink.accepts(&Envelope::new(e.clone())));
        assert!(sink.check(&Envelope::new(e.clone())).is_err());
        e.event_name = "signup_submitted".into();
        assert!(sink.accepts(&Envelope::new(e)));
    }
}
