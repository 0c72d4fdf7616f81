//! The proxy over raw HTTP/1.1 bytes, in front of a scripted upstream on
//! 127.0.0.1 that answers with exact bytes: the framings, interim
//! responses, early answers, closed and misbehaving connections that a real
//! app produces and a well-behaved test server never would; and clients
//! that split heads anywhere, pipeline, upload slowly or go away.

#[path = "support/upstream.rs"]
mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream does after reading one request head.
#[derive(Clone)]
enum Then {
    /// Answer these bytes and keep the connection.
    Answer(&'static [u8]),
    /// Answer, then close.
    AnswerClose(&'static [u8]),
    /// Close without answering.
    Close,
    /// Answer after a pause.
    Late(&'static [u8], Duration),
    /// Answer once the head is read, before reading any of the body, and
    /// keep reading whatever comes after.
    BeforeBody(&'static [u8]),
    /// Answer nothing; note when the connection is closed.
    Hold,
    /// Answer in pieces, pausing before each one after the first.
    Pieces(&'static [&'static [u8]], Duration),
}

#[derive(Clone, Default)]
struct Script {
    steps: Arc<Mutex<VecDeque<Then>>>,
    heads: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    /// Connections open now.
    open: Arc<AtomicUsize>,
    /// When a held connection was closed by touchgate.
    closed_at: Arc<Mutex<Option<std::time::Instant>>>,
}

impl Script {
    fn push(&self, t: Then) {
        self.steps.lock().unwrap().push_back(t);
    }
    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// Counts a connection open until it is dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn scripted() -> (SocketAddr, Script) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let script = Script::default();
    let s = script.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = l.accept().await {
            s.connections.fetch_add(1, Ordering::SeqCst);
            s.open.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let _open = Open(s.open.clone());
                let mut buf = Vec::new();
                loop {
                    // One request head.
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head: Vec<u8> = buf.drain(..end).collect();
                    let head = String::from_utf8_lossy(&head).into_owned();
                    // A Content-Length body is read and kept with its head.
                    let len: usize = head
                        .to_ascii_lowercase()
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length: ")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    let step = s.steps.lock().unwrap().pop_front();
                    if let Some(Then::BeforeBody(b)) = step {
                        s.heads.lock().unwrap().push(head);
                        if conn.write_all(b).await.is_err() {
                            return;
                        }
                        let mut sink = [0u8; 65536];
                        while let Ok(n) = conn.read(&mut sink).await {
                            if n == 0 {
                                return;
                            }
                        }
                        return;
                    }
                    if let Some(Then::Hold) = step {
                        s.heads.lock().unwrap().push(head);
                        let mut sink = [0u8; 4096];
                        while let Ok(n) = conn.read(&mut sink).await {
                            if n == 0 {
                                break;
                            }
                        }
                        *s.closed_at.lock().unwrap() = Some(std::time::Instant::now());
                        return;
                    }
                    while buf.len() < len {
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Vec<u8> = buf.drain(..len).collect();
                    s.heads
                        .lock()
                        .unwrap()
                        .push(head + &String::from_utf8_lossy(&body));
                    match step {
                        Some(Then::Answer(b)) => {
                            if conn.write_all(b).await.is_err() {
                                return;
                            }
                        }
                        Some(Then::AnswerClose(b)) => {
                            let _ = conn.write_all(b).await;
                            return;
                        }
                        Some(Then::Late(b, d)) => {
                            tokio::time::sleep(d).await;
                            if conn.write_all(b).await.is_err() {
                                return;
                            }
                        }
                        Some(Then::Pieces(pieces, pause)) => {
                            for (i, piece) in pieces.iter().enumerate() {
                                if i > 0 {
                                    tokio::time::sleep(pause).await;
                                }
                                if conn.write_all(piece).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Some(Then::Close | Then::BeforeBody(_) | Then::Hold) | None => return,
                    }
                }
            });
        }
    });
    (addr, script)
}

async fn proxy(up: SocketAddr, extra: &str) -> (touchgate::app::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(up, dir.path(), extra);
    (touchgate(&toml).await, dir)
}

/// A client connection that reads whole responses (Content-Length or
/// chunked bodies) one at a time.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!(
                "no response within 5 s; have {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// One response: (head, body). Panics if the connection ends first.
    async fn response(&mut self, head_request: bool) -> (String, Vec<u8>) {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill().await,
                "closed before a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let lower = head.to_ascii_lowercase();
        if head_request || head.starts_with("HTTP/1.1 204") || head.starts_with("HTTP/1.1 304") {
            return (head, Vec::new());
        }
        if let Some(cl) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
        {
            let n: usize = cl.trim().parse().unwrap();
            while self.buf.len() < n {
                assert!(self.fill().await, "closed inside the body");
            }
            return (head, self.buf.drain(..n).collect());
        }
        if lower.contains("transfer-encoding: chunked") {
            loop {
                if let Some(n) = chunked_len(&self.buf) {
                    return (head, self.buf.drain(..n).collect());
                }
                assert!(self.fill().await, "closed inside a chunked body");
            }
        }
        // Until close.
        while self.fill().await {}
        (head, std::mem::take(&mut self.buf))
    }

    async fn closed(&mut self) -> bool {
        !self.fill().await && self.buf.is_empty()
    }
}

/// The length of a complete chunked body at the start of `buf` (chunks,
/// last chunk, trailers), or `None` while it is incomplete.
fn chunked_len(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line = buf[at..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&buf[at..at + line]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at += line + 2;
        if size == 0 {
            // Trailer lines, then the empty line.
            loop {
                let line = buf[at..].windows(2).position(|w| w == b"\r\n")?;
                at += line + 2;
                if line == 0 {
                    return Some(at);
                }
            }
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        at += size + 2;
    }
}

/// The data of a chunked body (the client above returns it as sent).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = String::from_utf8_lossy(&raw[..line]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

const OK_HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-App: 1\r\n\r\nhello";

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_upstream_connection() {
    let (up, script) = scripted().await;
    script.push(Then::Answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
    ));
    script.push(Then::Answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb",
    ));
    script.push(Then::Answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc",
    ));
    let (tg, _d) = proxy(up, "").await;
    let mut c = Client::connect(tg.proxy_addr).await;
    c.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    for want in [b"a", b"b", b"c"] {
        let (head, body) = c.response(false).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(&body, want);
    }
    let heads = script.heads();
    let targets: Vec<&str> = heads.iter().map(|h| h.split(' ').nth(1).unwrap()).collect();
    assert_eq!(targets, ["/1", "/2", "/3"]);
    assert_eq!(
        script.connections(),
        1,
        "the pooled connection was not reused"
    );
    // What the app received: header hygiene as on hyper's path.
    let h = heads[0].to_ascii_lowercase();
    assert!(h.starts_with("get /1 http/1.1\r\n"), "{h}");
    assert!(
        h.contains("\r\nhost: x\r\n") && h.contains("\r\nvia: 1.1 touchgate\r\n"),
        "{h}"
    );
    assert!(h.contains("\r\nx-forwarded-for: 127.0.0.0\r\n"), "{h}");
}

