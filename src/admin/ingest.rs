//! Offline ingest: back-office events (account created, upgrade,
//! cancellation) on `POST /v1/events`, joined to the same stream.
//!
//! Identifiers are normalized and keyed-hashed exactly like form captures,
//! so the same person gets the same `user_id`/`lead_id` hash from a form
//! and from ingest. `device_id` is taken as the app received it in
//! `x-touch-device` (32 hex): the raw device id never leaves touchgate.

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use time::OffsetDateTime;

use crate::capture::conversion::natural_key;
use crate::capture::identifier;
use crate::config::{AdminConfig, IngestRule, valid_event_name};
use crate::event::{Envelope, Event, Origin, rfc3339_millis};
use crate::identity::{Keys, Purpose};
use crate::metrics::Metrics;
use crate::pipeline::EventQueue;
use crate::pipeline::dedupe::Seen;
use crate::proxy::body::text_response;
use crate::proxy::body::{self, ProxyBody};

/// Longest accepted line, bytes.
const MAX_LINE: usize = 16 * 1024;
/// Most properties per event.
const MAX_PROPERTIES: usize = 50;

pub struct Ingest {
    /// blake3 of the token: compared in constant time, whatever its length.
    token_hash: blake3::Hash,
    keys: Keys,
    rules: Vec<IngestRule>,
    limits: AdminConfig,
    phone_country: phonenumber::country::Id,
    queue: EventQueue,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct LineResult {
    pub line: usize,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

impl Ingest {
    pub fn new(
        token: &str,
        keys: Keys,
        rules: Vec<IngestRule>,
        limits: AdminConfig,
        phone_country: phonenumber::country::Id,
        queue: EventQueue,
        metrics: Arc<Metrics>,
    ) -> Ingest {
        Ingest {
            token_hash: blake3::hash(token.as_bytes()),
            keys,
            rules,
            limits,
            phone_country,
            queue,
            metrics,
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(given) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        // blake3::Hash equality is constant-time.
        blake3::hash(given.trim().as_bytes()) == self.token_hash
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        if !self.authorized(&req) {
            let mut r = text_response(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token\n",
                false,
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let limited = http_body_util::Limited::new(req.into_body(), self.limits.max_ingest_body);
        let bytes = match limited.collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => {
                return text_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body over admin.max_ingest_body, or unreadable\n",
                    false,
                );
            }
        };
        let lines = match split_lines(&bytes) {
            Ok(l) => l,
            Err(msg) => return json_error(StatusCode::BAD_REQUEST, &msg),
        };
        if lines.is_empty() {
            // An empty upload is a broken export, not a quiet day: say so.
            return json_error(
                StatusCode::BAD_REQUEST,
                "no event in the body: send NDJSON (one object per line) or a JSON array of objects",
            );
        }
        if lines.len() > self.limits.max_ingest_lines {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "{} events, over admin.max_ingest_lines = {}",
                    lines.len(),
                    self.limits.max_ingest_lines
                ),
            );
        }
        let now = OffsetDateTime::now_utc();
        let mut results = Vec::with_capacity(lines.len());
        let mut accepted: Vec<(usize, Envelope)> = Vec::new();
        for (i, line) in lines.into_iter().enumerate() {
            match self.build(&line, now) {
                Ok(mut envelope) => {
                    for field in crate::privacy::guard(&mut envelope.event) {
                        self.metrics
                            .pii_redacted_total
                            .get_or_create(&crate::metrics::FieldLabel {
                                field: field.to_string(),
                            })
                            .inc();
                    }
                    results.push(LineResult {
                        line: i + 1,
                        status: "accepted",
                        error: None,
                        event_id: Some(envelope.event.event_id.clone()),
                    });
                    accepted.push((i, envelope));
                }
                Err(error) => results.push(LineResult {
                    line: i + 1,
                    status: "rejected",
                    error: Some(error),
                    event_id: None,
                }),
            }
        }
        if !accepted.is_empty() {
            let (index, events): (Vec<usize>, Vec<Envelope>) = accepted.into_iter().unzip();
            let Some(verdicts) = self.queue.submit_checked(events).await else {
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "pipeline unavailable; retry the whole upload",
                );
            };
            for (i, seen) in index.into_iter().zip(verdicts) {
                if seen == Seen::Duplicate {
                    results[i].status = "duplicate";
                }
            }
        }
        // Nothing usable: the per-line answers, under a status a client that
        // only checks the status cannot take for success.
        let status = if results.iter().all(|r| r.status == "rejected") {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        };
        let body = results
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        let mut r = Response::new(body::full(body));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        r
    }

