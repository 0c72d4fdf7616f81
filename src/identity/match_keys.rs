//! Customer-information match keys, normalized the way each ad platform
//! documents and hashed with SHA-256. The two platforms differ, so each has
//! its own rules:
//!
//! - Meta (Conversions API, "Customer information parameters"): `em`
//!   trimmed and lowercased; `ph` digits with country code, no `+`; `fn`,
//!   `ln` lowercase letters only; `ct` lowercase letters, no spaces or
//!   punctuation; `st` lowercase, letters only; `zp` lowercase without
//!   spaces or dashes (US: the first five digits); `country` lowercase ISO
//!   3166-1 alpha-2; `db` `YYYYMMDD`; `ge` `f` or `m`.
//! - Google Ads (enhanced conversions for leads): e-mail trimmed and
//!   lowercased, with the dots before `@` removed in gmail.com and
//!   googlemail.com addresses; phone in E.164 with its `+`; first and last
//!   name lowercased, spaces trimmed and collapsed; country code (upper
//!   case ISO 3166-1 alpha-2) and postal code are sent unhashed.
//!
//! A value that already is a SHA-256 hex digest passes through, as both
//! platforms accept hashes made elsewhere.

use crate::capture::identifier::sha256_hex;

/// A SHA-256 hex digest (64 hex digits, either case).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The digest of `raw` normalized by `normalize`, or `raw` itself (lower
/// case) when it already is a digest. `None` when nothing is left.
pub fn hashed(raw: &str, normalize: impl Fn(&str) -> Option<String>) -> Option<String> {
    let t = raw.trim();
    if is_sha256_hex(t) {
        return Some(t.to_ascii_lowercase());
    }
    normalize(t).map(|n| sha256_hex(&n))
}

/// Meta's customer-information keys that come from a form's `user_data`.
pub const META_KEYS: [&str; 8] = ["fn", "ln", "ct", "st", "zp", "country", "db", "ge"];

/// Meta's normal form of `raw` for `key` (one of [`META_KEYS`]).
pub fn meta(key: &str, raw: &str) -> Option<String> {
    let lower = raw.trim().to_lowercase();
    let letters = |s: &str| -> String { s.chars().filter(|c| c.is_alphabetic()).collect() };
    let v = match key {
        "fn" | "ln" | "ct" | "st" => letters(&lower),
        "zp" => {
            let z: String = lower
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '-')
                .collect();
            // A US ZIP+4 is matched on its first five digits.
            if z.len() == 9 && z.bytes().all(|b| b.is_ascii_digit()) {
                z[..5].to_string()
            } else {
                z
            }
        }
        "country" => {
            let c = letters(&lower);
            if c.len() != 2 || !c.is_ascii() {
                return None;
            }
            c
        }
        "db" => birthdate(&lower)?,
        "ge" => match lower.chars().next()? {
            'f' | 'w' => "f".into(),
            'm' => "m".into(),
            _ => return None,
        },
        _ => return None,
    };
    (!v.is_empty()).then_some(v)
}

/// `YYYYMMDD` from `YYYY-MM-DD`, `YYYY/MM/DD`, `YYYY.MM.DD` or `YYYYMMDD`,
/// checked to be a real date.
fn birthdate(s: &str) -> Option<String> {
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    let separators_ok = s
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '-' | '/' | '.'));
    if digits.len() != 8 || !separators_ok || !s.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let (y, m, d) = (
        digits[..4].parse::<i32>().ok()?,
        digits[4..6].parse::<u8>().ok()?,
        digits[6..].parse::<u8>().ok()?,
    );
    // The first group must be the year: 4 digits before any separator.
    if s.find(|c: char| !c.is_ascii_digit())
        .is_some_and(|i| i != 4)
    {
        return None;
    }
    time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()?;
    Some(digits)
}

/// Google's normal form of an e-mail that is already trimmed and
/// lowercased (`capture::identifier`).
pub fn google_email(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) if matches!(domain, "gmail.com" | "googlemail.com") => {
            format!("{}@{domain}", local.replace('.', ""))
        }
        _ => email.to_string(),
    }
}

/// Google's normal form of a phone given as E.164 digits without `+`.
pub fn google_phone(e164_digits: &str) -> String {
    format!("+{e164_digits}")
}

/// Google's normal form of a first or last name.
pub fn google_name(raw: &str) -> Option<String> {
    let v = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    let v = v.to_lowercase();
    (!v.is_empty()).then_some(v)
}

/// Google's country code: ISO 3166-1 alpha-2, upper case.
pub fn google_country(raw: &str) -> Option<String> {
    let c = raw.trim();
    (c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic())).then(|| c.to_ascii_uppercase())
}

