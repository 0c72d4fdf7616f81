//! Disk full on the spool: proxying continues, events are dropped and
//! counted, and capture recovers once the sinks free space. The spool is put
//! on a 1 MiB tmpfs (the tests run as root, as `.ci/run` does).

#[path = "support/upstream.rs"]
mod support;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use support::*;

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn full_spool_disk_drops_and_counts_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("spool-fs");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "mounting a tmpfs needs root (CI runs as root)");
    let _guard = Tmpfs(mnt.clone());

    // A collector that refuses until `up`, so the spool keeps everything.
    let up_flag = Arc::new(AtomicBool::new(false));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = l.local_addr().unwrap();
    let flag = up_flag.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let flag = flag.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let flag = flag.clone();
                    async move {
                        let _ = req.into_body().collect().await?;
                        let mut r = http::Response::new(http_body_util::Full::new(Bytes::new()));
                        *r.status_mut() = if flag.load(Ordering::SeqCst) {
                            http::StatusCode::OK
                        } else {
                            http::StatusCode::SERVICE_UNAVAILABLE
                        };
                        Ok::<_, hyper::Error>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });

    let up = start().await;
    let extra = format!(
        "[[sink]]\ntype = \"http\"\nurl = \"http://{collector}/b\"\n[sink.delivery]\nlinger = \"10ms\"\nbackoff_initial = \"20ms\"\nbackoff_max = \"100ms\"\n"
    );
    let toml = config_toml(up.addr(), dir.path(), &extra).replace(
        &format!("dir = \"{}\"", dir.path().join("spool").display()),
        &format!(
            "dir = \"{}\"\nsegment_bytes = 65536\nmax_bytes = 104857600",
            mnt.display()
        ),
    );
    let tg = touchgate(&toml).await;
    let url = format!(
        "http://{}/?utm_source=google&utm_medium=cpc&utm_campaign=disk",
        tg.proxy_addr
    );

    // Far more events than 1 MiB holds; every request is still served.
    for _ in 0..2_000 {
        let (p, _) = get(&url, &[("sec-fetch-dest", "document")]).await;
        assert_eq!(p.status, 200);
    }
    let m = tg.metrics.encode();
    let dropped = metric(&m, "touchgate_events_dropped_total");
    assert!(
        dropped > 0,
        "a full disk drops events and counts them:\n{m}"
    );

    // The sink comes back, delivers, the spool frees its segments, and new
    // events are accepted again.
    up_flag.store(true, Ordering::SeqCst);
    let before = metric(&tg.metrics.encode(), "touchgate_sink_delivered_total");
    eventually("the backlog is delivered", || {
        metric(&tg.metrics.encode(), "touchgate_sink_delivered_total") > before
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let dropped_before = metric(&tg.metrics.encode(), "touchgate_events_dropped_total");
    let delivered_before = metric(&tg.metrics.encode(), "touchgate_sink_delivered_total");
    for _ in 0..50 {
        get(&url, &[("sec-fetch-dest", "document")]).await;
    }
    eventually("new events delivered after recovery", || {
        metric(&tg.metrics.encode(), "touchgate_sink_delivered_total") >= delivered_before + 50
    })
    .await;
    assert_eq!(
        metric(&tg.metrics.encode(), "touchgate_events_dropped_total"),
        dropped_before,
        "nothing dropped after recovery"
    );
}
