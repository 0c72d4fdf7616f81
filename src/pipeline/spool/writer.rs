//! The single writer: group commit of framed records into the active
//! segment, segment rolling, and the periodic fsync and clean-up.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};

use super::format::{Encoded, FramedRecord, encode};
use super::{FsyncPolicy, OpenSpool, SegMeta, Seq, SpoolError, io_err, segment_path, sync_dir};
use crate::event::Envelope;

/// What one `append_batch` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    /// Records written (and durable when the policy is `always`).
    pub appended: usize,
    /// Records dropped because the spool reached `max_bytes` (counted as
    /// `touchgate_events_dropped_total{reason="spool_full"}`).
    pub dropped: usize,
    /// Sequence number after the last record written.
    pub end: Seq,
}

/// The segment appends go to.
pub(super) struct Active {
    pub(super) file: File,
    pub(super) path: PathBuf,
    pub(super) base: Seq,
    pub(super) bytes: u64,
    pub(super) next: Seq,
}

struct WriterCore {
    shared: Arc<OpenSpool>,
    end_tx: watch::Sender<Seq>,
    active: Active,
    last_sync: Instant,
    unsynced: bool,
    last_maintain: Instant,
}

impl WriterCore {
    fn policy(&self) -> FsyncPolicy {
        self.shared.cfg.fsync
    }

    fn write(&mut self, enc: &Encoded) -> Result<Appended, SpoolError> {
        let shared = self.shared.clone();
        let cfg = &shared.cfg;
        let (max_bytes, segment_bytes) = (cfg.max_bytes, cfg.segment_bytes);
        let mut out = Appended::default();
        let mut run_start = 0usize; // start of frames accepted but not written
        let mut run_end = 0usize;
        let mut pending_bytes = 0u64; // accepted, not yet written
        let mut pending_records = 0u64;
        let mut start = 0usize;
        for &end in &enc.ends {
            let len = (end - start) as u64;
            let total = self.shared.total_bytes.load(Ordering::Relaxed) + pending_bytes;
            if total + len > max_bytes {
                self.flush_run(&enc.buf[run_start..run_end], pending_records, pending_bytes)?;
                pending_bytes = 0;
                pending_records = 0;
                out.dropped += 1;
                start = end;
                run_start = end;
                run_end = end;
                continue;
            }
            if self.active.bytes + pending_bytes > 0
                && self.active.bytes + pending_bytes + len > segment_bytes
            {
                self.flush_run(&enc.buf[run_start..run_end], pending_records, pending_bytes)?;
                pending_bytes = 0;
                pending_records = 0;
                run_start = start;
                self.roll()?;
            }
            run_end = end;
            pending_bytes += len;
            pending_records += 1;
            out.appended += 1;
            start = end;
        }
        self.flush_run(&enc.buf[run_start..run_end], pending_records, pending_bytes)?;
        match self.policy() {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::Interval if self.last_sync.elapsed() >= cfg.fsync_interval => {
                self.sync()?
            }
            _ => {}
        }
        if out.dropped > 0 {
            self.shared
                .metrics
                .dropped_many("spool_full", out.dropped as u64);
        }
        // Publish only now, so that under `always` no sink sees a record
        // that is not yet durable.
        self.shared.end.store(self.active.next, Ordering::Release);
        self.end_tx.send_replace(self.active.next);
        self.shared.update_depths(&self.shared.state());
        out.end = self.active.next;
        self.maintain_if_due();
        Ok(out)
    }

