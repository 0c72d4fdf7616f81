//! The meta_capi sink against a local stand-in for the Conversions API that
//! checks every request against Meta's documented format: hashed match keys
//! only (64 hex, no raw e-mail anywhere), `event_id` = the page's `cid`,
//! `fbc` as `fb.1.<ms>.<fbclid>`, ≤ 1,000 events per request, consent
//! respected, and Meta's refusals told apart from its outages.

#[path = "support/ad_platform.rs"]
mod ad_platform;
#[path = "support/upstream.rs"]
mod support;

use ad_platform::{Answer, FakePlatform, Recorded};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;
use time::OffsetDateTime;
use touchgate::event::{AdMatch, Envelope, Event, Origin};
use touchgate::sink::meta_capi::{MetaCapiSink, MetaCapiSinkConfig};
use touchgate::sink::{Sink, SinkError};

const PIXEL: &str = "1234567890";
const TOKEN: &str = "EAAtest-token";
const RAW_EMAIL: &str = "Jane.Doe@Example.com";
const RAW_PHONE: &str = "33612345678";

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn is_hex64(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// What the Conversions API documents for a website event batch.
fn meta_format(r: &Recorded) -> Vec<String> {
    let mut p = Vec::new();
    if r.method != "POST" {
        p.push(format!("method {}", r.method));
    }
    if r.target != format!("/v25.0/{PIXEL}/events") {
        p.push(format!("path {}", r.target));
    }
    if !r
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/json"))
    {
        p.push("content-type is not JSON".into());
    }
    let text = String::from_utf8_lossy(&r.body).to_lowercase();
    if text.contains(&RAW_EMAIL.to_lowercase()) || text.contains(RAW_PHONE) {
        p.push("a raw identifier is in the body".into());
    }
    let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
        p.push("body is not JSON".into());
        return p;
    };
    if body["access_token"] != TOKEN {
        p.push("access_token missing".into());
    }
    let Some(data) = body["data"].as_array() else {
        p.push("no data array".into());
        return p;
    };
    if data.is_empty() || data.len() > 1000 {
        p.push(format!("{} events in one request", data.len()));
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    for e in data {
        if e["event_name"].as_str().is_none_or(str::is_empty) {
            p.push("event_name missing".into());
        }
        match e["event_time"].as_i64() {
            Some(t) if t >= now - 7 * 86400 && t <= now + 300 => {}
            other => p.push(format!(
                "event_time {other:?} is not unix seconds within the last 7 days"
            )),
        }
        if e["event_id"].as_str().is_none_or(str::is_empty) {
            p.push("event_id missing".into());
        }
        if e["action_source"] != "website" {
            p.push("action_source is not website".into());
        }
        if !e["event_source_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://") || u.starts_with("http://"))
        {
            p.push("event_source_url missing".into());
        }
        let u = &e["user_data"];
        // Required for website events; a sink sends it only when it opts
        // in (`send_user_agent`), and the tests that opt in check it is there.
        if let Some(ua) = u.get("client_user_agent")
            && ua.as_str().is_none_or(str::is_empty)
        {
            p.push("client_user_agent empty".into());
        }
        if let Some(ip) = u.get("client_ip_address")
            && ip
                .as_str()
                .and_then(|s| s.parse::<std::net::IpAddr>().ok())
                .is_none()
        {
            p.push(format!("client_ip_address {ip} is not an IP address"));
        }
        let mut keys = 0;
        for k in [
            "em",
            "ph",
            "external_id",
            "fn",
            "ln",
            "ct",
            "st",
            "zp",
            "country",
            "db",
            "ge",
        ] {
            if let Some(v) = u.get(k) {
                keys += 1;
                if !v
                    .as_array()
                    .is_some_and(|a| !a.is_empty() && a.iter().all(is_hex64))
                {
                    p.push(format!("{k} is not an array of SHA-256 hex"));
                }
            }
        }
        if let Some(fbc) = u.get("fbc") {
            keys += 1;
            let parts: Vec<&str> = fbc.as_str().unwrap_or("").splitn(4, '.').collect();
            let ok = parts.len() == 4
                && parts[0] == "fb"
                && parts[1] == "1"
                && !parts[2].is_empty()
                && parts[2].bytes().all(|b| b.is_ascii_digit())
                && !parts[3].is_empty();
            if !ok {
                p.push(format!("fbc {fbc} is not fb.1.<ms>.<fbclid>"));
            }
        }
        if keys == 0 {
            p.push("no customer information parameter".into());
        }
        for k in u
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if ![
                "em",
                "ph",
                "external_id",
                "fn",
                "ln",
                "ct",
                "st",
                "zp",
                "country",
                "db",
                "ge",
                "fbc",
                "client_user_agent",
                "client_ip_address",
            ]
            .contains(&k.as_str())
            {
                p.push(format!("unexpected user_data key {k}"));
            }
        }
    }
    p
}

