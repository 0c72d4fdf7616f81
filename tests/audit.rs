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

[[sink]]
type = "file"
path = "data/events.jsonl"

[[sink]]
type = "meta_capi"
pixel_id = "123"
access_token_env = "META_CAPI_TOKEN"
events = { signup_submitted = "Lead" }
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
}
