//! Conversions from the form posts the app already receives: the body is
//! buffered (up to `proxy.max_capture_body`) and replayed byte for byte,
//! the fields the rule names are normalized and hashed, and the event is
//! emitted only once the app's answer passes the form's success rule
//! ([`super::success`]). Every post also yields a `form_attempt` event,
//! confirmed or not, so that attempts can be counted against conversions.
//! Only a confirmed conversion is emitted, so only it reaches the dedupe
//! sets: a failed attempt never holds the key its correction needs.

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::identifier::{self, IdentifierKind, Normalized};
use super::success::{self, HeadVerdict, Reason, Verdict};
use super::visit::Visit;
use super::{Capture, context, form};
use crate::config::{Config, FieldMode, FormRule};
use crate::event::{AdMatch, Client, Envelope, Event, FORM_ATTEMPT, GoogleAddress, GoogleMatch};
use crate::identity::Purpose;
use crate::identity::match_keys;
use crate::metrics::{ConversionLabels, EventNameLabel, Metrics, UnconfirmedLabels};
use crate::pipeline::EventQueue;
use crate::sink::SinkConfig;

/// A conversion waiting for the app's answer.
#[derive(Debug)]
pub struct Pending {
    envelope: Envelope,
    /// Index of the form in `[[form]]`.
    form: usize,
    /// The path posted to: the default failure location.
    path: String,
    /// The event id of this post's `form_attempt` event, when the form
    /// emits them.
    attempt_id: Option<String>,
}

/// A response body being read for a `failure_body` rule: fed the body's
/// data as it streams to the client, it decides once it holds
/// `proxy.max_capture_body` bytes or the body ends. Dropped undecided
/// (the client went away, the app reset the stream), the attempt is
/// unconfirmed (`body_incomplete`).
pub struct BodyCheck {
    pending: Option<Pending>,
    status: u16,
    limit: usize,
    prefix: Vec<u8>,
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    queue: EventQueue,
}

impl BodyCheck {
    /// The next data of the body; true once the check has decided.
    pub fn feed(&mut self, data: &[u8]) -> bool {
        if self.pending.is_none() {
            return true;
        }
        let room = self.limit.saturating_sub(self.prefix.len());
        self.prefix.extend_from_slice(&data[..data.len().min(room)]);
        if self.prefix.len() >= self.limit {
            self.finish();
        }
        self.pending.is_none()
    }

    /// The body ended: decide on what was read.
    pub fn finish(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let verdict = match self.cfg.form.get(pending.form) {
            Some(f) => success::decide_body(&f.success, &self.prefix),
            None => Verdict::Confirmed,
        };
        self.prefix = Vec::new();
        settle(
            &self.metrics,
            &self.queue,
            pending,
            Some(self.status),
            verdict,
        );
    }

    /// The body did not arrive whole.
    pub fn abandon(&mut self) {
        if let Some(pending) = self.pending.take() {
            settle(
                &self.metrics,
                &self.queue,
                pending,
                Some(self.status),
                Verdict::Unconfirmed(Reason::BodyIncomplete),
            );
        }
    }
}

impl Drop for BodyCheck {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// What the request path read of a configured form's body.
pub enum FormBody<'a> {
    /// The whole body, within `proxy.max_capture_body`.
    Complete(&'a Bytes),
    /// Larger than the limit: streamed through uncaptured.
    Oversize,
}

impl Capture {
    /// How much of a form's body to read before forwarding it: the
    /// capture limit, or `None` when the declared length is already over
    /// it (the body then streams through uncaptured).
    pub fn form_read_limit(&self, parts: &Parts) -> Option<usize> {
        let limit = self.cfg.proxy.max_capture_body;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        declared.is_none_or(|n| n <= limit as u64).then_some(limit)
    }

