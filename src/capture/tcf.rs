//! The IAB TCF v2.2 TC string (cookie `euconsent-v2`): the core segment,
//! decoded far enough to say which purposes and which vendors the visitor
//! consented to.
//!
//! Written by hand: no TCF decoder in the environment's crate lists, and
//! the core segment is a fixed bit layout (IAB Tech Lab, "TCF v2 Consent
//! string and vendor list formats", Core String). Only the first segment
//! is read; the disclosed-vendors and publisher segments after a `.` do not
//! change consent.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use time::OffsetDateTime;

/// Google's id in the Global Vendor List.
pub const GOOGLE_VENDOR_ID: u16 = 755;

/// A TC string last updated longer ago than this is outdated: IAB's policy
/// asks CMPs to ask again after 13 months, and Google refuses older ones.
pub const MAX_AGE: time::Duration = time::Duration::days(396);

/// A longer cookie is not a TC string (the core segment of a string
/// with every vendor of the GVL as a bitfield is about 1.5 KB).
const MAX_LEN: usize = 8192;

/// What the core segment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcString {
    pub version: u8,
    pub created: OffsetDateTime,
    pub last_updated: OffsetDateTime,
    pub cmp_id: u16,
    pub vendor_list_version: u16,
    pub policy_version: u8,
    /// Bit `n - 1` set: purpose `n` (1..=24) consented.
    pub purposes_consent: u32,
    /// Vendor ids with consent, sorted.
    pub vendor_consents: Vec<u16>,
}

/// Why a TC string gives no consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TcfError {
    #[error("not base64url")]
    Encoding,
    #[error("the core segment ends early")]
    Truncated,
    #[error("version {0}, not 2")]
    Version(u8),
    #[error("a vendor range is empty or past the largest vendor id")]
    Range,
    #[error("longer than any TC string")]
    TooLong,
}

impl TcfError {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            TcfError::Encoding | TcfError::Truncated | TcfError::Range | TcfError::TooLong => {
                "malformed"
            }
            TcfError::Version(_) => "outdated",
        }
    }
}

impl TcString {
    pub fn purpose(&self, n: u8) -> bool {
        (1..=24).contains(&n) && self.purposes_consent & (1 << (n - 1)) != 0
    }

    pub fn vendor(&self, id: u16) -> bool {
        self.vendor_consents.binary_search(&id).is_ok()
    }

    /// Outdated at `now`: last updated more than [`MAX_AGE`] ago, or
    /// written under a policy before TCF v2.2 (policy version 4).
    pub fn outdated(&self, now: OffsetDateTime) -> bool {
        self.policy_version < 4 || now - self.last_updated > MAX_AGE
    }
}

/// Decode the core segment of `value`.
pub fn decode(value: &str) -> Result<TcString, TcfError> {
    if value.len() > MAX_LEN {
        return Err(TcfError::TooLong);
    }
    let core = value.split('.').next().unwrap_or_default();
    // Some CMPs pad; the spec says not to, so both are read.
    let bytes = B64
        .decode(core.trim_end_matches('='))
        .map_err(|_| TcfError::Encoding)?;
    let mut r = Bits::new(&bytes);
    let version = r.take(6)? as u8;
    if version != 2 {
        return Err(TcfError::Version(version));
    }
    let created = deciseconds(r.take(36)?)?;
    let last_updated = deciseconds(r.take(36)?)?;
    let cmp_id = r.take(12)? as u16;
    let _cmp_version = r.take(12)?;
    let _consent_screen = r.take(6)?;
    let _consent_language = r.take(12)?;
    let vendor_list_version = r.take(12)? as u16;
    let policy_version = r.take(6)? as u8;
    let _is_service_specific = r.take(1)?;
    let _use_non_standard_texts = r.take(1)?;
    let _special_features = r.take(12)?;
    let purposes = r.take(24)? as u32;
    let _purposes_li = r.take(24)?;
    let _purpose_one_treatment = r.take(1)?;
    let _publisher_cc = r.take(12)?;
    let vendor_consents = vendor_section(&mut r)?;
    // Bit n of the field (from its first bit) is purpose n + 1.
    let purposes_consent = purposes.reverse_bits() >> 8;
    Ok(TcString {
        version,
        created,
        last_updated,
        cmp_id,
        vendor_list_version,
        policy_version,
        purposes_consent,
        vendor_consents,
    })
}

