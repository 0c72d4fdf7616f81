//! Shared delivery machinery: one loop per sink that reads the spool from
//! the sink's cursor, filters (`Sink::accepts`), validates (`Sink::check`),
//! batches by count, bytes and linger, sends with retries, dead-letters what
//! cannot be delivered, and acknowledges the spool in order.
//!
//! Retries: exponential backoff with full jitter, each wait drawn uniformly
//! between `backoff_initial` and `min(backoff_max, backoff_initial * 2^n)`;
//! a `Retry-After` given by the sink is honoured instead (capped at one
//! hour). An event that still fails once touchgate has held it for
//! `max_age` (measured from its `received_at`, the time it entered the
//! spool, so a back-office event that happened days ago gets the same retry
//! budget as a fresh one) goes to the dead-letter file. A batch the sink
//! rejects as invalid goes there whole.
//!
//! Up to `concurrency` batches are in flight; the spool cursor only moves
//! past a batch once every batch before it is done, so a crash redelivers
//! (same `event_id`) rather than loses.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{DeliveryConfig, Sink, SinkError};
use crate::event::{Envelope, rfc3339_millis};
use crate::metrics::{Metrics, ReasonLabel};
use crate::pipeline::spool::{RawEvent, Record, Seq, SpoolError, SpoolReader, file_safe};

/// After shutdown is signalled, batches already in flight get this long to
/// finish their current attempt; none is retried.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A `Retry-After` longer than this is treated as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The dead-letter file of a sink: `delivery.dead_letter` when set, else
/// `<spool.dir>/dead-letter/<sink>.jsonl`.
pub fn dead_letter_path(cfg: &DeliveryConfig, spool_dir: &Path, sink: &str) -> PathBuf {
    cfg.dead_letter.clone().unwrap_or_else(|| {
        spool_dir
            .join("dead-letter")
            .join(format!("{}.jsonl", file_safe(sink)))
    })
}

/// Problems with a `[sink.delivery]` table, as `(key, message)` with keys
/// relative to the sink table (for `SinkConfig::validate`).
pub fn validate(cfg: &DeliveryConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |k: &str, m: &str| out.push((format!("delivery.{k}"), m.to_string()));
    if cfg.max_events == 0 {
        bad("max_events", "must be at least 1");
    }
    if cfg.max_bytes == 0 {
        bad("max_bytes", "must be at least 1");
    }
    if cfg.concurrency == 0 {
        bad("concurrency", "must be at least 1");
    }
    if cfg.backoff_initial.is_zero() {
        bad("backoff_initial", "must be more than 0");
    }
    if cfg.backoff_max < cfg.backoff_initial {
        bad("backoff_max", "must be at least backoff_initial");
    }
    if cfg.max_age.is_zero() {
        bad("max_age", "must be more than 0");
    }
    out
}

/// The wait before retry number `attempt` (0 for the first retry).
pub fn backoff(cfg: &DeliveryConfig, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(d) = retry_after {
        return d.min(MAX_RETRY_AFTER);
    }
    let initial = cfg.backoff_initial;
    let cap = initial
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(cfg.backoff_max)
        .min(cfg.backoff_max)
        .max(initial);
    if cap <= initial {
        return initial;
    }
    let nanos = rand::random_range(initial.as_nanos() as u64..=cap.as_nanos() as u64);
    Duration::from_nanos(nanos)
}

/// The dead-letter file: one JSON object per line with the event (never
/// the ad-platform match keys), the sink, the reason and the time.
///
/// Bounded by `max_bytes`: a sink that rejects everything (a wrong
/// endpoint, an expired token) must not fill the disk under the spool.
/// Whole lines are kept or dropped, so the file stays valid JSON lines.
pub struct DeadLetter {
    path: PathBuf,
    sink: String,
    max_bytes: u64,
    lock: tokio::sync::Mutex<()>,
}

/// What [`DeadLetter::write`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLettered {
    pub written: usize,
    /// Left out because the file reached its bound.
    pub dropped: usize,
}