    fn flush_run(&mut self, bytes: &[u8], records: u64, len: u64) -> Result<(), SpoolError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.active.file.write_all(bytes) {
            // Leave no partial frame for the next append to follow: readers
            // would stop at it.
            if let Err(t) = self.active.file.set_len(self.active.bytes) {
                tracing::error!(path = %self.active.path.display(), error = %t, "spool: cannot cut a partial write");
            }
            return Err(SpoolError::Io {
                path: self.active.path.clone(),
                source: e,
            });
        }
        self.active.bytes += len;
        self.active.next += records;
        self.unsynced = true;
        self.shared.add_bytes(len);
        let mut st = self.shared.state();
        if let Some(meta) = st.segments.get_mut(&self.active.base) {
            meta.bytes = self.active.bytes;
            meta.last_write = SystemTime::now();
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), SpoolError> {
        if self.unsynced {
            self.active
                .file
                .sync_data()
                .map_err(io_err(&self.active.path))?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Seal the active segment and start a new one at the next sequence.
    fn roll(&mut self) -> Result<(), SpoolError> {
        if self.policy() != FsyncPolicy::Never {
            self.sync()?;
        }
        let base = self.active.next;
        let path = segment_path(&self.shared.dir, base);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if self.policy() != FsyncPolicy::Never {
            sync_dir(&self.shared.dir).map_err(io_err(&self.shared.dir))?;
        }
        self.shared.state().segments.insert(
            base,
            SegMeta {
                path: path.clone(),
                bytes: 0,
                last_write: SystemTime::now(),
            },
        );
        self.active = Active {
            file,
            path,
            base,
            bytes: 0,
            next: base,
        };
        Ok(())
    }

    fn maintain_if_due(&mut self) {
        if self.last_maintain.elapsed() >= Duration::from_secs(1) {
            self.maintain();
        }
    }

    /// Periodic work: the `interval` fsync when idle, retention, and the
    /// deletion of segments every sink has passed.
    fn maintain(&mut self) {
        self.last_maintain = Instant::now();
        if self.policy() == FsyncPolicy::Interval
            && self.unsynced
            && self.last_sync.elapsed() >= self.shared.cfg.fsync_interval
            && let Err(e) = self.sync()
        {
            tracing::error!(error = %e, "spool: fsync failed");
        }
        // An idle active segment that outlived retention is sealed so that
        // retention can remove it.
        let idle_expired = self.active.bytes > 0
            && SystemTime::now()
                .checked_sub(self.shared.cfg.retention)
                .is_some_and(|cutoff| {
                    self.shared
                        .state()
                        .segments
                        .get(&self.active.base)
                        .is_some_and(|m| m.last_write < cutoff)
                });
        if idle_expired && let Err(e) = self.roll() {
            tracing::error!(error = %e, "spool: cannot roll an expired segment");
        }
        self.shared.collect_segments();
    }
}

/// The single writer. Feed it from one task (see [`run_writer`]).
pub struct SpoolWriter {
    core: Option<WriterCore>,
}

impl SpoolWriter {
    pub(super) fn new(
        shared: Arc<OpenSpool>,
        end_tx: watch::Sender<Seq>,
        active: Active,
    ) -> SpoolWriter {
        SpoolWriter {
            core: Some(WriterCore {
                shared,
                end_tx,
                active,
                last_sync: Instant::now(),
                unsynced: false,
                last_maintain: Instant::now(),
            }),
        }
    }

    /// Append a group of events with one write and, per the fsync policy,
    /// one fsync; returns once they are durable under `always`. Events that
    /// do not fit under `max_bytes` are dropped and counted, never waited
    /// for. Blocking: call from a dedicated thread or `spawn_blocking`.
    pub fn append_batch_blocking(&mut self, batch: &[Envelope]) -> Result<Appended, SpoolError> {
        let core = self.core.as_mut().ok_or(SpoolError::Poisoned)?;
        let enc = encode(batch, &core.shared.metrics);
        core.write(&enc)
    }

    /// The same as [`append_batch_blocking`](Self::append_batch_blocking),
    /// with the file I/O on tokio's blocking pool; the events are
    /// serialized on the calling task (see [`append_owned`](Self::append_owned)).
    /// Not cancel-safe: await it to the end (a dropped future leaves the
    /// writer `Poisoned`).
    pub async fn append_batch(&mut self, batch: &[Envelope]) -> Result<Appended, SpoolError> {
        let metrics = self
            .core
            .as_ref()
            .ok_or(SpoolError::Poisoned)?
            .shared
            .metrics
            .clone();
        let enc = encode(batch, &metrics);
        self.with_core(move |core| core.write(&enc)).await
    }

    /// [`append_batch`](Self::append_batch) with everything — serializing
    /// (milliseconds for a large group), writing, dropping the events — on
    /// the blocking pool, off the threads that serve the proxy.
    pub async fn append_owned(&mut self, batch: Vec<Envelope>) -> Result<Appended, SpoolError> {
        self.with_core(move |core| {
            let enc = encode(&batch, &core.shared.metrics);
            drop(batch);
            core.write(&enc)
        })
        .await
    }

    /// Append envelopes the producers framed ([`FramedRecord::encode`]): the
    /// writer only copies and writes.
    pub async fn append_frames(
        &mut self,
        frames: Vec<FramedRecord>,
    ) -> Result<Appended, SpoolError> {
        self.with_core(move |core| {
            let mut buf = Vec::with_capacity(frames.iter().map(FramedRecord::len).sum());
            let mut ends = Vec::with_capacity(frames.len());
            for f in frames {
                buf.extend_from_slice(f.as_bytes());
                ends.push(buf.len());
            }
            core.write(&Encoded { buf, ends })
        })
        .await
    }

    /// Idle work; call at least every [`tick_interval`](Self::tick_interval)
    /// when no appends arrive: the deferred `interval` fsync, retention and
    /// segment deletion.
    pub async fn tick(&mut self) -> Result<(), SpoolError> {
        self.with_core(|core| {
            core.maintain();
            Ok(())
        })
        .await
    }

    pub fn tick_interval(&self) -> Duration {
        self.core.as_ref().map_or(Duration::from_secs(1), |c| {
            c.shared.cfg.fsync_interval.min(Duration::from_secs(1))
        })
    }

    /// Sync what is written (unless the policy is `never`) and close.
    pub async fn close(mut self) -> Result<(), SpoolError> {
        self.with_core(|core| {
            if core.policy() != FsyncPolicy::Never {
                core.sync()?;
            }
            Ok(())
        })
        .await
    }

    /// Sequence number after the last record written.
    pub fn end(&self) -> Seq {
        self.core.as_ref().map_or(0, |c| c.active.next)
    }

    async fn with_core<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut WriterCore) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let mut core = self.core.take().ok_or(SpoolError::Poisoned)?;
        let (core, res) = tokio::task::spawn_blocking(move || {
            let r = f(&mut core);
            (core, r)
        })
        .await
        .map_err(|e| SpoolError::Task(e.to_string()))?;
        self.core = Some(core);
        res
    }
}