    /// The conversion a form post makes, waiting for the app's answer.
    pub fn conversion(
        &self,
        rule: &FormRule,
        v: &Visit,
        parts: &Parts,
        body: FormBody<'_>,
        context_header: Option<&HeaderValue>,
        ip: IpAddr,
    ) -> Pending {
        let index = self.form_index_of(rule);
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let fields = match body {
            FormBody::Complete(data) if data.len() <= self.cfg.proxy.max_capture_body => {
                let user_data = self.cfg.form.get(index).map(|f| &f.user_data);
                let fields = parse_fields(rule, user_data, content_type, data);
                if let (Some(f), Some(lead)) = (&fields, &rule.lead_id)
                    && f.get(lead).is_none()
                    && self.diagnostics.should_tell_missing_lead(index)
                {
                    self.tell_missing_lead(index, rule, content_type, data);
                }
                Some(fields)
            }
            _ => None,
        };
        let oversize = fields.is_none();
        if oversize {
            self.metrics
                .capture_oversize_total
                .get_or_create(&EventNameLabel {
                    event_name: rule.event.clone(),
                })
                .inc();
        }
        let envelope = self.conversion_event(
            rule,
            v,
            parts,
            fields.flatten(),
            context_header,
            ip,
            oversize,
        );
        let attempt_id = self
            .cfg
            .form
            .get(index)
            .is_none_or(|f| f.attempt_events)
            .then(|| {
                self.keys.hex(
                    Purpose::EventId,
                    &[
                        FORM_ATTEMPT.as_bytes(),
                        envelope.event.event_id.as_bytes(),
                        crate::identity::cookie::new_id().as_bytes(),
                    ],
                )
            });
        Pending {
            envelope,
            form: index,
            path: parts.uri.path().to_string(),
            attempt_id,
        }
    }

    /// Where `rule` is in `[[form]]`: `rule` is normally one of the
    /// config's own ([`Capture::form`]); an equal one is looked up else.
    fn form_index_of(&self, rule: &FormRule) -> usize {
        let forms = &self.cfg.form;
        forms
            .iter()
            .position(|f| std::ptr::eq(&f.rule, rule))
            .or_else(|| {
                forms.iter().position(|f| {
                    f.rule.path == rule.path
                        && f.rule.method == rule.method
                        && f.rule.event == rule.event
                })
            })
            .unwrap_or(usize::MAX)
    }

    /// The post has no `lead_id` field: name the fields it has (the names
    /// only) in one warning for this form.
    fn tell_missing_lead(
        &self,
        index: usize,
        rule: &FormRule,
        content_type: Option<&str>,
        data: &Bytes,
    ) {
        let Ok(all) = form::parse(content_type, data) else {
            return;
        };
        let mut names: Vec<&str> = Vec::new();
        for (name, _) in all.iter() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        self.diagnostics.missing_lead(index, rule, &names);
    }

    /// The app answered. Decided on the head, the conversion is emitted
    /// (or counted as unconfirmed) here; when the form's rule reads the
    /// body, the returned [`BodyCheck`] decides as the body streams past.
    /// The form's `success_header` is removed from `headers` either way:
    /// it is for touchgate, not for the client.
    pub fn answer(
        &self,
        pending: Pending,
        status: StatusCode,
        headers: &mut HeaderMap,
    ) -> Option<BodyCheck> {
        // A rule not from this config (a bench's) is judged by the default.
        static DEFAULT: std::sync::LazyLock<success::SuccessRule> =
            std::sync::LazyLock::new(success::SuccessRule::default);
        let rule = self.success_rule(pending.form).unwrap_or(&DEFAULT);
        let verdict = success::decide_head(rule, &pending.path, status.as_u16(), headers);
        if let Some(h) = &rule.success_header {
            headers.remove(&h.name);
        }
        match verdict {
            HeadVerdict::Decided(v) => {
                settle(
                    &self.metrics,
                    &self.queue,
                    pending,
                    Some(status.as_u16()),
                    v,
                );
                None
            }
            HeadVerdict::NeedBody => Some(BodyCheck {
                pending: Some(pending),
                status: status.as_u16(),
                limit: self.cfg.proxy.max_capture_body,
                prefix: Vec::new(),
                cfg: self.cfg.clone(),
                metrics: self.metrics.clone(),
                queue: self.queue.clone(),
            }),
        }
    }

    /// The app answered `status` with no headers and an empty body: the
    /// decision on the status alone.
    pub fn confirm(&self, pending: Pending, status: StatusCode) {
        if let Some(mut check) = self.answer(pending, status, &mut HeaderMap::new()) {
            check.finish();
        }
    }

    /// The app gave no answer; touchgate answered `status` itself.
    pub fn unanswered(&self, pending: Pending, status: StatusCode) {
        settle(
            &self.metrics,
            &self.queue,
            pending,
            Some(status.as_u16()),
            Verdict::Unconfirmed(Reason::UpstreamError),
        );
    }

