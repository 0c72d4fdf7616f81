#![no_main]
//! The direct HTTP/1.1 path's parsers over arbitrary bytes: request heads
//! (from clients), response heads and chunked bodies (from the app).
//! What is written back out must parse again whole, so nothing read can
//! split or extend a head.

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use touchgate::proxy::h1::chunked::Follower;
use touchgate::proxy::h1::head::{self, HeadEnd, Relay, Response};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };

    // Request heads.
    if let HeadEnd::Complete(n) = head::request_head_end(data, 100) {
        let raw = Bytes::copy_from_slice(&data[..n]);
        if let Some(req) = head::direct_request(&raw) {
            let mut out = Vec::new();
            head::write_request(&mut out, &req.parts);
            let mut headers = [httparse::EMPTY_HEADER; 130];
            let mut again = httparse::Request::new(&mut headers);
            assert_eq!(again.parse(&out).ok(), Some(httparse::Status::Complete(out.len())));
            assert_eq!(again.headers.len(), req.parts.headers.len());
        }
    }

    // Response heads.
    let extra = http::HeaderMap::new();
    let relay = Relay {
        head_request: flags & 1 != 0,
        close: flags & 2 != 0,
        extra: &extra,
        date: b"Mon, 30 Nov 2026 00:00:00 GMT",
    };
    let mut out = Vec::new();
    if let Ok(Some(Response::Final(h))) = head::response(data, &relay, &mut out) {
        assert!(h.len <= data.len());
        let mut headers = [httparse::EMPTY_HEADER; 140];
        let mut again = httparse::Response::new(&mut headers);
        assert_eq!(again.parse(&out).ok(), Some(httparse::Status::Complete(out.len())));
    }

    // Chunked bodies: split anywhere, the same verdict as whole.
    let mut whole = Follower::default();
    let whole_result = whole.feed(data);
    let mut split = Follower::default();
    let step = usize::from(flags >> 2) + 1;
    let mut consumed = 0;
    let mut split_result = Ok(());
    for chunk in data.chunks(step) {
        match split.feed(chunk) {
            Ok(n) => {
                consumed += n;
                if n < chunk.len() {
                    break;
                }
            }
            Err(e) => {
                split_result = Err(e);
                break;
            }
        }
    }
    match (whole_result, split_result) {
        (Ok(n), Ok(())) => {
            assert_eq!(n, consumed);
            assert_eq!(whole.is_done(), split.is_done());
        }
        (Err(_), Err(_)) => {}
        (w, s) => panic!("whole {w:?} vs split {s:?}"),
    }
});
