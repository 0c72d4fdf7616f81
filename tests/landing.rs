//! Landing capture end to end: cookies, touch headers, events on disk.

#[path = "support/upstream.rs"]
mod support;

use std::collections::HashMap;
use support::*;

const NAV: (&str, &str) = ("sec-fetch-dest", "document");

/// name -> (value, attributes) from Set-Cookie lines.
fn set_cookies(parts: &http::response::Parts) -> HashMap<String, (String, String)> {
    parts
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .filter_map(|line| {
            let (pair, attrs) = line.split_once(';').unwrap_or((&line, ""));
            let (k, v) = pair.split_once('=')?;
            Some((
                k.trim().to_string(),
                (v.trim().to_string(), attrs.to_string()),
            ))
        })
        .collect()
}

fn cookie_header(c: &HashMap<String, (String, String)>) -> String {
    c.iter()
        .filter(|(k, _)| k.starts_with("tg_"))
        .map(|(k, (v, _))| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn dict_get<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    header
        .split(", ")
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
}

#[tokio::test]
async fn paid_search_visitor_gets_cookies_headers_and_a_landing_event() {
    let site = Site::new("").await;
    let (parts, _) = get(
        &site.url("/pricing?utm_source=Google&utm_medium=CPC&utm_campaign=Spring%20Sale&gclid=abc123&ref=x#frag"),
        &[NAV, ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36")],
    )
    .await;
    assert_eq!(parts.status, 200);
    let cookies = set_cookies(&parts);
    for name in ["tg_did", "tg_sid", "tg_ft", "tg_lt"] {
        let (value, attrs) = cookies
            .get(name)
            .unwrap_or_else(|| panic!("{name} not set"));
        assert!(!value.is_empty());
        assert!(
            attrs.contains("HttpOnly")
                && attrs.contains("SameSite=Lax")
                && attrs.contains("Path=/"),
            "{name}: {attrs}"
        );
        assert!(!attrs.contains("Secure"), "plain HTTP: no Secure");
        assert!(value.len() + name.len() < 1024);
    }
    assert!(cookies["tg_did"].1.contains("Max-Age=34560000"));
    assert!(cookies["tg_sid"].1.contains("Max-Age=1800"));

    // The app saw the touch on the very first request.
    let h = site.up.last().headers;
    let device = h
        .get("x-touch-device")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(device.len(), 32);
    assert!(h.get("x-touch-session").is_some());
    let first = h.get("x-touch-first").unwrap().to_str().unwrap();
    assert_eq!(dict_get(first, "source"), Some("\"google\""));
    assert_eq!(dict_get(first, "medium"), Some("\"cpc\""));
    assert_eq!(dict_get(first, "campaign"), Some("\"spring sale\""));
    assert_eq!(dict_get(first, "channel"), Some("\"Paid Search\""));
    assert!(h.get("x-touch-last").is_some());
    let touch_id = h.get("x-touch-id").unwrap().to_str().unwrap().to_string();

    let ev = site.wait_events(1).await;
    let e = &ev[0];
    assert_eq!(e["schema"], "touchgate/1");
    assert_eq!(e["event_name"], "landing");
    assert_eq!(e["origin"], "proxy");
    assert_eq!(e["event_id"], e["touchpoint_id"]);
    assert_eq!(e["touchpoint_id"], touch_id.as_str());
    assert_eq!(e["device_id"], device.as_str());
    assert_eq!(e["touch"]["source"], "google");
    assert_eq!(e["touch"]["channel"], "Paid Search");
    assert_eq!(e["touch"]["click_id_type"], "gclid");
    assert_eq!(e["touch"]["valid"], true);
    assert_eq!(e["first_touch"]["channel"], "Paid Search");
    let url = e["page"]["url"].as_str().unwrap();
    // The host is an IP literal here, which the PII guard redacts: real
    // sites are served under a name.
    assert!(
        url.starts_with("http://") && url.contains("/pricing?"),
        "{url}"
    );
    assert!(
        !url.contains("gclid")
            && !url.contains("abc123")
            && url.contains("utm_source=Google")
            && !url.contains("ref=")
            && !url.contains('#'),
        "{url}"
    );
    assert_eq!(e["page"]["path"], "/pricing");
    assert_eq!(e["client"]["ip_prefix"], "127.0.0.0/24");
    assert_eq!(e["client"]["user_agent"]["family"], "Chrome");
    assert_eq!(e["client"]["user_agent"]["bot"], false);
    let raw = serde_json::to_string(e).unwrap();
    assert!(
        !raw.contains("127.0.0.1") && !raw.contains("Mozilla"),
        "{raw}"
    );
    assert!(site.tg.metrics.encode().contains(
        r#"touchgate_events_total{event_name="landing",channel="Paid Search",origin="proxy"} 1"#
    ));
}

#[tokio::test]
async fn return_visits_keep_first_touch_and_direct_does_not_overwrite_last() {
    let site = Site::new("").await;
    let (p1, _) = get(
        &site.url("/?utm_source=newsletter&utm_medium=email&utm_campaign=nov"),
        &[NAV],
    )
    .await;
    let mut jar = set_cookies(&p1);
    // Second visit from a Facebook ad, same device.
    let (p2, _) = get(
        &site.url("/?utm_source=facebook&utm_medium=paid_social&utm_campaign=retarget"),
        &[NAV, ("cookie", &cookie_header(&jar))],
    )
    .await;
    for (k, v) in set_cookies(&p2) {
        jar.insert(k, v);
    }
    assert_channels(&site.up.last().headers, "Email", "Paid Social");
    // A direct return visit in a new session (no tg_sid) keeps the last touch.
    jar.remove("tg_sid");
    let (p3, _) = get(&site.url("/"), &[NAV, ("cookie", &cookie_header(&jar))]).await;
    assert_eq!(p3.status, 200);
    for (k, v) in set_cookies(&p3) {
        jar.insert(k, v);
    }
    assert_channels(&site.up.last().headers, "Email", "Paid Social");
    let ev = site.wait_events(3).await;
    let devices: std::collections::HashSet<_> = ev.iter().map(|e| e["device_id"].clone()).collect();
    assert_eq!(devices.len(), 1, "one device across visits");
    assert_eq!(ev[2]["touch"]["channel"], "Direct");
    assert_eq!(ev[2]["last_touch"]["channel"], "Paid Social");
    assert_eq!(ev[2]["first_touch"]["channel"], "Email");
    // Inside a session, a plain page load is not a landing.
    let (p4, _) = get(
        &site.url("/about"),
        &[NAV, ("cookie", &cookie_header(&jar))],
    )
    .await;
    for (k, v) in set_cookies(&p4) {
        jar.insert(k, v);
    }
    get(
        &site.url("/about2"),
        &[NAV, ("cookie", &cookie_header(&jar))],
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(site.events().len(), 3);
}

#[tokio::test]
async fn tampered_cookies_are_ignored_and_counted() {
    let site = Site::new("").await;
    let (p1, _) = get(&site.url("/?utm_source=google&utm_medium=cpc"), &[NAV]).await;
    let jar = set_cookies(&p1);
    let ft = &jar["tg_ft"].0;
    let mut forged = ft.clone().into_bytes();
    let i = forged.len() / 2;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let cookie = format!(
        "tg_did={}; tg_sid={}; tg_ft={forged}; tg_lt=v1.garbage.x",
        jar["tg_did"].0, jar["tg_sid"].0
    );
    get(&site.url("/page"), &[NAV, ("cookie", &cookie)]).await;
    let h = site.up.last().headers;
    // Absent, so the first touch starts again from what is known now.
    let first = h.get("x-touch-first").unwrap().to_str().unwrap();
    assert!(
        first.contains("channel=\"Direct\""),
        "forged first touch must be ignored: {first}"
    );
    assert!(h.get("x-touch-device").is_some());
    let m = site.tg.metrics.encode();
    assert!(
        m.contains(r#"touchgate_cookie_rejected_total{cookie="tg_ft"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"touchgate_cookie_rejected_total{cookie="tg_lt"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn assets_and_xhr_emit_nothing_but_carry_touch_headers() {
    let site = Site::new("").await;
    let (p1, _) = get(&site.url("/?utm_source=google&utm_medium=cpc"), &[NAV]).await;
    let jar = set_cookies(&p1);
    let cookie = cookie_header(&jar);
    for (path, headers) in [
        (
            "/app.js?utm_source=x&utm_medium=cpc",
            vec![("sec-fetch-dest", "script"), ("cookie", cookie.as_str())],
        ),
        (
            "/logo.png",
            vec![
                ("accept", "image/avif,image/webp"),
                ("cookie", cookie.as_str()),
            ],
        ),
        (
            "/api/cart",
            vec![
                ("sec-fetch-dest", "empty"),
                ("sec-fetch-mode", "cors"),
                ("cookie", cookie.as_str()),
            ],
        ),
    ] {
        let (p, _) = get(&site.url(path), &headers).await;
        assert!(
            p.headers.get("set-cookie").is_none(),
            "{path} must not set cookies"
        );
        let h = site.up.last().headers;
        assert!(
            h.get("x-touch-device").is_some(),
            "{path}: request with cookies carries the touch headers"
        );
        assert!(h.get("x-touch-id").is_none());
    }
    // Without cookies an asset is plain pass-through.
    get(&site.url("/style.css"), &[("sec-fetch-dest", "style")]).await;
    assert!(site.up.last().headers.get("x-touch-device").is_none());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(site.events().len(), 1, "only the landing");
}

#[tokio::test]
async fn referrers_organic_social_and_internal() {
    let site = Site::new("").await;
    get(
        &site.url("/a"),
        &[NAV, ("referer", "https://www.google.com/search?q=shoes")],
    )
    .await;
    get(
        &site.url("/b"),
        &[NAV, ("referer", "https://m.facebook.com/")],
    )
    .await;
    let ev = site.wait_events(2).await;
    assert_eq!(ev[0]["touch"]["channel"], "Organic Search");
    assert_eq!(ev[0]["page"]["referrer_host"], "google.com");
    assert_eq!(ev[1]["touch"]["channel"], "Organic Social");
    assert_eq!(ev[1]["touch"]["source"], "facebook");
    // Same-site referrer with an existing session: not a landing.
    let (p, _) = get(&site.url("/c"), &[NAV]).await;
    let jar = set_cookies(&p);
    let host = site.tg.proxy_addr.to_string();
    let internal = format!("http://{host}/c");
    get(
        &site.url("/d"),
        &[
            NAV,
            ("referer", internal.as_str()),
            ("cookie", &cookie_header(&jar)),
        ],
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        site.events().len(),
        3,
        "the direct new-session landing on /c only"
    );
}

#[tokio::test]
async fn without_consent_no_identity_but_the_landing_is_counted() {
    let site = Site::new("").await;
    let (p, _) = get(
        &site.url("/?utm_source=google&utm_medium=cpc"),
        &[NAV, ("sec-gpc", "1")],
    )
    .await;
    assert!(p.headers.get("set-cookie").is_none());
    let h = site.up.last().headers;
    assert!(h.get("x-touch-device").is_none() && h.get("x-touch-session").is_none());
    // A direct page load without consent is not a landing (no session to start).
    get(&site.url("/"), &[NAV, ("sec-gpc", "1")]).await;
    let ev = site.wait_events(1).await;
    assert_eq!(ev[0]["device_id"], serde_json::Value::Null);
    assert_eq!(ev[0]["session_id"], serde_json::Value::Null);
    assert_eq!(ev[0]["touch"]["channel"], "Paid Search");
    assert_eq!(ev[0]["consent"]["analytics"], false);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(site.events().len(), 1);

    // Opt-in mode: nothing without the consent cookie, identity with it.
    let site = Site::new("[consent]\nmode = \"cookie\"\ncookie = \"CookieConsent\"\nanalytics_grants = [\"statistics:true\"]\nads_grants = [\"marketing:true\"]\n").await;
    let (p, _) = get(&site.url("/?utm_source=google&utm_medium=cpc"), &[NAV]).await;
    assert!(p.headers.get("set-cookie").is_none());
    let (p, _) = get(
        &site.url("/?utm_source=google&utm_medium=cpc"),
        &[
            NAV,
            (
                "cookie",
                "CookieConsent={necessary:true%2Cstatistics:true%2Cmarketing:false}",
            ),
        ],
    )
    .await;
    assert!(set_cookies(&p).contains_key("tg_did"));
    let ev = site.wait_events(2).await;
    assert_eq!(ev[1]["consent"]["analytics"], true);
    assert_eq!(ev[1]["consent"]["ads"], false);
}

#[tokio::test]
async fn rotated_secret_still_verifies_and_is_resigned() {
    // Cookies minted under the old secret...
    let old = Site::new("").await;
    let (p, _) = get(&old.url("/?utm_source=google&utm_medium=cpc"), &[NAV]).await;
    let jar = set_cookies(&p);
    // ...are read by a touchgate whose previous secret is the old one.
    unsafe { std::env::set_var("TG_TEST_PREVIOUS", SECRET) };
    let up = start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(
        up.addr(),
        dir.path(),
        "[identity]\nsecret_env = \"TG_TEST_NEW\"\nprevious_secret_env = \"TG_TEST_PREVIOUS\"\n",
    );
    unsafe { std::env::set_var("TG_TEST_NEW", "a-brand-new-secret-0123456789") };
    let new = touchgate(&toml).await;
    let (p2, _) = get(
        &format!("http://{}/next", new.proxy_addr),
        &[NAV, ("cookie", &cookie_header(&jar))],
    )
    .await;
    let h = up.last().headers;
    assert!(
        h.get("x-touch-first")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Paid Search")
    );
    let resigned = set_cookies(&p2);
    assert!(
        resigned.contains_key("tg_ft") && resigned["tg_ft"].0 != jar["tg_ft"].0,
        "re-signed with the new secret"
    );
}

/// The first and last touch the app was told about, by channel.
fn assert_channels(h: &http::HeaderMap, first: &str, last: &str) {
    for (name, channel) in [("x-touch-first", first), ("x-touch-last", last)] {
        let v = h.get(name).unwrap().to_str().unwrap();
        assert!(v.contains(&format!("channel=\"{channel}\"")), "{name}: {v}");
    }
}

/// A landing whose answer the test upstream takes from the request's own
/// `x-answer-*` headers (see `support::scripted_answer`).
async fn landing_answered(site: &Site, status: &str, headers: &[&str]) -> http::response::Parts {
    let mut h = vec![NAV, ("x-answer-status", status)];
    for v in headers {
        h.push(("x-answer-header", v));
    }
    get(&site.url("/spring?utm_source=google&utm_medium=cpc"), &h)
        .await
        .0
}

#[tokio::test]
async fn cookies_never_go_out_on_a_response_a_shared_cache_may_keep() {
    let site = Site::new("").await;
    let cc = |p: &http::response::Parts| {
        p.headers
            .get_all("cache-control")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // Marked public: made private, keeping the browser's max-age.
    let p = landing_answered(&site, "200", &["cache-control: public, max-age=600"]).await;
    assert_eq!(cc(&p), ["private, max-age=600"]);
    assert!(set_cookies(&p).contains_key("tg_did"));
    // s-maxage alone, or nothing at all on a 200: private too.
    let p = landing_answered(&site, "200", &["cache-control: s-maxage=60"]).await;
    assert_eq!(cc(&p), ["private"]);
    let p = landing_answered(&site, "200", &[]).await;
    assert_eq!(cc(&p), ["private"]);
    assert!(set_cookies(&p).contains_key("tg_sid"));
    // Already private or no-store, or a redirect without freshness: untouched.
    let p = landing_answered(&site, "200", &["cache-control: private, no-cache"]).await;
    assert_eq!(cc(&p), ["private, no-cache"]);
    let p = landing_answered(&site, "200", &["cache-control: no-store"]).await;
    assert_eq!(cc(&p), ["no-store"]);
    let p = landing_answered(&site, "302", &["location: /spring/"]).await;
    assert!(cc(&p).is_empty(), "{:?}", cc(&p));
    assert!(set_cookies(&p).contains_key("tg_did"));
    let m = site.tg.metrics.encode();
    assert!(
        m.contains(r#"touchgate_cacheable_cookie_responses_total{action="private"} 3"#),
        "{m}"
    );
    // The landings are recorded all the same.
    site.wait_events(6).await;
}

#[tokio::test]
async fn skip_sets_no_cookie_on_a_cacheable_response() {
    let site = Site::new("[identity]\ncacheable_responses = \"skip\"\n").await;
    let p = landing_answered(&site, "200", &["cache-control: public, max-age=600"]).await;
    assert!(
        p.headers.get("set-cookie").is_none(),
        "{:?}",
        p.headers.get_all("set-cookie")
    );
    assert_eq!(p.headers["cache-control"], "public, max-age=600");
    let p = landing_answered(&site, "200", &["cache-control: private"]).await;
    assert!(set_cookies(&p).contains_key("tg_did"));
    let m = site.tg.metrics.encode();
    assert!(
        m.contains(r#"touchgate_cacheable_cookie_responses_total{action="skip"} 1"#),
        "{m}"
    );
    // The cached page's landing is still an event (without a cookie to
    // remember it by).
    let ev = site.wait_events(2).await;
    assert_eq!(ev[0]["event_name"], "landing");
}