    /// Whether form `index` reads the response body, so the app is asked
    /// for an unencoded one.
    pub fn reads_response_body(&self, index: usize) -> bool {
        self.success_rule(index).is_some_and(success::reads_body)
    }

    #[allow(clippy::too_many_arguments)]
    fn conversion_event(
        &self,
        rule: &FormRule,
        v: &Visit,
        parts: &Parts,
        fields: Option<form::Fields>,
        context_header: Option<&HeaderValue>,
        ip: IpAddr,
        oversize: bool,
    ) -> Envelope {
        let field = |name: &Option<String>| -> Option<Normalized> {
            let raw = fields.as_ref()?.get(name.as_deref()?)?;
            identifier::normalize(raw, self.phone_country)
        };
        let lead = field(&rule.lead_id);
        let user = field(&rule.user_id);
        let hash = |n: &Normalized| self.keys.hex(Purpose::Identifier, &[n.value.as_bytes()]);
        let lead_hash = lead.as_ref().map(hash);
        let user_hash = user.as_ref().map(hash);

        let day = v.now.date().to_string();
        let natural_key = natural_key(&rule.natural_key, |part| match part {
            "lead_id" => lead_hash.clone(),
            "user_id" => user_hash.clone(),
            "day" => Some(day.clone()),
            p => {
                let name = p.strip_prefix("field:")?;
                let raw = fields.as_ref()?.get(name)?.trim();
                (!raw.is_empty()).then(|| self.keys.hex(Purpose::Identifier, &[raw.as_bytes()]))
            }
        });
        let event_id = match &natural_key {
            Some(k) => self
                .keys
                .hex(Purpose::EventId, &[rule.event.as_bytes(), k.as_bytes()]),
            None => v.touchpoint_id.clone().unwrap_or_else(|| {
                // No touchpoint (cannot happen for a form) — still unique.
                self.keys.hex(
                    Purpose::EventId,
                    &[crate::identity::cookie::new_id().as_bytes()],
                )
            }),
        };

        let mut e = self.base_event(v, event_id, &rule.event, ip, parts);
        e.lead_id = lead_hash;
        e.user_id = user_hash;
        e.natural_key = natural_key;
        if oversize {
            e.capture = Some("oversize".into());
        }
        let encoded_context = context_header
            .and_then(|h| h.to_str().ok())
            .or_else(|| fields.as_ref().and_then(|f| f.get(context::FIELD)));
        if let Some(encoded) = encoded_context {
            match context::decode(encoded) {
                Ok(ctx) => e.client.context = Some(ctx),
                Err(err) => {
                    tracing::debug!(reason = err.reason(), "client context dropped");
                    self.metrics.context_invalid_total.inc();
                }
            }
        }
        // The match keys read the form's `user_data` fields after the
        // properties took theirs; only those fields are kept for it.
        let fields_for_ads: Option<form::Fields> = fields.as_ref().map(|f| {
            let wanted = self
                .cfg
                .form
                .get(self.form_index_of(rule))
                .map(|form| &form.user_data);
            f.iter()
                .filter(|(name, _)| wanted.is_some_and(|u| u.values().any(|w| w == name)))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect::<Vec<_>>()
                .into()
        });
        if let Some(mut fields) = fields {
            for f in &rule.fields {
                if crate::privacy::is_never_captured(&f.name) || e.properties.contains_key(&f.name)
                {
                    continue;
                }
                // Taken, not copied: a free-text field can be most of the body.
                let Some(raw) = fields.take(&f.name) else {
                    continue;
                };
                let value = match f.mode {
                    FieldMode::Raw => trimmed(raw),
                    FieldMode::Hashed => match identifier::normalize(&raw, self.phone_country) {
                        Some(n) => self.keys.hex(Purpose::Identifier, &[n.value.as_bytes()]),
                        None => continue,
                    },
                };
                e.properties.insert(f.name.clone(), value.into());
            }
        }

        let mut envelope = Envelope::new(e);
        if self.ad_sinks && v.consent.ads {
            let mut m = self.ad_match(v, parts, lead.as_ref(), user.as_ref(), &envelope);
            let user_data = self.cfg.form.get(self.form_index_of(rule));
            let raw = |key: &str| -> Option<&str> {
                let field = user_data?.user_data.get(key)?;
                fields_for_ads.as_ref()?.get(field)
            };
            for key in match_keys::META_KEYS {
                if let Some(h) =
                    raw(key).and_then(|r| match_keys::hashed(r, |s| match_keys::meta(key, s)))
                {
                    m.user_data.insert(key.to_string(), h);
                }
            }
            m.google = google_match(lead.as_ref(), user.as_ref(), raw);
            if self.cfg.sink.iter().any(SinkConfig::sends_client_ip) {
                m.client_ip = Some(ip.to_string());
            }
            m.google_click = v.google_click();
            m.tcf = v.tcf;
            envelope.ad_match = Some(m);
        }
        envelope
    }

