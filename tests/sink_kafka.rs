//! The kafka sink against librdkafka's mock cluster: messages arrive with
//! the documented key, headers and payload; brokers going down make a batch
//! retryable, and the same batch is delivered once they are back.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use touchgate::event::{AdMatch, Envelope, Event, Origin};
use touchgate::sink::kafka::{KafkaSink, KafkaSinkConfig};
use touchgate::sink::{Sink, SinkError};

const TOPIC: &str = "touchpoints";

fn sink(brokers: &str, message_timeout: &str) -> KafkaSink {
    let cfg: KafkaSinkConfig = toml::from_str(&format!(
        "brokers = \"{brokers}\"\ntopic = \"{TOPIC}\"\nmessage_timeout = \"{message_timeout}\"\n\
         options = {{ \"compression.type\" = \"lz4\", \"linger.ms\" = \"5\" }}\n"
    ))
    .unwrap();
    KafkaSink::new(&cfg, &|_| None).unwrap()
}

/// The events' time: an hour before the test started, to the millisecond
/// (events carry milliseconds), the same for every batch.
static AT: LazyLock<OffsetDateTime> = LazyLock::new(|| {
    let t = OffsetDateTime::now_utc() - time::Duration::hours(1);
    t.replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap()
});

fn envelopes(prefix: &str, n: usize) -> Vec<Envelope> {
    let at = *AT;
    (0..n)
        .map(|i| {
            let mut e = Event::new(
                format!("{prefix}{i:04}"),
                if i % 2 == 0 {
                    "landing"
                } else {
                    "signup_submitted"
                }
                .into(),
                Origin::Proxy,
                at,
                at,
            );
            // Every third event has no device: keyed by event_id instead.
            if i % 3 != 0 {
                e.device_id = Some(format!("d{:031x}", i % 4));
            }
            Envelope {
                event: e,
                ad_match: Some(AdMatch {
                    em: Some("f".repeat(64)),
                    client_user_agent: Some("Mozilla/5.0 (secret-ua)".into()),
                    ..AdMatch::default()
                }),
            }
        })
        .collect()
}

/// A consumed message: key, headers, payload.
type Consumed = (Option<String>, HashMap<String, String>, Vec<u8>);

/// Every message on the topic, read from the beginning of each partition
/// until `want` distinct event ids were seen or 30 s passed.
fn consume(brokers: &str, partitions: i32, want: usize) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sink-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids.len() < want && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let key = m.key().map(|k| String::from_utf8(k.to_vec()).unwrap());
        let mut headers = HashMap::new();
        if let Some(h) = m.headers() {
            for hd in h.iter() {
                headers.insert(
                    hd.key.to_string(),
                    String::from_utf8(hd.value.unwrap_or_default().to_vec()).unwrap(),
                );
            }
        }
        ids.insert(headers.get("event_id").cloned().unwrap_or_default());
        out.push((key, headers, m.payload().unwrap_or_default().to_vec()));
    }
    out
}

#[tokio::test]
async fn events_arrive_with_key_headers_and_payload() {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic(TOPIC, 3, 3).unwrap();
    let brokers = cluster.bootstrap_servers();
    let sink = sink(&brokers, "10s");
    let batch = envelopes("a", 30);
    sink.send(&batch).await.unwrap();

    let got = consume(&brokers, 3, batch.len());
    assert_eq!(got.len(), batch.len(), "each event exactly once");
    let by_id: HashMap<&str, &Envelope> = batch
        .iter()
        .map(|e| (e.event.event_id.as_str(), e))
        .collect();
    for (key, headers, payload) in &got {
        let sent = by_id[headers["event_id"].as_str()];
        let expected_key = sent
            .event
            .device_id
            .as_deref()
            .unwrap_or(&sent.event.event_id);
        assert_eq!(key.as_deref(), Some(expected_key));
        assert_eq!(headers["event_name"], sent.event.event_name);
        assert_eq!(headers["schema"], "touchgate/1");
        let event: Event = serde_json::from_slice(payload).unwrap();
        assert_eq!(&event, &sent.event);
        let text = String::from_utf8(payload.clone()).unwrap();
        assert!(
            !text.contains("ad_match")
                && !text.contains("secret-ua")
                && !text.contains(&"f".repeat(64))
        );
    }
}

#[tokio::test]
async fn brokers_down_is_retryable_then_delivered() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let sink = sink(&brokers, "1500ms");

    let first = envelopes("b", 5);
    sink.send(&first).await.unwrap();

    cluster.broker_down(1).unwrap();
    let second = envelopes("c", 5);
    match sink.send(&second).await {
        Err(SinkError::Retryable { message, .. }) => {
            assert!(message.contains("not acknowledged"), "{message}")
        }
        other => panic!("expected Retryable with the broker down, got {other:?}"),
    }

    cluster.broker_up(1).unwrap();
    // The delivery machinery retries the same batch; with the broker back it
    // is acknowledged. librdkafka may need a moment to reconnect, so allow a
    // few (bounded) attempts, as the backoff would.
    let mut delivered = false;
    for _ in 0..10 {
        match sink.send(&second).await {
            Ok(()) => {
                delivered = true;
                break;
            }
            Err(SinkError::Retryable { .. }) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(delivered, "the batch was never delivered after broker_up");

    let got = consume(&brokers, 1, first.len() + second.len());
    let ids: std::collections::HashSet<String> =
        got.iter().map(|(_, h, _)| h["event_id"].clone()).collect();
    for e in first.iter().chain(&second) {
        assert!(
            ids.contains(&e.event.event_id),
            "{} missing",
            e.event.event_id
        );
    }
    // Duplicates, if any, carry the same event_id and payload.
    let mut payloads: HashMap<String, Vec<u8>> = HashMap::new();
    for (_, h, p) in &got {
        let prev = payloads.insert(h["event_id"].clone(), p.clone());
        if let Some(prev) = prev {
            assert_eq!(&prev, p);
        }
    }
}
