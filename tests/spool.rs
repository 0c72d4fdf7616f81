//! The spool against real files: append, read, acknowledge, resume, two
//! readers, segment deletion, the byte bound, torn tails, retention, and a
//! SIGKILL in the middle of appending.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use touchgate::config::{FsyncPolicy, SpoolConfig};
use touchgate::event::{AdMatch, Envelope, Event, Origin, Page};
use touchgate::metrics::{Metrics, ReasonLabel};
use touchgate::pipeline::spool::{self, SpoolReader};

fn envelope(id: &str) -> Envelope {
    let t = OffsetDateTime::now_utc();
    let mut e = Event::new(id.to_string(), "landing".into(), Origin::Proxy, t, t);
    e.page = Some(Page {
        url: format!("https://shop.example/p/{id}?utm_source=news"),
        path: format!("/p/{id}"),
        referrer_host: None,
    });
    e.device_id = Some("0123456789abcdef0123456789abcdef".into());
    Envelope {
        event: e,
        ad_match: Some(AdMatch {
            em: Some("ab".repeat(32)),
            ..AdMatch::default()
        }),
    }
}

fn batch(from: usize, n: usize) -> Vec<Envelope> {
    (from..from + n)
        .map(|i| envelope(&format!("e{i:06}")))
        .collect()
}

fn cfg(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes: 64 << 20,
        segment_bytes: 4096,
        fsync: FsyncPolicy::Always,
        fsync_interval: Duration::from_millis(200),
        retention: Duration::from_secs(7 * 24 * 3600),
    }
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

fn ids(reader: &mut SpoolReader, max: usize) -> Vec<String> {
    reader
        .read_blocking(max, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.decode().unwrap().event.event_id)
        .collect()
}

fn expected(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("e{i:06}")).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

fn dropped(m: &Metrics, reason: &str) -> u64 {
    m.events_dropped_total
        .get_or_create(&ReasonLabel {
            reason: reason.into(),
        })
        .get()
}

#[test]
fn append_read_ack_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::new());
    {
        let (mut w, mut readers) =
            spool::open(&cfg(tmp.path()), &names(&["file"]), m.clone()).unwrap();
        let r = &mut readers[0];
        let out = w.append_batch_blocking(&batch(0, 100)).unwrap();
        assert_eq!((out.appended, out.dropped, out.end), (100, 0, 100));
        let got = r.read_blocking(1000, usize::MAX).unwrap();
        assert_eq!(
            got.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
        assert_eq!(
            got.iter()
                .map(|r| r.decode().unwrap().event.event_id)
                .collect::<Vec<_>>(),
            expected(0, 100)
        );
        // The ad-platform match keys travel in the spool, beside the event.
        let first = got[0].decode().unwrap();
        assert_eq!(first, envelope("e000000").with_time(&first));
        assert_eq!(got[0].occurred_at(), first.event.occurred_at);
        assert_eq!(got[0].received_at(), first.event.received_at);
        assert_eq!(got[0].raw().received_at, first.event.received_at);
        let json: serde_json::Value = serde_json::from_slice(&got[0].event_json()).unwrap();
        assert_eq!(
            json,
            serde_json::to_value(&first.event).unwrap(),
            "the event's JSON alone"
        );
        r.ack_blocking(60).unwrap();
        assert_eq!(
            m.sink_queue_depth.get_or_create(&m.sink("file")).get(),
            40,
            "queue depth = written - acknowledged"
        );
    }
    let (mut w, mut readers) = spool::open(&cfg(tmp.path()), &names(&["file"]), m.clone()).unwrap();
    let r = &mut readers[0];
    assert_eq!((r.position(), r.acked()), (60, 60));
    assert_eq!(ids(r, 1000), expected(60, 40));
    // Numbering continues after a restart.
    assert_eq!(w.append_batch_blocking(&batch(100, 5)).unwrap().end, 105);
    assert_eq!(ids(r, 1000), expected(100, 5));
    // A rewind reads the unacknowledged records again.
    r.rewind();
    assert_eq!(ids(r, 3), expected(60, 3));
}