    /// SHA-256 match keys for the conversion APIs, from the normalized
    /// values; the raw values go no further than this function.
    fn ad_match(
        &self,
        v: &Visit,
        parts: &Parts,
        lead: Option<&Normalized>,
        user: Option<&Normalized>,
        envelope: &Envelope,
    ) -> AdMatch {
        let of_kind = |k: IdentifierKind| [lead, user].into_iter().flatten().find(|n| n.kind == k);
        let fbc = super::consent::cookie_value(&parts.headers, "_fbc")
            .filter(|c| {
                c.len() <= 256 && c.starts_with("fb.") && c.bytes().all(|b| b.is_ascii_graphic())
            })
            .map(str::to_owned)
            .or_else(|| {
                // Meta's own `_fbc` cookie lasts 90 days; an older click is
                // not sent, as for Google.
                let last = v
                    .last
                    .as_ref()
                    .filter(|l| v.now - l.touch.at <= super::visit::CLICK_MAX_AGE)?;
                let fbclid = v.last_fbclid()?;
                let ms = last.touch.at.unix_timestamp() * 1000;
                Some(format!("fb.1.{ms}.{fbclid}"))
            });
        AdMatch {
            em: of_kind(IdentifierKind::Email).map(|n| identifier::sha256_hex(&n.value)),
            ph: of_kind(IdentifierKind::Phone).map(|n| identifier::sha256_hex(&n.value)),
            external_id: user.or(lead).map(|n| identifier::sha256_hex(&n.value)),
            fbc,
            client_user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|u| u.to_str().ok())
                .map(|u| u.chars().take(512).collect()),
            event_source_url: envelope.event.page.as_ref().map(|p| p.url.clone()),
            ..AdMatch::default()
        }
    }
}

/// Google's `userIdentifiers` for enhanced conversions for leads: the
/// e-mail and phone of the lead or user, and the address when the form
/// gives first name, last name, country and postal code, which Google
/// requires together.
fn google_match<'a>(
    lead: Option<&Normalized>,
    user: Option<&Normalized>,
    raw: impl Fn(&str) -> Option<&'a str>,
) -> Option<GoogleMatch> {
    let of_kind = |k: IdentifierKind| [lead, user].into_iter().flatten().find(|n| n.kind == k);
    let address = (|| {
        Some(GoogleAddress {
            hashed_first_name: match_keys::hashed(raw("fn")?, match_keys::google_name)?,
            hashed_last_name: match_keys::hashed(raw("ln")?, match_keys::google_name)?,
            country_code: match_keys::google_country(raw("country")?)?,
            postal_code: match_keys::google_postal(raw("zp")?)?,
        })
    })();
    let g = GoogleMatch {
        email: of_kind(IdentifierKind::Email)
            .map(|n| identifier::sha256_hex(&match_keys::google_email(&n.value))),
        phone: of_kind(IdentifierKind::Phone)
            .map(|n| identifier::sha256_hex(&match_keys::google_phone(&n.value))),
        address,
    };
    (g != GoogleMatch::default()).then_some(g)
}

