//! Request-smuggling guard for HTTP/1.1.
//!
//! hyper resolves a request carrying both `Content-Length` and
//! `Transfer-Encoding` the way RFC 9112 §6.3 allows (the transfer coding
//! wins, the length is removed, the connection is closed afterwards), and
//! it accepts `chunked` named twice (RFC 9112 §6.1 forbids applying it
//! more than once), but it hides both from the service. Front ends and
//! back ends that resolve such heads differently are how requests are
//! smuggled, so touchgate answers them 400 without forwarding them, as
//! nginx does since 1.21.1: the wrapper here watches the bytes hyper
//! reads, follows HTTP/1.1 message framing, and records the index of the
//! first ambiguous request head and why it is ambiguous.
//!
//! Written by hand because no crate exposes this: it is a framing follower,
//! not a parser hyper relies on; if it loses track (upgrade, h2, oversized
//! head) it goes dormant and hyper's own safe handling remains.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Why a request head's framing is ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    /// Both `Content-Length` and `Transfer-Encoding`.
    BothFramings,
    /// `chunked` more than once (`chunked, chunked`, or on two lines).
    RepeatedChunked,
}

impl Ambiguity {
    /// The text of the 400 answer.
    pub fn text(self) -> &'static str {
        match self {
            Ambiguity::BothFramings => "request has both Content-Length and Transfer-Encoding\n",
            Ambiguity::RepeatedChunked => "request applies the chunked transfer coding twice\n",
        }
    }
}

/// Shared between the connection wrapper and the service of one connection.
#[derive(Debug)]
pub struct AmbiguousHeads {
    first: AtomicU64,
    repeated_chunked: AtomicBool,
}

impl AmbiguousHeads {
    pub fn new() -> Arc<AmbiguousHeads> {
        Arc::new(AmbiguousHeads {
            first: AtomicU64::new(u64::MAX),
            repeated_chunked: AtomicBool::new(false),
        })
    }

    /// Whether request number `index` (0-based, in connection order) had
    /// an ambiguous framing, and which.
    pub fn ambiguity(&self, index: u64) -> Option<Ambiguity> {
        if self.first.load(Ordering::Acquire) != index {
            return None;
        }
        Some(if self.repeated_chunked.load(Ordering::Acquire) {
            Ambiguity::RepeatedChunked
        } else {
            Ambiguity::BothFramings
        })
    }

    pub fn is_ambiguous(&self, index: u64) -> bool {
        self.ambiguity(index).is_some()
    }

    fn mark(&self, index: u64, why: Ambiguity) {
        // Only the first is kept: hyper closes the connection after it.
        if self
            .first
            .compare_exchange(u64::MAX, index, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.repeated_chunked
                .store(why == Ambiguity::RepeatedChunked, Ordering::Release);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head.
    Head,
    /// Skipping a fixed-length body.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize {
        size: u64,
        in_ext: bool,
        digits: u8,
    },
    /// Skipping chunk data, then its CRLF.
    ChunkData(u64),
    ChunkDataEnd,
    /// Reading trailer lines after the last chunk; `line_empty` tracks
    /// whether the current line has content yet.
    Trailers {
        line_empty: bool,
    },
    /// Lost track or nothing more to follow: stop looking.
    Dormant,
}

/// Follows HTTP/1.1 request framing over the bytes of one connection.
#[derive(Debug)]
pub struct HeadTracker {
    state: State,
    head: Vec<u8>,
    max_head: usize,
    index: u64,
    heads: Arc<AmbiguousHeads>,
}

impl HeadTracker {
    pub fn new(max_head: usize, heads: Arc<AmbiguousHeads>) -> HeadTracker {
        HeadTracker {
            state: State::Head,
            head: Vec::new(),
            max_head,
            index: 0,
            heads,
        }
    }

    pub fn is_dormant(&self) -> bool {
        self.state == State::Dormant
    }

    /// Part of a request head has arrived but not all of it.
    pub fn in_head(&self) -> bool {
        self.state == State::Head && !self.head.is_empty()
    }

    /// Every byte read so far belongs to complete requests: the next byte
    /// starts a new request head.
    pub fn between_requests(&self) -> bool {
        self.state == State::Head && self.head.is_empty()
    }

