//! A real upstream HTTP server for tests, on 127.0.0.1, and a touchgate
//! started in-process in front of it.
#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

pub const SECRET: &str = "test-secret-0123456789abcdef0123";

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub trailers: Option<http::HeaderMap>,
}

#[derive(Clone, Default)]
pub struct Upstream {
    pub addr: Option<SocketAddr>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("started")
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw a request")
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|n| match n {}).boxed()
}

/// Routes: `/status/N` answers N; `/slow/MS` waits; `/ws` is a WebSocket
/// echo; `/headers` answers the request headers as JSON; anything else
/// echoes the body back (with any trailers).
pub async fn start() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = Upstream {
        addr: Some(listener.local_addr().unwrap()),
        ..Default::default()
    };
    let seen = up.seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, seen.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    up
}

async fn handle(
    mut req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Body>, hyper::Error> {
    let path = req.uri().path().to_string();
    if path == "/ws" {
        return Ok(websocket(&mut req));
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let version = req.version();
    let headers = req.headers().clone();
    let collected = req.into_body().collect().await?;
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        uri,
        version,
        headers: headers.clone(),
        body: body.clone(),
        trailers: trailers.clone(),
    });
    if let Some(status) = headers.get("x-answer-status") {
        return Ok(scripted_answer(status, &headers));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().unwrap_or(200);
        let mut r = Response::new(full(format!("status {code}\n")));
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        if (300..400).contains(&code) {
            r.headers_mut().insert("location", "/".parse().unwrap());
        }
        return Ok(r);
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(1000))).await;
        return Ok(Response::new(full("slow done\n")));
    }
    if path == "/headers" {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in headers.iter() {
            map.entry(k.to_string())
                .or_default()
                .push(v.to_str().unwrap_or("").to_string());
        }
        let mut r = Response::new(full(serde_json::to_vec(&map).unwrap()));
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r.headers_mut()
            .insert("connection", "x-upstream-hop".parse().unwrap());
        r.headers_mut()
            .insert("x-upstream-hop", "must-not-reach-client".parse().unwrap());
        r.headers_mut()
            .append("set-cookie", "app=1; Path=/".parse().unwrap());
        return Ok(r);
    }
    if method == "HEAD" {
        let mut r = Response::new(full(Bytes::new()));
        r.headers_mut()
            .insert("content-length", "1234".parse().unwrap());
        return Ok(r);
    }
    // Echo, with the trailers if any.
    let mut frames: Vec<Result<http_body::Frame<Bytes>, hyper::Error>> =
        vec![Ok(http_body::Frame::data(body))];
    if let Some(t) = trailers {
        frames.push(Ok(http_body::Frame::trailers(t)));
    }
    let stream = futures_util::stream::iter(frames);
    Ok(Response::new(
        http_body_util::StreamBody::new(stream).boxed(),
    ))
}

/// The answer a test asks for in the request's own headers (touchgate
/// forwards them): `x-answer-status: 302`, `x-answer-header: name: value`
/// (repeatable), `x-answer-body: part|part|…` (each part one frame,
/// `x-answer-delay-ms` apart; `x-answer-pad: N` appends N bytes of `.` to
/// the first part).
fn scripted_answer(status: &http::HeaderValue, headers: &http::HeaderMap) -> Response<Body> {
    let status = status
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let delay = Duration::from_millis(
        text("x-answer-delay-ms")
            .and_then(|d| d.parse().ok())
            .unwrap_or(0),
    );
    let mut parts: Vec<String> = text("x-answer-body")
        .map(|b| b.split('|').map(str::to_string).collect())
        .unwrap_or_default();
    if let Some(pad) = text("x-answer-pad").and_then(|n| n.parse::<usize>().ok()) {
        if parts.is_empty() {
            parts.push(String::new());
        }
        parts[0].push_str(&".".repeat(pad));
    }
    let stream = futures_util::stream::unfold(
        (parts.into_iter(), true),
        move |(mut it, first)| async move {
            let part = it.next()?;
            if !first {
                tokio::time::sleep(delay).await;
            }
            let frame: Result<http_body::Frame<Bytes>, hyper::Error> =
                Ok(http_body::Frame::data(Bytes::from(part)));
            Some((frame, (it, false)))
        },
    );
    let mut r = Response::new(http_body_util::StreamBody::new(stream).boxed());
    *r.status_mut() = status;
    for v in headers.get_all("x-answer-header") {
        if let Some((name, value)) = v.to_str().ok().and_then(|v| v.split_once(':'))
            && let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_str(value.trim()),
            )
        {
            r.headers_mut().append(n, v);
        }
    }
    r
}

