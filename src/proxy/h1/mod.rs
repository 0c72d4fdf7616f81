//! HTTP/1.1 served directly. The common request (not a form or beacon,
//! no upgrade, no `Expect`, no chunked body; a `Content-Length` body is
//! streamed through) is read with httparse, goes through the same
//! request path as every other (classify, identify, header hygiene, touch
//! headers, landing event, cookies) and is exchanged with the app over a
//! pooled connection, all inside the connection's own task.
//!
//! Why not hyper for these: behind hyper's server and pooled client one
//! proxied request crosses three tasks and their channels, and that cost
//! was most of a pass-through (docs/performance.md, "Plain GET"). Here a
//! request is four syscalls and no hand-off. Everything else (HTTP/2,
//! upgrades, forms and beacons, chunked bodies, `Expect`, malformed or
//! oversized heads) is
//! handed to hyper together with the bytes read so far, and hyper serves
//! the rest of the connection: the rules for what stays here only need to
//! be conservative, never complete.

pub mod chunked;
pub mod head;
pub mod pool;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

use super::drain::Waiter;
use super::upstream::UpstreamError;
use super::{Shared, service};
use crate::capture::Class;
use head::{FinalHead, Framing, HeadEnd, Relay};
use pool::UpConn;

/// Read size for both sides; a head larger than this takes a few reads.
const READ_CHUNK: usize = 8 * 1024;
/// A response head larger than this is refused (502), as hyper's client
/// refuses one over its buffer limit.
const MAX_RESPONSE_HEAD: usize = 256 * 1024;

pub async fn serve<IO>(
    io: IO,
    peer: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    waiter: Waiter,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let p = &shared.cfg.proxy;
    let now = Instant::now();
    let mut conn = Direct {
        io,
        peer,
        tls,
        shared: &shared,
        waiter,
        rbuf: BytesMut::new(),
        ubuf: BytesMut::new(),
        req_out: Vec::new(),
        resp_out: Vec::new(),
        // The first head is due within the header timeout, so a
        // connection that never sends a byte is not held open.
        timer: Box::pin(tokio::time::sleep_until(
            now + p.header_read_timeout.min(p.idle_timeout),
        )),
        last_activity: now,
    };
    if conn.run().await == End::Hyper {
        let Direct {
            io, rbuf, waiter, ..
        } = conn;
        super::serve_connection(rbuf.freeze(), io, peer, tls, shared, builder, waiter).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Closed,
    /// `rbuf` holds the bytes hyper must see first.
    Hyper,
}

enum Next {
    KeepAlive,
    Close,
    Hyper,
}

struct Direct<'a, IO> {
    io: IO,
    peer: SocketAddr,
    tls: bool,
    shared: &'a Shared,
    waiter: Waiter,
    /// Bytes from the client not yet served.
    rbuf: BytesMut,
    /// Bytes from the app not yet relayed.
    ubuf: BytesMut,
    req_out: Vec<u8>,
    resp_out: Vec<u8>,
    /// One timer for the connection's deadlines, moved only when a wait
    /// needs an earlier one or it fires early (see `timed`).
    timer: Pin<Box<Sleep>>,
    last_activity: Instant,
}

/// Why a wait on the client ended without bytes.
enum Wait {
    TimedOut,
    /// Closed, failed, or the process is draining.
    Ended,
}

