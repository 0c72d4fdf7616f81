//! Typed configuration: defaults, validation, and errors that name the file,
//! the line and the key (`PATH:LINE: key.path: message`).
//!
//! Secrets never live in the file: every secret key ends in `_env` and names
//! an environment variable, read once at start.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::capture::success::{BodyPattern, HeaderRule, Pattern, SuccessRule};
pub use crate::pipeline::spool::{FsyncPolicy, SpoolConfig};
use crate::sink::SinkConfig;

/// The default configuration, shipped as `config/touchgate.toml`.
pub const DEFAULT_TOML: &str = include_str!("../config/touchgate.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub client: ClientConfig,
    #[serde(default)]
    pub touch: TouchConfig,
    #[serde(default)]
    pub consent: ConsentConfig,
    #[serde(default)]
    pub privacy: PrivacyConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub dedupe: DedupeConfig,
    #[serde(default)]
    pub checks: ChecksConfig,
    #[serde(default)]
    pub form: Vec<FormConfig>,
    #[serde(default)]
    pub ingest: Vec<IngestRule>,
    #[serde(default)]
    pub sink: Vec<SinkConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// The public side.
    pub listen: SocketAddr,
    /// The app: `http://host:port`.
    pub upstream: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// CIDRs of proxies in front of touchgate whose `x-forwarded-for` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Largest form body buffered for capture; larger ones stream through.
    pub max_capture_body: usize,
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub upstream_connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub upstream_response_timeout: Duration,
    /// Idle keep-alive on the public side.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Keep below the app's own keep-alive timeout, or the pool reuses
    /// connections the app is closing.
    #[serde(with = "humantime_serde")]
    pub upstream_pool_idle_timeout: Duration,
    /// Idle connections to the app kept for reuse, at most.
    pub upstream_pool_max_idle: usize,
    /// Connections to the app open at once, at most (0: no bound). A
    /// request that finds none free within `upstream_connect_timeout` is
    /// answered 503.
    pub upstream_max_connections: usize,
    /// No longer read: hyper serves every request. Accepted so that a
    /// config written for an older touchgate still starts; `run` logs a
    /// warning that it is ignored.
    #[serde(rename = "http1_direct")]
    pub http1_direct_ignored: Option<bool>,
    /// Largest request head (request line + headers), in bytes; 431 above.
    pub max_header_bytes: usize,
    /// Most header lines in one request; 431 above.
    pub max_headers: usize,
    /// Open public connections at most; further accepts wait.
    pub max_connections: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_header_list_size: u32,
    pub h2_max_pending_accept_reset_streams: usize,
    pub h2_max_local_error_reset_streams: usize,
    /// After SIGTERM: keep accepting this long while endpoints update.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// Then finish in-flight requests within this bound.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            upstream: "http://127.0.0.1:3000".into(),
            tls_cert: None,
            tls_key: None,
            trusted_proxies: Vec::new(),
            max_capture_body: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            upstream_pool_idle_timeout: Duration::from_secs(4),
            upstream_pool_max_idle: 256,
            upstream_max_connections: 1024,
            http1_direct_ignored: None,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_connections: 10_000,
            h2_max_concurrent_streams: 100,
            h2_max_header_list_size: 64 * 1024,
            h2_max_pending_accept_reset_streams: 20,
            h2_max_local_error_reset_streams: 1024,
            drain_delay: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(25),
        }
    }
}

