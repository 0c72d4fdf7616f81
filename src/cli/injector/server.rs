//! The webhook's HTTPS server: `POST /mutate` and `GET /healthz`, with the
//! limits that keep one hostile or broken client from stopping it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::cli::inject::InjectOptions;

use super::certs::Certs;
use super::review::{Decision, ReviewError, review};

/// Largest AdmissionReview body accepted. A pod is far smaller; the API
/// server's own request limit is larger, so this is the injector's guard.
pub const MAX_BODY: usize = 1024 * 1024;
/// How long in-flight reviews may take to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(10);

/// What every connection shares.
pub struct Injector {
    pub options: InjectOptions,
    pub certs: Arc<Certs>,
    /// For the TLS handshake, the request head and the body each.
    pub header_timeout: Duration,
}

/// Serve on `listener` until `stop`, then let in-flight reviews finish.
pub async fn serve(listener: TcpListener, injector: Arc<Injector>, stop: CancellationToken) {
    let graceful = GracefulShutdown::new();
    tokio::spawn(injector.certs.clone().watch(stop.clone()));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: wait, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = TlsAcceptor::from(injector.certs.config());
        let injector = injector.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(injector.header_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let header_timeout = injector.header_timeout;
            let svc = service_fn(move |req| {
                let injector = injector.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&injector, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("reviews still in flight after {DRAIN:?}; stopping anyway");
    }
}

async fn route(
    injector: &Injector,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::POST, "/mutate") => mutate(injector, req, peer).await,
        (_, "/healthz" | "/mutate") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn mutate(
    injector: &Injector,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let body = Limited::new(req.into_body(), MAX_BODY).collect();
    let body = match tokio::time::timeout(injector.header_timeout, body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large();
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "reading the review failed");
            return text(StatusCode::BAD_REQUEST, "cannot read the request body\n");
        }
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "the request body was too slow\n",
            );
        }
    };
    match review(&body, &injector.options) {
        Ok(answer) => {
            match &answer.decision {
                Decision::Injected => {
                    tracing::info!(uid = %answer.uid, pod = %answer.pod, "sidecar injected");
                }
                Decision::Skipped(why) => {
                    tracing::debug!(uid = %answer.uid, pod = %answer.pod, why, "not injected");
                }
                Decision::Refused(why) => {
                    tracing::warn!(uid = %answer.uid, pod = %answer.pod, why, "not injected");
                }
            }
            match serde_json::to_vec(&answer.review) {
                Ok(bytes) => {
                    let mut r = Response::new(Full::new(Bytes::from(bytes)));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r
                }
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot write the answer: {e}\n"),
                ),
            }
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "bad review");
            // Every kind of bad body is the client's fault; a new kind must
            // choose its status here.
            let status = match e {
                ReviewError::Json(_) | ReviewError::NotAReview(_) | ReviewError::NoUid => {
                    StatusCode::BAD_REQUEST
                }
            };
            text(status, &format!("{e}\n"))
        }
    }
}

fn too_large() -> Response<Full<Bytes>> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the review is larger than {MAX_BODY} bytes\n"),
    )
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
