//! Drives visitors through a running touchgate to produce events for the
//! warehouse benchmark (benches/warehouse.sh): each visitor lands one to
//! three times (each landing a new session, from one of a dozen sources),
//! and one in five then signs up. Visitors are kept, with their cookies, in
//! a state file, so that a later run (a later day, with the binary's clock
//! moved) brings a share of them back: journeys over several days, as the
//! attribution models see them in production.
//!
//! `cargo bench --bench warehouse_events -- PROXY_ADDR VISITORS SEED STATE_FILE [RETURNING]`
//! prints the number of requests sent. RETURNING (default 0.3) is the share
//! of the visitors that come from the state file when it has enough.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const CONCURRENCY: usize = 32;
const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      Chrome/131.0 Safari/537.36";

/// Where a landing comes from: a path with campaign parameters, and a referrer.
const SOURCES: [(&str, Option<&str>); 12] = [
    (
        "/?utm_source=google&utm_medium=cpc&utm_campaign=brand",
        None,
    ),
    (
        "/shoes?utm_source=google&utm_medium=cpc&utm_campaign=shoes&gclid=x1",
        None,
    ),
    (
        "/?utm_source=facebook&utm_medium=cpc&utm_campaign=retarget",
        None,
    ),
    (
        "/?utm_source=newsletter&utm_medium=email&utm_campaign=weekly",
        None,
    ),
    (
        "/?utm_source=partner&utm_medium=affiliate&utm_campaign=p1",
        None,
    ),
    ("/blog/running", Some("https://www.google.com/")),
    ("/blog/trail", Some("https://www.bing.com/")),
    ("/", Some("https://www.facebook.com/")),
    ("/pricing", Some("https://news.example.org/article")),
    ("/", None),
    ("/pricing", None),
    (
        "/?utm_source=tiktok&utm_medium=paid_social&utm_campaign=launch",
        None,
    ),
];

type Jar = BTreeMap<String, String>;

fn cookie(jar: &Jar) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn request(
    client: &Client<HttpConnector, Full<Bytes>>,
    jar: &mut Jar,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Result<(), String> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(url)
        .header("user-agent", CHROME)
        .header("sec-fetch-dest", "document")
        .header("sec-fetch-mode", "navigate")
        .header("accept", "text/html");
    if !jar.is_empty() {
        b = b.header("cookie", cookie(jar));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("{method} {url}: {}", resp.status()));
    }
    for h in resp.headers().get_all("set-cookie") {
        let Some(pair) = h.to_str().ok().and_then(|s| s.split(';').next()) else {
            continue;
        };
        if let Some((k, v)) = pair.split_once('=') {
            jar.insert(k.to_string(), v.to_string());
        }
    }
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn visit(
    client: &Client<HttpConnector, Full<Bytes>>,
    proxy: &str,
    jar: &mut Jar,
    id: u64,
    rng: &mut StdRng,
    sent: &AtomicU64,
) -> Result<(), String> {
    let landings = rng.random_range(1..=3);
    for _ in 0..landings {
        // Each landing of a journey is a visit of its own.
        jar.remove("tg_sid");
        let (path, referer) = SOURCES[rng.random_range(0..SOURCES.len())];
        let headers: Vec<(&str, &str)> = referer.map(|r| ("referer", r)).into_iter().collect();
        request(
            client,
            jar,
            "GET",
            &format!("http://{proxy}{path}"),
            &headers,
            String::new(),
        )
        .await?;
        sent.fetch_add(1, Ordering::Relaxed);
    }
    if rng.random_bool(0.2) {
        request(
            client,
            jar,
            "POST",
            &format!("http://{proxy}/signup"),
            &[("content-type", "application/x-www-form-urlencoded")],
            format!("email=visitor{id}%40example.com&plan=pro"),
        )
        .await?;
        sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs every bench binary once without
    // arguments (`cargo bench` passes `--bench`): there is nothing to drive
    // then, since benches/warehouse.sh starts the proxy this writes to.
    if raw.is_empty() {
        println!("warehouse_events: run by benches/warehouse.sh; nothing to do without arguments");
        return;
    }
    let args: Vec<String> = raw.into_iter().filter(|a| a != "--bench").collect();
    let [proxy, visitors, seed, state, rest @ ..] = &args[..] else {
        eprintln!("usage: warehouse_events PROXY_ADDR VISITORS SEED STATE_FILE [RETURNING]");
        std::process::exit(2);
    };
    let visitors: u64 = visitors.parse().expect("VISITORS is a number");
    let seed: u64 = seed.parse().expect("SEED is a number");
    let returning: f64 = rest
        .first()
        .map(|r| r.parse().expect("RETURNING is a share"))
        .unwrap_or(0.3);
    // The visitors of earlier runs: id and cookies, one JSON object a line.
    let known: Vec<(u64, Jar)> = std::fs::read_to_string(state)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let next_id = known.iter().map(|(id, _)| id + 1).max().unwrap_or(0);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut plan: Vec<(u64, Jar)> = Vec::new();
    for n in 0..visitors {
        if !known.is_empty() && rng.random_bool(returning) {
            plan.push(known[rng.random_range(0..known.len())].clone());
        } else {
            plan.push((next_id + n, Jar::new()));
        }
    }

    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let sent = Arc::new(AtomicU64::new(0));
    let chunks: Vec<Vec<(u64, Jar)>> = plan
        .chunks(plan.len().div_ceil(CONCURRENCY).max(1))
        .map(<[_]>::to_vec)
        .collect();
    let mut tasks = Vec::new();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let client = client.clone();
        let proxy = proxy.clone();
        let sent = sent.clone();
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(i as u64));
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::with_capacity(chunk.len());
            for (id, mut jar) in chunk {
                visit(&client, &proxy, &mut jar, id, &mut rng, &sent)
                    .await
                    .unwrap_or_else(|e| panic!("visitor {id}: {e}"));
                done.push((id, jar));
            }
            done
        }));
    }
    let mut all: BTreeMap<u64, Jar> = known.into_iter().collect();
    for t in tasks {
        for (id, jar) in t.await.expect("a visitor task") {
            all.insert(id, jar);
        }
    }
    let lines: String = all
        .iter()
        .map(|v| format!("{}\n", serde_json::to_string(&v).unwrap_or_default()))
        .collect();
    std::fs::write(state, lines).expect("writing the state file");
    println!("{}", sent.load(Ordering::Relaxed));
}