impl ProxyConfig {
    fn validate(&self, out: &mut Problems) {
        match self.upstream.parse::<http::Uri>() {
            Ok(uri)
                if uri.scheme_str() == Some("http")
                    && uri.authority().is_some()
                    && matches!(uri.path(), "" | "/") => {}
            Ok(_) => out.bad(
                "proxy.upstream",
                "must be http://HOST:PORT (plain HTTP to the app beside touchgate, no path)",
            ),
            Err(e) => out.bad("proxy.upstream", format!("not a URI: {e}")),
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => out.bad("proxy.tls_key", "tls_cert is set but tls_key is not"),
            (None, Some(_)) => out.bad("proxy.tls_cert", "tls_key is set but tls_cert is not"),
            (Some(c), Some(k)) => {
                for (key, p) in [("proxy.tls_cert", c), ("proxy.tls_key", k)] {
                    if !p.is_file() {
                        out.bad(key, format!("{} is not a readable file", p.display()));
                    }
                }
            }
            (None, None) => {}
        }
        if self.max_header_bytes < 8192 {
            out.bad("proxy.max_header_bytes", "must be at least 8192");
        }
        if self.max_connections == 0 {
            out.bad("proxy.max_connections", "must be at least 1");
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub ingest_token_env: String,
    pub max_ingest_body: usize,
    pub max_ingest_lines: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9901".parse().expect("static address"),
            ingest_token_env: "TOUCHGATE_INGEST_TOKEN".into(),
            max_ingest_body: 4 * 1024 * 1024,
            max_ingest_lines: 10_000,
        }
    }
}

impl AdminConfig {
    fn validate(&self, proxy: &ProxyConfig, out: &mut Problems) {
        if proxy.listen == self.listen && proxy.listen.port() != 0 {
            out.bad("admin.listen", "must differ from proxy.listen");
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Keyed hashing and cookie signing; required.
    pub secret_env: String,
    /// During a rotation: cookies signed with this secret still verify and
    /// are re-signed with the new one.
    pub previous_secret_env: Option<String>,
    pub cookie_domain: Option<String>,
    /// Mark cookies `Secure` even when touchgate itself serves plain HTTP
    /// (TLS terminated in front of it).
    pub secure_cookies: bool,
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// ISO 3166 country used for phone numbers written without a country code.
    pub phone_country: String,
    /// What to do with identity cookies on a response a shared cache may
    /// store.
    pub cacheable_responses: CacheableResponses,
}

/// `identity.cacheable_responses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheableResponses {
    /// Set the cookies and mark the response `Cache-Control: private`.
    Private,
    /// Leave the response as the app sent it and set no cookies on it.
    Skip,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            secret_env: "TOUCHGATE_SECRET".into(),
            previous_secret_env: None,
            cookie_domain: None,
            secure_cookies: false,
            session_timeout: Duration::from_secs(30 * 60),
            phone_country: "US".into(),
            cacheable_responses: CacheableResponses::Private,
        }
    }
}

impl IdentityConfig {
    fn validate(&self, env: &dyn Fn(&str) -> Option<String>, out: &mut Problems) {
        match env(&self.secret_env) {
            None => out.bad(
                "identity.secret_env",
                format!(
                    "environment variable {} is not set (the secret signs cookies and keys hashes; use 32+ random bytes)",
                    self.secret_env
                ),
            ),
            Some(s) if s.len() < 16 => out.bad(
                "identity.secret_env",
                format!("{} is shorter than 16 bytes", self.secret_env),
            ),
            Some(_) => {}
        }
        if let Some(prev) = &self.previous_secret_env
            && env(prev).is_none()
        {
            out.bad(
                "identity.previous_secret_env",
                format!("environment variable {prev} is not set"),
            );
        }
        if self
            .phone_country
            .to_uppercase()
            .parse::<phonenumber::country::Id>()
            .is_err()
        {
            out.bad(
                "identity.phone_country",
                format!("{:?} is not an ISO 3166 country code", self.phone_country),
            );
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Where touchgate answers itself (`{prefix}/c.js`, `{prefix}/b`).
    pub path_prefix: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            path_prefix: "/_tg".into(),
        }
    }
}

impl ClientConfig {
    fn validate(&self, out: &mut Problems) {
        let prefix = &self.path_prefix;
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
            out.bad(
                "client.path_prefix",
                "must start with / and not end with / (e.g. /_tg)",
            );
        }
    }
}

