//! The request path, top to bottom: named phases over one per-request
//! context ([`RequestCtx`]), in the way pingora's `ProxyHttp` phases work.
//! [`serve`] runs them in order. hyper's server drives it for every
//! request, HTTP/1.1 and HTTP/2 alike (`proxy::serve_connection`), and
//! `touchgate audit --request` drives the same code with no network, in
//! front of an app that answers a given status (`cli::audit`).
//!
//! 1. [`request_head`]: refuse what cannot be forwarded safely, classify
//!    the request, and answer touchgate's own paths (the client snippet)
//!    here.
//! 2. [`local_body`]: a client beacon, read whole and answered here.
//! 3. [`identify`]: who the visitor is (cookies) and where the visit came
//!    from (touch); the head the app receives (`x-touch-*`, forwarding
//!    headers, no hop-by-hop fields); the landing event.
//! 4. [`request_body`]: the body streams to the app, except a configured
//!    form's, which is read up to `proxy.max_capture_body` for its
//!    conversion and sent on byte for byte.
//! 5. [`upstream_request`]: address the app. Then the exchange itself
//!    ([`Forward`]).
//! 6. [`response_head`]: tunnel an upgrade the app accepted, then
//!    [`confirm_conversion`]: judge a pending conversion by the form's
//!    success rule (on the head, or on the start of the body as it
//!    streams to the client), then [`response_cookies`]: set the identity
//!    cookies, never on a response a shared cache may keep as it is.
//! 7. [`completion`]: request metrics, once the answer is decided.
//!
//! [`upstream_error`] is the answer when the exchange fails (a pending
//! conversion is then unconfirmed).
//!
//! Every decision is taken by `capture` over heads and bytes; this file
//! only sequences them and moves bodies.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

use crate::capture::conversion::{FormBody, Pending};
use crate::capture::visit::Visit;
use crate::capture::{Capture, Class};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::body::{self, Buffered, ProxyBody, text_response};
use crate::proxy::headers::{self, Forwarded};
use crate::proxy::smuggling::Ambiguity;
use crate::proxy::upstream::{Upstream, UpstreamError};

/// Everything the request path needs, built once at start.
pub struct Shared {
    pub cfg: Arc<Config>,
    pub upstream: Upstream,
    pub capture: Capture,
    pub metrics: Arc<Metrics>,
}

/// What the transport knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnMeta {
    pub peer: SocketAddr,
    pub tls: bool,
    /// Set when the smuggling guard found this request's head ambiguous.
    pub ambiguity: Option<Ambiguity>,
}

/// The exchange with the app: [`Upstream`] over the network, or the
/// audit's app that answers without one.
pub trait Forward {
    fn forward(
        &self,
        req: Request<ProxyBody>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, UpstreamError>> + Send;
}

impl Forward for Upstream {
    fn forward(
        &self,
        req: Request<ProxyBody>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, UpstreamError>> + Send {
        self.send(req)
    }
}

/// One request's state, carried from phase to phase.
pub struct RequestCtx {
    started: Instant,
    pub class: Class,
    /// The client's address, per `proxy.trusted_proxies`.
    pub client_ip: IpAddr,
    visit: Option<Visit>,
    /// The configured form this request posts to.
    form: Option<usize>,
    /// The client context object sent as a header (forms only).
    context_header: Option<HeaderValue>,
    /// The conversion waiting for the app's answer.
    pending: Option<Pending>,
    /// The client's side of an upgrade it asked for.
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The request came with a body: an error answer then closes the
    /// connection, since what is left of the body stands in the way of
    /// the next request.
    has_body: bool,
}

type Step<T> = ControlFlow<Response<ProxyBody>, T>;

/// Run one request through every phase.
pub async fn serve<F: Forward>(
    shared: &Shared,
    conn: &ConnMeta,
    upstream: &F,
    req: Request<ProxyBody>,
) -> Response<ProxyBody> {
    let span = tracing::debug_span!("request", method = %req.method(), path = %req.uri().path());
    async {
        let mut ctx = RequestCtx {
            started: Instant::now(),
            class: Class::Pass,
            client_ip: conn.peer.ip(),
            visit: None,
            form: None,
            context_header: None,
            pending: None,
            client_upgrade: None,
            has_body: false,
        };
        let resp = match phases(shared, conn, upstream, &mut ctx, req).await {
            Continue(resp) | Break(resp) => resp,
        };
        completion(shared, &ctx, &resp);
        resp
    }
    .instrument(span)
    .await
}

async fn phases<F: Forward>(
    shared: &Shared,
    conn: &ConnMeta,
    upstream: &F,
    ctx: &mut RequestCtx,
    req: Request<ProxyBody>,
) -> Step<Response<ProxyBody>> {
    let (mut parts, body) = request_head(shared, conn, ctx, req)?;
    if ctx.class == Class::Beacon {
        return Break(local_body(shared, conn, ctx, &parts, body).await);
    }
    identify(shared, conn, ctx, &mut parts);
    let body = request_body(shared, ctx, &parts, body).await?;
    upstream_request(shared, &mut parts);
    let resp = match upstream.forward(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => return Break(upstream_error(shared, ctx, &e)),
    };
    Continue(response_head(shared, conn, ctx, resp))
}

/// Phase 1. A head whose framing is ambiguous is answered 400 and never
/// forwarded; touchgate's snippet is answered here.
pub fn request_head(
    shared: &Shared,
    conn: &ConnMeta,
    ctx: &mut RequestCtx,
    mut req: Request<ProxyBody>,
) -> Step<(http::request::Parts, ProxyBody)> {
    if let Some(why) = conn.ambiguity {
        tracing::info!(peer = %conn.peer, reason = why.text().trim_end(), "ambiguous request framing refused");
        return Break(text_response(StatusCode::BAD_REQUEST, why.text(), true));
    }
    let capture = &shared.capture;
    ctx.class = capture.classify(req.method(), req.uri().path(), req.headers());
    if headers::is_upgrade_request(req.headers()) {
        ctx.client_upgrade = Some(hyper::upgrade::on(&mut req));
    }
    let (parts, body) = req.into_parts();
    ctx.has_body = !http_body::Body::is_end_stream(&body);
    ctx.client_ip = capture.client_ip(conn.peer.ip(), &parts.headers);
    if ctx.class == Class::Script {
        let s = capture.script(&parts);
        let mut r = Response::new(body::full(s.body));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        );
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(s.len));
        if s.gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        return Break(r);
    }
    Continue((parts, body))
}

