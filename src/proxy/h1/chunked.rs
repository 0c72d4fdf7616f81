//! Following a chunked response body (RFC 9112 §7.1) that is relayed as it
//! arrives: where the message ends, and whether it is well formed.
//!
//! Nothing is decoded or buffered: the bytes go to the client unchanged,
//! so the follower is strict (CRLF line ends, hex sizes that fit, no
//! control bytes in extensions or trailers). A body it rejects is cut off
//! and both connections closed, which is what a client sees from hyper's
//! path too when an upstream body fails mid-stream.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size (`digits` read so far).
    Size {
        size: u64,
        digits: u8,
    },
    /// After the size: an extension, up to the CR.
    Ext {
        size: u64,
    },
    /// CR seen after the size line.
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body from the upstream")]
pub struct Malformed;

/// Sizes above 2^60 are refused: no real body is that large, and the
/// bound keeps the arithmetic from overflowing.
const MAX_SIZE_DIGITS: u8 = 15;

#[derive(Debug, Clone)]
pub struct Follower {
    state: State,
}

impl Default for Follower {
    fn default() -> Self {
        Follower {
            state: State::Size { size: 0, digits: 0 },
        }
    }
}

impl Follower {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Follow `buf`; returns how many of its bytes belong to the body.
    /// Fewer than `buf.len()` only once the body has ended.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < buf.len() {
            if let State::Data(n) = self.state {
                let take = (buf.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                i += take;
                let left = n - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                continue;
            }
            if self.state == State::Done {
                return Ok(i);
            }
            let b = buf[i];
            i += 1;
            self.state = step(self.state, b)?;
        }
        Ok(i)
    }
}

fn step(state: State, b: u8) -> Result<State, Malformed> {
    Ok(match state {
        State::Size { size, digits } => match (b as char).to_digit(16) {
            Some(d) if digits < MAX_SIZE_DIGITS => State::Size {
                size: size * 16 + u64::from(d),
                digits: digits + 1,
            },
            Some(_) => return Err(Malformed),
            None if digits == 0 => return Err(Malformed),
            None => match b {
                b'\r' => State::SizeLf { size },
                b';' | b' ' | b'\t' => State::Ext { size },
                _ => return Err(Malformed),
            },
        },
        State::Ext { size } => match b {
            b'\r' => State::SizeLf { size },
            _ if is_field_byte(b) => State::Ext { size },
            _ => return Err(Malformed),
        },
        State::SizeLf { size } => match (b, size) {
            (b'\n', 0) => State::TrailerStart,
            (b'\n', n) => State::Data(n),
            _ => return Err(Malformed),
        },
        State::DataCr if b == b'\r' => State::DataLf,
        State::DataLf if b == b'\n' => State::Size { size: 0, digits: 0 },
        State::TrailerStart => match b {
            b'\r' => State::EndLf,
            // A line may not start with whitespace (obsolete line folding).
            b' ' | b'\t' => return Err(Malformed),
            _ if is_field_byte(b) => State::Trailer,
            _ => return Err(Malformed),
        },
        State::Trailer => match b {
            b'\r' => State::TrailerLf,
            _ if is_field_byte(b) => State::Trailer,
            _ => return Err(Malformed),
        },
        State::TrailerLf if b == b'\n' => State::TrailerStart,
        State::EndLf if b == b'\n' => State::Done,
        State::Data(_) | State::Done => state,
        State::DataCr | State::DataLf | State::TrailerLf | State::EndLf => {
            return Err(Malformed);
        }
    })
}

/// Visible ASCII, space, tab and obs-text: what a field line may hold.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn follow(chunks: &[&[u8]]) -> Result<(bool, usize), Malformed> {
        let mut f = Follower::default();
        let mut total = 0;
        for c in chunks {
            total += f.feed(c)?;
        }
        Ok((f.is_done(), total))
    }

    #[test]
    fn ends_exactly_at_the_end_of_the_message() {
        let body =
            b"5\r\nhello\r\n1a;name=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 1\r\n\r\n";
        let mut stream = body.to_vec();
        stream.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(follow(&[&stream]), Ok((true, body.len())));
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        assert_eq!(follow(&[b"5\r\nhel"]), Ok((false, 6)));
        assert_eq!(follow(&[b"0\r\n"]), Ok((false, 3)));
        assert_eq!(follow(&[b"0\r\nx: 1\r\n"]), Ok((false, 9)));
    }

    #[test]
    fn malformed_framing_is_refused() {
        for bad in [
            &b"\r\n"[..],              // no size
            b"g\r\n",                  // not hex
            b"5\nhello\r\n",           // bare LF after the size
            b"5\r\nhelloX\r\n",        // data longer than its size
            b"1000000000000000\r\n",   // 16 digits
            b"0\r\n folded\r\n\r\n",   // obs-fold in the trailers
            b"0\r\nx: a\x01b\r\n\r\n", // control byte in a trailer
            b"3;ext\x00\r\nabc\r\n",   // control byte in an extension
            b"0\r\n\r\r",              // CR where the final LF belongs
        ] {
            assert_eq!(
                follow(&[bad]),
                Err(Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// A reference encoder: chunks with optional extensions, then trailers.
    fn encode(chunks: &[Vec<u8>], ext: bool, trailers: &[(String, String)]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:x}", c.len()).as_bytes());
            if ext {
                out.extend_from_slice(b" ; a=b");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for (k, v) in trailers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        #[test]
        fn any_split_of_a_valid_body_ends_at_its_end(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
            ext in any::<bool>(),
            trailers in proptest::collection::vec(("[a-z][a-z-]{0,8}", "[ -~]{0,12}"), 0..3),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            tail in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let body = encode(&chunks, ext, &trailers);
            let mut stream = body.clone();
            stream.extend_from_slice(&tail);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut f = Follower::default();
            let mut consumed = 0;
            let mut from = 0;
            for p in points.into_iter().chain([stream.len()]) {
                if p < from { continue; }
                consumed += f.feed(&stream[from..p]).expect("valid body");
                from = p;
            }
            prop_assert!(f.is_done());
            prop_assert_eq!(consumed, body.len());
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_never_overrun(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut f = Follower::default();
            if let Ok(n) = f.feed(&bytes) {
                prop_assert!(n <= bytes.len());
                prop_assert!(n == bytes.len() || f.is_done());
            }
        }
    }
}
