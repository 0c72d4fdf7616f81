//! The client context object: a small JSON object the client snippet
//! attaches to form submits (hidden field [`FIELD`]) and beacons (header
//! [`HEADER`]), base64url-encoded.
//!
//! Known keys, each optional:
//! - `cid`: the client event id (the browser pixel's `event_id`, for
//!   ad-platform dedupe): a string of 1–64 characters from `[A-Za-z0-9_.:-]`.
//! - `exp`: experiment exposures, an object of experiment id → variant, both
//!   1–64 characters from the same set, at most [`MAX_ENTRIES`] entries.
//! - `ux`: page experience metrics, an object of metric name → finite number
//!   in `0..=`[`MAX_METRIC`], at most [`MAX_ENTRIES`] entries. Only the names
//!   in [`UX_METRICS`] are kept; other metric names are dropped. The snippet
//!   sends `ttfb`, `dcl`, `load`, `fcp`, `lcp` and `inp` in milliseconds,
//!   `cls` unitless, and `scroll`, the deepest point of the page reached, in
//!   percent of its height.
//!
//! Unknown top-level keys are dropped, not rejected, so that a newer snippet
//! talking to an older proxy still gets its known keys through. A known key
//! set to `null` counts as absent. A known key with a wrong type or
//! out-of-range value, or given twice, rejects the whole object: it means
//! the object was not written by the snippet, and the caller drops and
//! counts it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD_INDIFFERENT;
use serde_json::{Map, Value};

/// Hidden form field the snippet adds to form submits.
pub const FIELD: &str = "_tg_ctx";
/// Request header the snippet sends on beacons.
pub const HEADER: &str = "x-touch-context";
/// Largest encoded object accepted, in bytes (padding included).
pub const MAX_ENCODED: usize = 2048;
/// Most entries in `exp` or `ux`.
pub const MAX_ENTRIES: usize = 20;
/// Longest `cid`, experiment id or variant.
pub const MAX_ID: usize = 64;
/// Largest accepted timing value (an hour in milliseconds).
pub const MAX_METRIC: f64 = 3_600_000.0;
/// The `ux` metric names kept.
pub const UX_METRICS: &[&str] = &[
    "ttfb", "fcp", "lcp", "cls", "inp", "fid", "dcl", "load", "scroll",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("context object is {0} bytes encoded, over {MAX_ENCODED}")]
    TooLong(usize),
    #[error("context object is not base64url")]
    Base64,
    #[error("context object is not JSON")]
    Json,
    #[error("context object is not a JSON object")]
    NotAnObject,
    #[error("context key {0:?} is invalid")]
    Invalid(&'static str),
}

impl ContextError {
    /// A short, fixed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ContextError::TooLong(_) => "too_long",
            ContextError::Base64 => "base64",
            ContextError::Json => "json",
            ContextError::NotAnObject => "not_object",
            ContextError::Invalid(_) => "invalid",
        }
    }
}

pub fn is_id(s: &str) -> bool {
    (1..=MAX_ID).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Decodes, validates and re-serializes a context object: the result holds
/// only known keys, each checked.
pub fn decode(encoded: &str) -> Result<Value, ContextError> {
    let encoded = encoded.trim();
    if encoded.len() > MAX_ENCODED {
        return Err(ContextError::TooLong(encoded.len()));
    }
    // Three bytes per four characters, plus a partial group: the decoded
    // object fits on the stack, no Vec per decode.
    let mut buf = [0u8; MAX_ENCODED / 4 * 3 + 3];
    let len = URL_SAFE_NO_PAD_INDIFFERENT
        .decode_slice(encoded, &mut buf)
        .map_err(|_| ContextError::Base64)?;
    let bytes = &buf[..len];
    // Only the known keys are materialized; serde skips the others without
    // building them. A duplicate known key is a JSON error.
    #[derive(serde::Deserialize)]
    struct Known {
        cid: Option<Value>,
        exp: Option<Value>,
        ux: Option<Value>,
    }
    if !bytes.trim_ascii_start().starts_with(b"{") {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Err(ContextError::NotAnObject),
            Err(_) => Err(ContextError::Json),
        };
    }
    let known: Known = serde_json::from_slice(bytes).map_err(|_| ContextError::Json)?;
    let mut out = Map::new();
    if let Some(cid) = known.cid {
        match cid {
            Value::String(ref s) if is_id(s) => {
                out.insert("cid".into(), cid);
            }
            _ => return Err(ContextError::Invalid("cid")),
        }
    }
    if let Some(exp) = known.exp {
        let Value::Object(exp) = exp else {
            return Err(ContextError::Invalid("exp"));
        };
        if exp.len() > MAX_ENTRIES {
            return Err(ContextError::Invalid("exp"));
        }
        for (id, variant) in &exp {
            if !(is_id(id) && variant.as_str().is_some_and(is_id)) {
                return Err(ContextError::Invalid("exp"));
            }
        }
        out.insert("exp".into(), Value::Object(exp));
    }
    if let Some(ux) = known.ux {
        let Value::Object(mut ux) = ux else {
            return Err(ContextError::Invalid("ux"));
        };
        if ux.len() > MAX_ENTRIES {
            return Err(ContextError::Invalid("ux"));
        }
        for v in ux.values() {
            let ok = v
                .as_f64()
                .is_some_and(|x| x.is_finite() && (0.0..=MAX_METRIC).contains(&x));
            if !ok {
                return Err(ContextError::Invalid("ux"));
            }
        }
        ux.retain(|name, _| UX_METRICS.contains(&name.as_str()));
        out.insert("ux".into(), Value::Object(ux));
    }
    Ok(Value::Object(out))
}

/// Encodes a context object the way the snippet does (unpadded base64url of
/// its JSON). For tests, the demo and the audit command.
pub fn encode(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}