/// Google's postal code: trimmed, at most 20 printable characters.
pub fn google_postal(raw: &str) -> Option<String> {
    let p = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    (!p.is_empty() && p.len() <= 20 && !p.chars().any(char::is_control)).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_rules() {
        for (key, raw, want) in [
            ("fn", "  Mary-Ann ", Some("maryann")),
            ("fn", "Zoë", Some("zoë")),
            ("ln", "O'Brien Smith", Some("obriensmith")),
            ("ln", "123", None),
            ("ct", "Menlo Park", Some("menlopark")),
            ("ct", "Saint-Étienne", Some("saintétienne")),
            ("st", "CA", Some("ca")),
            ("st", "Île-de-France", Some("îledefrance")),
            ("zp", "94025-1234", Some("94025")),
            ("zp", "SW1A 1AA", Some("sw1a1aa")),
            ("zp", " 75001 ", Some("75001")),
            ("country", "US", Some("us")),
            ("country", "usa", None),
            ("db", "1990-02-17", Some("19900217")),
            ("db", "19900217", Some("19900217")),
            ("db", "1990/2/17", None),
            ("db", "17/02/1990", None),
            ("db", "1990-02-30", None),
            ("ge", "Female", Some("f")),
            ("ge", "m", Some("m")),
            ("ge", "x", None),
            ("em", "a@b.c", None),
        ] {
            assert_eq!(meta(key, raw).as_deref(), want, "{key} {raw:?}");
        }
    }

    #[test]
    fn google_rules() {
        for (raw, want) in [
            ("john.doe@gmail.com", "johndoe@gmail.com"),
            ("j.o.h.n@googlemail.com", "john@googlemail.com"),
            ("john.doe+ads@gmail.com", "johndoe+ads@gmail.com"),
            ("john.doe@example.com", "john.doe@example.com"),
            ("john.doe@gmail.com.example", "john.doe@gmail.com.example"),
        ] {
            assert_eq!(google_email(raw), want, "{raw}");
        }
        assert_eq!(google_phone("14155552671"), "+14155552671");
        assert_eq!(google_name("  Mary   Ann ").as_deref(), Some("mary ann"));
        assert_eq!(google_name("   "), None);
        assert_eq!(google_country(" de ").as_deref(), Some("DE"));
        assert_eq!(google_country("DEU"), None);
        assert_eq!(google_postal(" 94025 ").as_deref(), Some("94025"));
        assert_eq!(google_postal(&"9".repeat(21)), None);
    }

    /// The same person, hashed for each platform: the digests differ where
    /// the rules do.
    #[test]
    fn the_platforms_hash_differently() {
        let meta_ph = sha256_hex("14155552671");
        let google_ph = sha256_hex(&google_phone("14155552671"));
        assert_ne!(meta_ph, google_ph);
        assert_eq!(
            google_ph,
            sha256_hex("+14155552671"),
            "Google hashes the + with the digits"
        );
        let google_em = sha256_hex(&google_email("jane.doe@gmail.com"));
        assert_eq!(google_em, sha256_hex("janedoe@gmail.com"));
        assert_ne!(google_em, sha256_hex("jane.doe@gmail.com"));
    }

    proptest::proptest! {
        /// Normal forms are fixed points, hold no whitespace where Meta
        /// wants none, and any input is normalized or refused.
        #[test]
        fn normal_forms_are_stable(raw in "\\PC{0,40}", key in proptest::sample::select(META_KEYS.to_vec())) {
            if let Some(n) = meta(key, &raw) {
                proptest::prop_assert!(!n.chars().any(char::is_whitespace), "{key} {n:?}");
                if key != "db" && key != "ge" {
                    proptest::prop_assert_eq!(meta(key, &n), Some(n.clone()));
                }
            }
            if let Some(n) = google_name(&raw) {
                proptest::prop_assert_eq!(google_name(&n), Some(n.clone()));
            }
            let email = raw.trim().to_lowercase();
            let once = google_email(&email);
            proptest::prop_assert_eq!(google_email(&once), once.clone());
            let h = hashed(&raw, |s| meta(key, s));
            proptest::prop_assert!(h.as_deref().is_none_or(is_sha256_hex));
        }
    }

    #[test]
    fn digests_pass_through() {
        let h = sha256_hex("mary");
        assert_eq!(hashed(&h, |s| meta("fn", s)).as_deref(), Some(h.as_str()));
        assert_eq!(
            hashed(&h.to_ascii_uppercase(), |s| meta("fn", s)).as_deref(),
            Some(h.as_str())
        );
        assert_eq!(hashed(" Mary ", |s| meta("fn", s)), Some(h.clone()));
        assert_eq!(hashed("Mary", google_name), Some(h));
        assert_eq!(hashed("!!", |s| meta("fn", s)), None);
    }
}