/// What the writer loop takes from its channel: envelopes (serialized by
/// the writer) or frames (serialized by the producers).
pub trait SpoolItem: Send + Sized + 'static {
    fn append(
        writer: &mut SpoolWriter,
        items: Vec<Self>,
    ) -> BoxFuture<'_, Result<Appended, SpoolError>>;
}

impl SpoolItem for Envelope {
    fn append(
        writer: &mut SpoolWriter,
        items: Vec<Self>,
    ) -> BoxFuture<'_, Result<Appended, SpoolError>> {
        Box::pin(writer.append_owned(items))
    }
}

impl SpoolItem for FramedRecord {
    fn append(
        writer: &mut SpoolWriter,
        items: Vec<Self>,
    ) -> BoxFuture<'_, Result<Appended, SpoolError>> {
        Box::pin(writer.append_frames(items))
    }
}

/// A writer loop for the spool: takes whatever the channel holds (up to
/// `max_group` items) as one group commit, and ticks when idle. Returns
/// when every sender is gone, after a final sync.
pub async fn run_writer<T: SpoolItem>(
    mut writer: SpoolWriter,
    mut rx: mpsc::Receiver<T>,
    max_group: usize,
) -> Result<(), SpoolError> {
    let mut group = Vec::with_capacity(max_group.max(1));
    let tick = writer.tick_interval();
    loop {
        tokio::select! {
            n = rx.recv_many(&mut group, max_group.max(1)) => {
                if n == 0 {
                    break;
                }
                let items = std::mem::replace(&mut group, Vec::with_capacity(max_group.max(1)));
                if let Err(e) = T::append(&mut writer, items).await {
                    tracing::error!(error = %e, events = n, "spool append failed, events dropped");
                    let metrics = writer.core.as_ref().map(|c| c.shared.metrics.clone());
                    if let Some(m) = metrics {
                        m.dropped_many("spool_error", n as u64);
                    }
                    if matches!(e, SpoolError::Poisoned | SpoolError::Task(_)) {
                        return Err(e);
                    }
                }
            }
            _ = tokio::time::sleep(tick) => writer.tick().await?,
        }
    }
    writer.close().await
}
