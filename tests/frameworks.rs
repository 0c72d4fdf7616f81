//! touchgate in front of real web frameworks, with the README's ready rule
//! for each: a Django admin login (and its "add user" form) and a Flask +
//! Flask-WTF signup that follows Post/Redirect/Get, each a failed then a
//! successful submit, plus a bot's post without a CSRF token. Exactly one
//! conversion comes out of each pair, with the success's status. The Django
//! login runs once more in Chromium. Rails, Laravel and WordPress, which
//! cannot run here, are checked against their answers as they write them.
//!
//! The apps (`tests/frameworks/`) run from a Python virtual environment
//! with `tests/frameworks/requirements.txt` installed: `$TG_FRAMEWORKS_VENV`,
//! else `frameworks-venv` in Cargo's target directory. `.ci/run` creates
//! it; outside CI (`CI` unset) the test creates it when it is missing, as
//! `tests/browser.rs` runs `npm ci`. In CI a missing one is a failure.

#[path = "support/chromium.rs"]
mod chromium_support;
#[path = "support/upstream.rs"]
mod support;

use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use support::*;

/// `python -m venv` + `pip install` of the pinned frameworks.
const PIP_LIMIT: Duration = Duration::from_secs(600);
/// Django migrates its database before it listens.
const START_LIMIT: Duration = Duration::from_secs(60);

fn frameworks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/frameworks")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The virtual environment's Python, with the pinned requirements.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = std::env::var_os("TG_FRAMEWORKS_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .parent()
                    .expect("the target directory")
                    .join("frameworks-venv")
            });
        let python = venv.join("bin/python");
        let requirements = std::fs::read(frameworks_dir().join("requirements.txt")).unwrap();
        let stamp = venv.join("installed-requirements.txt");
        if python.exists() && std::fs::read(&stamp).ok().as_deref() == Some(&requirements[..]) {
            return python;
        }
        let how = format!(
            "python3 -m venv {v} && {v}/bin/pip install -r tests/frameworks/requirements.txt && cp tests/frameworks/requirements.txt {v}/installed-requirements.txt",
            v = venv.display()
        );
        assert!(
            !in_ci(),
            "tests/frameworks.rs: no virtual environment with tests/frameworks/requirements.txt at {} \
             (CI is set, so the test does not install it itself). .ci/run creates it; by hand: {how}",
            venv.display()
        );
        let (status, out, err) = chromium_support::run_bounded(
            Command::new("sh").arg("-c").arg(&how).current_dir(env!("CARGO_MANIFEST_DIR")),
            PIP_LIMIT,
            "creating the frameworks' virtual environment",
        );
        assert!(
            status.success(),
            "tests/frameworks.rs needs Python 3 with venv and pip, and PyPI, to install Django and \
             Flask-WTF ({how}) ({status}):\n{out}\n{err}"
        );
        python
    })
}

/// One test app (`tests/frameworks/serve.py`), on a port it picked, until
/// dropped.
struct App {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    addr: std::net::SocketAddr,
    stderr: Arc<Mutex<String>>,
    _data: tempfile::TempDir,
}

impl App {
    fn start(kind: &str) -> App {
        use std::os::unix::process::CommandExt;
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(python())
            .arg(frameworks_dir().join("serve.py"))
            .arg(kind)
            .env("TG_DJANGO_DB", data.path())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start: {e}", python().display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let mut err = child.stderr.take().unwrap();
            let text = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    text.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let stdin = child.stdin.take();
        let mut app = App {
            child: Some(child),
            stdin,
            addr: "127.0.0.1:9".parse().unwrap(),
            stderr,
            _data: data,
        };
        let line = rx.recv_timeout(START_LIMIT).unwrap_or_default();
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "serve.py {kind} did not start ({line:?}):\n{}",
                    app.stderr.lock().unwrap()
                )
            });
        app.addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        app
    }

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for App {
    /// Closing stdin stops the server; the group is killed whatever happens.
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            for _ in 0..50 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.wait();
        }
    }
}

