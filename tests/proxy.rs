//! The proxy core against a real upstream on 127.0.0.1.

#[path = "support/upstream.rs"]
mod support;

use bytes::Bytes;
use std::time::Duration;
use support::*;

async fn setup(extra: &str) -> (Upstream, touchgate::app::Running, tempfile::TempDir) {
    let up = start().await;
    let dir = tempfile::tempdir().unwrap();
    let tg = touchgate(&config_toml(up.addr(), dir.path(), extra)).await;
    (up, tg, dir)
}

#[tokio::test]
async fn bodies_are_byte_identical_both_ways() {
    let (up, tg, _d) = setup("").await;
    let url = format!("http://{}/echo", tg.proxy_addr);
    // 5 MB of every byte value.
    let big: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (parts, body) = send(
        "POST",
        &url,
        &[("content-type", "application/octet-stream")],
        big.clone(),
    )
    .await;
    assert_eq!(parts.status, 200);
    assert_eq!(body.len(), big.len());
    assert!(body == big, "response body differs");
    assert!(up.last().body == big, "upstream saw a different body");
    // Empty.
    let (parts, body) = send("POST", &url, &[], Bytes::new()).await;
    assert_eq!(parts.status, 200);
    assert!(body.is_empty() && up.last().body.is_empty());
}

#[tokio::test]
async fn chunked_upload_with_trailers_streams_through() {
    let (up, tg, _d) = setup("").await;
    let req = "POST /echo HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nTrailer: x-checksum\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc\r\n\r\n";
    let resp = raw(tg.proxy_addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = up.last();
    assert_eq!(&seen.body[..], b"hello world");
    assert_eq!(
        seen.trailers
            .as_ref()
            .and_then(|t| t.get("x-checksum"))
            .unwrap(),
        "abc"
    );
    assert!(resp.contains("hello world"), "{resp}");
}

#[tokio::test]
async fn hop_by_hop_and_spoofed_touch_headers_are_removed() {
    let (up, tg, _d) = setup("").await;
    let url = format!("http://{}/headers", tg.proxy_addr);
    let (parts, _) = get(
        &url,
        &[
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9v"),
            ("x-touch-device", "forged"),
            ("x-touch-first", "source=\"forged\""),
            ("x-touch-anything", "forged"),
            ("x-app", "kept"),
        ],
    )
    .await;
    assert_eq!(parts.status, 200);
    let h = up.last().headers;
    for gone in [
        "x-secret-hop",
        "keep-alive",
        "proxy-authorization",
        "x-touch-device",
        "x-touch-first",
        "x-touch-anything",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream");
    }
    assert_eq!(h.get("x-app").unwrap(), "kept");
    assert_eq!(h.get("host").unwrap(), &tg.proxy_addr.to_string());
    assert_eq!(h.get("via").unwrap(), "1.1 touchgate");
    // And on the way back, the upstream's hop-by-hop fields are removed.
    assert!(parts.headers.get("x-upstream-hop").is_none());
    assert_eq!(parts.headers.get("set-cookie").unwrap(), "app=1; Path=/");
}

#[tokio::test]
async fn forwarded_headers_follow_each_policy() {
    for (policy, xff, fwd) in [
        (
            "truncate",
            Some("127.0.0.0"),
            "for=127.0.0.0;proto=http;host=\"shop.example\"",
        ),
        (
            "raw",
            Some("127.0.0.1"),
            "for=127.0.0.1;proto=http;host=\"shop.example\"",
        ),
        ("drop", None, "proto=http;host=\"shop.example\""),
    ] {
        let (up, tg, _d) = setup(&format!("[privacy]\nforward_client_ip = \"{policy}\"\n")).await;
        let url = format!("http://{}/headers", tg.proxy_addr);
        get(
            &url,
            &[
                ("host", "shop.example"),
                ("x-forwarded-for", "6.6.6.6"),
                ("forwarded", "for=6.6.6.6"),
            ],
        )
        .await;
        let h = up.last().headers;
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.to_str().unwrap()),
            xff,
            "{policy}"
        );
        assert_eq!(
            h.get_all("x-forwarded-for").iter().count(),
            xff.is_some() as usize
        );
        assert_eq!(h.get("forwarded").unwrap(), fwd, "{policy}");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "shop.example");
    }
}

