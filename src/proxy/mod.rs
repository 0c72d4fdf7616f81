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

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use drain::Drain;

use crate::config::Config;
use crate::request_path::{self, ConnMeta, Shared};
use conn::{ConnIo, InFlight};
use smuggling::{AmbiguousHeads, HeadTracker};

/// What the service knows about the connection a request came on.
#[derive(Debug)]
struct ConnInfo {
    peer: SocketAddr,
    tls: bool,
    heads: Arc<AmbiguousHeads>,
    in_flight: Arc<InFlight>,
    next_index: AtomicU64,
}

/// hyper's built-in header bound (`DEFAULT_MAX_HEADERS`).
const HYPER_MAX_HEADERS: usize = 100;

fn http_builder(cfg: &Config) -> auto::Builder<TokioExecutor> {
    let p = &cfg.proxy;
    let mut b = auto::Builder::new(TokioExecutor::new());
    let mut h1 = b.http1();
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
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(p.h2_max_concurrent_streams)
        .max_header_list_size(p.h2_max_header_list_size)
        .max_pending_accept_reset_streams(p.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(p.h2_max_local_error_reset_streams)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Accept until `stop_accepting` fires; returns the handle that drains
/// the connections still open.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    stop_accepting: CancellationToken,
) -> Arc<Drain> {
    let drain = Drain::new();
    let builder = Arc::new(http_builder(&shared.cfg));
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
        let builder = builder.clone();
        let tls = tls.clone();
        let waiter = drain.waiter();
        drain.spawn(async move {
            shared.metrics.connections_open.inc();
            match tls {
                Some(acceptor) => {
                    let timeout = shared.cfg.proxy.header_read_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(
                                tls_stream,
                                peer,
                                true,
                                shared.clone(),
                                builder,
                                waiter,
                            )
                            .await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => {
                    serve_connection(stream, peer, false, shared.clone(), builder, waiter).await
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
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut waiter: drain::Waiter,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let p = &shared.cfg.proxy;
    let info = Arc::new(ConnInfo {
        peer,
        tls,
        heads: AmbiguousHeads::new(),
        in_flight: Arc::new(InFlight::default()),
        next_index: AtomicU64::new(0),
    });
    let tracker = HeadTracker::new(p.max_header_bytes.max(8192), info.heads.clone());
    let io = ConnIo::new(
        io,
        tracker,
        info.in_flight.clone(),
        p.header_read_timeout,
        p.idle_timeout,
    );
    let svc_shared = shared.clone();
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let index = info.next_index.fetch_add(1, Ordering::Relaxed);
        let (shared, info) = (svc_shared.clone(), info.clone());
        async move {
            let _in_flight = info.in_flight.enter();
            let meta = ConnMeta {
                peer: info.peer,
                tls: info.tls,
                ambiguity: info.heads.ambiguity(index),
            };
            let req = req.map(body::incoming);
            let resp = request_path::serve(&shared, &meta, &shared.upstream, req).await;
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        () = waiter.draining() => {
            // In-flight requests finish; keep-alive ends.
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
