//! The admin listener: `/healthz`, `/readyz`, `/metrics`, and offline
//! ingest on `POST /v1/events`.

pub mod ingest;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::proxy::body::text_response;
use crate::proxy::body::{self, ProxyBody};
use crate::proxy::upstream::Upstream;

/// Process state the probes report.
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
    sinks_started: AtomicBool,
}

impl Health {
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn set_sinks_started(&self) {
        self.sinks_started.store(true, Ordering::Release);
    }

    pub fn sinks_started(&self) -> bool {
        self.sinks_started.load(Ordering::Acquire)
    }
}

pub struct Admin {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub upstream: Upstream,
    pub ingest: Option<ingest::Ingest>,
}

/// Serve the admin listener until `stop` fires.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, stop: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&admin, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "admin connection error");
            }
        });
    }
}

async fn route(admin: &Admin, req: Request<Incoming>) -> Response<ProxyBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text_response(StatusCode::OK, "ok\n", false),
        (&Method::GET, "/readyz") => {
            if admin.health.is_draining() {
                return text_response(StatusCode::SERVICE_UNAVAILABLE, "draining\n", false);
            }
            if !admin.health.sinks_started() {
                return text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "sinks not started\n",
                    false,
                );
            }
            if !admin.upstream.reachable(Duration::from_millis(500)).await {
                return text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream unreachable\n",
                    false,
                );
            }
            text_response(StatusCode::OK, "ready\n", false)
        }
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(body::full(admin.metrics.encode()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (&Method::POST, "/v1/events") => match &admin.ingest {
            Some(ingest) => ingest.handle(req).await,
            None => text_response(StatusCode::NOT_FOUND, "ingest is not enabled\n", false),
        },
        _ => text_response(StatusCode::NOT_FOUND, "not found\n", false),
    }
}
