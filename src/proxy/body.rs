//! Body types on the proxy path, and the reading of a body that capture
//! needs whole.
//!
//! One enum for every body touchgate sends, in either direction, so that
//! no request or response pays for a boxed trait object. The app's
//! response body drives its upstream connection as it is read, so that
//! connection's type ([`Conn`]) lives here too; the pool it returns to is
//! `upstream.rs`'s, behind [`ConnHome`], so neither file imports the other
//! both ways.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::sync::OwnedSemaphorePermit;

use crate::capture::conversion::BodyCheck;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What flows through the proxy: a client's request body on its way to
/// the app, the app's response on its way back, or touchgate's own answer.
pub enum ProxyBody {
    Empty,
    /// One chunk, sent once.
    Full(Option<Bytes>),
    /// A body as hyper reads it from the client.
    Incoming(Incoming),
    /// The app's response, driving its upstream connection as it is read.
    Upstream(UpstreamBody),
    /// A body read for capture and sent on unchanged: its data, then its
    /// trailers.
    Replay {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    /// A body that outgrew the capture limit: the frames read so far, then
    /// the rest as it arrives.
    Prefixed {
        prefix: VecDeque<Bytes>,
        rest: Box<ProxyBody>,
    },
    /// The app's answer to a form whose success is read from the body:
    /// streamed on unchanged while its start is shown to the check.
    Checked(Box<Checked>),
}

/// A body and the conversion check reading it ([`checked`]).
pub struct Checked {
    inner: ProxyBody,
    check: BodyCheck,
    decided: bool,
}

/// `body`, with `check` fed its data as it passes.
pub fn checked(body: ProxyBody, check: BodyCheck) -> ProxyBody {
    ProxyBody::Checked(Box::new(Checked {
        inner: body,
        check,
        decided: false,
    }))
}

impl Checked {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if self.decided {
            return polled;
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.decided = self.check.feed(data);
                }
                if !self.decided && self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) => {
                self.check.abandon();
                self.decided = true;
            }
            Poll::Pending => {}
        }
        polled
    }

    fn finish(&mut self) {
        self.check.finish();
        self.decided = true;
    }
}

impl Drop for Checked {
    /// A body hyper never polled to its end because it knew the end (an
    /// empty or fully read body) is complete; any other is not, and the
    /// check's own drop says so.
    fn drop(&mut self) {
        if !self.decided && self.inner.is_end_stream() {
            self.finish();
        }
    }
}

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    ProxyBody::Full(Some(bytes.into()))
}

pub fn empty() -> ProxyBody {
    ProxyBody::Empty
}

pub fn incoming(body: Incoming) -> ProxyBody {
    ProxyBody::Incoming(body)
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Replay { data, trailers } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            ProxyBody::Prefixed { prefix, rest } => {
                if let Some(b) = prefix.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Pin::new(rest.as_mut()).poll_frame(cx)
            }
            ProxyBody::Checked(c) => c.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(d) => d.is_none(),
            ProxyBody::Incoming(b) => b.is_end_stream(),
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Replay { data, trailers } => data.is_none() && trailers.is_none(),
            ProxyBody::Prefixed { prefix, rest } => prefix.is_empty() && rest.is_end_stream(),
            ProxyBody::Checked(c) => c.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            ProxyBody::Incoming(b) => b.size_hint(),
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Replay { data, trailers } => {
                let len = data.as_ref().map_or(0, |d| d.len() as u64);
                if trailers.is_some() {
                    // Trailers need a chunked body: no exact length.
                    let mut h = SizeHint::new();
                    h.set_lower(len);
                    h
                } else {
                    SizeHint::with_exact(len)
                }
            }
            ProxyBody::Prefixed { prefix, rest } => {
                let read: u64 = prefix.iter().map(|b| b.len() as u64).sum();
                let r = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(r.lower() + read);
                if let Some(u) = r.upper() {
                    hint.set_upper(u + read);
                }
                hint
            }
            ProxyBody::Checked(c) => c.inner.size_hint(),
        }
    }
}

