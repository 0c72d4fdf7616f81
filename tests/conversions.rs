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
            r#"touchgate_conversions_unconfirmed_total{event_name="demo_requested",reason="status"} 2"#
        ),
        "{m}"
    );
    // Every post is an attempt; only the 303 is confirmed.
    let attempts = site.wait_attempts(3).await;
    let confirmed: Vec<bool> = attempts
        .iter()
        .map(|a| a["properties"]["confirmed"].as_bool().unwrap())
        .collect();
    assert_eq!(confirmed, [false, false, true], "{attempts:#?}");
    assert_eq!(attempts[0]["status"], 500);
    assert_eq!(attempts[0]["properties"]["reason"], "status");
    assert_eq!(
        attempts[2]["properties"]["conversion_id"],
        ev[0]["event_id"]
    );
    assert_eq!(attempts[2]["properties"]["form_event"], "demo_requested");
    for a in &attempts {
        assert_eq!(
            a["lead_id"],
            serde_json::Value::Null,
            "no lead on an attempt"
        );
        assert_eq!(a["client"]["ip_prefix"], serde_json::Value::Null);
    }
}

/// A request whose app answer the upstream reads from the request's own
/// `x-answer-*` headers (see `support::scripted_answer`).
fn answer<'a>(status: &'a str, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        ("content-type", "application/x-www-form-urlencoded"),
        ("x-answer-status", status),
    ];
    h.extend_from_slice(more);
    h
}

const RULES: &str = r#"
[[form]]
path = "/admin/login/"
event = "admin_login"
lead_id = "username"
natural_key = ["lead_id", "day"]
failure_body = 'class="errorlist|class="errornote'

[[form]]
path = "/signup"
event = "signup_submitted"
lead_id = "email"
natural_key = ["lead_id", "day"]
success_status = [302, 303]

[[form]]
path = "/register"
event = "registered"
lead_id = "email"
success_location = '^/(home|dashboard)'

[[form]]
path = "/api/leads"
event = "lead_created"
lead_id = "email"
success_header = "X-Lead=created"
"#;