/// Alias maps applied after normalization, merged over the built-in ones.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TouchConfig {
    pub source_aliases: BTreeMap<String, String>,
    pub medium_aliases: BTreeMap<String, String>,
    /// Channel rules: `"extended"` (default) or `"ga4"`.
    pub channels: crate::touch::RuleSet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentMode {
    /// Consent assumed unless the browser sends `Sec-GPC: 1`.
    Gpc,
    /// Nothing without the consent cookie granting it (opt-in).
    Cookie,
    /// Nothing without an IAB TCF v2.2 string (`euconsent-v2`) granting it.
    Tcf,
    /// Consent handled elsewhere; everything is captured.
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentConfig {
    pub mode: ConsentMode,
    /// The CMP's consent cookie.
    pub cookie: String,
    /// Substrings of the (percent-decoded) cookie value that grant analytics.
    pub analytics_grants: Vec<String>,
    /// Substrings that grant ads (ad-platform sinks).
    pub ads_grants: Vec<String>,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        ConsentConfig {
            mode: ConsentMode::Gpc,
            cookie: "tg_consent".into(),
            analytics_grants: vec!["analytics".into()],
            ads_grants: vec!["ads".into()],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardIp {
    Truncate,
    Drop,
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventIp {
    Truncate,
    Drop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    pub forward_client_ip: ForwardIp,
    pub client_ip: EventIp,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            forward_client_ip: ForwardIp::Truncate,
            client_ip: EventIp::Truncate,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Events waiting between the request path and the spool; when full,
    /// new events are dropped and counted, the request never waits.
    pub capacity: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { capacity: 16_384 }
    }
}

impl QueueConfig {
    fn validate(&self, out: &mut Problems) {
        if self.capacity == 0 {
            out.bad("queue.capacity", "must be at least 1");
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupeConfig {
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Memory bound of the local set.
    pub max_entries: usize,
    /// Shared set across replicas (`SET NX PX`).
    pub redis_url: Option<String>,
    /// The same, from an environment variable (when the URL holds a password).
    pub redis_url_env: Option<String>,
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        DedupeConfig {
            window: Duration::from_secs(24 * 3600),
            max_entries: 1_000_000,
            redis_url: None,
            redis_url_env: None,
            redis_timeout: Duration::from_millis(50),
        }
    }
}

impl DedupeConfig {
    fn validate(&self, env: &dyn Fn(&str) -> Option<String>, out: &mut Problems) {
        if self.redis_url.is_some() && self.redis_url_env.is_some() {
            out.bad(
                "dedupe.redis_url_env",
                "set redis_url or redis_url_env, not both",
            );
        }
        if let Some(u) = self.redis_url(env).as_deref()
            && redis::parse_redis_url(u).is_none()
        {
            out.bad("dedupe.redis_url", "not a redis:// URL");
        }
        if let Some(k) = &self.redis_url_env
            && env(k).is_none()
        {
            out.bad(
                "dedupe.redis_url_env",
                format!("environment variable {k} is not set"),
            );
        }
    }

    /// `redis_url`, or the variable `redis_url_env` names.
    pub fn redis_url(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        self.redis_url
            .clone()
            .or_else(|| self.redis_url_env.as_deref().and_then(env))
    }
}

/// Thresholds of the operational checks (`touchgate report`, alerts).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChecksConfig {
    /// Alert when the daily direct share of landings exceeds this (0..1).
    pub direct_share_max: f64,
    /// Alert when it jumps more than this many percentage points over the
    /// trailing 7-day mean.
    pub direct_jump_pp: f64,
    /// Alert when fewer conversions than this share have a valid source/medium.
    pub valid_share_min: f64,
    /// Alert when client beacons / server events falls below this.
    pub parity_min: f64,
    /// A day whose denominator (landings, conversions, server events) has
    /// fewer events than this is "insufficient data" for that check.
    pub min_events: u64,
    /// How sure a check must be that a share is past its threshold (Wilson
    /// bound) or that a jump is real (two-proportion test): 0.5..1, where
    /// 0.5 compares the bare shares.
    pub confidence: f64,
}

impl Default for ChecksConfig {
    fn default() -> Self {
        ChecksConfig {
            direct_share_max: 0.5,
            direct_jump_pp: 10.0,
            valid_share_min: 0.8,
            parity_min: 0.8,
            min_events: 100,
            confidence: 0.99,
        }
    }
}

impl ChecksConfig {
    fn validate(&self, out: &mut Problems) {
        for (name, v) in [
            ("checks.direct_share_max", self.direct_share_max),
            ("checks.valid_share_min", self.valid_share_min),
            ("checks.parity_min", self.parity_min),
        ] {
            if !(0.0..=1.0).contains(&v) {
                out.bad(name, "must be between 0 and 1");
            }
        }
        if !(0.5..1.0).contains(&self.confidence) {
            out.bad("checks.confidence", "must be at least 0.5 and below 1");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldMode {
    /// Kept as sent (only for non-PII like `plan`); the PII guard still runs.
    Raw,
    /// Keyed-hashed like identifiers.
    Hashed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    pub name: String,
    pub mode: FieldMode,
}

/// What a conversion captures from a form post: which requests, which
/// fields. (What success looks like is [`FormConfig::success`].)
#[derive(Debug, Clone)]
pub struct FormRule {
    /// Exact path, or a prefix ending in `*`.
    pub path: String,
    pub method: String,
    pub event: String,
    /// Form field whose value identifies the lead (e-mail or phone).
    pub lead_id: Option<String>,
    pub user_id: Option<String>,
    /// Parts: `lead_id`, `user_id`, `day`, `field:NAME`.
    pub natural_key: Vec<String>,
    /// Extra fields kept in `properties`.
    pub fields: Vec<FieldRule>,
}

/// One `[[form]]` table: the capture rule and the success rule, whose
/// patterns are compiled here, once, as the config is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "FormTable")]
pub struct FormConfig {
    pub rule: FormRule,
    pub success: SuccessRule,
    /// Emit a `form_attempt` event for every post (`attempt_events`).
    pub attempt_events: bool,
    /// Meta customer-information key (`fn`, `ln`, `ct`, `st`, `zp`,
    /// `country`, `db`, `ge`) → form field name. The values are hashed for
    /// the ad-platform sinks only.
    pub user_data: BTreeMap<String, String>,
}

/// `[[form]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FormTable {
    path: String,
    #[serde(default = "default_form_method")]
    method: String,
    event: String,
    lead_id: Option<String>,
    user_id: Option<String>,
    #[serde(default)]
    natural_key: Vec<String>,
    #[serde(default)]
    fields: Vec<FieldRule>,
    #[serde(default)]
    success_status: Vec<u16>,
    success_location: Option<Pattern>,
    failure_location: Option<Pattern>,
    success_header: Option<HeaderRule>,
    failure_body: Option<BodyPattern>,
    #[serde(default = "yes")]
    attempt_events: bool,
    #[serde(default)]
    user_data: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

impl From<FormTable> for FormConfig {
    fn from(t: FormTable) -> FormConfig {
        FormConfig {
            rule: FormRule {
                path: t.path,
                method: t.method,
                event: t.event,
                lead_id: t.lead_id,
                user_id: t.user_id,
                natural_key: t.natural_key,
                fields: t.fields,
            },
            success: SuccessRule {
                status: t.success_status,
                success_location: t.success_location,
                failure_location: t.failure_location,
                success_header: t.success_header,
                failure_body: t.failure_body,
            },
            attempt_events: t.attempt_events,
            user_data: t.user_data,
        }
    }
}

impl FormConfig {
    /// The checks on `form[i]` itself (its fields are checked by
    /// [`FormRule::validate_fields`]).
    fn validate(&self, i: usize, out: &mut Problems) {
        let f = &self.rule;
        let at = |k: &str| format!("form[{i}].{k}");
        if !f.path.starts_with('/') {
            out.bad(at("path"), "must start with /");
        }
        if f.path[..f.path.len().saturating_sub(1)].contains('*') {
            out.bad(at("path"), "* is allowed only at the end (a prefix)");
        }
        if f.method.parse::<http::Method>().is_err() || f.method != f.method.to_uppercase() {
            out.bad(at("method"), "must be an uppercase HTTP method");
        }
        validate_event_name(&f.event, at("event"), out);
        if let Some(s) = self
            .success
            .status
            .iter()
            .find(|s| !(200..=599).contains(*s))
        {
            out.bad(
                at("success_status"),
                format!("{s} is not a final HTTP status (200-599)"),
            );
        }
        for part in &f.natural_key {
            let ok = match part.as_str() {
                "lead_id" => f.lead_id.is_some(),
                "user_id" => f.user_id.is_some(),
                "day" => true,
                p => is_field_part(p),
            };
            if !ok {
                out.bad(
                    at("natural_key"),
                    format!(
                        "{part:?}: parts are lead_id, user_id (when the form names them), day, field:NAME"
                    ),
                );
            }
        }
    }
}

impl FormConfig {
    /// `user_data` maps Meta's customer-information keys to form fields.
    fn validate_user_data(&self, i: usize, out: &mut Problems) {
        use crate::identity::match_keys::META_KEYS;
        for (key, field) in &self.user_data {
            let at = format!("form[{i}].user_data.{key}");
            if !META_KEYS.contains(&key.as_str()) {
                out.bad(
                    at,
                    format!(
                        "not a customer-information key; the keys are {}",
                        META_KEYS.join(", ")
                    ),
                );
            } else if field.trim().is_empty() {
                out.bad(at, "name the form field that holds it");
            }
        }
    }
}

impl FormRule {
    /// A field the rule names must not be one touchgate never captures.
    fn validate_fields(&self, i: usize, out: &mut Problems) {
        for (j, field) in self.fields.iter().enumerate() {
            if crate::privacy::is_never_captured(&field.name) {
                out.bad(
                    format!("form[{i}].fields[{j}].name"),
                    format!(
                        "{:?} looks like a password, card, token or secret field: such fields are never captured",
                        field.name
                    ),
                );
            }
        }
    }
}

fn default_form_method() -> String {
    "POST".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestRule {
    pub event: String,
    #[serde(default)]
    pub natural_key: Vec<String>,
}

impl IngestRule {
    fn validate(&self, i: usize, out: &mut Problems) {
        validate_event_name(&self.event, format!("ingest[{i}].event"), out);
        for part in &self.natural_key {
            let ok = matches!(part.as_str(), "lead_id" | "user_id" | "device_id" | "day")
                || is_field_part(part);
            if !ok {
                out.bad(
                    format!("ingest[{i}].natural_key"),
                    format!(
                        "{part:?}: parts are lead_id, user_id, device_id, day, field:NAME (a property)"
                    ),
                );
            }
        }
    }
}

/// Sink names key metrics, spool cursors and dead-letter files.
fn validate_sink_names(sinks: &[SinkConfig], out: &mut Problems) {
    let mut names = std::collections::HashSet::new();
    for i in 0..sinks.len() {
        let name = crate::sink::unique_name(sinks, i);
        if !names.insert(name.clone()) {
            out.bad(
                format!("sink[{i}].name"),
                format!(
                    "sink name {name:?} is used twice (names key metrics, spool cursors and dead-letter files)"
                ),
            );
        }
    }
}

/// The event name of a form or ingest rule.
fn validate_event_name(event: &str, key: String, out: &mut Problems) {
    if !valid_event_name(event) {
        out.bad(key, EVENT_NAME_RULE);
    } else if RESERVED_EVENT_NAMES.contains(&event) {
        out.bad(key, format!("{event:?} is touchgate's own event name"));
    }
}

/// `field:NAME` in a natural key.
fn is_field_part(part: &str) -> bool {
    part.strip_prefix("field:").is_some_and(|n| !n.is_empty())
}

/// One problem with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

/// What `validate` and `warnings` collect, in the order found.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Problem>);

impl Problems {
    pub(crate) fn bad(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            line: None,
            key: key.into(),
            message: message.into(),
        });
    }
}

/// Why a config file could not be used: one line per problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", render(.path, .problems))]
    Invalid {
        path: String,
        problems: Vec<Problem>,
    },
}

fn render(path: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| {
            let key = if p.key.is_empty() { "(root)" } else { &p.key };
            format!("{path}:{}: {key}: {}", p.line.unwrap_or(1), p.message)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where `--config` falls back to: `$TOUCHGATE_CONFIG`, then this.
pub const DEFAULT_PATH: &str = "config/touchgate.toml";

impl Config {
    /// Read, parse and validate a file. Environment variables named by
    /// `*_env` keys are checked too, because a missing secret is a problem
    /// an operator wants to hear about before the rollout.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&path.display().to_string(), &text, &|k| {
            std::env::var(k).ok()
        })
    }

    /// Parse and validate TOML text; `env` looks up environment variables.
    pub fn parse(
        path: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            path: path.to_string(),
            problems,
        };
        let doc = toml_edit::Document::parse(text);
        let de = match toml::Deserializer::parse(text) {
            Ok(de) => de,
            Err(e) => return Err(invalid(vec![syntax_problem(text, &e)])),
        };
        let config: Config = match serde_path_to_error::deserialize(de) {
            Ok(c) => c,
            Err(e) => {
                let key = e.path().to_string();
                let key = if key == "." { String::new() } else { key };
                let inner = e.into_inner();
                let line = inner
                    .span()
                    .map(|s| line_of_offset(text, s.start))
                    .or_else(|| doc.as_ref().ok().and_then(|d| line_of_key(d, text, &key)));
                return Err(invalid(vec![Problem {
                    line,
                    key,
                    message: inner.message().trim().to_string(),
                }]));
            }
        };
        let mut config = config;
        // The sidecar injector points touchgate at the app's port this way,
        // so one ConfigMap serves pods whose apps listen on different ports.
        if let Some(upstream) = env("TOUCHGATE_UPSTREAM").filter(|u| !u.is_empty()) {
            config.proxy.upstream = upstream;
        }
        let mut problems = config.validate(env);
        if problems.is_empty() {
            return Ok(config);
        }
        if let Ok(d) = &doc {
            for p in &mut problems {
                p.line = line_of_key(d, text, &p.key);
            }
        }
        Err(invalid(problems))
    }

    /// Semantic checks the types cannot express. Every problem is returned,
    /// not just the first, in the order of the sections.
    pub fn validate(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
        let mut out = Problems::default();
        self.proxy.validate(&mut out);
        self.admin.validate(&self.proxy, &mut out);
        self.identity.validate(env, &mut out);
        self.client.validate(&mut out);
        self.queue.validate(&mut out);
        self.spool.validate(&mut out);
        self.dedupe.validate(env, &mut out);
        self.checks.validate(&mut out);
        for (i, form) in self.form.iter().enumerate() {
            form.validate(i, &mut out);
        }
        for (i, form) in self.form.iter().enumerate() {
            form.validate_user_data(i, &mut out);
            form.rule.validate_fields(i, &mut out);
        }
        validate_sink_names(&self.sink, &mut out);
        for (i, rule) in self.ingest.iter().enumerate() {
            rule.validate(i, &mut out);
        }
        for (i, s) in self.sink.iter().enumerate() {
            for (key, message) in s.validate(env) {
                out.bad(format!("sink[{i}].{key}"), message);
            }
        }
        out.0
    }

    /// Settings that are valid but almost certainly not what was meant:
    /// `check-config` prints them and still exits 0, `run` logs them.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut out = Problems::default();
        let mut warn = |key: String, message: String| out.bad(key, message);
        for (i, form) in self.form.iter().enumerate() {
            let (f, s) = (&form.rule, &form.success);
            let at = |k: &str| format!("form[{i}].{k}");
            if let Some(prefix) = f.path.strip_suffix('*')
                && !prefix.ends_with('/')
                && !prefix.is_empty()
            {
                warn(
                    at("path"),
                    format!(
                        "the prefix rule {:?} also matches {prefix}-anything and {prefix}x: write \"{prefix}/*\" for the paths under it, or \"{prefix}\" for the form itself",
                        f.path
                    ),
                );
            }
            if f.path.contains(['?', '#']) {
                warn(
                    at("path"),
                    "a form path is compared with the request's path, without its query: this form never matches".into(),
                );
            }
            if matches!(f.method.as_str(), "GET" | "HEAD") {
                warn(
                    at("method"),
                    format!(
                        "{} requests are page loads, never read as form posts: this form never matches",
                        f.method
                    ),
                );
            }
            if let Some(j) = self.form[..i].iter().position(|earlier| {
                earlier.rule.method == f.method
                    && match earlier.rule.path.strip_suffix('*') {
                        Some(p) => f.path.trim_end_matches('*').starts_with(p),
                        None => earlier.rule.path == f.path,
                    }
            }) {
                warn(
                    at("path"),
                    format!(
                        "form[{j}] comes first and matches every request this one would: this form never matches"
                    ),
                );
            }
            if let Some(code) = s.status.iter().find(|c| **c >= 400) {
                warn(
                    at("success_status"),
                    format!("{code} is an error answer: such a post would count as a conversion"),
                );
            }
            if s.failure_body.is_some()
                && !s.status.is_empty()
                && !s.status.iter().any(|c| (200..300).contains(c))
            {
                warn(
                    at("failure_body"),
                    "failure_body is searched only in 2xx answers, and success_status allows none: it never applies".into(),
                );
            }
        }
        out.0
    }

    /// [`Config::warnings`] as `PATH:LINE: key: warning: message` lines.
    pub fn warning_lines(&self, path: &str, text: &str) -> Vec<String> {
        let doc = toml_edit::Document::parse(text).ok();
        self.warnings()
            .into_iter()
            .map(|w| {
                let line = doc.as_ref().and_then(|d| line_of_key(d, text, &w.key));
                format!(
                    "{path}:{}: {}: warning: {}",
                    line.unwrap_or(1),
                    w.key,
                    w.message
                )
            })
            .collect()
    }

    pub fn redis_url(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        self.dedupe.redis_url(env)
    }
}

/// Event names touchgate emits itself: a form or ingest rule of that name
/// would be counted as something it is not.
const RESERVED_EVENT_NAMES: [&str; 2] = ["landing", crate::event::FORM_ATTEMPT];

const EVENT_NAME_RULE: &str = "must be 1-40 characters of a-z, 0-9 and _, starting with a letter";

/// Event names end up as metric labels and ad-platform event names, so they
/// are kept to the strictest common form (GA4: 40 chars, letters first).
pub fn valid_event_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn syntax_problem(text: &str, e: &toml::de::Error) -> Problem {
    Problem {
        line: e.span().map(|s| line_of_offset(text, s.start)),
        key: String::new(),
        message: e.message().trim().to_string(),
    }
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line of `a.b[2].c` in the document: the deepest part of the path that
/// exists, so a problem with a missing key points at its table.
fn line_of_key(doc: &toml_edit::Document<&str>, text: &str, key: &str) -> Option<usize> {
    use toml_edit::{Item, Value};
    enum TomlNode<'a> {
        Item(&'a Item),
        Table(&'a toml_edit::Table),
        Value(&'a Value),
    }
    let mut node = TomlNode::Table(doc.as_table());
    let mut span = None;
    for seg in split_path(key) {
        let table = match node {
            TomlNode::Item(Item::Table(t)) | TomlNode::Table(t) => Some(t),
            _ => None,
        };
        let next = match (seg, table, &node) {
            (Seg::Key(k), Some(t), _) => t
                .get_key_value(k)
                .map(|(key, it)| (key.span(), TomlNode::Item(it))),
            (
                Seg::Key(k),
                None,
                TomlNode::Item(Item::Value(Value::InlineTable(t)))
                | TomlNode::Value(Value::InlineTable(t)),
            ) => t
                .get_key_value(k)
                .map(|(key, v)| (key.span(), TomlNode::Item(v))),
            (Seg::Index(i), _, TomlNode::Item(Item::ArrayOfTables(a))) => {
                a.get(i).map(|t| (t.span(), TomlNode::Table(t)))
            }
            (
                Seg::Index(i),
                _,
                TomlNode::Item(Item::Value(Value::Array(a))) | TomlNode::Value(Value::Array(a)),
            ) => a.get(i).map(|v| (v.span(), TomlNode::Value(v))),
            _ => None,
        };
        match next {
            Some((s, n)) => {
                span = s.or(span);
                node = n;
            }
            None => break,
        }
    }
    span.map(|s| line_of_offset(text, s.start))
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(key: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(b) = rest.find('[') {
            out.push(Seg::Key(&rest[..b]));
            rest = &rest[b..];
            while let Some(r) = rest.strip_prefix('[') {
                let Some(end) = r.find(']') else { break };
                if let Ok(i) = r[..end].parse() {
                    out.push(Seg::Index(i));
                }
                rest = &r[end + 1..];
            }
        } else {
            out.push(Seg::Key(rest));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        (k == "TOUCHGATE_SECRET").then(|| "0123456789abcdef0123456789abcdef".to_string())
    }

    #[test]
    fn default_file_is_valid() {
        Config::parse("config/touchgate.toml", DEFAULT_TOML, &env).unwrap();
    }

    #[test]
    fn unknown_key_reported_with_line_and_path() {
        let text = "[proxy]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n";
        let err = Config::parse("c.toml", text, &env).unwrap_err().to_string();
        assert!(err.starts_with("c.toml:3: proxy"), "{err}");
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn semantic_problems_all_reported_with_lines() {
        let text = "[proxy]\nupstream = \"ftp://x\"\n\n[[form]]\npath = \"signup\"\nevent = \"Bad Name\"\n";
        let err = Config::parse("c.toml", text, &env).unwrap_err().to_string();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 3, "{err}");
        assert!(lines[0].starts_with("c.toml:2: proxy.upstream: "), "{err}");
        assert!(lines[1].starts_with("c.toml:5: form[0].path: "), "{err}");
        assert!(lines[2].starts_with("c.toml:6: form[0].event: "), "{err}");
    }

    #[test]
    fn form_user_data_keys_are_metas() {
        let text = "[[form]]\npath = \"/signup\"\nevent = \"signup_submitted\"\nuser_data = { fn = \"first\", email = \"e\", ln = \" \" }\n";
        let err = Config::parse("c.toml", text, &env).unwrap_err().to_string();
        assert!(
            err.contains("form[0].user_data.email: not a customer-information key"),
            "{err}"
        );
        assert!(
            err.contains("form[0].user_data.ln: name the form field"),
            "{err}"
        );
        assert!(!err.contains("user_data.fn"), "{err}");
    }

    #[test]
    fn missing_secret_is_a_problem() {
        let err = Config::parse("c.toml", "", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("identity.secret_env"), "{err}");
    }

    #[test]
    fn syntax_error_has_line() {
        let err = Config::parse("c.toml", "[proxy]\nlisten = \n", &env)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:2: "), "{err}");
    }
}