/// Outcome of reading a body for capture.
pub enum Buffered {
    /// The whole body, with its trailers if any, within the limit.
    Complete {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Over the limit: what was read so far, then the rest of the stream,
    /// untouched.
    Oversize(ProxyBody),
}

impl Buffered {
    /// The body to send on: exactly the bytes the client sent.
    pub fn into_body(self) -> ProxyBody {
        match self {
            Buffered::Complete { data, trailers } => ProxyBody::Replay {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
            Buffered::Oversize(body) => body,
        }
    }
}

/// Read a body up to `limit` bytes. Past the limit nothing more is read
/// here: the frames read so far are replayed ahead of the untouched rest,
/// so the upstream receives exactly the bytes the client sent.
pub async fn buffer(mut body: ProxyBody, limit: usize) -> Result<Buffered, BoxError> {
    use http_body_util::BodyExt;
    let mut frames: VecDeque<Bytes> = VecDeque::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        match frame?.into_data() {
            Ok(data) => {
                len += data.len();
                frames.push_back(data);
                if len > limit {
                    return Ok(Buffered::Oversize(ProxyBody::Prefixed {
                        prefix: frames,
                        rest: Box::new(body),
                    }));
                }
            }
            Err(frame) => {
                // Trailers end the body.
                return Ok(Buffered::Complete {
                    data: concat(frames, len),
                    trailers: frame.into_trailers().ok(),
                });
            }
        }
    }
    Ok(Buffered::Complete {
        data: concat(frames, len),
        trailers: None,
    })
}

fn concat(mut frames: VecDeque<Bytes>, len: usize) -> Bytes {
    if frames.len() <= 1 {
        return frames.pop_front().unwrap_or_default();
    }
    let mut out = Vec::with_capacity(len);
    for f in frames {
        out.extend_from_slice(&f);
    }
    out.into()
}

/// A short plain-text answer from touchgate itself; `close` asks the
/// client to end the connection after it.
pub fn text_response(status: StatusCode, text: &'static str, close: bool) -> Response<ProxyBody> {
    let mut r = Response::new(full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

// --- The upstream connection a response body drives ---------------------

/// hyper's `UpgradeableConnection` cannot be named outside hyper.
pub(super) type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One connection to the app: the handle to send on, and the future that
/// does its I/O, polled by whoever uses the connection.
pub(super) struct Conn {
    pub(super) send: http1::SendRequest<ProxyBody>,
    /// `None` once the connection has ended.
    pub(super) driver: Option<Driver>,
    /// Held for the connection's life when connections are bounded.
    pub(super) _permit: Option<Permit>,
    pub(super) reused: bool,
}

impl Conn {
    /// Drive the connection's I/O; `true` once it has ended.
    pub(super) fn poll_driver(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(d) = self.driver.as_mut() else {
            return true;
        };
        match d.as_mut().poll(cx) {
            Poll::Pending => false,
            Poll::Ready(r) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
                self.driver = None;
                true
            }
        }
    }

    /// Whether it can take another request now. Polls once without a
    /// waker, so that a close, or bytes the app sent unasked, is seen.
    pub(super) fn reusable(&mut self) -> bool {
        !self.poll_driver(&mut Context::from_waker(Waker::noop()))
            && self.send.is_ready()
            && !self.send.is_closed()
    }
}

/// One of `proxy.upstream_max_connections`; its release wakes a request
/// waiting for a connection.
pub(super) struct Permit {
    pub(super) _permit: OwnedSemaphorePermit,
    pub(super) freed: Arc<tokio::sync::Notify>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.freed.notify_one();
    }
}

/// Where a connection goes back to once a response body has been read to
/// its end (the upstream pool). A trait here, so that this file, which
/// the pool's connections are typed by, does not depend on the pool.
pub(super) trait ConnHome: Send + Sync {
    fn put(&self, conn: Conn);
}

struct Lease {
    conn: Conn,
    home: Arc<dyn ConnHome>,
}

/// The app's response body. Reading it drives its connection; once it has
/// been read to its end the connection goes back to the pool, and dropped
/// before that, it closes the connection, which is how the app learns that
/// the client went away.
pub struct UpstreamBody {
    body: Incoming,
    lease: Option<Lease>,
    /// The body said it ended (a chunked body's end shows only in its
    /// frames, not in `is_end_stream`).
    ended: bool,
}

impl UpstreamBody {
    pub(super) fn new(body: Incoming, conn: Conn, home: Arc<dyn ConnHome>) -> UpstreamBody {
        UpstreamBody {
            body,
            lease: Some(Lease { conn, home }),
            ended: false,
        }
    }
}

impl Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(lease) = this.lease.as_mut() {
            lease.conn.poll_driver(cx);
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            // Trailers are the last frame: a reader may stop there.
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Ok(f))) if f.is_trailers() => this.ended = true,
            _ => {}
        }
        polled.map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take()
            && (self.ended || self.body.is_end_stream())
        {
            lease.home.put(lease.conn);
        }
    }
}