/// The verdict on one form post: the conversion emitted when confirmed
/// (counted, with its status) or counted as unconfirmed, a debug line
/// either way, and the post's `form_attempt` event.
fn settle(
    metrics: &Metrics,
    queue: &EventQueue,
    pending: Pending,
    status: Option<u16>,
    verdict: Verdict,
) {
    let Pending {
        mut envelope,
        attempt_id,
        ..
    } = pending;
    let name = envelope.event.event_name.clone();
    let attempt = attempt_id.map(|id| attempt_event(&envelope.event, id, status, verdict));
    match verdict {
        Verdict::Confirmed => {
            envelope.event.status = status;
            let valid = envelope
                .event
                .last_touch
                .as_ref()
                .is_some_and(|t| t.touch.valid);
            tracing::debug!(
                form = %name,
                status,
                event_id = %envelope.event.event_id,
                "conversion confirmed"
            );
            metrics
                .conversions_total
                .get_or_create(&ConversionLabels {
                    event_name: name,
                    valid: valid.to_string(),
                })
                .inc();
            super::emit_to(metrics, queue, envelope);
        }
        Verdict::Unconfirmed(reason) => {
            tracing::debug!(
                form = %name,
                status,
                reason = reason.as_str(),
                "conversion not confirmed"
            );
            metrics
                .conversions_unconfirmed_total
                .get_or_create(&UnconfirmedLabels {
                    event_name: name,
                    reason: reason.as_str().into(),
                })
                .inc();
        }
    }
    if let Some(attempt) = attempt {
        super::emit_to(metrics, queue, Envelope::new(attempt));
    }
}

/// One post to a form, confirmed or not: when and where (the device,
/// session, touchpoint and page of the conversion), the app's status and
/// the verdict. No lead, no field, no touch: only what counting attempts
/// needs.
fn attempt_event(conversion: &Event, id: String, status: Option<u16>, verdict: Verdict) -> Event {
    let c = conversion;
    let mut e = Event::new(
        id,
        FORM_ATTEMPT.to_string(),
        c.origin,
        c.occurred_at,
        c.received_at,
    );
    e.device_id = c.device_id.clone();
    e.session_id = c.session_id.clone();
    e.touchpoint_id = c.touchpoint_id.clone();
    e.page = c.page.clone();
    e.consent = c.consent;
    e.client = Client {
        ip_prefix: None,
        context: None,
        user_agent: c.client.user_agent.clone(),
    };
    e.status = status;
    let p = &mut e.properties;
    p.insert("form_event".into(), c.event_name.clone().into());
    p.insert(
        "confirmed".into(),
        matches!(verdict, Verdict::Confirmed).into(),
    );
    match verdict {
        Verdict::Confirmed => {
            p.insert("conversion_id".into(), c.event_id.clone().into());
        }
        Verdict::Unconfirmed(r) => {
            p.insert("reason".into(), r.as_str().into());
        }
    }
    e
}

/// `s` without its leading and trailing whitespace, in its own allocation
/// when there is none to remove.
pub fn trimmed(s: String) -> String {
    match s.trim() {
        t if t.len() == s.len() => s,
        t => t.to_owned(),
    }
}

/// The body's fields that `rule` reads (see [`reads_field`]); the others
/// are not decoded.
fn parse_fields(
    rule: &FormRule,
    user_data: Option<&BTreeMap<String, String>>,
    content_type: Option<&str>,
    data: &Bytes,
) -> Option<form::Fields> {
    let wanted = |name: &str| {
        reads_field(rule, name) || user_data.is_some_and(|u| u.values().any(|f| f == name))
    };
    match form::parse_wanted(content_type, data, wanted) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::debug!(reason = e.reason(), "form body not captured");
            None
        }
    }
}

/// Whether a conversion for `rule` reads the form field `name`: the lead
/// and user identifiers, the natural key's `field:` parts, the `fields`
/// allowlist and the client context ([`context::FIELD`]).
/// [`Capture::conversion_event`] reads no other field.
pub fn reads_field(rule: &FormRule, name: &str) -> bool {
    name == context::FIELD
        || rule.lead_id.as_deref() == Some(name)
        || rule.user_id.as_deref() == Some(name)
        || rule.fields.iter().any(|f| f.name == name)
        || rule
            .natural_key
            .iter()
            .any(|p| p.strip_prefix("field:") == Some(name))
}

/// `lead_id=<hash>|day=2026-11-29`: every part must be present, or there
/// is no natural key (and the event id falls back to the touchpoint).
pub fn natural_key(parts: &[String], value: impl Fn(&str) -> Option<String>) -> Option<String> {
    if parts.is_empty() {
        return None;
    }
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        let v = value(p)?;
        if i > 0 {
            out.push('|');
        }
        out.push_str(p);
        out.push('=');
        out.push_str(&v);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_keeps_untrimmed_text_and_trims_the_rest() {
        assert_eq!(trimmed("pro".into()), "pro");
        assert_eq!(trimmed("  pro plan\n".into()), "pro plan");
        assert_eq!(trimmed(" \t ".into()), "");
    }
}