impl DeadLetter {
    pub fn new(path: PathBuf, sink: &str, max_bytes: u64) -> DeadLetter {
        DeadLetter {
            path,
            sink: sink.to_string(),
            max_bytes,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append the events that fit under the bound and fsync: once this
    /// returns, the written ones are kept.
    pub async fn write<T: BatchItem>(
        &self,
        events: &[T],
        reason: &str,
    ) -> std::io::Result<DeadLettered> {
        let time = rfc3339_millis::format(OffsetDateTime::now_utc());
        let prefix = format!(
            "{{\"time\":{},\"sink\":{},\"reason\":{},\"event\":",
            serde_json::to_string(&time)?,
            serde_json::to_string(&self.sink)?,
            serde_json::to_string(reason)?
        );
        let mut buf = Vec::new();
        let mut ends = Vec::with_capacity(events.len());
        for e in events {
            buf.extend_from_slice(prefix.as_bytes());
            e.write_json(&mut buf)?;
            buf.extend_from_slice(b"}\n");
            ends.push(buf.len());
        }
        // Held across the size check and the write, so two batches cannot
        // both fit the same room.
        let _guard = self.lock.lock().await;
        let (path, max_bytes) = (self.path.clone(), self.max_bytes);
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            let room = max_bytes.saturating_sub(f.metadata()?.len());
            let written = ends.partition_point(|&end| end as u64 <= room);
            if written > 0 {
                f.write_all(&buf[..ends[written - 1]])?;
                f.sync_data()?;
            }
            Ok(DeadLettered {
                written,
                dropped: ends.len() - written,
            })
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// What a batch holds: parsed envelopes for most sinks, the spooled JSON
/// for sinks that forward it unchanged (`Sink::raw`).
pub trait BatchItem: Send + Sync + Sized + 'static {
    /// When the event happened: the latency histogram counts from here.
    fn occurred_at(&self) -> OffsetDateTime;
    /// When touchgate took the event in: `max_age` counts from here.
    fn received_at(&self) -> OffsetDateTime;
    /// The event's JSON (never the ad-platform match keys).
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()>;
    fn send<'a>(sink: &'a dyn Sink, batch: &'a [Self]) -> BoxFuture<'a, Result<(), SinkError>>;
    /// What the delivery loop does with a spool record.
    fn admit(rec: &Record, sink: &dyn Sink) -> Admit<Self>;
}

pub enum Admit<T> {
    Take(T),
    /// Not wanted by the sink: acknowledged without sending.
    Skip,
    /// Refused by `Sink::check`: to the dead-letter file.
    Invalid(T, String),
    /// The record does not parse as an event.
    Corrupt(String),
}

impl BatchItem for Envelope {
    fn occurred_at(&self) -> OffsetDateTime {
        self.event.occurred_at
    }
    fn received_at(&self) -> OffsetDateTime {
        self.event.received_at
    }
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, &self.event)
    }
    fn send<'a>(sink: &'a dyn Sink, batch: &'a [Self]) -> BoxFuture<'a, Result<(), SinkError>> {
        sink.send(batch)
    }
    fn admit(rec: &Record, sink: &dyn Sink) -> Admit<Self> {
        let env = match rec.decode() {
            Ok(e) => e,
            Err(e) => return Admit::Corrupt(e.to_string()),
        };
        if !sink.accepts(&env) {
            return Admit::Skip;
        }
        match sink.check(&env) {
            Ok(()) => Admit::Take(env),
            Err(reason) => Admit::Invalid(env, reason),
        }
    }
}

impl BatchItem for RawEvent {
    fn occurred_at(&self) -> OffsetDateTime {
        self.occurred_at
    }
    fn received_at(&self) -> OffsetDateTime {
        self.received_at
    }
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(&self.json);
        Ok(())
    }
    fn send<'a>(sink: &'a dyn Sink, batch: &'a [Self]) -> BoxFuture<'a, Result<(), SinkError>> {
        sink.send_raw(batch)
    }
    fn admit(rec: &Record, _sink: &dyn Sink) -> Admit<Self> {
        Admit::Take(rec.raw())
    }
}

/// Everything one batch future needs, shared by all of a sink's batches.
struct Ctx {
    sink: Arc<dyn Sink>,
    cfg: DeliveryConfig,
    dead: DeadLetter,
    delivered: Counter,
    failures: Counter,
    dead_total: Counter,
    dead_full: Counter,
    latency: Histogram,
    corrupt: Counter,
    stop: CancellationToken,
}

