//! A bare hyper reverse proxy, for `benches/bare_hyper.sh`: the server
//! (hyper-util's auto builder) and pooled client (hyper-util's legacy
//! `Client`) that touchgate uses, configured the same way (`TCP_NODELAY`,
//! up to 256 idle upstream connections), with none of touchgate's work. It
//! measures what the HTTP stack alone costs per request, so that the load
//! bench's gap to nginx can be split into the stack's part and touchgate's.
//!
//!   bare-proxy LISTEN_ADDR UPSTREAM_URL      e.g. 127.0.0.1:28490 http://127.0.0.1:28480
use std::convert::Infallible;
use std::error::Error;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

type BoxError = Box<dyn Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: bare-proxy LISTEN_ADDR UPSTREAM_URL".into());
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                forward(client.clone(), upstream.clone(), req)
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The request to the upstream with its path and query, one forwarded
/// header; the response back as it came, or a 502.
async fn forward(
    client: Client<HttpConnector, Body>,
    upstream: String,
    req: http::Request<Incoming>,
) -> Result<http::Response<Body>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{upstream}{path}").parse() else {
        return Ok(status(400));
    };
    parts.uri = uri;
    parts.headers.insert(
        "x-forwarded-for",
        http::HeaderValue::from_static("127.0.0.0"),
    );
    let req = http::Request::from_parts(parts, body.map_err(BoxError::from).boxed());
    Ok(match client.request(req).await {
        Ok(resp) => resp.map(|b| b.map_err(BoxError::from).boxed()),
        Err(_) => status(502),
    })
}

fn status(code: u16) -> http::Response<Body> {
    let mut resp = http::Response::new(Empty::new().map_err(|e: Infallible| match e {}).boxed());
    *resp.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_GATEWAY);
    resp
}
