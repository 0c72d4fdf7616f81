//! Between the request path and the sinks: a bounded queue (the request
//! path only ever `try_send`s), the dedupe stage, and the durable spool.

pub mod dedupe;
pub mod spool;

use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use crate::event::Envelope;
use crate::metrics::Metrics;

/// What travels through the queue.
// The large variant is the common one; boxing it would add an allocation
// per event to spare the rare ingest batch a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub enum QueueItem {
    /// From the request path: emit and forget.
    Event(Envelope),
    /// From ingest, which answers per line: the stage replies with the
    /// dedupe verdict of each event once they are appended.
    Checked {
        events: Vec<Envelope>,
        reply: oneshot::Sender<Vec<Seen>>,
    },
}

/// The handle producers hold.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::Sender<QueueItem>,
    metrics: Arc<Metrics>,
}

impl EventQueue {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> (EventQueue, mpsc::Receiver<QueueItem>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (EventQueue { tx, metrics }, rx)
    }

    /// Never waits: a full queue drops the event and counts it.
    pub fn emit(&self, envelope: Envelope) {
        match self.tx.try_send(QueueItem::Event(envelope)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.metrics.dropped("queue_full"),
            Err(mpsc::error::TrySendError::Closed(_)) => self.metrics.dropped("shutdown"),
        }
    }

    /// Waits for room (ingest is not on the proxy's request path), then for
    /// the verdicts. `None` if the pipeline is shutting down.
    pub async fn submit_checked(&self, events: Vec<Envelope>) -> Option<Vec<Seen>> {
        let (reply, verdicts) = oneshot::channel();
        self.tx
            .send(QueueItem::Checked { events, reply })
            .await
            .ok()?;
        verdicts.await.ok()
    }
}

use crate::metrics::{EventLabels, EventNameLabel};
use dedupe::{Dedupe, Seen};
use spool::SpoolWriter;

/// Where the pipeline stage puts what survived dedupe: the spool in a
/// running process; anything durable in the same order.
#[async_trait::async_trait]
pub trait Output: Send {
    /// Append a batch; `Err` means the batch is lost (counted by the stage).
    async fn append(&mut self, batch: Vec<Envelope>) -> Result<(), String>;
    /// Called when idle for `tick_interval` (interval fsync).
    async fn tick(&mut self) -> Result<(), String>;
    fn tick_interval(&self) -> std::time::Duration;
    /// After the last batch: make everything durable.
    async fn close(self: Box<Self>) -> Result<(), String>;
}

/// The pipeline's output: the spool, appended with group commit.
pub struct SpoolOutput {
    writer: SpoolWriter,
}

impl SpoolOutput {
    pub fn new(writer: SpoolWriter) -> SpoolOutput {
        SpoolOutput { writer }
    }
}

#[async_trait::async_trait]
impl Output for SpoolOutput {
    async fn append(&mut self, batch: Vec<Envelope>) -> Result<(), String> {
        // Serialized on the blocking pool with the write, off the runtime
        // threads that serve the proxy. Framing the two halves of a large
        // batch on two threads measures no faster
        // (docs/performance.md, "Delivery").
        self.writer
            .append_owned(batch)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn tick(&mut self) -> Result<(), String> {
        self.writer.tick().await.map_err(|e| e.to_string())
    }

    fn tick_interval(&self) -> std::time::Duration {
        self.writer.tick_interval()
    }

    async fn close(self: Box<Self>) -> Result<(), String> {
        self.writer.close().await.map_err(|e| e.to_string())
    }
}

/// The stage between the queue and the spool: dedupe in batches (one
/// Redis round trip per batch), count what is emitted, append. Ends when
/// every queue handle is dropped and the queue is empty.
pub async fn run(
    mut rx: mpsc::Receiver<QueueItem>,
    mut dedupe: Dedupe,
    mut out: Box<dyn Output>,
    metrics: Arc<Metrics>,
) {
    const BATCH: usize = 512;
    const LINGER: std::time::Duration = std::time::Duration::from_millis(2);
    let mut items: Vec<QueueItem> = Vec::with_capacity(BATCH);
    let tick = out.tick_interval();
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut items, BATCH) => n,
            _ = tokio::time::sleep(tick) => {
                if let Err(e) = out.tick().await {
                    tracing::warn!(error = %e, "spool sync failed");
                }
                continue;
            }
        };
        if received == 0 {
            break;
        }
        if items.len() < BATCH {
            // Under load, events arrive one by one from many request
            // tasks; waiting a moment lets one dedupe check, one spool
            // append and one sink wake-up serve many of them, instead of
            // a thread hand-off per event. Nobody waits on an event's
            // delivery by the millisecond.
            tokio::time::sleep(LINGER).await;
            while items.len() < BATCH {
                match rx.try_recv() {
                    Ok(item) => items.push(item),
                    Err(_) => break,
                }
            }
        }
        let mut batch: Vec<Envelope> = Vec::with_capacity(items.len());
        // (index of the first event of a checked group, its length, reply)
        let mut replies = Vec::new();
        for item in items.drain(..) {
            match item {
                QueueItem::Event(e) => batch.push(e),
                QueueItem::Checked { events, reply } => {
                    replies.push((batch.len(), events.len(), reply));
                    batch.extend(events);
                }
            }
        }
        let ids: Vec<&str> = batch.iter().map(|e| e.event.event_id.as_str()).collect();
        let outcome = dedupe.check(&ids).await;
        drop(ids);
        if outcome.fell_back {
            metrics.dedupe_fallback_total.inc();
        }
        let verdicts: Vec<_> = replies
            .into_iter()
            .map(|(start, len, reply)| (reply, outcome.seen[start..start + len].to_vec()))
            .collect();
        count(&batch, &outcome.seen, &metrics);
        let fresh: Vec<Envelope> = batch
            .into_iter()
            .zip(outcome.seen)
            .filter(|(_, seen)| *seen == Seen::New)
            .map(|(envelope, _)| envelope)
            .collect();
        // Verdicts go out once the events are durable; on a failed append
        // the replies are dropped and ingest answers 503.
        let lost = fresh.len();
        let appended = fresh.is_empty() || {
            let result = out.append(fresh).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, lost, "events could not be appended to the spool");
                metrics
                    .events_dropped_total
                    .get_or_create(&crate::metrics::ReasonLabel {
                        reason: "spool_error".into(),
                    })
                    .inc_by(lost as u64);
            }
            result.is_ok()
        };
        if appended {
            for (reply, seen) in verdicts {
                let _ = reply.send(seen);
            }
        }
    }
    if let Err(e) = out.close().await {
        tracing::error!(error = %e, "spool close failed");
    }
}