impl Ctx {
    /// Write to the dead-letter file, retrying with backoff while the disk
    /// refuses: events must not be acknowledged before they are kept.
    /// `false` when shutdown interrupted it.
    async fn dead_letter<T: BatchItem>(&self, events: &[T], reason: &str) -> bool {
        let mut attempt = 0;
        loop {
            match self.dead.write(events, reason).await {
                Ok(done) => {
                    if done.written > 0 {
                        self.dead_total.inc_by(done.written as u64);
                        tracing::warn!(sink = %self.sink.name(), events = done.written, reason, "events written to the dead-letter file");
                    }
                    if done.dropped > 0 {
                        self.dead_full.inc_by(done.dropped as u64);
                        tracing::error!(
                            sink = %self.sink.name(),
                            path = %self.dead.path.display(),
                            events = done.dropped,
                            max_bytes = self.dead.max_bytes,
                            reason,
                            "dead-letter file full (delivery.dead_letter_max_bytes): events dropped; inspect and move the file away"
                        );
                    }
                    return true;
                }
                Err(e) => {
                    tracing::error!(sink = %self.sink.name(), path = %self.dead.path.display(), error = %e, "cannot write the dead-letter file");
                    let wait = backoff(&self.cfg, attempt, None);
                    attempt += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.stop.cancelled() => return false,
                    }
                }
            }
        }
    }

    /// Deliver one batch until it is acknowledged, rejected or given up.
    /// `true` when the batch is done (its events may be acknowledged in the
    /// spool), `false` when shutdown interrupted it.
    async fn deliver<T: BatchItem>(self: Arc<Self>, mut events: Vec<T>) -> bool {
        let mut attempt = 0u32;
        loop {
            match T::send(&*self.sink, &events).await {
                Ok(()) => {
                    self.delivered.inc_by(events.len() as u64);
                    let now = OffsetDateTime::now_utc();
                    for e in &events {
                        let age = (now - e.occurred_at()).as_seconds_f64();
                        self.latency.observe(age.max(0.0));
                    }
                    return true;
                }
                Err(SinkError::Rejected { message }) => {
                    self.failures.inc();
                    return self
                        .dead_letter(&events, &format!("rejected: {message}"))
                        .await;
                }
                Err(SinkError::Partial { rejected }) => {
                    self.failures.inc();
                    let mut bad = vec![false; events.len()];
                    let mut kept = true;
                    for (i, reason) in &rejected {
                        let Some(event) = events.get(*i) else {
                            continue;
                        };
                        bad[*i] = true;
                        kept &= self
                            .dead_letter(
                                std::slice::from_ref(event),
                                &format!("rejected: {reason}"),
                            )
                            .await;
                    }
                    let now = OffsetDateTime::now_utc();
                    let delivered = bad.iter().filter(|b| !**b).count();
                    self.delivered.inc_by(delivered as u64);
                    for (e, _) in events.iter().zip(&bad).filter(|(_, b)| !**b) {
                        let age = (now - e.occurred_at()).as_seconds_f64();
                        self.latency.observe(age.max(0.0));
                    }
                    return kept;
                }
                Err(SinkError::Retryable {
                    message,
                    retry_after,
                }) => {
                    self.failures.inc();
                    let now = OffsetDateTime::now_utc();
                    let max_age = self.cfg.max_age;
                    let (expired, keep): (Vec<T>, Vec<T>) = events
                        .into_iter()
                        .partition(|e| (now - e.received_at()) >= max_age);
                    if !keep.is_empty() {
                        tracing::warn!(sink = %self.sink.name(), events = keep.len(), attempt, error = %message, "delivery failed, will retry");
                    }
                    if !expired.is_empty() {
                        let age = humantime::format_duration(max_age);
                        tracing::warn!(
                            sink = %self.sink.name(),
                            events = expired.len(),
                            attempt,
                            error = %message,
                            max_age = %age,
                            "delivery failed; {} events older than max_age go to the dead-letter file",
                            expired.len()
                        );
                        let reason = format!("gave up after max_age {age}: {message}");
                        if !self.dead_letter(&expired, &reason).await {
                            return false;
                        }
                    }
                    events = keep;
                    if events.is_empty() {
                        return true;
                    }
                    if self.stop.is_cancelled() {
                        return false;
                    }
                    let wait = backoff(&self.cfg, attempt, retry_after);
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.stop.cancelled() => return false,
                    }
                }
            }
        }
    }
}

/// A range of spool records: those below `through` once it is done.
struct Unit {
    id: u64,
    through: Seq,
    done: bool,
}