#[tokio::test]
async fn smuggling_attempts_get_400_and_never_reach_the_upstream() {
    let (up, tg, _d) = setup("").await;
    for attack in [
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4x\r\n\r\nabcd",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    ] {
        let resp = raw(tg.proxy_addr, attack.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            resp.starts_with("HTTP/1.1 400"),
            "{attack:?} answered {resp:?}"
        );
    }
    // A smuggled request behind a legitimate one on the same connection.
    let pipelined = "GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let resp = raw(tg.proxy_addr, pipelined.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("HTTP/1.1 400"), "{resp}");
    let paths: Vec<String> = up.requests().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(
        paths,
        vec!["/status/200".to_string()],
        "only the legitimate request may be forwarded"
    );
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tg = touchgate(&config_toml(dead, dir.path(), "")).await;
    let (parts, body) = get(&format!("http://{}/", tg.proxy_addr), &[]).await;
    assert_eq!(parts.status, 502);
    assert_eq!(&body[..], b"upstream unavailable\n");
    assert!(
        tg.metrics
            .encode()
            .contains("touchgate_upstream_errors_total{kind=\"connect\"} 1")
    );

    let (_up, tg, _d) = setup("").await;
    let (parts, _) = get(&format!("http://{}/slow/4000", tg.proxy_addr), &[]).await;
    assert_eq!(parts.status, 504);
}

#[tokio::test]
async fn head_and_expect_continue() {
    let (up, tg, _d) = setup("").await;
    let (parts, body) = send(
        "HEAD",
        &format!("http://{}/x", tg.proxy_addr),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers.get("content-length").unwrap(), "1234");
    assert!(body.is_empty());
    // 100-continue: touchgate answers the interim response itself and
    // streams the body on; the app never sees Expect.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(tg.proxy_addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"));
    s.write_all(b"hello").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("200 OK") && rest.contains("hello"), "{rest}");
    assert!(up.last().headers.get("expect").is_none());
}

#[tokio::test]
async fn oversized_heads_get_431_and_slow_heads_are_cut() {
    let (_up, tg, _d) = setup("").await;
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let resp = raw(tg.proxy_addr, huge.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp:.80}");
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = raw(
        tg.proxy_addr,
        format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp:.80}");
    // A client dribbling its head is disconnected after header_read_timeout (2s here)
    // while another client is served.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut slow = tokio::net::TcpStream::connect(tg.proxy_addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (parts, _) = get(&format!("http://{}/status/204", tg.proxy_addr), &[]).await;
    assert_eq!(parts.status, 204);
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            // Keep dribbling: one byte every 300 ms never completes the head.
            if slow.write_all(b"X").await.is_err() {
                return;
            }
            let mut b = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(300), slow.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&b[..n]),
                Err(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "dribbling connection was not closed");
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (_up, tg, _d) = setup("").await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", tg.proxy_addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), format!("ping {i}"));
    }
    ws.send(Message::binary(vec![0u8, 255, 7])).await.unwrap();
    let back = ws.next().await.unwrap().unwrap();
    assert_eq!(back.into_data().as_ref(), &[0u8, 255, 7]);
}

/// A TLS client configuration that trusts only `cert`.
fn trusting(cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth()
}

#[tokio::test]
async fn http2_over_tls_with_alpn() {
    let (up, _tg0, dir) = setup("").await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let extra = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n",
        up.addr(),
        cert_path.display(),
        key_path.display(),
        dir.path().join("spool2").display()
    );
    let tg = touchgate(&extra).await;

    let tls = trusting(&cert);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build(https);
    let url = format!("https://localhost:{}/echo", tg.proxy_addr.port());
    let req = http::Request::post(url)
        .body(http_body_util::Full::new(Bytes::from_static(b"over h2")))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    use http_body_util::BodyExt;
    assert_eq!(
        &resp.into_body().collect().await.unwrap().to_bytes()[..],
        b"over h2"
    );
    let seen = up.last();
    assert_eq!(
        seen.version,
        http::Version::HTTP_11,
        "upstream side is HTTP/1.1"
    );
    assert_eq!(
        seen.headers.get("host").unwrap(),
        &format!("localhost:{}", tg.proxy_addr.port())
    );
    assert_eq!(seen.headers.get("x-forwarded-proto").unwrap(), "https");
    assert_eq!(seen.headers.get("via").unwrap(), "2 touchgate");

    // HTTP/1.1 by ALPN over the same listener, two requests on one TLS
    // connection.
    let tls = trusting(&cert);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(https);
    for path in ["/status/204", "/headers"] {
        let url = format!("https://localhost:{}{path}", tg.proxy_addr.port());
        let resp = client.get(url.parse().unwrap()).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_11);
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.into_body().collect().await.unwrap();
    }
    let seen = up.last();
    assert_eq!(seen.headers.get("x-forwarded-proto").unwrap(), "https");
    assert_eq!(seen.headers.get("via").unwrap(), "1.1 touchgate");
}