/// The ready rule the README gives for `framework` (the TOML block under
/// its `#### framework` heading).
fn readme_rule(framework: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let heading = format!("\n#### {framework}\n");
    let at = readme
        .find(&heading)
        .unwrap_or_else(|| panic!("README.md has no {heading:?}"));
    let rest = &readme[at..];
    let start = rest.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = rest[start..].find("```").expect("the block's end");
    rest[start..start + end].to_string()
}

/// touchgate in front of `app`, with `forms` as its `[[form]]` tables.
async fn front(app: &App, forms: &str) -> Site {
    Site::with_upstream(
        Upstream {
            addr: Some(app.addr),
            ..Default::default()
        },
        forms,
    )
    .await
}

/// A browser's cookies, as far as these tests need them.
#[derive(Default)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn absorb(&mut self, headers: &http::HeaderMap) {
        for v in headers.get_all("set-cookie") {
            let line = v.to_str().unwrap_or("");
            let pair = line.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                self.0.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
}

/// One request as a browser sends it: the jar's cookies, the page's
/// headers, and what came back into the jar.
async fn browse(
    site: &Site,
    jar: &mut Jar,
    method: &str,
    path: &str,
    form: Option<&[(&str, &str)]>,
) -> Answer {
    let cookie = jar.header();
    let mut headers: Vec<(&str, &str)> = vec![
        ("sec-fetch-dest", "document"),
        ("accept", "text/html"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
        ),
    ];
    if !cookie.is_empty() {
        headers.push(("cookie", &cookie));
    }
    let body = match form {
        Some(fields) => {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fields)
                .finish()
        }
        None => String::new(),
    };
    let (parts, bytes) = send(method, &site.url(path), &headers, Bytes::from(body)).await;
    jar.absorb(&parts.headers);
    Answer {
        status: parts.status.as_u16(),
        location: parts
            .headers
            .get("location")
            .map(|l| l.to_str().unwrap().to_string()),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The value of the hidden input `name` in a page.
fn hidden(page: &str, name: &str) -> String {
    let re = regex::Regex::new(&format!(
        r#"<input[^>]*name="{}"[^>]*value="([^"]*)""#,
        regex::escape(name)
    ))
    .unwrap();
    re.captures(page)
        .unwrap_or_else(|| panic!("no hidden {name} in the page:\n{page}"))[1]
        .to_string()
}

/// One row of the issue's table: what was posted, what the app answered,
/// whether a conversion came out.
struct Row {
    submission: &'static str,
    answered: String,
    emitted: bool,
}

/// The table being filled: one row per post, with whether it emitted a
/// conversion (the count of conversions went up once its attempt arrived).
#[derive(Default)]
struct Ledger {
    rows: Vec<Row>,
    posts: usize,
    seen: usize,
}

impl Ledger {
    async fn record(&mut self, site: &Site, submission: &'static str, answered: String) {
        self.posts += 1;
        let ev = settled(site, self.posts).await;
        self.rows.push(Row {
            submission,
            answered,
            emitted: ev.len() > self.seen,
        });
        self.seen = ev.len();
    }
}

/// The conversions and attempts after `n` more posts: waits for the
/// attempts, then lets a stray conversion show up before counting.
async fn settled(site: &Site, attempts: usize) -> Vec<Value> {
    site.wait_attempts(attempts).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    site.events()
        .into_iter()
        .filter(|e| e["event_name"] != "landing")
        .collect()
}

fn print_table(title: &str, rows: &[Row]) -> String {
    let mut out =
        format!("{title}\n| submission | app answered | conversion emitted? |\n|---|---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            r.submission,
            r.answered,
            if r.emitted { "yes" } else { "no" }
        ));
    }
    eprintln!("{out}");
    out
}

fn answered(a: &Answer) -> String {
    match &a.location {
        Some(l) => format!("{} → {l}", a.status),
        None => a.status.to_string(),
    }
}