impl<IO> Direct<'_, IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    async fn run(&mut self) -> End {
        let p = &self.shared.cfg.proxy;
        // The first head is timed from the connection's start.
        let mut first = true;
        loop {
            // 1. A whole request head, read within the timeouts.
            let mut head_started = (!self.rbuf.is_empty() || first).then_some(self.last_activity);
            first = false;
            // How much of `rbuf` is known not to hold the end of the head: a
            // head is parsed once it is complete, not again on every read,
            // so a client dribbling a large head costs linear time.
            let mut scanned: usize = 0;
            let len = loop {
                let end_seen =
                    super::framing::find_head_end(&self.rbuf[scanned.saturating_sub(3)..])
                        .is_some();
                scanned = self.rbuf.len();
                if end_seen {
                    match head::request_head_end(&self.rbuf, p.max_headers) {
                        HeadEnd::Complete(n) if n <= p.max_header_bytes => break n,
                        HeadEnd::Partial if self.rbuf.len() <= p.max_header_bytes => {}
                        // Oversized or malformed: hyper answers 431 or 400.
                        HeadEnd::Complete(_) | HeadEnd::Partial | HeadEnd::NotDirect => {
                            return End::Hyper;
                        }
                    }
                } else if self.rbuf.len() > p.max_header_bytes {
                    // hyper answers 431.
                    return End::Hyper;
                }
                let deadline = match head_started {
                    Some(t) => t + p.header_read_timeout,
                    None => self.last_activity + p.idle_timeout,
                };
                match self.read_client(deadline, head_started.is_none()).await {
                    Ok(()) => {
                        head_started.get_or_insert_with(Instant::now);
                    }
                    Err(Wait::TimedOut) if head_started.is_some() => {
                        tracing::debug!(peer = %self.peer, "request head not received within proxy.header_read_timeout");
                        return End::Closed;
                    }
                    Err(Wait::TimedOut | Wait::Ended) => return End::Closed,
                }
            };
            let head = self.rbuf.split_to(len).freeze();

            // 2. Served here, or by hyper from this request on.
            match self.serve(head).await {
                Next::KeepAlive => {}
                Next::Close => {
                    let _ = self.io.shutdown().await;
                    return End::Closed;
                }
                Next::Hyper => return End::Hyper,
            }
            if self.waiter.is_draining() && self.rbuf.is_empty() {
                let _ = self.io.shutdown().await;
                return End::Closed;
            }
            self.last_activity = Instant::now();
        }
    }

    /// More bytes from the client into `rbuf`.
    async fn read_client(&mut self, deadline: Instant, idle: bool) -> Result<(), Wait> {
        if idle && self.waiter.is_draining() {
            return Err(Wait::Ended);
        }
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(READ_CHUNK);
        }
        let io = &mut self.io;
        let rbuf = &mut self.rbuf;
        let waiter = &mut self.waiter;
        let read = async {
            if idle {
                tokio::select! {
                    biased;
                    r = io.read_buf(rbuf) => Some(r),
                    () = waiter.draining() => None,
                }
            } else {
                Some(io.read_buf(rbuf).await)
            }
        };
        match timed(&mut self.timer, deadline, read).await {
            None => Err(Wait::TimedOut),
            Some(None) => Err(Wait::Ended),
            Some(Some(Ok(0))) => Err(Wait::Ended),
            Some(Some(Ok(_))) => Ok(()),
            Some(Some(Err(e))) => {
                tracing::debug!(peer = %self.peer, error = %e, "client read failed");
                Err(Wait::Ended)
            }
        }
    }

    /// Put the head back in front of the unread bytes, for hyper.
    fn back_to_hyper(&mut self, head: Bytes) -> Next {
        let mut all = BytesMut::with_capacity(head.len() + self.rbuf.len());
        all.extend_from_slice(&head);
        all.extend_from_slice(&self.rbuf);
        self.rbuf = all;
        Next::Hyper
    }

    async fn serve(&mut self, head: Bytes) -> Next {
        let Some(req) = head::direct_request(&head) else {
            return self.back_to_hyper(head);
        };
        let capture = &self.shared.capture;
        let mut parts = req.parts;
        let class = capture.classify(&parts.method, parts.uri.path(), &parts.headers);
        if !matches!(class, Class::Pass | Class::Navigation) {
            return self.back_to_hyper(head);
        }
        let started = std::time::Instant::now();
        self.shared.metrics.requests_total.inc();
        let span =
            tracing::debug_span!("request", method = %parts.method, path = %parts.uri.path());

        // The request path, as in `service::route`, steps 3-4.
        let cookies = span.in_scope(|| {
            let client_ip = capture.client_ip(self.peer.ip(), &parts.headers);
            let prepared = service::prepare(
                capture,
                self.shared.cfg.privacy.forward_client_ip,
                &mut parts,
                class,
                self.tls,
                self.peer.ip(),
                client_ip,
                false,
            );
            if let Some(landing) = prepared.landing {
                capture.emit(landing);
            }
            // hyper's client names the app when the client named nobody.
            if !parts.headers.contains_key(http::header::HOST)
                && let Ok(host) =
                    http::HeaderValue::from_str(self.shared.upstream.authority().as_str())
            {
                parts.headers.insert(http::header::HOST, host);
            }
            let mut cookies = HeaderMap::new();
            if let Some(v) = &prepared.visit {
                capture.set_cookies(v, self.tls, &mut cookies);
            }
            cookies
        });
        self.req_out.clear();
        head::write_request(&mut self.req_out, &parts);
        let method = parts.method.clone();
        // The head's bytes are free again once its fields are written out.
        drop(parts);
        drop(head);

        self.forward(&method, req.close, req.body, &cookies, started)
            .instrument(span)
            .await
    }

    /// Step 6-7: exchange with the app and relay its answer.
    async fn forward(
        &mut self,
        method: &Method,
        close: bool,
        body_len: u64,
        cookies: &HeaderMap,
        started: std::time::Instant,
    ) -> Next {
        let p = &self.shared.cfg.proxy;
        // If the exchange fails before the whole request body has been
        // read, the rest of it is still on the client connection, in the
        // way of the next request: the connection cannot be kept.
        let close_on_error = close || body_len > 0;
        let deadline = Instant::from_std(started) + p.upstream_response_timeout;
        let head_request = method == Method::HEAD;
        let mut retried = false;
        let (mut up, resp) = loop {
            let got = timed(
                &mut self.timer,
                deadline,
                self.shared.upstream.direct_pool().get(),
            )
            .await;
            let mut up = match got {
                None => {
                    let e = UpstreamError::Timeout(p.upstream_response_timeout);
                    return self.upstream_failed(e, close_on_error, started).await;
                }
                Some(Err(e)) => return self.upstream_failed(e, close_on_error, started).await,
                Some(Ok(up)) => up,
            };
            match self
                .exchange(&mut up, head_request, close, body_len, cookies, deadline)
                .await
            {
                Ok(resp) => break (up, resp),
                // A pooled connection the app closed just as it was reused:
                // once more on a new one, if the request may be repeated
                // (and has no body, whose bytes are gone).
                Err(Attempt::Unanswered(e))
                    if up.reused && method.is_idempotent() && body_len == 0 && !retried =>
                {
                    tracing::debug!(error = %e, "pooled upstream connection closed; retrying on a new one");
                    retried = true;
                }
                Err(Attempt::ClientGone) => return Next::Close,
                Err(Attempt::Unanswered(e) | Attempt::Failed(e)) => {
                    return self.upstream_failed(e, close_on_error, started).await;
                }
            }
        };

        // The head, with the body bytes that came with it, in one write.
        let client_close =
            close || resp.framing == Framing::UntilClose || self.waiter.is_draining();
        let mut body = Body::new(resp.framing);
        let first = match body.take(&self.ubuf) {
            Ok(n) => n,
            // Nothing has reached the client yet: it gets a 502.
            Err(e) => {
                let e = UpstreamError::Failed(e.to_string());
                return self.upstream_failed(e, close, started).await;
            }
        };
        self.resp_out.extend_from_slice(&self.ubuf[..first]);
        let extra = self.ubuf.len() - first;
        self.ubuf.advance(first);
        let written = self.write_client().await;
        // As on hyper's path: until the response head is handed over.
        self.observe(started);
        if written.is_err() {
            return Next::Close;
        }
        // 3. The rest of the body, as it comes.
        while !body.done() {
            self.ubuf.clear();
            self.ubuf.reserve(READ_CHUNK * 2);
            let n = match up.stream.read_buf(&mut self.ubuf).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(error = %e, "upstream body read failed");
                    return Next::Close;
                }
            };
            if n == 0 {
                if body.framing == Framing::UntilClose {
                    break;
                }
                tracing::debug!("upstream closed before the end of the body");
                return Next::Close;
            }
            let take = match body.take(&self.ubuf) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, upstream = %self.shared.upstream.authority(), "upstream response body malformed");
                    return Next::Close;
                }
            };
            if take < n {
                // Bytes after the end of the response: the app's framing
                // cannot be trusted for another exchange.
                tracing::debug!(
                    "upstream sent bytes after the response; not reusing the connection"
                );
                let _ = self.io.write_all(&self.ubuf[..take]).await;
                let _ = self.io.flush().await;
                return if client_close {
                    Next::Close
                } else {
                    Next::KeepAlive
                };
            }
            if self.io.write_all(&self.ubuf[..n]).await.is_err() {
                return Next::Close;
            }
        }
        if self.io.flush().await.is_err() {
            return Next::Close;
        }
        if resp.reusable && extra == 0 {
            self.shared.upstream.direct_pool().put(up.stream);
        }
        if client_close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Send the request head and read the final response head, whose
    /// client-side form is left in `resp_out` (and its body's first bytes
    /// at the front of `ubuf`).
    async fn exchange(
        &mut self,
        up: &mut UpConn,
        head_request: bool,
        close: bool,
        body_len: u64,
        cookies: &HeaderMap,
        deadline: Instant,
    ) -> Result<FinalHead, Attempt> {
        let timeout = self.shared.cfg.proxy.upstream_response_timeout;
        match timed(
            &mut self.timer,
            deadline,
            up.stream.write_all(&self.req_out),
        )
        .await
        {
            None => return Err(Attempt::Failed(UpstreamError::Timeout(timeout))),
            Some(Err(e)) => return Err(Attempt::Unanswered(failed(&e))),
            Some(Ok(())) => {}
        }
        if body_len > 0 {
            self.send_body(up, body_len, deadline).await?;
        }
        self.ubuf.clear();
        let mut answered = false;
        loop {
            if !self.ubuf.is_empty() {
                self.resp_out.clear();
                let relay = Relay {
                    head_request,
                    close: close || self.waiter.is_draining(),
                    extra: cookies,
                    date: &date::now(),
                };
                match head::response(&self.ubuf, &relay, &mut self.resp_out) {
                    Ok(Some(head::Response::Interim(n))) => {
                        self.ubuf.advance(n);
                        continue;
                    }
                    Ok(Some(head::Response::Final(h))) => {
                        self.ubuf.advance(h.len);
                        return Ok(h);
                    }
                    Ok(None) if self.ubuf.len() <= MAX_RESPONSE_HEAD => {}
                    Ok(None) => {
                        return Err(Attempt::Failed(UpstreamError::Failed(
                            "response head too large".into(),
                        )));
                    }
                    Err(e) => return Err(Attempt::Failed(UpstreamError::Failed(e.to_string()))),
                }
            }
            if self.ubuf.capacity() - self.ubuf.len() < 1024 {
                self.ubuf.reserve(READ_CHUNK);
            }
            match timed(
                &mut self.timer,
                deadline,
                up.stream.read_buf(&mut self.ubuf),
            )
            .await
            {
                None => return Err(Attempt::Failed(UpstreamError::Timeout(timeout))),
                Some(Ok(0)) if !answered => {
                    return Err(Attempt::Unanswered(UpstreamError::Failed(
                        "connection closed before a response".into(),
                    )));
                }
                Some(Ok(0)) => {
                    return Err(Attempt::Failed(UpstreamError::Failed(
                        "connection closed inside the response head".into(),
                    )));
                }
                Some(Ok(_)) => answered = true,
                Some(Err(e)) if !answered => return Err(Attempt::Unanswered(failed(&e))),
                Some(Err(e)) => return Err(Attempt::Failed(failed(&e))),
            }
        }
    }

    /// The request body, `len` bytes from the client (some may already be
    /// in `rbuf`), streamed to the app as they come. Bytes after it stay
    /// in `rbuf`: the next request's. Bounded, like the wait for the
    /// response head, by `upstream_response_timeout`.
    async fn send_body(
        &mut self,
        up: &mut UpConn,
        len: u64,
        deadline: Instant,
    ) -> Result<(), Attempt> {
        let timeout = self.shared.cfg.proxy.upstream_response_timeout;
        let mut left = len;
        while left > 0 {
            if self.rbuf.is_empty() {
                if self.rbuf.capacity() < READ_CHUNK {
                    self.rbuf.reserve(READ_CHUNK * 2);
                }
                match timed(&mut self.timer, deadline, self.io.read_buf(&mut self.rbuf)).await {
                    None => return Err(Attempt::Failed(UpstreamError::Timeout(timeout))),
                    Some(Ok(0)) | Some(Err(_)) => {
                        tracing::debug!(peer = %self.peer, "client went away inside its request body");
                        return Err(Attempt::ClientGone);
                    }
                    Some(Ok(_)) => {}
                }
            }
            let take = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.rbuf.len());
            let chunk = self.rbuf.split_to(take);
            left -= take as u64;
            match timed(&mut self.timer, deadline, up.stream.write_all(&chunk)).await {
                None => return Err(Attempt::Failed(UpstreamError::Timeout(timeout))),
                Some(Err(e)) => return Err(Attempt::Failed(failed(&e))),
                Some(Ok(())) => {}
            }
        }
        Ok(())
    }

    /// 502 or 504, counted and logged as on hyper's path.
    async fn upstream_failed(
        &mut self,
        e: UpstreamError,
        close: bool,
        started: std::time::Instant,
    ) -> Next {
        let (status, text) = service::upstream_failed(self.shared, &e);
        let close = close || self.waiter.is_draining();
        self.resp_out.clear();
        head::write_plain(&mut self.resp_out, status, text, close, &date::now());
        let written = self.write_client().await;
        self.observe(started);
        if written.is_err() || close {
            return Next::Close;
        }
        Next::KeepAlive
    }

    fn observe(&self, started: std::time::Instant) {
        self.shared
            .metrics
            .request_duration_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    async fn write_client(&mut self) -> std::io::Result<()> {
        self.io.write_all(&self.resp_out).await?;
        self.io.flush().await
    }
}

