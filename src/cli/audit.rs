//! `touchgate audit`: the data inventory a security reviewer needs, and a
//! dry run of one raw request through the real pipeline without network.
//!
//! The inventory is derived from the configuration (which sinks, which
//! form fields, which IP policies), not written by hand per deployment, so
//! what it prints is what this config does.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::capture::{Capture, Class};
use crate::config::{Config, EventIp, FieldMode, ForwardIp};
use crate::identity::Keys;
use crate::metrics::Metrics;
use crate::pipeline::{EventQueue, QueueItem};
use crate::proxy::body::ProxyBody;
use crate::proxy::smuggling::{AmbiguousHeads, HeadTracker};
use crate::proxy::upstream::{Upstream, UpstreamError};
use crate::request_path::{ConnMeta, Forward, Shared};
use crate::sink::SinkConfig;

/// How a field leaves the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// As captured (after normalization and the PII guard).
    Raw,
    /// Keyed blake3 under a per-purpose key: joinable inside this
    /// deployment, not reversible without the secret.
    KeyedHash,
    /// Unkeyed SHA-256 of the normalized value, as the ad platforms require.
    Sha256,
    /// IPv4 /24, IPv6 /48.
    Truncated,
    /// Reduced to a coarse category (user agent family and bot flag).
    Reduced,
    /// Never leaves.
    Never,
}