fn deciseconds(ds: u64) -> Result<OffsetDateTime, TcfError> {
    OffsetDateTime::from_unix_timestamp((ds / 10) as i64).map_err(|_| TcfError::Truncated)
}

/// MaxVendorId, then a bitfield or a list of ranges.
fn vendor_section(r: &mut Bits<'_>) -> Result<Vec<u16>, TcfError> {
    let max = r.take(16)? as u16;
    let is_range = r.take(1)? == 1;
    let mut out = Vec::new();
    if !is_range {
        for id in 1..=max {
            if r.take(1)? == 1 {
                out.push(id);
            }
        }
        return Ok(out);
    }
    let entries = r.take(12)?;
    for _ in 0..entries {
        let is_a_range = r.take(1)? == 1;
        let start = r.take(16)? as u16;
        let end = if is_a_range {
            r.take(16)? as u16
        } else {
            start
        };
        if start == 0 || end < start || end > max {
            return Err(TcfError::Range);
        }
        out.extend(start..=end);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A big-endian bit reader.
struct Bits<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(bytes: &'a [u8]) -> Bits<'a> {
        Bits { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<u64, TcfError> {
        if self.pos + n > self.bytes.len() * 8 {
            return Err(TcfError::Truncated);
        }
        let mut v = 0u64;
        for i in self.pos..self.pos + n {
            let bit = (self.bytes[i / 8] >> (7 - i % 8)) & 1;
            v = (v << 1) | u64::from(bit);
        }
        self.pos += n;
        Ok(v)
    }
}

/// A TC string from its parts: for tests, the fuzz target's seeds and the
/// README's examples. Vendors are written as ranges when that is shorter.
pub fn encode(tc: &TcString) -> String {
    let mut w = BitWriter::default();
    let ds = |t: OffsetDateTime| (t.unix_timestamp().max(0) as u64) * 10;
    w.put(u64::from(tc.version), 6);
    w.put(ds(tc.created), 36);
    w.put(ds(tc.last_updated), 36);
    w.put(u64::from(tc.cmp_id), 12);
    w.put(1, 12);
    w.put(1, 6);
    // "EN": letters as 0..=25.
    w.put(4, 6);
    w.put(13, 6);
    w.put(u64::from(tc.vendor_list_version), 12);
    w.put(u64::from(tc.policy_version), 6);
    w.put(0, 1);
    w.put(0, 1);
    w.put(0, 12);
    w.put(u64::from((tc.purposes_consent << 8).reverse_bits()), 24);
    w.put(0, 24);
    w.put(0, 1);
    w.put(4 * 64 + 4, 12);
    let max = tc.vendor_consents.iter().copied().max().unwrap_or(0);
    w.put(u64::from(max), 16);
    let ranges = ranges(&tc.vendor_consents);
    let range_bits = 12
        + ranges
            .iter()
            .map(|(s, e)| if s == e { 17 } else { 33 })
            .sum::<usize>();
    if range_bits < usize::from(max) {
        w.put(1, 1);
        w.put(ranges.len() as u64, 12);
        for (s, e) in ranges {
            w.put(u64::from(s != e), 1);
            w.put(u64::from(s), 16);
            if s != e {
                w.put(u64::from(e), 16);
            }
        }
    } else {
        w.put(0, 1);
        for id in 1..=max {
            w.put(u64::from(tc.vendor_consents.contains(&id)), 1);
        }
    }
    // The legitimate-interest vendor section, empty, and no restrictions.
    w.put(0, 16);
    w.put(0, 1);
    w.put(0, 12);
    B64.encode(w.bytes())
}

fn ranges(ids: &[u16]) -> Vec<(u16, u16)> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for id in sorted {
        match out.last_mut() {
            Some((_, e)) if *e + 1 == id => *e = id,
            _ => out.push((id, id)),
        }
    }
    out
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    len: usize,
}

impl BitWriter {
    fn put(&mut self, v: u64, n: usize) {
        for i in (0..n).rev() {
            if self.len.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if (v >> i) & 1 == 1 {
                let last = self.bytes.len() - 1;
                self.bytes[last] |= 1 << (7 - self.len % 8);
            }
            self.len += 1;
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(s).unwrap()
    }

    /// The TCF v2 example string the IAB Tech Lab's documents and many
    /// decoders use, with the values other decoders publish for it.
    #[test]
    fn decodes_the_iab_example() {
        let s = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA.IFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAACEAAAAAgAQBAAAAAAAGBAAgAAAAAAAFAAECAAAgAAQARAEQAAAAAJAAIAAgAAAYQEAAAQmAgBC3ZAYzUw";
        let tc = decode(s).unwrap();
        assert_eq!(tc.version, 2);
        assert_eq!(tc.cmp_id, 27);
        assert_eq!(tc.vendor_list_version, 15);
        assert_eq!(tc.policy_version, 2);
        assert_eq!(tc.created, at(1_582_243_059));
        assert_eq!(tc.last_updated, at(1_582_243_059));
        let purposes: Vec<u8> = (1..=24).filter(|&n| tc.purpose(n)).collect();
        assert_eq!(purposes, vec![1, 2, 3]);
        assert_eq!(tc.vendor_consents, vec![2, 6, 8]);
        // Policy version 2 is before TCF v2.2.
        assert!(tc.outdated(at(1_582_243_059)));
    }

    #[test]
    fn reads_what_it_wrote() {
        let tc = TcString {
            version: 2,
            created: at(1_764_000_000),
            last_updated: at(1_764_400_000),
            cmp_id: 300,
            vendor_list_version: 120,
            policy_version: 5,
            purposes_consent: 0b100_0100_1101,
            vendor_consents: vec![1, 2, 3, 755, 1000],
        };
        let back = decode(&encode(&tc)).unwrap();
        assert_eq!(back, tc);
        for (n, want) in [
            (1, true),
            (2, false),
            (3, true),
            (4, true),
            (7, true),
            (11, true),
            (8, false),
        ] {
            assert_eq!(back.purpose(n), want, "purpose {n}");
        }
        assert!(back.vendor(GOOGLE_VENDOR_ID));
        assert!(!back.vendor(754));
        // With a segment after the core, as CMPs write.
        assert_eq!(decode(&format!("{}.IAAA", encode(&tc))).unwrap(), tc);
    }

    #[test]
    fn bad_strings_are_refused() {
        assert_eq!(decode(""), Err(TcfError::Truncated));
        assert_eq!(decode("!!!"), Err(TcfError::Encoding));
        // Version 1 (TCF v1 strings start with "B").
        assert_eq!(
            decode("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"),
            Err(TcfError::Version(1))
        );
        let tc = TcString {
            version: 2,
            created: at(1_764_000_000),
            last_updated: at(1_764_000_000),
            cmp_id: 1,
            vendor_list_version: 1,
            policy_version: 4,
            purposes_consent: 1,
            vendor_consents: (1..=900).step_by(2).collect(),
        };
        let bytes = B64.decode(encode(&tc)).unwrap();
        let cut = B64.encode(&bytes[..bytes.len() - 10]);
        assert_eq!(decode(&cut), Err(TcfError::Truncated));
        assert_eq!(decode(&"A".repeat(MAX_LEN + 1)), Err(TcfError::TooLong));
    }

    #[test]
    fn outdated() {
        let mut tc = TcString {
            version: 2,
            created: at(1_700_000_000),
            last_updated: at(1_700_000_000),
            cmp_id: 1,
            vendor_list_version: 1,
            policy_version: 4,
            purposes_consent: 1,
            vendor_consents: vec![],
        };
        let now = at(1_700_000_000) + time::Duration::days(30);
        assert!(!tc.outdated(now));
        assert!(tc.outdated(at(1_700_000_000) + time::Duration::days(400)));
        tc.policy_version = 2;
        assert!(tc.outdated(now));
    }

    proptest! {
        #[test]
        fn any_input_is_decoded_or_refused(s in "\\PC{0,300}") {
            let _ = decode(&s);
        }

        #[test]
        fn round_trip(p in 0u32..(1 << 24), vendors in proptest::collection::btree_set(1u16..2000, 0..60)) {
            let tc = TcString {
                version: 2,
                created: at(1_764_000_000),
                last_updated: at(1_764_000_000),
                cmp_id: 10,
                vendor_list_version: 3,
                policy_version: 5,
                purposes_consent: p,
                vendor_consents: vendors.into_iter().collect(),
            };
            prop_assert_eq!(decode(&encode(&tc)).unwrap(), tc);
        }
    }
}
