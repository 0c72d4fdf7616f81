//! The `file` sink on real files: content, rotation by size and at a UTC
//! day boundary (injected clock), retention of rotated files, a partial
//! last line left by a crash; and the delivery loop's filter/validation
//! paths (accepts → acknowledged, check → dead-letter) over the file sink.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use time::macros::datetime;
use tokio_util::sync::CancellationToken;
use touchgate::config::{FsyncPolicy, SpoolConfig};
use touchgate::event::{AdMatch, Envelope, Event, Origin};
use touchgate::metrics::Metrics;
use touchgate::pipeline::spool;
use touchgate::sink::delivery::{dead_letter_path, run_sink};
use touchgate::sink::file::{Clock, FileSink, FileSinkConfig, rotated_path};
use touchgate::sink::{DeliveryConfig, Sink, SinkError};

fn envelope(i: usize, name: &str) -> Envelope {
    // Events carry milliseconds (the contract's JSON), so compare like that.
    let t = OffsetDateTime::now_utc();
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap();
    let mut e = Event::new(format!("f{i:05}"), name.into(), Origin::Proxy, t, t);
    e.session_id = Some("fedcba9876543210fedcba9876543210".into());
    Envelope {
        event: e,
        ad_match: Some(AdMatch {
            em: Some("ef".repeat(32)),
            ..AdMatch::default()
        }),
    }
}

fn batch(from: usize, n: usize) -> Vec<Envelope> {
    (from..from + n).map(|i| envelope(i, "landing")).collect()
}

fn read_events(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(
                v.get("ad_match").is_none() && v.get("em").is_none(),
                "only the event is written"
            );
            serde_json::from_value(v).unwrap()
        })
        .collect()
}

fn rotated(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("events-")
        })
        .collect();
    v.sort();
    v
}

/// For tests that reopen a file they wrote: a reopened file counts as
/// started at its birth time, so with day rotation the test would depend on
/// the date (a run across UTC midnight rotates) and on the file system's
/// clock agreeing with the process's (libfaketime moves only the latter).
/// Day rotation itself is tested above with an injected clock.
fn no_day_rotation(path: &Path) -> FileSinkConfig {
    let mut cfg = FileSinkConfig::new(path);
    cfg.rotate_daily = false;
    cfg
}

fn fixed_clock(at: OffsetDateTime) -> (Clock, Arc<Mutex<OffsetDateTime>>) {
    let now = Arc::new(Mutex::new(at));
    let n = now.clone();
    (Arc::new(move || *n.lock().unwrap()), now)
}

#[tokio::test]
async fn lines_equal_the_events() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data/events.jsonl");
    let sink = FileSink::new(&FileSinkConfig::new(&path)).unwrap();
    assert_eq!(sink.name(), "file");
    let b = batch(0, 50);
    sink.send(&b[..20]).await.unwrap();
    sink.send(&b[20..]).await.unwrap();
    let want: Vec<Event> = b.into_iter().map(|e| e.event).collect();
    assert_eq!(read_events(&path), want);
}

#[tokio::test]
async fn rotation_by_size_keeps_every_line_once() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("events.jsonl");
    let mut cfg = FileSinkConfig::new(&path);
    cfg.rotate_bytes = 2000;
    cfg.fsync = FsyncPolicy::Never;
    let (clock, _) = fixed_clock(datetime!(2026-11-29 10:00:00 UTC));
    let sink = FileSink::with_clock(&cfg, clock).unwrap();
    let b = batch(0, 60);
    for chunk in b.chunks(7) {
        sink.send(chunk).await.unwrap();
    }
    let files = rotated(tmp.path());
    assert!(files.len() >= 3, "{files:?}");
    // All started in the same (frozen) second: numbered in order.
    assert_eq!(
        files[0],
        rotated_path(&path, datetime!(2026-11-29 10:00:00 UTC), 0)
    );
    assert_eq!(
        files[1],
        rotated_path(&path, datetime!(2026-11-29 10:00:00 UTC), 1)
    );
    let mut all = Vec::new();
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= 2000 && len > 0, "{} is {len} bytes", f.display());
        all.extend(read_events(f));
    }
    all.extend(read_events(&path));
    assert_eq!(all, b.into_iter().map(|e| e.event).collect::<Vec<_>>());
}