#[derive(Debug, Clone, Serialize)]
pub struct Flow {
    pub destination: String,
    pub field: String,
    pub form: Form,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Retention {
    pub place: String,
    pub bound: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub flows: Vec<Flow>,
    pub retention: Vec<Retention>,
}

fn flow(destination: &str, field: &str, form: Form, note: &str) -> Flow {
    Flow {
        destination: destination.to_string(),
        field: field.to_string(),
        form,
        note: note.to_string(),
    }
}

pub fn inventory(cfg: &Config) -> Inventory {
    let mut flows = Vec::new();
    let up = "upstream";
    let fwd = match cfg.privacy.forward_client_ip {
        ForwardIp::Truncate => (Form::Truncated, "privacy.forward_client_ip = truncate"),
        ForwardIp::Raw => (Form::Raw, "privacy.forward_client_ip = raw"),
        ForwardIp::Drop => (Form::Never, "privacy.forward_client_ip = drop"),
    };
    flows.extend([
        flow(up, "request line, headers, cookies, body", Form::Raw, "the app receives what it would without touchgate, minus hop-by-hop headers and client-sent x-touch-*"),
        flow(up, "x-forwarded-for, forwarded for=", fwd.0, fwd.1),
        flow(up, "x-forwarded-proto, x-forwarded-host, via", Form::Raw, "overwritten, never appended"),
        flow(up, "x-touch-device", Form::KeyedHash, "of the tg_did cookie; only with analytics consent"),
        flow(up, "x-touch-session", Form::KeyedHash, "of the tg_sid cookie; only with analytics consent"),
        flow(up, "x-touch-first, x-touch-last", Form::Raw, "normalized campaign values after the PII guard; RFC 8941 dictionaries"),
        flow(up, "x-touch-id", Form::KeyedHash, "touchpoint id of a landing or conversion"),
        flow(up, "x-touch-context (client header)", Form::Never, "read for capture, removed before forwarding"),
        flow(up, "tg_did, tg_sid, tg_ft, tg_lt cookies", Form::Raw, "forwarded as the browser sent them (the app may read them; ids are random, touches signed)"),
    ]);
    let ip = match cfg.privacy.client_ip {
        EventIp::Truncate => (Form::Truncated, "privacy.client_ip = truncate"),
        EventIp::Drop => (Form::Never, "privacy.client_ip = drop"),
    };
    let lead_fields: Vec<String> = cfg
        .form
        .iter()
        .map(|f| &f.rule)
        .flat_map(|f| {
            f.lead_id
                .iter()
                .chain(f.user_id.iter())
                .map(move |n| format!("{}.{}", f.event, n))
        })
        .collect();
    let event_fields = vec![
        (
            "event_id, touchpoint_id",
            Form::KeyedHash,
            "deterministic ids".to_string(),
        ),
        (
            "device_id, session_id",
            Form::KeyedHash,
            "null without analytics consent".into(),
        ),
        (
            "user_id, lead_id",
            Form::KeyedHash,
            format!(
                "of the normalized identifier (e-mail trimmed+lowercased, phone E.164) from {}",
                if lead_fields.is_empty() {
                    "ingest".into()
                } else {
                    lead_fields.join(", ") + " and ingest"
                }
            ),
        ),
        (
            "natural_key",
            Form::KeyedHash,
            "joined keyed hashes and the UTC day".into(),
        ),
        (
            "page.url",
            Form::Raw,
            "canonical: scheme, host, path, campaign parameters only; PII guard".into(),
        ),
        (
            "page.path, page.referrer_host",
            Form::Raw,
            "referrer reduced to its host; PII guard".into(),
        ),
        (
            "touch, first_touch, last_touch",
            Form::Raw,
            "normalized campaign values; PII guard".into(),
        ),
        ("client.ip_prefix", ip.0, ip.1.into()),
        (
            "client.user_agent",
            Form::Reduced,
            "browser family and a bot flag; the raw user agent never".into(),
        ),
        (
            "client.context",
            Form::Raw,
            "validated keys only: cid, exp, ux; PII guard".into(),
        ),
        (
            "status, capture, consent, origin, timestamps",
            Form::Raw,
            String::new(),
        ),
        (
            "raw e-mail, phone, name, address, password, card, token fields",
            Form::Never,
            "not on any allowlist".into(),
        ),
        (
            "click id values: gclid, gbraid, wbraid, fbclid",
            Form::Never,
            "kept in the signed touch cookies for the ad-platform sinks only; page.url drops them; touch.click_id_type names which one".into(),
        ),
        (
            "form_attempt events: device_id, session_id, touchpoint_id, page, client.user_agent, status, properties.form_event/confirmed/reason/conversion_id",
            Form::Raw,
            "one per post to a configured form, confirmed or not; no lead, no form field, no touch, no IP prefix; never sent to ad-platform sinks".into(),
        ),
    ];
    let mut props = Vec::new();
    for f in cfg.form.iter().map(|f| &f.rule) {
        for field in &f.fields {
            let (form, note) = if crate::privacy::is_never_captured(&field.name) {
                (Form::Never, "password/card/token-like name: refused")
            } else {
                match field.mode {
                    FieldMode::Raw => (Form::Raw, "allowlisted raw; PII guard"),
                    FieldMode::Hashed => (Form::KeyedHash, "allowlisted hashed"),
                }
            };
            props.push((
                format!("properties.{} ({})", field.name, f.event),
                form,
                note.to_string(),
            ));
        }
    }
    props.push((
        "properties (ingest)".into(),
        Form::Raw,
        "as sent by the back office; PII guard; secret-like names refused".into(),
    ));
    for (i, s) in cfg.sink.iter().enumerate() {
        let name = crate::sink::unique_name(&cfg.sink, i);
        let dest = format!("sink {name} ({})", s.kind());
        match s {
            SinkConfig::MetaCapi(c) => {
                let keys: Vec<String> = cfg
                    .form
                    .iter()
                    .flat_map(|f| f.user_data.keys().cloned())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                flows.extend([
                    flow(&dest, "user_data.em, ph, external_id", Form::Sha256, "computed at capture from the normalized value (Meta's rules); only with ads consent and a mapped event name"),
                    flow(&dest, "user_data.fbc", Form::Raw, "the _fbc cookie or fb.1.<ms>.<fbclid> of the last touch (the fbclid click id)"),
                    if c.send_user_agent {
                        flow(&dest, "user_data.client_user_agent", Form::Raw, "send_user_agent = true; ads consent only")
                    } else {
                        flow(&dest, "user_data.client_user_agent", Form::Never, "send_user_agent is off")
                    },
                    if c.send_client_ip {
                        flow(&dest, "user_data.client_ip_address", Form::Raw, "send_client_ip = true: the raw client IP, kept in the spool until delivered; ads consent only")
                    } else {
                        flow(&dest, "user_data.client_ip_address", Form::Never, "send_client_ip is off: no raw IP is kept")
                    },
                    flow(&dest, "event_source_url", Form::Raw, "the canonical page URL"),
                    flow(&dest, "event_id", Form::Raw, "the client cid when present, else event_id"),
                ]);
                if !keys.is_empty() {
                    flows.push(flow(
                        &dest,
                        &format!("user_data.{} (form user_data)", keys.join(", ")),
                        Form::Sha256,
                        "normalized as Meta documents; a value that already is SHA-256 hex passes through",
                    ));
                }
            }
            SinkConfig::GoogleAds(_) => {
                let address = cfg.form.iter().any(|f| {
                    ["fn", "ln", "country", "zp"]
                        .iter()
                        .all(|k| f.user_data.contains_key(*k))
                });
                flows.extend([
                    flow(&dest, "gclid, gbraid, wbraid", Form::Raw, "the Google Ads click id of the last or first touch, at most 90 days old; mapped events with ads consent only (in tcf mode also vendor 755 and purposes 1 and 7)"),
                    flow(&dest, "conversionAction, conversionDateTime, orderId (= event_id)", Form::Raw, "the mapped conversion action and the time of the conversion"),
                    flow(&dest, "conversionValue, currencyCode", Form::Raw, "properties.value and properties.currency, when the event carries them"),
                    flow(&dest, "userIdentifiers.hashedEmail, hashedPhoneNumber", Form::Sha256, "Google's rules: gmail.com/googlemail.com dots removed before @, phone E.164 with +"),
                    flow(&dest, "consent.adUserData, adPersonalization", Form::Raw, "from touchgate's consent (in tcf mode, purposes 1+7 and 3+4)"),
                ]);
                if address {
                    flows.extend([
                        flow(
                            &dest,
                            "userIdentifiers.addressInfo.hashedFirstName, hashedLastName",
                            Form::Sha256,
                            "form user_data fn and ln, lowercased and trimmed",
                        ),
                        flow(
                            &dest,
                            "userIdentifiers.addressInfo.countryCode, postalCode",
                            Form::Raw,
                            "form user_data country and zp, as Google requires them unhashed",
                        ),
                    ]);
                }
            }
            SinkConfig::Ga4Mp(_) => {
                flows.extend([
                    flow(
                        &dest,
                        "client_id, session_id",
                        Form::KeyedHash,
                        "keyed hashes of device_id / session_id under their own purpose key: not joinable to the warehouse's ids without the secret; ads consent only",
                    ),
                    flow(
                        &dest,
                        "events[].name, params (source, medium, campaign, page_location)",
                        Form::Raw,
                        "mapped event names only",
                    ),
                ]);
            }
            _ => {
                for (field, form, note) in event_fields.iter() {
                    flows.push(flow(&dest, field, *form, note));
                }
                for (field, form, note) in &props {
                    flows.push(flow(&dest, field, *form, note));
                }
            }
        }
    }
    let mut retention = vec![
        Retention {
            place: format!("spool ({})", cfg.spool.dir.display()),
            bound: format!(
                "{} or {} bytes, whichever first; segments removed once every sink acknowledged",
                humantime::format_duration(cfg.spool.retention),
                cfg.spool.max_bytes
            ),
        },
        Retention {
            place: "dedupe set (memory)".into(),
            bound: format!(
                "{} or {} ids; event ids only",
                humantime::format_duration(cfg.dedupe.window),
                cfg.dedupe.max_entries
            ),
        },
    ];
    if cfg.redis_url(&|_| None).is_some() || cfg.dedupe.redis_url_env.is_some() {
        retention.push(Retention {
            place: "Redis dedupe keys".into(),
            bound: format!("PX {} ms per event id", cfg.dedupe.window.as_millis()),
        });
    }
    for (i, s) in cfg.sink.iter().enumerate() {
        let name = crate::sink::unique_name(&cfg.sink, i);
        if let SinkConfig::File(f) = s {
            retention.push(Retention {
                place: format!("file sink {name} ({})", f.path.display()),
                bound: match (f.keep_files, f.retention) {
                    (None, None) => {
                        "unbounded: set keep_files or retention, or ship the files elsewhere".into()
                    }
                    (k, r) => format!(
                        "{}{}",
                        k.map(|k| format!("{k} rotated files ")).unwrap_or_default(),
                        r.map(|r| format!("{} ", humantime::format_duration(r)))
                            .unwrap_or_default()
                    ),
                },
            });
        }
        let dl = crate::sink::delivery::dead_letter_path(s.delivery(), &cfg.spool.dir, &name);
        retention.push(Retention {
            place: format!("dead-letter file of {name} ({})", dl.display()),
            bound: "kept until an operator replays or removes it (events a sink rejected)".into(),
        });
    }
    Inventory { flows, retention }
}

pub fn render_text(inv: &Inventory) -> String {
    let mut out = String::from("DATA INVENTORY — every field that can leave touchgate\n\n");
    let w_dest = inv
        .flows
        .iter()
        .map(|f| f.destination.len())
        .max()
        .unwrap_or(0);
    let w_field = inv
        .flows
        .iter()
        .map(|f| f.field.len())
        .max()
        .unwrap_or(0)
        .min(60);
    for f in &inv.flows {
        let form = serde_json::to_value(f.form)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<w_dest$}  {:<w_field$}  {:<10}  {}\n",
            f.destination, f.field, form, f.note
        ));
    }
    out.push_str("\nRETENTION\n\n");
    for r in &inv.retention {
        out.push_str(&format!("{}: {}\n", r.place, r.bound));
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("{0}")]
    Setup(String),
}

