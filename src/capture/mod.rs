//! Per-request capture: what kind of request this is, who the visitor is
//! (cookies), where the visit came from (touch), and the events it yields.
//!
//! Everything here runs on the request path, so the pass-through case —
//! not a navigation, not a form, no touchgate cookie — returns before any
//! allocation.

pub mod cache;
pub mod client;
pub mod consent;
pub mod context;
pub mod conversion;
pub mod diagnose;
pub mod form;
pub mod identifier;
pub mod success;
pub mod tcf;
pub mod user_agent;
pub mod visit;

use http::request::Parts;
use http::{HeaderMap, HeaderName, Method, header};
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{Config, FormRule};
use crate::identity::Keys;
use crate::metrics::Metrics;
use crate::pipeline::EventQueue;
use crate::touch::TouchRules;

/// What a request is, decided from its head alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Anything else: proxied untouched (touch headers only if it carries
    /// touchgate's cookies).
    Pass,
    /// A top-level page load: may be a landing.
    Navigation,
    /// A configured conversion form (index into `[[form]]`).
    Form(usize),
    /// `GET {prefix}/c.js`
    Script,
    /// `POST {prefix}/b`
    Beacon,
}

pub struct Capture {
    pub cfg: Arc<Config>,
    pub keys: Keys,
    pub previous_keys: Option<Keys>,
    pub rules: TouchRules,
    pub metrics: Arc<Metrics>,
    pub queue: EventQueue,
    pub phone_country: phonenumber::country::Id,
    /// Whether an ad-platform sink is configured: only then are SHA-256
    /// match keys computed at all.
    pub ad_sinks: bool,
    /// Misconfigured forms, told once each.
    pub diagnostics: diagnose::Diagnostics,
    prefix: String,
    script: client::Script,
    script_path: String,
    beacon_path: String,
}

impl Capture {
    pub fn new(
        cfg: Arc<Config>,
        keys: Keys,
        previous_keys: Option<Keys>,
        metrics: Arc<Metrics>,
        queue: EventQueue,
    ) -> Capture {
        let prefix = cfg.client.path_prefix.trim_end_matches('/');
        let phone_country = cfg
            .identity
            .phone_country
            .to_uppercase()
            .parse()
            .unwrap_or(phonenumber::country::Id::US);
        Capture {
            rules: TouchRules::new(&cfg.touch),
            prefix: format!("{prefix}/"),
            script: client::Script::build(prefix, &cfg.form),
            script_path: format!("{prefix}/c.js"),
            beacon_path: format!("{prefix}/b"),
            ad_sinks: cfg.sink.iter().any(|s| s.is_ad_platform()),
            diagnostics: diagnose::Diagnostics::new(cfg.form.len()),
            cfg,
            keys,
            previous_keys,
            metrics,
            queue,
            phone_country,
        }
    }

    pub fn classify(&self, method: &Method, path: &str, headers: &HeaderMap) -> Class {
        if path.starts_with(&self.prefix) {
            if path == self.script_path && (method == Method::GET || method == Method::HEAD) {
                return Class::Script;
            }
            if path == self.beacon_path && method == Method::POST {
                return Class::Beacon;
            }
        }
        if method != Method::GET {
            if let Some(i) = self.form_index(method, path) {
                self.diagnostics.matched(i);
                return Class::Form(i);
            }
            if !self.cfg.form.is_empty() {
                self.diagnostics
                    .unmatched(&self.cfg.form, method.as_str(), path);
            }
            return Class::Pass;
        }
        if is_navigation(headers) {
            return Class::Navigation;
        }
        Class::Pass
    }

    fn form_index(&self, method: &Method, path: &str) -> Option<usize> {
        self.cfg
            .form
            .iter()
            .position(|f| form_matches(&f.rule, method, path))
    }

    pub fn form(&self, index: usize) -> Option<&FormRule> {
        self.cfg.form.get(index).map(|f| &f.rule)
    }

    /// What success looks like for form `index`.
    pub fn success_rule(&self, index: usize) -> Option<&success::SuccessRule> {
        self.cfg.form.get(index).map(|f| &f.success)
    }

    /// The client's address, per `proxy.trusted_proxies`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.cfg.proxy.trusted_proxies.is_empty() {
            return crate::identity::ip::canonical(peer);
        }
        crate::identity::ip::client_ip(
            peer,
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok()),
            &self.cfg.proxy.trusted_proxies,
        )
    }

    /// "https" when the client reached touchgate (or a trusted proxy in
    /// front of it) over TLS.
    pub fn scheme(&self, tls: bool, peer: IpAddr, headers: &HeaderMap) -> &'static str {
        if tls {
            return "https";
        }
        let trusted = self
            .cfg
            .proxy
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&peer));
        if trusted
            && headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
        {
            "https"
        } else {
            "http"
        }
    }
}

/// Exact path, or a prefix when the rule ends in `*`.
pub fn form_matches(rule: &FormRule, method: &Method, path: &str) -> bool {
    if method.as_str() != rule.method {
        return false;
    }
    match rule.path.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == rule.path,
    }
}

/// A top-level page load: `Sec-Fetch-Dest: document`, or — for clients
/// without Fetch Metadata — an `Accept` that asks for HTML. Scripts,
/// images, fetch and XHR never are.
pub fn is_navigation(headers: &HeaderMap) -> bool {
    // Names built once: a `&str` key is parsed and validated on every lookup.
    static SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");
    static SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
    static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
    if let Some(dest) = headers.get(&SEC_FETCH_DEST) {
        return dest.as_bytes() == b"document";
    }
    if headers.contains_key(&SEC_FETCH_MODE) || headers.contains_key(&SEC_FETCH_SITE) {
        return false;
    }
    headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| contains_ignore_case(v.as_bytes(), b"text/html"))
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Host of the request as the client addressed it (h1 `Host`, h2 `:authority`).
pub fn request_host(parts: &Parts) -> Option<&str> {
    parts.uri.authority().map(|a| a.as_str()).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

impl Capture {
    /// Last line of defence, then the queue: the PII guard scans every
    /// string of the event and redacts what looks like PII.
    pub fn emit(&self, envelope: crate::event::Envelope) {
        emit_to(&self.metrics, &self.queue, envelope);
    }
}

/// [`Capture::emit`], for what decides after the request path returned
/// (a response body being read for a conversion).
fn emit_to(metrics: &Metrics, queue: &EventQueue, mut envelope: crate::event::Envelope) {
    for field in crate::privacy::guard(&mut envelope.event) {
        metrics
            .pii_redacted_total
            .get_or_create(&crate::metrics::FieldLabel {
                field: field.to_string(),
            })
            .inc();
    }
    queue.emit(envelope);
}
