//! The per-request capture path, through the public API, as the proxy runs
//! it (src/proxy/service.rs):
//!
//! - `landing/paid_search_new_visitor`: classify + cookies (ids minted,
//!   four `Set-Cookie`) + touch + `x-touch-*` headers + landing event +
//!   PII guard + queue + `serde_json` (the spool's encoding);
//! - `pass/asset_returning_visitor`: what every request carrying touchgate's
//!   cookies pays: classify + cookie verification + `x-touch-*` headers;
//! - `pass/asset_no_cookie`: the plain pass-through pre-check;
//! - `form/signup_1KiB_urlencoded`: parse + normalize + keyed hash + PII
//!   guard + dedupe for a 1 KiB urlencoded signup (target ≥ 200k/s per
//!   core; criterion's "thrpt" line is conversions/s on one thread).
//!
//! `cargo bench --bench capture`. The dedupe set's memory per entry is
//! measured by `cargo bench --bench dedupe_memory`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::request::Parts;
use http::{HeaderMap, Method, Request, StatusCode, header};
use tokio::sync::mpsc;
use touchgate::capture::conversion::FormBody;
use touchgate::capture::{Capture, Class};
use touchgate::config::Config;
use touchgate::identity::Keys;
use touchgate::metrics::Metrics;
use touchgate::pipeline::dedupe::{self, LocalSet, Seen};
use touchgate::pipeline::{EventQueue, QueueItem};

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";
const CONFIG: &str = r#"
[[form]]
path = "/signup"
method = "POST"
event = "signup_submitted"
lead_id = "email"
natural_key = ["lead_id", "day"]
fields = [{ name = "plan", mode = "raw" }]
"#;
const LANDING: &str = "/shoes?utm_source=google&utm_medium=cpc&utm_campaign=spring_sale_2026\
&utm_term=running+shoes&utm_content=ad_b&gclid=Cj0KCQiA4NWrBhD-ARIsAFCKwWtl&gad_source=1";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));

fn capture() -> (Capture, mpsc::Receiver<QueueItem>) {
    let env = |k: &str| (k == "TOUCHGATE_SECRET").then(|| SECRET.to_string());
    let cfg = Config::parse("bench.toml", CONFIG, &env).expect("bench config");
    let metrics = Arc::new(Metrics::new());
    let (queue, rx) = EventQueue::new(cfg.queue.capacity, metrics.clone());
    let keys = Keys::derive(SECRET.as_bytes());
    (Capture::new(Arc::new(cfg), keys, None, metrics, queue), rx)
}

fn parts(method: Method, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "shop.example.com");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("bench request").into_parts().0
}

/// Serialize what the queue holds, as the spool writer does.
fn drain(rx: &mut mpsc::Receiver<QueueItem>) -> usize {
    let mut bytes = 0;
    while let Ok(item) = rx.try_recv() {
        if let QueueItem::Event(envelope) = item {
            bytes += serde_json::to_vec(&envelope.event)
                .map(|v| v.len())
                .unwrap_or(0);
        }
    }
    bytes
}

/// The `Cookie` header of a visitor who landed from paid search before.
fn returning_cookie(cap: &Capture, rx: &mut mpsc::Receiver<QueueItem>) -> String {
    let p = parts(Method::GET, LANDING, &[("sec-fetch-dest", "document")]);
    let class = cap.classify(&p.method, p.uri.path(), &p.headers);
    let v = cap
        .visit(&p, class, false, PEER)
        .expect("a navigation is captured");
    let mut set = HeaderMap::new();
    cap.set_cookies(&v, false, &mut set);
    drain(rx);
    let pairs: Vec<&str> = set
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok()?.split(';').next())
        .collect();
    assert_eq!(pairs.len(), 4, "tg_did, tg_sid, tg_ft, tg_lt");
    pairs.join("; ")
}

/// 1 KiB urlencoded signup; `n` makes the e-mail (the natural key) unique.
fn signup_body(n: u64) -> Bytes {
    let head = format!(
        "email=Lead{n}.Person%40Example.com&name=Jane+Doe&company=Example+Ltd&plan=pro&phone=&message="
    );
    let mut body = head.into_bytes();
    let filler = b"lorem+ipsum+dolor+sit+amet+";
    while body.len() < 1024 {
        body.push(filler[body.len() % filler.len()]);
    }
    Bytes::from(body)
}