    /// One input object to an event, or why not.
    pub fn build(&self, line: &str, now: OffsetDateTime) -> Result<Envelope, String> {
        if line.len() > MAX_LINE {
            return Err(format!("line over {MAX_LINE} bytes"));
        }
        let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(obj) = v else {
            return Err("not a JSON object".into());
        };
        for k in obj.keys() {
            if !matches!(
                k.as_str(),
                "event_name" | "occurred_at" | "user_id" | "lead_id" | "device_id" | "properties"
            ) {
                return Err(format!("unknown field {k:?}"));
            }
        }
        let name = obj
            .get("event_name")
            .and_then(Value::as_str)
            .ok_or("event_name (string) is required")?;
        if !valid_event_name(name) {
            return Err(
                "event_name must be 1-40 characters of a-z, 0-9 and _, starting with a letter"
                    .into(),
            );
        }
        let occurred = obj
            .get("occurred_at")
            .and_then(Value::as_str)
            .ok_or("occurred_at (RFC 3339) is required")?;
        let occurred = rfc3339_millis::parse(occurred).map_err(|e| format!("occurred_at: {e}"))?;
        if occurred > now + time::Duration::days(1) {
            return Err("occurred_at is more than a day in the future".into());
        }
        let id = |key: &str| -> Result<Option<String>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => identifier::normalize(s, self.phone_country)
                    .map(|n| Some(self.keys.hex(Purpose::Identifier, &[n.value.as_bytes()])))
                    .ok_or_else(|| format!("{key} is empty or invalid")),
                Some(Value::Number(n)) => Ok(Some(
                    self.keys
                        .hex(Purpose::Identifier, &[n.to_string().as_bytes()]),
                )),
                Some(_) => Err(format!("{key} must be a string or a number")),
            }
        };
        let user_id = id("user_id")?;
        let lead_id = id("lead_id")?;
        let device_id = match obj.get("device_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(s.to_ascii_lowercase())
            }
            Some(_) => return Err("device_id must be the 32-hex x-touch-device value".into()),
        };
        if user_id.is_none() && lead_id.is_none() && device_id.is_none() {
            return Err("one of user_id, lead_id, device_id is required".into());
        }
        let properties = match obj.get("properties") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => {
                if p.len() > MAX_PROPERTIES {
                    return Err(format!("more than {MAX_PROPERTIES} properties"));
                }
                for (k, v) in p {
                    if crate::privacy::is_never_captured(k) {
                        return Err(format!(
                            "property {k:?} looks like a secret or card field; not accepted"
                        ));
                    }
                    if v.is_object() || v.is_array() {
                        return Err(format!(
                            "property {k:?} must be a string, number, boolean or null"
                        ));
                    }
                }
                p.clone()
            }
            Some(_) => return Err("properties must be an object".into()),
        };

        let day = occurred.date().to_string();
        let rule = self.rules.iter().find(|r| r.event == name);
        let nk = rule.and_then(|r| {
            natural_key(&r.natural_key, |part| match part {
                "user_id" => user_id.clone(),
                "lead_id" => lead_id.clone(),
                "device_id" => device_id.clone(),
                "day" => Some(day.clone()),
                p => {
                    let v = properties.get(p.strip_prefix("field:")?)?;
                    let s = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => return None,
                        other => other.to_string(),
                    };
                    Some(self.keys.hex(Purpose::Identifier, &[s.as_bytes()]))
                }
            })
        });
        if rule.is_some_and(|r| !r.natural_key.is_empty()) && nk.is_none() {
            return Err(format!(
                "the natural key of {name} needs {}",
                rule.map(|r| r.natural_key.join(" + ")).unwrap_or_default()
            ));
        }
        let mut e = Event::new(
            String::new(),
            name.to_string(),
            Origin::Ingest,
            occurred,
            now,
        );
        e.user_id = user_id;
        e.lead_id = lead_id;
        e.device_id = device_id;
        e.properties = properties;
        e.event_id = match &nk {
            Some(k) => self
                .keys
                .hex(Purpose::EventId, &[name.as_bytes(), k.as_bytes()]),
            None => {
                // No table: the whole normalized line is the identity, so a
                // retried upload never duplicates. `received_at` is left out.
                let canonical = serde_json::json!({
                    "event_name": e.event_name,
                    "occurred_at": rfc3339_millis::format(e.occurred_at),
                    "user_id": e.user_id,
                    "lead_id": e.lead_id,
                    "device_id": e.device_id,
                    "properties": e.properties,
                });
                self.keys.hex(
                    Purpose::EventId,
                    &[b"ingest", canonical.to_string().as_bytes()],
                )
            }
        };
        e.natural_key = nk;
        Ok(Envelope::new(e))
    }
}

/// NDJSON, or one JSON array of objects.
fn split_lines(bytes: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "body is not UTF-8".to_string())?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<Value> =
            serde_json::from_str(trimmed).map_err(|e| format!("not a JSON array: {e}"))?;
        return Ok(items.into_iter().map(|v| v.to_string()).collect());
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn json_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut r = Response::new(body::full(
        serde_json::json!({ "error": message }).to_string() + "\n",
    ));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
