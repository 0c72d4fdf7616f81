//! The record layout: how an envelope becomes bytes in a segment and back.
//! The layout itself is described in the spool's module doc.

use std::io::{self, Read};
use std::ops::Range;

use bytes::Bytes;
use time::OffsetDateTime;

use super::Seq;
use crate::event::Envelope;
use crate::metrics::Metrics;

/// Frame header: payload length and crc32.
pub(super) const HEADER: usize = 8;
/// Payload header: `occurred_at` (Unix milliseconds, i64 LE), the length
/// of the event's JSON (u32 LE) with [`RECEIVED_AT_FLAG`] set, and
/// `received_at` (Unix milliseconds, i64 LE); then the event's JSON, then
/// the `AdMatch` JSON when there is one.
const PAYLOAD_HEADER: usize = 20;
/// The header of a payload without `received_at`: `occurred_at` and
/// `event_len` only.
const PAYLOAD_HEADER_NO_RECEIVED: usize = 12;
/// Set in `event_len` when `received_at` follows it.
const RECEIVED_AT_FLAG: u32 = 1 << 31;
/// A longer length field is corruption, not a record.
pub const MAX_RECORD: usize = 16 << 20;

/// One record as a reader sees it: the stored payload, decoded on demand.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: Seq,
    /// Size of the stored payload.
    pub bytes: usize,
    payload: Bytes,
    occurred_at: OffsetDateTime,
    received_at: OffsetDateTime,
    /// Where the event's JSON is in the payload.
    event: Range<usize>,
}

/// An event as the JSON the spool holds, for sinks that forward it
/// unchanged (`Sink::raw`): no parse, no second serialization.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub occurred_at: OffsetDateTime,
    /// When touchgate took the event in (the event's `received_at`).
    pub received_at: OffsetDateTime,
    /// The `Event` exactly as `serde_json` wrote it (one line, no newline).
    pub json: Bytes,
}

impl Record {
    pub fn occurred_at(&self) -> OffsetDateTime {
        self.occurred_at
    }

    /// When touchgate took the event in; `occurred_at` for a record written
    /// without that field.
    pub fn received_at(&self) -> OffsetDateTime {
        self.received_at
    }

    /// The event's JSON (without the ad-platform match keys).
    pub fn event_json(&self) -> Bytes {
        self.payload.slice(self.event.clone())
    }

    pub fn raw(&self) -> RawEvent {
        RawEvent {
            occurred_at: self.occurred_at,
            received_at: self.received_at,
            json: self.event_json(),
        }
    }

    /// Parse the envelope: the event and, when present, its match keys.
    pub fn decode(&self) -> Result<Envelope, serde_json::Error> {
        let event = serde_json::from_slice(&self.payload[self.event.clone()])?;
        let rest = &self.payload[self.event.end..];
        let ad_match = if rest.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(rest)?)
        };
        Ok(Envelope { event, ad_match })
    }

    /// Check the payload layout (either header); `None` when it is not one
    /// of ours.
    pub(super) fn new(seq: Seq, payload: Bytes) -> Option<Record> {
        let occurred_ms = i64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
        let len_field = u32::from_le_bytes(payload.get(8..12)?.try_into().ok()?);
        let (received_ms, start) = if len_field & RECEIVED_AT_FLAG != 0 {
            let ms = i64::from_le_bytes(payload.get(12..PAYLOAD_HEADER)?.try_into().ok()?);
            (ms, PAYLOAD_HEADER)
        } else {
            // Written before records carried their intake time: the
            // event's own time is the closest there is.
            (occurred_ms, PAYLOAD_HEADER_NO_RECEIVED)
        };
        let end = start.checked_add((len_field & !RECEIVED_AT_FLAG) as usize)?;
        if end > payload.len() {
            return None;
        }
        Some(Record {
            seq,
            bytes: payload.len(),
            occurred_at: from_unix_ms(occurred_ms)?,
            received_at: from_unix_ms(received_ms)?,
            event: start..end,
            payload,
        })
    }
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    // Every OffsetDateTime (years ±9999) is within i64 milliseconds.
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_unix_ms(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// Read a frame header at the reader's position. `Ok(None)` at a clean
/// end of file; `UnexpectedEof` when the file ends inside the header.
pub(super) fn read_header(r: &mut impl Read) -> io::Result<Option<[u8; HEADER]>> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(header))
}