trait WithTime {
    fn with_time(self, like: &Envelope) -> Envelope;
}

impl WithTime for Envelope {
    /// The spool keeps the milliseconds the event's JSON carries.
    fn with_time(mut self, like: &Envelope) -> Envelope {
        self.event.occurred_at = like.event.occurred_at;
        self.event.received_at = like.event.received_at;
        self
    }
}

#[test]
fn read_respects_count_and_byte_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut w, mut readers) =
        spool::open(&cfg(tmp.path()), &names(&["a"]), Arc::new(Metrics::new())).unwrap();
    w.append_batch_blocking(&batch(0, 30)).unwrap();
    let r = &mut readers[0];
    assert_eq!(r.read_blocking(7, usize::MAX).unwrap().len(), 7);
    let one = r.read_blocking(100, 1).unwrap();
    assert_eq!(
        one.len(),
        1,
        "the first record comes even when larger than the budget"
    );
    let size = one[0].bytes;
    let some = r.read_blocking(100, size * 3 + size / 2).unwrap();
    assert_eq!(some.len(), 3);
    assert_eq!(some.iter().map(|r| r.bytes).sum::<usize>(), size * 3);
    assert_eq!(r.position(), 11);
}

#[test]
fn two_readers_at_different_speeds_and_segment_deletion() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::new());
    let (mut w, mut readers) =
        spool::open(&cfg(tmp.path()), &names(&["fast", "slow"]), m.clone()).unwrap();
    let (fast, slow) = readers.split_at_mut(1);
    let (fast, slow) = (&mut fast[0], &mut slow[0]);
    for g in 0..10 {
        w.append_batch_blocking(&batch(g * 20, 20)).unwrap();
        assert_eq!(ids(fast, 1000), expected(g * 20, 20));
        fast.ack_blocking(((g + 1) * 20) as u64).unwrap();
    }
    let all = segments(tmp.path());
    assert!(all.len() > 5, "small segments roll: {}", all.len());
    // The slow reader has acknowledged nothing: every segment stays.
    assert_eq!(segments(tmp.path()), all);
    let mut got = Vec::new();
    for _ in 0..200 {
        let batch = ids(slow, 33);
        if batch.is_empty() {
            break;
        }
        got.extend(batch);
    }
    assert_eq!(got, expected(0, 200));
    // Acknowledging half deletes exactly the segments both have passed.
    slow.ack_blocking(100).unwrap();
    let left = segments(tmp.path());
    assert!(left.len() < all.len() && !left.is_empty());
    let first_left: u64 = left[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first_left <= 100,
        "segment holding record 100 must stay, first is {first_left}"
    );
    let second_left: Option<u64> = left
        .get(1)
        .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap());
    assert!(
        second_left.is_none_or(|s| s > 100),
        "the segment holding 100 is the first kept"
    );
    // A reopen resumes the slow reader inside the kept segment.
    drop((w, readers));
    let (mut w, mut readers) =
        spool::open(&cfg(tmp.path()), &names(&["fast", "slow"]), m.clone()).unwrap();
    assert_eq!(ids(&mut readers[1], 1000), expected(100, 100));
    assert!(ids(&mut readers[0], 1000).is_empty());
    readers[1].ack_blocking(200).unwrap();
    // Everything passed: only the active segment is left.
    assert_eq!(segments(tmp.path()).len(), 1);
    w.append_batch_blocking(&batch(200, 1)).unwrap();
    assert_eq!(ids(&mut readers[0], 10), expected(200, 1));
    assert_eq!(ids(&mut readers[1], 10), expected(200, 1));
    let bytes: u64 = segments(tmp.path())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(m.spool_bytes.get() as u64, bytes);
}

