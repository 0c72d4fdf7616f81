//! `file` sink: JSON lines, one `Event` per line (never the ad-platform
//! match keys), rotated by size and by UTC day.
//!
//! The live file is `path` (default `data/events.jsonl`). A rotated file is
//! renamed beside it to `STEM-YYYY-MM-DDTHHMMSSZ.EXT`, stamped with the UTC
//! time the file was started (`events-2026-11-29T000000Z.jsonl`), so names
//! sort in time order and `events-*.jsonl` globs them all; a second file
//! started within the same second gets `_001`, `_002`, … before the
//! extension. Rotation happens before the line that would take the file
//! past `rotate_bytes`, and before the first line written on a new UTC day.
//! A batch is acknowledged once its lines are written and, per `fsync`,
//! synced: `always` syncs every batch (group commit), `interval` when a
//! batch comes at least `fsync_interval` after the last sync, `never`
//! leaves it to the OS. Rotated files are removed beyond `keep_files`, and
//! when last written longer ago than `retention`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde::Deserialize;
use time::OffsetDateTime;

use super::{DeliveryConfig, RawEvent, Sink, SinkError};
use crate::event::Envelope;
use crate::pipeline::spool::FsyncPolicy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    pub name: Option<String>,
    #[serde(default = "default_path")]
    pub path: PathBuf,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Rotate before the file would pass this size; 0 turns it off.
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// Rotate before the first line written on a new UTC day.
    #[serde(default = "default_true")]
    pub rotate_daily: bool,
    #[serde(default = "default_fsync")]
    pub fsync: FsyncPolicy,
    #[serde(default = "default_fsync_interval", with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// Keep at most this many rotated files (the oldest go first).
    #[serde(default)]
    pub keep_files: Option<usize>,
    /// Remove rotated files last written longer ago than this.
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,
}

/// The contract's default.
fn default_path() -> PathBuf {
    "data/events.jsonl".into()
}
fn default_rotate_bytes() -> u64 {
    256 << 20
}
fn default_true() -> bool {
    true
}
fn default_fsync() -> FsyncPolicy {
    FsyncPolicy::Always
}
fn default_fsync_interval() -> Duration {
    Duration::from_secs(1)
}

impl FileSinkConfig {
    /// A config with every default, writing to `path`.
    pub fn new(path: impl Into<PathBuf>) -> FileSinkConfig {
        FileSinkConfig {
            name: None,
            path: path.into(),
            delivery: DeliveryConfig::default(),
            rotate_bytes: default_rotate_bytes(),
            rotate_daily: true,
            fsync: default_fsync(),
            fsync_interval: default_fsync_interval(),
            keep_files: None,
            retention: None,
        }
    }