enum Attempt {
    /// Nothing came back: the request may be sent again on a new
    /// connection if it is idempotent.
    Unanswered(UpstreamError),
    Failed(UpstreamError),
    /// The client closed before its request body was complete.
    ClientGone,
}

fn failed(e: &std::io::Error) -> UpstreamError {
    UpstreamError::Failed(e.to_string())
}

/// The response body's progress.
struct Body {
    framing: Framing,
    left: u64,
    chunks: chunked::Follower,
}

impl Body {
    fn new(framing: Framing) -> Body {
        Body {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunks: chunked::Follower::default(),
        }
    }

    /// How many of `buf`'s bytes belong to the body.
    fn take(&mut self, buf: &[u8]) -> Result<usize, chunked::Malformed> {
        Ok(match self.framing {
            Framing::Empty => 0,
            Framing::UntilClose => buf.len(),
            Framing::Length(_) => {
                let n = (buf.len() as u64).min(self.left);
                self.left -= n;
                n as usize
            }
            Framing::Chunked => self.chunks.feed(buf)?,
        })
    }

    fn done(&self) -> bool {
        match self.framing {
            Framing::Empty => true,
            Framing::Length(_) => self.left == 0,
            Framing::Chunked => self.chunks.is_done(),
            Framing::UntilClose => false,
        }
    }
}

/// Await `fut` until `deadline` (`None` past it) on the connection's one
/// timer. The timer is moved only when this wait needs an earlier
/// deadline than it holds, or when it fires before this wait's deadline;
/// on the usual request a wait's deadline is later than the timer's, so
/// no timer is touched per request.
async fn timed<F: Future>(
    timer: &mut Pin<Box<Sleep>>,
    deadline: Instant,
    fut: F,
) -> Option<F::Output> {
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    tokio::pin!(fut);
    loop {
        tokio::select! {
            biased;
            out = &mut fut => return Some(out),
            () = timer.as_mut() => {
                if Instant::now() >= deadline {
                    return None;
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
    }

    /// The current HTTP-date, formatted once a second per thread.
    pub fn now() -> [u8; 29] {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs {
                let text = httpdate::fmt_http_date(now);
                if text.len() == 29 {
                    c.1.copy_from_slice(text.as_bytes());
                    c.0 = secs;
                }
            }
            c.1
        })
    }
}