#[derive(Debug, Serialize)]
pub struct DryRun {
    pub class: String,
    /// What the client gets back.
    pub response_status: u16,
    /// The response head the client gets (cookies, `Cache-Control`).
    pub response_headers: Vec<(String, String)>,
    /// What the app receives; `null` when touchgate answers itself.
    pub upstream_request: Option<UpstreamRequest>,
    pub events: Vec<serde_json::Value>,
    /// Misconfiguration this request revealed (a form path it nearly
    /// matched, a form without its `lead_id` field), as logged.
    pub diagnostics: Vec<String>,
}

/// The app's answer in a dry run: a status, or a whole raw response.
#[derive(Debug, Clone)]
pub struct AppAnswer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl AppAnswer {
    /// An answer with `status`, no header and no body.
    pub fn status(status: u16) -> Result<AppAnswer, AuditError> {
        let status = StatusCode::from_u16(status).map_err(|e| AuditError::Setup(e.to_string()))?;
        Ok(AppAnswer {
            status,
            headers: http::HeaderMap::new(),
            body: Bytes::new(),
        })
    }

    /// A raw HTTP/1.1 response: status line, headers, blank line, body
    /// (taken as it is: no chunked decoding).
    pub fn parse(raw: &[u8]) -> Result<AppAnswer, AuditError> {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(raw) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return Err(AuditError::Setup(
                    "--response: incomplete head (no blank line)".into(),
                ));
            }
            Err(e) => return Err(AuditError::Setup(format!("--response: {e}"))),
        };
        let mut answer = AppAnswer::status(resp.code.unwrap_or(200))?;
        for h in resp.headers.iter() {
            let name = http::HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|e| AuditError::Setup(format!("--response: {e}")))?;
            let value = http::HeaderValue::from_bytes(h.value)
                .map_err(|e| AuditError::Setup(format!("--response: {e}")))?;
            answer.headers.append(name, value);
        }
        answer.body = Bytes::copy_from_slice(&raw[head_len..]);
        Ok(answer)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UpstreamRequest {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body_bytes: usize,
}