    /// The sink's label in metrics, logs and the spool: `name`, else "file".
    pub fn sink_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| "file".into())
    }

    pub fn validate(&self, _env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        let mut out = super::delivery::validate(&self.delivery);
        if self.path.file_name().is_none() {
            out.push((
                "path".into(),
                "must name a file, e.g. data/events.jsonl".into(),
            ));
        } else if self.path.is_dir() {
            out.push((
                "path".into(),
                format!("{} is a directory", self.path.display()),
            ));
        }
        if self.keep_files == Some(0) {
            out.push((
                "keep_files".into(),
                "must be at least 1 (omit it to keep every file)".into(),
            ));
        }
        if self.retention.is_some_and(|d| d.is_zero()) {
            out.push((
                "retention".into(),
                "must be more than 0 (omit it to keep every file)".into(),
            ));
        }
        if self.fsync == FsyncPolicy::Interval && self.fsync_interval.is_zero() {
            out.push(("fsync_interval".into(), "must be more than 0".into()));
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    #[error("file sink {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// The wall clock, injectable for tests of day rotation.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

pub struct FileSink {
    name: String,
    state: Arc<Mutex<Writer>>,
}

struct Writer {
    cfg: FileSinkConfig,
    clock: Clock,
    file: Option<File>,
    size: u64,
    /// When the live file was started: its rotated name, and its UTC day.
    started: OffsetDateTime,
    last_sync: Instant,
}

impl FileSink {
    /// Open (creating directories and the file) and truncate a partial last
    /// line a crash may have left.
    pub fn new(cfg: &FileSinkConfig) -> Result<FileSink, FileSinkError> {
        FileSink::with_clock(cfg, Arc::new(OffsetDateTime::now_utc))
    }

    pub fn with_clock(cfg: &FileSinkConfig, clock: Clock) -> Result<FileSink, FileSinkError> {
        let now = clock();
        let mut w = Writer {
            cfg: cfg.clone(),
            clock,
            file: None,
            size: 0,
            started: now,
            last_sync: Instant::now(),
        };
        w.open().map_err(|source| FileSinkError::Io {
            path: cfg.path.clone(),
            source,
        })?;
        w.apply_retention();
        Ok(FileSink {
            name: cfg.sink_name(),
            state: Arc::new(Mutex::new(w)),
        })
    }
}

/// The name a live file started at `started` gets when rotated; `n` > 0
/// when an earlier file of the same second exists.
pub fn rotated_path(path: &Path, started: OffsetDateTime, n: usize) -> PathBuf {
    let (stem, ext) = split_name(path);
    let t = started.to_offset(time::UtcOffset::UTC);
    let stamp = format!(
        "{:04}-{:02}-{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let seq = if n == 0 {
        String::new()
    } else {
        format!("_{n:03}")
    };
    let ext = ext.map(|e| format!(".{e}")).unwrap_or_default();
    path.with_file_name(format!("{stem}-{stamp}{seq}{ext}"))
}

fn split_name(path: &Path) -> (String, Option<String>) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem.to_string(), Some(ext.to_string())),
        _ => (name, None),
    }
}

/// Whether `name` is a rotated file of the live file `path`.
fn is_rotated_of(path: &Path, name: &str) -> bool {
    let (stem, ext) = split_name(path);
    let Some(rest) = name.strip_prefix(&format!("{stem}-")) else {
        return false;
    };
    let rest = match &ext {
        Some(e) => match rest.strip_suffix(&format!(".{e}")) {
            Some(r) => r,
            None => return false,
        },
        None => rest,
    };
    // YYYY-MM-DDTHHMMSSZ, optionally _NNN
    let stamp = rest.split_once('_').map_or(rest, |(s, n)| {
        if n.bytes().all(|b| b.is_ascii_digit()) {
            s
        } else {
            ""
        }
    });
    stamp.len() == 18 && stamp.as_bytes()[10] == b'T' && stamp.ends_with('Z')
}