#[test]
fn max_bytes_drops_and_counts_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::new());
    let mut c = cfg(tmp.path());
    c.max_bytes = 16 * 1024;
    let (mut w, mut readers) = spool::open(&c, &names(&["a"]), m.clone()).unwrap();
    let out = w.append_batch_blocking(&batch(0, 100)).unwrap();
    assert!(out.appended > 5 && out.dropped > 0, "{out:?}");
    assert_eq!(out.appended + out.dropped, 100);
    assert_eq!(dropped(&m, "spool_full"), out.dropped as u64);
    let on_disk: u64 = segments(tmp.path())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(on_disk <= c.max_bytes, "{on_disk}");
    assert_eq!(m.spool_bytes.get() as u64, on_disk);
    // The kept events are the first ones, in order.
    let got = ids(&mut readers[0], 1000);
    assert_eq!(got, expected(0, out.appended));
    // Once the sink has passed the sealed segments, there is room again.
    readers[0].ack_blocking(out.end).unwrap();
    let again = w.append_batch_blocking(&batch(100, 5)).unwrap();
    assert_eq!((again.appended, again.dropped), (5, 0));
}

fn frame_offsets(path: &Path) -> Vec<u64> {
    let mut f = fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut offs = Vec::new();
    let mut pos = 0u64;
    while pos + 8 <= len {
        offs.push(pos);
        let mut h = [0u8; 8];
        f.seek(SeekFrom::Start(pos)).unwrap();
        f.read_exact(&mut h).unwrap();
        pos += 8 + u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as u64;
    }
    offs
}

#[test]
fn torn_tail_is_truncated_on_open_and_complete_records_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path());
    c.segment_bytes = 1 << 20;
    let m = Arc::new(Metrics::new());
    {
        let (mut w, _r) = spool::open(&c, &names(&["a"]), m.clone()).unwrap();
        w.append_batch_blocking(&batch(0, 20)).unwrap();
    }
    let seg = segments(tmp.path()).pop().unwrap();
    let offs = frame_offsets(&seg);
    assert_eq!(offs.len(), 20);
    // Cut the last frame in the middle.
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    {
        let (mut w, mut readers) = spool::open(&c, &names(&["a"]), m.clone()).unwrap();
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            offs[19],
            "torn frame removed"
        );
        assert_eq!(ids(&mut readers[0], 1000), expected(0, 19));
        // New records continue the numbering after the last complete one.
        let out = w.append_batch_blocking(&batch(19, 3)).unwrap();
        assert_eq!(out.end, 22);
        assert_eq!(ids(&mut readers[0], 1000), expected(19, 3));
    }
    // Flip one byte inside the last record's payload: its checksum fails.
    let offs = frame_offsets(&seg);
    assert_eq!(offs.len(), 22);
    {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
            .unwrap();
        let at = offs[21] + 8 + 20;
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[b[0] ^ 0x20]).unwrap();
    }
    // And append garbage shorter than a header.
    OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&[1, 2, 3])
        .unwrap();
    let (_w, mut readers) = spool::open(&c, &names(&["a"]), m).unwrap();
    assert_eq!(fs::metadata(&seg).unwrap().len(), offs[21]);
    let mut want = expected(0, 19);
    want.extend(expected(19, 2));
    assert_eq!(ids(&mut readers[0], 1000), want);
}

#[test]
fn retention_removes_old_segments_even_unacknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::new());
    let mut c = cfg(tmp.path());
    c.retention = Duration::from_secs(3600);
    {
        let (mut w, _r) = spool::open(&c, &names(&["a"]), m.clone()).unwrap();
        w.append_batch_blocking(&batch(0, 60)).unwrap();
    }
    let segs = segments(tmp.path());
    assert!(segs.len() >= 4);
    // The first two segments were last written two hours ago, the others
    // now. Every time is set here, on the clock the test runs under, rather
    // than left to the file system's (libfaketime moves only the process's
    // clock, and `.ci/run` runs this suite a year ahead).
    let now = SystemTime::now();
    let old = now - Duration::from_secs(7200);
    for (i, p) in segs.iter().enumerate() {
        OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(if i < 2 { old } else { now })
            .unwrap();
    }
    let third: u64 = segs[2]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut w, mut readers) = spool::open(&c, &names(&["a"]), m.clone()).unwrap();
        w.tick().await.unwrap();
        assert_eq!(segments(tmp.path()), segs[2..].to_vec());
        assert_eq!(dropped(&m, "retention"), third);
        let got = readers[0].read(1000, usize::MAX).await.unwrap();
        assert_eq!(got.first().map(|r| r.seq), Some(third));
        assert_eq!(got.len() as u64, 60 - third);
    });
}