/// The app of a dry run: records the request it would receive and gives
/// the answer it was told to.
struct DryRunApp {
    answer: AppAnswer,
    seen: Mutex<Option<UpstreamRequest>>,
}

impl Forward for DryRunApp {
    async fn forward(
        &self,
        req: http::Request<ProxyBody>,
    ) -> Result<http::Response<ProxyBody>, UpstreamError> {
        let (parts, body) = req.into_parts();
        let body_bytes = body
            .collect()
            .await
            .map_err(|e| UpstreamError::Failed(e.to_string()))?
            .to_bytes()
            .len();
        let seen = UpstreamRequest {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: header_pairs(&parts.headers),
            body_bytes,
        };
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
        let a = &self.answer;
        let mut r = http::Response::new(crate::request_path::body_from(a.body.clone()));
        *r.status_mut() = a.status;
        *r.headers_mut() = a.headers.clone();
        Ok(r)
    }
}

/// Run one raw HTTP/1.1 request through the request path
/// ([`crate::request_path::serve`], the code that serves real traffic)
/// with no network: classification, identity, touch, header rewriting,
/// form capture, the success rule, the PII guard, in front of an app that
/// gives `answer`.
pub fn dry_run(
    cfg: Config,
    raw: &[u8],
    answer: AppAnswer,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<DryRun, AuditError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(AuditError::Malformed(
            "empty input: give one raw HTTP/1.1 request (request line, headers, a blank line, the body)"
                .into(),
        ));
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(AuditError::Malformed(
                "incomplete head (no blank line)".into(),
            ));
        }
        Err(e) => return Err(AuditError::Malformed(e.to_string())),
    };
    // The smuggling guard reads the same bytes it reads on a connection.
    let heads = AmbiguousHeads::new();
    HeadTracker::new(cfg.proxy.max_header_bytes.max(8192), heads.clone()).feed(raw);
    if let Some(why) = heads.ambiguity(0) {
        return Err(AuditError::Malformed(format!(
            "{} (touchgate answers 400)",
            why.text().trim_end()
        )));
    }
    let mut builder = http::Request::builder()
        .method(req.method.unwrap_or("GET"))
        .uri(req.path.unwrap_or("/"));
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let body = Bytes::copy_from_slice(&raw[head_len..]);
    // A body cut short or run on would be audited as some other request.
    if let Some(h) = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        let declared = std::str::from_utf8(h.value)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| AuditError::Malformed("Content-Length is not a number".into()))?;
        if declared != body.len() {
            return Err(AuditError::Malformed(format!(
                "the body is {} bytes but Content-Length says {declared}",
                body.len()
            )));
        }
    }
    let request = builder
        .body(crate::request_path::body_from(body))
        .map_err(|e| AuditError::Malformed(e.to_string()))?;
    if answer.status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(AuditError::Setup(
            "--status 101: a dry run has no connection to upgrade".into(),
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AuditError::Setup(format!("starting the runtime: {e}")))?;
    rt.block_on(async move {
        let cfg = Arc::new(cfg);
        let secret = env(&cfg.identity.secret_env)
            .unwrap_or_else(|| "audit-dry-run-secret-not-for-production".into());
        let metrics = Arc::new(Metrics::new());
        let (queue, mut rx) = EventQueue::new(64, metrics.clone());
        let capture = Capture::new(
            cfg.clone(),
            Keys::derive(secret.as_bytes()),
            None,
            metrics.clone(),
            queue,
        );
        let class = capture.classify(request.method(), request.uri().path(), request.headers());
        let shared = Shared {
            upstream: Upstream::new(&cfg.proxy).map_err(|e| AuditError::Setup(e.to_string()))?,
            cfg,
            capture,
            metrics,
        };
        let app = DryRunApp {
            answer,
            seen: Mutex::new(None),
        };
        let conn = ConnMeta {
            peer: SocketAddr::new([203, 0, 113, 10].into(), 50000),
            tls: false,
            ambiguity: None,
        };
        let resp = crate::request_path::serve(&shared, &conn, &app, request).await;
        let (head, body) = resp.into_parts();
        // Read as the client would: a success rule that reads the body
        // decides as it streams.
        let _ = body.collect().await;
        let diagnostics = shared.capture.diagnostics.notices();
        drop(shared);
        let mut events = Vec::new();
        while let Ok(item) = rx.try_recv() {
            if let QueueItem::Event(e) = item {
                events.push(
                    serde_json::to_value(&e.event).map_err(|e| AuditError::Setup(e.to_string()))?,
                );
            }
        }
        let upstream_request = app.seen.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(DryRun {
            class: match class {
                Class::Pass => "pass-through",
                Class::Navigation => "navigation",
                Class::Form(_) => "form",
                Class::Script => "client script",
                Class::Beacon => "client beacon",
            }
            .into(),
            response_status: head.status.as_u16(),
            response_headers: header_pairs(&head.headers),
            upstream_request,
            events,
            diagnostics,
        })
    })
}

/// Header lines as (name, value) text, for the JSON a dry run prints.
fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}