/// Phase 2. `POST {prefix}/b`: the beacon is read whole (it is tiny),
/// counted for parity and emitted; 204, or 400 with the reason.
pub async fn local_body(
    shared: &Shared,
    conn: &ConnMeta,
    ctx: &RequestCtx,
    parts: &http::request::Parts,
    body: ProxyBody,
) -> Response<ProxyBody> {
    use crate::capture::client::{BeaconError, MAX_BEACON};
    let read = match body::buffer(body, MAX_BEACON).await {
        Ok(Buffered::Complete { data, .. }) => Ok(data),
        Ok(Buffered::Oversize(_)) | Err(_) => Err(BeaconError::Unreadable),
    };
    let answered = read.and_then(|data| {
        shared
            .capture
            .beacon(parts, &data, conn.tls, conn.peer.ip(), ctx.client_ip)
    });
    match answered {
        Ok(()) => {
            let mut r = Response::new(body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Err(e) => text_response(StatusCode::BAD_REQUEST, e.text(), false),
    }
}

/// Phase 3. Identify the visitor, read the touch, and rewrite the head
/// into what the app receives; emit the landing event.
pub fn identify(
    shared: &Shared,
    conn: &ConnMeta,
    ctx: &mut RequestCtx,
    parts: &mut http::request::Parts,
) {
    let capture: &Capture = &shared.capture;
    let peer = conn.peer.ip();
    ctx.visit = capture.visit(parts, ctx.class, conn.tls, peer);
    if let Class::Form(i) = ctx.class {
        ctx.form = Some(i);
        ctx.context_header = parts.headers.get(crate::capture::context::HEADER).cloned();
        // A form whose failure is read in the answer's body asks for an
        // unencoded answer: a compressed body cannot be searched.
        if capture.reads_response_body(i) {
            parts.headers.remove(header::ACCEPT_ENCODING);
        }
    }
    // A cheap, refcounted copy of what the client addressed (h2
    // `:authority`, else `Host`): no per-request string allocation on h1.
    let host: Option<HeaderValue> = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    let proto = capture.scheme(conn.tls, peer, &parts.headers);
    headers::strip_hop_by_hop(&mut parts.headers, ctx.client_upgrade.is_some());
    headers::strip_touch_headers(&mut parts.headers);
    // touchgate, not the app, answers `Expect: 100-continue` (hyper sends
    // the 100 when the body is first read).
    parts.headers.remove(header::EXPECT);
    headers::set_forwarded(
        &mut parts.headers,
        &Forwarded {
            client_ip: ctx.client_ip,
            policy: shared.cfg.privacy.forward_client_ip,
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
    if let Some(v) = &ctx.visit {
        capture.touch_headers(v, &mut parts.headers);
        if let Some(landing) = capture.landing_event(v, ctx.client_ip, parts) {
            capture.emit(landing);
        }
    }
}

/// Phase 4. The body streams untouched, except a configured form's: read
/// up to the capture limit for its conversion and replayed byte for byte.
/// Larger bodies stream through uncaptured (and are counted).
pub async fn request_body(
    shared: &Shared,
    ctx: &mut RequestCtx,
    parts: &http::request::Parts,
    body: ProxyBody,
) -> Step<ProxyBody> {
    let capture = &shared.capture;
    let (Some(rule), Some(v)) = (ctx.form.and_then(|i| capture.form(i)), &ctx.visit) else {
        return Continue(body);
    };
    let (body, captured) = match capture.form_read_limit(parts) {
        None => (body, None),
        Some(limit) => match body::buffer(body, limit).await {
            Ok(Buffered::Complete { data, trailers }) => (
                Buffered::Complete {
                    data: data.clone(),
                    trailers,
                }
                .into_body(),
                Some(data),
            ),
            Ok(over @ Buffered::Oversize(_)) => (over.into_body(), None),
            Err(e) => {
                tracing::debug!(error = %e, "client body failed while buffering");
                return Break(text_response(
                    StatusCode::BAD_REQUEST,
                    "request body could not be read\n",
                    true,
                ));
            }
        },
    };
    let read = match &captured {
        Some(data) => FormBody::Complete(data),
        None => FormBody::Oversize,
    };
    ctx.pending = Some(capture.conversion(
        rule,
        v,
        parts,
        read,
        ctx.context_header.as_ref(),
        ctx.client_ip,
    ));
    Continue(body)
}

/// Phase 5. The request line the app receives: origin-form, HTTP/1.1
/// whatever the client spoke, and a `Host` (the app's own authority when
/// the client sent none, as an HTTP/1.0 client may).
pub fn upstream_request(shared: &Shared, parts: &mut http::request::Parts) {
    let target = shared.upstream.target();
    parts.uri = target.uri(parts.uri.path_and_query());
    parts.version = Version::HTTP_11;
    if !parts.headers.contains_key(header::HOST)
        && let Ok(h) = HeaderValue::from_str(target.authority().as_str())
    {
        parts.headers.insert(header::HOST, h);
    }
}

/// Phase 6. On the way back: tunnel an accepted upgrade, judge the
/// pending conversion, set the identity cookies.
pub fn response_head(
    shared: &Shared,
    conn: &ConnMeta,
    ctx: &mut RequestCtx,
    upstream_resp: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let (mut parts, resp_body) = upstream_resp.into_parts();
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = ctx.client_upgrade.take() else {
            return upstream_error(shared, ctx, &UpstreamError::UnaskedUpgrade);
        };
        let upstream_upgrade = hyper::upgrade::on(Response::from_parts(parts.clone(), resp_body));
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
        headers::strip_hop_by_hop(&mut parts.headers, true);
        return Response::from_parts(parts, body::empty());
    }
    headers::strip_hop_by_hop(&mut parts.headers, false);
    let resp_body = confirm_conversion(shared, ctx, &mut parts, resp_body);
    response_cookies(shared, conn, ctx, &mut parts);
    Response::from_parts(parts, resp_body)
}

/// Phase 6a. The form's success rule over the app's answer: decided on the
/// head here, or, for a `failure_body` rule, by the body as it streams to
/// the client (the body returned is then wrapped in that check).
pub fn confirm_conversion(
    shared: &Shared,
    ctx: &mut RequestCtx,
    parts: &mut http::response::Parts,
    resp_body: ProxyBody,
) -> ProxyBody {
    let Some(pending) = ctx.pending.take() else {
        return resp_body;
    };
    match shared
        .capture
        .answer(pending, parts.status, &mut parts.headers)
    {
        Some(check) => body::checked(resp_body, check),
        None => resp_body,
    }
}

/// Phase 6b. The identity cookies, on page loads and form posts: a
/// response a shared cache may store is made private first, or gets none
/// (`identity.cacheable_responses`).
pub fn response_cookies(
    shared: &Shared,
    conn: &ConnMeta,
    ctx: &RequestCtx,
    parts: &mut http::response::Parts,
) {
    if let Some(v) = &ctx.visit {
        shared
            .capture
            .response_cookies(v, conn.tls, parts.status.as_u16(), &mut parts.headers);
    }
}

/// Phase 7. Counted once the answer is decided, whoever gave it.
pub fn completion(shared: &Shared, ctx: &RequestCtx, _resp: &Response<ProxyBody>) {
    shared.metrics.requests_total.inc();
    shared
        .metrics
        .request_duration_seconds
        .observe(ctx.started.elapsed().as_secs_f64());
}

/// The exchange with the app failed: counted, logged, and answered (504
/// when the app was too slow, 503 at the connection bound, else 502). A
/// pending conversion is unconfirmed: the app never said.
pub fn upstream_error(
    shared: &Shared,
    ctx: &mut RequestCtx,
    e: &UpstreamError,
) -> Response<ProxyBody> {
    shared
        .metrics
        .upstream_errors_total
        .get_or_create(&crate::metrics::KindLabel {
            kind: e.kind().into(),
        })
        .inc();
    tracing::warn!(error = %e, upstream = %shared.upstream.authority(), "upstream request failed");
    let (status, text) = e.status();
    if let Some(pending) = ctx.pending.take() {
        shared.capture.unanswered(pending, status);
    }
    text_response(status, text, ctx.has_body)
}

async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let mut upstream = hyper_util::rt::TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "tunnel closed with an error");
    }
}

/// A request body as bytes in memory (for drivers without a network).
pub fn body_from(bytes: Bytes) -> ProxyBody {
    if bytes.is_empty() {
        body::empty()
    } else {
        body::full(bytes)
    }
}