struct OpenBatch<T> {
    events: Vec<T>,
    bytes: usize,
    /// When the first event entered (linger runs from here).
    started: Option<Instant>,
    /// Spool records below this belong to the batch (filtered ones too).
    through: Seq,
}

type Flight = Pin<Box<dyn std::future::Future<Output = (u64, bool)> + Send>>;

/// Run one sink until `shutdown`: read its spool reader, deliver, and
/// acknowledge in order. On shutdown, the open batch is sent once, batches
/// in flight get [`SHUTDOWN_GRACE`] to finish their current attempt, and
/// the cursor is persisted. Returns an error only when the spool itself
/// fails.
pub async fn run_sink(
    sink: Arc<dyn Sink>,
    reader: SpoolReader,
    cfg: DeliveryConfig,
    dead_letter: PathBuf,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), SpoolError> {
    let label = metrics.sink(sink.name());
    let raw = sink.raw();
    // Its own statement: a `Family::get_or_create` guard lives to the end
    // of the statement, and a second call creating a label in the same
    // family while it is held waits for the write lock forever.
    let dead_full = metrics
        .events_dropped_total
        .get_or_create(&ReasonLabel {
            reason: "dead_letter_full".into(),
        })
        .clone();
    let ctx = Arc::new(Ctx {
        dead: DeadLetter::new(dead_letter, sink.name(), cfg.dead_letter_max_bytes),
        delivered: metrics.sink_delivered_total.get_or_create(&label).clone(),
        failures: metrics.sink_failures_total.get_or_create(&label).clone(),
        dead_total: metrics.sink_dead_letter_total.get_or_create(&label).clone(),
        dead_full,
        latency: metrics.event_delivery_seconds.get_or_create(&label).clone(),
        corrupt: metrics
            .events_dropped_total
            .get_or_create(&ReasonLabel {
                reason: "spool_corrupt".into(),
            })
            .clone(),
        sink,
        cfg,
        stop: shutdown.clone(),
    });
    if raw {
        run::<RawEvent>(ctx, reader, shutdown).await
    } else {
        run::<Envelope>(ctx, reader, shutdown).await
    }
}

