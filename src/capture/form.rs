//! Form bodies: a buffered request body turned into an ordered list of
//! `(name, value)` text fields.
//!
//! The caller has already bounded the body (`max_capture_body`); this module
//! still bounds its own work, because it is also reached by fuzzers and by
//! anything that calls it with a larger body: at most [`MAX_FIELDS`] fields
//! are kept, a field whose name exceeds [`MAX_NAME`] bytes or whose value
//! exceeds [`MAX_VALUE`] bytes is dropped (never truncated: a truncated
//! e-mail or phone would be a wrong identifier), and every parser is linear
//! in the body.
//!
//! Supported media types (parameters ignored, matched case-insensitively):
//! - `application/x-www-form-urlencoded`: `+` is a space, `%XX` decoded
//!   (the WHATWG rules, as the `form_urlencoded` crate applies them).
//! - `multipart/form-data`: parts with a `filename` (file uploads) are
//!   skipped without being read; text parts become fields.
//! - `application/json` and `application/*+json`: the body must be an
//!   object. Top-level scalars become fields; one level of nested objects
//!   becomes `parent.child`; deeper objects, arrays and nulls are ignored
//!   (arrays are not joined: a joined list is a value no form field had).
//!   Numbers and booleans become their JSON text (`42`, `true`).
//!
//! Text is decoded as UTF-8, lossily. [`parse`] is synchronous even for
//! multipart: the body is already in memory, so the `multer` parser is
//! driven over a single ready chunk and never waits.

use std::borrow::Cow;

use bytes::Bytes;
use futures_util::FutureExt;

/// Most fields kept from one body; later ones are ignored.
pub const MAX_FIELDS: usize = 256;
/// Longest field name kept, in bytes.
pub const MAX_NAME: usize = 256;
/// Longest field value kept, in bytes (after decoding).
pub const MAX_VALUE: usize = 8 * 1024;

/// The fields of a form body, in body order. A name may repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    pairs: Vec<(String, String)>,
}

impl Fields {
    /// The first value for `name` (exact, case-sensitive match).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value for `name`, in body order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Removes the first value for `name` and returns it, so that a caller
    /// that keeps the value does not copy it.
    pub fn take(&mut self, name: &str) -> Option<String> {
        let at = self.pairs.iter().position(|(n, _)| n == name)?;
        Some(self.pairs.remove(at).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.pairs
    }
}

impl From<Vec<(String, String)>> for Fields {
    fn from(pairs: Vec<(String, String)>) -> Self {
        let mut c = Collect::new(|_: &str| true);
        for (n, v) in pairs {
            if !c.offer(Cow::Owned(n), || v, || true) {
                break;
            }
        }
        c.fields
    }
}

/// Builds [`Fields`] from a body's fields in body order. A field is kept
/// when its name is non-empty and at most [`MAX_NAME`] bytes and its value
/// at most [`MAX_VALUE`] bytes; the first [`MAX_FIELDS`] kept fields are
/// read and the rest ignored. Of the kept fields, only those `wanted`
/// accepts are stored (and only their values decoded), so that leaving a
/// field out never changes which of the others are found.
struct Collect<W> {
    fields: Fields,
    kept: usize,
    wanted: W,
}

impl<W: Fn(&str) -> bool> Collect<W> {
    fn new(wanted: W) -> Self {
        Collect {
            fields: Fields::default(),
            kept: 0,
            wanted,
        }
    }

