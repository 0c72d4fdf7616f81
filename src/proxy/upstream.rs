//! The HTTP/1.1 client to the app, on hyper's connection API.
//!
//! Each exchange runs in the task that serves the client's request: the
//! request future and, after it, the response body poll the upstream
//! connection themselves, so a pass-through request wakes no other task
//! (a pooled client that owns its connections in tasks of their own pays
//! a cross-task hand-off, in futex wake-ups, twice per request; see
//! docs/performance.md).
//!
//! Idle connections wait in one bounded pool, newest first, unpolled: a
//! connection the app closed is noticed when it is taken (one read that
//! finds the end) or by the sweep. A request that finds its reused
//! connection closed before any answer is sent again on a new connection
//! when that is safe (an idempotent method with no body); otherwise the
//! client gets the 502.

use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::future::{Future, poll_fn};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::body::{Conn, ConnHome, Permit, ProxyBody, UpstreamBody};
use crate::config::ProxyConfig;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream refused or unreachable: {0}")]
    Connect(String),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream connection limit reached (proxy.upstream_max_connections = {0})")]
    Saturated(usize),
    #[error("upstream switched protocols unasked")]
    UnaskedUpgrade,
    #[error("upstream failed: {0}")]
    Failed(String),
}

impl UpstreamError {
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Saturated(_) => "saturated",
            UpstreamError::UnaskedUpgrade | UpstreamError::Failed(_) => "failed",
        }
    }

    /// The status touchgate answers the client with.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            UpstreamError::Timeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream did not answer in time\n",
            ),
            UpstreamError::Saturated(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connection limit reached\n",
            ),
            UpstreamError::UnaskedUpgrade => (
                StatusCode::BAD_GATEWAY,
                "upstream switched protocols unasked\n",
            ),
            _ => (StatusCode::BAD_GATEWAY, "upstream unavailable\n"),
        }
    }
}

/// Where requests go: the app's authority, and the URI of a request on it.
#[derive(Debug, Clone)]
pub struct Target {
    authority: Authority,
    /// `host:port`, for connecting.
    addr: String,
}

