//! `touchgate demo`, the real binary: a landing and a signup through it
//! end up as events in `<data-dir>/events.jsonl`, the live lines show
//! them, and SIGTERM ends it with exit code 0.

#[path = "browser/demo_process.rs"]
mod demo_process;
#[path = "support/upstream.rs"]
mod support;

use demo_process::Demo;

fn set_cookies(parts: &http::response::Parts) -> Vec<String> {
    parts
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// `name=value` pairs for a Cookie header, from Set-Cookie lines.
fn cookie_header(set_cookies: &[String]) -> String {
    set_cookies
        .iter()
        .map(|c| c.split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test]
async fn landing_and_signup_through_the_demo_are_written_and_sigterm_exits_zero() {
    let mut demo = Demo::start();
    let banner = demo.stdout().join("\n");
    // The banner tells what to try: three curl lines and the events file.
    assert_eq!(banner.matches("\n  curl ").count(), 3, "{banner}");
    assert!(banner.contains("sec-fetch-dest: document"), "{banner}");
    assert!(
        banner.contains(&demo.events_path().display().to_string()),
        "{banner}"
    );

    // A landing from a Google Ads click, as the first curl line does it.
    let (parts, body) = support::get(
        &demo.url("/?utm_source=google&utm_medium=cpc&utm_campaign=spring_sale&gclid=t1"),
        &[("sec-fetch-dest", "document")],
    )
    .await;
    assert_eq!(parts.status, 200);
    let html = String::from_utf8_lossy(&body);
    assert!(html.contains("<script src=\"/_tg/c.js\" defer></script>"));
    let cookies = set_cookies(&parts);
    for name in ["tg_did=", "tg_sid=", "tg_ft=", "tg_lt="] {
        assert!(
            cookies.iter().any(|c| c.starts_with(name)),
            "{name} in {cookies:?}"
        );
    }
    // The sample app shows what touchgate told it.
    assert!(html.contains("x-touch-device"), "{html}");

    // The snippet is served by touchgate itself.
    let (parts, js) = support::get(&demo.url("/_tg/c.js"), &[]).await;
    assert_eq!(parts.status, 200);
    assert!(String::from_utf8_lossy(&js).contains("_tg_ctx"));

    // A signup with those cookies: the team plan answers 303.
    let (parts, _) = support::send(
        "POST",
        &demo.url("/signup"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &cookie_header(&cookies)),
        ],
        "email=Ada%40Example.com&plan=team",
    )
    .await;
    assert_eq!(parts.status, 303);
    assert_eq!(parts.headers["location"], "/thanks?plan=team");

    // A signup the app rejects (no e-mail) is not a conversion.
    let (parts, _) = support::send(
        "POST",
        &demo.url("/signup"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "email=&plan=pro",
    )
    .await;
    assert_eq!(parts.status, 400);

    let events = demo.wait_events("a landing and a signup", |e| {
        e.iter().any(|e| e["event_name"] == "landing")
            && e.iter().any(|e| e["event_name"] == "signup_submitted")
    });
    let landing = events
        .iter()
        .find(|e| e["event_name"] == "landing")
        .unwrap();
    assert_eq!(landing["origin"], "proxy");
    assert_eq!(landing["touch"]["source"], "google");
    assert_eq!(landing["touch"]["medium"], "cpc");
    assert_eq!(landing["touch"]["click_id_type"], "gclid");
    assert_eq!(landing["touch"]["channel"], "Paid Search");
    assert_eq!(landing["page"]["path"], "/");

    let signup = events
        .iter()
        .find(|e| e["event_name"] == "signup_submitted")
        .unwrap();
    assert_eq!(signup["status"], 303);
    assert_eq!(signup["properties"]["plan"], "team");
    assert_eq!(signup["last_touch"]["channel"], "Paid Search");
    assert_eq!(signup["device_id"], landing["device_id"]);
    let lead = signup["lead_id"].as_str().unwrap();
    assert!(
        lead.len() == 32 && lead.bytes().all(|b| b.is_ascii_hexdigit()),
        "{lead}"
    );
    let raw = std::fs::read_to_string(demo.events_path()).unwrap();
    assert!(
        !raw.to_lowercase().contains("ada@example.com"),
        "the e-mail never reaches the file"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event_name"] == "signup_submitted")
            .count(),
        1,
        "the 400 answer is not a conversion"
    );

    // The live lines, one per event.
    demo.wait_stdout(&["landing", "Paid Search", "google/cpc", "/"]);
    // Every post is an attempt; the 400 one is not confirmed.
    demo.wait_stdout(&[
        "form_attempt",
        "signup_submitted",
        "not confirmed (status)",
        "status=400",
    ]);
    demo.wait_stdout(&[
        "form_attempt",
        "signup_submitted",
        "confirmed",
        "status=303",
    ]);
    let line = demo.wait_stdout(&["signup_submitted", "lead=", "status=303"]);
    assert!(line.contains(&format!("lead={}…", &lead[..8])), "{line}");
    assert!(
        line.contains("last touch: Paid Search google/cpc"),
        "{line}"
    );

    let status = demo.terminate();
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[test]
fn an_address_in_use_fails_with_a_hint_to_use_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_touchgate"))
        .args(["demo", "--listen", &addr.to_string(), "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{addr} is already in use")),
        "{stderr}"
    );
    assert!(stderr.contains("--listen"), "{stderr}");
    // Logs on stderr carry no colour codes when stderr is not a terminal.
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}

#[test]
fn events_from_an_earlier_run_stay_and_are_not_replayed_as_live_lines() {
    let dir = tempfile::tempdir().unwrap();
    let at = time::OffsetDateTime::now_utc();
    let earlier = touchgate::event::Event::new(
        "00112233445566778899aabbccddeeff".into(),
        "landing".into(),
        touchgate::event::Origin::Proxy,
        at,
        at,
    );
    let line = format!("{}\n", serde_json::to_string(&earlier).unwrap());
    std::fs::write(dir.path().join("events.jsonl"), &line).unwrap();
    let mut demo = Demo::start_in(dir);
    let banner = demo.stdout().join("\n");
    assert!(
        banner.contains(&format!(
            "{} bytes of earlier events are already in the file",
            line.len()
        )),
        "{banner}"
    );
    let status = demo.terminate();
    assert_eq!(status.code(), Some(0));
    let out = demo.stdout();
    let mut live = out
        .iter()
        .skip_while(|l| !l.starts_with("Live events"))
        .skip(1);
    assert!(
        !live.any(|l| l.contains("landing")),
        "an earlier event was printed as live: {out:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(demo.events_path()).unwrap(),
        line,
        "the earlier event is kept as it was"
    );
}
