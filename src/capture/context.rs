//! The client context object: a small JSON object the client snippet
//! attaches to form submits (hidden field [`FIELD`]) and beacons (header
//! [`HEADER`]), base64url-encoded.
//!
//! Known keys, each optional:
//! - `cid`: the client event id (the browser pixel's `event_id`, for
//!   ad-platform dedupe): a string of 1–64 characters from `[A-Za-z0-9_.:-]`.
//! - `exp`: experiment exposures, an object of experiment id → variant, both
//!   1–64 characters from the same set, at most [`MAX_ENTRIES`] entries.
//! - `ux`: page timing metrics, an object of metric name → finite number in
//!   `0..=`[`MAX_METRIC`], at most [`MAX_ENTRIES`] entries. Only the names in
//!   [`UX_METRICS`] are kept; other metric names are dropped.
//!
//! Unknown top-level keys are dropped, not rejected, so that a newer snippet
//! talking to an older proxy still gets its known keys through. A known key
//! with a wrong type or out-of-range value rejects the whole object: it means
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
pub const UX_METRICS: &[&str] = &["ttfb", "fcp", "lcp", "cls", "inp", "fid", "dcl", "load"];

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
        && s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Decodes, validates and re-serializes a context object: the result holds
/// only known keys, each checked.
pub fn decode(encoded: &str) -> Result<Value, ContextError> {
    let encoded = encoded.trim();
    if encoded.len() > MAX_ENCODED {
        return Err(ContextError::TooLong(encoded.len()));
    }
    let bytes = URL_SAFE_NO_PAD_INDIFFERENT
        .decode(encoded)
        .map_err(|_| ContextError::Base64)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| ContextError::Json)?;
    let Value::Object(map) = value else {
        return Err(ContextError::NotAnObject);
    };
    let mut out = Map::new();
    if let Some(cid) = map.get("cid") {
        match cid {
            Value::String(s) if is_id(s) => {
                out.insert("cid".into(), cid.clone());
            }
            _ => return Err(ContextError::Invalid("cid")),
        }
    }
    if let Some(exp) = map.get("exp") {
        let Value::Object(exp) = exp else {
            return Err(ContextError::Invalid("exp"));
        };
        if exp.len() > MAX_ENTRIES {
            return Err(ContextError::Invalid("exp"));
        }
        let mut kept = Map::new();
        for (id, variant) in exp {
            match variant {
                Value::String(v) if is_id(id) && is_id(v) => {
                    kept.insert(id.clone(), variant.clone());
                }
                _ => return Err(ContextError::Invalid("exp")),
            }
        }
        out.insert("exp".into(), Value::Object(kept));
    }
    if let Some(ux) = map.get("ux") {
        let Value::Object(ux) = ux else {
            return Err(ContextError::Invalid("ux"));
        };
        if ux.len() > MAX_ENTRIES {
            return Err(ContextError::Invalid("ux"));
        }
        let mut kept = Map::new();
        for (name, v) in ux {
            let ok = v
                .as_f64()
                .is_some_and(|x| x.is_finite() && (0.0..=MAX_METRIC).contains(&x));
            if !ok {
                return Err(ContextError::Invalid("ux"));
            }
            if UX_METRICS.contains(&name.as_str()) {
                kept.insert(name.clone(), v.clone());
            }
        }
        out.insert("ux".into(), Value::Object(kept));
    }
    Ok(Value::Object(out))
}

/// Encodes a context object the way the snippet does (unpadded base64url of
/// its JSON). For tests, the demo and the audit command.
pub fn encode(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}
