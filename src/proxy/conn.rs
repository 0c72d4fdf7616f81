//! One public connection's I/O: the smuggling guard sees every byte read,
//! two timers bound what a client can hold open, and an idle HTTP/1.1
//! connection is told when it may give back hyper's buffers.
//!
//! hyper's own `header_read_timeout` also starts while a keep-alive
//! connection waits idle for its next request, which would force a choice
//! between slowloris protection and load balancers that keep idle
//! connections for a minute or more (and then race a closing connection:
//! 502s). Here the two are separate: `header_read_timeout` runs from the
//! first byte of a request head to its end; `idle_timeout` runs while no
//! request is in flight and no byte moves.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer, plus the
//! slot for a request's future, for the whole life of a connection. A
//! sidecar behind a load balancer holds thousands of keep-alive
//! connections that are idle nearly all the time, so once a connection
//! has been quiet for [`PARK_AFTER`] between requests, [`ConnIo`] raises
//! [`Activity::take_park`] and the owner takes the connection out of hyper
//! (nothing of it is in hyper's hands then: no request, no response body,
//! no unflushed byte) until its next byte arrives. nginx frees its
//! buffers the same way on keep-alive.

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::smuggling::HeadTracker;

/// How long an HTTP/1.1 connection waits between requests before it gives
/// back hyper's buffers. Re-arming costs two allocations and one read
/// call; a client that keeps a connection busy sends its next request
/// well within this, and one that pauses longer than this is idle.
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// What one connection is doing, shared by its I/O wrapper, its service
/// and its owner.
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests whose response head is not out yet.
    requests: AtomicUsize,
    /// Requests whose response body is not finished yet.
    exchanges: AtomicUsize,
    /// Set by [`ConnIo`] once the connection may leave hyper.
    park: AtomicBool,
}

impl Activity {
    /// A request is being served until the guard drops.
    pub fn enter(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    /// A request and its response body are in hyper's hands until the
    /// guard (moved into the body by [`Tracked`]) drops.
    pub fn exchange(self: &Arc<Self>) -> ExchangeGuard {
        self.exchanges.fetch_add(1, Ordering::AcqRel);
        ExchangeGuard(self.clone())
    }

    /// Whether the connection was found idle enough to leave hyper; clears it.
    pub fn take_park(&self) -> bool {
        self.park.swap(false, Ordering::AcqRel)
    }

    fn any_request(&self) -> bool {
        self.requests.load(Ordering::Acquire) > 0
    }

    fn any_exchange(&self) -> bool {
        self.exchanges.load(Ordering::Acquire) > 0
    }
}

pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct ExchangeGuard(Arc<Activity>);

impl Drop for ExchangeGuard {
    fn drop(&mut self) {
        self.0.exchanges.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its exchange open until hyper has
    /// written all of it (hyper drops a body when it has).
    pub struct Tracked<B> {
        #[pin]
        body: B,
        _exchange: ExchangeGuard,
    }
}

impl<B> Tracked<B> {
    pub fn new(body: B, exchange: ExchangeGuard) -> Tracked<B> {
        Tracked {
            body,
            _exchange: exchange,
        }
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project_lite::pin_project! {
    pub struct ConnIo<IO> {
        #[pin]
        io: IO,
        tracker: HeadTracker,
        activity: Arc<Activity>,
        header_timeout: Duration,
        idle_timeout: Duration,
        // HTTP/1.1 only: an HTTP/2 connection multiplexes and stays in hyper.
        park_after: Option<Duration>,
        last_activity: Instant,
        head_started: Option<Instant>,
        // hyper holds bytes it could not hand to the socket yet.
        write_pending: bool,
        // Bytes already read (and seen by the tracker), to be read again.
        unread: Bytes,
        timer: Pin<Box<Sleep>>,
    }
}

impl<IO> ConnIo<IO> {
    pub fn new(
        io: IO,
        tracker: HeadTracker,
        activity: Arc<Activity>,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> ConnIo<IO> {
        let now = Instant::now();
        ConnIo {
            io,
            tracker,
            activity,
            header_timeout,
            idle_timeout,
            park_after: None,
            last_activity: now,
            write_pending: false,
            unread: Bytes::new(),
            // The first request head is due within the header timeout too,
            // so a connection that never sends a byte is not held open.
            head_started: Some(now),
            timer: Box::pin(tokio::time::sleep_until(
                now + header_timeout.min(idle_timeout),
            )),
        }
    }

    /// From now on, raise [`Activity::take_park`] once the connection has
    /// been idle between requests for `after`.
    pub fn park_when_idle(&mut self, after: Duration) {
        self.park_after = Some(after);
    }

    /// Put bytes back in front of what the socket has not delivered yet.
    pub fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.unread = if self.unread.is_empty() {
            bytes
        } else {
            let mut joined = Vec::with_capacity(bytes.len() + self.unread.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(&self.unread);
            joined.into()
        };
    }
}

impl<IO: AsyncRead> AsyncRead for ConnIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..n]);
            this.unread.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    let now = Instant::now();
                    *this.last_activity = now;
                    if !this.tracker.is_dormant() {
                        let was_in_head = this.tracker.in_head();
                        this.tracker.feed(read);
                        *this.head_started = match (was_in_head, this.tracker.in_head()) {
                            (_, false) => None,
                            (false, true) => Some(now),
                            (true, true) => *this.head_started,
                        };
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Bounded loop: at most one reset, then the timer is pending.
                for _ in 0..2 {
                    let now = Instant::now();
                    let deadline = match *this.head_started {
                        Some(started) => started + *this.header_timeout,
                        None if this.activity.any_request() => {
                            // A request is being served: the upstream timeouts bound it.
                            return Poll::Pending;
                        }
                        None => {
                            let idle = *this.last_activity + *this.idle_timeout;
                            match *this.park_after {
                                Some(after)
                                    if !*this.write_pending
                                        && !this.activity.any_exchange()
                                        && this.tracker.between_requests() =>
                                {
                                    let park = *this.last_activity + after;
                                    if now >= park {
                                        this.activity.park.store(true, Ordering::Release);
                                        idle
                                    } else {
                                        idle.min(park)
                                    }
                                }
                                _ => idle,
                            }
                        }
                    };
                    if now >= deadline {
                        let what = if this.head_started.is_some() {
                            "request head not received within proxy.header_read_timeout"
                        } else {
                            "connection idle longer than proxy.idle_timeout"
                        };
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                    }
                    if this.timer.deadline() != deadline {
                        this.timer.as_mut().reset(deadline);
                    }
                    if this.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<IO: AsyncWrite> AsyncWrite for ConnIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.io.poll_write(cx, buf);
        note_write(&res, this.last_activity, this.write_pending);
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let res = this.io.poll_flush(cx);
        // hyper flushes after every write it makes, so a flush that is done
        // means hyper holds no byte for this socket.
        *this.write_pending = res.is_pending();
        res
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.io.poll_write_vectored(cx, bufs);
        note_write(&res, this.last_activity, this.write_pending);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

fn note_write(
    res: &Poll<io::Result<usize>>,
    last_activity: &mut Instant,
    write_pending: &mut bool,
) {
    match res {
        Poll::Ready(Ok(n)) if *n > 0 => {
            *last_activity = Instant::now();
            // Written, not yet flushed: pending until poll_flush says so.
            *write_pending = true;
        }
        Poll::Pending => *write_pending = true,
        _ => {}
    }
}
