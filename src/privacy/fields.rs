//! The field names that are never captured, whatever the config says:
//! passwords, PINs, secrets, tokens, API keys, one-time codes, card data,
//! bank account numbers, national ids. Fields leave by allowlist only; this
//! list refuses the allowlist's worst mistakes.

/// Whole name components (or adjacent pairs) that mark a field as secret.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "pass",
    "passcode",
    "passphrase",
    "pin",
    "secret",
    "token",
    "apikey",
    "auth",
    "otp",
    "totp",
    "mfa",
    "cvv",
    "cvv2",
    "cvc",
    "cvc2",
    "csc",
    "ssn",
    "card",
    "cardnumber",
    "ccnumber",
    "ccnum",
    "creditcard",
    "iban",
    "bic",
    "swift",
    "sortcode",
    "routing",
    "session",
    "cookie",
    "jwt",
    "bearer",
    "signature",
    "privatekey",
    "credential",
    "credentials",
];

/// Substrings that mark a secret even inside a longer word (`newPassword`
/// may arrive as `newpassword`).
const SECRET_SUBSTRINGS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "creditcard",
    "cardnumber",
    "ccnumber",
    "credential",
];

const SECRET_PAIRS: &[(&str, &str)] = &[
    ("api", "key"),
    ("access", "key"),
    ("private", "key"),
    ("secret", "key"),
    ("cc", "number"),
    ("cc", "num"),
    ("cc", "no"),
    ("cc", "exp"),
    ("cc", "csc"),
    ("card", "number"),
    ("security", "code"),
    ("social", "security"),
    ("credit", "card"),
    ("one", "time"),
    ("account", "number"),
    ("sort", "code"),
];

/// Splits a field name into lowercase components at non-alphanumerics and
/// lower→upper case changes (`ccNumber` → `cc`, `number`).
fn name_components(name: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                parts.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            parts.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

/// True for field names that must never be captured, even if configured:
/// passwords, PINs, secrets, tokens, API keys, one-time codes, card data,
/// bank account numbers, national ids.
pub fn is_never_captured(field_name: &str) -> bool {
    match never_captured_ascii(field_name) {
        Some(answer) => answer,
        None => never_captured_any(field_name),
    }
}

/// [`is_never_captured`] for any name, through [`name_components`].
fn never_captured_any(field_name: &str) -> bool {
    let parts = name_components(field_name);
    let joined: String = parts.concat();
    parts.iter().any(|p| SECRET_WORDS.contains(&p.as_str()))
        || SECRET_SUBSTRINGS.iter().any(|s| joined.contains(s))
        || parts
            .windows(2)
            .any(|w| SECRET_PAIRS.contains(&(w[0].as_str(), w[1].as_str())))
}

/// [`is_never_captured`] without allocating, for ASCII names of at most
/// 64 bytes (every form field name in practice; `None` for others): the
/// same components as [`name_components`], lowercased one after another
/// into a stack buffer. Conversions check their allowlist on every post.
fn never_captured_ascii(name: &str) -> Option<bool> {
    const MAX: usize = 64;
    if name.len() > MAX || !name.is_ascii() {
        return None;
    }
    let mut joined = [0u8; MAX];
    // Component `i` is `joined[ends[i - 1]..ends[i]]` (from 0 for i = 0).
    let mut ends = [0usize; MAX];
    let (mut len, mut start, mut parts, mut prev_lower) = (0, 0, 0, false);
    for &b in name.as_bytes() {
        let split = !b.is_ascii_alphanumeric() || (b.is_ascii_uppercase() && prev_lower);
        if split && len > start {
            ends[parts] = len;
            parts += 1;
            start = len;
        }
        if !b.is_ascii_alphanumeric() {
            prev_lower = false;
            continue;
        }
        prev_lower = b.is_ascii_lowercase() || b.is_ascii_digit();
        joined[len] = b.to_ascii_lowercase();
        len += 1;
    }
    if len > start {
        ends[parts] = len;
        parts += 1;
    }
    let joined = &joined[..len];
    let part = |i: usize| &joined[if i == 0 { 0 } else { ends[i - 1] }..ends[i]];
    let word = (0..parts).any(|i| SECRET_WORDS.iter().any(|w| w.as_bytes() == part(i)));
    let substring = SECRET_SUBSTRINGS
        .iter()
        .any(|s| joined.windows(s.len()).any(|w| w == s.as_bytes()));
    let pair = (1..parts).any(|i| {
        SECRET_PAIRS
            .iter()
            .any(|(a, b)| a.as_bytes() == part(i - 1) && b.as_bytes() == part(i))
    });
    Some(word || substring || pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_captured_names() {
        for n in [
            "password",
            "Password",
            "user_password",
            "newPassword",
            "passwd",
            "pwd",
            "pass",
            "pin",
            "PIN",
            "secret",
            "client_secret",
            "token",
            "csrf_token",
            "api_key",
            "apiKey",
            "APIKey",
            "apikey",
            "auth",
            "x-auth",
            "otp",
            "cvv",
            "cvc",
            "ssn",
            "card",
            "card_number",
            "cardNumber",
            "cc-number",
            "ccNumber",
            "cc_exp",
            "iban",
            "credit_card",
            "security_code",
        ] {
            assert!(is_never_captured(n), "{n} should be refused");
        }
        for n in [
            "email",
            "phone",
            "plan",
            "name",
            "company",
            "utm_source",
            "passenger_count",
            "pinterest_handle",
            "author",
            "discount_code",
            "cc",
            "message",
            "spin",
        ] {
            assert!(!is_never_captured(n), "{n} should be allowed");
        }
    }

    proptest::proptest! {
        #[test]
        fn ascii_names_are_judged_as_by_the_components(
            name in "([a-zA-Z0-9]{0,9}[-_. ]?){0,8}",
        ) {
            proptest::prop_assert_eq!(never_captured_ascii(&name), (name.len() <= 64).then(|| never_captured_any(&name)));
        }
    }

    #[test]
    fn ascii_fast_path_agrees_on_known_names() {
        for n in [
            "password",
            "newPassword",
            "APIKey",
            "apiKey",
            "api_key",
            "cc-number",
            "ccNumber",
            "card_number",
            "x-auth",
            "security_code",
            "passenger_count",
            "pinterest_handle",
            "discount_code",
            "plan",
            "message",
            "",
            "_",
            "a__b",
            "ABCdef",
            "aB",
            "Ab",
            "a1B2",
        ] {
            assert_eq!(never_captured_ascii(n), Some(never_captured_any(n)), "{n}");
        }
        assert_eq!(never_captured_ascii("mot_de_passe_é"), None);
        assert!(is_never_captured("Passwört_password"));
    }
}
