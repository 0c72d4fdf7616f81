//! Server-confirmed conversions from form posts.

#[path = "support/redis.rs"]
mod redis_support;
#[path = "support/upstream.rs"]
mod support;

use base64::Engine;
use bytes::Bytes;
use std::time::Duration;
use support::*;

const FORMS: &str = r#"
[[form]]
path = "/signup"
event = "signup_submitted"
lead_id = "email"
natural_key = ["lead_id", "day"]
fields = [{ name = "plan", mode = "raw" }, { name = "company", mode = "hashed" }, { name = "profile.plan", mode = "raw" }]

[[form]]
path = "/status/*"
event = "demo_requested"
lead_id = "email"
"#;

/// A site with the [[form]] rules above, after `extra`.
async fn site(extra: &str) -> Site {
    Site::new(&format!("{extra}\n{FORMS}")).await
}

fn form(body: &str) -> Vec<(&'static str, &'static str)> {
    let _ = body;
    vec![("content-type", "application/x-www-form-urlencoded")]
}

#[tokio::test]
async fn urlencoded_signup_is_captured_after_the_app_confirms() {
    let site = site("").await;
    let body =
        "email=+Bob%40Example.COM+&plan=pro&company=Acme&password=hunter2&card=4111111111111111";
    let (parts, echoed) = send("POST", &site.url("/signup"), &form(body), body.to_string()).await;
    assert_eq!(parts.status, 200);
    assert_eq!(&echoed[..], body.as_bytes());
    let seen = site.up.last();
    assert_eq!(
        &seen.body[..],
        body.as_bytes(),
        "the app receives the same bytes"
    );
    assert_eq!(
        seen.headers.get("content-type").unwrap(),
        "application/x-www-form-urlencoded"
    );
    let touch_id = seen
        .headers
        .get("x-touch-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();

    let ev = site.wait_events(1).await;
    let e = &ev[0];
    assert_eq!(e["event_name"], "signup_submitted");
    assert_eq!(e["status"], 200);
    assert_eq!(e["touchpoint_id"], touch_id.as_str());
    let lead = e["lead_id"].as_str().unwrap();
    assert_eq!(lead.len(), 32);
    let day = &e["occurred_at"].as_str().unwrap()[..10];
    assert_eq!(e["natural_key"], format!("lead_id={lead}|day={day}"));
    assert_ne!(
        e["event_id"], e["touchpoint_id"],
        "natural key decides the event id"
    );
    assert_eq!(e["properties"]["plan"], "pro");
    assert_eq!(e["properties"]["company"].as_str().unwrap().len(), 32);
    let raw = serde_json::to_string(e).unwrap();
    for secret in [
        "bob", "Bob", "hunter2", "4111", "Acme", "password", "ad_match",
    ] {
        assert!(!raw.contains(secret), "{secret} leaked: {raw}");
    }
    // The same e-mail, differently written, is the same lead.
    let body2 = "email=bob@example.com&plan=pro";
    send("POST", &site.url("/signup"), &form(body2), body2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(site.events().len(), 1, "same lead, same day: a duplicate");
    assert!(
        site.tg
            .metrics
            .encode()
            .contains(r#"touchgate_events_duplicate_total{event_name="signup_submitted"} 1"#)
    );
}

#[tokio::test]
async fn multipart_with_a_file_and_json_bodies() {
    let site = site("").await;
    let boundary = "XyZ123";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nann@example.org\r\n").as_bytes());
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"cv\"; filename=\"cv.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
    body.extend((0..20_000u32).map(|i| (i % 251) as u8));
    body.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\nteam\r\n--{boundary}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={boundary}");
    let (parts, _) = send(
        "POST",
        &site.url("/signup"),
        &[("content-type", ct.as_str())],
        body.clone(),
    )
    .await;
    assert_eq!(parts.status, 200);
    assert!(
        site.up.last().body == body,
        "multipart bytes identical at the app"
    );

    let json = r#"{"email":"cy@example.net","profile":{"plan":"enterprise"}}"#;
    send(
        "POST",
        &site.url("/signup"),
        &[("content-type", "application/json")],
        json,
    )
    .await;
    assert_eq!(&site.up.last().body[..], json.as_bytes());

    let ev = site.wait_events(2).await;
    assert_eq!(ev[0]["properties"]["plan"], "team");
    assert!(ev[0]["lead_id"].is_string());
    assert_eq!(ev[1]["properties"]["profile.plan"], "enterprise");
    assert_ne!(ev[0]["lead_id"], ev[1]["lead_id"]);
}

#[tokio::test]
async fn error_answers_emit_nothing_redirects_do() {
    let site = site("").await;
    let body = "email=dee@example.com";
    let (p, _) = send("POST", &site.url("/status/500"), &form(body), body).await;
    assert_eq!(p.status, 500);
    let (p, _) = send("POST", &site.url("/status/422"), &form(body), body).await;
    assert_eq!(p.status, 422);
    let (p, _) = send("POST", &site.url("/status/303"), &form(body), body).await;
    assert_eq!(p.status, 303);
    let ev = site.wait_events(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(site.events().len(), 1);
    assert_eq!(ev[0]["event_name"], "demo_requested");
    assert_eq!(ev[0]["status"], 303);
    let m = site.tg.metrics.encode();
    assert!(
        m.contains(
            r#"touchgate_conversions_unconfirmed_total{event_name="demo_requested",class="5xx"} 1"#
        ),
        "{m}"
    );
    assert!(
        m.contains(
            r#"touchgate_conversions_unconfirmed_total{event_name="demo_requested",class="4xx"} 1"#
        ),
        "{m}"
    );
}

#[tokio::test]
async fn oversize_bodies_stream_through_uncaptured_but_recorded() {
    let site = site("proxy.max_capture_body = 1024").await;
    let big = format!("email=eve@example.com&notes={}", "n".repeat(5000));
    let (p, echoed) = send("POST", &site.url("/signup"), &form(&big), big.clone()).await;
    assert_eq!(p.status, 200);
    assert_eq!(echoed.len(), big.len());
    assert_eq!(&site.up.last().body[..], big.as_bytes());
    let ev = site.wait_events(1).await;
    assert_eq!(ev[0]["capture"], "oversize");
    assert_eq!(ev[0]["lead_id"], serde_json::Value::Null);
    assert!(
        site.tg
            .metrics
            .encode()
            .contains(r#"touchgate_capture_oversize_total{event_name="signup_submitted"} 1"#)
    );
}

#[tokio::test]
async fn client_context_from_header_or_field() {
    let site = site("").await;
    let ctx = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(r#"{"cid":"c-123","exp":{"hero":"b"},"ux":{"ttfb":120},"junk":1}"#);
    let body = "email=fay@example.com";
    send(
        "POST",
        &site.url("/signup"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-touch-context", ctx.as_str()),
        ],
        body,
    )
    .await;
    assert!(
        site.up.last().headers.get("x-touch-context").is_none(),
        "removed before forwarding"
    );
    let body2 = format!("email=gus@example.com&_tg_ctx={ctx}");
    send("POST", &site.url("/signup"), &form(&body2), body2.clone()).await;
    assert_eq!(
        &site.up.last().body[..],
        body2.as_bytes(),
        "the field stays in the body"
    );
    let body3 = "email=hal@example.com&_tg_ctx=!!notbase64";
    send("POST", &site.url("/signup"), &form(body3), body3).await;
    let ev = site.wait_events(3).await;
    assert_eq!(ev[0]["client"]["context"]["cid"], "c-123");
    assert_eq!(ev[0]["client"]["context"]["exp"]["hero"], "b");
    assert!(ev[0]["client"]["context"].get("junk").is_none());
    assert_eq!(ev[1]["client"]["context"]["cid"], "c-123");
    assert_eq!(ev[2]["client"]["context"], serde_json::Value::Null);
    assert!(
        site.tg
            .metrics
            .encode()
            .contains("touchgate_context_invalid_total 1")
    );
}

#[tokio::test]
async fn replicas_share_dedupe_through_redis_and_fall_back_when_it_dies() {
    let mut redis = redis_support::Redis::start();
    let extra = format!(
        "[dedupe]\nredis_url = \"{}\"\nredis_timeout = \"200ms\"\n",
        redis.url()
    );
    let up = start().await;
    let extra = format!("{extra}\n{FORMS}");
    let a = Site::with_upstream(up.clone(), &extra).await;
    let b = Site::with_upstream(up.clone(), &extra).await;
    let body = "email=ivy@example.com";
    send("POST", &a.url("/signup"), &form(body), body).await;
    a.wait_events(1).await;
    send("POST", &b.url("/signup"), &form(body), body).await;
    eventually("replica b counts the duplicate", || {
        b.tg.metrics
            .encode()
            .contains(r#"touchgate_events_duplicate_total{event_name="signup_submitted"} 1"#)
    })
    .await;
    assert_eq!(
        b.events().len(),
        0,
        "replica b saw a duplicate of replica a's event"
    );

    // Redis gone: requests still succeed, the local set decides, counted.
    redis.kill();
    let body = "email=jon@example.com";
    let (p, _) = send("POST", &b.url("/signup"), &form(body), body).await;
    assert_eq!(p.status, 200);
    b.wait_events(1).await;
    assert!(
        b.tg.metrics
            .encode()
            .contains("touchgate_dedupe_fallback_total")
    );
    let m = b.tg.metrics.encode();
    let line = m
        .lines()
        .find(|l| l.starts_with("touchgate_dedupe_fallback_total"))
        .unwrap();
    assert_ne!(line, "touchgate_dedupe_fallback_total 0", "{m}");
    // And a local duplicate is still caught without Redis.
    send("POST", &b.url("/signup"), &form(body), body).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.events().len(), 1);
}

#[tokio::test]
async fn first_and_last_touch_ride_along_with_the_conversion() {
    let site = site("").await;
    let (p, _) = get(
        &site.url("/?utm_source=bing&utm_medium=cpc&utm_campaign=brand"),
        &[("sec-fetch-dest", "document")],
    )
    .await;
    let cookie: String = p
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let body = "email=kim@example.com";
    let mut headers = form(body);
    headers.push(("cookie", Box::leak(cookie.into_boxed_str())));
    send("POST", &site.url("/signup"), &headers, Bytes::from(body)).await;
    let ev = site.wait_events(2).await;
    let conv = &ev[1];
    assert_eq!(conv["first_touch"]["channel"], "Paid Search");
    assert_eq!(conv["last_touch"]["source"], "bing");
    assert_eq!(conv["device_id"], ev[0]["device_id"]);
    assert!(
        site.tg.metrics.encode().contains(
            r#"touchgate_conversions_total{event_name="signup_submitted",valid="true"} 1"#
        )
    );
}