#[tokio::test]
async fn django_admin_forms_count_only_what_django_accepted() {
    let app = App::start("django");
    let login = readme_rule("Django");
    let add_user = login
        .replace("\"/admin/login/\"", "\"/admin/auth/user/add/\"")
        .replace("\"admin_login\"", "\"user_added\"");
    let site = front(&app, &format!("{login}\n{add_user}")).await;
    let mut rows = Vec::new();
    let mut posts = 0;
    let conversions_after = |rows: &mut Vec<Row>,
                             submission: &'static str,
                             a: &Answer,
                             events: &[Value],
                             before: usize| {
        rows.push(Row {
            submission,
            answered: answered(a),
            emitted: events.len() > before,
        });
    };

    // Wrong password, then the right one, in one browser.
    let mut jar = Jar::default();
    let page = browse(&site, &mut jar, "GET", "/admin/login/?next=/admin/", None).await;
    assert_eq!(page.status, 200, "{}", app.logs());
    let token = hidden(&page.body, "csrfmiddlewaretoken");
    let user = "ada@example.com";
    let wrong = browse(
        &site,
        &mut jar,
        "POST",
        "/admin/login/?next=/admin/",
        Some(&[
            ("csrfmiddlewaretoken", &token),
            ("username", user),
            ("password", "wrong"),
            ("next", "/admin/"),
        ]),
    )
    .await;
    assert_eq!(wrong.status, 200);
    assert!(wrong.body.contains("class=\"errornote\""), "{}", wrong.body);
    posts += 1;
    let ev = settled(&site, posts).await;
    conversions_after(&mut rows, "Django login, wrong password", &wrong, &ev, 0);
    let right = browse(
        &site,
        &mut jar,
        "POST",
        "/admin/login/?next=/admin/",
        Some(&[
            ("csrfmiddlewaretoken", &token),
            ("username", user),
            ("password", "correct horse battery"),
            ("next", "/admin/"),
        ]),
    )
    .await;
    assert_eq!(
        (right.status, right.location.as_deref()),
        (302, Some("/admin/")),
        "{}",
        right.body
    );
    posts += 1;
    let before = ev.len();
    let ev = settled(&site, posts).await;
    conversions_after(
        &mut rows,
        "Django login, right password, just after",
        &right,
        &ev,
        before,
    );

    // A user that does not exist, in another browser.
    let mut other = Jar::default();
    let page = browse(&site, &mut other, "GET", "/admin/login/", None).await;
    let token2 = hidden(&page.body, "csrfmiddlewaretoken");
    let nobody = browse(
        &site,
        &mut other,
        "POST",
        "/admin/login/",
        Some(&[
            ("csrfmiddlewaretoken", &token2),
            ("username", "nobody@example.com"),
            ("password", "x"),
        ]),
    )
    .await;
    assert_eq!(nobody.status, 200);
    posts += 1;
    let before = ev.len();
    let ev = settled(&site, posts).await;
    conversions_after(
        &mut rows,
        "Django login for a user that does not exist",
        &nobody,
        &ev,
        before,
    );

    // "Add user": the passwords differ, then they match.
    let page = browse(&site, &mut jar, "GET", "/admin/auth/user/add/", None).await;
    assert_eq!(page.status, 200, "logged in: {}", page.body);
    let token = hidden(&page.body, "csrfmiddlewaretoken");
    let add = |p2: &'static str| {
        [
            ("csrfmiddlewaretoken", token.clone()),
            ("username", "grace@example.com".to_string()),
            ("usable_password", "true".to_string()),
            ("password1", "Analytical-Engine-1843".to_string()),
            ("password2", p2.to_string()),
            ("_save", "Save".to_string()),
        ]
    };
    let fields = add("Analytical-Engine-1842");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let differ = browse(
        &site,
        &mut jar,
        "POST",
        "/admin/auth/user/add/",
        Some(&fields),
    )
    .await;
    assert_eq!(differ.status, 200);
    assert!(differ.body.contains("class=\"errorlist"), "{}", differ.body);
    posts += 1;
    let before = ev.len();
    let ev = settled(&site, posts).await;
    conversions_after(
        &mut rows,
        "Django \"add user\", passwords differ",
        &differ,
        &ev,
        before,
    );
    let fields = add("Analytical-Engine-1843");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let added = browse(
        &site,
        &mut jar,
        "POST",
        "/admin/auth/user/add/",
        Some(&fields),
    )
    .await;
    assert_eq!(added.status, 302, "{}", added.body);
    posts += 1;
    let before = ev.len();
    let ev = settled(&site, posts).await;
    conversions_after(
        &mut rows,
        "Django \"add user\", passwords match",
        &added,
        &ev,
        before,
    );

    // A bot: the right password, no CSRF token or cookie.
    let mut bot = Jar::default();
    let forged = browse(
        &site,
        &mut bot,
        "POST",
        "/admin/login/",
        Some(&[("username", user), ("password", "correct horse battery")]),
    )
    .await;
    assert_eq!(forged.status, 403);
    posts += 1;
    let before = ev.len();
    let ev = settled(&site, posts).await;
    conversions_after(
        &mut rows,
        "Django login without a CSRF token (a bot)",
        &forged,
        &ev,
        before,
    );

    let table = print_table("Django 5.2 behind touchgate, README rule", &rows);
    let emitted: Vec<bool> = rows.iter().map(|r| r.emitted).collect();
    assert_eq!(emitted, [false, true, false, false, true, false], "{table}");
    let got: Vec<(&str, u64)> = ev
        .iter()
        .map(|e| {
            (
                e["event_name"].as_str().unwrap(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("admin_login", 302), ("user_added", 302)], "{ev:#?}");
    assert_eq!(ev[0]["lead_id"].as_str().map(str::len), Some(32));
    let reasons: Vec<Value> = site
        .attempts()
        .iter()
        .map(|a| a["properties"]["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        [
            json!("failure_body"),
            Value::Null,
            json!("failure_body"),
            json!("failure_body"),
            Value::Null,
            json!("status")
        ]
    );
}

#[tokio::test]
async fn flask_wtf_post_redirect_get_counts_only_the_valid_signup() {
    let app = App::start("flask");
    let api = "[[form]]\npath = \"/api/leads\"\nevent = \"lead_created\"\nlead_id = \"email\"\nnatural_key = [\"lead_id\", \"day\"]\n";
    let site = front(&app, &format!("{}\n{api}", readme_rule("Flask-WTF"))).await;
    let mut ledger = Ledger::default();

    let mut jar = Jar::default();
    let page = browse(&site, &mut jar, "GET", "/signup", None).await;
    assert_eq!(page.status, 200, "{}", app.logs());
    let token = hidden(&page.body, "csrf_token");
    let invalid = browse(
        &site,
        &mut jar,
        "POST",
        "/signup",
        Some(&[
            ("csrf_token", &token),
            ("email", "lin-at-example.com"),
            ("plan", "pro"),
        ]),
    )
    .await;
    assert_eq!(
        (invalid.status, invalid.location.as_deref()),
        (302, Some("/signup"))
    );
    let again = browse(&site, &mut jar, "GET", "/signup", None).await;
    assert!(
        again.body.contains("Enter a valid e-mail."),
        "{}",
        again.body
    );
    ledger
        .record(&site, "Flask-WTF signup, invalid", answered(&invalid))
        .await;
    let valid = browse(
        &site,
        &mut jar,
        "POST",
        "/signup",
        Some(&[
            ("csrf_token", &token),
            ("email", "lin@example.com"),
            ("plan", "pro"),
        ]),
    )
    .await;
    assert_eq!(
        (valid.status, valid.location.as_deref()),
        (302, Some("/thanks"))
    );
    ledger
        .record(
            &site,
            "Flask-WTF signup, valid, just after",
            answered(&valid),
        )
        .await;

    let mut bot = Jar::default();
    let forged = browse(
        &site,
        &mut bot,
        "POST",
        "/signup",
        Some(&[("email", "bot@example.com"), ("plan", "pro")]),
    )
    .await;
    assert_eq!(
        (forged.status, forged.location.as_deref()),
        (302, Some("/signup"))
    );
    ledger
        .record(
            &site,
            "Flask-WTF signup without a CSRF token (a bot)",
            answered(&forged),
        )
        .await;

    for (submission, body, status) in [
        ("JSON API, invalid", r#"{"email": "x"}"#, 422),
        ("JSON API, valid", r#"{"email": "x@example.com"}"#, 201),
    ] {
        let (p, _) = send(
            "POST",
            &site.url("/api/leads"),
            &[("content-type", "application/json")],
            body,
        )
        .await;
        assert_eq!(p.status, status);
        ledger.record(&site, submission, status.to_string()).await;
    }

    let table = print_table(
        "Flask 3.1 + Flask-WTF 1.3 behind touchgate, README rule",
        &ledger.rows,
    );
    let emitted: Vec<bool> = ledger.rows.iter().map(|r| r.emitted).collect();
    assert_eq!(emitted, [false, true, false, false, true], "{table}");
    let ev = settled(&site, ledger.posts).await;
    let got: Vec<(&str, u64)> = ev
        .iter()
        .map(|e| {
            (
                e["event_name"].as_str().unwrap(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [("signup_submitted", 302), ("lead_created", 201)],
        "{ev:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_admin_login_in_chromium() {
    use chromium_support::{DRIVE_LIMIT, chromium, node_modules, run_bounded};
    let app = App::start("django");
    let site = front(&app, &readme_rule("Django")).await;
    let base = format!("http://{}", site.tg.proxy_addr);
    let opts = json!({
        "base": base,
        "username": "ada@example.com",
        "wrong": "tr0ub4dor&3",
        "right": "correct horse battery",
    });
    // The browser waits on touchgate, which runs on this test's runtime:
    // the wait for the browser must not hold a runtime thread.
    let (status, out, err) = tokio::task::spawn_blocking(move || {
        run_bounded(
            Command::new("node")
                .arg(frameworks_dir().join("drive_django_login.cjs"))
                .arg(opts.to_string())
                .env("TG_NODE_MODULES", node_modules())
                .env("TG_CHROMIUM", chromium()),
            DRIVE_LIMIT,
            "tests/frameworks/drive_django_login.cjs",
        )
    })
    .await
    .unwrap();
    assert!(
        status.success(),
        "drive_django_login.cjs failed ({status})\n--- stdout\n{out}\n--- stderr\n{err}\n--- app\n{}",
        app.logs()
    );
    let seen: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(seen["pageErrors"], json!([]), "{seen:#}");
    assert_eq!(seen["landingStatus"], 200);
    assert_eq!(seen["failed"]["status"], 200, "{seen:#}");
    assert!(
        seen["failed"]["errornote"]
            .as_str()
            .is_some_and(|t| t.contains("correct username")),
        "{seen:#}"
    );
    assert_eq!(seen["accepted"]["status"], 302, "{seen:#}");
    assert_eq!(seen["accepted"]["location"], "/admin/");
    assert!(
        seen["accepted"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/admin/"),
        "{seen:#}"
    );
    let cookies = seen["cookies"].as_array().unwrap();
    for name in ["tg_did", "tg_sid", "sessionid", "csrftoken"] {
        assert!(cookies.contains(&json!(name)), "{name}: {seen:#}");
    }

    let all = settled(&site, 2).await;
    assert_eq!(all.len(), 1, "one conversion: {all:#?}");
    let login = &all[0];
    assert_eq!(login["event_name"], "admin_login");
    assert_eq!(login["status"], 302);
    assert_eq!(login["last_touch"]["channel"], "Email");
    let landing = site
        .events()
        .into_iter()
        .find(|e| e["event_name"] == "landing")
        .expect("the login page with a campaign is a landing");
    assert_eq!(login["device_id"], landing["device_id"], "the same browser");
    let attempts = site.attempts();
    assert_eq!(attempts[0]["properties"]["reason"], "failure_body");
    assert_eq!(
        attempts[1]["properties"]["conversion_id"],
        login["event_id"]
    );
}

/// Rails, Laravel and WordPress cannot run here: their README rules are
/// checked on the answers those frameworks write, through the request
/// path `touchgate audit --request` runs.
#[test]
fn rails_laravel_and_wordpress_rules_on_their_recorded_answers() {
    use touchgate::cli::audit::{AppAnswer, dry_run};
    let cases: &[(&str, &str, &str, &str, bool)] = &[
        (
            "Rails",
            "user%5Bemail%5D=ann%40example.com&user%5Bpassword%5D=x",
            "HTTP/1.1 422 Unprocessable Content\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<div id=\"error_explanation\"><h2>1 error prohibited this user from being saved</h2></div>",
            "failed validation, re-rendered with 422",
            false,
        ),
        (
            "Rails",
            "user%5Bemail%5D=ann%40example.com&user%5Bpassword%5D=long-enough",
            "HTTP/1.1 303 See Other\r\nLocation: http://shop.example/users/42\r\nContent-Type: text/html; charset=utf-8\r\n\r\n",
            "created, 303 to the record (Turbo)",
            true,
        ),
        (
            "Laravel",
            "email=ann%40example.com&password=x",
            "HTTP/1.1 302 Found\r\nLocation: http://shop.example/register\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<!DOCTYPE html><html><head><meta http-equiv=\"refresh\" content=\"0;url='http://shop.example/register'\" /></head></html>",
            "failed validation, back() to the form",
            false,
        ),
        (
            "Laravel",
            "email=ann%40example.com&password=long-enough",
            "HTTP/1.1 302 Found\r\nLocation: http://shop.example/home\r\nContent-Type: text/html; charset=utf-8\r\n\r\n",
            "registered, redirected home",
            true,
        ),
        (
            "WordPress",
            "comment=&author=Ann&email=ann%40example.com&comment_post_ID=1",
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<!DOCTYPE html><html><head><title>Comment Submission Failure</title></head><body id=\"error-page\"><div class=\"wp-die-message\"><p><strong>Error:</strong> Please type your comment text.</p></div></body></html>",
            "empty comment, wp_die with 200",
            false,
        ),
        (
            "WordPress",
            "comment=Hi&author=Ann&email=ann%40example.com&comment_post_ID=1",
            "HTTP/1.1 409 Conflict\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<div class=\"wp-die-message\">Duplicate comment detected</div>",
            "duplicate comment, wp_die with 409",
            false,
        ),
        (
            "WordPress",
            "comment=Hi&author=Ann&email=ann%40example.com&comment_post_ID=1",
            "HTTP/1.1 302 Found\r\nLocation: http://shop.example/hello-world/#comment-2\r\nContent-Type: text/html; charset=UTF-8\r\n\r\n",
            "comment posted, redirected to the post",
            true,
        ),
    ];
    for (framework, body, response, what, want) in cases {
        let rule = readme_rule(framework);
        let path = rule
            .lines()
            .find_map(|l| l.strip_prefix("path = \""))
            .and_then(|p| p.strip_suffix('"'))
            .unwrap();
        let cfg = touchgate::config::Config::parse("readme.toml", &rule, &support::env)
            .unwrap_or_else(|e| panic!("{framework}: {e}"));
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let answer = AppAnswer::parse(response.as_bytes()).unwrap();
        let run = dry_run(cfg, request.as_bytes(), answer, &support::env).unwrap();
        let conversions = run
            .events
            .iter()
            .filter(|e| e["event_name"] != "form_attempt")
            .count();
        assert_eq!(
            conversions == 1,
            *want,
            "{framework}, {what}: {:#?}",
            run.events
        );
        assert_eq!(
            run.events.len(),
            1 + usize::from(*want),
            "{framework}, {what}"
        );
    }
}
