//! `kafka` sink: one message per event, through librdkafka's idempotent
//! producer (`enable.idempotence = true`, `acks = all`).
//!
//! - key: `device_id`, or `event_id` for events without a device, so one
//!   device's events stay in one partition, in order;
//! - headers: `event_name`, `event_id`, `schema`;
//! - payload: the event JSON (CONTRACT.md "Events"); the envelope's ad-match
//!   keys never go to Kafka.
//!
//! `send` returns `Ok` only once the broker acknowledged every message of
//! the batch. A message not acknowledged within `message_timeout` (broker
//! down, partition without leader) fails the batch as retryable; re-sending
//! the whole batch may duplicate the messages that did arrive, which
//! consumers dedupe on `event_id`.

use async_trait::async_trait;
use futures_util::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{DeliveryConfig, Sink, SinkBuildError, SinkError};
use crate::event::Envelope;

/// Producer settings that would break the delivery guarantees above, or
/// that have their own key here.
const DENIED_OPTIONS: [(&str, &str); 12] = [
    (
        "enable.idempotence",
        "the sink always produces idempotently",
    ),
    (
        "acks",
        "the sink always waits for all in-sync replicas (acks=all)",
    ),
    (
        "request.required.acks",
        "the sink always waits for all in-sync replicas (acks=all)",
    ),
    ("retries", "the idempotent producer needs its retries"),
    (
        "message.send.max.retries",
        "the idempotent producer needs its retries",
    ),
    (
        "max.in.flight",
        "the idempotent producer manages in-flight requests",
    ),
    (
        "max.in.flight.requests.per.connection",
        "the idempotent producer manages in-flight requests",
    ),
    (
        "transactional.id",
        "transactions are not supported by this sink",
    ),
    ("bootstrap.servers", "use the brokers key"),
    ("metadata.broker.list", "use the brokers key"),
    ("message.timeout.ms", "use the message_timeout key"),
    ("delivery.timeout.ms", "use the message_timeout key"),
];
/// librdkafka's default `message.max.bytes`.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;
/// Room for the key, the headers and the record overhead.
const RECORD_OVERHEAD: usize = 512;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    pub name: Option<String>,
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    pub topic: String,
    /// How long librdkafka may try to deliver a message before the batch
    /// fails as retryable (`message.timeout.ms`).
    #[serde(default = "default_message_timeout", with = "humantime_serde")]
    pub message_timeout: Duration,
    /// Extra librdkafka producer settings, e.g.
    /// `options = { "compression.type" = "lz4", "security.protocol" = "ssl" }`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_message_timeout() -> Duration {
    Duration::from_secs(30)
}

impl KafkaSinkConfig {
    pub fn validate(&self, _env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut bad = |k: &str, m: String| problems.push((k.to_string(), m));
        if let Err(m) = check_brokers(&self.brokers) {
            bad("brokers", m);
        }
        if let Err(m) = check_topic(&self.topic) {
            bad("topic", m);
        }
        if self.message_timeout < Duration::from_millis(100)
            || self.message_timeout > Duration::from_secs(3600)
        {
            bad("message_timeout", "between 100ms and 1h".into());
        }
        for key in self.options.keys() {
            if let Some((_, why)) = DENIED_OPTIONS.iter().find(|(k, _)| k == key) {
                bad(&format!("options.{key}"), format!("not allowed: {why}"));
            }
        }
        if let Some(v) = self.options.get("message.max.bytes")
            && v.parse::<usize>().is_err()
        {
            bad("options.message.max.bytes", "a number of bytes".into());
        }
        // librdkafka checks every name and value when a setting is made;
        // that needs no network, so check-config can run it.
        if problems.is_empty()
            && let Err(e) = self.client_config().create_native_config()
        {
            problems.push((
                "options".into(),
                format!("librdkafka refused the settings: {e}"),
            ));
        }
        problems
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                self.message_timeout.as_millis().to_string(),
            );
        c
    }
}

fn check_brokers(brokers: &str) -> Result<(), String> {
    let list: Vec<&str> = brokers.split(',').map(str::trim).collect();
    if list.iter().any(|b| b.is_empty()) {
        return Err("a comma-separated list of host:port".into());
    }
    for b in list {
        let Some((host, port)) = b.rsplit_once(':') else {
            return Err(format!("{b}: host:port"));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("{b}: host:port"));
        }
    }
    Ok(())
}

/// Kafka's topic name rules.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 || topic == "." || topic == ".." {
        return Err("a topic name is 1 to 249 characters, not \".\" or \"..\"".into());
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("a topic name is letters, digits, '.', '_' and '-'".into());
    }
    Ok(())
}