async fn run<T: BatchItem>(
    ctx: Arc<Ctx>,
    mut reader: SpoolReader,
    shutdown: CancellationToken,
) -> Result<(), SpoolError> {
    let max_events = ctx.cfg.max_events.max(1);
    let max_bytes = ctx.cfg.max_bytes.max(1);
    let concurrency = ctx.cfg.concurrency.max(1);
    let linger = ctx.cfg.linger;

    let mut units: VecDeque<Unit> = VecDeque::new();
    let mut next_id = 0u64;
    let mut open: Option<OpenBatch<T>> = None;
    // A closed batch waiting for a slot; reading pauses meanwhile.
    let mut ready: Option<(u64, Vec<T>)> = None;
    let mut flights: FuturesUnordered<Flight> = FuturesUnordered::new();

    let close = |open: &mut Option<OpenBatch<T>>,
                 units: &mut VecDeque<Unit>,
                 ready: &mut Option<(u64, Vec<T>)>,
                 next_id: &mut u64| {
        // Never replace a batch that waits for a slot.
        if ready.is_some() && open.as_ref().is_some_and(|b| !b.events.is_empty()) {
            return;
        }
        let Some(b) = open.take() else { return };
        let id = *next_id;
        *next_id += 1;
        let empty = b.events.is_empty();
        units.push_back(Unit {
            id,
            through: b.through,
            done: empty,
        });
        if !empty {
            *ready = Some((id, b.events));
        }
    };

    enum Wake {
        Stop,
        Flight(u64, bool),
        Data,
        Linger,
        WriterGone,
    }

    loop {
        // Hand ready batches to free slots.
        if flights.len() < concurrency
            && let Some((id, events)) = ready.take()
        {
            let c = ctx.clone();
            flights.push(Box::pin(async move { (id, c.deliver(events).await) }));
        }
        // Acknowledge what is done, in order.
        let mut through = None;
        while units.front().is_some_and(|u| u.done) {
            through = units.pop_front().map(|u| u.through);
        }
        if let Some(t) = through
            && let Err(e) = reader.ack(t).await
        {
            // The cursor moved in memory; persisting it is retried on the
            // next ack. A full disk must not stop delivery, which is what
            // frees the disk.
            tracing::warn!(sink = %ctx.sink.name(), error = %e, "spool cursor not persisted; will retry");
        }

        // Read while there is room for another batch.
        if ready.is_none() && reader.available() {
            let (have_events, have_bytes) =
                open.as_ref().map_or((0, 0), |b| (b.events.len(), b.bytes));
            let room_bytes = if have_events == 0 {
                usize::MAX
            } else {
                max_bytes.saturating_sub(have_bytes)
            };
            let before = reader.position();
            let records = reader
                .read(max_events - have_events, room_bytes.max(1))
                .await?;
            if records.is_empty() {
                if have_events == 0 && reader.position() == before {
                    // Records are announced but cannot be read (a segment
                    // changed under us; the spool logs it): try again now
                    // and then instead of spinning.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                // The next record does not fit into the open batch.
                close(&mut open, &mut units, &mut ready, &mut next_id);
                continue;
            }
            // Parsing a batch takes milliseconds of CPU: off the threads
            // that serve the proxy.
            let sink = ctx.sink.clone();
            let admitted = tokio::task::spawn_blocking(move || {
                records
                    .into_iter()
                    .map(|rec| (rec.seq, rec.bytes, T::admit(&rec, &*sink)))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| SpoolError::Task(e.to_string()))?;
            for (seq, bytes, admit) in admitted {
                let b = open.get_or_insert_with(|| OpenBatch {
                    events: Vec::new(),
                    bytes: 0,
                    started: None,
                    through: seq,
                });
                b.through = seq + 1;
                match admit {
                    Admit::Take(item) => {
                        b.events.push(item);
                        b.bytes += bytes;
                        b.started.get_or_insert_with(Instant::now);
                    }
                    Admit::Skip => {}
                    Admit::Invalid(item, reason) => {
                        if !ctx
                            .dead_letter(std::slice::from_ref(&item), &format!("invalid: {reason}"))
                            .await
                        {
                            // Shutdown before it was kept: not part of the batch.
                            b.through = seq;
                            break;
                        }
                    }
                    Admit::Corrupt(error) => {
                        tracing::error!(sink = %ctx.sink.name(), seq, %error, "spool record is not an event, skipped");
                        ctx.corrupt.inc();
                    }
                }
            }
            if open
                .as_ref()
                .is_some_and(|b| b.events.len() >= max_events || b.bytes >= max_bytes)
            {
                close(&mut open, &mut units, &mut ready, &mut next_id);
            }
            if shutdown.is_cancelled() {
                break;
            }
            continue;
        }
        // Nothing more to read now: a range holding no event is done at once.
        if open.as_ref().is_some_and(|b| b.events.is_empty()) {
            close(&mut open, &mut units, &mut ready, &mut next_id);
            continue;
        }

        let deadline = open.as_ref().and_then(|b| b.started).map(|s| s + linger);
        let wake = tokio::select! {
            biased;
            _ = shutdown.cancelled() => Wake::Stop,
            Some((id, ok)) = flights.next(), if !flights.is_empty() => Wake::Flight(id, ok),
            alive = reader.wait(), if ready.is_none() => if alive { Wake::Data } else { Wake::WriterGone },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && ready.is_none() => Wake::Linger,
        };
        match wake {
            Wake::Stop => break,
            Wake::Flight(id, ok) => mark(&mut units, id, ok),
            Wake::Data => {}
            Wake::Linger => close(&mut open, &mut units, &mut ready, &mut next_id),
            Wake::WriterGone => {
                // No more records will come; keep delivering what is open
                // until shutdown.
                if open.as_ref().is_some_and(|b| !b.events.is_empty()) {
                    close(&mut open, &mut units, &mut ready, &mut next_id);
                } else if flights.is_empty() && ready.is_none() {
                    shutdown.cancelled().await;
                    break;
                } else if let Some((id, ok)) = flights.next().await {
                    mark(&mut units, id, ok);
                }
            }
        }
    }

    // Shutdown: send what is ready and the open batch once (while there
    // are slots), let flights finish their attempt.
    for _ in 0..2 {
        if flights.len() < concurrency
            && let Some((id, events)) = ready.take()
        {
            let c = ctx.clone();
            flights.push(Box::pin(async move { (id, c.deliver(events).await) }));
        }
        close(&mut open, &mut units, &mut ready, &mut next_id);
    }
    let drain = async {
        while let Some((id, ok)) = flights.next().await {
            mark(&mut units, id, ok);
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!(sink = %ctx.sink.name(), "shutdown: batches still in flight are left for the next start");
    }
    let mut through = None;
    while units.front().is_some_and(|u| u.done) {
        through = units.pop_front().map(|u| u.through);
    }
    if let Some(t) = through {
        reader.ack(t).await?;
    }
    reader.flush().await
}

fn mark(units: &mut VecDeque<Unit>, id: u64, ok: bool) {
    if !ok {
        // Interrupted by shutdown: stays unacknowledged, sent again later.
        return;
    }
    if let Some(u) = units.iter_mut().find(|u| u.id == id) {
        u.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_between_initial_and_cap() {
        let cfg = DeliveryConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ..DeliveryConfig::default()
        };
        for attempt in 0..40 {
            let cap =
                Duration::from_millis(100 * (1u64 << attempt.min(20))).min(Duration::from_secs(2));
            for _ in 0..20 {
                let d = backoff(&cfg, attempt, None);
                assert!(
                    d >= Duration::from_millis(100) && d <= cap,
                    "attempt {attempt}: {d:?}"
                );
            }
        }
        assert_eq!(
            backoff(&cfg, 3, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            backoff(&cfg, 0, Some(Duration::from_secs(86_400))),
            MAX_RETRY_AFTER
        );
    }

    #[tokio::test]
    async fn dead_letter_file_is_bounded_in_whole_lines() {
        use crate::event::{Event, Origin};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl").join("s.jsonl");
        let t = OffsetDateTime::now_utc();
        let events: Vec<Envelope> = (0..3)
            .map(|i| {
                Envelope::new(Event::new(
                    format!("{i:032x}"),
                    "lead".into(),
                    Origin::Proxy,
                    t,
                    t,
                ))
            })
            .collect();
        // Room for two lines of this size, not three.
        let probe = DeadLetter::new(dir.path().join("probe.jsonl"), "s", u64::MAX);
        probe.write(&events[..1], "rejected").await.unwrap();
        let line = std::fs::metadata(dir.path().join("probe.jsonl"))
            .unwrap()
            .len();
        let dl = DeadLetter::new(path.clone(), "s", 2 * line + line / 2);

        let done = dl.write(&events, "rejected").await.unwrap();
        assert_eq!(
            done,
            DeadLettered {
                written: 2,
                dropped: 1
            }
        );
        let done = dl.write(&events[2..], "rejected").await.unwrap();
        assert_eq!(
            done,
            DeadLettered {
                written: 0,
                dropped: 1
            }
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["event"]["event_id"], format!("{:032x}", 1));
        assert_eq!(lines[1]["reason"], "rejected");
    }

    /// Answers `Retryable` to the first `fail` batches, then accepts; keeps
    /// the event ids of every batch it was given.
    struct Flaky {
        fail: usize,
        calls: std::sync::Mutex<Vec<Vec<String>>>,
    }

    #[async_trait::async_trait]
    impl Sink for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        async fn send(&self, batch: &[Envelope]) -> Result<(), SinkError> {
            let mut calls = self.calls.lock().unwrap();
            calls.push(batch.iter().map(|e| e.event.event_id.clone()).collect());
            if calls.len() <= self.fail {
                Err(SinkError::Retryable {
                    message: "collector down".into(),
                    retry_after: None,
                })
            } else {
                Ok(())
            }
        }
    }

    #[derive(Clone, Default)]
    struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Logs {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn lines(&self) -> Vec<String> {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    fn event_at(id: &str, occurred: OffsetDateTime, received: OffsetDateTime) -> Envelope {
        use crate::event::{Event, Origin};
        Envelope::new(Event::new(
            id.into(),
            "order_paid".into(),
            Origin::Ingest,
            occurred,
            received,
        ))
    }

    /// Run one batch through `Ctx::deliver` against `sink`, with `max_age`
    /// of an hour; returns what deliver said, the dead-lettered ids and the
    /// log lines.
    async fn deliver_once(
        sink: Arc<Flaky>,
        events: Vec<Envelope>,
    ) -> (bool, Vec<String>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let label = metrics.sink("flaky");
        let cfg = DeliveryConfig {
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(2),
            max_age: Duration::from_secs(3600),
            ..DeliveryConfig::default()
        };
        let dl = dir.path().join("dl.jsonl");
        let ctx = Arc::new(Ctx {
            sink: sink.clone(),
            dead: DeadLetter::new(dl.clone(), "flaky", u64::MAX),
            delivered: metrics.sink_delivered_total.get_or_create(&label).clone(),
            failures: metrics.sink_failures_total.get_or_create(&label).clone(),
            dead_total: metrics.sink_dead_letter_total.get_or_create(&label).clone(),
            dead_full: Counter::default(),
            latency: metrics.event_delivery_seconds.get_or_create(&label).clone(),
            corrupt: Counter::default(),
            cfg,
            stop: CancellationToken::new(),
        });
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let done = {
            let _guard = tracing::subscriber::set_default(subscriber);
            ctx.deliver(events).await
        };
        let dead = std::fs::read_to_string(&dl)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["event"]["event_id"].as_str().unwrap().to_string()
            })
            .collect();
        (done, dead, logs.lines())
    }

    #[tokio::test]
    async fn max_age_counts_from_received_at_and_the_log_says_what_happens() {
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let events = vec![
            // Happened a month ago, taken in now (back-office ingest).
            event_at("backfill", now - 30 * day, now),
            // Taken in two hours ago: past max_age.
            event_at(
                "stale",
                now - time::Duration::hours(2),
                now - time::Duration::hours(2),
            ),
            event_at("fresh", now, now),
        ];
        let sink = Arc::new(Flaky {
            fail: 1,
            calls: Default::default(),
        });
        let (done, dead, logs) = deliver_once(sink.clone(), events).await;
        assert!(done);
        assert_eq!(dead, ["stale"]);
        assert_eq!(
            *sink.calls.lock().unwrap(),
            [
                vec!["backfill", "stale", "fresh"],
                vec!["backfill", "fresh"]
            ]
        );
        let retry: Vec<&String> = logs.iter().filter(|l| l.contains("will retry")).collect();
        assert_eq!(retry.len(), 1, "{logs:#?}");
        assert!(retry[0].contains("events=2"), "{}", retry[0]);
        let expired: Vec<&String> = logs
            .iter()
            .filter(|l| {
                l.contains(
                    "delivery failed; 1 events older than max_age go to the dead-letter file",
                )
            })
            .collect();
        assert_eq!(expired.len(), 1, "{logs:#?}");
        assert!(expired[0].contains("events=1"), "{}", expired[0]);
    }

    #[tokio::test]
    async fn a_failed_batch_that_all_expires_is_not_said_to_be_retried() {
        let now = OffsetDateTime::now_utc();
        let then = now - time::Duration::hours(3);
        let events = vec![event_at("a", then, then), event_at("b", now, then)];
        let sink = Arc::new(Flaky {
            fail: usize::MAX,
            calls: Default::default(),
        });
        let (done, dead, logs) = deliver_once(sink.clone(), events).await;
        assert!(done, "dead-lettered events are done");
        assert_eq!(dead, ["a", "b"]);
        assert_eq!(sink.calls.lock().unwrap().len(), 1, "no retry");
        assert!(!logs.iter().any(|l| l.contains("will retry")), "{logs:#?}");
        assert!(
            logs.iter()
                .any(|l| l.contains("2 events older than max_age go to the dead-letter file")),
            "{logs:#?}"
        );
    }

    #[test]
    fn dead_letter_path_defaults_under_the_spool() {
        let cfg = DeliveryConfig::default();
        assert_eq!(
            dead_letter_path(&cfg, Path::new("/s"), "my sink"),
            PathBuf::from("/s/dead-letter/my%20sink.jsonl")
        );
        let cfg = DeliveryConfig {
            dead_letter: Some("/x/dl.jsonl".into()),
            ..cfg
        };
        assert_eq!(
            dead_letter_path(&cfg, Path::new("/s"), "a"),
            PathBuf::from("/x/dl.jsonl")
        );
    }

    #[test]
    fn validation_names_each_bad_key() {
        let cfg = DeliveryConfig {
            max_events: 0,
            concurrency: 0,
            backoff_max: Duration::from_millis(1),
            ..DeliveryConfig::default()
        };
        let keys: Vec<String> = validate(&cfg).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "delivery.max_events",
                "delivery.concurrency",
                "delivery.backoff_max"
            ]
        );
    }
}