#[tokio::test]
async fn rotation_at_the_utc_day_boundary() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("events.jsonl");
    let (clock, now) = fixed_clock(datetime!(2026-11-29 23:59:59 UTC));
    let sink = FileSink::with_clock(&FileSinkConfig::new(&path), clock).unwrap();
    let b = batch(0, 10);
    sink.send(&b[..4]).await.unwrap();
    *now.lock().unwrap() = datetime!(2026-11-29 23:59:59.900 UTC);
    sink.send(&b[4..6]).await.unwrap();
    assert!(rotated(tmp.path()).is_empty(), "same day: no rotation");
    *now.lock().unwrap() = datetime!(2026-11-30 00:00:01 UTC);
    sink.send(&b[6..]).await.unwrap();
    let day1 = tmp.path().join("events-2026-11-29T235959Z.jsonl");
    assert_eq!(rotated(tmp.path()), vec![day1.clone()]);
    let ev: Vec<Event> = b.into_iter().map(|e| e.event).collect();
    assert_eq!(read_events(&day1), ev[..6]);
    assert_eq!(read_events(&path), ev[6..]);
    // The next day's file is named after its own start.
    *now.lock().unwrap() = datetime!(2026-12-01 08:00:00 UTC);
    sink.send(&batch(10, 1)).await.unwrap();
    assert_eq!(
        rotated(tmp.path()),
        vec![day1, tmp.path().join("events-2026-11-30T000001Z.jsonl")]
    );
}

#[tokio::test]
async fn keep_files_bounds_the_rotated_files() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("events.jsonl");
    let mut cfg = FileSinkConfig::new(&path);
    cfg.keep_files = Some(2);
    let (clock, now) = fixed_clock(datetime!(2026-11-01 12:00:00 UTC));
    let sink = FileSink::with_clock(&cfg, clock).unwrap();
    for day in 0..5 {
        *now.lock().unwrap() = datetime!(2026-11-01 12:00:00 UTC) + time::Duration::days(day);
        sink.send(&batch(day as usize, 1)).await.unwrap();
    }
    let names: Vec<String> = rotated(tmp.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "events-2026-11-03T120000Z.jsonl",
            "events-2026-11-04T120000Z.jsonl"
        ]
    );
}

#[tokio::test]
async fn a_partial_last_line_is_cut_on_start() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("events.jsonl");
    let cfg = no_day_rotation(&path);
    let b = batch(0, 3);
    {
        let sink = FileSink::new(&cfg).unwrap();
        sink.send(&b[..2]).await.unwrap();
    }
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"schema\":\"touchgate/1\",\"event_id\":\"tor");
    std::fs::write(&path, text).unwrap();
    let sink = FileSink::new(&cfg).unwrap();
    sink.send(&b[2..]).await.unwrap();
    assert_eq!(
        read_events(&path),
        b.into_iter().map(|e| e.event).collect::<Vec<_>>()
    );
}

/// The file sink wearing an ad platform's rules: only `signup` events,
/// and a validation that refuses some.
struct Picky(FileSink);