    /// Offers the next field. `value` gives its decoded value and is
    /// called only for a wanted name; `fits` tells, for any other name,
    /// whether the decoded value would be at most [`MAX_VALUE`] bytes.
    /// False once [`MAX_FIELDS`] fields are kept: stop reading.
    fn offer(
        &mut self,
        name: Cow<'_, str>,
        value: impl FnOnce() -> String,
        fits: impl FnOnce() -> bool,
    ) -> bool {
        if name.is_empty() || name.len() > MAX_NAME {
            return true;
        }
        if (self.wanted)(&name) {
            let value = value();
            if value.len() > MAX_VALUE {
                return true;
            }
            self.fields.pairs.push((name.into_owned(), value));
        } else if !fits() {
            return true;
        }
        self.kept += 1;
        self.kept < MAX_FIELDS
    }
}

/// Why a body could not be read as a form.
#[derive(Debug, thiserror::Error)]
pub enum FormError {
    /// No content type, or one this module does not read.
    #[error("unsupported content type {0:?}")]
    Unsupported(String),
    #[error("malformed multipart body: {0}")]
    Multipart(String),
    #[error("malformed JSON body: {0}")]
    Json(#[from] serde_json::Error),
    #[error("JSON body is not an object")]
    NotAnObject,
}

impl FormError {
    /// A short, fixed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            FormError::Unsupported(_) => "unsupported",
            FormError::Multipart(_) => "multipart",
            FormError::Json(_) | FormError::NotAnObject => "json",
        }
    }
}

enum BodyKind {
    UrlEncoded,
    Multipart,
    Json,
}

fn kind(content_type: &str) -> Option<BodyKind> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Some(BodyKind::UrlEncoded)
    } else if essence.eq_ignore_ascii_case("multipart/form-data") {
        Some(BodyKind::Multipart)
    } else if essence.eq_ignore_ascii_case("application/json") || is_json_suffix(essence.as_bytes())
    {
        Some(BodyKind::Json)
    } else {
        None
    }
}

