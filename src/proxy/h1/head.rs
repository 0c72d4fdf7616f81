//! Request and response heads on the direct HTTP/1.1 path: parsed with
//! httparse, checked against what the direct path serves, and written
//! back out. Pure functions over bytes, so every rule here is tested
//! without a socket.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Uri, Version};
use std::mem::MaybeUninit;

use crate::proxy::headers;

/// Header lines parsed on the stack; a head with more goes to hyper,
/// which applies `proxy.max_headers` (431).
const MAX_HEADERS: usize = 128;

type HeaderSlots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

fn header_slots<'b>() -> HeaderSlots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Where the request head at the start of `buf` ends.
pub enum HeadEnd {
    Complete(usize),
    Partial,
    /// Malformed or over `max_headers`: hyper answers it.
    NotDirect,
}

pub fn request_head_end(buf: &[u8], max_headers: usize) -> HeadEnd {
    let mut slots = header_slots();
    let slots = &mut slots[..max_headers.clamp(1, MAX_HEADERS)];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => HeadEnd::Complete(n),
        Ok(httparse::Status::Partial) => HeadEnd::Partial,
        Err(_) => HeadEnd::NotDirect,
    }
}

/// A request the direct path serves.
#[derive(Debug)]
pub struct DirectRequest {
    pub parts: Parts,
    /// The client asked for the connection to close after this exchange.
    pub close: bool,
    /// The body's length (`Content-Length`; 0 without one).
    pub body: u64,
}

/// The head as `Parts`, if it is a request the direct path serves:
/// HTTP/1.1, origin-form target, a body only by one valid
/// `Content-Length` (no `Transfer-Encoding`), no `Expect`, no upgrade.
/// `None` sends the
/// request (and the rest of the connection) to hyper, which serves
/// everything, so the rules here only ever need to be conservative.
pub fn direct_request(head: &Bytes) -> Option<DirectRequest> {
    let mut slots = header_slots();
    let mut req = httparse::Request::new(&mut []);
    let Ok(httparse::Status::Complete(_)) = req.parse_with_uninit_headers(head, &mut slots) else {
        return None;
    };
    if req.version != Some(1) {
        return None;
    }
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    let path = req.path?;
    if !path.starts_with('/') || method == Method::CONNECT {
        return None;
    }
    let uri = Uri::from_maybe_shared(head.slice_ref(path.as_bytes())).ok()?;
    let mut map = HeaderMap::with_capacity(req.headers.len() + 8);
    let mut close = false;
    let mut body: Option<u64> = None;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value)).ok()?;
        if name == header::TRANSFER_ENCODING || name == header::EXPECT {
            return None;
        }
        if name == header::CONTENT_LENGTH {
            if body.is_some() {
                return None;
            }
            body = Some(parse_length(value.as_bytes())?);
        }
        if name == header::CONNECTION {
            close |= headers::has_token(value.as_bytes(), b"close");
        }
        map.append(name, value);
    }
    if headers::is_upgrade_request(&map) {
        return None;
    }
    let mut parts = Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = map;
    Some(DirectRequest {
        parts,
        close,
        body: body.unwrap_or(0),
    })
}

/// The head sent to the app: origin-form target, then the fields as the
/// request path left them.
pub fn write_request(out: &mut Vec<u8>, parts: &Parts) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_fields(out, &parts.headers);
    out.extend_from_slice(b"\r\n");
}

fn write_fields(out: &mut Vec<u8>, map: &HeaderMap) {
    for (name, value) in map {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// How the app's response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// HEAD, 204, 304: no body whatever the fields say.
    Empty,
    Length(u64),
    Chunked,
    /// Until the app closes: relayed, then the client connection closes.
    UntilClose,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    /// A 1xx other than 101: dropped (as hyper's client does); the real
    /// response follows. The value is the head's length.
    Interim(usize),
    Final(FinalHead),
}

#[derive(Debug, PartialEq, Eq)]
pub struct FinalHead {
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The app's connection may serve another exchange afterwards.
    pub reusable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("malformed response head from the upstream")]
    Malformed,
    #[error("upstream sent an invalid Content-Length")]
    Length,
    #[error("upstream switched protocols unasked")]
    Switching,
}