fn websocket(req: &mut Request<Incoming>) -> Response<Body> {
    let key = req.headers().get("sec-websocket-key").cloned();
    let Some(key) = key else {
        let mut r = Response::new(full("no key"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        use futures_util::{SinkExt, StreamExt};
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", accept)
        .body(full(Bytes::new()))
        .unwrap()
}

/// The config of an in-process touchgate in front of `upstream`, with
/// extra TOML appended (forms, sinks…). Ports are picked by the OS.
pub fn config_toml(upstream: SocketAddr, dir: &std::path::Path, extra: &str) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
upstream = "http://{upstream}"
upstream_response_timeout = "2s"
header_read_timeout = "2s"
drain_delay = "0s"
drain_timeout = "5s"

[admin]
listen = "127.0.0.1:0"

[spool]
dir = "{spool}"
fsync = "never"

{extra}
"#,
        spool = dir.join("spool").display(),
    )
}

pub fn env(k: &str) -> Option<String> {
    match k {
        "TOUCHGATE_SECRET" => Some(SECRET.to_string()),
        "TOUCHGATE_INGEST_TOKEN" => Some("ingest-token".to_string()),
        _ => std::env::var(k).ok(),
    }
}

pub async fn touchgate(toml: &str) -> touchgate::app::Running {
    let cfg =
        touchgate::config::Config::parse("test.toml", toml, &env).unwrap_or_else(|e| panic!("{e}"));
    touchgate::app::start(cfg, &env)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// An in-process touchgate in front of a real upstream, with a `file` sink
/// (10 ms linger) in a temp dir: the site the end-to-end tests start.
pub struct Site {
    pub up: Upstream,
    pub tg: touchgate::app::Running,
    pub dir: tempfile::TempDir,
}

impl Site {
    pub async fn new(extra: &str) -> Site {
        Site::with_upstream(start().await, extra).await
    }

    /// `extra` is appended to the config, except its `proxy.` lines, which
    /// go into the `[proxy]` table.
    pub async fn with_upstream(up: Upstream, extra: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let sink = format!(
            "[[sink]]\ntype = \"file\"\npath = \"{}\"\n[sink.delivery]\nlinger = \"10ms\"\n",
            dir.path().join("events.jsonl").display()
        );
        let (proxy, rest): (Vec<&str>, Vec<&str>) =
            extra.lines().partition(|l| l.starts_with("proxy."));
        let proxy: String = proxy.iter().map(|l| format!("{}\n", &l[6..])).collect();
        let toml = config_toml(
            up.addr(),
            dir.path(),
            &format!("{}\n{sink}", rest.join("\n")),
        )
        .replacen("[proxy]\n", &format!("[proxy]\n{proxy}"), 1);
        let tg = touchgate(&toml).await;
        Site { up, tg, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.tg.proxy_addr, path)
    }

    /// The events on disk, without the `form_attempt` events every form
    /// post adds ([`Site::attempts`]).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.all_events()
            .into_iter()
            .filter(|e| e["event_name"] != "form_attempt")
            .collect()
    }

    /// The `form_attempt` events on disk.
    pub fn attempts(&self) -> Vec<serde_json::Value> {
        self.all_events()
            .into_iter()
            .filter(|e| e["event_name"] == "form_attempt")
            .collect()
    }

    pub fn all_events(&self) -> Vec<serde_json::Value> {
        events(&self.dir.path().join("events.jsonl"))
    }

    pub async fn wait_events(&self, n: usize) -> Vec<serde_json::Value> {
        eventually(&format!("{n} events on disk"), || self.events().len() >= n).await;
        self.events()
    }

    pub async fn wait_attempts(&self, n: usize) -> Vec<serde_json::Value> {
        eventually(&format!("{n} form attempts on disk"), || {
            self.attempts().len() >= n
        })
        .await;
        self.attempts()
    }
}

/// A plain HTTP/1.1 client.
pub fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> (http::response::Parts, Bytes) {
    send("GET", url, headers, Bytes::new()).await
}

pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (http::response::Parts, Bytes) {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client()
        .request(b.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

/// Send raw bytes on a fresh connection and read until the server closes
/// or `limit` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Events the file sink wrote, as JSON values.
pub fn events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Wait (bounded) until `f` holds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Run the real binary (`touchgate run`) and read the bound addresses from
/// its start line. Returns the child, the proxy address and the admin address.
pub fn spawn_binary(
    config: &std::path::Path,
    envs: &[(&str, &str)],
) -> (std::process::Child, String, String) {
    use std::io::{BufRead, BufReader};
    if let Ok(text) = std::fs::read_to_string(config) {
        std::fs::write(config, text).unwrap();
    }
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_touchgate"));
    cmd.args(["run", "--config", config.to_str().unwrap()])
        .env("TOUCHGATE_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let started = loop {
        let line = lines
            .next()
            .expect("touchgate exited before starting")
            .unwrap();
        if line.contains("touchgate started") {
            break line;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let field = |name: &str| {
        let at = started.find(&format!("{name}=")).unwrap() + name.len() + 1;
        started[at..].split_whitespace().next().unwrap().to_string()
    };
    (child, field("proxy_addr"), field("admin_addr"))
}
