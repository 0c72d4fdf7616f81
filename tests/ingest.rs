//! Offline ingest and client beacons. Every `occurred_at` sent is relative
//! to the clock the test runs under.

#[path = "support/upstream.rs"]
mod support;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use time::OffsetDateTime;
use touchgate::event::rfc3339_millis;

/// `ago` before now, as ingest takes it.
fn occurred(ago: time::Duration) -> String {
    rfc3339_millis::format(OffsetDateTime::now_utc() - ago)
}

/// A UTC day safely in the past, as `YYYY-MM-DD`, for lines that must fall
/// on one day whatever the time now.
fn past_day() -> String {
    (OffsetDateTime::now_utc() - time::Duration::days(2))
        .date()
        .to_string()
}

async fn site() -> (Upstream, touchgate::app::Running, tempfile::TempDir) {
    let Site { up, tg, dir } = Site::new(
        r#"
[[form]]
path = "/signup"
event = "signup_submitted"
lead_id = "email"
user_id = "uid"

[[ingest]]
event = "account_created"
natural_key = ["user_id", "day"]
"#,
    )
    .await;
    (up, tg, dir)
}

async fn ingest(
    tg: &touchgate::app::Running,
    token: Option<&str>,
    body: &str,
) -> (u16, Vec<serde_json::Value>) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/x-ndjson")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let (p, body) = send(
        "POST",
        &format!("http://{}/v1/events", tg.admin_addr),
        &headers,
        body.to_string(),
    )
    .await;
    let lines = String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (p.status.as_u16(), lines)
}

#[tokio::test]
async fn auth_is_required() {
    let (_up, tg, _d) = site().await;
    let line = json!({"event_name": "account_created", "occurred_at": occurred(time::Duration::hours(1)), "user_id": "u1"})
        .to_string();
    assert_eq!(ingest(&tg, None, &line).await.0, 401);
    assert_eq!(ingest(&tg, Some("wrong"), &line).await.0, 401);
    assert_eq!(ingest(&tg, Some("ingest-token"), &line).await.0, 200);
}

#[tokio::test]
async fn an_empty_or_all_bad_batch_is_an_error_naming_the_lines() {
    let (_up, tg, _d) = site().await;
    for empty in ["", "\n  \n", "[]"] {
        let (p, body) = send(
            "POST",
            &format!("http://{}/v1/events", tg.admin_addr),
            &[("authorization", "Bearer ingest-token")],
            empty.to_string(),
        )
        .await;
        assert_eq!(p.status, 400, "{empty:?}");
        assert!(String::from_utf8_lossy(&body).contains("no event in the body"));
    }
    let (status, results) =
        ingest(&tg, Some("ingest-token"), "not json\n{\"event_name\": 1}").await;
    assert_eq!(status, 422);
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r["status"] == "rejected"));
    assert_eq!(results[1]["line"], 2);
    assert!(results[0]["error"].as_str().unwrap().contains("not JSON"));
}