/// What the client connection needs from the response head writer.
pub struct Relay<'a> {
    /// The request was HEAD.
    pub head_request: bool,
    /// Close the client connection after this response.
    pub close: bool,
    /// Added after the app's fields (touchgate's `Set-Cookie` lines).
    pub extra: &'a HeaderMap,
    /// An HTTP-date for `Date` when the app sent none (hyper adds one too).
    pub date: &'a [u8],
}

/// Parse the app's response head at the start of `buf` and, for a final
/// response, write the head the client receives into `out`: hop-by-hop
/// fields and those `Connection` names removed, framing restated.
/// `Ok(None)`: the head is not complete yet.
pub fn response(
    buf: &[u8],
    relay: &Relay<'_>,
    out: &mut Vec<u8>,
) -> Result<Option<Response>, BadResponse> {
    let mut slots = header_slots();
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse::Malformed),
    };
    let status = resp.code.ok_or(BadResponse::Malformed)?;
    if status == 101 {
        return Err(BadResponse::Switching);
    }
    if (100..200).contains(&status) {
        return Ok(Some(Response::Interim(len)));
    }
    let http11 = resp.version == Some(1);

    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    let mut close = false;
    let mut has_date = false;
    let mut connection = false;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(h.value).ok_or(BadResponse::Length)?;
            if length.is_some_and(|l| l != n) {
                return Err(BadResponse::Length);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            chunked_last = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection = true;
            close |= headers::has_token(h.value, b"close");
        } else if name.eq_ignore_ascii_case(b"date") {
            has_date = true;
        }
    }
    let framing = if relay.head_request || status == 204 || status == 304 {
        Framing::Empty
    } else if transfer_encoding {
        if chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    // Both framings at once: the transfer coding wins, and the connection
    // is not trusted with another exchange (RFC 9112 §6.3).
    let reusable = http11
        && !close
        && framing != Framing::UntilClose
        && !(transfer_encoding && length.is_some());

    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(
        http::StatusCode::from_u16(status)
            .map_err(|_| BadResponse::Malformed)?
            .as_str()
            .as_bytes(),
    );
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if headers::is_hop_by_hop(name)
            // Names the app listed in `Connection` (read again per field
            // rather than collected: no allocation per response).
            || (connection
                && resp.headers.iter().any(|c| {
                    c.name.eq_ignore_ascii_case("connection") && headers::has_token(c.value, name)
                }))
            || (transfer_encoding && name.eq_ignore_ascii_case(b"content-length"))
        {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if relay.close || framing == Framing::UntilClose {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(relay.date);
        out.extend_from_slice(b"\r\n");
    }
    write_fields(out, relay.extra);
    out.extend_from_slice(b"\r\n");
    Ok(Some(Response::Final(FinalHead {
        len,
        status,
        framing,
        reusable,
    })))
}

/// A short plain-text answer from touchgate itself.
pub fn write_plain(
    out: &mut Vec<u8>,
    status: http::StatusCode,
    text: &str,
    close: bool,
    date: &[u8],
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(text.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(text.as_bytes());
}

/// 1*DIGIT, as RFC 9110 §8.6 has it (no sign, no spaces inside).
fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(raw: &str) -> Option<DirectRequest> {
        direct_request(&Bytes::copy_from_slice(raw.as_bytes()))
    }

    #[test]
    fn plain_requests_are_direct_and_keep_every_field() {
        let r = direct("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nX-A: 1\r\nX-A: 2\r\n\r\n")
            .expect("direct");
        assert_eq!(r.parts.method, Method::GET);
        assert_eq!(r.parts.uri, "/a?b=1");
        assert_eq!(r.parts.headers.get_all("x-a").iter().count(), 2);
        assert!(!r.close);
        let mut out = Vec::new();
        write_request(&mut out, &r.parts);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET /a?b=1 HTTP/1.1\r\nhost: x\r\naccept: */*\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
        assert!(
            direct("HEAD / HTTP/1.1\r\nContent-Length: 0\r\nConnection: keep-alive, Close\r\n\r\n")
                .expect("direct")
                .close
        );
        let post = direct("POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 1234\r\n\r\n")
            .expect("direct");
        assert_eq!((post.body, r.body), (1234, 0));
    }

    #[test]
    fn chunked_bodies_upgrades_and_odd_forms_go_to_hyper() {
        for raw in [
            "POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: 1\r\n\r\n",
        ] {
            assert!(direct(raw).is_none(), "{raw:?} was taken as direct");
        }
        assert!(matches!(
            request_head_end(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 100),
            HeadEnd::NotDirect | HeadEnd::Complete(_)
        ));
        assert!(matches!(
            request_head_end(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", 1),
            HeadEnd::NotDirect
        ));
        assert!(matches!(
            request_head_end(b"GET / HTTP/1.1\r\nA: 1\r\n", 100),
            HeadEnd::Partial
        ));
    }

    fn relay(head_request: bool, close: bool, extra: &HeaderMap) -> Relay<'_> {
        Relay {
            head_request,
            close,
            extra,
            date: b"Mon, 30 Nov 2026 00:00:00 GMT",
        }
    }

    fn respond(raw: &str, head_request: bool) -> (Result<Option<Response>, BadResponse>, String) {
        let extra = HeaderMap::new();
        let mut out = Vec::new();
        let r = response(
            raw.as_bytes(),
            &relay(head_request, false, &extra),
            &mut out,
        );
        (r, String::from_utf8_lossy(&out).into_owned())
    }

    fn fin(r: Result<Option<Response>, BadResponse>) -> FinalHead {
        match r {
            Ok(Some(Response::Final(f))) => f,
            other => panic!("not a final head: {other:?}"),
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let cases: [(&str, bool, Framing, bool); 9] = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
                false,
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                Framing::UntilClose,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, Framing::UntilClose, false),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
                true,
                Framing::Empty,
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                false,
            ),
        ];
        for (raw, head, framing, reusable) in cases {
            let f = fin(respond(raw, head).0);
            assert_eq!((f.framing, f.reusable), (framing, reusable), "{raw:?}");
            assert_eq!(f.len, raw.len());
        }
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
        ] {
            assert_eq!(respond(raw, false).0, Err(BadResponse::Length), "{raw:?}");
        }
        assert_eq!(
            respond("HTTP/1.1 101 Switching Protocols\r\n\r\n", false).0,
            Err(BadResponse::Switching)
        );
        let early = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
        assert_eq!(
            respond(early, false).0,
            Ok(Some(Response::Interim(early.len())))
        );
        assert_eq!(respond("HTTP/1.1 200 OK\r\nContent-Le", false).0, Ok(None));
        assert_eq!(
            respond("HTTP/1.1 2000 OK\r\n\r\n", false).0,
            Err(BadResponse::Malformed)
        );
    }

    #[test]
    fn the_client_head_drops_hop_by_hop_fields_and_restates_framing() {
        let (r, out) = respond(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nX-Secret: 1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nX-App: yes\r\nDate: Sun, 29 Nov 2026 00:00:00 GMT\r\n\r\n",
            false,
        );
        fin(r);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nX-App: yes\r\nDate: Sun, 29 Nov 2026 00:00:00 GMT\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut extra = HeaderMap::new();
        extra.append(header::SET_COOKIE, HeaderValue::from_static("tg_did=1"));
        let mut out = Vec::new();
        fin(response(
            b"HTTP/1.1 404 Whatever\r\n\r\n",
            &relay(false, true, &extra),
            &mut out,
        ));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 404 Whatever\r\nconnection: close\r\ndate: Mon, 30 Nov 2026 00:00:00 GMT\r\nset-cookie: tg_did=1\r\n\r\n"
        );
    }

    #[test]
    fn plain_answers_are_complete_responses() {
        let mut out = Vec::new();
        write_plain(
            &mut out,
            http::StatusCode::BAD_GATEWAY,
            "upstream unavailable\n",
            false,
            b"D",
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\ndate: D\r\n\r\nupstream unavailable\n"
        );
    }
}
