//! `touchgate audit`: the inventory and the dry run, through the binary.

use std::io::Write;
use std::process::{Command, Stdio};

const CONFIG: &str = r#"
[privacy]
forward_client_ip = "truncate"
client_ip = "truncate"

[[form]]
path = "/signup"
event = "signup_submitted"
lead_id = "email"
natural_key = ["lead_id", "day"]
fields = [{ name = "plan", mode = "raw" }]
user_data = { fn = "first_name", ln = "last_name", country = "country", zp = "zip" }

[[sink]]
type = "file"
path = "data/events.jsonl"

[[sink]]
type = "meta_capi"
pixel_id = "123"
access_token_env = "META_CAPI_TOKEN"
events = { signup_submitted = "Lead" }

[[sink]]
type = "google_ads"
customer_id = "123-456-7890"
developer_token_env = "GADS_DEV_TOKEN"
client_id_env = "GADS_CLIENT_ID"
client_secret_env = "GADS_CLIENT_SECRET"
refresh_token_env = "GADS_REFRESH_TOKEN"
events = { signup_submitted = "987654" }
"#;

fn audit(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_touchgate"));
    cmd.args(["audit", "--config", path.to_str().unwrap()])
        .args(args);
    cmd.env_remove("TOUCHGATE_SECRET")
        .env_remove("META_CAPI_TOKEN");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inventory_names_every_destination_and_form() {
    let (code, out, err) = audit(&["--format", "json"], None);
    assert_eq!(code, 0, "{err}");
    let inv: serde_json::Value = serde_json::from_str(&out).unwrap();
    let flows = inv["flows"].as_array().unwrap();
    let find = |dest: &str, field: &str| {
        flows
            .iter()
            .find(|f| {
                f["destination"].as_str().unwrap().starts_with(dest)
                    && f["field"].as_str().unwrap().contains(field)
            })
            .unwrap_or_else(|| panic!("no flow {dest} / {field}"))["form"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(find("upstream", "x-forwarded-for"), "truncated");
    assert_eq!(find("upstream", "x-touch-device"), "keyed_hash");
    assert_eq!(find("sink file", "user_id, lead_id"), "keyed_hash");
    assert_eq!(find("sink file", "client.user_agent"), "reduced");
    assert_eq!(find("sink file", "properties.plan"), "raw");
    assert_eq!(find("sink file", "password"), "never");
    assert_eq!(find("sink meta_capi", "em, ph"), "sha256");
    assert_eq!(find("sink meta_capi", "client_ip_address"), "never");
    assert_eq!(find("sink meta_capi", "client_user_agent"), "never");
    assert_eq!(find("sink meta_capi", "fn, ln"), "sha256");
    // Click ids leave only to their ad platform.
    assert_eq!(find("sink file", "gclid, gbraid, wbraid, fbclid"), "never");
    assert_eq!(find("sink meta_capi", "fbc"), "raw");
    assert_eq!(find("sink google_ads", "gclid, gbraid, wbraid"), "raw");
    assert_eq!(find("sink google_ads", "hashedEmail"), "sha256");
    assert_eq!(find("sink google_ads", "hashedFirstName"), "sha256");
    assert_eq!(find("sink google_ads", "countryCode, postalCode"), "raw");
    assert_eq!(find("sink google_ads", "orderId"), "raw");
    let retention = inv["retention"].as_array().unwrap();
    assert!(
        retention
            .iter()
            .any(|r| r["place"].as_str().unwrap().starts_with("spool"))
    );
    assert!(retention.iter().any(|r| {
        r["place"]
            .as_str()
            .unwrap()
            .starts_with("dead-letter file of file")
    }));
    let (code, text, _) = audit(&[], None);
    assert_eq!(code, 0);
    assert!(text.contains("DATA INVENTORY") && text.contains("RETENTION"));
}

#[test]
fn dry_run_shows_the_upstream_request_and_the_events() {
    let body = "email=Zoe%40Example.com&plan=pro&password=hunter2";
    let raw = format!(
        "POST /signup?utm_source=google&utm_medium=cpc HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nX-Touch-Device: forged\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n{body}",
        body.len()
    );
    let (code, out, err) = audit(&["--request", "-"], Some(raw.as_bytes()));
    assert_eq!(code, 0, "{err}");
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(run["class"], "form");
    let headers = run["upstream_request"]["headers"].as_array().unwrap();
    let get = |name: &str| {
        headers
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_string())
    };
    assert_eq!(get("x-forwarded-for").as_deref(), Some("203.0.113.0"));
    assert_ne!(get("x-touch-device").as_deref(), Some("forged"));
    assert!(get("x-touch-id").is_some());
    let events = run["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{out}");
    assert_eq!(events[0]["event_name"], "signup_submitted");
    assert_eq!(events[0]["status"], 200);
    assert_eq!(events[1]["event_name"], "form_attempt");
    assert_eq!(events[1]["properties"]["confirmed"], true);
    assert_eq!(
        events[1]["properties"]["conversion_id"],
        events[0]["event_id"]
    );
    assert!(!out.contains("hunter2") && !out.to_lowercase().contains("zoe@example.com"));
    // A 500 answer: no conversion, one unconfirmed attempt.
    let (code, out, _) = audit(&["--request", "-", "--status", "500"], Some(raw.as_bytes()));
    assert_eq!(code, 0);
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    let events = run["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{out}");
    assert_eq!(events[0]["event_name"], "form_attempt");
    assert_eq!(events[0]["status"], 500);
    assert_eq!(events[0]["properties"]["confirmed"], false);
    assert_eq!(events[0]["properties"]["reason"], "status");
    // A malformed request: exit 2.
    let (code, _, err) = audit(&["--request", "-"], Some(b"NOT HTTP\r\n\r\n"));
    assert_eq!(code, 2, "{err}");
    // Empty input, and a body that does not match its Content-Length.
    let (code, _, err) = audit(&["--request", "-"], Some(b"\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("empty input"), "{err}");
    let cut = b"POST /signup HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 40\r\n\r\nemail=a%40example.com";
    let (code, _, err) = audit(&["--request", "-"], Some(cut));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the body is 21 bytes but Content-Length says 40"),
        "{err}"
    );
}

/// `audit --request -` over another config than [`CONFIG`], the app
/// answering `response` (a raw HTTP response) when given.
fn audit_with(
    config: &str,
    args: &[&str],
    response: Option<&str>,
    stdin: &[u8],
) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_touchgate"));
    cmd.args([
        "audit",
        "--config",
        path.to_str().unwrap(),
        "--request",
        "-",
    ])
    .args(args);
    if let Some(r) = response {
        let file = dir.path().join("response.txt");
        std::fs::write(&file, r).unwrap();
        cmd.arg("--response").arg(&file);
    }
    let mut child = cmd
        .env_remove("TOUCHGATE_SECRET")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command refused on its arguments exits before reading its input.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const DJANGO: &str = r#"
[[form]]
path = "/admin/login/"
event = "admin_login"
lead_id = "username"
failure_body = 'class="errorlist|class="errornote'
"#;

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn dry_run_judges_a_whole_app_response() {
    let req = post("/admin/login/", "username=ada&password=wrong");
    let failed = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: public, max-age=60\r\n\r\n<p class=\"errornote\">Please enter the correct username</p>";
    let (code, out, err) = audit_with(DJANGO, &[], Some(failed), req.as_bytes());
    assert_eq!(code, 0, "{err}");
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    let events = run["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{out}");
    assert_eq!(events[0]["event_name"], "form_attempt");
    assert_eq!(events[0]["properties"]["reason"], "failure_body");
    let headers = run["response_headers"].as_array().unwrap();
    let cc: Vec<&str> = headers
        .iter()
        .filter(|h| h[0] == "cache-control")
        .map(|h| h[1].as_str().unwrap())
        .collect();
    assert_eq!(cc, ["private, max-age=60"], "{out}");

    let accepted = "HTTP/1.1 302 Found\r\nLocation: /admin/\r\nContent-Length: 0\r\n\r\n";
    let (code, out, err) = audit_with(DJANGO, &[], Some(accepted), req.as_bytes());
    assert_eq!(code, 0, "{err}");
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(run["response_status"], 302);
    assert_eq!(run["events"][0]["event_name"], "admin_login");
    assert_eq!(run["events"][0]["status"], 302);
    // --status and --response are one or the other.
    let (code, _, _) = audit_with(DJANGO, &["--status", "500"], Some(accepted), req.as_bytes());
    assert_eq!(code, 2);
}

#[test]
fn dry_run_names_a_near_form_path_and_a_missing_lead_field() {
    // Django's admin login without its trailing slash.
    let (code, out, err) = audit_with(
        DJANGO,
        &[],
        None,
        post("/admin/login", "username=ada").as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(run["class"], "pass-through");
    let d = run["diagnostics"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{out}");
    let text = d[0].as_str().unwrap();
    assert!(
        text.contains("\"/admin/login/\"")
            && text.contains("\"/admin/login\"")
            && text.contains("trailing slash"),
        "{text}"
    );
    assert!(err.contains("trailing slash"), "logged too: {err}");

    // A typo in lead_id: the fields are named, their values never.
    let (code, out, err) = audit_with(
        DJANGO,
        &["--status", "302"],
        None,
        post(
            "/admin/login/",
            "user_name=ada%40example.com&password=s3cret-value",
        )
        .as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    let d = run["diagnostics"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{out}");
    let text = d[0].as_str().unwrap();
    assert!(text.contains("[user_name, password]"), "{text}");
    assert!(text.contains(r#"lead_id field "username""#), "{text}");
    // Whole values: a short string like "ada" can turn up inside a
    // random cookie value.
    for secret in ["ada@", "ada%40", "example.com", "s3cret"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} in {out}\n{err}"
        );
    }
    assert_eq!(run["events"][0]["lead_id"], serde_json::Value::Null);
}
