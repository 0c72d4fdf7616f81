//! touchgate's own paths on the public side: the client snippet
//! (`{prefix}/c.js`) and client beacons (`POST {prefix}/b`).

use bytes::Bytes;
use http::header;
use http::request::Parts;
use std::io::Write;
use std::net::IpAddr;

use super::Capture;
use crate::event::{Envelope, Event, Origin};
use crate::identity::Purpose;
use crate::metrics::EventNameLabel;

const SNIPPET: &str = include_str!("assets/c.js");
/// A beacon is `{event_name, cid}`: nothing legitimate comes near this.
pub const MAX_BEACON: usize = 1024;

/// The snippet with this deployment's prefix and form rules, plain and
/// gzipped, built once at start.
pub struct Script {
    plain: Bytes,
    gzip: Bytes,
}

impl Script {
    pub fn build(prefix: &str, forms: &[crate::config::FormConfig]) -> Script {
        let rules: Vec<(&str, &str)> = forms
            .iter()
            .map(|f| &f.rule)
            .filter(|f| f.method == "POST")
            .map(|f| (f.path.as_str(), f.event.as_str()))
            .collect();
        // serde_json escapes quotes and `<`-free output is not needed: the
        // values are config-validated paths and event names.
        let forms_json = serde_json::to_string(&rules).unwrap_or_else(|_| "[]".into());
        let text = minify(SNIPPET)
            .replace("__PREFIX__", prefix)
            .replace("__FORMS__", &forms_json);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let gzip = gz
            .write_all(text.as_bytes())
            .and_then(|_| gz.finish())
            .unwrap_or_default();
        Script {
            plain: Bytes::from(text),
            gzip: Bytes::from(gzip),
        }
    }

    pub fn gzipped_len(&self) -> usize {
        self.gzip.len()
    }

    pub fn text(&self) -> &[u8] {
        &self.plain
    }
}

/// Drop comment lines and indentation: the snippet ships as written, small.
fn minify(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut in_comment = false;
    for line in src.lines() {
        let t = line.trim();
        if in_comment {
            in_comment = !t.ends_with("*/");
            continue;
        }
        if t.starts_with("/*") {
            in_comment = !t.ends_with("*/");
            continue;
        }
        out.push_str(t);
        out.push('\n');
    }
    out
}

/// The snippet to answer `GET {prefix}/c.js` with.
pub struct ScriptReply {
    /// Empty for `HEAD`; `len` is the length either way.
    pub body: Bytes,
    pub len: usize,
    pub gzip: bool,
}

/// Why a beacon was refused (answered 400 with this text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeaconError {
    Unreadable,
    Shape,
    UnknownEvent,
    InvalidCid,
}

impl BeaconError {
    /// The answer's text.
    pub fn text(self) -> &'static str {
        match self {
            BeaconError::Unreadable => "beacon body unreadable or over 1 KiB\n",
            BeaconError::Shape => "beacon must be {\"event_name\", \"cid\"}\n",
            BeaconError::UnknownEvent => "unknown event_name\n",
            BeaconError::InvalidCid => "invalid cid\n",
        }
    }
}

impl Capture {
    /// The snippet, gzipped when the client accepts it.
    pub fn script(&self, parts: &Parts) -> ScriptReply {
        let gzip = parts
            .headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|e| e.trim().split(';').next() == Some("gzip"))
            });
        let bytes = if gzip {
            self.script.gzip.clone()
        } else {
            self.script.plain.clone()
        };
        ScriptReply {
            len: bytes.len(),
            body: if parts.method == http::Method::HEAD {
                Bytes::new()
            } else {
                bytes
            },
            gzip,
        }
    }

    /// A beacon `{event_name, cid}` (its whole body, at most
    /// [`MAX_BEACON`] bytes): counted for parity and emitted as an
    /// `origin = "beacon"` event.
    pub fn beacon(
        &self,
        parts: &Parts,
        body: &Bytes,
        tls: bool,
        peer: IpAddr,
        client_ip: IpAddr,
    ) -> Result<(), BeaconError> {
        if body.len() > MAX_BEACON {
            return Err(BeaconError::Unreadable);
        }
        #[derive(serde::Deserialize)]
        struct Beacon {
            event_name: String,
            cid: String,
        }
        let b: Beacon = serde_json::from_slice(body).map_err(|_| BeaconError::Shape)?;
        // Only names this deployment knows: a client must not be able to
        // grow metric label sets at will.
        if !self.cfg.form.iter().any(|f| f.rule.event == b.event_name)
            && !self.cfg.ingest.iter().any(|i| i.event == b.event_name)
        {
            return Err(BeaconError::UnknownEvent);
        }
        if !super::context::is_id(&b.cid) {
            return Err(BeaconError::InvalidCid);
        }
        self.metrics
            .client_beacons_total
            .get_or_create(&EventNameLabel {
                event_name: b.event_name.clone(),
            })
            .inc();
        let visit = self.visit(parts, super::Class::Pass, tls, peer);
        let now = time::OffsetDateTime::now_utc();
        let id = self.keys.hex(
            Purpose::EventId,
            &[b"beacon", b.event_name.as_bytes(), b.cid.as_bytes()],
        );
        let mut e = Event::new(id, b.event_name, Origin::Beacon, now, now);
        if let Some(v) = &visit {
            e.device_id = v.device_hash.clone();
            e.session_id = v.session_hash.clone();
            e.consent = v.consent;
            e.last_touch = v.last.as_ref().map(|s| s.touch.clone());
            e.first_touch = v.first.as_ref().map(|s| s.touch.clone());
        }
        e.client.ip_prefix = match self.cfg.privacy.client_ip {
            crate::config::EventIp::Truncate => Some(crate::identity::ip::prefix_string(client_ip)),
            crate::config::EventIp::Drop => None,
        };
        e.client.context = Some(serde_json::json!({ "cid": b.cid }));
        self.emit(Envelope::new(e));
        Ok(())
    }
}