#[tokio::test]
async fn every_response_framing_is_relayed_byte_for_byte() {
    let (up, script) = scripted().await;
    let chunked: &'static [u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 9\r\n\r\n";
    script.push(Then::Answer(chunked));
    script.push(Then::Answer(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-After: interim\r\n\r\n"));
    script.push(Then::Answer(
        b"HTTP/1.1 304 Not Modified\r\nETag: \"1\"\r\n\r\n",
    ));
    script.push(Then::Answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
    ));
    script.push(Then::AnswerClose(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
    ));
    let (tg, _d) = proxy(up, "").await;
    let mut c = Client::connect(tg.proxy_addr).await;

    c.send(b"GET /chunked HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
        .await;
    let (head, body) = c.response(false).await;
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    // hyper re-frames the body: the same data and trailers, without the
    // chunk extension (which carries no meaning across a hop).
    assert_eq!(
        &body[..],
        b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 9\r\n\r\n",
        "data and trailers"
    );

    c.send(b"GET /interim HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, _) = c.response(false).await;
    assert!(
        head.starts_with("HTTP/1.1 204 No Content\r\n")
            && head.to_ascii_lowercase().contains("x-after: interim"),
        "{head}"
    );

    c.send(b"GET /cached HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"1\"\r\n\r\n")
        .await;
    let (head, _) = c.response(false).await;
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");

    c.send(b"HEAD /big HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = c.response(true).await;
    assert!(
        head.to_ascii_lowercase().contains("content-length: 1234") && body.is_empty(),
        "{head}"
    );

    assert_eq!(
        script.connections(),
        1,
        "one upstream connection served the first four"
    );

    // No length, no chunks: the app's body ends when it closes. The
    // client gets it chunked, and keeps its connection.
    c.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = c.response(false).await;
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(dechunk(&body), b"until the end");
    script.push(Then::Answer(OK_HELLO));
    c.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response(false).await.1, b"hello");
    assert_eq!(script.connections(), 2);
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_app_is_retried_only_when_safe() {
    let (up, script) = scripted().await;
    let (tg, _d) = proxy(up, "").await;
    // The app closes the connection right after answering, without saying so.
    script.push(Then::Answer(OK_HELLO));
    script.push(Then::Close);
    script.push(Then::Answer(OK_HELLO));
    let mut c = Client::connect(tg.proxy_addr).await;
    c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response(false).await.1, b"hello");
    // The reused connection is closed unanswered: a GET is sent again on a
    // new connection and the client sees nothing of it.
    c.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = c.response(false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"hello");
    assert_eq!(script.connections(), 2);
    assert_eq!(script.heads().len(), 3);

    // A POST is not repeated: the client gets the 502.
    script.push(Then::Close);
    c.send(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await;
    let (head, body) = c.response(false).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert_eq!(body, b"upstream unavailable\n");
    assert_eq!(script.heads().len(), 4, "the POST was sent twice");
    // And the client connection is still good.
    script.push(Then::Answer(OK_HELLO));
    c.send(b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response(false).await.1, b"hello");
    let metrics = reqwest_free_metrics(tg.admin_addr).await;
    assert!(
        metrics.contains("touchgate_upstream_errors_total{kind=\"failed\"} 1"),
        "{metrics}"
    );
}

async fn reqwest_free_metrics(admin: SocketAddr) -> String {
    let (_, body) = get(&format!("http://{admin}/metrics"), &[]).await;
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn misbehaving_upstreams_get_502_or_504_and_are_not_reused() {
    let (up, script) = scripted().await;
    let (tg, _d) = proxy(up, "").await;
    let mut c = Client::connect(tg.proxy_addr).await;
    for (answer, status) in [
        (
            Then::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"),
            "502",
        ),
        (
            Then::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n"),
            "502",
        ),
        (
            Then::Answer(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"),
            "502",
        ),
        (Then::Answer(b"NOT HTTP AT ALL\r\n\r\n"), "502"),
        (Then::Late(OK_HELLO, Duration::from_secs(4)), "504"),
    ] {
        script.push(answer);
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (head, _) = c.response(false).await;
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{head}");
    }
    // Each failure closed its upstream connection: five connections.
    assert_eq!(script.connections(), 5);

    // Bytes after a complete response: the client gets the response, the
    // connection is not reused.
    script.push(Then::Answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE",
    ));
    script.push(Then::Answer(OK_HELLO));
    c.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response(false).await.1, b"ok");
    c.send(b"GET /y HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response(false).await.1, b"hello");
    assert_eq!(script.connections(), 7);

    // A chunked body that breaks its framing in its first bytes: the head
    // is already on its way, so the client connection is closed without a
    // complete response (no 200 that looks whole), and the next
    // connection is served.
    script.push(Then::Answer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n",
    ));
    c.send(b"GET /z HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.s.read_to_end(&mut rest)).await;
    let rest = [c.buf.clone(), rest].concat();
    let body_at = rest.windows(4).position(|w| w == b"\r\n\r\n");
    assert!(
        body_at.is_none_or(|i| chunked_len(&rest[i + 4..]).is_none()),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    script.push(Then::Answer(OK_HELLO));
    let mut c = Client::connect(tg.proxy_addr).await;
    c.send(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response(false).await.1, b"hello");
}

/// Later in the body the client has the head already: the response is
/// cut off where the framing broke, and the connection closed.
#[tokio::test]
async fn a_body_broken_after_its_head_is_cut_off() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut conn, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf).await;
        conn.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.write_all(b"3\r\nabcXX\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let (tg, _d) = proxy(up, "").await;
    let mut c = Client::connect(tg.proxy_addr).await;
    c.send(b"GET /z HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.s.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.starts_with("HTTP/1.1 200") && rest.ends_with("5\r\nhello\r\n"),
        "{rest}"
    );
}

#[tokio::test]
async fn chunked_bodies_and_smuggling_on_one_connection() {
    // A real (hyper) upstream, so bodies and upgrades are answered.
    let site = Site::new("").await;
    let mut c = Client::connect(site.tg.proxy_addr).await;
    c.send(b"GET /headers HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await;
    let (head, _) = c.response(false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // A chunked body: hyper serves it, on the same client connection.
    c.send(b"POST /echo HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").await;
    let (head, body) = c.response(false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(dechunk(&body), b"hello");
    // And hyper keeps serving the rest of the connection.
    c.send(b"GET /status/404 HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await;
    let (head, _) = c.response(false).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let seen = site.up.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(&seen[1].body[..], b"hello");
    // Smuggling is still refused on a connection that started direct.
    let resp = raw(
        site.tg.proxy_addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(resp.contains("HTTP/1.1 400"), "{resp}");
    assert_eq!(
        site.up.requests().len(),
        4,
        "the ambiguous request was forwarded"
    );
}

#[tokio::test]
async fn slow_heads_are_cut_and_connection_close_is_honoured() {
    let (up, script) = scripted().await;
    let (tg, _d) = proxy(up, "").await;
    // header_read_timeout is 2 s in the test config.
    let started = std::time::Instant::now();
    let mut c = Client::connect(tg.proxy_addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost:").await;
    assert!(c.closed().await);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    script.push(Then::Answer(OK_HELLO));
    let mut c = Client::connect(tg.proxy_addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let (head, body) = c.response(false).await;
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, b"hello");
    assert!(c.closed().await);
    assert!(
        !script.heads()[0]
            .to_ascii_lowercase()
            .contains("connection:"),
        "Connection is hop-by-hop"
    );
}

#[tokio::test]
async fn landings_over_raw_http1_get_cookies_headers_and_an_event() {
    let (up, script) = scripted().await;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let extra = format!(
        "[[sink]]\ntype = \"file\"\npath = \"{}\"\n[sink.delivery]\nlinger = \"10ms\"\n",
        events.display()
    );
    let tg = touchgate(&config_toml(up, dir.path(), &extra)).await;
    script.push(Then::Answer(OK_HELLO));
    let mut c = Client::connect(tg.proxy_addr).await;
    c.send(b"GET /landing?utm_source=google&utm_medium=cpc&gclid=abc HTTP/1.1\r\nHost: shop.example\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\nReferer: https://www.google.com/\r\nX-Touch-Device: forged\r\n\r\n").await;
    let (head, body) = c.response(false).await;
    assert_eq!(body, b"hello");
    let cookies: Vec<&str> = head
        .lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .collect();
    for name in ["tg_did=", "tg_sid=", "tg_ft=", "tg_lt="] {
        assert!(
            cookies
                .iter()
                .any(|c| c.starts_with(name) && c.contains("HttpOnly")),
            "{name} missing: {head}"
        );
    }
    let app = script.heads()[0].to_ascii_lowercase();
    assert!(!app.contains("forged"), "{app}");
    for h in [
        "x-touch-device: ",
        "x-touch-session: ",
        "x-touch-first: ",
        "x-touch-last: ",
        "x-touch-id: ",
    ] {
        assert!(app.contains(h), "{h} missing: {app}");
    }
    eventually("the landing event", || {
        support::events(&events)
            .iter()
            .any(|e| e["event_name"] == "landing" && e["touch"]["source"] == "google")
    })
    .await;
}

#[tokio::test]
async fn sigterm_closes_idle_connections_and_finishes_busy_ones() {
    let (up, script) = scripted().await;
    let (tg, _d) = proxy(up, "").await;
    script.push(Then::Answer(OK_HELLO));
    script.push(Then::Late(OK_HELLO, Duration::from_millis(800)));
    let mut idle = Client::connect(tg.proxy_addr).await;
    idle.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(idle.response(false).await.1, b"hello");
    let mut busy = Client::connect(tg.proxy_addr).await;
    busy.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let drained = tokio::spawn(tg.drain(Duration::ZERO));
    // The idle keep-alive connection is closed at once.
    assert!(idle.closed().await);
    // The request in flight completes, told that the connection closes.
    let (head, body) = busy.response(false).await;
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("connection: close"),
        "{head}"
    );
    assert_eq!(body, b"hello");
    assert!(busy.closed().await);
    tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .expect("drain finished")
        .unwrap();
}

#[tokio::test]
async fn a_config_with_the_retired_http1_direct_key_still_starts() {
    let (up, script) = scripted().await;
    let dir = tempfile::tempdir().unwrap();
    let toml =
        config_toml(up, dir.path(), "").replacen("[proxy]\n", "[proxy]\nhttp1_direct = true\n", 1);
    let tg = touchgate(&toml).await;
    script.push(Then::Answer(OK_HELLO));
    let mut c = Client::connect(tg.proxy_addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response(false).await.1, b"hello");
}

#[tokio::test]
async fn a_head_split_anywhere_is_read_whole() {
    let (up, script) = scripted().await;
    let (tg, _d) = proxy(up, "").await;
    let head = b"GET /split HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n";
    // Byte by byte, so the end of the head arrives across four reads.
    script.push(Then::Answer(OK_HELLO));
    let mut c = Client::connect(tg.proxy_addr).await;
    c.s.set_nodelay(true).unwrap();
    for b in head {
        c.send(&[*b]).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(c.response(false).await.1, b"hello");
    // Split inside the blank line, and with the next request's start.
    script.push(Then::Answer(OK_HELLO));
    script.push(Then::Answer(OK_HELLO));
    c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.send(b"\nGET /b HTTP/1.1\r\n").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.send(b"Host: x\r\n\r\n").await;
    assert_eq!(c.response(false).await.1, b"hello");
    assert_eq!(c.response(false).await.1, b"hello");
    let targets: Vec<String> = script
        .heads()
        .iter()
        .map(|h| h.split(' ').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(targets, ["/split", "/a", "/b"]);
}

#[tokio::test]
async fn content_length_bodies_stream_through_and_keep_the_connection() {
    let (up, script) = scripted().await;
    let (tg, _d) = proxy(up, "").await;
    script.push(Then::Answer(
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    ));
    script.push(Then::Answer(OK_HELLO));
    let mut c = Client::connect(tg.proxy_addr).await;
    c.s.set_nodelay(true).unwrap();
    // The body in three pieces, the next request right behind its end.
    c.send(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\"").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.send(b":1,").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.send(b"\"b\":2}GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (head, body) = c.response(false).await;
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    assert_eq!(body, b"ok");
    assert_eq!(c.response(false).await.1, b"hello");
    let heads = script.heads();
    assert!(
        heads[0].ends_with("\r\n\r\n{\"a\":1,\"b\":2}"),
        "{:?}",
        heads[0]
    );
    assert!(heads[1].starts_with("GET /next "), "{:?}", heads[1]);
    assert_eq!(script.connections(), 1);
}

#[tokio::test]
async fn a_failed_exchange_with_a_body_closes_the_client_connection() {
    // Nothing listens upstream: 502, and the connection closes, because
    // the unread body is in the way of any next request.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (tg, _d) = proxy(addr, "").await;
    let mut c = Client::connect(tg.proxy_addr).await;
    c.send(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nstart")
        .await;
    let (head, _) = c.response(false).await;
    assert!(
        head.starts_with("HTTP/1.1 502") && head.contains("connection: close"),
        "{head}"
    );
    assert!(c.closed().await);

    // A client that leaves inside its body gets nothing; the app's
    // connection is not reused.
    let (up, script) = scripted().await;
    let (tg, _d2) = proxy(up, "").await;
    let mut c = Client::connect(tg.proxy_addr).await;
    c.send(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(c);
    script.push(Then::Answer(OK_HELLO));
    let mut c = Client::connect(tg.proxy_addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response(false).await.1, b"hello");
    assert_eq!(script.connections(), 2);
}

/// touchgate with extra `[proxy]` keys.
async fn proxy_with(
    up: SocketAddr,
    proxy_keys: &str,
) -> (touchgate::app::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(up, dir.path(), "").replacen(
        "[proxy]\n",
        &format!("[proxy]\n{proxy_keys}\n"),
        1,
    );
    (touchgate(&toml).await, dir)
}

#[tokio::test]
async fn an_early_answer_during_an_upload_reaches_the_client_at_once() {
    let (up, script) = scripted().await;
    script.push(Then::BeforeBody(
        b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n",
    ));
    let (tg, _d) = proxy(up, "").await;
    let mut c = Client::connect(tg.proxy_addr).await;
    // 10 MB announced, 4 KiB sent: the app refuses after the head.
    c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        .await;
    c.send(&[b'a'; 4096]).await;
    let started = std::time::Instant::now();
    let (head, body) = c.response(false).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(body, b"too big\n");
    // Well before the 2 s upstream_response_timeout of the test config.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The rest of the upload cannot be read as a next request.
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_request() {
    let (up, script) = scripted().await;
    script.push(Then::Hold);
    let (tg, _d) = proxy(up, "").await;
    let mut c = Client::connect(tg.proxy_addr).await;
    c.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
    eventually("the app has the request", || script.heads().len() == 1).await;
    let left = std::time::Instant::now();
    drop(c);
    eventually("the app's connection closed", || {
        script.closed_at.lock().unwrap().is_some()
    })
    .await;
    let after = script.closed_at.lock().unwrap().unwrap() - left;
    // Not the 2 s response timeout: the client's leaving ended it.
    assert!(after < Duration::from_secs(1), "{after:?}");
}

#[tokio::test]
async fn chunked_named_twice_is_refused_and_never_forwarded() {
    let (up, script) = scripted().await;
    let (tg, _d) = proxy(up, "").await;
    for head in [
        &b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        // Alone, and behind a good request on the same connection.
        for prefix in [&b""[..], b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"] {
            if !prefix.is_empty() {
                script.push(Then::Answer(OK_HELLO));
            }
            let before = script.heads().len();
            let mut c = Client::connect(tg.proxy_addr).await;
            c.send(&[prefix, head].concat()).await;
            if !prefix.is_empty() {
                assert_eq!(c.response(false).await.1, b"hello");
            }
            let (status, body) = c.response(false).await;
            assert!(status.starts_with("HTTP/1.1 400"), "{status}");
            assert_eq!(body, b"request applies the chunked transfer coding twice\n");
            assert!(c.closed().await);
            let forwarded = script.heads().len() - before;
            assert_eq!(forwarded, usize::from(!prefix.is_empty()), "{:?}", script.heads());
        }
    }
}

#[tokio::test]
async fn the_pool_keeps_no_more_idle_connections_than_configured() {
    let (up, script) = scripted().await;
    let (tg, _d) = proxy_with(
        up,
        "upstream_pool_max_idle = 2\nupstream_pool_idle_timeout = \"30s\"",
    )
    .await;
    const SLOW: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    for _ in 0..5 {
        script.push(Then::Late(SLOW, Duration::from_millis(300)));
    }
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = Client::connect(tg.proxy_addr).await;
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        clients.push(c);
    }
    for c in &mut clients {
        assert_eq!(c.response(false).await.1, b"hello");
    }
    assert_eq!(script.connections(), 5);
    eventually("three connections closed", || script.open() == 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(script.open(), 2);
    // The two are reused.
    for c in clients.iter_mut().take(2) {
        script.push(Then::Answer(OK_HELLO));
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(c.response(false).await.1, b"hello");
    }
    assert_eq!(script.connections(), 5);
}

#[tokio::test]
async fn at_the_connection_bound_requests_wait_for_a_free_connection() {
    let (up, script) = scripted().await;
    // One connection to the app; a request waits for it up to the
    // connect timeout, then gets 503.
    let (tg, _d) = proxy_with(
        up,
        "upstream_max_connections = 1\nupstream_connect_timeout = \"1s\"",
    )
    .await;
    const SLOW: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    script.push(Then::Late(SLOW, Duration::from_millis(300)));
    script.push(Then::Answer(OK_HELLO));
    let mut a = Client::connect(tg.proxy_addr).await;
    let mut b = Client::connect(tg.proxy_addr).await;
    a.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    eventually("the app has the first request", || {
        script.heads().len() == 1
    })
    .await;
    b.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(a.response(false).await.1, b"hello");
    assert_eq!(b.response(false).await.1, b"hello");
    assert_eq!(
        script.connections(),
        1,
        "the second request reused the first's connection"
    );

    script.push(Then::Hold);
    a.send(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n").await;
    eventually("the app holds a request", || script.heads().len() == 3).await;
    b.send(b"GET /waits HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = b.response(false).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert_eq!(body, b"upstream connection limit reached\n");
    assert_eq!(script.connections(), 1);
}

/// Waits (bounded) until `touchgate_connections_idle` is `n`.
async fn idle_connections_become(tg: &touchgate::app::Running, n: i64) {
    for _ in 0..200 {
        if tg.metrics.connections_idle.get() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "touchgate_connections_idle stayed {} instead of {n}",
        tg.metrics.connections_idle.get()
    );
}

#[tokio::test]
async fn an_idle_connection_gives_back_its_buffers_and_serves_what_comes_next() {
    let (up, script) = scripted().await;
    let (tg, _d) = proxy(up, "").await;
    let mut c = Client::connect(tg.proxy_addr).await;
    c.s.set_nodelay(true).unwrap();
    script.push(Then::Answer(OK_HELLO));
    c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response(false).await.1, b"hello");
    idle_connections_become(&tg, 1).await;
    // A head that starts while idle and ends after a pause longer than
    // the idle wait: the connection is busy from its first byte.
    script.push(Then::Answer(OK_HELLO));
    c.send(b"GET /b HT").await;
    idle_connections_become(&tg, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tg.metrics.connections_idle.get(), 0);
    c.send(b"TP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response(false).await.1, b"hello");
    idle_connections_become(&tg, 1).await;
    // Two pipelined requests on the idle connection.
    script.push(Then::Answer(OK_HELLO));
    script.push(Then::Answer(OK_HELLO));
    c.send(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.1, b"hello");
    assert_eq!(c.response(false).await.1, b"hello");
    // A response whose body pauses longer than the idle wait is relayed
    // whole and keeps the connection.
    script.push(Then::Pieces(
        &[
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n",
            b"3\r\ntwo\r\n0\r\n\r\n",
        ],
        Duration::from_millis(400),
    ));
    c.send(b"GET /e HTTP/1.1\r\nHost: x\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        tg.metrics.connections_idle.get(),
        0,
        "idle while a response body is still being relayed"
    );
    assert_eq!(dechunk(&c.response(false).await.1), b"onetwo");
    idle_connections_become(&tg, 1).await;
    script.push(Then::Answer(OK_HELLO));
    c.send(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response(false).await.1, b"hello");
    let targets: Vec<String> = script
        .heads()
        .iter()
        .map(|h| h.split(' ').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(targets, ["/a", "/b", "/c", "/d", "/e", "/f"]);
    // An idle connection closes at once on drain, and the client's close
    // of another one is noticed.
    idle_connections_become(&tg, 1).await;
    let mut other = Client::connect(tg.proxy_addr).await;
    script.push(Then::Answer(OK_HELLO));
    other.send(b"GET /g HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(other.response(false).await.1, b"hello");
    idle_connections_become(&tg, 2).await;
    drop(other);
    idle_connections_become(&tg, 1).await;
    let drained = tokio::spawn(tg.drain(Duration::ZERO));
    assert!(c.closed().await);
    tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .expect("drain finished")
        .unwrap();
}
