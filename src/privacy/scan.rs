//! The PII shape scanner: finds e-mail, phone, IP and card shapes in free
//! text and replaces each with a marker (`[email]`, `[phone]`, `[ip]`,
//! `[card]`), keeping the rest of the string (`hi bob@example.com` →
//! `hi [email]`).
//!
//! The scanner is written by hand rather than with `regex`: the shapes need
//! token-boundary, Luhn, octet-range and date exclusions that a regex cannot
//! express (no look-around in the `regex` crate), and a single byte pass with
//! an early exit keeps the common no-match case to a few nanoseconds per
//! string. What counts as each shape:
//!
//! - **E-mail**: `local@domain`, local part of `[A-Za-z0-9._+'-]` or
//!   non-ASCII, domain of at least two non-empty labels whose last one
//!   starts with two letters (or non-ASCII bytes), or is an `xn--` label.
//! - **Digit runs** are digit groups joined by short separators (one to
//!   three of space, `-`, `.`, `(`, `)`), optionally led by `+` or `(`, not
//!   glued to a letter, digit or `_` on either side. A run may be split only
//!   at separators that contain a space, so `10.0.19041.1234` is judged
//!   whole but `2026-11-29 4155550123` is judged as a date and a number.
//!   A run glued to a word by `-` or `.` (`sku-123…`, the last part of a
//!   UUID) is not a number of its own either.
//!   - **IPv4**: four dot-separated groups of 1–3 digits, each ≤ 255.
//!   - **Card**: 13–19 digits, Luhn-valid, either bare or in groups of 3–6
//!     digits led by a group of 4 and separated by space or `-`; not a
//!     millisecond epoch (13 digits starting with `1`).
//!   - **Phone**: at most 15 digits (E.164). With a leading `+`: at least 7.
//!     Bare digits: at least 10 (shorter bare numbers are order ids,
//!     dates, ZIP codes). Grouped: at least 9 (a number without its area
//!     code identifies nobody). Not an epoch in seconds or milliseconds
//!     (10 or 13 digits starting with `1`: no NANP number starts with 1),
//!     not a compact date-time (`yyyymmddhhmm[ss]`), not a date followed by
//!     more digits, not a decimal (`3.14159265358`), not a ZIP+4, not
//!     followed by `:digit` (a time), and every group after the first has
//!     at least two digits unless it is a `(d)` trunk prefix (this rejects
//!     versions like `10.0.19041.1234` and lists like `1 2 3 4`).
//! - **IPv6**: a token of hex digits, `:` and `.` with `::` or at least
//!   three colons that `std` parses as an [`std::net::Ipv6Addr`].
//!
//! Percent-encoded forms (`bob%40example.com`, `%2B1%20415…`) are caught by
//! scanning a decoded view as well (`%XX` decoded and `+` read as a space,
//! up to two rounds for double encoding) whose matches are mapped back to
//! the original bytes, so only the matched span is replaced and the rest of
//! a URL keeps its encoding.

use std::borrow::Cow;
use std::net::Ipv6Addr;

