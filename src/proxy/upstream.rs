//! The pooled HTTP/1.1 client to the app.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

use super::body::ProxyBody;
use super::h1::pool::Pool;
use crate::config::ProxyConfig;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream refused or unreachable: {0}")]
    Connect(String),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream failed: {0}")]
    Failed(String),
}

impl UpstreamError {
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Failed(_) => "failed",
        }
    }
}

#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, ProxyBody>,
    /// Idle connections for the direct HTTP/1.1 path (`proxy::h1`).
    direct: Arc<Pool>,
    authority: Authority,
    response_timeout: Duration,
}

impl Upstream {
    pub fn new(cfg: &ProxyConfig) -> Result<Upstream, UpstreamError> {
        let uri: Uri = cfg
            .upstream
            .parse()
            .map_err(|e| UpstreamError::Failed(format!("proxy.upstream: {e}")))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| UpstreamError::Failed("proxy.upstream has no host".into()))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.upstream_connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.upstream_pool_idle_timeout)
            .pool_max_idle_per_host(cfg.upstream_pool_max_idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        let direct = Pool::new(
            format!(
                "{}:{}",
                authority.host(),
                authority.port_u16().unwrap_or(80)
            ),
            cfg.upstream_connect_timeout,
            cfg.upstream_pool_idle_timeout,
            cfg.upstream_pool_max_idle,
        );
        Ok(Upstream {
            client,
            direct,
            authority,
            response_timeout: cfg.upstream_response_timeout,
        })
    }

    pub fn direct_pool(&self) -> &Pool {
        &self.direct
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The URI of a request to the app: its path and query on the upstream.
    pub fn uri(&self, path_and_query: Option<&PathAndQuery>) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            path_and_query
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
    }

    /// Send a request; the response head must arrive within the configured
    /// response timeout (the body then streams without one).
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout(self.response_timeout)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(UpstreamError::Failed(error_chain(&e))),
        }
    }

    /// Whether the app accepts TCP connections now (for `/readyz`).
    pub async fn reachable(&self, timeout: Duration) -> bool {
        let addr = format!(
            "{}:{}",
            self.authority.host(),
            self.authority.port_u16().unwrap_or(80)
        );
        matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        )
    }
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
