//! Sinks: where events go after the spool. One trait, one module per sink;
//! batching, retries, concurrency and dead-lettering are shared machinery
//! (`delivery`), so each sink only says how to send one batch.

use async_trait::async_trait;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

use crate::event::Envelope;
pub use crate::pipeline::spool::RawEvent;

mod ad_platform;
pub mod delivery;
pub mod file;
pub mod ga4_mp;
pub mod google_ads;
pub mod http;
mod http_client;
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
    GoogleAds(google_ads::GoogleAdsSinkConfig),
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
            SinkConfig::GoogleAds(_) => "google_ads",
        }
    }

    pub fn configured_name(&self) -> Option<&str> {
        match self {
            SinkConfig::File(c) => c.name.as_deref(),
            SinkConfig::Http(c) => c.name.as_deref(),
            SinkConfig::Kafka(c) => c.name.as_deref(),
            SinkConfig::Postgres(c) => c.name.as_deref(),
            SinkConfig::MetaCapi(c) => c.name.as_deref(),
            SinkConfig::Ga4Mp(c) => c.name.as_deref(),
            SinkConfig::GoogleAds(c) => c.name.as_deref(),
        }
    }

    pub fn delivery(&self) -> &DeliveryConfig {
        match self {
            SinkConfig::File(c) => &c.delivery,
            SinkConfig::Http(c) => &c.delivery,
            SinkConfig::Kafka(c) => &c.delivery,
            SinkConfig::Postgres(c) => &c.delivery,
            SinkConfig::MetaCapi(c) => &c.delivery,
            SinkConfig::Ga4Mp(c) => &c.delivery,
            SinkConfig::GoogleAds(c) => &c.delivery,
        }
    }

    /// Ad-platform sinks receive the SHA-256 match keys and need ads consent.
    pub fn is_ad_platform(&self) -> bool {
        matches!(
            self,
            SinkConfig::MetaCapi(_) | SinkConfig::Ga4Mp(_) | SinkConfig::GoogleAds(_)
        )
    }

    /// A Meta sink that opted in to `client_ip_address` (`send_client_ip`):
    /// only then is the raw client IP kept, for the ad-platform sinks alone.
    pub fn sends_client_ip(&self) -> bool {
        matches!(self, SinkConfig::MetaCapi(c) if c.send_client_ip)
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
            SinkConfig::GoogleAds(c) => c.validate(env),
        }
    }
}

/// The name a sink goes by in metrics, logs, spool cursors and
/// dead-letter files: its `name`, else its type, numbered when a type
/// repeats (`http`, `http-2`).
pub fn unique_name(all: &[SinkConfig], index: usize) -> String {
    let Some(this) = all.get(index) else {
        return format!("sink-{index}");
    };
    if let Some(n) = this.configured_name() {
        return n.to_string();
    }
    let kind = this.kind();
    let same_before = all[..index]
        .iter()
        .filter(|s| s.configured_name().is_none() && s.kind() == kind)
        .count();
    if same_before == 0 {
        kind.to_string()
    } else {
        format!("{kind}-{}", same_before + 1)
    }
}

/// Build the sink a `[[sink]]` table describes; secrets come from `env`.
pub fn build(
    cfg: &SinkConfig,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    keys: &crate::identity::Keys,
) -> Result<std::sync::Arc<dyn Sink>, String> {
    use std::sync::Arc;
    let text = |e: &dyn std::fmt::Display| e.to_string();
    Ok(match cfg {
        SinkConfig::File(c) => Arc::new(file::FileSink::new(c).map_err(|e| text(&e))?),
        SinkConfig::Http(c) => Arc::new(http::HttpSink::new(c, env).map_err(|e| text(&e))?),
        SinkConfig::Kafka(c) => Arc::new(
            kafka::KafkaSink::new(c, env)
                .map_err(|e| text(&e))?
                .named(name),
        ),
        SinkConfig::Postgres(c) => Arc::new(
            postgres::PostgresSink::new(c, env)
                .map_err(|e| text(&e))?
                .named(name),
        ),
        SinkConfig::MetaCapi(c) => Arc::new(
            meta_capi::MetaCapiSink::new(c, env)
                .map_err(|e| text(&e))?
                .named(name),
        ),
        SinkConfig::Ga4Mp(c) => Arc::new(
            ga4_mp::Ga4MpSink::new(c, env, keys)
                .map_err(|e| text(&e))?
                .named(name),
        ),
        SinkConfig::GoogleAds(c) => Arc::new(
            google_ads::GoogleAdsSink::new(c, env)
                .map_err(|e| text(&e))?
                .named(name),
        ),
    })
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
    /// An event still undelivered this long after touchgate took it in (its
    /// `received_at`, not when it occurred) goes to the dead-letter file
    /// instead of being retried forever.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Default: `<spool.dir>/dead-letter/<sink>.jsonl`.
    pub dead_letter: Option<PathBuf>,
    /// The dead-letter file grows to this many bytes at most; events that
    /// would go past it are dropped and counted
    /// (`touchgate_events_dropped_total{reason="dead_letter_full"}`).
    pub dead_letter_max_bytes: u64,
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
            dead_letter_max_bytes: 256 << 20,
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
    /// The sink took the batch but refused some of its events (Google's
    /// `partialFailure`): those, by index in the batch with the sink's
    /// reason, go to the dead-letter file; the others are delivered.
    #[error("{} of the batch rejected", rejected.len())]
    Partial { rejected: Vec<(usize, String)> },
}

/// Why a sink could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum SinkBuildError {
    /// The config has problems, as `(key, message)` pairs like `validate`.
    #[error("{}", .0.iter().map(|(k, m)| format!("{k}: {m}")).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<(String, String)>),
    /// The client library refused to start (e.g. librdkafka).
    #[error("{0}")]
    Client(String),
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
