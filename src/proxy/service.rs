//! The request path, top to bottom: guard, classify, identify, rewrite
//! headers, forward, then cookies and events on the way back.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

use super::body::{self, ProxyBody};
use super::headers::{self, Forwarded};
use super::upstream::UpstreamError;
use super::{ConnInfo, Shared};
use crate::capture::visit::Visit;
use crate::capture::{Capture, Class};
use crate::config::ForwardIp;
use crate::event::Envelope;
use std::net::IpAddr;

pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    index: u64,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let _in_flight = conn.in_flight.enter();
    let started = Instant::now();
    shared.metrics.requests_total.inc();
    let span = tracing::debug_span!("request", method = %req.method(), path = %req.uri().path());
    let resp = route(&shared, &conn, index, req).instrument(span).await;
    shared
        .metrics
        .request_duration_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(resp)
}

async fn route(
    shared: &Shared,
    conn: &ConnInfo,
    index: u64,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let capture = &shared.capture;

    // 1. Smuggling: a head with both framings is answered, never forwarded.
    if conn.heads.is_ambiguous(index) {
        tracing::info!(peer = %conn.peer, "request with both Content-Length and Transfer-Encoding refused");
        return plain(
            StatusCode::BAD_REQUEST,
            "request has both Content-Length and Transfer-Encoding\n",
            true,
        );
    }

    // 2. What is it? touchgate's own paths are answered here.
    let class = capture.classify(req.method(), req.uri().path(), req.headers());
    let client_upgrade =
        headers::is_upgrade_request(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let client_ip = capture.client_ip(conn.peer.ip(), &parts.headers);
    match class {
        Class::Script => return capture.script(&parts),
        Class::Beacon => {
            return capture
                .beacon(&parts, body, conn.tls, conn.peer.ip(), client_ip)
                .await;
        }
        _ => {}
    }

    // 3-4. Who and from where, and the head the app receives.
    let prepared = prepare(
        capture,
        shared.cfg.privacy.forward_client_ip,
        &mut parts,
        class,
        conn.tls,
        conn.peer.ip(),
        client_ip,
        client_upgrade.is_some(),
    );
    let (visit, form, context_header) = (prepared.visit, prepared.form, prepared.context_header);
    if let Some(landing) = prepared.landing {
        capture.emit(landing);
    }
    parts.uri = shared.upstream.uri(parts.uri.path_and_query());
    parts.version = Version::HTTP_11;

    // 5. The body: streamed, except a configured form's, buffered up to
    //    the capture limit and replayed byte for byte.
    let (body, pending) = match (form, &visit) {
        (Some(i), Some(v)) if let Some(rule) = capture.form(i) => {
            match capture
                .buffer_form(rule, v, &parts, body, context_header.as_ref(), client_ip)
                .await
            {
                Ok((body, pending)) => (body, Some(pending)),
                Err(e) => {
                    tracing::debug!(error = %e, "client body failed while buffering");
                    return plain(
                        StatusCode::BAD_REQUEST,
                        "request body could not be read\n",
                        true,
                    );
                }
            }
        }
        _ => (body::incoming(body), None),
    };

    // 6. Forward.
    let upstream_resp = match shared.upstream.send(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => {
            let (status, text) = upstream_failed(shared, &e);
            return plain(status, text, false);
        }
    };

    // 7. On the way back: tunnel an accepted upgrade, confirm conversions,
    //    set the identity cookies.
    let (mut resp_parts, resp_body) = upstream_resp.into_parts();
    let switching = resp_parts.status == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade =
                hyper::upgrade::on(Response::from_parts(resp_parts.clone(), resp_body));
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
            headers::strip_hop_by_hop(&mut resp_parts.headers, true);
            return Response::from_parts(resp_parts, body::empty());
        }
        // An unsolicited 101 cannot be relayed.
        return plain(
            StatusCode::BAD_GATEWAY,
            "upstream switched protocols unasked\n",
            false,
        );
    }
    headers::strip_hop_by_hop(&mut resp_parts.headers, false);
    if let Some(pending) = pending {
        capture.confirm(pending, resp_parts.status);
    }
    if let Some(v) = &visit {
        capture.set_cookies(v, conn.tls, &mut resp_parts.headers);
    }
    Response::from_parts(resp_parts, body::incoming(resp_body))
}

/// What the head of a request decided, before any I/O.
pub struct Prepared {
    pub visit: Option<Visit>,
    pub form: Option<usize>,
    pub context_header: Option<HeaderValue>,
    pub landing: Option<Envelope>,
}

/// Steps 3 and 4 of the request path, free of I/O (also used by `touchgate
/// audit --request`): identify the visitor, read the touch, and rewrite
/// the head into what the app receives.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    capture: &Capture,
    forward_ip: ForwardIp,
    parts: &mut http::request::Parts,
    class: Class,
    tls: bool,
    peer: IpAddr,
    client_ip: IpAddr,
    upgrade: bool,
) -> Prepared {
    let visit = capture.visit(parts, class, tls, peer);
    let form = match class {
        Class::Form(i) => Some(i),
        _ => None,
    };
    let context_header =
        form.and_then(|_| parts.headers.get(crate::capture::context::HEADER).cloned());
    // A cheap, refcounted copy of what the client addressed (h2
    // `:authority`, else `Host`): no per-request string allocation on h1.
    let host: Option<HeaderValue> = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    let proto = capture.scheme(tls, peer, &parts.headers);
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    headers::strip_touch_headers(&mut parts.headers);
    parts.headers.remove(header::EXPECT);
    headers::set_forwarded(
        &mut parts.headers,
        &Forwarded {
            client_ip,
            policy: forward_ip,
            proto,
            host: host.as_ref().and_then(|h| h.to_str().ok()),
        },
    );
    headers::add_via(&mut parts.headers, parts.version);
    if !parts.headers.contains_key(header::HOST)
        && let Some(h) = host
    {
        parts.headers.insert(header::HOST, h);
    }
    let mut landing = None;
    if let Some(v) = &visit {
        capture.touch_headers(v, &mut parts.headers);
        landing = capture.landing_event(v, client_ip, parts);
    }
    Prepared {
        visit,
        form,
        context_header,
        landing,
    }
}

async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "tunnel closed with an error");
    }
}

/// An exchange with the app failed: counted, logged, and answered 504 when
/// the app was too slow, 502 otherwise.
pub fn upstream_failed(shared: &Shared, e: &UpstreamError) -> (StatusCode, &'static str) {
    shared
        .metrics
        .upstream_errors_total
        .get_or_create(&crate::metrics::KindLabel {
            kind: e.kind().into(),
        })
        .inc();
    tracing::warn!(error = %e, upstream = %shared.upstream.authority(), "upstream request failed");
    match e {
        UpstreamError::Timeout(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "upstream did not answer in time\n",
        ),
        _ => (StatusCode::BAD_GATEWAY, "upstream unavailable\n"),
    }
}

/// A short plain-text answer from touchgate itself.
pub fn plain(status: StatusCode, text: &'static str, close: bool) -> Response<ProxyBody> {
    let mut r = Response::new(body::full(text));
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