/// `application/<something>+json`, compared as bytes so that no non-ASCII
/// input can split a character.
fn is_json_suffix(essence: &[u8]) -> bool {
    const PREFIX: &[u8] = b"application/";
    const SUFFIX: &[u8] = b"+json";
    essence.len() > PREFIX.len() + SUFFIX.len()
        && essence[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
        && essence[essence.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX)
}

/// Parses a buffered body according to its `Content-Type`.
pub fn parse(content_type: Option<&str>, body: &Bytes) -> Result<Fields, FormError> {
    parse_wanted(content_type, body, |_| true)
}

/// [`parse`], keeping only the fields whose name `wanted` accepts (the
/// name as decoded, compared however `wanted` likes). The other fields'
/// values are neither decoded nor copied. The answer is exactly
/// [`parse`]'s with the other fields removed: they still count towards
/// [`MAX_FIELDS`].
pub fn parse_wanted(
    content_type: Option<&str>,
    body: &Bytes,
    wanted: impl Fn(&str) -> bool,
) -> Result<Fields, FormError> {
    let ct = content_type.unwrap_or("");
    match kind(ct) {
        Some(BodyKind::UrlEncoded) => Ok(parse_urlencoded(body, wanted)),
        Some(BodyKind::Multipart) => parse_multipart(ct, body, wanted),
        Some(BodyKind::Json) => parse_json(body, wanted),
        None => Err(FormError::Unsupported(ct.chars().take(64).collect())),
    }
}

/// The WHATWG `application/x-www-form-urlencoded` parser, written out
/// rather than taken from `form_urlencoded::parse` because this runs on
/// every conversion and the crate's iterator chain (`+` replacement, then
/// percent-decoding, then UTF-8, each a separate pass and copy) costs
/// several times more per byte. Same rules: split on `&`, skip empty
/// pieces, name before the first `=`, `+` is a space, `%XX` decoded and a
/// malformed `%` kept, UTF-8 decoded lossily. A test checks it against
/// `form_urlencoded` on arbitrary input.
///
/// A name with nothing to decode is compared in place, and an unwanted
/// value is decoded only when its size is in doubt (see [`fits_encoded`]).
fn parse_urlencoded(body: &[u8], wanted: impl Fn(&str) -> bool) -> Fields {
    let mut c = Collect::new(wanted);
    let mut start = 0;
    let ends = memchr::memchr_iter(b'&', body).chain(std::iter::once(body.len()));
    for end in ends {
        let piece = &body[start..end];
        start = end + 1;
        if piece.is_empty() {
            continue;
        }
        let (name, value) = match memchr::memchr(b'=', piece) {
            Some(eq) => (&piece[..eq], &piece[eq + 1..]),
            None => (piece, &[][..]),
        };
        // Decoding never grows text and shrinks it at most threefold, so
        // these pieces are over the limits whatever they decode to.
        if name.len() > 3 * MAX_NAME || value.len() > 3 * MAX_VALUE {
            continue;
        }
        let name = match plain_text(name) {
            Some(text) => Cow::Borrowed(text),
            None => Cow::Owned(urldecode(name)),
        };
        if !c.offer(name, || urldecode(value), || fits_encoded(value)) {
            break;
        }
    }
    c.fields
}

/// `s` as text when decoding would leave it as is: ASCII without `+` or `%`.
fn plain_text(s: &[u8]) -> Option<&str> {
    if s.iter().all(|&b| b.is_ascii() && b != b'+' && b != b'%') {
        std::str::from_utf8(s).ok()
    } else {
        None
    }
}

/// Whether an encoded value decodes to at most [`MAX_VALUE`] bytes,
/// decoding it only when that is in doubt: decoding never adds bytes, and
/// lossy UTF-8 at most triples them (one invalid byte becomes a
/// three-byte U+FFFD).
fn fits_encoded(value: &[u8]) -> bool {
    value.len() <= MAX_VALUE / 3 || urldecode(value).len() <= MAX_VALUE
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn urldecode(s: &[u8]) -> String {
    // Copy, turn every `+` into a space (a loop the compiler vectorizes),
    // then decode `%XX` in place, moving the text between escapes with
    // `copy_within`. The write position never passes the read position.
    let mut out = s.to_vec();
    for b in &mut out {
        *b = if *b == b'+' { b' ' } else { *b };
    }
    if let Some(first) = memchr::memchr(b'%', &out) {
        let (mut w, mut r) = (first, first);
        while let Some(p) = memchr::memchr(b'%', &out[r..]).map(|p| p + r) {
            out.copy_within(r..p, w);
            w += p - r;
            let hex = |i: usize| out.get(i).and_then(|&b| hex_digit(b));
            match (hex(p + 1), hex(p + 2)) {
                (Some(h), Some(l)) => {
                    out[w] = h << 4 | l;
                    r = p + 3;
                }
                _ => {
                    out[w] = b'%';
                    r = p + 1;
                }
            }
            w += 1;
        }
        let len = out.len();
        out.copy_within(r..len, w);
        out.truncate(w + (len - r));
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn parse_multipart(
    content_type: &str,
    body: &Bytes,
    wanted: impl Fn(&str) -> bool,
) -> Result<Fields, FormError> {
    let boundary =
        multer::parse_boundary(content_type).map_err(|e| FormError::Multipart(e.to_string()))?;
    let chunk = body.clone();
    let stream =
        futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(chunk) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    // The stream yields the whole body on its first poll and then ends, so
    // multer reaches end-of-stream at once and every future below is ready
    // when first polled. A future that is not ready would be a multer bug;
    // it is reported as an error rather than awaited.
    let stalled = || FormError::Multipart("parser waited on an in-memory body".into());
    let mut c = Collect::new(wanted);
    loop {
        let next = multipart
            .next_field()
            .now_or_never()
            .ok_or_else(stalled)?
            .map_err(|e| FormError::Multipart(e.to_string()))?;
        let Some(mut field) = next else { break };
        // File parts are dropped unread; multer skips their bytes when the
        // next field is requested (a slice of the same buffer, no copy).
        if field.file_name().is_some() {
            continue;
        }
        let Some(name) = field.name().map(str::to_owned) else {
            continue;
        };
        let mut value: Vec<u8> = Vec::new();
        let mut oversize = false;
        while let Some(chunk) = field
            .chunk()
            .now_or_never()
            .ok_or_else(stalled)?
            .map_err(|e| FormError::Multipart(e.to_string()))?
        {
            if value.len() + chunk.len() > MAX_VALUE {
                oversize = true;
                break;
            }
            value.extend_from_slice(&chunk);
        }
        if oversize {
            continue;
        }
        let text = || String::from_utf8_lossy(&value);
        let fits = || value.len() <= MAX_VALUE / 3 || text().len() <= MAX_VALUE;
        if !c.offer(Cow::Owned(name), || text().into_owned(), fits) {
            break;
        }
    }
    Ok(c.fields)
}

fn is_scalar(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// A scalar's text (empty for anything else, which is never asked).
fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn parse_json(body: &[u8], wanted: impl Fn(&str) -> bool) -> Result<Fields, FormError> {
    // Lossy UTF-8 first: serde_json rejects invalid UTF-8 outright, and a
    // stray byte in one value should not lose the whole form.
    let text = String::from_utf8_lossy(body);
    let value: serde_json::Value = serde_json::from_str(&text)?;
    let serde_json::Value::Object(map) = value else {
        return Err(FormError::NotAnObject);
    };
    let mut c = Collect::new(wanted);
    // Scalars are at most a string's length once turned into text.
    let fits = |v: &serde_json::Value| v.as_str().is_none_or(|s| s.len() <= MAX_VALUE);
    'outer: for (key, v) in &map {
        if is_scalar(v) {
            if !c.offer(Cow::Borrowed(key), || scalar(v), || fits(v)) {
                break;
            }
        } else if let serde_json::Value::Object(inner) = v {
            for (child, cv) in inner {
                if is_scalar(cv)
                    && !c.offer(
                        Cow::Owned(format!("{key}.{child}")),
                        || scalar(cv),
                        || fits(cv),
                    )
                {
                    break 'outer;
                }
            }
        }
    }
    Ok(c.fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn take_moves_out_the_first_value_and_leaves_the_rest() {
        let body = Bytes::from_static(b"a=1&b=2&a=3");
        let mut f = parse(Some("application/x-www-form-urlencoded"), &body).unwrap();
        assert_eq!(f.take("a").as_deref(), Some("1"));
        assert_eq!(f.get("a"), Some("3"));
        assert_eq!(f.take("a").as_deref(), Some("3"));
        assert_eq!(f.take("a"), None);
        assert_eq!(f.get("b"), Some("2"));
    }

    #[test]
    fn media_type_matching_ignores_case_and_parameters() {
        assert!(matches!(
            kind("Application/X-WWW-Form-URLEncoded; charset=UTF-8"),
            Some(BodyKind::UrlEncoded)
        ));
        assert!(matches!(
            kind("application/vnd.api+json"),
            Some(BodyKind::Json)
        ));
        assert!(kind("application/+json").is_none());
        assert!(kind("text/plain").is_none());
        assert!(kind("").is_none());
    }

    fn bytes_with_form_syntax() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"&".to_vec()),
            Just(b"=".to_vec()),
            Just(b"+".to_vec()),
            Just(b"%".to_vec()),
            "%[0-9a-fA-FgG]{0,2}".prop_map(String::into_bytes),
            "[a-z]{1,4}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 1..4),
        ];
        proptest::collection::vec(piece, 0..64).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn urlencoded_agrees_with_form_urlencoded(body in bytes_with_form_syntax()) {
            let ours = parse_urlencoded(&body, |_| true).into_pairs();
            let theirs: Vec<(String, String)> = form_urlencoded::parse(&body)
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .filter(|(n, _)| !n.is_empty())
                .collect();
            prop_assert_eq!(ours, theirs);
        }

        /// Only names whose first byte is at most `pivot` (bytes of the
        /// decoded name, so `%61` is `a`) are wanted.
        #[test]
        fn filtered_urlencoded_agrees_with_form_urlencoded(
            body in bytes_with_form_syntax(),
            pivot in any::<u8>(),
        ) {
            let wanted = |n: &str| n.as_bytes().first().is_some_and(|&b| b <= pivot);
            let ours = parse_urlencoded(&body, wanted).into_pairs();
            let theirs: Vec<(String, String)> = form_urlencoded::parse(&body)
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .filter(|(n, _)| wanted(n))
                .collect();
            prop_assert_eq!(ours, theirs);
        }
    }

    /// `parse_wanted` is `parse` with the unwanted fields removed, for
    /// every media type, including where the bounds cut in.
    fn assert_filter_is_exact(content_type: &str, body: &[u8], wanted: &[&str]) {
        let body = Bytes::copy_from_slice(body);
        let all = parse(Some(content_type), &body).unwrap();
        let some = parse_wanted(Some(content_type), &body, |n| wanted.contains(&n)).unwrap();
        let expected: Vec<(String, String)> = all
            .into_pairs()
            .into_iter()
            .filter(|(n, _)| wanted.contains(&n.as_str()))
            .collect();
        assert_eq!(some.into_pairs(), expected, "{content_type}, {wanted:?}");
    }

    #[test]
    fn filtering_keeps_exactly_the_wanted_fields() {
        const URLENCODED: &str = "application/x-www-form-urlencoded";
        let mut near_limit = String::new();
        for i in 0..(MAX_FIELDS + 4) {
            // Fields that `parse` drops (empty name, oversize value) must
            // not count towards the limit when they are unwanted either.
            match i {
                3 => near_limit.push_str("=orphan&"),
                5 => near_limit.push_str(&format!("big={}&", "x".repeat(MAX_VALUE + 1))),
                7 => near_limit.push_str(&format!("enc={}&", "%41".repeat(MAX_VALUE / 2))),
                8 => near_limit.push_str(&format!("wide={}&", "%FF".repeat(MAX_VALUE / 2))),
                _ => near_limit.push_str(&format!("f{i}=v{i}&")),
            }
        }
        for wanted in [
            &["f1", "f250", "f255", "f256", "f257", "f259"][..],
            &["enc", "wide", "big", "f258"][..],
            &[][..],
        ] {
            assert_filter_is_exact(URLENCODED, near_limit.as_bytes(), wanted);
            assert_filter_is_exact(
                URLENCODED,
                b"e%6Dail=a%40b.co&email=second&plan=pro+plan&message=hi+there%21",
                wanted,
            );
        }
        let body = b"e%6Dail=a%40b.co&email=second&plan=pro+plan&message=hi+there%21";
        let f = parse_wanted(Some(URLENCODED), &Bytes::from_static(body), |n| {
            n == "email" || n == "plan"
        })
        .unwrap();
        assert_eq!(
            f.into_pairs(),
            [
                ("email".to_string(), "a@b.co".to_string()),
                ("email".into(), "second".into()),
                ("plan".into(), "pro plan".into()),
            ]
        );

        let multipart = "--XyZ\r\n\
            Content-Disposition: form-data; name=\"email\"\r\n\r\n\
            a@b.co\r\n\
            --XyZ\r\n\
            Content-Disposition: form-data; name=\"cv\"; filename=\"cv.pdf\"\r\n\r\n\
            %PDF\r\n\
            --XyZ\r\n\
            Content-Disposition: form-data; name=\"message\"\r\n\r\n\
            hello\r\n\
            --XyZ--\r\n";
        let json =
            r#"{"email":"a@b.co","seats":25,"ok":true,"utm":{"source":"x","n":null},"tags":["a"]}"#;
        for wanted in [
            &["email"][..],
            &["message", "cv"][..],
            &["seats", "ok", "utm.source", "tags"][..],
        ] {
            assert_filter_is_exact(
                "multipart/form-data; boundary=XyZ",
                multipart.as_bytes(),
                wanted,
            );
            assert_filter_is_exact("application/json", json.as_bytes(), wanted);
        }
    }

    #[test]
    fn bounds_are_enforced() {
        let mut body = String::new();
        for i in 0..(MAX_FIELDS + 10) {
            body.push_str(&format!("f{i}=v&"));
        }
        let f = parse_urlencoded(body.as_bytes(), |_| true);
        assert_eq!(f.len(), MAX_FIELDS);
        let long = format!("a={}&b=1", "x".repeat(MAX_VALUE + 1));
        let f = parse_urlencoded(long.as_bytes(), |_| true);
        assert_eq!(f.get("a"), None);
        assert_eq!(f.get("b"), Some("1"));
    }
}