fn sink(url: &str, extra: &str) -> MetaCapiSink {
    let cfg: MetaCapiSinkConfig = toml::from_str(&format!(
        "pixel_id = \"{PIXEL}\"\naccess_token_env = \"META_TOKEN\"\nendpoint = \"{url}\"\ntimeout = \"5s\"\n\
         events = {{ signup_submitted = \"Lead\", account_created = \"CompleteRegistration\" }}\nsend_user_agent = true\n{extra}"
    ))
    .unwrap();
    MetaCapiSink::new(&cfg, &|k| (k == "META_TOKEN").then(|| TOKEN.to_string())).unwrap()
}

fn conversion(i: usize, name: &str) -> Envelope {
    let at = OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let mut e = Event::new(format!("{i:032x}"), name.into(), Origin::Proxy, at, at);
    e.consent.ads = true;
    if i.is_multiple_of(2) {
        e.client.context = Some(serde_json::json!({"cid": format!("cid-{i}")}));
    }
    Envelope {
        event: e,
        ad_match: Some(AdMatch {
            em: Some(sha256_hex(&RAW_EMAIL.trim().to_lowercase())),
            ph: i.is_multiple_of(3).then(|| sha256_hex(RAW_PHONE)),
            external_id: Some(sha256_hex(&format!("lead-{i}"))),
            fbc: (i % 2 == 1).then(|| format!("fb.1.1764410000000.IwAR{i}x")),
            client_user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)".into()),
            event_source_url: Some("https://shop.example/signup?utm_source=facebook".into()),
            client_ip: Some("203.0.113.9".into()),
            ..AdMatch::default()
        }),
    }
}