impl Writer {
    fn sync_dir(&self) -> io::Result<()> {
        match self.cfg.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => File::open(d)?.sync_all(),
            _ => File::open(".")?.sync_all(),
        }
    }

    fn open(&mut self) -> io::Result<()> {
        let path = &self.cfg.path;
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let md = file.metadata()?;
        let mut size = md.len();
        if size > 0 {
            size = cut_partial_line(&mut file, size)?;
            let born = md
                .created()
                .or_else(|_| md.modified())
                .unwrap_or_else(|_| SystemTime::now());
            self.started = OffsetDateTime::from(born);
        } else {
            self.started = (self.clock)();
        }
        self.size = size;
        self.file = Some(file);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if let Some(f) = &self.file {
            f.sync_data()?;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn rotate(&mut self, now: OffsetDateTime) -> io::Result<()> {
        if self.cfg.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
        self.file = None;
        let mut n = 0;
        let target = loop {
            let p = rotated_path(&self.cfg.path, self.started, n);
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        fs::rename(&self.cfg.path, &target)?;
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.cfg.path)?;
        if self.cfg.fsync != FsyncPolicy::Never {
            self.sync_dir()?;
        }
        tracing::info!(rotated = %target.display(), "file sink: rotated");
        self.file = Some(file);
        self.size = 0;
        self.started = now;
        self.apply_retention();
        Ok(())
    }

    fn apply_retention(&self) {
        if self.cfg.keep_files.is_none() && self.cfg.retention.is_none() {
            return;
        }
        let dir = match self.cfg.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        let mut rotated: Vec<(String, PathBuf, Option<SystemTime>)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                is_rotated_of(&self.cfg.path, &name).then(|| {
                    let mtime = e.metadata().ok().and_then(|m| m.modified().ok());
                    (name, e.path(), mtime)
                })
            })
            .collect();
        rotated.sort_by(|a, b| a.0.cmp(&b.0));
        let over = self
            .cfg
            .keep_files
            .map_or(0, |k| rotated.len().saturating_sub(k));
        let cutoff = self
            .cfg
            .retention
            .and_then(|r| SystemTime::now().checked_sub(r));
        for (i, (_, path, mtime)) in rotated.iter().enumerate() {
            let expired = matches!((cutoff, mtime), (Some(c), Some(m)) if *m < c);
            if i < over || expired {
                match fs::remove_file(path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "file sink: removed a rotated file (retention)")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "file sink: cannot remove a rotated file")
                    }
                }
            }
        }
    }

    /// Write the lines (ends[i] is the end offset of line i in `buf`),
    /// rotating as needed, then sync per policy.
    fn write(&mut self, buf: &[u8], ends: &[usize]) -> io::Result<()> {
        let now = (self.clock)();
        if self.file.is_none() {
            self.open()?;
        }
        if self.cfg.rotate_daily
            && self.started.to_offset(time::UtcOffset::UTC).date() != now.date()
        {
            if self.size > 0 {
                self.rotate(now)?;
            } else {
                self.started = now;
            }
        }
        let limit = self.cfg.rotate_bytes;
        let (mut run_start, mut start) = (0usize, 0usize);
        for &end in ends {
            let pending = (start - run_start) as u64;
            let line = (end - start) as u64;
            if limit > 0 && self.size + pending > 0 && self.size + pending + line > limit {
                self.write_run(&buf[run_start..start])?;
                run_start = start;
                self.rotate(now)?;
            }
            start = end;
        }
        self.write_run(&buf[run_start..start])?;
        match self.cfg.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::Interval if self.last_sync.elapsed() >= self.cfg.fsync_interval => {
                self.sync()?
            }
            _ => {}
        }
        Ok(())
    }

    fn write_run(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("file sink: no open file"));
        };
        if let Err(e) = file.write_all(bytes) {
            // Leave no partial line behind; the batch is retried whole.
            let _ = file.set_len(self.size);
            self.file = None;
            return Err(e);
        }
        self.size += bytes.len() as u64;
        Ok(())
    }
}

/// A crash mid-write can leave a line without its newline; appending after
/// it would glue two events into one invalid line. Such a line was never
/// acknowledged (the spool sends it again), so cut it.
fn cut_partial_line(file: &mut File, size: u64) -> io::Result<u64> {
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(size - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(size);
    }
    let mut end = size;
    let mut chunk = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            file.set_len(keep)?;
            tracing::warn!(
                removed_bytes = size - keep,
                "file sink: cut a partial last line"
            );
            return Ok(keep);
        }
        end = start;
    }
    file.set_len(0)?;
    Ok(0)
}

#[async_trait]
impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, batch: &[Envelope]) -> Result<(), SinkError> {
        let mut buf = Vec::with_capacity(batch.len() * 768);
        let mut ends = Vec::with_capacity(batch.len());
        for env in batch {
            serde_json::to_writer(&mut buf, &env.event).map_err(|e| SinkError::Rejected {
                message: format!("event cannot be serialized: {e}"),
            })?;
            buf.push(b'\n');
            ends.push(buf.len());
        }
        self.write(buf, ends).await
    }

    fn raw(&self) -> bool {
        true
    }

    async fn send_raw(&self, batch: &[RawEvent]) -> Result<(), SinkError> {
        let mut buf = Vec::with_capacity(batch.iter().map(|e| e.json.len() + 1).sum());
        let mut ends = Vec::with_capacity(batch.len());
        for e in batch {
            buf.extend_from_slice(&e.json);
            buf.push(b'\n');
            ends.push(buf.len());
        }
        self.write(buf, ends).await
    }
}