impl Target {
    pub fn new(cfg: &ProxyConfig) -> Result<Target, UpstreamError> {
        let uri: Uri = cfg
            .upstream
            .parse()
            .map_err(|e| UpstreamError::Failed(format!("proxy.upstream: {e}")))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| UpstreamError::Failed("proxy.upstream has no host".into()))?;
        let addr = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        Ok(Target { authority, addr })
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The request target the app receives: origin-form (RFC 9112 §3.2.1),
    /// the path and query alone; the authority goes in `Host`.
    pub fn uri(&self, path_and_query: Option<&PathAndQuery>) -> Uri {
        let pq = path_and_query
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Uri::from(pq)
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Idle connections to the app, newest last, at most `max_idle`.
struct Pool {
    idle: Mutex<Vec<Idle>>,
    /// A connection went idle or closed (for requests waiting at the
    /// connection bound).
    freed: Arc<tokio::sync::Notify>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl ConnHome for Pool {
    fn put(&self, conn: Conn) {
        self.put_idle(conn);
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while holding the lock cannot leave the Vec invalid.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self) -> Option<Conn> {
        let now = Instant::now();
        loop {
            let idle = self.lock().pop()?;
            let mut conn = idle.conn;
            if now.duration_since(idle.since) < self.idle_timeout && conn.reusable() {
                conn.reused = true;
                return Some(conn);
            }
        }
    }

    fn put_idle(&self, mut conn: Conn) {
        if self.max_idle == 0 || !conn.reusable() {
            return;
        }
        let since = Instant::now();
        let mut idle = self.lock();
        // The oldest is the likeliest to be closed by the app first; it is
        // closed after the lock is released.
        let oldest = (idle.len() >= self.max_idle).then(|| idle.remove(0));
        idle.push(Idle { conn, since });
        drop(idle);
        drop(oldest);
        self.freed.notify_one();
    }

    /// Drop expired and closed connections, so that their sockets do not
    /// wait for the next request to be freed.
    fn sweep(&self) {
        // Taken out, so that polling each connection (a read each) and
        // closing the expired ones happen without the lock that requests
        // take their connections under.
        let idle = std::mem::take(&mut *self.lock());
        let now = Instant::now();
        let mut keep: Vec<Idle> = idle
            .into_iter()
            .filter_map(|mut i| {
                (now.duration_since(i.since) < self.idle_timeout && i.conn.reusable()).then_some(i)
            })
            .collect();
        let mut idle = self.lock();
        // Those put back meanwhile are newer: they stay at the end.
        keep.append(&mut idle);
        let over = keep.len().saturating_sub(self.max_idle);
        let oldest: Vec<Idle> = keep.drain(..over).collect();
        *idle = keep;
        drop(idle);
        drop(oldest);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The client to the app.
#[derive(Clone)]
pub struct Upstream {
    target: Target,
    pool: Arc<Pool>,
    permits: Option<Arc<Semaphore>>,
    max_connections: usize,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_buf: usize,
}

impl Upstream {
    /// Needs a Tokio runtime: the pool's sweep runs on it.
    pub fn new(cfg: &ProxyConfig) -> Result<Upstream, UpstreamError> {
        let pool = Arc::new(Pool {
            idle: Mutex::new(Vec::new()),
            freed: Arc::new(tokio::sync::Notify::new()),
            max_idle: cfg.upstream_pool_max_idle,
            idle_timeout: cfg.upstream_pool_idle_timeout,
        });
        let weak = Arc::downgrade(&pool);
        let every = (cfg.upstream_pool_idle_timeout / 2).max(Duration::from_millis(100));
        tokio::spawn(sweep(weak, every));
        let max = cfg.upstream_max_connections;
        Ok(Upstream {
            target: Target::new(cfg)?,
            pool,
            permits: (max > 0).then(|| Arc::new(Semaphore::new(max))),
            max_connections: max,
            connect_timeout: cfg.upstream_connect_timeout,
            response_timeout: cfg.upstream_response_timeout,
            max_buf: cfg.max_header_bytes.max(8192) + 8192,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn authority(&self) -> &Authority {
        self.target.authority()
    }

    /// Idle connections in the pool now.
    pub fn idle_connections(&self) -> usize {
        self.pool.len()
    }

    /// A connection for one request: an idle one from the pool, else a new
    /// one. At the connection bound, waits for either, within the connect
    /// timeout.
    async fn checkout(&self) -> Result<Conn, UpstreamError> {
        let Some(permits) = &self.permits else {
            return match self.pool.take() {
                Some(c) => Ok(c),
                None => self.connect(None).await,
            };
        };
        let deadline = Instant::now() + self.connect_timeout;
        loop {
            // Registered before looking, so a release in between is not missed.
            let freed = self.pool.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            if let Some(c) = self.pool.take() {
                return Ok(c);
            }
            if let Ok(p) = permits.clone().try_acquire_owned() {
                return self
                    .connect(Some(Permit {
                        _permit: p,
                        freed: self.pool.freed.clone(),
                    }))
                    .await;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(UpstreamError::Saturated(self.max_connections));
            }
        }
    }

    async fn connect(&self, permit: Option<Permit>) -> Result<Conn, UpstreamError> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.target.addr))
                .await
            {
                Err(_) => {
                    return Err(UpstreamError::Connect(format!(
                        "{}: no connection within {:?}",
                        self.target.addr, self.connect_timeout
                    )));
                }
                Ok(Err(e)) => {
                    return Err(UpstreamError::Connect(format!("{}: {e}", self.target.addr)));
                }
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        let (send, conn) = http1::Builder::new()
            .max_buf_size(self.max_buf)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Failed(error_chain(&e)))?;
        Ok(Conn {
            send,
            driver: Some(Box::pin(conn.with_upgrades())),
            _permit: permit,
            reused: false,
        })
    }

    /// Send a request; the response head must arrive within the configured
    /// response timeout (the body then streams without one). The response
    /// body drives the connection and hands it back to the pool at its end.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let deadline = Instant::now() + self.response_timeout;
        let upgrade = req.headers().contains_key(http::header::UPGRADE);
        let mut conn = self.checkout().await?;
        // Kept only for a request that may be sent twice.
        let again = (conn.reused && retry_safe(&req)).then(|| head_copy(&req));
        let (resp, conn) = match exchange(conn, req, deadline, self.response_timeout).await {
            Ok(done) => done,
            Err(Failure::Unanswered(e)) if again.is_some() => {
                tracing::debug!(error = %e, "pooled upstream connection closed unanswered: sending again on a new one");
                let Some(req) = again else {
                    return Err(UpstreamError::Failed(error_chain(&e)));
                };
                conn = self.checkout().await?;
                exchange(conn, req, deadline, self.response_timeout)
                    .await
                    .map_err(Failure::into_error)?
            }
            Err(f) => return Err(f.into_error()),
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if !upgrade {
                return Err(UpstreamError::UnaskedUpgrade);
            }
            // The connection now belongs to the tunnel: its driver hands
            // the socket over to the upgrade once polled to its end.
            if let Some(d) = conn.driver {
                tokio::spawn(async move {
                    if let Err(e) = d.await {
                        tracing::debug!(error = %e, "upstream upgrade failed");
                    }
                });
            }
            return Ok(resp.map(|_| ProxyBody::Empty));
        }
        Ok(resp.map(|body| ProxyBody::Upstream(UpstreamBody::new(body, conn, self.pool.clone()))))
    }

    /// Whether the app accepts TCP connections now (for `/readyz`).
    pub async fn reachable(&self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, TcpStream::connect(&self.target.addr)).await,
            Ok(Ok(_))
        )
    }
}

async fn sweep(pool: Weak<Pool>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        pool.sweep();
    }
}

enum Failure {
    /// The connection ended before any response: nothing was answered.
    Unanswered(hyper::Error),
    Error(UpstreamError),
}

impl Failure {
    fn into_error(self) -> UpstreamError {
        match self {
            Failure::Unanswered(e) => UpstreamError::Failed(error_chain(&e)),
            Failure::Error(e) => e,
        }
    }
}

/// One request on `conn`, driving its I/O until the response head.
async fn exchange(
    mut conn: Conn,
    req: Request<ProxyBody>,
    deadline: Instant,
    timeout: Duration,
) -> Result<(Response<Incoming>, Conn), Failure> {
    let reused = conn.reused;
    let mut answer = std::pin::pin!(conn.send.send_request(req));
    let waited = tokio::time::timeout_at(
        deadline,
        poll_fn(|cx| {
            conn.poll_driver(cx);
            answer.as_mut().poll(cx)
        }),
    )
    .await;
    match waited {
        Err(_) => Err(Failure::Error(UpstreamError::Timeout(timeout))),
        Ok(Ok(resp)) => Ok((resp, conn)),
        Ok(Err(e)) if reused && (e.is_incomplete_message() || e.is_canceled() || is_reset(&e)) => {
            Err(Failure::Unanswered(e))
        }
        Ok(Err(e)) => Err(Failure::Error(UpstreamError::Failed(error_chain(&e)))),
    }
}

fn is_reset(e: &hyper::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            );
        }
        src = s.source();
    }
    false
}

/// Idempotent (RFC 9110 §9.2.2) and without a body: sending it again on a
/// new connection cannot do anything twice.
fn retry_safe(req: &Request<ProxyBody>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) && req.body().is_end_stream()
}

fn head_copy(req: &Request<ProxyBody>) -> Request<ProxyBody> {
    let mut copy = Request::new(ProxyBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
