//! The public listener: accept, TLS, HTTP/1.1 + HTTP/2 on hyper,
//! connection limits and graceful drain. The request path itself is
//! [`crate::request_path`].

pub mod body;
pub mod conn;
pub mod drain;
pub mod headers;
pub mod smuggling;
pub mod tls;
pub mod upstream;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use drain::Drain;

use crate::config::Config;
use crate::request_path::{self, ConnMeta, Shared};
use conn::{Activity, ConnIo, PARK_AFTER, Tracked};
use smuggling::{AmbiguousHeads, HeadTracker};

/// What the service knows about the connection a request came on.
#[derive(Debug)]
struct ConnInfo {
    peer: SocketAddr,
    tls: bool,
    heads: Arc<AmbiguousHeads>,
    activity: Arc<Activity>,
    next_index: AtomicU64,
}

/// hyper's built-in header bound (`DEFAULT_MAX_HEADERS`).
const HYPER_MAX_HEADERS: usize = 100;

/// hyper's two servers, configured once for every connection.
struct Protocols {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(cfg: &Config) -> Protocols {
        let p = &cfg.proxy;
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            // Bounded by ConnIo instead, which tells a slow head from an idle
            // keep-alive connection (see conn.rs).
            .header_read_timeout(None)
            .max_buf_size(p.max_header_bytes.max(8192))
            .keep_alive(true);
        // hyper's own bound is 100 headers on the stack; a configured one is a
        // heap array filled on every request, so it is set only when it differs.
        if p.max_headers != HYPER_MAX_HEADERS {
            h1.max_headers(p.max_headers);
        }
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(p.h2_max_concurrent_streams)
            .max_header_list_size(p.h2_max_header_list_size)
            .max_pending_accept_reset_streams(p.h2_max_pending_accept_reset_streams)
            .max_local_error_reset_streams(p.h2_max_local_error_reset_streams)
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20));
        Protocols { h1, h2 }
    }
}

