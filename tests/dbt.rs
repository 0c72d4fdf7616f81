//! The dbt package (deploy/warehouse/dbt) on events touchgate itself
//! captured: the real binary in front of a test app on 127.0.0.1, known
//! journeys driven through it on days before today (libfaketime moves the
//! binary's wall clock by whole days back from now, so nothing depends on
//! the calendar date), the file sink's output read by DuckDB and the
//! postgres sink's table on a real PostgreSQL. `dbt build` runs on both and
//! the test asserts the exact credits of every journey under every model,
//! and that both targets give the same numbers.
//!
//! dbt comes from a virtual environment with tests/dbt/requirements.txt
//! installed: `$TG_DBT_VENV`, else `dbt-venv` in Cargo's target directory.
//! `.ci/run` creates it; outside CI the test creates it when missing.

#[path = "support/chromium.rs"]
mod chromium_support;
#[path = "support/postgres.rs"]
#[allow(dead_code)]
mod pg_support;
#[path = "support/upstream.rs"]
mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::Duration;
use support::*;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `python -m venv` + `pip install` of the pinned dbt.
const PIP_LIMIT: Duration = Duration::from_secs(900);
/// One `dbt build` of the package over a few dozen events.
const DBT_LIMIT: Duration = Duration::from_secs(300);
const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      Chrome/131.0 Safari/537.36";
const MODELS: [&str; 5] = [
    "first_touch",
    "last_non_direct",
    "linear",
    "position_based",
    "time_decay",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn project() -> PathBuf {
    root().join("deploy/warehouse/dbt")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The virtual environment's bin directory, with the pinned requirements.
fn venv_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let venv = std::env::var_os("TG_DBT_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .parent()
                    .expect("the target directory")
                    .join("dbt-venv")
            });
        let bin = venv.join("bin");
        let requirements = std::fs::read(root().join("tests/dbt/requirements.txt")).unwrap();
        let stamp = venv.join("installed-requirements.txt");
        if bin.join("dbt").exists()
            && std::fs::read(&stamp).ok().as_deref() == Some(&requirements[..])
        {
            return bin;
        }
        let how = format!(
            "python3 -m venv {v} && {v}/bin/pip install -r tests/dbt/requirements.txt && cp tests/dbt/requirements.txt {v}/installed-requirements.txt",
            v = venv.display()
        );
        assert!(
            !in_ci(),
            "tests/dbt.rs: no virtual environment with tests/dbt/requirements.txt at {} \
             (CI is set, so the test does not install it itself). .ci/run creates it; by hand: {how}",
            venv.display()
        );
        let (status, out, err) = chromium_support::run_bounded(
            Command::new("sh")
                .arg("-c")
                .arg(&how)
                .current_dir(root()),
            PIP_LIMIT,
            "creating dbt's virtual environment",
        );
        assert!(
            status.success(),
            "tests/dbt.rs needs Python 3 with venv and pip, and PyPI, to install dbt ({how}) \
             ({status}):\n{out}\n{err}"
        );
        bin
    })
}

fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists());
    found
        .expect("tests/dbt.rs moves touchgate's clock with libfaketime: apt-get install faketime")
        .display()
        .to_string()
}

/// The events' directory and touchgate's configuration for one run.
struct Capture {
    dir: tempfile::TempDir,
    upstream: Upstream,
    pg_url: String,
}

/// One browser: its cookies, as a browser keeps them between visits.
#[derive(Default, Clone)]
struct Browser {
    jar: BTreeMap<String, String>,
}

impl Browser {
    fn cookie(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, parts: &http::response::Parts) {
        for h in parts.headers.get_all("set-cookie") {
            let pair = h.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.jar.insert(k.to_string(), v.to_string());
        }
    }

    /// A later visit: the 30-minute session cookie is gone.
    fn new_session(&mut self) {
        self.jar.remove("tg_sid");
    }

    async fn land(&mut self, proxy: &str, path: &str, referer: Option<&str>) {
        let cookie = self.cookie();
        let mut headers = vec![
            ("sec-fetch-dest", "document"),
            ("sec-fetch-mode", "navigate"),
            ("accept", "text/html"),
            ("user-agent", CHROME),
            ("cookie", cookie.as_str()),
        ];
        if let Some(r) = referer {
            headers.push(("referer", r));
        }
        let (parts, _) = get(&format!("http://{proxy}{path}"), &headers).await;
        assert_eq!(parts.status, 200, "landing on {path}");
        self.keep(&parts);
    }

