//! One normal form for every campaign value, so that `Google`, ` google `
//! and `google%20` count as the same source.

use std::borrow::Cow;

/// The longest normalized value, in characters.
pub const MAX_CHARS: usize = 100;

/// Percent-decode a raw query value (`+` is a space, invalid UTF-8 becomes
/// U+FFFD), then [`clean`] it. `None` when nothing is left.
pub fn normalize(raw: &str) -> Option<String> {
    clean(&decode(raw))
}

/// `application/x-www-form-urlencoded` decoding of one value.
pub fn decode(raw: &str) -> Cow<'_, str> {
    if !raw.contains(['+', '%']) {
        return Cow::Borrowed(raw);
    }
    let spaced: Vec<u8> = raw
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    Cow::Owned(
        percent_encoding::percent_decode(&spaced)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// Clean an already decoded value: control and invisible formatting
/// characters removed, whitespace runs collapsed to one space, trimmed,
/// lowercased, cut to [`MAX_CHARS`] characters. Idempotent. `None` when
/// nothing is left.
pub fn clean(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len().min(MAX_CHARS * 4));
    let mut chars = 0usize;
    let mut pending_space = false;
    'input: for c in text.chars() {
        // ASCII, the common case, without the Unicode tables: whitespace is
        // `\t`..=`\r` and space, the other controls are stripped, and the
        // lowercase of a letter is one letter.
        if c.is_ascii() {
            let b = c as u8;
            if matches!(b, b'\t'..=b'\r' | b' ') {
                pending_space = !out.is_empty();
                continue;
            }
            if b.is_ascii_control() {
                continue;
            }
            if pending_space {
                if chars + 2 > MAX_CHARS {
                    break 'input;
                }
                out.push(' ');
                chars += 1;
                pending_space = false;
            }
            if chars + 1 > MAX_CHARS {
                break 'input;
            }
            out.push(char::from(b.to_ascii_lowercase()));
            chars += 1;
            continue;
        }
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if is_stripped(c) {
            continue;
        }
        for l in c.to_lowercase() {
            if l.is_whitespace() || is_stripped(l) {
                continue;
            }
            if pending_space {
                // A space is only worth writing when a character fits after it:
                // the cut must never leave a trailing space.
                if chars + 2 > MAX_CHARS {
                    break 'input;
                }
                out.push(' ');
                chars += 1;
                pending_space = false;
            }
            if chars + 1 > MAX_CHARS {
                break 'input;
            }
            out.push(l);
            chars += 1;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Control characters, plus the invisible formatting characters (zero-width,
/// bidirectional overrides, BOM) that make two equal-looking values differ or
/// reorder text in a dashboard.
fn is_stripped(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_a_form() {
        assert_eq!(decode("a+b%20c"), "a b c");
        assert_eq!(decode("plain"), "plain");
        assert_eq!(decode("%FF"), "\u{FFFD}");
        assert_eq!(decode("100%"), "100%");
    }

    /// `clean` before its ASCII fast path.
    fn reference(text: &str) -> Option<String> {
        let mut out = String::new();
        let mut chars = 0usize;
        let mut pending_space = false;
        'input: for c in text.chars() {
            if c.is_whitespace() {
                pending_space = !out.is_empty();
                continue;
            }
            if is_stripped(c) {
                continue;
            }
            for l in c.to_lowercase() {
                if l.is_whitespace() || is_stripped(l) {
                    continue;
                }
                if pending_space {
                    if chars + 2 > MAX_CHARS {
                        break 'input;
                    }
                    out.push(' ');
                    chars += 1;
                    pending_space = false;
                }
                if chars + 1 > MAX_CHARS {
                    break 'input;
                }
                out.push(l);
                chars += 1;
            }
        }
        (!out.is_empty()).then_some(out)
    }

    #[test]
    fn ascii_fast_path_matches_the_unicode_rules() {
        for b in 0u8..=127 {
            let c = char::from(b);
            assert_eq!(matches!(b, b'\t'..=b'\r' | b' '), c.is_whitespace(), "{b}");
            assert_eq!(
                clean(&format!("a{c}b")),
                reference(&format!("a{c}b")),
                "{b}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn clean_matches_the_reference(s in "[ -~\t\n\r\x0b\x0c\x00\x7f\u{85}\u{a0}\u{200b}ÄİẞΣ]{0,120}|\\PC{0,40}|\\PC*") {
            proptest::prop_assert_eq!(clean(&s), reference(&s));
        }
    }

    #[test]
    fn cleans() {
        assert_eq!(clean("  Google \t Ads\n").as_deref(), Some("google ads"));
        assert_eq!(clean("a\u{0}b\u{202E}c").as_deref(), Some("abc"));
        assert_eq!(clean(" \u{200B} "), None);
        let long = "x ".repeat(80);
        let c = clean(&long).unwrap();
        assert_eq!(c.chars().count(), 99);
        assert!(!c.ends_with(' '));
    }
}
