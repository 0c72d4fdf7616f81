#![no_main]
//! One ingest line through the real validation: never panics, and what it
//! accepts carries only hashed identifiers.

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use touchgate::admin::ingest::Ingest;
use touchgate::config::{AdminConfig, IngestRule};
use touchgate::identity::Keys;
use touchgate::metrics::Metrics;
use touchgate::pipeline::EventQueue;

static INGEST: LazyLock<Ingest> = LazyLock::new(|| {
    let metrics = Arc::new(Metrics::new());
    let (queue, rx) = EventQueue::new(1, metrics.clone());
    std::mem::forget(rx);
    Ingest::new(
        "token",
        Keys::derive(b"fuzz-secret-0123456789"),
        vec![IngestRule {
            event: "account_created".into(),
            natural_key: vec!["user_id".into(), "day".into()],
        }],
        AdminConfig::default(),
        phonenumber::country::Id::US,
        queue,
        metrics,
    )
});

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let now = time::OffsetDateTime::from_unix_timestamp(1_795_900_000).unwrap();
    if let Ok(env) = INGEST.build(line, now) {
        let e = env.event;
        for id in [&e.user_id, &e.lead_id, &e.device_id].into_iter().flatten() {
            assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_eq!(e.event_id.len(), 32);
    }
});