/// The payload length a frame header gives; `InvalidData` past
/// [`MAX_RECORD`].
pub(super) fn frame_len(header: &[u8; HEADER]) -> io::Result<usize> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > MAX_RECORD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "record length out of range",
        ));
    }
    Ok(len)
}

/// Read one frame at the reader's position. `Ok(None)` at a clean end of
/// file; `Err` of kind `InvalidData`/`UnexpectedEof` for a torn or corrupt
/// frame.
pub(super) fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    let Some(header) = read_header(r)? else {
        return Ok(None);
    };
    let len = frame_len(&header)?;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    buf.resize(len, 0);
    r.read_exact(buf)?;
    if crc32fast::hash(buf) != crc {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "record checksum mismatch",
        ));
    }
    Ok(Some(len))
}

pub(super) fn is_torn(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
    )
}

/// Records serialized and framed, ready to be written.
pub(super) struct Encoded {
    pub(super) buf: Vec<u8>,
    /// End offset of each frame in `buf`.
    pub(super) ends: Vec<usize>,
}

/// Frame one envelope at the end of `buf`; `false` (and `buf` unchanged)
/// when it cannot be serialized or is larger than [`MAX_RECORD`].
fn encode_into(buf: &mut Vec<u8>, env: &Envelope) -> bool {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER + PAYLOAD_HEADER]);
    let mut ok = serde_json::to_writer(&mut *buf, &env.event).is_ok();
    let event_len = buf.len() - start - HEADER - PAYLOAD_HEADER;
    if let Some(m) = &env.ad_match {
        ok &= serde_json::to_writer(&mut *buf, m).is_ok();
    }
    let len = buf.len() - start - HEADER;
    if !ok || len > MAX_RECORD {
        buf.truncate(start);
        tracing::error!(event_id = %env.event.event_id, "spool: event cannot be serialized, dropped");
        return false;
    }
    let p = start + HEADER;
    buf[p..p + 8].copy_from_slice(&unix_ms(env.event.occurred_at).to_le_bytes());
    // `len <= MAX_RECORD` keeps the length clear of the flag bit.
    let len_field = event_len as u32 | RECEIVED_AT_FLAG;
    buf[p + 8..p + 12].copy_from_slice(&len_field.to_le_bytes());
    buf[p + 12..p + PAYLOAD_HEADER].copy_from_slice(&unix_ms(env.event.received_at).to_le_bytes());
    let crc = crc32fast::hash(&buf[p..]);
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    buf[start + 4..p].copy_from_slice(&crc.to_le_bytes());
    true
}

pub(super) fn encode(batch: &[Envelope], metrics: &Metrics) -> Encoded {
    let mut buf = Vec::with_capacity(batch.len() * 1024);
    let mut ends = Vec::with_capacity(batch.len());
    for env in batch {
        if encode_into(&mut buf, env) {
            ends.push(buf.len());
        } else {
            metrics.dropped("spool_error");
        }
    }
    Encoded { buf, ends }
}

/// One envelope serialized and framed for the spool. Serializing is most
/// of an append's CPU; producers that build frames themselves (one per
/// request task, in parallel) leave the single writer only the write:
/// see [`SpoolWriter::append_frames`](super::SpoolWriter::append_frames).
#[derive(Debug, Clone)]
pub struct FramedRecord(Vec<u8>);

impl FramedRecord {
    /// `None` when the envelope cannot be serialized or is larger than
    /// [`MAX_RECORD`] (logged; count it as dropped, reason `spool_error`).
    pub fn encode(env: &Envelope) -> Option<FramedRecord> {
        let mut buf = Vec::with_capacity(1536);
        encode_into(&mut buf, env).then_some(FramedRecord(buf))
    }

