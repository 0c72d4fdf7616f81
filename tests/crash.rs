//! kill -9 mid-stream: every event touchgate acknowledged (ingest answers
//! only once its events are in the spool) reaches the sink after a restart
//! on the same spool; any duplicate carries the same event_id.

#[path = "support/upstream.rs"]
mod support;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// A collector that answers 503 until `up` is set, and records event ids.
async fn collector(up: Arc<AtomicBool>, seen: Arc<Mutex<Vec<String>>>) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let (up, seen) = (up.clone(), seen.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (up, seen) = (up.clone(), seen.clone());
                    async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        let status = if up.load(Ordering::SeqCst) {
                            let mut seen = seen.lock().unwrap();
                            for line in String::from_utf8_lossy(&body).lines() {
                                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                                seen.push(v["event_id"].as_str().unwrap().to_string());
                            }
                            200
                        } else {
                            503
                        };
                        let mut r = http::Response::new(http_body_util::Full::new(Bytes::new()));
                        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, hyper::Error>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn sigkill_mid_stream_loses_no_acknowledged_event() {
    let up_flag = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let collector_addr = collector(up_flag.clone(), seen.clone()).await;
    let app = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("touchgate.toml");
    let sink = format!(
        "[[sink]]\ntype = \"http\"\nurl = \"http://{collector_addr}/batch\"\n[sink.delivery]\nlinger = \"10ms\"\nbackoff_initial = \"20ms\"\nbackoff_max = \"200ms\"\n"
    );
    // The restarted process must find the spool as the first one left it.
    // Retention reads the segments' modification times, which libfaketime
    // leaves on the kernel's clock when it moves the process's (`.ci/run`
    // runs this suite a year ahead): a spool written a moment before would
    // look a year old. Retention is set far past that.
    let toml = config_toml(app.addr(), dir.path(), &sink).replace(
        "fsync = \"never\"",
        "fsync = \"always\"\nretention = \"3650d\"",
    );
    std::fs::write(&config, &toml).unwrap();
    let envs = [("TOUCHGATE_INGEST_TOKEN", "ingest-token")];
    let (mut child, _proxy, admin) = spawn_binary(&config, &envs);

    // Upload batches continuously; kill the process while uploads are in flight.
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let occurred_at = touchgate::event::rfc3339_millis::format(
        time::OffsetDateTime::now_utc() - time::Duration::hours(1),
    );
    let uploader = tokio::spawn({
        let acked = acked.clone();
        let url = format!("http://{admin}/v1/events");
        async move {
            for batch in 0..1000u32 {
                let body: String = (0..20)
                    .map(|i| format!("{{\"event_name\":\"order_paid\",\"occurred_at\":\"{occurred_at}\",\"user_id\":\"u{batch}-{i}\"}}\n"))
                    .collect();
                let req = http::Request::post(&url)
                    .header("authorization", "Bearer ingest-token")
                    .body(http_body_util::Full::new(Bytes::from(body)))
                    .unwrap();
                let Ok(Ok(resp)) =
                    tokio::time::timeout(Duration::from_secs(5), client().request(req)).await
                else {
                    return;
                };
                if resp.status() != 200 {
                    return;
                }
                let Ok(body) = resp.into_body().collect().await else {
                    return;
                };
                for line in String::from_utf8_lossy(&body.to_bytes()).lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    assert_eq!(v["status"], "accepted");
                    acked
                        .lock()
                        .unwrap()
                        .insert(v["event_id"].as_str().unwrap().to_string());
                }
            }
        }
    });
    eventually("some uploads acknowledged", || {
        acked.lock().unwrap().len() >= 200
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), uploader).await;
    let acked: HashSet<String> = acked.lock().unwrap().clone();
    assert!(
        seen.lock().unwrap().is_empty(),
        "the collector was down: nothing delivered yet"
    );

    // Collector back; a new process on the same spool delivers the backlog.
    up_flag.store(true, Ordering::SeqCst);
    let (mut child, _proxy, _admin) = spawn_binary(&config, &envs);
    for _ in 0..600 {
        let got: HashSet<String> = seen.lock().unwrap().iter().cloned().collect();
        if acked.is_subset(&got) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let got = seen.lock().unwrap().clone();
    let distinct: HashSet<String> = got.iter().cloned().collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !distinct.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost of {}",
        missing.len(),
        acked.len()
    );
    // Redelivery repeats an event_id, never invents one: at most the
    // acknowledged events plus the one batch in flight at the kill.
    assert!(
        distinct.len() <= acked.len() + 20,
        "{} distinct ids for {} acknowledged",
        distinct.len(),
        acked.len()
    );
    eprintln!(
        "{} acknowledged before SIGKILL, {} delivered after restart ({} distinct)",
        acked.len(),
        got.len(),
        distinct.len()
    );
}
