//! The ga4_mp sink against a local stand-in for the Measurement Protocol
//! that checks every request against GA4's documented limits (GA4 itself
//! answers 2xx to anything, so the limits must hold before sending):
//! ≤ 25 events per request, one client per request, body < 130 kB, name and
//! value limits, numeric session ids; consent respected; retries do not
//! count an event twice.

#[path = "support/ad_platform.rs"]
mod ad_platform;

use ad_platform::{Answer, FakePlatform, Recorded};
use serde_json::Value;
use time::OffsetDateTime;
use touchgate::event::{Envelope, Event, Origin, Page, Touch};
use touchgate::sink::ga4_mp::{self, Ga4MpSink, Ga4MpSinkConfig};
use touchgate::sink::{Sink, SinkError};

const RESERVED: [&str; 6] = [
    "session_start",
    "first_visit",
    "user_engagement",
    "error",
    "app_remove",
    "ad_click",
];

fn ga4_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.chars().count() <= 40
        && n.starts_with(|c: char| c.is_ascii_alphabetic())
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !["ga_", "google_", "firebase_"]
            .iter()
            .any(|p| n.starts_with(p))
}

/// GA4's documented request format and limits.
fn ga4_format(r: &Recorded) -> Vec<String> {
    let mut p = Vec::new();
    if r.method != "POST" {
        p.push(format!("method {}", r.method));
    }
    if r.target != "/mp/collect?measurement_id=G-TEST123&api_secret=s3cr%2Bt" {
        p.push(format!("target {}", r.target));
    }
    if !r
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/json"))
    {
        p.push("content-type is not JSON".into());
    }
    if r.body.len() >= 130_000 {
        p.push(format!("body of {} bytes", r.body.len()));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
        p.push("body is not JSON".into());
        return p;
    };
    let client_ok = body["client_id"].as_str().is_some_and(|c| {
        let parts: Vec<&str> = c.split('.').collect();
        parts.len() == 2
            && parts
                .iter()
                .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
    });
    if !client_ok {
        p.push(format!(
            "client_id {} is not <number>.<number>",
            body["client_id"]
        ));
    }
    if !body["timestamp_micros"].is_i64() {
        p.push("timestamp_micros missing".into());
    }
    let Some(events) = body["events"].as_array() else {
        p.push("no events".into());
        return p;
    };
    if events.is_empty() || events.len() > 25 {
        p.push(format!("{} events in one request", events.len()));
    }
    let now_micros = OffsetDateTime::now_utc().unix_timestamp() * 1_000_000;
    for e in events {
        let name = e["name"].as_str().unwrap_or("");
        if !ga4_name_ok(name) || RESERVED.contains(&name) {
            p.push(format!("event name {name:?}"));
        }
        match e["timestamp_micros"].as_i64() {
            Some(t) if t >= now_micros - 72 * 3600 * 1_000_000 && t <= now_micros + 300_000_000 => {
            }
            other => p.push(format!("event timestamp_micros {other:?}")),
        }
        let Some(params) = e["params"].as_object() else {
            p.push("no params".into());
            continue;
        };
        if params.len() > 25 {
            p.push(format!("{} params", params.len()));
        }
        for (k, v) in params {
            if !ga4_name_ok(k) {
                p.push(format!("param name {k:?}"));
            }
            let max = if k == "page_location" { 1000 } else { 100 };
            if let Some(s) = v.as_str()
                && s.chars().count() > max
            {
                p.push(format!("param {k} is {} characters", s.chars().count()));
            }
            if v.is_object() || v.is_array() || v.is_null() {
                p.push(format!("param {k} is not a scalar"));
            }
        }
        if !params.get("session_id").is_some_and(Value::is_u64) {
            p.push("session_id is not a number".into());
        }
        let engagement = params.get("engagement_time_msec").and_then(Value::as_u64);
        if engagement.is_none_or(|n| n == 0) {
            p.push("engagement_time_msec missing".into());
        }
    }
    p
}

