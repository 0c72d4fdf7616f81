//! Delivery throughput, end to end on this machine:
//!
//! 1. spool append + `file` sink: events go through the writer's channel
//!    into the spool (group commit) while the file sink delivers them.
//!    Then the running process's whole path: queue, dedupe stage, spool
//!    output, file sink.
//! 2. `http` sink: a spool filled beforehand is delivered to an NDJSON
//!    collector on 127.0.0.1 (plain and gzip).
//!
//! `cargo bench --bench delivery`; `TOUCHGATE_BENCH_EVENTS` sets the number
//! of events per run (default 300,000). Prints events/s per scenario.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use touchgate::config::{FsyncPolicy, SpoolConfig};
use touchgate::event::{Client, Envelope, Event, Origin, Page, Touch, TouchAt};
use touchgate::metrics::Metrics;
use touchgate::pipeline::dedupe::Dedupe;
use touchgate::pipeline::{self, QueueItem, SpoolOutput, spool};
use touchgate::sink::delivery::{dead_letter_path, run_sink};
use touchgate::sink::file::{FileSink, FileSinkConfig};
use touchgate::sink::http::{HttpSink, HttpSinkConfig};
use touchgate::sink::{DeliveryConfig, Sink};

/// A landing event of realistic size (~900 bytes of JSON).
fn envelope(i: usize) -> Envelope {
    let t = OffsetDateTime::now_utc();
    let touch = Touch {
        source: Some("google".into()),
        medium: Some("cpc".into()),
        campaign: Some("spring_sale_2026".into()),
        term: Some("running shoes".into()),
        content: None,
        campaign_id: None,
        click_id_type: Some("gclid".into()),
        channel: "Paid Search".into(),
        channel_ga4: None,
        valid: true,
    };
    let mut e = Event::new(format!("{i:032x}"), "landing".into(), Origin::Proxy, t, t);
    e.device_id = Some("3f2a9c1d4e5b6a7f8091a2b3c4d5e6f7".into());
    e.session_id = Some("a1b2c3d4e5f60718293a4b5c6d7e8f90".into());
    e.touchpoint_id = Some(format!("{:032x}", i * 7919));
    e.page = Some(Page {
        url: "https://shop.example/products/trail-runner?utm_campaign=spring_sale_2026&utm_medium=cpc&utm_source=google"
            .into(),
        path: "/products/trail-runner".into(),
        referrer_host: Some("www.google.com".into()),
    });
    e.first_touch = Some(TouchAt {
        touch: touch.clone(),
        at: t,
    });
    e.last_touch = e.first_touch.clone();
    e.touch = Some(touch);
    e.client = Client {
        ip_prefix: Some("203.0.113.0/24".into()),
        context: Some(serde_json::json!({"cid": format!("c{i}"), "exp": "b"})),
        user_agent: None,
    };
    Envelope::new(e)
}

/// CPU seconds (user + system) this process used so far, from
/// /proc/self/stat: throughput per CPU second does not depend on what else
/// runs on the machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name (which ends with ')') come the state, ...:
    // utime and stime are the 12th and 13th; 100 clock ticks per second.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    match (
        f.get(11).and_then(|x| x.parse::<f64>().ok()),
        f.get(12).and_then(|x| x.parse::<f64>().ok()),
    ) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

fn report(what: &str, n: usize, wall: Duration, cpu: f64) {
    println!(
        "{what}: {n} events in {:.2}s = {:.0} events/s (CPU {:.2}s = {:.1} µs/event, {:.0} events per CPU-second)",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        cpu,
        cpu * 1e6 / n as f64,
        n as f64 / cpu
    );
}

/// The CPU floor under the pipeline: encoding an envelope for the spool
/// (once per event), and parsing it back (sinks that need the `Envelope`;
/// file and http take the spooled JSON as it is).
fn codec(n: usize) {
    let input: Vec<Envelope> = (0..n).map(envelope).collect();
    let (t, c) = (Instant::now(), cpu_seconds());
    let encoded: Vec<Vec<u8>> = input
        .iter()
        .map(|e| serde_json::to_vec(&e.event).unwrap())
        .collect();
    let (t1, c1) = (Instant::now(), cpu_seconds());
    let decoded: Vec<Event> = encoded
        .iter()
        .map(|v| serde_json::from_slice(v).unwrap())
        .collect();
    let bytes = encoded.iter().map(Vec::len).sum::<usize>() / n;
    report(
        &format!("event to JSON, one thread ({bytes} bytes/event)"),
        n,
        t1 - t,
        c1 - c,
    );
    report(
        "JSON to event, one thread",
        n,
        t1.elapsed(),
        cpu_seconds() - c1,
    );
    drop(decoded);
}

