//! Conversions from the form posts the app already receives: the body is
//! buffered (up to `proxy.max_capture_body`) and replayed byte for byte,
//! the fields the rule names are normalized and hashed, and the event is
//! emitted only once the app confirms with a 2xx or 3xx.

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use std::net::IpAddr;

use super::identifier::{self, Kind, Normalized};
use super::visit::Visit;
use super::{Capture, context, form};
use crate::config::{FieldMode, FormRule};
use crate::event::{AdMatch, Envelope};
use crate::identity::Purpose;
use crate::metrics::{ConversionLabels, EventNameLabel, StatusLabels};

/// A conversion waiting for the app's answer.
#[derive(Debug)]
pub struct Pending {
    envelope: Envelope,
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
        let fields = match body {
            FormBody::Complete(data) if data.len() <= self.cfg.proxy.max_capture_body => {
                let content_type = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                Some(parse_fields(rule, content_type, data))
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
        Pending {
            envelope: self.conversion_event(
                rule,
                v,
                parts,
                fields.flatten(),
                context_header,
                ip,
                oversize,
            ),
        }
    }

    /// The app answered: 2xx/3xx emits the conversion, anything else is
    /// counted and dropped.
    pub fn confirm(&self, pending: Pending, status: StatusCode) {
        let mut envelope = pending.envelope;
        let name = envelope.event.event_name.clone();
        if !(status.is_success() || status.is_redirection()) {
            let class = if status.is_client_error() {
                "4xx"
            } else {
                "5xx"
            };
            self.metrics
                .conversions_unconfirmed_total
                .get_or_create(&StatusLabels {
                    event_name: name,
                    class: class.into(),
                })
                .inc();
            return;
        }
        envelope.event.status = Some(status.as_u16());
        let valid = envelope
            .event
            .last_touch
            .as_ref()
            .is_some_and(|t| t.touch.valid);
        self.metrics
            .conversions_total
            .get_or_create(&ConversionLabels {
                event_name: name,
                valid: valid.to_string(),
            })
            .inc();
        self.emit(envelope);
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
            envelope.ad_match =
                Some(self.ad_match(v, parts, lead.as_ref(), user.as_ref(), &envelope));
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
        let of_kind = |k: Kind| [lead, user].into_iter().flatten().find(|n| n.kind == k);
        let fbc = super::consent::cookie_value(&parts.headers, "_fbc")
            .filter(|c| {
                c.len() <= 256 && c.starts_with("fb.") && c.bytes().all(|b| b.is_ascii_graphic())
            })
            .map(str::to_owned)
            .or_else(|| {
                let last = v.last.as_ref()?;
                let fbclid = v.last_fbclid()?;
                let ms = last.touch.at.unix_timestamp() * 1000;
                Some(format!("fb.1.{ms}.{fbclid}"))
            });
        AdMatch {
            em: of_kind(Kind::Email).map(|n| identifier::sha256_hex(&n.value)),
            ph: of_kind(Kind::Phone).map(|n| identifier::sha256_hex(&n.value)),
            external_id: user.or(lead).map(|n| identifier::sha256_hex(&n.value)),
            fbc,
            client_user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|u| u.to_str().ok())
                .map(|u| u.chars().take(512).collect()),
            event_source_url: envelope.event.page.as_ref().map(|p| p.url.clone()),
        }
    }
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
fn parse_fields(rule: &FormRule, content_type: Option<&str>, data: &Bytes) -> Option<form::Fields> {
    match form::parse_wanted(content_type, data, |name| reads_field(rule, name)) {
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