fn keys() -> touchgate::identity::Keys {
    touchgate::identity::Keys::derive(b"ga4 test secret")
}

fn sink(url: &str, extra: &str) -> Ga4MpSink {
    let cfg: Ga4MpSinkConfig = toml::from_str(&format!(
        "measurement_id = \"G-TEST123\"\napi_secret_env = \"GA4_SECRET\"\nendpoint = \"{url}\"\ntimeout = \"5s\"\n\
         events = {{ signup_submitted = \"sign_up\", landing = \"page_view\" }}\n{extra}"
    ))
    .unwrap();
    // The secret has a `+`, which must arrive escaped in the query.
    Ga4MpSink::new(
        &cfg,
        &|k| (k == "GA4_SECRET").then(|| "s3cr+t".to_string()),
        &keys(),
    )
    .unwrap()
}

fn event(i: usize, device: usize, name: &str) -> Envelope {
    let at = OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let mut e = Event::new(format!("{i:032x}"), name.into(), Origin::Proxy, at, at);
    e.device_id = Some(format!("{:08x}{:024x}", 1000 + device, device));
    e.session_id = Some(format!("{:032x}", 77 + device));
    e.user_id = Some(format!("{:032x}", 5000 + device));
    e.page = Some(Page {
        url: format!(
            "https://shop.example/{}?utm_campaign=spring",
            "p".repeat(300)
        ),
        path: "/p".into(),
        referrer_host: None,
    });
    e.touch = Some(Touch {
        source: Some("google".into()),
        medium: Some("cpc".into()),
        campaign: Some("c".repeat(140)),
        channel: "Paid Search".into(),
        valid: true,
        ..Touch::default()
    });
    Envelope::new(e)
}

#[tokio::test]
async fn requests_hold_one_client_and_at_most_25_events() {
    let ga4 = FakePlatform::start(Answer::new(204, ""), ga4_format).await;
    let sink = sink(&ga4.url(), "");
    let mut batch = Vec::new();
    for i in 0..60 {
        batch.push(event(i, 0, "signup_submitted"));
    }
    for i in 60..70 {
        batch.push(event(i, 1 + i % 3, "landing"));
    }
    let mut no_consent = event(70, 9, "signup_submitted");
    no_consent.event.consent.ads = false;
    batch.push(no_consent);
    batch.push(event(71, 9, "account_created")); // not mapped
    assert!(!sink.accepts(&batch[70]) && !sink.accepts(&batch[71]));
    for e in &batch[..70] {
        assert!(sink.accepts(e));
        sink.check(e).unwrap();
    }
    sink.send(&batch).await.unwrap();

    assert_eq!(ga4.problems(), Vec::<String>::new());
    let requests = ga4.requests();
    let mut total = 0;
    let mut clients = std::collections::HashMap::new();
    for r in &requests {
        let body = r.json();
        let events = body["events"].as_array().unwrap();
        total += events.len();
        *clients
            .entry(body["client_id"].as_str().unwrap().to_string())
            .or_insert(0) += events.len();
        assert!(
            body.get("user_id").is_none(),
            "user_id only with send_user_id"
        );
        for e in events {
            assert_eq!(
                e["params"]["campaign"].as_str().unwrap().len(),
                100,
                "truncated to 100"
            );
            assert!(
                e["params"]["page_location"].as_str().unwrap().len() > 300,
                "page_location keeps 1000"
            );
        }
    }
    assert_eq!(total, 70, "every accepted event once, none other");
    assert_eq!(clients.len(), 4);
    // Device 0: 60 events, 25 + 25 + 10.
    assert_eq!(requests.len(), 3 + 3);
    let device0 = ga4_mp::client_id_for(&keys(), &format!("{:08x}{:024x}", 1000, 0)).unwrap();
    assert_eq!(clients[&device0], 60);
    let names: std::collections::HashSet<String> = requests
        .iter()
        .flat_map(|r| r.json()["events"].as_array().unwrap().clone())
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["sign_up".to_string(), "page_view".to_string()]
            .into_iter()
            .collect()
    );
}

