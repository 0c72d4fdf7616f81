//! Lead and user identifiers, normalized before they are hashed, so that the
//! same person typed two ways hashes the same (and matches on the ad
//! platforms, which require exactly these normal forms).
//!
//! - E-mail (one `@`, a dotted domain, no whitespace): trimmed and
//!   lowercased, nothing else. No provider-specific rewriting (Gmail dots,
//!   `+tags`): the platforms hash the address as typed, and so do we.
//! - Phone (only digits, spaces and `+-().` , 7–17 digits): parsed with the
//!   configured default country and kept only if valid for its country;
//!   stored as E.164 digits without `+` (Meta's `ph` form: `14155552671`).
//!   A leading `00` is read as `+` when the default country's own
//!   international prefix does not already explain it (`0044…` typed on a
//!   US-default site). Extensions are dropped.
//! - Anything else (numeric user ids, UUIDs, or a phone-shaped value that is
//!   not a valid number): trimmed, kept as typed.

use phonenumber::country;
use sha2::{Digest, Sha256};

/// Longest identifier accepted, in bytes after trimming. Longer values are
/// not identifiers a form or back office would send.
pub const MAX_LEN: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentifierKind {
    Email,
    Phone,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Normalized {
    pub kind: IdentifierKind,
    pub value: String,
}

/// Normalizes an identifier; `None` when it is empty, too long, or holds
/// control characters.
pub fn normalize(raw: &str, phone_country: country::Id) -> Option<Normalized> {
    let s = raw.trim();
    if s.is_empty() || s.len() > MAX_LEN || s.chars().any(char::is_control) {
        return None;
    }
    if is_email(s) {
        // `to_ascii_lowercase` is `to_lowercase` on ASCII, without the
        // Unicode tables.
        let value = if s.is_ascii() {
            s.to_ascii_lowercase()
        } else {
            s.to_lowercase()
        };
        return Some(Normalized {
            kind: IdentifierKind::Email,
            value,
        });
    }
    if looks_like_phone(s)
        && let Some(digits) = e164_digits(s, phone_country)
    {
        return Some(Normalized {
            kind: IdentifierKind::Phone,
            value: digits,
        });
    }
    Some(Normalized {
        kind: IdentifierKind::Other,
        value: s.to_string(),
    })
}

fn is_email(s: &str) -> bool {
    let mut parts = s.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && !s.chars().any(char::is_whitespace)
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| !label.is_empty())
}

fn looks_like_phone(s: &str) -> bool {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    (7..=17).contains(&digits)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'+' | b'-' | b'(' | b')' | b'.'))
}

fn e164_digits(s: &str, default: country::Id) -> Option<String> {
    let valid = |text: &str| {
        phonenumber::parse(Some(default), text)
            .ok()
            .filter(|n| n.is_valid())
    };
    let number = valid(s).or_else(|| {
        let rest = s.trim_start().strip_prefix("00")?;
        valid(&format!("+{rest}"))
    })?;
    let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
    let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
    (!digits.is_empty()).then_some(digits)
}

/// SHA-256 of `s`, lowercase hex: the form the ad platforms take for `em`,
/// `ph` and `external_id` (hash the normalized value, not the raw one).
pub fn sha256_hex(s: &str) -> String {
    // A direct table lookup: `hex::encode` goes through a char iterator
    // that costs more than the hash itself for 32 bytes.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in Sha256::digest(s.as_bytes()) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