impl FileSink {
    async fn write(&self, buf: Vec<u8>, ends: Vec<usize>) -> Result<(), SinkError> {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = state.lock().unwrap_or_else(|p| p.into_inner());
            w.write(&buf, &ends)
        })
        .await
        .map_err(|e| SinkError::Retryable {
            message: format!("file sink task: {e}"),
            retry_after: None,
        })?
        .map_err(|e| SinkError::Retryable {
            message: format!("file sink write: {e}"),
            retry_after: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_sort_in_time_order_and_are_recognised() {
        let p = Path::new("data/events.jsonl");
        let t = time::macros::datetime!(2026-11-29 00:00:00 UTC);
        let a = rotated_path(p, t, 0);
        let b = rotated_path(p, t, 1);
        let c = rotated_path(p, t + time::Duration::seconds(1), 0);
        assert_eq!(a, Path::new("data/events-2026-11-29T000000Z.jsonl"));
        assert_eq!(b, Path::new("data/events-2026-11-29T000000Z_001.jsonl"));
        let mut names = vec![c.clone(), b.clone(), a.clone()];
        names.sort();
        assert_eq!(names, vec![a.clone(), b.clone(), c]);
        for n in [&a, &b] {
            assert!(is_rotated_of(p, n.file_name().unwrap().to_str().unwrap()));
        }
        assert!(!is_rotated_of(p, "events.jsonl"));
        assert!(!is_rotated_of(p, "events-notes.jsonl"));
        assert!(!is_rotated_of(p, "other-2026-11-29T000000Z.jsonl"));
        let bare = Path::new("log");
        assert_eq!(
            rotated_path(bare, t, 0),
            Path::new("log-2026-11-29T000000Z")
        );
        assert!(is_rotated_of(bare, "log-2026-11-29T000000Z"));
    }

    #[test]
    fn sink_tables_parse_from_toml() {
        let text = r#"
[[sink]]
type = "file"
rotate_bytes = 1000
keep_files = 5
retention = "30d"
fsync = "interval"
fsync_interval = "2s"
delivery = { max_events = 100, linger = "50ms" }

[[sink]]
type = "http"
name = "collector"
url = "https://collector.example/v1/batch"
gzip = true
timeout = "5s"
headers_env = { authorization = "COLLECTOR_AUTH" }
headers = { x-source = "touchgate" }
"#;
        let env = |k: &str| {
            matches!(k, "TOUCHGATE_SECRET" | "COLLECTOR_AUTH")
                .then(|| "0123456789abcdef0123456789abcdef".to_string())
        };
        let cfg = crate::config::Config::parse("t.toml", text, &env).unwrap();
        let crate::sink::SinkConfig::File(f) = &cfg.sink[0] else {
            panic!("file")
        };
        assert_eq!(f.path, Path::new("data/events.jsonl"));
        assert_eq!(f.sink_name(), "file");
        assert_eq!(
            (f.rotate_bytes, f.keep_files, f.fsync),
            (1000, Some(5), FsyncPolicy::Interval)
        );
        assert_eq!(f.retention, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(f.delivery.max_events, 100);
        assert_eq!(f.delivery.linger, Duration::from_millis(50));
        let crate::sink::SinkConfig::Http(h) = &cfg.sink[1] else {
            panic!("http")
        };
        assert_eq!(h.sink_name(), "collector");
        assert!(h.gzip);
        assert_eq!(h.timeout, Duration::from_secs(5));
        assert_eq!(h.headers_env["authorization"], "COLLECTOR_AUTH");

        let err = crate::config::Config::parse(
            "t.toml",
            &text.replace("rotate_bytes", "rotate_byte"),
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("rotate_byte"), "{err}");
        let err = crate::config::Config::parse("t.toml", text, &|k| {
            (k == "TOUCHGATE_SECRET").then(|| "0123456789abcdef".repeat(2))
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("sink[1].headers_env.authorization") && err.contains("COLLECTOR_AUTH"),
            "{err}"
        );
    }

    #[test]
    fn validation_names_bad_keys() {
        let mut c = FileSinkConfig::new("x/events.jsonl");
        assert!(c.validate(&|_| None).is_empty());
        c.keep_files = Some(0);
        c.retention = Some(Duration::ZERO);
        c.delivery.max_events = 0;
        let keys: Vec<String> = c.validate(&|_| None).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["delivery.max_events", "keep_files", "retention"]);
    }
}