#[tokio::test]
async fn a_retried_batch_does_not_count_twice() {
    let ga4 = FakePlatform::start(Answer::new(204, ""), ga4_format).await;
    let sink = sink(&ga4.url(), "send_user_id = true");
    let batch: Vec<Envelope> = (0..60).map(|i| event(i, 0, "signup_submitted")).collect();
    ga4.queue(Answer::new(204, ""));
    ga4.queue(Answer::new(503, "busy").header("retry-after", "2"));
    match sink.send(&batch).await {
        Err(SinkError::Retryable { retry_after, .. }) => {
            assert_eq!(retry_after, Some(std::time::Duration::from_secs(2)))
        }
        other => panic!("503 must be Retryable: {other:?}"),
    }
    sink.send(&batch).await.unwrap();
    assert_eq!(ga4.problems(), Vec::<String>::new());
    let delivered: Vec<String> = ga4
        .requests()
        .iter()
        .filter(|r| r.json()["user_id"] == format!("{:032x}", 5000))
        .flat_map(|r| r.json()["events"].as_array().unwrap().clone())
        .map(|e| e["params"]["tg_event_id"].as_str().unwrap().to_string())
        .collect();
    // 4 requests reached the server: 25 ok, 25 refused with 503, then the
    // retry sends only what was not yet acknowledged (35: 25 + 10).
    assert_eq!(ga4.requests().len(), 4);
    let unique: std::collections::HashSet<&String> = delivered.iter().collect();
    assert_eq!(unique.len(), 60);
    assert_eq!(
        delivered.len(),
        85,
        "the 25 refused by 503 are sent again, the 25 acknowledged are not"
    );
}

#[tokio::test]
async fn limits_are_enforced_locally() {
    let ga4 = FakePlatform::start(Answer::new(204, ""), ga4_format).await;
    let sink = sink(&ga4.url(), "forward_properties = true\nall_events = true");
    let mut reserved_param = event(0, 0, "signup_submitted");
    reserved_param
        .event
        .properties
        .insert("gclid".into(), "abc".into());
    let mut too_many = event(1, 0, "signup_submitted");
    for i in 0..25 {
        too_many
            .event
            .properties
            .insert(format!("p{i}"), Value::from(i));
    }
    let own_name_reserved = event(2, 0, "session_start");
    let own_name_too_long = event(3, 0, &"x".repeat(41));
    let mut no_client = event(4, 0, "signup_submitted");
    no_client.event.device_id = None;
    no_client.event.user_id = None;
    for bad in [
        &reserved_param,
        &too_many,
        &own_name_reserved,
        &own_name_too_long,
        &no_client,
    ] {
        assert!(sink.check(bad).is_err(), "{}", bad.event.event_name);
    }
    let mut fine = event(5, 0, "trial_started");
    fine.event
        .properties
        .insert("plan".into(), "x".repeat(250).into());
    sink.check(&fine).unwrap();
    sink.send(&[fine, own_name_reserved]).await.unwrap();
    assert_eq!(ga4.problems(), Vec::<String>::new());
    let requests = ga4.requests();
    assert_eq!(requests.len(), 1);
    let e = &requests[0].json()["events"][0];
    assert_eq!(e["name"], "trial_started");
    assert_eq!(e["params"]["plan"].as_str().unwrap().len(), 100);
}

#[tokio::test]
async fn a_refused_request_is_rejected() {
    let ga4 = FakePlatform::start(Answer::new(204, ""), ga4_format).await;
    let sink = sink(&ga4.url(), "");
    ga4.queue(Answer::new(400, "bad request"));
    assert!(matches!(
        sink.send(&[event(0, 0, "signup_submitted")]).await,
        Err(SinkError::Rejected { .. })
    ));
    ga4.queue(Answer::new(500, "oops"));
    assert!(matches!(
        sink.send(&[event(1, 0, "signup_submitted")]).await,
        Err(SinkError::Retryable { .. })
    ));
}