#[tokio::test]
async fn sends_the_documented_payload_for_consented_mapped_events() {
    let meta = FakePlatform::start(
        Answer::new(200, r#"{"events_received":3,"fbtrace_id":"x"}"#),
        meta_format,
    )
    .await;
    let sink = sink(&meta.url(), "test_event_code = \"TEST123\"");

    let mut no_consent = conversion(10, "signup_submitted");
    no_consent.event.consent.ads = false;
    let batch = vec![
        conversion(0, "signup_submitted"),
        conversion(1, "account_created"),
        conversion(2, "signup_submitted"),
        conversion(3, "landing"), // not mapped
        no_consent,
    ];
    let accepted: Vec<Envelope> = batch.iter().filter(|e| sink.accepts(e)).cloned().collect();
    assert_eq!(
        accepted.len(),
        3,
        "unmapped and unconsented events are not for Meta"
    );
    for e in &accepted {
        sink.check(e).unwrap();
    }
    // Even handed everything, the sink sends only what it accepts.
    sink.send(&batch).await.unwrap();

    assert_eq!(meta.problems(), Vec::<String>::new());
    let requests = meta.requests();
    assert_eq!(requests.len(), 1);
    let body = requests[0].json();
    assert_eq!(body["test_event_code"], "TEST123");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let names: Vec<&str> = data
        .iter()
        .map(|e| e["event_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Lead", "CompleteRegistration", "Lead"]);
    // event_id is the page's cid when there is one, else touchgate's id.
    assert_eq!(data[0]["event_id"], "cid-0");
    assert_eq!(data[1]["event_id"], format!("{:032x}", 1));
    assert_eq!(data[2]["event_id"], "cid-2");
    assert_eq!(
        data[0]["user_data"]["em"][0],
        sha256_hex("jane.doe@example.com")
    );
    assert_eq!(data[0]["user_data"]["ph"][0], sha256_hex(RAW_PHONE));
    assert_eq!(data[1]["user_data"]["fbc"], "fb.1.1764410000000.IwAR1x");
    for e in data {
        assert_eq!(
            e["user_data"]["client_user_agent"],
            "Mozilla/5.0 (X11; Linux x86_64)"
        );
        assert!(e["user_data"].get("client_ip_address").is_none());
    }
    assert_eq!(
        data[0]["event_time"],
        accepted[0].event.occurred_at.unix_timestamp()
    );
}

#[tokio::test]
async fn batches_over_1000_events_are_split() {
    let meta = FakePlatform::start(Answer::new(200, r#"{"events_received":1}"#), meta_format).await;
    let sink = sink(&meta.url(), "");
    let batch: Vec<Envelope> = (0..2345)
        .map(|i| conversion(i, "signup_submitted"))
        .collect();
    sink.send(&batch).await.unwrap();
    assert_eq!(meta.problems(), Vec::<String>::new());
    let sizes: Vec<usize> = meta
        .requests()
        .iter()
        .map(|r| r.json()["data"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [1000, 1000, 345]);
}

#[tokio::test]
async fn invalid_events_are_caught_before_they_can_spoil_a_batch() {
    let meta = FakePlatform::start(Answer::new(200, r#"{"events_received":1}"#), meta_format).await;
    let sink = sink(&meta.url(), "");
    let mut old = conversion(0, "signup_submitted");
    old.event.occurred_at = OffsetDateTime::now_utc() - time::Duration::days(8);
    let mut no_ua = conversion(1, "signup_submitted");
    no_ua.ad_match.as_mut().unwrap().client_user_agent = None;
    let mut raw = conversion(2, "signup_submitted");
    raw.ad_match.as_mut().unwrap().em = Some(RAW_EMAIL.into());
    let mut nothing = conversion(3, "signup_submitted");
    nothing.ad_match = None;
    for bad in [&old, &no_ua, &raw, &nothing] {
        assert!(sink.check(bad).is_err(), "{:?}", bad.ad_match);
    }
    // Had one slipped through, the sink still leaves it out rather than
    // have Meta refuse the good events with it.
    let good = conversion(4, "signup_submitted");
    sink.send(&[old, good, raw]).await.unwrap();
    assert_eq!(meta.problems(), Vec::<String>::new());
    let requests = meta.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].json()["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn refusals_are_rejected_and_outages_retryable() {
    let meta = FakePlatform::start(Answer::new(200, r#"{"events_received":1}"#), meta_format).await;
    let sink = sink(&meta.url(), "");
    let batch = vec![conversion(0, "signup_submitted")];

    meta.queue(Answer::new(
        400,
        r#"{"error":{"message":"Invalid parameter","type":"OAuthException","code":100,"error_subcode":2804019,"error_user_msg":"The event_time is too old","fbtrace_id":"Abc"}}"#,
    ));
    match sink.send(&batch).await {
        Err(SinkError::Rejected { message }) => {
            assert!(message.contains("Invalid parameter"), "{message}");
            assert!(message.contains("The event_time is too old"), "{message}");
        }
        other => panic!("400 must be Rejected: {other:?}"),
    }

    meta.queue(Answer::new(
        500,
        r#"{"error":{"message":"An unknown error occurred","code":1}}"#,
    ));
    assert!(matches!(
        sink.send(&batch).await,
        Err(SinkError::Retryable { .. })
    ));

    meta.queue(Answer::new(429, "").header("retry-after", "7"));
    match sink.send(&batch).await {
        Err(SinkError::Retryable { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)))
        }
        other => panic!("429 must be Retryable: {other:?}"),
    }

    // Meta's rate limit comes as a 400 with code 17/613/…: retry it.
    meta.queue(Answer::new(
        400,
        r#"{"error":{"message":"User request limit reached","code":17}}"#,
    ));
    assert!(matches!(
        sink.send(&batch).await,
        Err(SinkError::Retryable { .. })
    ));

    sink.send(&batch).await.unwrap();
    assert_eq!(meta.requests().len(), 5);
    assert_eq!(meta.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retryable() {
    // A port with nothing listening: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = sink(&format!("http://127.0.0.1:{port}"), "");
    assert!(matches!(
        sink.send(&[conversion(0, "signup_submitted")]).await,
        Err(SinkError::Retryable { .. })
    ));
}

#[tokio::test]
async fn user_agent_and_ip_are_opt_ins_and_form_keys_are_hashed() {
    let meta = FakePlatform::start(Answer::new(200, r#"{"events_received":1}"#), meta_format).await;
    let mut with_keys = conversion(0, "signup_submitted");
    let m = with_keys.ad_match.as_mut().unwrap();
    m.user_data.insert("fn".into(), sha256_hex("jane"));
    m.user_data.insert("zp".into(), sha256_hex("10115"));
    m.user_data.insert("country".into(), sha256_hex("de"));

    let off: MetaCapiSinkConfig = toml::from_str(&format!(
        "pixel_id = \"{PIXEL}\"\naccess_token_env = \"META_TOKEN\"\nendpoint = \"{}\"\nevents = {{ signup_submitted = \"Lead\" }}\n",
        meta.url()
    ))
    .unwrap();
    assert!(
        !off.send_client_ip && !off.send_user_agent,
        "both off by default"
    );
    let default_sink =
        MetaCapiSink::new(&off, &|k| (k == "META_TOKEN").then(|| TOKEN.to_string())).unwrap();
    default_sink
        .send(std::slice::from_ref(&with_keys))
        .await
        .unwrap();
    let u = meta.requests()[0].json()["data"][0]["user_data"].clone();
    assert!(u.get("client_user_agent").is_none());
    assert!(u.get("client_ip_address").is_none());
    assert_eq!(u["fn"][0], sha256_hex("jane"));
    assert_eq!(u["zp"][0], sha256_hex("10115"));
    assert_eq!(u["country"][0], sha256_hex("de"));

    let on = sink(&meta.url(), "send_client_ip = true");
    on.send(std::slice::from_ref(&with_keys)).await.unwrap();
    let u = meta.requests()[1].json()["data"][0]["user_data"].clone();
    assert_eq!(u["client_ip_address"], "203.0.113.9");
    assert_eq!(u["client_user_agent"], "Mozilla/5.0 (X11; Linux x86_64)");
    assert_eq!(meta.problems(), Vec::<String>::new());
}

/// Through the proxy: a landing with an fbclid, then a signup whose form
/// carries Meta's customer-information fields, reaches Meta hashed under
/// Meta's rules, and the analytics event holds none of it.
#[tokio::test]
async fn form_user_data_reaches_meta_hashed_and_nowhere_else() {
    let meta = FakePlatform::start(Answer::new(200, r#"{"events_received":1}"#), meta_format).await;
    let up = support::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"
[[form]]
path = "/signup"
event = "signup_submitted"
lead_id = "email"
user_data = {{ fn = "first_name", ln = "last_name", ct = "city", zp = "zip", country = "country", db = "birthdate", ge = "gender" }}

[[sink]]
type = "file"
path = "{}"
[sink.delivery]
linger = "10ms"

[[sink]]
type = "meta_capi"
pixel_id = "{PIXEL}"
access_token_env = "META_TOKEN"
endpoint = "{}"
events = {{ signup_submitted = "Lead" }}
send_user_agent = true
[sink.delivery]
linger = "10ms"
"#,
        dir.path().join("events.jsonl").display(),
        meta.url()
    );
    let env = |k: &str| match k {
        "META_TOKEN" => Some(TOKEN.to_string()),
        other => support::env(other),
    };
    let toml = support::config_toml(up.addr(), dir.path(), &extra);
    let cfg = touchgate::config::Config::parse("test.toml", &toml, &env).unwrap();
    let tg = touchgate::app::start(cfg, &env).await.unwrap();
    let site = support::Site { up, tg, dir };

    let (landing, _) = support::get(
        &site.url("/pricing?utm_source=facebook&utm_medium=paid_social&fbclid=IwAR-click_9"),
        &[("accept", "text/html"), ("user-agent", "Mozilla/5.0 Test")],
    )
    .await;
    let cookies: Vec<String> = landing
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
        .collect();
    let body = "email=Jane.Doe%40Example.com&first_name=Mary-Ann&last_name=O%27Brien&city=Menlo+Park&zip=94025-1234&country=US&birthdate=1990-02-17&gender=Female";
    let (signup, _) = support::send(
        "POST",
        &site.url("/signup"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &cookies.join("; ")),
            ("user-agent", "Mozilla/5.0 Test"),
        ],
        body,
    )
    .await;
    assert_eq!(signup.status, 200);

    support::eventually("Meta received the lead", || !meta.requests().is_empty()).await;
    assert_eq!(meta.problems(), Vec::<String>::new());
    let u = meta.requests()[0].json()["data"][0]["user_data"].clone();
    assert_eq!(u["em"][0], sha256_hex("jane.doe@example.com"));
    for (key, normal) in [
        ("fn", "maryann"),
        ("ln", "obrien"),
        ("ct", "menlopark"),
        ("zp", "94025"),
        ("country", "us"),
        ("db", "19900217"),
        ("ge", "f"),
    ] {
        assert_eq!(u[key][0], sha256_hex(normal), "{key}");
    }
    let fbc = u["fbc"].as_str().unwrap();
    assert!(
        fbc.starts_with("fb.1.") && fbc.ends_with(".IwAR-click_9"),
        "{fbc}"
    );
    assert_eq!(u["client_user_agent"], "Mozilla/5.0 Test");
    assert!(u.get("client_ip_address").is_none());

    let events = site.wait_events(2).await;
    let raw = serde_json::to_string(&events).unwrap();
    for leaked in ["IwAR-click_9", "Mary", "Brien", "Menlo", "94025", "1990"] {
        assert!(!raw.contains(leaked), "{leaked} in the analytics events");
    }
}