fn luhn(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.rev().enumerate() {
        let mut d = u32::from(d - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// A whole value that is a card number: 13–19 digits, optionally grouped
/// with spaces or dashes, passing the Luhn check.
pub fn looks_like_card(value: &str) -> bool {
    let v = value.trim();
    if !v
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-')
    {
        return false;
    }
    let digits = v.bytes().filter(u8::is_ascii_digit);
    let n = digits.clone().count();
    (13..=19).contains(&n) && luhn(digits)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PiiShape {
    Email,
    Phone,
    Ip,
    Card,
}

impl PiiShape {
    fn marker(self) -> &'static str {
        match self {
            PiiShape::Email => "[email]",
            PiiShape::Phone => "[phone]",
            PiiShape::Ip => "[ip]",
            PiiShape::Card => "[card]",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    shape: PiiShape,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Counts from one pass over a text: the guard runs this over every
/// string, and for most strings it is the only work done.
#[derive(Debug, Clone, Copy)]
struct Census {
    at: usize,
    pct: usize,
    plus: usize,
    digits: usize,
    colons: usize,
}

/// Per byte, the counters it bumps, packed in 12-bit fields (digits,
/// colons, `@`, `%`, `+`) so that one table load and one add count a byte.
static CENSUS_TABLE: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = b'0';
    while b <= b'9' {
        t[b as usize] = 1;
        b += 1;
    }
    t[b':' as usize] = 1 << 12;
    t[b'@' as usize] = 1 << 24;
    t[b'%' as usize] = 1 << 36;
    t[b'+' as usize] = 1 << 48;
    t
};

impl Census {
    fn of(s: &[u8]) -> Census {
        let mut c = Census {
            at: 0,
            pct: 0,
            plus: 0,
            digits: 0,
            colons: 0,
        };
        // Long texts: fixed-size chunks with byte-wide counters, a loop the
        // compiler turns into vector compares with no scalar tail (192 is
        // a multiple of every vector width and cannot overflow a `u8`).
        let chunks = s.chunks_exact(192);
        let rest = chunks.remainder();
        for chunk in chunks {
            let (mut at, mut pct, mut plus, mut digits, mut colons) = (0u8, 0u8, 0u8, 0u8, 0u8);
            for &b in chunk {
                at += u8::from(b == b'@');
                pct += u8::from(b == b'%');
                plus += u8::from(b == b'+');
                digits += u8::from(b.wrapping_sub(b'0') < 10);
                colons += u8::from(b == b':');
            }
            c.at += usize::from(at);
            c.pct += usize::from(pct);
            c.plus += usize::from(plus);
            c.digits += usize::from(digits);
            c.colons += usize::from(colons);
        }
        // The rest (under 192 bytes, so no 12-bit field overflows): a
        // table add per byte, cheaper than five compares.
        let packed: u64 = rest.iter().map(|&b| CENSUS_TABLE[usize::from(b)]).sum();
        let field = |shift: u32| ((packed >> shift) & 0xfff) as usize;
        c.digits += field(0);
        c.colons += field(12);
        c.at += field(24);
        c.pct += field(36);
        c.plus += field(48);
        c
    }

    /// No shape can be in the text itself without these: an e-mail needs
    /// `@`, IPv4 four digits (phones and cards more), IPv6 two colons.
    fn may_match(&self) -> bool {
        self.at > 0 || self.digits >= 4 || self.colons >= 2
    }

    /// A decoded view could hold a shape the text does not show: `%40`
    /// is an `@`, and `+` joins digit groups (`415+555+0123`).
    fn worth_decoding(&self) -> bool {
        self.pct > 0 || (self.plus > 0 && self.digits >= 4)
    }
}

fn emails(s: &[u8], out: &mut Vec<Span>) {
    let is_local = |b: u8| {
        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-' | b'\'') || b >= 0x80
    };
    let is_domain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-') || b >= 0x80;
    for at in memchr::memchr_iter(b'@', s) {
        let mut a = at;
        while a > 0 && is_local(s[a - 1]) {
            a -= 1;
        }
        if a == at {
            continue;
        }
        let mut b = at + 1;
        while b < s.len() && is_domain(s[b]) {
            b += 1;
        }
        while b > at + 1 && matches!(s[b - 1], b'.' | b'-') {
            b -= 1;
        }
        if let Some(len) = domain_len(&s[at + 1..b]) {
            out.push(Span {
                start: a,
                end: at + 1 + len,
                shape: PiiShape::Email,
            });
        }
    }
}

/// The length of the longest prefix of `d` that is a mail domain: at
/// least two non-empty labels, the last one starting with two letters (or
/// non-ASCII bytes) or being an `xn--` label. Trailing junk is left out, so
/// `bob@example.com2026` still yields `bob@example.com`. Each label is
/// looked at once, right to left, so this is linear in `d`.
fn domain_len(d: &[u8]) -> Option<usize> {
    // Nothing at or after an empty label can belong to the domain.
    let usable = match memchr::memmem::find(d, b"..") {
        Some(p) => &d[..p],
        None => d,
    };
    if usable.first() == Some(&b'.') {
        return None;
    }
    let mut end = usable.len();
    loop {
        let dom = &usable[..end];
        let last_dot = memchr::memrchr(b'.', dom)?;
        let last = &dom[last_dot + 1..];
        if last.len() > 4 && last[..4].eq_ignore_ascii_case(b"xn--") {
            return Some(end);
        }
        let alpha = last
            .iter()
            .take_while(|&&b| b.is_ascii_alphabetic() || b >= 0x80)
            .count();
        if alpha >= 2 {
            return Some(last_dot + 1 + alpha);
        }
        end = last_dot;
    }
}

/// One digit group of a run, with the separator bytes before it.
#[derive(Debug, Clone, Copy)]
struct Group {
    start: usize,
    end: usize,
    sep_start: usize,
}

fn is_sep(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.' | b'(' | b')')
}

/// Finds phone, card and IPv4 shapes.
fn digit_runs(s: &[u8], out: &mut Vec<Span>, groups: &mut Vec<Group>) {
    let n = s.len();
    let mut i = 0;
    while i < n {
        let b = s[i];
        if !(b.is_ascii_digit() || b == b'+' || b == b'(') {
            i += 1;
            continue;
        }
        // A run never starts inside a word, nor right after `word-` or
        // `word.` (the last part of a UUID or a slug): skip that part. A
        // `+` or `(` glued to a word is no prefix, but may precede a run.
        let glued = i >= 2 && matches!(s[i - 1], b'-' | b'.') && is_word(s[i - 2]);
        if i > 0 && (is_word(s[i - 1]) || (glued && is_word(b))) {
            if is_word(b) {
                while i < n && is_word(s[i]) {
                    i += 1;
                }
            } else {
                i += 1;
            }
            continue;
        }
        // Optional `+` or `(` prefix directly before the first digit.
        let (prefix, first) = match b {
            b'+' | b'(' if i + 1 < n && s[i + 1].is_ascii_digit() => (Some(b), i + 1),
            b'+' | b'(' => {
                i += 1;
                continue;
            }
            _ => (None, i),
        };
        groups.clear();
        let mut p = first;
        let mut sep_start = first;
        loop {
            let g = p;
            while p < n && s[p].is_ascii_digit() {
                p += 1;
            }
            groups.push(Group {
                start: g,
                end: p,
                sep_start,
            });
            // A separator: 1–3 separator bytes, at most one `.` and one `-`,
            // then a digit.
            let mut q = p;
            let (mut dots, mut dashes) = (0, 0);
            while q < n && q - p < 3 && is_sep(s[q]) {
                dots += usize::from(s[q] == b'.');
                dashes += usize::from(s[q] == b'-');
                q += 1;
            }
            if q > p && q < n && s[q].is_ascii_digit() && dots <= 1 && dashes <= 1 {
                sep_start = p;
                p = q;
            } else {
                break;
            }
        }
        let run_end = p;
        // A last group glued to a word (directly or by `-`/`.`) is not a
        // number of its own.
        let glued_after =
            run_end + 1 < n && matches!(s[run_end], b'-' | b'.') && is_word(s[run_end + 1]);
        if run_end < n && (is_word(s[run_end]) || glued_after) {
            groups.pop();
        }
        classify_run(s, prefix.map(|_| i), groups, out);
        i = run_end.max(i + 1);
    }
}

fn classify_run(s: &[u8], prefix_at: Option<usize>, groups: &[Group], out: &mut Vec<Span>) {
    let splittable = |k: usize| s[groups[k].sep_start..groups[k].start].contains(&b' ');
    let mut i = 0;
    while i < groups.len() {
        if i > 0 && !splittable(i) {
            i += 1;
            continue;
        }
        // Longest sub-run first, ending at a space separator or the end.
        let mut digits = 0;
        let mut last_ok = i;
        for (k, g) in groups.iter().enumerate().skip(i) {
            digits += g.end - g.start;
            if digits > 19 {
                break;
            }
            last_ok = k;
        }
        let mut found = None;
        for j in (i..=last_ok).rev() {
            if j + 1 < groups.len() && !splittable(j + 1) {
                continue;
            }
            let prefix = if i == 0 { prefix_at } else { None };
            if let Some(shape) = classify(s, prefix, &groups[i..=j]) {
                found = Some((j, shape, prefix));
                break;
            }
        }
        match found {
            Some((j, shape, prefix)) => {
                out.push(Span {
                    start: prefix.unwrap_or(groups[i].start),
                    end: groups[j].end,
                    shape,
                });
                i = j + 1;
            }
            None => i += 1,
        }
    }
}

fn group_value(s: &[u8], g: &Group) -> u64 {
    s[g.start..g.end]
        .iter()
        .take(19)
        .fold(0u64, |acc, &b| acc * 10 + u64::from(b - b'0'))
}

fn classify(s: &[u8], prefix_at: Option<usize>, gs: &[Group]) -> Option<PiiShape> {
    let digits: usize = gs.iter().map(|g| g.end - g.start).sum();
    if digits > 19 {
        return None;
    }
    let sep = |k: usize| &s[gs[k].sep_start..gs[k].start];
    let prefix = prefix_at.map(|p| s[p]);
    let first_digit = s[gs[0].start];
    let all_digits = || gs.iter().flat_map(|g| s[g.start..g.end].iter().copied());

    if prefix.is_none()
        && gs.len() == 4
        && (1..4).all(|k| sep(k) == b".")
        && gs
            .iter()
            .all(|g| (1..=3).contains(&(g.end - g.start)) && group_value(s, g) <= 255)
    {
        return Some(PiiShape::Ip);
    }

    let epoch_like = (digits == 10 || digits == 13) && first_digit == b'1';
    let card_grouping = gs.len() == 1
        || (gs[0].end - gs[0].start == 4
            && gs.iter().all(|g| (3..=6).contains(&(g.end - g.start)))
            && (1..gs.len()).all(|k| matches!(sep(k), b" " | b"-")));
    if prefix.is_none()
        && (13..=19).contains(&digits)
        && !(digits == 13 && first_digit == b'1')
        && card_grouping
        && luhn(all_digits())
    {
        return Some(PiiShape::Card);
    }

    if digits > 15 {
        return None;
    }
    if prefix == Some(b'+') {
        return (digits >= 7).then_some(PiiShape::Phone);
    }
    if digits < 9 {
        return None;
    }
    let end = gs[gs.len() - 1].end;
    if end + 1 < s.len() && s[end] == b':' && s[end + 1].is_ascii_digit() {
        return None;
    }
    if gs.len() == 1 {
        let compact: Vec<u8> = all_digits().collect();
        return (digits >= 10 && !epoch_like && !compact_datetime(&compact))
            .then_some(PiiShape::Phone);
    }
    if gs.len() == 2 && sep(1) == b"." {
        return None;
    }
    let len = |k: usize| gs[k].end - gs[k].start;
    if gs.len() >= 3 && is_date(s, gs) {
        return None;
    }
    if gs.len() == 2 && len(0) == 5 && len(1) == 4 && sep(1) == b"-" {
        return None;
    }
    let short_group = gs.iter().skip(1).any(|g| {
        let trunk = s[g.sep_start..g.start].last() == Some(&b'(') && s.get(g.end) == Some(&b')');
        g.end - g.start < 2 && !(g.end - g.start == 1 && trunk)
    });
    (!short_group).then_some(PiiShape::Phone)
}

/// The first three groups read as a date: `yyyy-mm-dd`, `dd.mm.yyyy`, …
fn is_date(s: &[u8], gs: &[Group]) -> bool {
    let sep1 = &s[gs[1].sep_start..gs[1].start];
    let sep2 = &s[gs[2].sep_start..gs[2].start];
    if sep1 != sep2 || !matches!(sep1, b"-" | b"." | b"/") {
        return false;
    }
    let l: Vec<usize> = gs[..3].iter().map(|g| g.end - g.start).collect();
    let v: Vec<u64> = gs[..3].iter().map(|g| group_value(s, g)).collect();
    let md = |m: u64, d: u64| (1..=12).contains(&m) && (1..=31).contains(&d);
    match (l[0], l[1], l[2]) {
        (4, 1..=2, 1..=2) => md(v[1], v[2]) || md(v[2], v[1]),
        (1..=2, 1..=2, 4) => md(v[1], v[0]) || md(v[0], v[1]),
        _ => false,
    }
}

/// `yyyymmddhhmm` or `yyyymmddhhmmss`.
fn compact_datetime(d: &[u8]) -> bool {
    if d.len() != 12 && d.len() != 14 {
        return false;
    }
    let num = |a: usize, b: usize| {
        d[a..b]
            .iter()
            .fold(0u32, |acc, &c| acc * 10 + u32::from(c - b'0'))
    };
    (1900..=2099).contains(&num(0, 4))
        && (1..=12).contains(&num(4, 6))
        && (1..=31).contains(&num(6, 8))
        && num(8, 10) <= 23
        && num(10, 12) <= 59
        && (d.len() == 12 || num(12, 14) <= 59)
}

fn ipv6s(s: &[u8], out: &mut Vec<Span>) {
    let in_token = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
    let n = s.len();
    let mut i = 0;
    while i < n {
        if !in_token(s[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && in_token(s[i]) {
            i += 1;
        }
        let mut end = i;
        if (start > 0 && is_word(s[start - 1])) || (end < n && is_word(s[end])) {
            continue;
        }
        while end > start && s[end - 1] == b'.' {
            end -= 1;
        }
        if end >= start + 2 && s[end - 1] == b':' && s[end - 2] != b':' {
            end -= 1;
        }
        let tok = &s[start..end];
        let colons = tok.iter().filter(|&&b| b == b':').count();
        let has_double = tok.windows(2).any(|w| w == b"::");
        if !(has_double || colons >= 3) || !tok.iter().any(u8::is_ascii_hexdigit) {
            continue;
        }
        let parsed = std::str::from_utf8(tok)
            .ok()
            .and_then(|t| t.parse::<Ipv6Addr>().ok());
        if parsed.is_some() {
            out.push(Span {
                start,
                end,
                shape: PiiShape::Ip,
            });
        }
    }
}

/// Every shape in one view of the text.
fn find_spans(s: &[u8], c: &Census, out: &mut Vec<Span>) {
    if c.at > 0 {
        emails(s, out);
    }
    if c.digits >= 4 {
        digit_runs(s, out, &mut Vec::new());
    }
    if c.colons >= 2 {
        ipv6s(s, out);
    }
}

/// A percent-decoded copy of some text, with, for each decoded byte, the
/// byte range of the text it came from.
struct Decoded {
    bytes: Vec<u8>,
    from: Vec<(usize, usize)>,
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `%XX` decoded and `+` read as a space; `None` when nothing changes.
fn decode(s: &[u8]) -> Option<Decoded> {
    if !s.iter().any(|&b| b == b'%' || b == b'+') {
        return None;
    }
    let mut bytes = Vec::with_capacity(s.len());
    let mut from = Vec::with_capacity(s.len());
    let mut changed = false;
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex_val(s[i + 1]), hex_val(s[i + 2]))
        {
            bytes.push(h * 16 + l);
            from.push((i, i + 3));
            changed = true;
            i += 3;
            continue;
        }
        if b == b'+' {
            bytes.push(b' ');
            changed = true;
        } else {
            bytes.push(b);
        }
        from.push((i, i + 1));
        i += 1;
    }
    changed.then_some(Decoded { bytes, from })
}

fn map_back(spans: &mut [Span], d: &Decoded) {
    for sp in spans {
        let start = d.from[sp.start].0;
        let end = d.from[sp.end - 1].1;
        sp.start = start;
        sp.end = end;
    }
}

/// Every shape in the text, in original byte offsets, merged.
fn spans_of(s: &str) -> Vec<Span> {
    let raw = s.as_bytes();
    let mut spans = Vec::new();
    let c0 = Census::of(raw);
    if c0.may_match() {
        find_spans(raw, &c0, &mut spans);
    }
    if c0.worth_decoding()
        && let Some(d1) = decode(raw)
    {
        let c1 = Census::of(&d1.bytes);
        let mut level1 = Vec::new();
        if c1.may_match() {
            find_spans(&d1.bytes, &c1, &mut level1);
        }
        if c1.worth_decoding()
            && let Some(d2) = decode(&d1.bytes)
        {
            let c2 = Census::of(&d2.bytes);
            let mut level2 = Vec::new();
            if c2.may_match() {
                find_spans(&d2.bytes, &c2, &mut level2);
            }
            map_back(&mut level2, &d2);
            level1.extend(level2);
        }
        map_back(&mut level1, &d1);
        spans.extend(level1);
    }
    if spans.is_empty() {
        return spans;
    }
    spans.retain(|sp| sp.end > sp.start);
    for sp in &mut spans {
        while !s.is_char_boundary(sp.start) {
            sp.start -= 1;
        }
        while !s.is_char_boundary(sp.end) {
            sp.end += 1;
        }
    }
    spans.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for sp in spans {
        match merged.last_mut() {
            Some(last) if sp.start < last.end => last.end = last.end.max(sp.end),
            _ => merged.push(sp),
        }
    }
    merged
}

/// Whether `s` holds any shape, without building the replacement.
pub(super) fn contains_shape(s: &str) -> bool {
    !spans_of(s).is_empty()
}

/// Replaces every e-mail, phone, IP and card shape in `s` with its marker;
/// borrowed when there is nothing to replace.
pub fn scrub_free_text(s: &str) -> Cow<'_, str> {
    let spans = spans_of(s);
    if spans.is_empty() {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for sp in spans {
        out.push_str(&s[at..sp.start]);
        out.push_str(sp.shape.marker());
        at = sp.end;
    }
    out.push_str(&s[at..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known_numbers() {
        assert!(looks_like_card("4111 1111 1111 1111"));
        assert!(looks_like_card("5555-5555-5555-4444"));
        assert!(looks_like_card("378282246310005"));
        assert!(!looks_like_card("4111 1111 1111 1112"));
        assert!(!looks_like_card("411111111111"));
        assert!(!looks_like_card("4111x1111 1111 1111"));
    }

    /// Inputs built to make a careless scanner quadratic. They finish in
    /// milliseconds here; a quadratic pass over 64 KiB would take minutes.
    #[test]
    fn pathological_inputs_stay_linear() {
        let n = 64 * 1024;
        let inputs = [
            format!("x@{}", "a.1".repeat(n / 3)),
            "a@".repeat(n / 2),
            format!("{}@", "a".repeat(n)),
            "1 ".repeat(n / 2),
            "1.".repeat(n / 2),
            "12-".repeat(n / 3),
            "+1 ".repeat(n / 3),
            ":".repeat(n),
            "a:".repeat(n / 2),
            "%25".repeat(n / 3),
            "%40a.bc".repeat(n / 7),
            "(1) ".repeat(n / 4),
        ];
        for input in &inputs {
            let out = scrub_free_text(input);
            assert_eq!(scrub_free_text(&out), out, "scrubbing is idempotent");
        }
    }

    #[test]
    fn census_counts_match_a_plain_count() {
        for len in [0, 1, 100, 191, 192, 193, 500, 4000] {
            let text: Vec<u8> = (0..len).map(|i| b"a1:@%+ 9x"[i % 9]).collect();
            let c = Census::of(&text);
            let count = |f: fn(&u8) -> bool| text.iter().filter(|b| f(b)).count();
            assert_eq!(c.digits, count(|b| b.is_ascii_digit()), "{len}");
            assert_eq!(c.colons, count(|&b| b == b':'), "{len}");
            assert_eq!(c.at, count(|&b| b == b'@'), "{len}");
            assert_eq!(c.pct, count(|&b| b == b'%'), "{len}");
            assert_eq!(c.plus, count(|&b| b == b'+'), "{len}");
        }
    }

    #[test]
    fn decode_maps_back_to_original_bytes() {
        let d = decode(b"a%40b+c").unwrap();
        assert_eq!(d.bytes, b"a@b c");
        assert_eq!(d.from[1], (1, 4));
        assert_eq!(d.from[3], (5, 6));
        assert!(decode(b"plain").is_none());
    }
}
