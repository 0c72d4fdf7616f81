//! Sinks: where events go after the spool. One trait, one module per sink;
//! batching, retries, concurrency and dead-lettering are shared machinery
//! (`delivery`), so each sink only says how to send one batch.

use async_trait::async_trait;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

use crate::event::Envelope;
pub use crate::pipeline::spool::RawEvent;

pub mod delivery;
pub mod file;
pub mod ga4_mp;
pub mod http;
pub mod kafka;
pub mod meta_capi;
pub mod postgres;

/// One `[[sink]]` table; `type` picks the variant.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    File(file::FileSinkConfig),
    Http(http::HttpSinkConfig),
    Kafka(kafka::KafkaSinkConfig),
    Postgres(postgres::PostgresSinkConfig),
    MetaCapi(meta_capi::MetaCapiSinkConfig),
    Ga4Mp(ga4_mp::Ga4MpSinkConfig),
}

impl SinkConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::File(_) => "file",
            SinkConfig::Http(_) => "http",
            SinkConfig::Kafka(_) => "kafka",
            SinkConfig::Postgres(_) => "postgres",
            SinkConfig::MetaCapi(_) => "meta_capi",
            SinkConfig::Ga4Mp(_) => "ga4_mp",
        }
    }

    /// Problems as `(key, message)`, key relative to the sink table.
    pub fn validate(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        match self {
            SinkConfig::File(c) => c.validate(env),
            SinkConfig::Http(c) => c.validate(env),
            SinkConfig::Kafka(c) => c.validate(env),
            SinkConfig::Postgres(c) => c.validate(env),
            SinkConfig::MetaCapi(c) => c.validate(env),
            SinkConfig::Ga4Mp(c) => c.validate(env),
        }
    }
}

/// Shared delivery settings, `[sink.delivery]` under any `[[sink]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// A batch is sent when it holds this many events…
    pub max_events: usize,
    /// …or this many bytes of serialized events…
    pub max_bytes: usize,
    /// …or its oldest event has waited this long.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Batches in flight at once.
    pub concurrency: usize,
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// An event still undelivered this long after it occurred goes to the
    /// dead-letter file instead of being retried forever.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Default: `<spool.dir>/dead-letter/<sink>.jsonl`.
    pub dead_letter: Option<PathBuf>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_events: 500,
            max_bytes: 1 << 20,
            linger: Duration::from_millis(200),
            concurrency: 1,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(60),
            max_age: Duration::from_secs(24 * 3600),
            dead_letter: None,
        }
    }
}

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Try the same batch again later (network, 5xx, 429, broker down).
    #[error("retryable: {message}")]
    Retryable {
        message: String,
        /// The sink's own answer of when to retry (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The sink refused the batch as invalid; retrying will not help. The
    /// events go to the dead-letter file.
    #[error("rejected: {message}")]
    Rejected { message: String },
}

#[async_trait]
pub trait Sink: Send + Sync {
    /// Label in metrics and logs.
    fn name(&self) -> &str;

    /// Whether this sink wants the event at all (ad platforms take only
    /// configured event names with ads consent). Not wanted = acknowledged.
    fn accepts(&self, _envelope: &Envelope) -> bool {
        true
    }

    /// Local validation before batching, so that one bad event cannot make a
    /// platform reject a whole batch. `Err` sends the event to dead-letter.
    fn check(&self, _envelope: &Envelope) -> Result<(), String> {
        Ok(())
    }

    /// Deliver one batch. `Ok` means the sink acknowledged every event.
    async fn send(&self, batch: &[Envelope]) -> Result<(), SinkError>;

    /// A sink that forwards the event's JSON unchanged (file, http) says
    /// so: the delivery loop then hands it the spool's bytes through
    /// `send_raw`, every event (no `accepts`, no `check`), and saves a parse
    /// and a serialization per event.
    fn raw(&self) -> bool {
        false
    }

    /// Deliver one batch of events as their JSON (see `raw`).
    async fn send_raw(&self, _batch: &[RawEvent]) -> Result<(), SinkError> {
        Err(SinkError::Rejected {
            message: format!("sink {} takes no raw batches", self.name()),
        })
    }
}