    pub fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            match self.state {
                State::Dormant => return,
                State::Head => {
                    // Empty lines before a request line are ignored (RFC 9112 §2.2).
                    if self.head.is_empty() {
                        let skip = buf
                            .iter()
                            .take_while(|b| matches!(b, b'\r' | b'\n'))
                            .count();
                        buf = &buf[skip..];
                        if buf.is_empty() {
                            return;
                        }
                        if buf.len() >= 3 && &buf[..3] == b"PRI" {
                            // HTTP/2 prior knowledge: not ours to follow.
                            self.state = State::Dormant;
                            return;
                        }
                        // The whole head in one read, as it nearly always
                        // is: read it where it is, no copy.
                        if let Some(end) = find_head_end(buf) {
                            self.finish_head(&buf[..end]);
                            buf = &buf[end..];
                            continue;
                        }
                    }
                    let start = self.head.len();
                    self.head.extend_from_slice(buf);
                    // Search from a little before the new bytes for the end of the head.
                    let from = start.saturating_sub(3);
                    match find_head_end(&self.head[from..]) {
                        Some(end) => {
                            let end = from + end;
                            let rest_from = end - start;
                            // A head split across reads is rare: its buffer
                            // is freed rather than kept for the connection's
                            // life at the size of the largest such head.
                            let head = std::mem::take(&mut self.head);
                            self.finish_head(&head[..end]);
                            buf = &buf[rest_from.min(buf.len())..];
                        }
                        None => {
                            if self.head.len() > self.max_head {
                                // hyper answers 431 and closes.
                                self.state = State::Dormant;
                            }
                            return;
                        }
                    }
                }
                State::Body(n) => {
                    let take = (buf.len() as u64).min(n);
                    buf = &buf[take as usize..];
                    self.state = if n == take {
                        State::Head
                    } else {
                        State::Body(n - take)
                    };
                }
                State::ChunkSize {
                    size,
                    in_ext,
                    digits,
                } => {
                    let b = buf[0];
                    buf = &buf[1..];
                    self.state = match b {
                        b'\n' => {
                            if size == 0 {
                                State::Trailers { line_empty: true }
                            } else {
                                State::ChunkData(size)
                            }
                        }
                        b'\r' => State::ChunkSize {
                            size,
                            in_ext,
                            digits,
                        },
                        _ if in_ext => State::ChunkSize {
                            size,
                            in_ext,
                            digits,
                        },
                        b';' | b' ' | b'\t' => State::ChunkSize {
                            size,
                            in_ext: true,
                            digits,
                        },
                        _ => match (b as char).to_digit(16) {
                            Some(d) if digits < 16 => State::ChunkSize {
                                size: size * 16 + d as u64,
                                in_ext,
                                digits: digits + 1,
                            },
                            _ => State::Dormant,
                        },
                    };
                }
                State::ChunkData(n) => {
                    let take = (buf.len() as u64).min(n);
                    buf = &buf[take as usize..];
                    self.state = if n == take {
                        State::ChunkDataEnd
                    } else {
                        State::ChunkData(n - take)
                    };
                }
                State::ChunkDataEnd => {
                    let b = buf[0];
                    buf = &buf[1..];
                    if b == b'\n' {
                        self.state = State::ChunkSize {
                            size: 0,
                            in_ext: false,
                            digits: 0,
                        };
                    }
                }
                State::Trailers { line_empty } => {
                    let b = buf[0];
                    buf = &buf[1..];
                    self.state = match b {
                        b'\n' if line_empty => State::Head,
                        b'\n' => State::Trailers { line_empty: true },
                        b'\r' => State::Trailers { line_empty },
                        _ => State::Trailers { line_empty: false },
                    };
                }
            }
        }
    }

    fn finish_head(&mut self, head: &[u8]) {
        let index = self.index;
        self.index += 1;
        let mut content_length: Option<u64> = None;
        let mut cl_seen = false;
        let mut te_seen = false;
        let mut chunked_last = false;
        let mut chunked_count = 0usize;
        let mut upgrade = false;
        let mut lines = head.split(|&b| b == b'\n');
        let request_line = lines.next().unwrap_or_default();
        if request_line.starts_with(b"CONNECT ") {
            upgrade = true;
        }
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"content-length") {
                cl_seen = true;
                content_length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te_seen = true;
                let mut codings = value
                    .split(|&b| b == b',')
                    .map(trim)
                    .filter(|c| !c.is_empty())
                    .peekable();
                // Only the last line's last coding says whether the body is chunked.
                chunked_last = false;
                while let Some(c) = codings.next() {
                    let chunked = c.eq_ignore_ascii_case(b"chunked");
                    chunked_count += usize::from(chunked);
                    if codings.peek().is_none() {
                        chunked_last = chunked;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                upgrade = true;
            }
        }
        let ambiguity = if cl_seen && te_seen {
            Some(Ambiguity::BothFramings)
        } else if chunked_count > 1 {
            Some(Ambiguity::RepeatedChunked)
        } else {
            None
        };
        if let Some(why) = ambiguity {
            self.heads.mark(index, why);
            // hyper closes the connection after this request.
            self.state = State::Dormant;
            return;
        }
        self.state = if upgrade {
            // After a 101 the bytes are another protocol's.
            State::Dormant
        } else if te_seen {
            if chunked_last {
                State::ChunkSize {
                    size: 0,
                    in_ext: false,
                    digits: 0,
                }
            } else {
                State::Dormant
            }
        } else if let Some(n) = content_length.filter(|&n| n > 0) {
            State::Body(n)
        } else if cl_seen && content_length.is_none() {
            // Invalid length: hyper answers 400 and closes.
            State::Dormant
        } else {
            State::Head
        };
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Offset just past the blank line that ends a head (`\r\n\r\n` or `\n\n`).
pub(crate) fn find_head_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|i| match buf.get(i + 1) {
        Some(b'\n') => Some(i + 2),
        Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => Some(i + 3),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Arc<AmbiguousHeads>, HeadTracker) {
        let heads = AmbiguousHeads::new();
        let mut t = HeadTracker::new(65536, heads.clone());
        for c in chunks {
            t.feed(c);
        }
        (heads, t)
    }

    #[test]
    fn flags_the_right_request_across_bodies_and_chunks() {
        let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n11;ext=1\r\nContent-Length: 3\r\n0\r\nX-T: 1\r\n\r\n\
GET /c HTTP/1.1\r\nHost: x\r\n\r\n\
POST /d HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        // Any split of the stream gives the same answer.
        for split in [1usize, 2, 3, 7, 64, stream.len()] {
            let chunks: Vec<&[u8]> = stream.chunks(split).collect();
            let (heads, t) = run(&chunks);
            assert!(!heads.is_ambiguous(0) && !heads.is_ambiguous(1) && !heads.is_ambiguous(2));
            assert!(heads.is_ambiguous(3), "split {split}");
            assert!(t.is_dormant());
        }
    }

    /// One request of the generated streams: 0 no body, 1 a
    /// Content-Length body, 2 a chunked body, 3 both framings (ambiguous).
    fn request(kind: u8, i: usize) -> Vec<u8> {
        let mut r = format!(
            "POST /{i} HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n",
            "p".repeat(i % 40)
        );
        match kind {
            0 => r.push_str("\r\n"),
            1 => r.push_str("Content-Length: 5\r\n\r\nhello"),
            2 => r.push_str("Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
            _ => r.push_str("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"),
        }
        r.into_bytes()
    }

    proptest::proptest! {
        /// Reading a head in place (whole in one read) and buffering it
        /// (split across reads) flag the same requests and end in the same
        /// state, and no head buffer is kept once a head is complete.
        #[test]
        fn any_split_reads_the_same_heads(
            kinds in proptest::collection::vec(0u8..4, 1..8),
            cuts in proptest::collection::vec(0usize..2000, 0..12),
        ) {
            let mut stream = Vec::new();
            for (i, &k) in kinds.iter().enumerate() {
                stream.extend_from_slice(&request(k, i));
                // Only the last request may be ambiguous: hyper closes there.
                if k == 3 {
                    break;
                }
            }
            let (whole, tw) = run(&[&stream]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([stream.len()]) {
                chunks.push(&stream[at..c]);
                at = c;
            }
            let (split, ts) = run(&chunks);
            for i in 0..kinds.len() as u64 {
                proptest::prop_assert_eq!(whole.is_ambiguous(i), split.is_ambiguous(i), "request {}", i);
            }
            proptest::prop_assert_eq!(tw.state, ts.state);
            proptest::prop_assert_eq!(tw.index, ts.index);
            proptest::prop_assert_eq!(ts.head.capacity(), 0);
            proptest::prop_assert_eq!(tw.head.capacity(), 0);
        }
    }

    #[test]
    fn te_before_cl_is_flagged_too() {
        let (heads, _) =
            run(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"]);
        assert!(heads.is_ambiguous(0));
        assert_eq!(heads.ambiguity(0), Some(Ambiguity::BothFramings));
    }

    #[test]
    fn chunked_twice_is_flagged_on_one_line_or_two() {
        for head in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked ,gzip, CHUNKED\r\n\r\n",
        ] {
            let (heads, t) = run(&[head]);
            assert_eq!(
                heads.ambiguity(0),
                Some(Ambiguity::RepeatedChunked),
                "{:?}",
                String::from_utf8_lossy(head)
            );
            assert!(t.is_dormant());
        }
        // Once is fine, with or without other codings before it.
        for head in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            let (heads, t) = run(&[head]);
            assert_eq!(heads.ambiguity(0), None);
            assert!(!t.is_dormant());
        }
    }

    #[test]
    fn upgrade_and_h2_go_dormant() {
        let (_, t) = run(&[
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello",
        ]);
        assert!(t.is_dormant());
        let (_, t) = run(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]);
        assert!(t.is_dormant());
    }
}