/// The client connection preface of HTTP/2 (RFC 9113 §3.4): HTTP/2 with
/// prior knowledge, or after ALPN `h2`, starts with it.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Accept until `stop_accepting` fires; returns the handle that drains
/// the connections still open.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    stop_accepting: CancellationToken,
) -> Arc<Drain> {
    let drain = Drain::new();
    let protocols = Arc::new(Protocols::new(&shared.cfg));
    let permits = Arc::new(Semaphore::new(shared.cfg.proxy.max_connections));
    let mut last_limit_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop_accepting.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            shared.metrics.connections_rejected_total.inc();
            if last_limit_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                last_limit_log = Some(Instant::now());
                tracing::warn!(
                    limit = shared.cfg.proxy.max_connections,
                    %peer,
                    "connection limit reached (proxy.max_connections): closing new connections until some finish"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let protocols = protocols.clone();
        let tls = tls.clone();
        let waiter = drain.waiter();
        drain.spawn(async move {
            shared.metrics.connections_open.inc();
            match tls {
                Some(acceptor) => {
                    let timeout = shared.cfg.proxy.header_read_timeout;
                    // Boxed, like everything large this task holds only for
                    // a while: the task lives as long as the connection.
                    let accept = Box::pin(tokio::time::timeout(timeout, acceptor.accept(stream)));
                    match accept.await {
                        Ok(Ok(tls_stream)) => {
                            // rustls's connection state is kilobytes: boxed,
                            // so that plain connections' tasks are not sized for it.
                            Box::pin(serve_connection(
                                tls_stream,
                                peer,
                                true,
                                shared.clone(),
                                protocols,
                                waiter,
                            ))
                            .await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => {
                    serve_connection(stream, peer, false, shared.clone(), protocols, waiter).await
                }
            }
            shared.metrics.connections_open.dec();
            drop(permit);
        });
    }
    drain
}

/// One client connection, HTTP/1.1 or HTTP/2 (ALPN or prior knowledge),
/// served by hyper; every request on it runs [`request_path::serve`].
async fn serve_connection<IO>(
    io: IO,
    peer: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    protocols: Arc<Protocols>,
    mut waiter: drain::Waiter,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let p = &shared.cfg.proxy;
    let info = Arc::new(ConnInfo {
        peer,
        tls,
        heads: AmbiguousHeads::new(),
        activity: Arc::new(Activity::default()),
        next_index: AtomicU64::new(0),
    });
    let tracker = HeadTracker::new(p.max_header_bytes.max(8192), info.heads.clone());
    let mut io = ConnIo::new(
        io,
        tracker,
        info.activity.clone(),
        p.header_read_timeout,
        p.idle_timeout,
    );
    let activity = info.activity.clone();
    let svc_shared = shared.clone();
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let index = info.next_index.fetch_add(1, Ordering::Relaxed);
        let (shared, info) = (svc_shared.clone(), info.clone());
        async move {
            let exchange = info.activity.exchange();
            let _request = info.activity.enter();
            let meta = ConnMeta {
                peer: info.peer,
                tls: info.tls,
                ambiguity: info.heads.ambiguity(index),
            };
            let req = req.map(body::incoming);
            let resp = request_path::serve(&shared, &meta, &shared.upstream, req).await;
            Ok::<_, Infallible>(resp.map(|b| Tracked::new(b, exchange)))
        }
    });
    let ended = match read_preface(&mut io).await {
        Ok(Some(true)) => {
            let mut conn = Box::pin(protocols.h2.serve_connection(TokioIo::new(io), svc));
            tokio::select! {
                r = conn.as_mut() => r,
                () = waiter.draining() => {
                    // In-flight streams finish; no new ones start.
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
            }
        }
        Ok(Some(false)) => {
            io.park_when_idle(PARK_AFTER);
            let idle = &shared.metrics.connections_idle;
            serve_http1(io, svc, &protocols.h1, &activity, idle, &mut waiter).await
        }
        Ok(None) => Ok(()),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "connection ended before its first request");
            Ok(())
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Reads until the bytes either are or cannot be the HTTP/2 preface, and
/// puts them back: `Some(true)` for HTTP/2, `Some(false)` for HTTP/1.x,
/// `None` when the client closed first.
async fn read_preface<IO: AsyncRead + Unpin>(io: &mut ConnIo<IO>) -> std::io::Result<Option<bool>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    let h2 = loop {
        let n = io.read(&mut buf[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            break false;
        }
        filled += n;
        if buf[..filled] != H2_PREFACE[..filled] {
            break false;
        }
        if filled == buf.len() {
            break true;
        }
    };
    io.unread(Bytes::copy_from_slice(&buf[..filled]));
    Ok(Some(h2))
}

/// HTTP/1.1 on one connection. The connection is in hyper while it is
/// busy; once [`ConnIo`] finds it idle between requests, hyper hands it
/// back (with any byte it read ahead) and it waits for its next byte
/// holding none of hyper's buffers.
async fn serve_http1<IO, S>(
    mut io: ConnIo<IO>,
    mut svc: S,
    h1: &http1::Builder,
    activity: &Activity,
    idle: &prometheus_client::metrics::gauge::Gauge,
    waiter: &mut drain::Waiter,
) -> hyper::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Unpin,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    enum Step {
        Ended(hyper::Result<()>),
        Park,
        Drain,
    }
    loop {
        // Set while the connection waited outside hyper: stale now.
        activity.take_park();
        // Boxed, so that a parked connection's task holds none of it.
        let mut conn = Box::new(h1.serve_connection(TokioIo::new(io), svc).with_upgrades());
        let step = {
            let served = poll_fn(|cx| match Pin::new(&mut *conn).poll(cx) {
                Poll::Ready(r) => Poll::Ready(Step::Ended(r)),
                Poll::Pending if activity.take_park() => Poll::Ready(Step::Park),
                Poll::Pending => Poll::Pending,
            });
            tokio::select! {
                step = served => step,
                () = waiter.draining() => Step::Drain,
            }
        };
        match step {
            Step::Ended(r) => return r,
            Step::Drain => {
                // The request in flight finishes; keep-alive ends.
                Pin::new(&mut *conn).graceful_shutdown();
                return Pin::new(&mut *conn).await;
            }
            Step::Park => {
                let Some(parts) = conn.into_parts() else {
                    return Ok(());
                };
                io = parts.io.into_inner();
                svc = parts.service;
                if !parts.read_buf.is_empty() {
                    // The client sent more than hyper had served yet.
                    io.unread(parts.read_buf);
                    continue;
                }
            }
        }
        idle.inc();
        let mut byte = [0u8; 1];
        let next = tokio::select! {
            r = io.read(&mut byte) => Some(r),
            () = waiter.draining() => None,
        };
        idle.dec();
        match next {
            Some(Ok(1)) => io.unread(Bytes::copy_from_slice(&byte)),
            // The client closed, the idle timeout cut it, or touchgate is
            // draining: with nothing in flight the connection just closes.
            _ => return Ok(()),
        }
    }
}
