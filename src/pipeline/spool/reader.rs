//! The readers: one per sink, each reading ahead from its position and
//! acknowledging in order, with its cursor persisted in `cursors/`.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::watch;

use super::format::{HEADER, Record, frame_len, is_torn, read_frame, read_header};
use super::{CURSOR_EXT, FsyncPolicy, OpenSpool, Seq, SpoolError, io_err, sync_dir};

struct OpenSeg {
    base: Seq,
    reader: BufReader<File>,
    /// Sequence number of the record at the current offset.
    next: Seq,
}

/// One sink's view of the spool: reads ahead from its position and
/// acknowledges in order.
pub struct SpoolReader {
    shared: Arc<OpenSpool>,
    index: usize,
    name: String,
    end_rx: watch::Receiver<Seq>,
    pos: Seq,
    open: Option<OpenSeg>,
    acked: Seq,
    persisted: Seq,
    last_persist: Instant,
}

impl std::fmt::Debug for SpoolReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolReader")
            .field("name", &self.name)
            .field("pos", &self.pos)
            .field("acked", &self.acked)
            .finish()
    }
}

impl SpoolReader {
    /// A reader at `pos`; `persisted` is the cursor on disk, if any.
    pub(super) fn new(
        shared: Arc<OpenSpool>,
        index: usize,
        name: String,
        end_rx: watch::Receiver<Seq>,
        pos: Seq,
        persisted: Option<Seq>,
    ) -> SpoolReader {
        SpoolReader {
            shared,
            index,
            name,
            end_rx,
            pos,
            open: None,
            acked: pos,
            persisted: persisted.unwrap_or(u64::MAX),
            last_persist: Instant::now(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Next sequence number to read.
    pub fn position(&self) -> Seq {
        self.pos
    }

    /// Next sequence number not acknowledged.
    pub fn acked(&self) -> Seq {
        self.acked
    }

    /// Whether records past the read position are written.
    pub fn available(&self) -> bool {
        *self.end_rx.borrow() > self.pos
    }

    /// Wait until records past the read position are written. Returns
    /// `false` when the writer is gone and nothing more will come.
    /// Cancel-safe.
    pub async fn wait(&mut self) -> bool {
        loop {
            if *self.end_rx.borrow_and_update() > self.pos {
                return true;
            }
            if self.end_rx.changed().await.is_err() {
                return *self.end_rx.borrow() > self.pos;
            }
        }
    }

    /// Read what is available from the read position, without waiting: at
    /// most `max_events` records whose payloads total at most `max_bytes`
    /// (the first record is returned even when larger). Blocking I/O.
    pub fn read_blocking(
        &mut self,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, SpoolError> {
        let end = *self.end_rx.borrow();
        let (open, pos, res) = read_records(
            &self.shared,
            self.open.take(),
            self.pos,
            end,
            max_events,
            max_bytes,
        );
        self.open = open;
        self.pos = pos;
        res
    }

    /// [`read_blocking`](Self::read_blocking) on tokio's blocking pool.
    /// Cancel-safe: a cancelled read leaves the position where it was.
    pub async fn read(
        &mut self,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, SpoolError> {
        let end = *self.end_rx.borrow();
        let shared = self.shared.clone();
        let (open, from) = (self.open.take(), self.pos);
        let (open, pos, res) = tokio::task::spawn_blocking(move || {
            read_records(&shared, open, from, end, max_events, max_bytes)
        })
        .await
        .map_err(|e| SpoolError::Task(e.to_string()))?;
        self.open = open;
        self.pos = pos;
        res
    }

    /// Move the read position back to the acknowledged cursor (records
    /// read but not acknowledged are read again).
    pub fn rewind(&mut self) {
        self.pos = self.acked;
        self.open = None;
    }

    /// Acknowledge every record below `through`. Persists the cursor per
    /// the fsync policy (every ack under `always`, else at most every
    /// `fsync_interval`) and deletes segments every sink has passed.
    pub async fn ack(&mut self, through: Seq) -> Result<(), SpoolError> {
        if !self.ack_in_memory(through) {
            return Ok(());
        }
        let due = match self.shared.cfg.fsync {
            FsyncPolicy::Always => true,
            _ => self.last_persist.elapsed() >= self.shared.cfg.fsync_interval,
        };
        if due { self.flush().await } else { Ok(()) }
    }

    /// Acknowledge without persisting; returns whether the cursor moved.
    fn ack_in_memory(&mut self, through: Seq) -> bool {
        let end = *self.end_rx.borrow();
        let through = through.min(end);
        let mut st = self.shared.state();
        // Retention may have moved the shared cursor past ours.
        let cur = st.cursors[self.index].max(self.acked);
        if through <= cur {
            self.acked = cur;
            return false;
        }
        st.cursors[self.index] = through;
        self.acked = through;
        if let Some(g) = self.shared.depth_gauges.get(self.index) {
            g.set(end.saturating_sub(through) as i64);
        }
        if self.pos < through {
            self.pos = through;
            self.open = None;
        }
        true
    }

    /// Persist the cursor now and delete passed segments.
    pub async fn flush(&mut self) -> Result<(), SpoolError> {
        let (shared, name, seq) = (self.shared.clone(), self.name.clone(), self.acked);
        let res = tokio::task::spawn_blocking(move || persist(&shared, &name, seq))
            .await
            .map_err(|e| SpoolError::Task(e.to_string()))?;
        self.persisted_now(seq);
        res
    }

    /// [`flush`](Self::flush), blocking.
    pub fn flush_blocking(&mut self) -> Result<(), SpoolError> {
        let seq = self.acked;
        let res = persist(&self.shared, &self.name, seq);
        self.persisted_now(seq);
        res
    }

    /// Acknowledge and persist at once, blocking.
    pub fn ack_blocking(&mut self, through: Seq) -> Result<(), SpoolError> {
        if self.ack_in_memory(through) {
            self.flush_blocking()
        } else {
            Ok(())
        }
    }

    fn persisted_now(&mut self, seq: Seq) {
        self.persisted = seq;
        self.last_persist = Instant::now();
    }
}

impl Drop for SpoolReader {
    fn drop(&mut self) {
        if self.persisted != self.acked
            && let Err(e) = persist(&self.shared, &self.name, self.acked)
        {
            tracing::error!(sink = %self.name, error = %e, "spool: cannot persist cursor");
        }
    }
}

fn persist(shared: &OpenSpool, name: &str, seq: Seq) -> Result<(), SpoolError> {
    let sync = shared.cfg.fsync == FsyncPolicy::Always;
    // Segments go first: they hold only records every sink has acknowledged
    // in memory, so a crash before the cursor below is written costs no
    // record (the reader resumes at the oldest segment left), and on a full
    // disk their space is what lets the cursor be written at all.
    shared.collect_segments();
    write_cursor(&shared.cursor_dir, name, seq, sync).map_err(io_err(&shared.cursor_dir))?;
    Ok(())
}

/// Where `pos` lives: (base, end of the segment when sealed, path), or the
/// first segment's base when `pos` is before it (retention moved on).
enum Locate {
    In(Seq, Option<Seq>, PathBuf),
    Skip(Seq),
}

fn locate(shared: &OpenSpool, pos: Seq) -> Option<Locate> {
    let st = shared.state();
    if let Some((&base, meta)) = st.segments.range(..=pos).next_back() {
        let next = st.segments.range(base + 1..).next().map(|(&b, _)| b);
        return Some(match next {
            Some(n) if pos >= n => Locate::Skip(n),
            _ => Locate::In(base, next, meta.path.clone()),
        });
    }
    st.segments.keys().next().map(|&b| Locate::Skip(b))
}

fn read_records(
    shared: &OpenSpool,
    mut open: Option<OpenSeg>,
    mut pos: Seq,
    end: Seq,
    max_events: usize,
    max_bytes: usize,
) -> (Option<OpenSeg>, Seq, Result<Vec<Record>, SpoolError>) {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut buf = Vec::new();
    // Bounded: every iteration reads a record or moves `pos` forward to a
    // later segment; the guard catches a spool changed under our feet.
    let mut guard = 0usize;
    while pos < end && out.len() < max_events.max(1) && guard < 1_000_000 {
        guard += 1;
        let (base, seg_end, path) = match locate(shared, pos) {
            Some(Locate::In(b, e, p)) => (b, e, p),
            Some(Locate::Skip(to)) if to > pos => {
                pos = to;
                open = None;
                continue;
            }
            _ => break,
        };
        if open.as_ref().is_none_or(|o| o.base != base || o.next > pos) {
            match File::open(&path) {
                Ok(f) => {
                    open = Some(OpenSeg {
                        base,
                        reader: BufReader::with_capacity(256 << 10, f),
                        next: base,
                    })
                }
                // Deleted by retention between locate and open, or by hand.
                Err(e) if e.kind() == io::ErrorKind::NotFound => match seg_end {
                    Some(n) => {
                        pos = n;
                        continue;
                    }
                    None => break,
                },
                Err(e) => return (None, pos, Err(SpoolError::Io { path, source: e })),
            }
        }
        let Some(seg) = open.as_mut() else { break };
        let budget = if out.is_empty() {
            usize::MAX
        } else {
            max_bytes.saturating_sub(bytes)
        };
        match next_record(seg, pos, budget, &mut buf) {
            Ok(ReadStep::Record(n)) => {
                match Record::new(pos, Bytes::from(std::mem::take(&mut buf))) {
                    Some(rec) => {
                        bytes += n;
                        out.push(rec);
                    }
                    None => {
                        tracing::error!(pos, "spool: record is not an event, skipped");
                        shared.metrics.dropped("spool_corrupt");
                    }
                }
                pos += 1;
            }
            Ok(ReadStep::Full) => break,
            Ok(ReadStep::End) => {
                open = None;
                match seg_end {
                    Some(n) => pos = n,
                    None => {
                        // The writer published records that are not in the
                        // file: only if the file was changed under us.
                        tracing::error!(path = %path.display(), pos, "spool: active segment shorter than expected");
                        break;
                    }
                }
            }
            Err(e) if is_torn(&e) => {
                open = None;
                let Some(n) = seg_end else {
                    tracing::error!(path = %path.display(), pos, error = %e, "spool: corrupt record in the active segment");
                    break;
                };
                tracing::error!(path = %path.display(), pos, error = %e, "spool: corrupt record, skipping the rest of the segment");
                shared
                    .metrics
                    .dropped_many("spool_corrupt", n.saturating_sub(pos));
                pos = n;
            }
            Err(e) => return (None, pos, Err(SpoolError::Io { path, source: e })),
        }
    }
    (open, pos, Ok(out))
}

enum ReadStep {
    /// The record at `pos` is in the buffer; its length.
    Record(usize),
    /// The record at `pos` is larger than the byte budget; not consumed.
    Full,
    /// End of the segment file.
    End,
}

fn next_record(
    seg: &mut OpenSeg,
    pos: Seq,
    budget: usize,
    buf: &mut Vec<u8>,
) -> io::Result<ReadStep> {
    skip_to(seg, pos)?;
    match peek_len(&mut seg.reader)? {
        None => return Ok(ReadStep::End),
        Some(len) if len > budget => return Ok(ReadStep::Full),
        Some(_) => {}
    }
    match read_frame(&mut seg.reader, buf)? {
        Some(n) => {
            seg.next += 1;
            Ok(ReadStep::Record(n))
        }
        None => Ok(ReadStep::End),
    }
}

/// Advance an open segment to the record `pos` by reading frame headers.
fn skip_to(seg: &mut OpenSeg, pos: Seq) -> io::Result<()> {
    let mut header = [0u8; HEADER];
    while seg.next < pos {
        seg.reader.read_exact(&mut header)?;
        let len = frame_len(&header)?;
        seg.reader.seek_relative(len as i64)?;
        seg.next += 1;
    }
    Ok(())
}

/// Length of the next record without consuming it; `None` at end of file.
fn peek_len(r: &mut BufReader<File>) -> io::Result<Option<usize>> {
    let Some(header) = read_header(r)? else {
        return Ok(None);
    };
    r.seek_relative(-(HEADER as i64))?;
    frame_len(&header).map(Some)
}

/// Sink names become file names: keep `[A-Za-z0-9._-]`, escape the rest.
pub fn file_safe(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') || (c == '.' && !out.is_empty()) {
            out.push(c);
        } else {
            for b in c.to_string().bytes() {
                out.push_str(&format!("%{b:02x}"));
            }
        }
    }
    out
}

fn cursor_path(cursor_dir: &Path, name: &str) -> PathBuf {
    cursor_dir.join(format!("{}.{CURSOR_EXT}", file_safe(name)))
}

/// The persisted cursor of sink `name`; `None` when it has none (or an
/// unreadable one), and the sink starts at the oldest record.
pub(super) fn read_cursor(cursor_dir: &Path, name: &str) -> Option<Seq> {
    let path = cursor_path(cursor_dir, name);
    let text = fs::read_to_string(&path).ok()?;
    match text.trim().parse() {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::warn!(path = %path.display(), "spool: unreadable cursor, the sink restarts at the oldest record");
            None
        }
    }
}

fn write_cursor(dir: &Path, name: &str, seq: Seq, sync: bool) -> io::Result<()> {
    let fin = cursor_path(dir, name);
    let tmp = dir.join(format!("{}.{CURSOR_EXT}.tmp", file_safe(name)));
    let mut f = File::create(&tmp)?;
    f.write_all(format!("{seq}\n").as_bytes())?;
    if sync {
        f.sync_data()?;
    }
    fs::rename(&tmp, &fin)?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}