/// Counts a batch's verdicts with one metric update per distinct label set
/// rather than per event: the labels are owned strings, and building them
/// for every event is most of the stage's allocations.
fn count(batch: &[Envelope], seen: &[Seen], metrics: &Metrics) {
    let mut emitted: Vec<((&str, &str, &'static str), u64)> = Vec::new();
    let mut duplicates: Vec<(&str, u64)> = Vec::new();
    for (envelope, seen) in batch.iter().zip(seen) {
        let e = &envelope.event;
        match seen {
            Seen::New => {
                let key = (e.event_name.as_str(), e.channel(), e.origin.as_str());
                match emitted.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, n)) => *n += 1,
                    None => emitted.push((key, 1)),
                }
            }
            Seen::Duplicate => match duplicates.iter_mut().find(|(k, _)| *k == e.event_name) {
                Some((_, n)) => *n += 1,
                None => duplicates.push((&e.event_name, 1)),
            },
        }
    }
    for ((event_name, channel, origin), n) in emitted {
        metrics
            .events_total
            .get_or_create(&EventLabels {
                event_name: event_name.to_string(),
                channel: channel.to_string(),
                origin: origin.to_string(),
            })
            .inc_by(n);
    }
    for (event_name, n) in duplicates {
        metrics
            .events_duplicate_total
            .get_or_create(&EventNameLabel {
                event_name: event_name.to_string(),
            })
            .inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Origin, Touch};

    fn envelope(name: &str, channel: Option<&str>, origin: Origin) -> Envelope {
        let t = time::OffsetDateTime::UNIX_EPOCH;
        let mut e = Event::new(String::new(), name.into(), origin, t, t);
        e.touch = channel.map(|c| Touch {
            channel: c.into(),
            ..Touch::default()
        });
        Envelope::new(e)
    }

    #[test]
    fn counts_each_label_set_of_a_batch() {
        let metrics = Metrics::new();
        let batch = [
            envelope("landing", Some("Paid Search"), Origin::Proxy),
            envelope("landing", Some("Paid Search"), Origin::Proxy),
            envelope("landing", Some("Email"), Origin::Proxy),
            envelope("landing", None, Origin::Proxy),
            envelope("signup_submitted", None, Origin::Proxy),
            envelope("signup_submitted", None, Origin::Proxy),
            envelope("landing", Some("Paid Search"), Origin::Proxy),
        ];
        let seen = [
            Seen::New,
            Seen::New,
            Seen::New,
            Seen::New,
            Seen::New,
            Seen::Duplicate,
            Seen::Duplicate,
        ];
        count(&batch, &seen, &metrics);
        count(&batch[..1], &seen[..1], &metrics);
        let text = metrics.encode();
        for line in [
            r#"touchgate_events_total{event_name="landing",channel="Paid Search",origin="proxy"} 3"#,
            r#"touchgate_events_total{event_name="landing",channel="Email",origin="proxy"} 1"#,
            r#"touchgate_events_total{event_name="landing",channel="Direct",origin="proxy"} 1"#,
            r#"touchgate_events_total{event_name="signup_submitted",channel="Direct",origin="proxy"} 1"#,
            r#"touchgate_events_duplicate_total{event_name="signup_submitted"} 1"#,
            r#"touchgate_events_duplicate_total{event_name="landing"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
