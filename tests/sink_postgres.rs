//! The postgres sink against a real PostgreSQL started for the test: batch
//! inserts with the documented columns, idempotent re-inserts, and a server
//! stopped or restarted mid-stream.

#[path = "support/postgres.rs"]
mod pg;

use pg::PgServer;
use std::sync::LazyLock;
use time::OffsetDateTime;
use tokio_postgres::NoTls;
use touchgate::event::{AdMatch, Envelope, Event, Origin, Page, Touch, TouchAt};
use touchgate::sink::postgres::{PostgresSink, PostgresSinkConfig};
use touchgate::sink::{Sink, SinkError};

fn sink(url: &str, table: &str) -> PostgresSink {
    let cfg: PostgresSinkConfig = toml::from_str(&format!(
        "url_env = \"TEST_PG_URL\"\ntable = \"{table}\"\ntimeout = \"10s\"\n"
    ))
    .unwrap();
    let url = url.to_string();
    PostgresSink::new(&cfg, &move |k| (k == "TEST_PG_URL").then(|| url.clone())).unwrap()
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
                "signup_submitted".into(),
                Origin::Proxy,
                at,
                at,
            );
            e.device_id = Some(format!("{:032x}", i));
            e.lead_id = (i % 2 == 0).then(|| format!("{:032x}", i + 1000));
            e.status = Some(303);
            e.page = Some(Page {
                url: "https://shop.example/signup".into(),
                path: "/signup".into(),
                referrer_host: None,
            });
            e.touch = Some(Touch {
                source: Some("google".into()),
                medium: Some("cpc".into()),
                campaign: Some("spring".into()),
                click_id_type: Some("gclid".into()),
                channel: "Paid Search".into(),
                valid: true,
                ..Touch::default()
            });
            e.last_touch = Some(TouchAt {
                touch: Touch {
                    source: Some("newsletter".into()),
                    medium: Some("email".into()),
                    channel: "Email".into(),
                    valid: true,
                    ..Touch::default()
                },
                at,
            });
            Envelope {
                event: e,
                ad_match: Some(AdMatch {
                    em: Some("e".repeat(64)),
                    ..AdMatch::default()
                }),
            }
        })
        .collect()
}

async fn query(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

async fn count(url: &str, table: &str) -> i64 {
    query(url)
        .await
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn batches_land_once_with_the_documented_columns() {
    let server = PgServer::start();
    let url = server.url();
    let sink = sink(&url, "analytics.touchpoint_events");
    let batch = envelopes("a", 300);
    sink.send(&batch).await.unwrap();
    assert_eq!(count(&url, "analytics.touchpoint_events").await, 300);

    // The same batch again, and a batch holding a duplicate: nothing new.
    sink.send(&batch).await.unwrap();
    let mut mixed = envelopes("a", 3);
    mixed.extend(envelopes("b", 2));
    mixed.push(mixed[3].clone());
    sink.send(&mixed).await.unwrap();
    assert_eq!(count(&url, "analytics.touchpoint_events").await, 302);

    let c = query(&url).await;
    let row = c
        .query_one(
            "SELECT event_name, origin, occurred_at = $1::text::timestamptz, device_id, lead_id, \
             channel, source, medium, campaign, click_id_type, valid, last_channel, last_source, page_path, status, \
             payload->>'event_id', payload ? 'ad_match', payload::text LIKE '%eeeeeeee%' \
             FROM analytics.touchpoint_events WHERE event_id = 'a0002'",
            &[&touchgate::event::rfc3339_millis::format(*AT)],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "signup_submitted");
    assert_eq!(row.get::<_, String>(1), "proxy");
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, String>(3), format!("{:032x}", 2));
    assert_eq!(
        row.get::<_, Option<String>>(4),
        Some(format!("{:032x}", 1002))
    );
    assert_eq!(row.get::<_, String>(5), "Paid Search");
    assert_eq!(row.get::<_, String>(6), "google");
    assert_eq!(row.get::<_, String>(7), "cpc");
    assert_eq!(row.get::<_, String>(8), "spring");
    assert_eq!(row.get::<_, String>(9), "gclid");
    assert!(row.get::<_, bool>(10));
    assert_eq!(row.get::<_, String>(11), "Email");
    assert_eq!(row.get::<_, String>(12), "newsletter");
    assert_eq!(row.get::<_, String>(13), "/signup");
    assert_eq!(row.get::<_, i32>(14), 303);
    assert_eq!(row.get::<_, String>(15), "a0002");
    assert!(
        !row.get::<_, bool>(16),
        "ad-match keys must not reach the table"
    );
    assert!(
        !row.get::<_, bool>(17),
        "ad-match keys must not reach the table"
    );
    let odd: Option<String> = c
        .query_one(
            "SELECT lead_id FROM analytics.touchpoint_events WHERE event_id = 'a0001'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(odd, None);

    // The documented indexes exist.
    let indexes: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'analytics' AND tablename = 'touchpoint_events'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(indexes, 6, "primary key + 5 indexes");
}

#[tokio::test]
async fn server_down_is_retryable_and_the_sink_reconnects() {
    let server = PgServer::start();
    let url = server.url();
    let sink = sink(&url, "touchpoint_events");
    sink.send(&envelopes("a", 10)).await.unwrap();

    server.stop();
    let during = envelopes("b", 10);
    match sink.send(&during).await {
        Err(SinkError::Retryable { message, .. }) => {
            assert!(message.contains("postgres"), "{message}")
        }
        other => panic!("expected Retryable with the server down, got {other:?}"),
    }
    server.start_again();
    sink.send(&during).await.unwrap();
    assert_eq!(count(&url, "touchpoint_events").await, 20);

    // A restart between two batches: the old connection is dead. The sink
    // either notices before sending, or fails the batch as retryable once
    // and succeeds on the next attempt, as the delivery machinery retries.
    server.restart();
    let after = envelopes("c", 10);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match sink.send(&after).await {
            Ok(()) => break,
            Err(SinkError::Retryable { .. }) if attempts < 3 => continue,
            Err(e) => panic!("attempt {attempts}: {e}"),
        }
    }
    assert_eq!(count(&url, "touchpoint_events").await, 30);
}

#[tokio::test]
async fn a_bad_event_is_caught_by_check_not_by_the_server() {
    let server = PgServer::start();
    let sink = sink(&server.url(), "touchpoint_events");
    let mut bad = envelopes("a", 1).remove(0);
    bad.event
        .properties
        .insert("note".into(), "nul\0here".into());
    assert!(sink.check(&bad).is_err());
    assert!(sink.check(&envelopes("a", 1)[0]).is_ok());
}
