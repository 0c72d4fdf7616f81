//! Headless Chromium against `touchgate demo`: a visitor arrives from a
//! campaign, clicks through to the signup form and submits it. Checked:
//! the cookies as the browser holds them, the client snippet's context and
//! beacon, the capture without JavaScript, and the events on disk.
//!
//! Chromium is Debian's `/usr/bin/chromium` (or `$TG_CHROMIUM`), driven by
//! playwright-core (`tests/browser/drive.cjs`); the test runs `npm ci` for
//! it into Cargo's temporary directory, from the committed lock file.
//! Needs Node.js ≥ 20 and npm, and the npm registry on the first run.

#[path = "support/chromium.rs"]
mod chromium_support;
#[path = "browser/demo_process.rs"]
mod demo_process;

use base64::Engine;
use chromium_support::{DRIVE_LIMIT, browser_dir, chromium, node_modules, run_bounded};
use demo_process::Demo;
use serde_json::{Value, json};
use std::process::Command;

/// One visitor journey in a fresh Chromium; what the browser saw.
fn drive(demo: &Demo, opts: Value) -> Value {
    let mut opts = opts;
    opts["base"] = json!(demo.base);
    let (status, out, err) = run_bounded(
        Command::new("node")
            .arg(browser_dir().join("drive.cjs"))
            .arg(opts.to_string())
            .env("TG_NODE_MODULES", node_modules())
            .env("TG_CHROMIUM", chromium()),
        DRIVE_LIMIT,
        "tests/browser/drive.cjs",
    );
    assert!(
        status.success(),
        "drive.cjs failed ({status})\n--- stdout\n{out}\n--- stderr\n{err}\n{}",
        demo.logs()
    );
    let seen: Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("drive.cjs output: {e}\n{out}"));
    assert_eq!(
        seen["pageErrors"],
        json!([]),
        "errors in the page: {seen:#}"
    );
    seen
}

fn cookie<'a>(seen: &'a Value, name: &str) -> &'a Value {
    seen["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} cookie in the browser: {:#}", seen["cookies"]))
}

/// The first value of a urlencoded field.
fn form_field(body: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn by_name<'a>(events: &'a [Value], name: &str, origin: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event_name"] == name && e["origin"] == origin)
        .collect()
}

#[test]
fn a_visitor_from_a_google_ad_gets_httponly_cookies_and_is_attributed_on_signup() {
    let mut demo = Demo::start();
    let seen = drive(
        &demo,
        json!({
            "landing": "/?utm_source=google&utm_medium=cpc&utm_campaign=spring_sale&gclid=browser1",
            "email": "grace@example.com",
            "plan": "team",
            "javascript": true,
        }),
    );
    assert_eq!(seen["landingStatus"], 200);

    // The cookies as the browser keeps them.
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    for name in ["tg_did", "tg_sid", "tg_ft", "tg_lt"] {
        let c = cookie(&seen, name);
        assert_eq!(c["httpOnly"], true, "{name}: {c}");
        assert_eq!(c["sameSite"], "Lax", "{name}: {c}");
        assert_eq!(c["path"], "/", "{name}: {c}");
        assert_eq!(c["secure"], false, "{name} over plain HTTP: {c}");
        assert_eq!(c["domain"], "127.0.0.1", "{name}: a host-only cookie: {c}");
        let lifetime = c["expires"].as_f64().unwrap() - now;
        if name == "tg_sid" {
            assert!(
                (25.0 * 60.0..=31.0 * 60.0).contains(&lifetime),
                "{name}: 30 minutes, sliding: {c}"
            );
        } else {
            assert!(lifetime > 399.0 * 86400.0, "{name}: 400 days: {c}");
        }
    }
    // HttpOnly: page scripts cannot read them.
    let readable = seen["documentCookie"].as_str().unwrap();
    assert!(!readable.contains("tg_"), "document.cookie = {readable:?}");

    // The app showed the touch headers touchgate gave it.
    let panel = seen["touchPanel"].as_str().unwrap();
    assert!(
        panel.contains("x-touch-last") && panel.contains("source=\"google\""),
        "{panel}"
    );

    // The team plan answers 303; the browser followed it.
    assert_eq!(seen["formStatus"], 303);
    assert!(
        seen["finalUrl"]
            .as_str()
            .unwrap()
            .ends_with("/thanks?plan=team"),
        "{seen:#}"
    );
    assert_eq!(seen["finalHeading"], "Welcome aboard!");

    let events = demo.wait_events("the landing and the signup", |e| {
        !by_name(e, "landing", "proxy").is_empty()
            && !by_name(e, "signup_submitted", "proxy").is_empty()
    });
    let landings = by_name(&events, "landing", "proxy");
    assert_eq!(
        landings.len(),
        1,
        "internal navigation is not a landing: {events:#?}"
    );
    let landing = landings[0];
    assert_eq!(landing["touch"]["channel"], "Paid Search");
    assert_eq!(landing["touch"]["source"], "google");
    assert_eq!(landing["touch"]["click_id_type"], "gclid");
    // (Headless Chromium says so in its user agent: `bot` is true here.)
    assert_eq!(
        landing["client"]["user_agent"]["family"], "Chrome",
        "{landing}"
    );

    let signup = by_name(&events, "signup_submitted", "proxy")[0];
    assert_eq!(signup["status"], 303);
    assert_eq!(signup["properties"]["plan"], "team");
    assert_eq!(
        signup["device_id"], landing["device_id"],
        "the same browser"
    );
    assert_eq!(
        signup["session_id"], landing["session_id"],
        "the same session"
    );
    assert_eq!(signup["first_touch"]["channel"], "Paid Search");
    assert_eq!(signup["last_touch"]["channel"], "Paid Search");
    assert_eq!(signup["last_touch"]["campaign"], "spring_sale");
    assert!(signup["lead_id"].as_str().is_some_and(|l| l.len() == 32));

    assert_eq!(demo.terminate().code(), Some(0));
}