fn events() -> usize {
    std::env::var("TOUCHGATE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000)
}

fn spool_cfg(dir: &Path, fsync: FsyncPolicy) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes: 4 << 30,
        segment_bytes: 16 << 20,
        fsync,
        fsync_interval: Duration::from_millis(200),
        retention: Duration::from_secs(3600),
    }
}

fn delivery() -> DeliveryConfig {
    DeliveryConfig {
        max_events: 1000,
        max_bytes: 4 << 20,
        linger: Duration::from_millis(50),
        concurrency: 4,
        ..DeliveryConfig::default()
    }
}

/// Wait until the sink acknowledged `n` events (bounded: 10 minutes).
async fn until_acked(metrics: &Metrics, sink: &str, n: u64) -> bool {
    let l = metrics.sink(sink);
    let delivered = metrics.sink_delivered_total.get_or_create(&l).clone();
    let depth = metrics.sink_queue_depth.get_or_create(&l).clone();
    for _ in 0..600_000 {
        if delivered.get() >= n && depth.get() == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

/// A spool in a temp dir with a running `file` sink reading it.
struct FileRun {
    tmp: tempfile::TempDir,
    metrics: Arc<Metrics>,
    writer: spool::SpoolWriter,
    sink: tokio::task::JoinHandle<Result<(), spool::SpoolError>>,
    stop: CancellationToken,
}

fn file_run(spool_fsync: FsyncPolicy) -> FileRun {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let metrics = Arc::new(Metrics::new());
    let cfg = spool_cfg(&tmp.path().join("spool"), spool_fsync);
    let (writer, mut readers) = spool::open(&cfg, &["file".to_string()], metrics.clone()).unwrap();
    let fcfg = FileSinkConfig::new(tmp.path().join("events.jsonl"));
    let sink: Arc<dyn Sink> = Arc::new(FileSink::new(&fcfg).unwrap());
    let stop = CancellationToken::new();
    let d = delivery();
    let dl = dead_letter_path(&d, &cfg.dir, "file");
    let sink = tokio::spawn(run_sink(
        sink,
        readers.pop().unwrap(),
        d,
        dl,
        metrics.clone(),
        stop.clone(),
    ));
    FileRun {
        tmp,
        metrics,
        writer,
        sink,
        stop,
    }
}

/// `producers == 0`: the writer serializes; else that many producer tasks
/// serialize (`Frame::encode`) as request tasks would, in parallel.
async fn spool_and_file(n: usize, spool_fsync: FsyncPolicy, producers: usize) {
    let input: Vec<Envelope> = (0..n).map(envelope).collect();
    let FileRun {
        tmp,
        metrics,
        writer: w,
        sink: task,
        stop,
    } = file_run(spool_fsync);
    let (start, cpu0) = (Instant::now(), cpu_seconds());
    if producers == 0 {
        let (tx, rx) = tokio::sync::mpsc::channel(16_384);
        let writer = tokio::spawn(spool::run_writer(w, rx, 4096));
        for e in input {
            if tx.send(e).await.is_err() {
                break;
            }
        }
        drop(tx);
        writer.await.unwrap().unwrap();
    } else {
        let (tx, rx) = tokio::sync::mpsc::channel::<spool::FramedRecord>(16_384);
        let writer = tokio::spawn(spool::run_writer(w, rx, 4096));
        let per = n.div_ceil(producers);
        let mut chunks = Vec::new();
        let mut input = input;
        while !input.is_empty() {
            let rest = input.split_off(per.min(input.len()));
            chunks.push(std::mem::replace(&mut input, rest));
        }
        let tasks: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    for e in chunk {
                        let f = spool::FramedRecord::encode(&e).unwrap();
                        drop(e);
                        if tx.send(f).await.is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        for t in tasks {
            t.await.unwrap();
        }
        writer.await.unwrap().unwrap();
    }
    let (appended, cpu1) = (start.elapsed(), cpu_seconds());
    let ok = until_acked(&metrics, "file", n as u64).await;
    let (total, cpu2) = (start.elapsed(), cpu_seconds());
    stop.cancel();
    task.await.unwrap().unwrap();
    assert!(ok, "file sink did not finish");
    // The live file and any rotated one.
    let lines: usize = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum();
    assert_eq!(lines, n);
    let who = if producers == 0 {
        "the writer".to_string()
    } else {
        format!("{producers} producer tasks")
    };
    report(
        &format!(
            "spool append (fsync={spool_fsync:?}, serialized by {who}) while the file sink runs"
        ),
        n,
        appended,
        cpu1 - cpu0,
    );
    report(
        &format!(
            "spool (fsync={spool_fsync:?}, serialized by {who}) + file sink (fsync=always), end to end"
        ),
        n,
        total,
        cpu2 - cpu0,
    );
}

/// The running process's path: request tasks emit into the queue, the
/// pipeline stage dedupes, and `SpoolOutput` frames and appends on the
/// blocking pool; the file sink delivers. `producers` tasks emit.
async fn pipeline_and_file(n: usize, producers: usize) {
    let input: Vec<Envelope> = (0..n).map(envelope).collect();
    let FileRun {
        tmp: _tmp,
        metrics,
        writer: w,
        sink: task,
        stop,
    } = file_run(FsyncPolicy::Interval);
    let (start, cpu0) = (Instant::now(), cpu_seconds());
    // The queue's own sender, awaited when full: the proxy's `emit` would
    // drop instead, and a bench must not measure drops.
    let (tx, rx) = tokio::sync::mpsc::channel::<QueueItem>(16_384);
    let stage = tokio::spawn(pipeline::run(
        rx,
        Dedupe::local(Duration::from_secs(24 * 3600), 1_000_000),
        Box::new(SpoolOutput::new(w)),
        metrics.clone(),
    ));
    let per = n.div_ceil(producers);
    let mut input = input;
    let mut tasks = Vec::new();
    while !input.is_empty() {
        let rest = input.split_off(per.min(input.len()));
        let chunk = std::mem::replace(&mut input, rest);
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            for e in chunk {
                if tx.send(QueueItem::Event(e)).await.is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    for t in tasks {
        t.await.unwrap();
    }
    stage.await.unwrap();
    let ok = until_acked(&metrics, "file", n as u64).await;
    let (total, cpu) = (start.elapsed(), cpu_seconds());
    stop.cancel();
    task.await.unwrap().unwrap();
    assert!(ok, "file sink did not finish");
    report(
        &format!(
            "queue + dedupe + spool output (fsync=Interval) + file sink, {producers} producer tasks emitting, end to end"
        ),
        n,
        total,
        cpu - cpu0,
    );
}

async fn collector() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lines = Arc::new(AtomicU64::new(0));
    let l = lines.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let l = l.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let l = l.clone();
                    async move {
                        let gz = req
                            .headers()
                            .get("content-encoding")
                            .is_some_and(|v| v == "gzip");
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let n = if gz {
                            use std::io::Read;
                            let mut s = Vec::new();
                            let _ = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut s);
                            bytecount(&s)
                        } else {
                            bytecount(&body)
                        };
                        l.fetch_add(n, Ordering::Relaxed);
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, lines)
}

fn bytecount(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

async fn http(n: usize, gzip: bool) {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let metrics = Arc::new(Metrics::new());
    let names = vec!["http".to_string()];
    let cfg = spool_cfg(&tmp.path().join("spool"), FsyncPolicy::Interval);
    let (mut w, mut readers) = spool::open(&cfg, &names, metrics.clone()).unwrap();
    let input: Vec<Envelope> = (0..n).map(envelope).collect();
    let (t, c) = (Instant::now(), cpu_seconds());
    for chunk in input.chunks(4096) {
        w.append_batch(chunk).await.unwrap();
    }
    if !gzip {
        report(
            "spool append alone (fsync=Interval, groups of 4096)",
            n,
            t.elapsed(),
            cpu_seconds() - c,
        );
    }
    let (addr, lines) = collector().await;
    let mut hc = HttpSinkConfig::new(format!("http://{addr}/v1/batch"));
    hc.gzip = gzip;
    let sink: Arc<dyn Sink> = Arc::new(HttpSink::new(&hc, &|_| None).unwrap());
    let stop = CancellationToken::new();
    let d = delivery();
    let dl = dead_letter_path(&d, &cfg.dir, "http");
    let (start, cpu0) = (Instant::now(), cpu_seconds());
    let task = tokio::spawn(run_sink(
        sink,
        readers.pop().unwrap(),
        d,
        dl,
        metrics.clone(),
        stop.clone(),
    ));
    let ok = until_acked(&metrics, "http", n as u64).await;
    let (total, cpu) = (start.elapsed(), cpu_seconds() - cpu0);
    stop.cancel();
    task.await.unwrap().unwrap();
    assert!(ok, "http sink did not finish");
    assert_eq!(lines.load(Ordering::Relaxed), n as u64);
    report(
        &format!(
            "http sink (gzip={gzip}, batches of 1000, concurrency 4) to a collector on 127.0.0.1 (its CPU included)"
        ),
        n,
        total,
        cpu,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us too:
    // keep that short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 2_000 } else { events() };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    codec(n);
    rt.block_on(async {
        spool_and_file(n, FsyncPolicy::Interval, 0).await;
        spool_and_file(n, FsyncPolicy::Always, 0).await;
        spool_and_file(n, FsyncPolicy::Interval, 2).await;
        spool_and_file(n, FsyncPolicy::Always, 2).await;
        pipeline_and_file(n, 2).await;
        http(n, false).await;
        http(n, true).await;
    });
}