fn bench(c: &mut Criterion) {
    let (cap, mut rx) = capture();

    let landing = parts(
        Method::GET,
        LANDING,
        &[
            ("sec-fetch-dest", "document"),
            ("sec-fetch-mode", "navigate"),
            ("referer", "https://www.google.com/"),
            ("user-agent", CHROME),
            ("accept", "text/html,application/xhtml+xml"),
        ],
    );
    let mut g = c.benchmark_group("landing");
    g.throughput(Throughput::Elements(1));
    g.bench_function("paid_search_new_visitor", |b| {
        b.iter(|| {
            let p = black_box(&landing);
            let class = cap.classify(&p.method, p.uri.path(), &p.headers);
            let v = cap.visit(p, class, false, PEER).expect("landing");
            let mut to_app = p.headers.clone();
            cap.touch_headers(&v, &mut to_app);
            let mut to_client = HeaderMap::new();
            cap.set_cookies(&v, false, &mut to_client);
            let event = cap.landing_event(&v, PEER, p).expect("a landing event");
            cap.emit(event);
            black_box((to_app, to_client, drain(&mut rx)))
        })
    });
    g.finish();

    let cookie = returning_cookie(&cap, &mut rx);
    let asset = parts(
        Method::GET,
        "/static/app.js?v=42",
        &[
            ("sec-fetch-dest", "script"),
            ("sec-fetch-mode", "no-cors"),
            ("referer", "https://shop.example.com/shoes"),
            ("user-agent", CHROME),
            ("cookie", &cookie),
        ],
    );
    let bare = parts(
        Method::GET,
        "/static/app.js?v=42",
        &[("sec-fetch-dest", "script"), ("user-agent", CHROME)],
    );
    let mut g = c.benchmark_group("pass");
    g.throughput(Throughput::Elements(1));
    g.bench_function("asset_returning_visitor", |b| {
        b.iter(|| {
            let p = black_box(&asset);
            let class = cap.classify(&p.method, p.uri.path(), &p.headers);
            debug_assert_eq!(class, Class::Pass);
            let v = cap
                .visit(p, class, false, PEER)
                .expect("cookies make a visit");
            let mut to_app = p.headers.clone();
            cap.touch_headers(&v, &mut to_app);
            black_box(to_app)
        })
    });
    g.bench_function("asset_no_cookie", |b| {
        b.iter(|| {
            let p = black_box(&bare);
            let class = cap.classify(&p.method, p.uri.path(), &p.headers);
            black_box(cap.visit(p, class, false, PEER).is_none())
        })
    });
    g.finish();

    // Each iteration a new lead: a distinct e-mail, so dedupe inserts
    // (the worst case) instead of answering "duplicate".
    let form = parts(
        Method::POST,
        "/signup",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("sec-fetch-dest", "document"),
            ("referer", "https://shop.example.com/shoes"),
            ("user-agent", CHROME),
            ("cookie", &cookie),
        ],
    );
    assert_eq!(signup_body(0).len(), 1024);
    let mut set = LocalSet::new(Duration::from_secs(24 * 3600), 1_000_000);
    let mut n = 0u64;
    let mut g = c.benchmark_group("form");
    g.throughput(Throughput::Elements(1));
    g.bench_function("signup_1KiB_urlencoded", |b| {
        b.iter_batched(
            || {
                n += 1;
                signup_body(n)
            },
            |body| {
                let p = black_box(&form);
                let class = cap.classify(&p.method, p.uri.path(), &p.headers);
                let Class::Form(i) = class else {
                    panic!("/signup is a form")
                };
                let rule = cap.form(i).expect("rule");
                let v = cap
                    .visit(p, class, false, PEER)
                    .expect("forms are captured");
                let pending = cap.conversion(rule, &v, p, FormBody::Complete(&body), None, PEER);
                // The app answered 200: PII guard, then the queue.
                cap.confirm(pending, StatusCode::OK);
                let mut seen = Seen::Duplicate;
                while let Ok(item) = rx.try_recv() {
                    if let QueueItem::Event(envelope) = item {
                        seen = set.check_and_insert(
                            dedupe::key_of(&envelope.event.event_id),
                            Instant::now(),
                        );
                    }
                }
                assert_eq!(seen, Seen::New, "every signup is a new lead");
                body
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