    async fn submit(&mut self, proxy: &str, path: &str, email: &str) {
        let cookie = self.cookie();
        let body = format!("email={}&plan=pro", email.replace('@', "%40"));
        let (parts, _) = send(
            "POST",
            &format!("http://{proxy}{path}"),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("sec-fetch-dest", "document"),
                ("sec-fetch-mode", "navigate"),
                ("user-agent", CHROME),
                ("cookie", cookie.as_str()),
            ],
            body,
        )
        .await;
        assert_eq!(parts.status, 200, "posting {path}");
        self.keep(&parts);
    }

    async fn beacon(&self, proxy: &str, event_name: &str) {
        let cookie = self.cookie();
        let (parts, _) = send(
            "POST",
            &format!("http://{proxy}/_tg/b"),
            &[("content-type", "text/plain"), ("cookie", cookie.as_str())],
            format!(r#"{{"event_name":"{event_name}","cid":"c-{event_name}"}}"#),
        )
        .await;
        assert_eq!(parts.status, 204, "beacon");
    }
}

/// A running touchgate binary, its clock `days_back` days behind.
struct Touchgate {
    child: Child,
    proxy: String,
    admin: String,
}

impl Capture {
    async fn new(pg_url: String) -> Capture {
        Capture {
            dir: tempfile::tempdir().unwrap(),
            upstream: start().await,
            pg_url,
        }
    }

    fn events_dir(&self) -> PathBuf {
        self.dir.path().join("events")
    }

    /// touchgate with the file sink into `events/` and, with `warehouse`,
    /// the postgres sink; without, the file sink writes `before/`: the
    /// events from before the warehouse's data starts.
    fn start(&self, days_back: u32, warehouse: bool) -> Touchgate {
        let (out, spool) = if warehouse {
            (self.events_dir(), self.dir.path().join("spool"))
        } else {
            (
                self.dir.path().join("before"),
                self.dir.path().join("spool-before"),
            )
        };
        let postgres = if warehouse {
            "[[sink]]\ntype = \"postgres\"\nurl_env = \"TOUCHGATE_PG_URL\"\ntable = \"touchpoint_events\"\n"
        } else {
            ""
        };
        let toml = format!(
            r#"
[proxy]
listen = "127.0.0.1:0"
upstream = "http://{up}"
drain_delay = "0s"
drain_timeout = "10s"

[admin]
listen = "127.0.0.1:0"
ingest_token_env = "TOUCHGATE_INGEST_TOKEN"

[identity]
secret_env = "TOUCHGATE_SECRET"

[spool]
dir = "{spool}"
fsync = "never"

[[form]]
path = "/signup"
event = "signup_submitted"
lead_id = "email"
natural_key = ["lead_id", "day"]

[[form]]
path = "/newsletter"
event = "newsletter_submitted"
lead_id = "email"
natural_key = ["lead_id", "day"]

[[ingest]]
event = "account_created"
natural_key = ["user_id", "day"]

[[ingest]]
event = "plan_upgraded"
natural_key = ["user_id", "day"]

[[sink]]
type = "file"
path = "{out}/events.jsonl"
[sink.delivery]
linger = "10ms"

{postgres}
"#,
            up = self.upstream.addr(),
            spool = spool.display(),
            out = out.display(),
        );
        let config = self.dir.path().join(format!("touchgate-{days_back}.toml"));
        std::fs::write(&config, toml).unwrap();
        let faketime = format!("-{days_back}d");
        let lib = libfaketime();
        let (child, proxy, admin) = spawn_binary(
            &config,
            &[
                ("LD_PRELOAD", lib.as_str()),
                ("FAKETIME", faketime.as_str()),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                ("TOUCHGATE_INGEST_TOKEN", "ingest-token"),
                ("TOUCHGATE_PG_URL", self.pg_url.as_str()),
            ],
        );
        Touchgate {
            child,
            proxy,
            admin,
        }
    }
}