#[tokio::test]
async fn a_failed_attempt_never_holds_the_dedupe_key() {
    let site = Site::new(RULES).await;
    let body = "username=ada%40example.com&password=wrong";
    // The app re-renders the form with an error: no conversion, and the
    // natural key (same lead, same day) stays free...
    let (p, echoed) = send(
        "POST",
        &site.url("/admin/login/"),
        &answer(
            "200",
            &[
                ("x-answer-header", "content-type: text/html; charset=utf-8"),
                (
                    "x-answer-body",
                    r#"<form><p class="errornote">Please enter the correct username</p>"#,
                ),
            ],
        ),
        body,
    )
    .await;
    assert_eq!(p.status, 200);
    assert!(std::str::from_utf8(&echoed).unwrap().contains("errornote"));
    site.wait_attempts(1).await;
    // ...for the correction just after, which the app accepts.
    let body = "username=ada%40example.com&password=right";
    let (p, _) = send(
        "POST",
        &site.url("/admin/login/"),
        &answer("302", &[("x-answer-header", "location: /admin/")]),
        body,
    )
    .await;
    assert_eq!(p.status, 302);
    let ev = site.wait_events(1).await;
    site.wait_attempts(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ev2 = site.events();
    assert_eq!(ev2.len(), 1, "exactly one conversion: {ev2:#?}");
    assert_eq!(ev[0]["event_name"], "admin_login");
    assert_eq!(ev[0]["status"], 302, "the success's status");
    let m = site.tg.metrics.encode();
    assert!(
        !m.contains("touchgate_events_duplicate_total{"),
        "nothing was a duplicate: {m}"
    );
    assert!(
        m.contains(
            r#"touchgate_conversions_unconfirmed_total{event_name="admin_login",reason="failure_body"} 1"#
        ),
        "{m}"
    );
    // A second success for the same lead and day is the duplicate.
    send(
        "POST",
        &site.url("/admin/login/"),
        &answer("302", &[("x-answer-header", "location: /admin/")]),
        body,
    )
    .await;
    eventually("the repeat is a duplicate", || {
        site.tg
            .metrics
            .encode()
            .contains(r#"touchgate_events_duplicate_total{event_name="admin_login"} 1"#)
    })
    .await;
    assert_eq!(site.events().len(), 1);
}

#[tokio::test]
async fn a_failure_on_one_replica_leaves_the_shared_key_to_the_success_on_another() {
    let redis = redis_support::Redis::start();
    let extra = format!(
        "[dedupe]\nredis_url = \"{}\"\nredis_timeout = \"500ms\"\n{RULES}",
        redis.url()
    );
    let up = start().await;
    let a = Site::with_upstream(up.clone(), &extra).await;
    let b = Site::with_upstream(up.clone(), &extra).await;
    let body = "email=lin%40example.com";
    send(
        "POST",
        &a.url("/signup"),
        &answer(
            "302",
            &[("x-answer-header", "location: /signup?error=email")],
        ),
        body,
    )
    .await;
    a.wait_attempts(1).await;
    let keys_after_failure = redis.keys();
    send(
        "POST",
        &b.url("/signup"),
        &answer("303", &[("x-answer-header", "location: /thanks")]),
        body,
    )
    .await;
    let ev = b.wait_events(1).await;
    assert_eq!(ev[0]["status"], 303);
    assert_eq!(a.events().len(), 0);
    let key = ev[0]["event_id"].as_str().unwrap();
    assert!(
        !keys_after_failure.iter().any(|k| k.contains(key)),
        "the failed attempt put the conversion's id in Redis: {keys_after_failure:?}"
    );
    assert!(
        redis.keys().iter().any(|k| k.contains(key)),
        "the success is in Redis: {:?}",
        redis.keys()
    );
}

#[tokio::test]
async fn each_rule_decides_and_says_why() {
    let site = Site::new(RULES).await;
    let post = |path: &'static str, h: Vec<(&'static str, &'static str)>, body: &'static str| {
        let url = site.url(path);
        async move { send("POST", &url, &h, body).await }
    };
    // success_status: a 200 is not a success for this form.
    post("/signup", answer("200", &[]), "email=a%40example.com").await;
    // The default failure location: back to the form's own path.
    post(
        "/signup",
        answer(
            "302",
            &[("x-answer-header", "location: http://shop.example/signup")],
        ),
        "email=b%40example.com",
    )
    .await;
    post(
        "/signup",
        answer("303", &[("x-answer-header", "location: /welcome")]),
        "email=c%40example.com",
    )
    .await;
    // success_location.
    post(
        "/register",
        answer("302", &[("x-answer-header", "location: /register")]),
        "email=d%40example.com",
    )
    .await;
    post(
        "/register",
        answer("302", &[("x-answer-header", "location: /login")]),
        "email=e%40example.com",
    )
    .await;
    post(
        "/register",
        answer("302", &[("x-answer-header", "location: /dashboard?new=1")]),
        "email=f%40example.com",
    )
    .await;
    // success_header: required, and never shown to the client.
    let (p, _) = post("/api/leads", answer("200", &[]), "email=g%40example.com").await;
    assert_eq!(p.status, 200);
    let (p, _) = post(
        "/api/leads",
        answer("201", &[("x-answer-header", "x-lead: created")]),
        "email=h%40example.com",
    )
    .await;
    assert_eq!(p.status, 201);
    assert!(
        p.headers.get("x-lead").is_none(),
        "stripped: {:?}",
        p.headers
    );

    let ev = site.wait_events(3).await;
    site.wait_attempts(8).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got: Vec<(String, u64)> = site
        .events()
        .iter()
        .map(|e| {
            (
                e["event_name"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("signup_submitted".to_string(), 303),
            ("registered".to_string(), 302),
            ("lead_created".to_string(), 201),
        ],
        "{ev:#?}"
    );
    let m = site.tg.metrics.encode();
    for (event, reason) in [
        ("signup_submitted", "status"),
        ("signup_submitted", "failure_location"),
        ("registered", "failure_location"),
        ("registered", "success_location"),
        ("lead_created", "missing_success_header"),
    ] {
        let line = format!(
            r#"touchgate_conversions_unconfirmed_total{{event_name="{event}",reason="{reason}"}} 1"#
        );
        assert!(m.contains(&line), "{line} in\n{m}");
    }
    let reasons: Vec<String> = site
        .attempts()
        .iter()
        .map(|a| {
            a["properties"]["reason"]
                .as_str()
                .unwrap_or("confirmed")
                .to_string()
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "status",
            "failure_location",
            "confirmed",
            "failure_location",
            "success_location",
            "confirmed",
            "missing_success_header",
            "confirmed"
        ]
    );
}

#[tokio::test]
async fn the_answer_streams_to_the_client_while_its_start_is_searched() {
    let site = Site::new(&format!("proxy.max_capture_body = 2048\n{RULES}")).await;
    let url = site.url("/admin/login/");
    // The error comes in the second frame, 600 ms after the first.
    let h = answer(
        "200",
        &[
            ("x-answer-header", "content-type: text/html"),
            (
                "x-answer-body",
                r#"<html><h1>Log in</h1>|<ul class="errorlist"><li>wrong</li></ul></html>"#,
            ),
            ("x-answer-delay-ms", "600"),
        ],
    );
    let mut b = http::Request::builder().method("POST").uri(&url);
    for (k, v) in &h {
        b = b.header(*k, *v);
    }
    let started = std::time::Instant::now();
    let resp = client()
        .request(
            b.body(http_body_util::Full::new(Bytes::from(
                "username=bo%40example.com",
            )))
            .unwrap(),
        )
        .await
        .unwrap();
    use http_body_util::BodyExt;
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let first_at = started.elapsed();
    assert_eq!(&first[..], b"<html><h1>Log in</h1>");
    assert!(
        first_at < Duration::from_millis(450),
        "the first bytes waited for the rest: {first_at:?}"
    );
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(std::str::from_utf8(&rest).unwrap().contains("errorlist"));
    site.wait_attempts(1).await;
    assert_eq!(site.attempts()[0]["properties"]["reason"], "failure_body");

    // Only the first max_capture_body bytes are searched.
    send(
        "POST",
        &url,
        &answer(
            "200",
            &[
                ("x-answer-header", "content-type: text/html"),
                ("x-answer-pad", "4096"),
                (
                    "x-answer-body",
                    r#"<p>welcome</p>|<p class="errornote">far below</p>"#,
                ),
            ],
        ),
        "username=cy%40example.com",
    )
    .await;
    let ev = site.wait_events(1).await;
    assert_eq!(ev[0]["status"], 200);
}

#[tokio::test]
async fn an_answer_the_client_stops_reading_is_not_confirmed() {
    let site = Site::new(RULES).await;
    let url = site.url("/admin/login/");
    let h = answer(
        "200",
        &[
            ("x-answer-header", "content-type: text/html"),
            ("x-answer-body", "<html>|<p>still rendering</p>|</html>"),
            ("x-answer-delay-ms", "300"),
        ],
    );
    let mut b = http::Request::builder().method("POST").uri(&url);
    for (k, v) in &h {
        b = b.header(*k, *v);
    }
    let resp = client()
        .request(
            b.body(http_body_util::Full::new(Bytes::from(
                "username=di%40example.com",
            )))
            .unwrap(),
        )
        .await
        .unwrap();
    use http_body_util::BodyExt;
    let mut body = resp.into_body();
    let _ = body.frame().await;
    drop(body);
    eventually("the abandoned answer is counted", || {
        site.tg.metrics.encode().contains(
            r#"touchgate_conversions_unconfirmed_total{event_name="admin_login",reason="body_incomplete"} 1"#,
        )
    })
    .await;
    assert!(site.events().is_empty());
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
    // One time format, and the same touch at the same time in both events.
    let landing_at = ev[0]["first_touch"]["at"].as_str().unwrap();
    assert_eq!(conv["first_touch"]["at"], landing_at);
    assert_eq!(conv["last_touch"]["at"], ev[0]["last_touch"]["at"]);
    for at in [landing_at, ev[0]["occurred_at"].as_str().unwrap()] {
        assert_eq!(at.len(), 24, "{at}");
        assert!(at.ends_with('Z') && at.as_bytes()[19] == b'.', "{at}");
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap();
    }
    assert_eq!(conv["first_touch"]["channel"], "Paid Search");
    assert_eq!(conv["last_touch"]["source"], "bing");
    assert_eq!(conv["device_id"], ev[0]["device_id"]);
    assert!(
        site.tg.metrics.encode().contains(
            r#"touchgate_conversions_total{event_name="signup_submitted",valid="true"} 1"#
        )
    );
}