#[tokio::test]
async fn readers_wake_on_append_without_polling() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, mut readers) =
        spool::open(&cfg(tmp.path()), &names(&["a"]), Arc::new(Metrics::new())).unwrap();
    let mut r = readers.pop().unwrap();
    assert!(!r.available());
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let writer = tokio::spawn(spool::run_writer(w, rx, 64));
    let waiter = tokio::spawn(async move {
        let alive = r.wait().await;
        let got = r.read(10, usize::MAX).await.unwrap();
        (
            alive,
            got.into_iter()
                .map(|r| r.decode().unwrap().event.event_id)
                .collect::<Vec<_>>(),
            r,
        )
    });
    tokio::task::yield_now().await;
    tx.send(envelope("e000000")).await.unwrap();
    let (alive, got, mut r) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(alive);
    assert_eq!(got, expected(0, 1));
    drop(tx);
    writer.await.unwrap().unwrap();
    // The writer is gone: waiting ends instead of hanging.
    assert!(
        !tokio::time::timeout(Duration::from_secs(10), r.wait())
            .await
            .unwrap()
    );
}

#[test]
fn one_process_at_a_time_and_unique_sink_names() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::new());
    let held = spool::open(&cfg(tmp.path()), &names(&["a"]), m.clone()).unwrap();
    assert!(matches!(
        spool::open(&cfg(tmp.path()), &names(&["a"]), m.clone()),
        Err(spool::SpoolError::Locked(_))
    ));
    drop(held);
    assert!(matches!(
        spool::open(&cfg(tmp.path()), &names(&["a", "a"]), m.clone()),
        Err(spool::SpoolError::DuplicateSink(_))
    ));
    assert!(spool::open(&cfg(tmp.path()), &names(&["a", "b"]), m).is_ok());
}

const CHILD_ENV: &str = "TOUCHGATE_TEST_SPOOL_CHILD_DIR";

/// Under `fsync = always`, every event `append_batch` reported durable
/// before a SIGKILL is in the spool after it.
#[test]
fn sigkill_loses_no_event_acknowledged_as_durable() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        return crash_child(Path::new(&dir));
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "sigkill_loses_no_event_acknowledged_as_durable",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut durable = 0usize;
    // Kill once enough appends were confirmed (bounded by the child's own
    // limit if it finishes first).
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("durable ") {
            durable = n.trim().parse().unwrap();
            if durable >= 3000 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(durable >= 100, "the child confirmed {durable} events");

    let m = Arc::new(Metrics::new());
    let (_w, mut readers) = spool::open(&cfg(tmp.path()), &names(&["a"]), m).unwrap();
    let mut seen = Vec::new();
    for _ in 0..100_000 {
        let got = ids(&mut readers[0], 5000);
        if got.is_empty() {
            break;
        }
        seen.extend(got);
    }
    // Everything confirmed is there, in order, and nothing else is garbled.
    assert!(seen.len() >= durable, "{} < {durable}", seen.len());
    assert_eq!(seen[..durable], expected(0, durable)[..]);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len());
}

fn crash_child(dir: &Path) {
    let mut c = cfg(dir);
    c.segment_bytes = 64 << 10;
    let (mut w, _readers) = spool::open(&c, &names(&["a"]), Arc::new(Metrics::new())).unwrap();
    let out = std::io::stdout();
    let mut n = 0;
    // Bounded: the parent kills us long before this ends.
    while n < 2_000_000 {
        let b = batch(n, 50);
        let res = w.append_batch_blocking(&b).unwrap();
        assert_eq!(res.appended, 50);
        n += 50;
        let mut o = out.lock();
        writeln!(o, "durable {n}").unwrap();
        o.flush().unwrap();
    }
}