impl Touchgate {
    async fn ingest(&self, lines: &[Value]) {
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let (parts, answer) = send(
            "POST",
            &format!("http://{}/v1/events", self.admin),
            &[
                ("authorization", "Bearer ingest-token"),
                ("content-type", "application/x-ndjson"),
            ],
            body,
        )
        .await;
        assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&answer));
        for line in String::from_utf8_lossy(&answer).lines() {
            assert!(line.contains("\"accepted\""), "ingest answered {line}");
        }
    }

    /// SIGTERM and a clean drain: every event reaches every sink first.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        for _ in 0..1200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "touchgate exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        panic!("touchgate did not drain within 30 s");
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

fn at(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().expect("a timestamp"), &Rfc3339).unwrap()
}

/// Every event the file sink wrote into `dir` (live and rotated files).
fn file_events(dir: &Path) -> Vec<Value> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            all.extend(events(&path));
        }
    }
    all
}

/// `dbt build` of the package on `target`; panics with dbt's output on
/// failure. Returns the output.
fn dbt_build(target: &str, envs: &[(&str, String)], vars: &Value, work: &Path) -> String {
    let mut cmd = Command::new(venv_bin().join("dbt"));
    cmd.arg("build")
        .arg("--project-dir")
        .arg(project())
        .arg("--profiles-dir")
        .arg(project())
        .arg("--target")
        .arg(target)
        .arg("--target-path")
        .arg(work.join(format!("dbt-target-{target}")))
        .arg("--log-path")
        .arg(work.join(format!("dbt-logs-{target}")))
        .arg("--vars")
        .arg(vars.to_string())
        .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        .env("DBT_VERSION_CHECK", "false")
        .current_dir(work);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let (status, out, err) = chromium_support::run_bounded(&mut cmd, DBT_LIMIT, "dbt build");
    assert!(
        status.success(),
        "dbt build --target {target}: {status}\n{out}\n{err}"
    );
    out
}

/// The rows of one query, on DuckDB (`where` is the database file) or
/// PostgreSQL (`where` is the URL).
fn query(kind: &str, place: &str, sql: &str) -> Vec<Value> {
    let out = Command::new(venv_bin().join("python"))
        .arg(root().join("tests/dbt/query.py"))
        .args([kind, place, sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "query on {kind}: {sql}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array().unwrap().clone()
}

/// One conversion's credits: model -> channel -> credit.
type Credits = BTreeMap<String, BTreeMap<String, f64>>;

fn credits(rows: &[Value], conversion: &str) -> Credits {
    let mut out = Credits::new();
    for r in rows
        .iter()
        .filter(|r| r["conversion_event_id"] == conversion)
    {
        *out.entry(r["model"].as_str().unwrap().to_string())
            .or_default()
            .entry(r["channel"].as_str().unwrap().to_string())
            .or_default() += r["credit"].as_f64().unwrap();
    }
    out
}

/// The credits every model gives touches of `channels` at `touches` for a
/// conversion at `converted`, computed here from the rules in the README.
fn expected(channels: &[&str], touches: &[OffsetDateTime], converted: OffsetDateTime) -> Credits {
    let n = channels.len();
    let mut out = Credits::new();
    let mut add = |model: &str, i: usize, c: f64| {
        if c > 0.0 {
            *out.entry(model.to_string())
                .or_default()
                .entry(channels[i].to_string())
                .or_default() += c;
        }
    };
    add("first_touch", 0, 1.0);
    let lnd = (0..n)
        .rev()
        .find(|&i| channels[i] != "Direct")
        .unwrap_or(n - 1);
    add("last_non_direct", lnd, 1.0);
    let weights: Vec<f64> = touches
        .iter()
        .map(|t| {
            let days = (converted - *t).as_seconds_f64() / 86400.0;
            2f64.powf(-days / 7.0)
        })
        .collect();
    let total: f64 = weights.iter().sum();
    for (i, weight) in weights.iter().enumerate() {
        add("linear", i, 1.0 / n as f64);
        let position = match (n, i) {
            (1, _) => 1.0,
            (2, _) => 0.5,
            (_, 0) => 0.4,
            (_, i) if i == n - 1 => 0.4,
            _ => 0.2 / (n - 2) as f64,
        };
        add("position_based", i, position);
        add("time_decay", i, weight / total);
    }
    out
}

fn assert_credits(got: &Credits, want: &Credits, what: &str) {
    let mut models = MODELS.to_vec();
    models.sort();
    assert_eq!(
        got.keys().map(String::as_str).collect::<Vec<_>>(),
        models,
        "{what}: models"
    );
    for (model, channels) in want {
        let g = &got[model];
        assert_eq!(
            g.keys().collect::<Vec<_>>(),
            channels.keys().collect::<Vec<_>>(),
            "{what} under {model}: channels credited ({g:?})"
        );
        for (channel, credit) in channels {
            assert!(
                (g[channel] - credit).abs() < 1e-9,
                "{what} under {model}: {channel} got {}, expected {credit}",
                g[channel]
            );
        }
    }
}

/// What a query returns, rounded, sorted and serialized, for comparing the
/// two targets.
fn normalized(rows: Vec<Value>) -> Vec<String> {
    let mut out: Vec<String> = rows
        .into_iter()
        .map(|mut r| {
            for v in r.as_object_mut().unwrap().values_mut() {
                if let Some(f) = v.as_f64().filter(|_| v.is_f64()) {
                    *v = Value::String(format!("{f:.9}"));
                } else if let Some(i) = v.as_i64() {
                    *v = Value::String(i.to_string());
                }
            }
            r.to_string()
        })
        .collect();
    out.sort();
    out
}

/// The one `event_name` conversion from `device`, as the file sink wrote it.
fn conversion<'a>(events: &'a [Value], event_name: &str, device: &str) -> &'a Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["event_name"] == event_name && e["device_id"] == device && e["origin"] == "proxy"
        })
        .collect();
    assert_eq!(found.len(), 1, "one {event_name} from device {device}");
    found[0]
}