pub struct KafkaSink {
    name: String,
    topic: String,
    client_config: ClientConfig,
    message_timeout: Duration,
    max_payload_bytes: usize,
    /// Replaced when librdkafka reports a fatal error (the idempotent
    /// producer can then no longer guarantee order and stops working).
    producer: RwLock<Arc<FutureProducer>>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    pub fn new(
        cfg: &KafkaSinkConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<KafkaSink, SinkBuildError> {
        let problems = cfg.validate(env);
        if !problems.is_empty() {
            return Err(SinkBuildError::Invalid(problems));
        }
        let client_config = cfg.client_config();
        let producer = create(&client_config)?;
        let max_message_bytes = cfg
            .options
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        Ok(KafkaSink {
            name: cfg.name.clone().unwrap_or_else(|| "kafka".into()),
            topic: cfg.topic.clone(),
            client_config,
            message_timeout: cfg.message_timeout,
            max_payload_bytes: max_message_bytes.saturating_sub(RECORD_OVERHEAD),
            producer: RwLock::new(Arc::new(producer)),
        })
    }

    /// Go by `name` in metrics and logs instead of `name`/the type from
    /// the config (e.g. the unique name `sink::unique_name` gives).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn producer(&self) -> Arc<FutureProducer> {
        match self.producer.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// After a fatal error the producer refuses everything: start a new one
    /// (a new producer id) so that the retry of this batch can succeed.
    fn replace_if_fatal(&self, current: &Arc<FutureProducer>) {
        let Some((code, reason)) = current.client().fatal_error() else {
            return;
        };
        tracing::error!(sink = %self.name, ?code, %reason, "kafka: fatal producer error, starting a new producer");
        match create(&self.client_config) {
            Ok(fresh) => {
                let mut slot = match self.producer.write() {
                    Ok(s) => s,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if Arc::ptr_eq(&slot, current) {
                    *slot = Arc::new(fresh);
                }
            }
            Err(e) => tracing::error!(sink = %self.name, "kafka: cannot start a new producer: {e}"),
        }
    }
}

fn create(config: &ClientConfig) -> Result<FutureProducer, SinkBuildError> {
    config
        .create()
        .map_err(|e| SinkBuildError::Client(format!("kafka producer: {e}")))
}

/// The record key: the device, so a device's events keep their order.
pub fn message_key(envelope: &Envelope) -> &str {
    envelope
        .event
        .device_id
        .as_deref()
        .unwrap_or(&envelope.event.event_id)
}

/// Whether retrying the same message can ever succeed.
fn is_permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

#[async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, envelope: &Envelope) -> Result<(), String> {
        let size = serde_json::to_vec(&envelope.event)
            .map_err(|e| e.to_string())?
            .len();
        if size > self.max_payload_bytes {
            return Err(format!(
                "the event is {size} bytes, over the {} bytes a message may hold (message.max.bytes)",
                self.max_payload_bytes
            ));
        }
        Ok(())
    }

    async fn send(&self, batch: &[Envelope]) -> Result<(), SinkError> {
        let producer = self.producer();
        let p = &*producer;
        let topic = self.topic.as_str();
        // Every message is handed to librdkafka at once (join_all polls the
        // futures in batch order, so one key's messages stay in order), then
        // the delivery reports are awaited together.
        let sends = batch.iter().map(|envelope| async move {
            let payload = serde_json::to_vec(&envelope.event).map_err(|e| SinkError::Rejected {
                message: format!("cannot encode event {}: {e}", envelope.event.event_id),
            })?;
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: "event_name",
                    value: Some(envelope.event.event_name.as_bytes()),
                })
                .insert(Header {
                    key: "event_id",
                    value: Some(envelope.event.event_id.as_bytes()),
                })
                .insert(Header {
                    key: "schema",
                    value: Some(envelope.event.schema.as_bytes()),
                });
            let record = FutureRecord::to(topic)
                .key(message_key(envelope))
                .payload(&payload)
                .headers(headers);
            p.send(record, Timeout::After(self.message_timeout))
                .await
                .map(|_| ())
                .map_err(|(e, _)| {
                    if is_permanent(&e) {
                        SinkError::Rejected {
                            message: format!(
                                "kafka refused event {}: {e}",
                                envelope.event.event_id
                            ),
                        }
                    } else {
                        SinkError::Retryable {
                            message: format!("kafka: {e}"),
                            retry_after: None,
                        }
                    }
                })
        });
        let results = join_all(sends).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed == 0 {
            return Ok(());
        }
        self.replace_if_fatal(&producer);
        // A retryable failure wins over a rejection: the whole batch comes
        // back, and the event that is truly too big is caught by `check`.
        let first_retryable = results.iter().find_map(|r| match r {
            Err(SinkError::Retryable { message, .. }) => Some(message.clone()),
            _ => None,
        });
        match first_retryable {
            Some(message) => Err(SinkError::Retryable {
                message: format!(
                    "{failed} of {} messages not acknowledged; first: {message}",
                    batch.len()
                ),
                retry_after: None,
            }),
            None => results
                .into_iter()
                .find_map(Result::err)
                .map_or(Ok(()), Err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> KafkaSinkConfig {
        toml::from_str(&format!(
            "brokers = \"127.0.0.1:9092\"\ntopic = \"touchpoints\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn guarantees_cannot_be_configured_away() {
        let problems = cfg("options = { acks = \"1\", \"enable.idempotence\" = \"false\" }")
            .validate(&|_| None);
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"options.acks"), "{keys:?}");
        assert!(keys.contains(&"options.enable.idempotence"), "{keys:?}");
    }

    #[test]
    fn librdkafka_checks_the_options() {
        assert!(
            cfg("options = { \"compression.type\" = \"lz4\" }")
                .validate(&|_| None)
                .is_empty()
        );
        let p = cfg("options = { \"no.such.setting\" = \"1\" }").validate(&|_| None);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "options");
        let p = cfg("options = { \"compression.type\" = \"bogus\" }").validate(&|_| None);
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn brokers_and_topics_are_checked() {
        assert!(check_brokers("a:9092,b:9093").is_ok());
        assert!(check_brokers("a").is_err());
        assert!(check_brokers("a:x").is_err());
        assert!(check_brokers("a:1,").is_err());
        assert!(check_topic("touch.points-1_x").is_ok());
        assert!(check_topic("..").is_err());
        assert!(check_topic("a b").is_err());
        assert!(check_topic(&"a".repeat(250)).is_err());
    }
}