#[async_trait]
impl Sink for Picky {
    fn name(&self) -> &str {
        "picky"
    }
    fn accepts(&self, e: &Envelope) -> bool {
        e.event.event_name == "signup"
    }
    fn check(&self, e: &Envelope) -> Result<(), String> {
        if e.event.event_id.ends_with('4') {
            Err("ids ending in 4 are invalid here".into())
        } else {
            Ok(())
        }
    }
    async fn send(&self, batch: &[Envelope]) -> Result<(), SinkError> {
        self.0.send(batch).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_to_file_filters_dead_letters_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let spool_cfg = SpoolConfig {
        dir: tmp.path().join("spool"),
        segment_bytes: 16 << 10,
        fsync: FsyncPolicy::Always,
        // The second run must find the spool as the first left it.
        // Retention reads the segments' modification times, which stay on
        // the kernel's clock when libfaketime moves the process's (`.ci/run`
        // runs this suite a year ahead); set far past that.
        retention: Duration::from_secs(3650 * 86_400),
        ..SpoolConfig::default()
    };
    let out = tmp.path().join("events.jsonl");
    let events: Vec<Envelope> = (0..300)
        .map(|i| envelope(i, if i % 2 == 0 { "signup" } else { "landing" }))
        .collect();
    let names = vec!["picky".to_string()];
    let delivery = DeliveryConfig {
        max_events: 16,
        linger: Duration::from_millis(10),
        concurrency: 2,
        ..DeliveryConfig::default()
    };
    // Two runs on the same spool: half the events, stop, the rest.
    for (round, part) in events.chunks(150).enumerate() {
        let metrics = Arc::new(Metrics::new());
        let (w, mut readers) = spool::open(&spool_cfg, &names, metrics.clone()).unwrap();
        if round == 1 {
            assert_eq!(readers[0].acked(), 150, "resumes where it acknowledged");
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let writer = tokio::spawn(spool::run_writer(w, rx, 64));
        let sink: Arc<dyn Sink> = Arc::new(Picky(FileSink::new(&no_day_rotation(&out)).unwrap()));
        let dl = dead_letter_path(&delivery, &spool_cfg.dir, "picky");
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_sink(
            sink,
            readers.pop().unwrap(),
            delivery.clone(),
            dl,
            metrics.clone(),
            stop.clone(),
        ));
        for e in part {
            tx.send(e.clone()).await.unwrap();
        }
        // Everything is in the spool once the writer is done.
        drop(tx);
        writer.await.unwrap().unwrap();
        let depth = metrics
            .sink_queue_depth
            .get_or_create(&metrics.sink("picky"))
            .clone();
        let delivered = metrics
            .sink_delivered_total
            .get_or_create(&metrics.sink("picky"))
            .clone();
        let want = part
            .iter()
            .filter(|e| e.event.event_name == "signup" && !e.event.event_id.ends_with('4'))
            .count() as u64;
        for _ in 0..2000 {
            if delivered.get() >= want && depth.get() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(delivered.get(), want);
    }
    let wanted: Vec<Event> = events
        .iter()
        .filter(|e| e.event.event_name == "signup" && !e.event.event_id.ends_with('4'))
        .map(|e| e.event.clone())
        .collect();
    let mut written = read_events(&out);
    written.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    assert_eq!(
        written, wanted,
        "each wanted event once (concurrency 2 may reorder batches)"
    );
    let dead: Vec<serde_json::Value> =
        std::fs::read_to_string(spool_cfg.dir.join("dead-letter/picky.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let dead_ids: Vec<&str> = dead
        .iter()
        .map(|d| d["event"]["event_id"].as_str().unwrap())
        .collect();
    let want_dead: Vec<String> = events
        .iter()
        .filter(|e| e.event.event_name == "signup" && e.event.event_id.ends_with('4'))
        .map(|e| e.event.event_id.clone())
        .collect();
    assert_eq!(dead_ids, want_dead);
    assert!(dead.iter().all(
        |d| d["reason"] == "invalid: ids ending in 4 are invalid here" && d["sink"] == "picky"
    ));
    // Every event was acknowledged: the spool keeps only its active segment.
    let (_w, readers) = spool::open(&spool_cfg, &names, Arc::new(Metrics::new())).unwrap();
    assert_eq!(readers[0].acked(), 300);
    let segs = std::fs::read_dir(&spool_cfg.dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    assert_eq!(segs, 1);
}