#[tokio::test]
async fn mixed_lines_duplicates_and_hashing_like_forms() {
    let (_up, tg, dir) = site().await;
    // The first two lines are one UTC day (16:30Z), so one natural key.
    let day = past_day();
    let body = [
        json!({"event_name": "account_created", "occurred_at": format!("{day}T10:00:00Z"), "user_id": "Ann@Example.com", "properties": {"plan": "pro"}}).to_string(),
        json!({"event_name": "account_created", "occurred_at": format!("{day}T18:30:00+02:00"), "user_id": "ann@example.com"}).to_string(),
        "not json".to_string(),
        json!({"event_name": "Bad Name", "occurred_at": format!("{day}T10:00:00Z"), "user_id": "u"}).to_string(),
        json!({"event_name": "plan_upgraded", "occurred_at": format!("{day}T11:00:00Z"), "user_id": "u-42", "properties": {"to": "team"}}).to_string(),
        json!({"event_name": "plan_upgraded", "occurred_at": format!("{day}T11:00:00Z"), "user_id": "u-42", "properties": {"to": "team"}}).to_string(),
        json!({"event_name": "account_created", "occurred_at": format!("{day}T10:00:00Z")}).to_string(),
    ]
    .join("\n");
    let (status, results) = ingest(&tg, Some("ingest-token"), &body).await;
    assert_eq!(status, 200);
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "accepted",
            "duplicate",
            "rejected",
            "rejected",
            "accepted",
            "duplicate",
            "rejected"
        ]
    );
    assert_eq!(results[2]["line"], 3);
    assert!(results[3]["error"].as_str().unwrap().contains("event_name"));

    // A retried upload duplicates nothing.
    let (_, again) = ingest(&tg, Some("ingest-token"), &body).await;
    assert!(again.iter().all(|r| r["status"] != "accepted"));

    // The same person from a form has the same user_id hash.
    let form = "email=x@example.org&uid=ann@example.com";
    send(
        "POST",
        &format!("http://{}/signup", tg.proxy_addr),
        &[("content-type", "application/x-www-form-urlencoded")],
        form,
    )
    .await;
    let path = dir.path().join("events.jsonl");
    eventually("3 events", || events(&path).len() >= 3).await;
    let ev = events(&path);
    let created = ev
        .iter()
        .find(|e| e["event_name"] == "account_created")
        .unwrap();
    let signup = ev
        .iter()
        .find(|e| e["event_name"] == "signup_submitted")
        .unwrap();
    assert_eq!(created["origin"], "ingest");
    assert_eq!(
        created["user_id"], signup["user_id"],
        "ingest and forms hash identifiers alike"
    );
    assert_eq!(
        created["natural_key"],
        format!("user_id={}|day={day}", created["user_id"].as_str().unwrap())
    );
    assert_eq!(created["properties"]["plan"], "pro");
    assert!(
        !serde_json::to_string(&ev)
            .unwrap()
            .to_lowercase()
            .contains("ann@example.com")
    );
}

#[tokio::test]
async fn json_array_and_limits() {
    let (_up, tg, _d) = site().await;
    let at = occurred(time::Duration::days(1));
    let arr =
        json!([{"event_name": "account_created", "occurred_at": at, "user_id": "u9"}]).to_string();
    let (status, results) = ingest(&tg, Some("ingest-token"), &arr).await;
    assert_eq!(status, 200);
    assert_eq!(results[0]["status"], "accepted");
    let many: String = (0..10_001)
        .map(|i| {
            format!(
                "{}\n",
                json!({"event_name": "x", "occurred_at": at, "user_id": i.to_string()})
            )
        })
        .collect();
    assert_eq!(ingest(&tg, Some("ingest-token"), &many).await.0, 413);
}