#[test]
fn the_snippet_adds_the_context_to_the_form_and_its_cid_matches_the_beacon() {
    let mut demo = Demo::start();
    let seen = drive(
        &demo,
        json!({
            "landing": "/?utm_source=newsletter&utm_medium=email&utm_campaign=november_digest",
            "email": "katherine@example.com",
            "plan": "pro",
            "javascript": true,
            "layoutShift": true,
        }),
    );
    assert_eq!(seen["snippetLoaded"], true, "{seen:#}");
    assert_eq!(seen["formStatus"], 200);

    // What the browser posted: the fields, plus `_tg_ctx` (base64url JSON).
    let body = seen["formBody"].as_str().unwrap();
    assert_eq!(
        form_field(body, "email").as_deref(),
        Some("katherine@example.com")
    );
    let ctx = form_field(body, "_tg_ctx")
        .unwrap_or_else(|| panic!("no _tg_ctx in the form post: {body}"));
    let ctx: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&ctx)
            .unwrap(),
    )
    .unwrap();
    let cid = ctx["cid"].as_str().unwrap().to_string();
    assert!(!cid.is_empty());
    // The page experience, as Chromium measured it until the submit.
    let ux = &ctx["ux"];
    for ms in ["ttfb", "dcl", "load", "fcp", "lcp"] {
        assert!(ux[ms].as_f64().is_some_and(|v| v >= 0.0), "{ms}: {ux}");
    }
    let scroll = ux["scroll"].as_f64().unwrap_or(-1.0);
    assert!((1.0..=100.0).contains(&scroll), "scroll depth: {ux}");
    assert!(
        ux["cls"].as_f64().is_some_and(|c| c > 0.0),
        "a banner pushed the form down: CLS > 0: {ux}"
    );
    // INP is the slowest interaction of at least 16 ms (Event Timing's
    // floor); headless clicks are often quicker, and then there is none.
    if let Some(inp) = ux.get("inp") {
        assert!(inp.as_f64().is_some_and(|v| v >= 16.0), "{ux}");
    }
    // The snippet ships under 1 KiB gzipped.
    let gz = seen["snippetGzipBytes"].as_u64().expect("served gzipped");
    assert!(gz < 1024, "{gz} bytes gzipped");

    // The beacon, as the browser sent it.
    let beacons = seen["beacons"].as_array().unwrap();
    assert_eq!(beacons.len(), 1, "{seen:#}");
    assert_eq!(beacons[0]["method"], "POST");
    let beacon: Value = serde_json::from_str(beacons[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        beacon,
        json!({"event_name": "signup_submitted", "cid": cid})
    );

    // On disk: the conversion carries the context, the beacon the same cid.
    let events = demo.wait_events("the conversion and the beacon", |e| {
        !by_name(e, "signup_submitted", "proxy").is_empty()
            && !by_name(e, "signup_submitted", "beacon").is_empty()
    });
    let conversion = by_name(&events, "signup_submitted", "proxy")[0];
    assert_eq!(
        conversion["client"]["context"]["cid"],
        json!(cid),
        "{conversion:#}"
    );
    assert_eq!(
        conversion["client"]["context"]["ux"], ctx["ux"],
        "every metric is kept: {conversion:#}"
    );
    assert_eq!(conversion["last_touch"]["channel"], "Email");
    let beacon = by_name(&events, "signup_submitted", "beacon")[0];
    assert_eq!(beacon["client"]["context"]["cid"], json!(cid), "{beacon:#}");
    assert_eq!(beacon["device_id"], conversion["device_id"]);

    assert_eq!(demo.terminate().code(), Some(0));
}

#[test]
fn without_javascript_the_conversion_is_still_captured() {
    let mut demo = Demo::start();
    let seen = drive(
        &demo,
        json!({
            "landing": "/pricing?utm_source=facebook&utm_medium=paid_social&utm_campaign=retargeting&fbclid=browser3",
            "email": "hedy@example.com",
            "plan": "starter",
            "javascript": false,
        }),
    );
    assert_eq!(seen["landingStatus"], 200);
    assert_eq!(seen["formStatus"], 200);
    let body = seen["formBody"].as_str().unwrap();
    assert_eq!(
        form_field(body, "email").as_deref(),
        Some("hedy@example.com")
    );
    assert_eq!(form_field(body, "_tg_ctx"), None, "no script ran: {body}");
    assert_eq!(seen["beacons"], json!([]));
    // The cookies are set by the server, so they are there all the same.
    for name in ["tg_did", "tg_sid", "tg_ft", "tg_lt"] {
        assert_eq!(cookie(&seen, name)["httpOnly"], true);
    }

    let events = demo.wait_events("the landing and the conversion", |e| {
        !by_name(e, "landing", "proxy").is_empty()
            && !by_name(e, "signup_submitted", "proxy").is_empty()
    });
    let landing = by_name(&events, "landing", "proxy")[0];
    assert_eq!(landing["touch"]["channel"], "Paid Social");
    assert_eq!(landing["page"]["path"], "/pricing");
    let conversion = by_name(&events, "signup_submitted", "proxy")[0];
    assert_eq!(conversion["status"], 200);
    assert_eq!(conversion["client"]["context"], Value::Null);
    assert_eq!(conversion["last_touch"]["channel"], "Paid Social");
    assert_eq!(conversion["device_id"], landing["device_id"]);
    assert!(by_name(&events, "signup_submitted", "beacon").is_empty());

    assert_eq!(demo.terminate().code(), Some(0));
}
