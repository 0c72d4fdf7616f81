//! A sink outage must not hold up the proxy: delivery is off the request
//! path. The test proves it structurally — every request completes while
//! the only sink never acknowledges anything — and prints the medians for
//! the record; latency itself is measured by benchmarks, not asserted.

#[path = "support/upstream.rs"]
mod support;

use std::time::{Duration, Instant};
use support::*;

async fn median_latency(url: &str, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (p, _) = get(url, &[("sec-fetch-dest", "document")]).await;
        assert_eq!(p.status, 200);
        times.push(t.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test]
async fn a_hanging_collector_does_not_slow_the_proxy() {
    // A collector that accepts connections and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
            if held.len() > 100 {
                return;
            }
        }
    });
    let up = start().await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "[[sink]]\ntype = \"http\"\nurl = \"http://{hang_addr}/v1/batch\"\ntimeout = \"30s\"\n[sink.delivery]\nlinger = \"10ms\"\nmax_events = 10\n"
    );
    let tg = touchgate(&config_toml(up.addr(), dir.path(), &sinks)).await;
    // Every request is a landing (new session each time), so every request
    // produces an event for the stuck sink.
    let url = format!("http://{}/?utm_source=google&utm_medium=cpc", tg.proxy_addr);
    let warm = median_latency(&url, 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = median_latency(&url, 200).await;
    let depth = tg.metrics.encode();
    assert!(
        depth.lines().any(
            |l| l.starts_with("touchgate_sink_queue_depth{sink=\"http\"}") && !l.ends_with(" 0")
        ),
        "the sink is really stuck: {depth}"
    );
    assert_eq!(
        tg.metrics
            .encode()
            .lines()
            .filter(
                |l| l.starts_with("touchgate_sink_delivered_total{sink=\"http\"}")
                    && !l.ends_with(" 0")
            )
            .count(),
        0
    );
    eprintln!("median latency: {warm:?} before, {during:?} with the sink stuck");
}