    /// Size on disk.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The frame as it goes to disk.
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AdMatch, Event, Origin};
    use time::macros::datetime;

    fn envelope(ad_match: bool) -> Envelope {
        let mut e = Event::new(
            "0123456789abcdef0123456789abcdef".into(),
            "account_created".into(),
            Origin::Ingest,
            datetime!(2026-10-01 08:00:00.250 UTC),
            datetime!(2026-11-29 10:00:00.125 UTC),
        );
        e.user_id = Some("u".into());
        Envelope {
            event: e,
            ad_match: ad_match.then(|| AdMatch {
                em: Some("ab".repeat(32)),
                ..AdMatch::default()
            }),
        }
    }

    /// A payload in the 12-byte layout: no `received_at`.
    fn payload_without_received_at(env: &Envelope) -> Vec<u8> {
        let event = serde_json::to_vec(&env.event).unwrap();
        let mut p = Vec::new();
        p.extend_from_slice(&unix_ms(env.event.occurred_at).to_le_bytes());
        p.extend_from_slice(&(event.len() as u32).to_le_bytes());
        p.extend_from_slice(&event);
        if let Some(m) = &env.ad_match {
            serde_json::to_writer(&mut p, m).unwrap();
        }
        p
    }

    fn framed_payload(env: &Envelope) -> Vec<u8> {
        let frame = FramedRecord::encode(env).unwrap();
        let payload = frame.0[HEADER..].to_vec();
        let len = u32::from_le_bytes(frame.0[..4].try_into().unwrap()) as usize;
        assert_eq!(len, payload.len());
        let crc = u32::from_le_bytes(frame.0[4..8].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&payload));
        payload
    }

    #[test]
    fn records_carry_received_at_in_a_20_byte_header() {
        for with_match in [false, true] {
            let env = envelope(with_match);
            let payload = framed_payload(&env);
            let len_field = u32::from_le_bytes(payload[8..12].try_into().unwrap());
            assert_ne!(len_field & RECEIVED_AT_FLAG, 0);
            let rec = Record::new(7, Bytes::from(payload.clone())).unwrap();
            assert_eq!(rec.occurred_at(), env.event.occurred_at);
            assert_eq!(rec.received_at(), env.event.received_at);
            assert_eq!(rec.bytes, payload.len());
            let json = serde_json::to_vec(&env.event).unwrap();
            assert_eq!(&rec.event_json()[..], &json[..]);
            assert_eq!(
                &payload[PAYLOAD_HEADER..PAYLOAD_HEADER + json.len()],
                &json[..]
            );
            let raw = rec.raw();
            assert_eq!(
                (raw.occurred_at, raw.received_at),
                (env.event.occurred_at, env.event.received_at)
            );
            assert_eq!(rec.decode().unwrap(), env);
        }
    }

    #[test]
    fn records_without_received_at_read_it_as_occurred_at() {
        for with_match in [false, true] {
            let env = envelope(with_match);
            let payload = payload_without_received_at(&env);
            let rec = Record::new(3, Bytes::from(payload)).unwrap();
            assert_eq!(rec.occurred_at(), env.event.occurred_at);
            assert_eq!(rec.received_at(), env.event.occurred_at);
            assert_eq!(rec.raw().received_at, env.event.occurred_at);
            assert_eq!(
                &rec.event_json()[..],
                &serde_json::to_vec(&env.event).unwrap()[..]
            );
            // The event inside keeps its own received_at.
            assert_eq!(rec.decode().unwrap(), env);
        }
    }

    #[test]
    fn malformed_headers_are_not_records() {
        let good = framed_payload(&envelope(false));
        // Shorter than either header.
        assert!(Record::new(0, Bytes::from(good[..11].to_vec())).is_none());
        // The flag says received_at follows, but the payload ends first.
        assert!(Record::new(0, Bytes::from(good[..16].to_vec())).is_none());
        // A length past the end, with and without the flag.
        for flag in [0, RECEIVED_AT_FLAG] {
            let mut p = good.clone();
            p[8..12].copy_from_slice(&(flag | (1 << 24)).to_le_bytes());
            assert!(Record::new(0, Bytes::from(p)).is_none());
        }
        // An empty event in the old layout is still framed correctly.
        let mut p = Vec::new();
        p.extend_from_slice(&0i64.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        let rec = Record::new(0, Bytes::from(p)).unwrap();
        assert!(rec.event_json().is_empty());
        assert!(rec.decode().is_err());
    }
}
