//! One public connection's I/O: the smuggling guard sees every byte read,
//! and two timers bound what a client can hold open.
//!
//! hyper's own `header_read_timeout` also starts while a keep-alive
//! connection waits idle for its next request, which would force a choice
//! between slowloris protection and load balancers that keep idle
//! connections for a minute or more (and then race a closing connection:
//! 502s). Here the two are separate: `header_read_timeout` runs from the
//! first byte of a request head to its end; `idle_timeout` runs while no
//! request is in flight and no byte moves.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::smuggling::HeadTracker;

/// Requests of one connection being served now (shared with the service).
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    fn any(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }
}

pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    pub struct ConnIo<IO> {
        #[pin]
        io: IO,
        tracker: HeadTracker,
        in_flight: Arc<InFlight>,
        header_timeout: Duration,
        idle_timeout: Duration,
        last_activity: Instant,
        head_started: Option<Instant>,
        timer: Pin<Box<Sleep>>,
    }
}

impl<IO> ConnIo<IO> {
    pub fn new(
        io: IO,
        tracker: HeadTracker,
        in_flight: Arc<InFlight>,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> ConnIo<IO> {
        let now = Instant::now();
        ConnIo {
            io,
            tracker,
            in_flight,
            header_timeout,
            idle_timeout,
            last_activity: now,
            // The first request head is due within the header timeout too,
            // so a connection that never sends a byte is not held open.
            head_started: Some(now),
            timer: Box::pin(tokio::time::sleep_until(
                now + header_timeout.min(idle_timeout),
            )),
        }
    }
}

impl<IO: AsyncRead> AsyncRead for ConnIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
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
                    let deadline = match *this.head_started {
                        Some(started) => started + *this.header_timeout,
                        None if this.in_flight.any() => {
                            // A request is being served: the upstream timeouts bound it.
                            return Poll::Pending;
                        }
                        None => *this.last_activity + *this.idle_timeout,
                    };
                    if Instant::now() >= deadline {
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
        if let Poll::Ready(Ok(n)) = res
            && n > 0
        {
            *this.last_activity = Instant::now();
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
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
        if let Poll::Ready(Ok(n)) = res
            && n > 0
        {
            *this.last_activity = Instant::now();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