fn landings_of<'a>(events: &'a [Value], devices: &[&str]) -> Vec<&'a Value> {
    let mut l: Vec<&Value> = events
        .iter()
        .filter(|e| e["event_name"] == "landing" && devices.iter().any(|d| e["device_id"] == *d))
        .collect();
    l.sort_by_key(|e| at(&e["occurred_at"]));
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbt_builds_journeys_and_attribution_on_duckdb_and_postgres() {
    let pg = pg_support::PgServer::start();
    let cap = Capture::new(pg.url()).await;
    let now = OffsetDateTime::now_utc();
    let days = |d: i64| now - time::Duration::days(d);

    let mut ada = Browser::default(); // one landing 100 days back, three in ten days, a signup
    let mut bob = Browser::default(); // submits the signup form twice
    let mut cy_phone = Browser::default(); // a lead on one device...
    let mut cy_laptop = Browser::default(); // ...who converts on another
    let mut dee = Browser::default(); // landed before the data starts

    // Before the data: Dee lands from paid search; only a file the
    // warehouse never reads has it.
    let tg = cap.start(12, false);
    dee.land(
        &tg.proxy,
        "/?utm_source=google&utm_medium=cpc&utm_campaign=brand",
        None,
    )
    .await;
    tg.stop();

    // Outside the 90-day attribution window of Ada's signup: no credit,
    // though her tg_ft cookie keeps it as her first touch.
    let tg = cap.start(100, true);
    ada.land(&tg.proxy, "/", Some("https://news.example.org/story"))
        .await;
    tg.stop();

    let tg = cap.start(10, true);
    ada.land(
        &tg.proxy,
        "/shoes?utm_source=google&utm_medium=cpc&utm_campaign=spring",
        None,
    )
    .await;
    cy_phone
        .land(
            &tg.proxy,
            "/?utm_source=facebook&utm_medium=cpc&utm_campaign=retarget",
            None,
        )
        .await;
    cy_phone
        .submit(&tg.proxy, "/newsletter", "cy@example.com")
        .await;
    tg.stop();

    let tg = cap.start(6, true);
    ada.new_session();
    ada.land(&tg.proxy, "/blog/running", Some("https://www.google.com/"))
        .await;
    tg.stop();

    let tg = cap.start(3, true);
    ada.new_session();
    ada.land(&tg.proxy, "/", None).await;
    ada.submit(&tg.proxy, "/signup", "ada@example.com").await;
    ada.beacon(&tg.proxy, "signup_submitted").await;
    tg.stop();

    let tg = cap.start(2, true);
    bob.land(
        &tg.proxy,
        "/?utm_source=newsletter&utm_medium=email&utm_campaign=november",
        None,
    )
    .await;
    bob.submit(&tg.proxy, "/signup", "bob@example.com").await;
    bob.submit(&tg.proxy, "/signup", "bob@example.com").await;
    cy_laptop
        .land(
            &tg.proxy,
            "/pricing?utm_source=newsletter&utm_medium=email&utm_campaign=winback",
            None,
        )
        .await;
    cy_laptop
        .submit(&tg.proxy, "/signup", "cy@example.com")
        .await;
    tg.stop();

    let tg = cap.start(1, true);
    dee.new_session();
    dee.submit(&tg.proxy, "/signup", "dee@example.com").await;
    tg.ingest(&[serde_json::json!({
        "event_name": "account_created",
        "occurred_at": rfc3339(days(1)),
        "user_id": "u-ada",
        "lead_id": "ada@example.com",
    })])
    .await;
    tg.stop();

    let tg = cap.start(0, true);
    tg.ingest(&[serde_json::json!({
        "event_name": "plan_upgraded",
        "occurred_at": rfc3339(now),
        "user_id": "u-ada",
        "properties": {"plan": "team"},
    })])
    .await;
    tg.stop();

    // What touchgate wrote, read back as the analyst's ground truth.
    let written = file_events(&cap.events_dir());
    let rotated = std::fs::read_dir(cap.events_dir())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("events-") && name.ends_with(".jsonl")
        })
        .count();
    assert!(
        rotated >= 4,
        "the file sink rotated at each new UTC day ({rotated} rotated files)"
    );
    let signups: Vec<&Value> = written
        .iter()
        .filter(|e| e["event_name"] == "signup_submitted" && e["origin"] == "proxy")
        .collect();
    assert_eq!(
        signups.len(),
        4,
        "Bob's second submit is a duplicate at the edge: {signups:#?}"
    );

    // Identify each journey by its landing pages.
    let landing_device = |url_part: &str| -> String {
        let l: Vec<&Value> = written
            .iter()
            .filter(|e| {
                e["event_name"] == "landing"
                    && e["page"]["url"].as_str().unwrap().contains(url_part)
            })
            .collect();
        assert_eq!(l.len(), 1, "one landing on {url_part}");
        l[0]["device_id"].as_str().unwrap().to_string()
    };
    let ada_device = landing_device("campaign=spring");
    let bob_device = landing_device("campaign=november");
    let cy_phone_device = landing_device("campaign=retarget");
    let cy_laptop_device = landing_device("campaign=winback");

    let ada_signup = conversion(&written, "signup_submitted", &ada_device);
    let bob_signup = conversion(&written, "signup_submitted", &bob_device);
    let cy_signup = conversion(&written, "signup_submitted", &cy_laptop_device);
    let cy_newsletter = conversion(&written, "newsletter_submitted", &cy_phone_device);
    let dee_signup = written
        .iter()
        .find(|e| {
            e["event_name"] == "signup_submitted"
                && e["origin"] == "proxy"
                && ![&ada_device, &bob_device, &cy_laptop_device]
                    .iter()
                    .any(|d| e["device_id"] == d.as_str())
        })
        .expect("Dee's signup");
    assert_eq!(cy_signup["lead_id"], cy_newsletter["lead_id"]);

    let ada_landings = landings_of(&written, &[&ada_device]);
    assert_eq!(ada_landings.len(), 4);
    assert_eq!(ada_signup["first_touch"]["channel"], "Referral");
    let ada_landings = &ada_landings[1..];
    let touch_times = |l: &[&Value]| l.iter().map(|e| at(&e["occurred_at"])).collect::<Vec<_>>();
    let cy_landings = landings_of(&written, &[&cy_phone_device, &cy_laptop_device]);
    assert_eq!(cy_landings.len(), 2);

    let mut want: Vec<(&str, &Value, Credits)> = vec![
        (
            "Ada: three landings in the window over ten days, then a signup",
            ada_signup,
            expected(
                &["Paid Search", "Organic Search", "Direct"],
                &touch_times(ada_landings),
                at(&ada_signup["occurred_at"]),
            ),
        ),
        (
            "Bob: a double-submitted signup",
            bob_signup,
            expected(
                &["Email"],
                &touch_times(&landings_of(&written, &[&bob_device])),
                at(&bob_signup["occurred_at"]),
            ),
        ),
        (
            "Cy: a lead on the phone who signs up on the laptop",
            cy_signup,
            expected(
                &["Paid Social", "Email"],
                &touch_times(&cy_landings),
                at(&cy_signup["occurred_at"]),
            ),
        ),
        (
            "Cy's newsletter signup on the phone",
            cy_newsletter,
            expected(
                &["Paid Social"],
                &touch_times(&cy_landings[..1]),
                at(&cy_newsletter["occurred_at"]),
            ),
        ),
        (
            "Dee: landed before the data starts; her cookie stands in",
            dee_signup,
            expected(
                &["Paid Search"],
                &[at(&dee_signup["first_touch"]["at"])],
                at(&dee_signup["occurred_at"]),
            ),
        ),
    ];

    // DuckDB over the file sink's files, live and rotated; a gzipped copy
    // of every file is read too: a file loaded twice.
    let work = cap.dir.path();
    let duck = work.join("touchgate.duckdb");
    let duck_s = duck.display().to_string();
    let glob = format!("{}/events*.jsonl*", cap.events_dir().display());
    let duck_env = [("TOUCHGATE_DUCKDB_PATH", duck_s.clone())];
    let pg_env = [
        ("TOUCHGATE_PG_HOST", "127.0.0.1".to_string()),
        (
            "TOUCHGATE_PG_PORT",
            pg.url()
                .rsplit(':')
                .next()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string(),
        ),
        ("TOUCHGATE_PG_USER", "postgres".to_string()),
        ("TOUCHGATE_PG_DATABASE", "postgres".to_string()),
        ("TOUCHGATE_PG_SCHEMA", "analytics".to_string()),
    ];
    let vars = serde_json::json!({ "events_glob": glob });
    dbt_build("duckdb", &duck_env, &vars, work);
    dbt_build("postgres", &pg_env, &serde_json::json!({}), work);

    let count = |kind: &str, place: &str, schema: &str| -> usize {
        query(
            kind,
            place,
            &format!("select count(*) as n, count(distinct event_id) as d from {schema}.tg_events"),
        )[0]["n"]
            .as_u64()
            .unwrap() as usize
    };
    let distinct: BTreeSet<&str> = written
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(count("duckdb", &duck_s, "main"), distinct.len());
    assert_eq!(count("postgres", &pg.url(), "analytics"), distinct.len());

    // Every file again, gzipped, beside the originals; and a second build.
    for entry in std::fs::read_dir(cap.events_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".jsonl") {
            let gz = cap
                .events_dir()
                .join(format!("{}-copy.jsonl.gz", name.trim_end_matches(".jsonl")));
            let out = Command::new("gzip").arg("-c").arg(&path).output().unwrap();
            assert!(out.status.success());
            std::fs::write(gz, out.stdout).unwrap();
        }
    }
    let before_loaded = query(
        "duckdb",
        &duck_s,
        "select event_id, cast(loaded_at as varchar) as loaded_at from main.tg_events order by event_id",
    );
    dbt_build("duckdb", &duck_env, &vars, work);
    assert_eq!(
        count("duckdb", &duck_s, "main"),
        distinct.len(),
        "a file loaded twice changes nothing"
    );
    let after_loaded = query(
        "duckdb",
        &duck_s,
        "select event_id, cast(loaded_at as varchar) as loaded_at from main.tg_events order by event_id",
    );
    assert_eq!(
        before_loaded, after_loaded,
        "loaded_at is when the warehouse first had the event"
    );

    // A late event: Bob's account, created two days ago, reaches touchgate
    // only now. It lands in its own day.
    let tg = cap.start(0, true);
    tg.ingest(&[serde_json::json!({
        "event_name": "account_created",
        "occurred_at": rfc3339(at(&bob_signup["occurred_at"]) + time::Duration::minutes(5)),
        "user_id": "u-bob",
        "lead_id": "bob@example.com",
    })])
    .await;
    tg.stop();
    dbt_build("duckdb", &duck_env, &vars, work);
    dbt_build("postgres", &pg_env, &serde_json::json!({}), work);
    let written = file_events(&cap.events_dir());
    let late = written
        .iter()
        .filter(|e| e["event_name"] == "account_created")
        .max_by_key(|e| at(&e["received_at"]))
        .unwrap();
    assert!(at(&late["received_at"]) - at(&late["occurred_at"]) > time::Duration::days(1));
    let late_sql = |schema: &str| {
        format!(
            "select cast(event_day as varchar) as event_day, \
             loaded_at > (select max(loaded_at) from {schema}.tg_events where event_name = 'plan_upgraded') as later \
             from {schema}.tg_events where event_id = '{}'",
            late["event_id"].as_str().unwrap()
        )
    };
    for (kind, place, schema) in [
        ("duckdb", duck_s.as_str(), "main"),
        ("postgres", pg.url().as_str(), "analytics"),
    ] {
        let got = query(kind, place, &late_sql(schema));
        assert_eq!(
            got[0]["event_day"].as_str().unwrap(),
            &late["occurred_at"].as_str().unwrap()[..10],
            "{kind}: the late event is in its own day"
        );
        assert_eq!(got[0]["later"], true, "{kind}: loaded by the later run");
    }
    let distinct: BTreeSet<&str> = written
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(count("duckdb", &duck_s, "main"), distinct.len());
    assert_eq!(count("postgres", &pg.url(), "analytics"), distinct.len());

    // The exact credits of every journey under every model, on both.
    let attribution_sql = |schema: &str| {
        format!(
            "select conversion_event_id, event_name, model, channel, source, medium, campaign, \
             cast(touch_at as varchar) as touch_at, credit from {schema}.tg_attribution"
        )
    };
    let duck_rows = query("duckdb", &duck_s, &attribution_sql("main"));
    let pg_rows = query("postgres", &pg.url(), &attribution_sql("analytics"));
    for (what, conv, credit) in want.drain(..) {
        let id = conv["event_id"].as_str().unwrap();
        assert_credits(
            &credits(&duck_rows, id),
            &credit,
            &format!("duckdb: {what}"),
        );
        assert_credits(
            &credits(&pg_rows, id),
            &credit,
            &format!("postgres: {what}"),
        );
    }
    assert_eq!(
        duck_rows.len(),
        pg_rows.len(),
        "the same attribution rows on both targets"
    );

    // Conversions: first and last non-direct touch, lead, across devices.
    let conv_sql = |schema: &str| {
        format!(
            "select conversion_event_id, event_name, lead_id, user_id, person_id, touch_count, \
             first_touch_channel, first_touch_campaign, last_touch_channel, last_touch_campaign \
             from {schema}.tg_conversions"
        )
    };
    let duck_conv = query("duckdb", &duck_s, &conv_sql("main"));
    let cy = duck_conv
        .iter()
        .find(|c| c["conversion_event_id"] == cy_signup["event_id"])
        .unwrap();
    assert_eq!(cy["first_touch_channel"], "Paid Social");
    assert_eq!(cy["last_touch_channel"], "Email");
    assert_eq!(cy["lead_id"], cy_signup["lead_id"]);
    assert_eq!(cy["touch_count"], 2);
    let ada = duck_conv
        .iter()
        .find(|c| c["conversion_event_id"] == ada_signup["event_id"])
        .unwrap();
    assert_eq!(ada["first_touch_channel"], "Paid Search");
    assert_eq!(
        ada["last_touch_channel"], "Organic Search",
        "the last non-direct touch"
    );
    assert_eq!(duck_conv.len(), 5);

    // Lifecycle: Ada's upgrade goes back to her signup and its channels.
    let life_sql = |schema: &str| {
        format!(
            "select lifecycle_event_id, event_name, conversion_event_id, first_touch_channel, \
             last_touch_channel, cast(event_day as varchar) as event_day from {schema}.tg_lifecycle"
        )
    };
    let duck_life = query("duckdb", &duck_s, &life_sql("main"));
    let upgrade = duck_life
        .iter()
        .find(|l| l["event_name"] == "plan_upgraded")
        .unwrap();
    assert_eq!(upgrade["conversion_event_id"], ada_signup["event_id"]);
    assert_eq!(upgrade["first_touch_channel"], "Paid Search");
    let bob_account = duck_life
        .iter()
        .filter(|l| l["event_name"] == "account_created")
        .find(|l| l["conversion_event_id"] == bob_signup["event_id"]);
    assert!(
        bob_account.is_some(),
        "the late account joins Bob's signup: {duck_life:?}"
    );
    assert_eq!(duck_life.len(), 3);

    // The daily checks: Ada's signup day has one Direct landing (share 1)
    // and one beacon for one signup (parity 1).
    let checks_sql = |schema: &str| {
        format!(
            "select cast(check_day as varchar) as check_day, check_name, event_name, value, events, status \
             from {schema}.tg_daily_checks where check_name not like 'latency%'"
        )
    };
    let duck_checks = query("duckdb", &duck_s, &checks_sql("main"));
    let ada_day = &ada_signup["occurred_at"].as_str().unwrap()[..10];
    let check = |name: &str| {
        duck_checks
            .iter()
            .find(|c| c["check_day"] == ada_day && c["check_name"] == name)
            .unwrap_or_else(|| panic!("{name} on {ada_day}: {duck_checks:?}"))
    };
    assert_eq!(check("direct_share_landings")["value"], 1.0);
    assert_eq!(
        check("direct_share_landings")["status"],
        "insufficient_data"
    );
    assert_eq!(check("parity")["value"], 1.0);
    assert_eq!(check("parity")["event_name"], "signup_submitted");
    assert_eq!(check("valid_share_conversions")["value"], 1.0);
    let latency = query(
        "duckdb",
        &duck_s,
        "select count(*) as n from main.tg_daily_checks where check_name = 'latency_p99_seconds' and value >= 0",
    );
    assert!(latency[0]["n"].as_u64().unwrap() >= 5);

    // PostgreSQL fed another way than by the sink (COPY of the files, a
    // Kafka connector): a table of the sink's layout without its primary
    // key, every event in it twice, the later copy received a second later.
    query(
        "postgres-exec",
        &pg.url(),
        "create table public.touchpoint_events_copies (like public.touchpoint_events); \
         insert into public.touchpoint_events_copies select * from public.touchpoint_events; \
         insert into public.touchpoint_events_copies \
           select event_id, event_name, origin, occurred_at, received_at + interval '1 second', \
           device_id, session_id, user_id, lead_id, touchpoint_id, natural_key, channel, source, \
           medium, campaign, click_id_type, valid, first_channel, last_channel, last_source, \
           last_medium, last_campaign, page_path, status, payload, inserted_at \
           from public.touchpoint_events",
    );
    let mut copies_env = pg_env.to_vec();
    copies_env.retain(|(k, _)| *k != "TOUCHGATE_PG_SCHEMA");
    copies_env.push(("TOUCHGATE_PG_SCHEMA", "copies".to_string()));
    dbt_build(
        "postgres",
        &copies_env,
        &serde_json::json!({ "events_table": "touchpoint_events_copies" }),
        work,
    );
    assert_eq!(count("postgres", &pg.url(), "copies"), distinct.len());
    let later = query(
        "postgres",
        &pg.url(),
        "select count(*) as n from copies.tg_events c join public.touchpoint_events e \
         using (event_id) where c.received_at <> (e.received_at at time zone 'UTC')",
    );
    assert_eq!(later[0]["n"], 0, "the copy received first is kept");
    assert_eq!(
        normalized(query("postgres", &pg.url(), &attribution_sql("copies"))),
        normalized(query("postgres", &pg.url(), &attribution_sql("analytics"))),
    );

    // Both targets: the same numbers, model by model.
    for sql in [attribution_sql, conv_sql, life_sql, checks_sql] {
        assert_eq!(
            normalized(query("duckdb", &duck_s, &sql("main"))),
            normalized(query("postgres", &pg.url(), &sql("analytics"))),
            "duckdb and postgres differ on {}",
            sql("…")
        );
    }
}