#[tokio::test]
async fn beacons_are_counted_and_emitted() {
    let (_up, tg, dir) = site().await;
    let url = format!("http://{}/_tg/b", tg.proxy_addr);
    let (p, _) = send(
        "POST",
        &url,
        &[("content-type", "text/plain")],
        r#"{"event_name":"signup_submitted","cid":"c-77"}"#,
    )
    .await;
    assert_eq!(p.status, 204);
    let (p, _) = send(
        "POST",
        &url,
        &[],
        r#"{"event_name":"not_configured","cid":"c-1"}"#,
    )
    .await;
    assert_eq!(p.status, 400);
    let (p, _) = send("POST", &url, &[], "x".repeat(5000)).await;
    assert_eq!(p.status, 400);
    let path = dir.path().join("events.jsonl");
    eventually("beacon event", || !events(&path).is_empty()).await;
    let e = &events(&path)[0];
    assert_eq!(e["origin"], "beacon");
    assert_eq!(e["client"]["context"]["cid"], "c-77");
    assert!(
        tg.metrics
            .encode()
            .contains(r#"touchgate_client_beacons_total{event_name="signup_submitted"} 1"#)
    );
    // The snippet is served, small, with this deployment's form rules.
    let (p, js) = get(&format!("http://{}/_tg/c.js", tg.proxy_addr), &[]).await;
    assert_eq!(p.status, 200);
    let js = String::from_utf8(js.to_vec()).unwrap();
    assert!(
        js.contains("\"/signup\"") && js.contains("signup_submitted") && js.contains("sendBeacon")
    );
    let (p, gz) = get(
        &format!("http://{}/_tg/c.js", tg.proxy_addr),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(p.headers.get("content-encoding").unwrap(), "gzip");
    assert!(gz.len() < 1024, "snippet is {} bytes gzipped", gz.len());
    // Paths next to the client paths go to the app.
    let (p, _) = get(&format!("http://{}/_tg/../c.js", tg.proxy_addr), &[]).await;
    assert_eq!(p.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_reaches_the_spool_whole_and_in_order() {
    // Hundreds of events in one request are one pipeline batch: one group
    // commit in the spool, delivered in line order.
    let (_up, tg, dir) = site().await;
    let n = 300;
    let start = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let body: Vec<String> = (0..n)
        .map(|i| {
            let at = rfc3339_millis::format(start + time::Duration::seconds(i as i64));
            json!({"event_name": "plan_upgraded", "occurred_at": at, "user_id": format!("u-{i}"), "properties": {"seq": i}}).to_string()
        })
        .collect();
    let (status, results) = ingest(&tg, Some("ingest-token"), &body.join("\n")).await;
    assert_eq!(status, 200);
    assert!(results.iter().all(|r| r["status"] == "accepted"));
    let file = dir.path().join("events.jsonl");
    eventually("300 events in the file sink", || events(&file).len() == n).await;
    let seqs: Vec<u64> = events(&file)
        .iter()
        .map(|e| e["properties"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..n as u64).collect::<Vec<_>>());
}

/// What the collector saw: the events it accepted, and how many requests
/// it refused.
#[derive(Default)]
struct Collected {
    events: Mutex<Vec<serde_json::Value>>,
    refused: AtomicUsize,
}

/// An http sink's collector that answers 503 until `down_for` has passed
/// since it started, then 200.
async fn collector(down_for: Duration) -> (SocketAddr, Arc<Collected>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Collected::default());
    let up_at = Instant::now() + down_for;
    let out = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        let status = if Instant::now() < up_at {
                            seen.refused.fetch_add(1, Ordering::SeqCst);
                            503
                        } else {
                            let mut events = seen.events.lock().unwrap();
                            for line in String::from_utf8_lossy(&body).lines() {
                                events.push(serde_json::from_str(line).unwrap());
                            }
                            200
                        };
                        let mut r = http::Response::new(http_body_util::Full::new(Bytes::new()));
                        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, hyper::Error>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_old_event_is_retried_through_a_minute_long_outage() {
    // A back-office event that happened 30 days ago, with the sink down for
    // a minute after it is ingested. max_age (an hour, set here so the test
    // does not lean on the default) counts from when touchgate took the
    // event in, so the event is retried, not dead-lettered, and delivered
    // once the collector is back.
    const OUTAGE: Duration = Duration::from_secs(60);
    let (addr, collected) = collector(OUTAGE).await;
    let up = start().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "[[sink]]\ntype = \"http\"\nurl = \"http://{addr}/batch\"\n[sink.delivery]\nlinger = \"10ms\"\nbackoff_initial = \"100ms\"\nbackoff_max = \"1s\"\nmax_age = \"1h\"\n"
    );
    let tg = touchgate(&config_toml(up.addr(), dir.path(), &sink)).await;
    let at = occurred(time::Duration::days(30));
    let line = json!({"event_name": "order_paid", "occurred_at": at, "user_id": "u-backfill"});
    let (status, results) = ingest(&tg, Some("ingest-token"), &line.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(results[0]["status"], "accepted", "{results:?}");
    let id = results[0]["event_id"].as_str().unwrap().to_string();

    let waited = Instant::now();
    while collected.events.lock().unwrap().is_empty()
        && waited.elapsed() < OUTAGE + Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = collected.refused.load(Ordering::SeqCst);
    let events = collected.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "delivered once the collector was back");
    assert_eq!(events[0]["event_id"], id);
    assert_eq!(events[0]["occurred_at"], at);
    assert!(
        refused >= 20,
        "retried all through the outage: only {refused} attempts refused"
    );
    let dead = dir.path().join("spool/dead-letter/http.jsonl");
    assert_eq!(
        std::fs::read_to_string(&dead).unwrap_or_default(),
        "",
        "nothing in {}",
        dead.display()
    );
    let metrics = tg.metrics.encode();
    assert!(
        metrics.contains(r#"touchgate_sink_delivered_total{sink="http"} 1"#),
        "{metrics}"
    );
    assert!(
        !metrics.lines().any(
            |l| l.starts_with(r#"touchgate_sink_dead_letter_total{sink="http"}"#)
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    eprintln!(
        "event of {at} delivered {:?} after ingest, {refused} attempts refused",
        waited.elapsed()
    );
}
