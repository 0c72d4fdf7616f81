//! The `google_ads` sink against a stand-in for the Google Ads API and
//! Google's OAuth token endpoint on 127.0.0.1 (the real ones cannot be
//! reached from here). Every request is checked against Google's
//! documented format: the token request (`grant_type=refresh_token` with
//! the client and the refresh token, form-encoded), and
//! `customers/{id}:uploadClickConversions` (bearer token, developer token,
//! login customer id, `partialFailure: true`, and for each conversion one
//! click id, the conversion action's resource name, `conversionDateTime`
//! as `yyyy-mm-dd hh:mm:ss±hh:mm`, `orderId`, hashed `userIdentifiers`,
//! `consent`).
//!
//! End to end: a landing with a `gclid`, then a signup the app confirms,
//! makes exactly one upload; the same signup with TCF consent withdrawn
//! makes none.

#[path = "support/ad_platform.rs"]
mod ad_platform;
#[path = "support/upstream.rs"]
mod support;

use ad_platform::{Answer, FakePlatform, Recorded};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use time::OffsetDateTime;
use touchgate::capture::tcf::{self, TcString};
use touchgate::event::{AdClick, AdMatch, Envelope, Event, GoogleMatch, Origin};
use touchgate::sink::google_ads::{GoogleAdsSink, GoogleAdsSinkConfig};
use touchgate::sink::{Sink, SinkError};

const CUSTOMER: &str = "1234567890";
const LOGIN: &str = "9876543210";
const ACTION: &str = "555111";
const ACCESS_TOKEN: &str = "ya29.test-access-token";

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn is_hex64(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn env(k: &str) -> Option<String> {
    match k {
        "GADS_DEV_TOKEN" => Some("dev-token-1".into()),
        "GADS_CLIENT_ID" => Some("client-1.apps.googleusercontent.com".into()),
        "GADS_CLIENT_SECRET" => Some("client-secret-1".into()),
        "GADS_REFRESH_TOKEN" => Some("1//refresh-token".into()),
        other => support::env(other),
    }
}

/// Google's OAuth 2.0 token endpoint, refresh-token grant (RFC 6749 §6).
fn token_format(r: &Recorded) -> Vec<String> {
    let mut p = Vec::new();
    if r.method != "POST" {
        p.push(format!("token: method {}", r.method));
    }
    if r.content_type.as_deref() != Some("application/x-www-form-urlencoded") {
        p.push(format!("token: content-type {:?}", r.content_type));
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&r.body).into_owned().collect();
    for (k, want) in [
        ("grant_type", "refresh_token"),
        ("client_id", "client-1.apps.googleusercontent.com"),
        ("client_secret", "client-secret-1"),
        ("refresh_token", "1//refresh-token"),
    ] {
        if form.get(k).map(String::as_str) != Some(want) {
            p.push(format!("token: {k} is {:?}", form.get(k)));
        }
    }
    p
}

/// `yyyy-mm-dd hh:mm:ss+|-hh:mm`.
fn is_google_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b[i].is_ascii_digit());
    b.len() == 25
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b' '
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && matches!(b[19], b'+' | b'-')
        && digits(20..22)
        && b[22] == b':'
        && digits(23..25)
}

/// `uploadClickConversions` as the Google Ads API reference documents it.
fn upload_format(r: &Recorded) -> Vec<String> {
    let mut p = Vec::new();
    if r.method != "POST" {
        p.push(format!("method {}", r.method));
    }
    if r.target != format!("/v22/customers/{CUSTOMER}:uploadClickConversions") {
        p.push(format!("path {}", r.target));
    }
    if r.content_type.as_deref() != Some("application/json") {
        p.push(format!("content-type {:?}", r.content_type));
    }
    if r.header("authorization") != Some(&format!("Bearer {ACCESS_TOKEN}")) {
        p.push(format!("authorization {:?}", r.header("authorization")));
    }
    if r.header("developer-token") != Some("dev-token-1") {
        p.push(format!("developer-token {:?}", r.header("developer-token")));
    }
    if r.header("login-customer-id") != Some(LOGIN) {
        p.push(format!(
            "login-customer-id {:?}",
            r.header("login-customer-id")
        ));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
        p.push("body is not JSON".into());
        return p;
    };
    if body["partialFailure"] != true {
        p.push("partialFailure is not true".into());
    }
    let Some(conversions) = body["conversions"].as_array() else {
        p.push("no conversions array".into());
        return p;
    };
    if conversions.is_empty() || conversions.len() > 2000 {
        p.push(format!("{} conversions", conversions.len()));
    }
    let known = [
        "gclid",
        "gbraid",
        "wbraid",
        "conversionAction",
        "conversionDateTime",
        "orderId",
        "conversionValue",
        "currencyCode",
        "userIdentifiers",
        "consent",
    ];
    for (i, c) in conversions.iter().enumerate() {
        let Some(obj) = c.as_object() else {
            p.push(format!("conversions[{i}] is not an object"));
            continue;
        };
        for k in obj.keys() {
            if !known.contains(&k.as_str()) {
                p.push(format!(
                    "conversions[{i}].{k} is not a ClickConversion field"
                ));
            }
        }
        let ids = ["gclid", "gbraid", "wbraid"]
            .iter()
            .filter(|k| {
                obj.get(**k)
                    .and_then(Value::as_str)
                    .is_some_and(|v| !v.is_empty())
            })
            .count();
        if ids != 1 {
            p.push(format!(
                "conversions[{i}] has {ids} click ids, Google takes one"
            ));
        }
        let action = c["conversionAction"].as_str().unwrap_or_default();
        let prefix = format!("customers/{CUSTOMER}/conversionActions/");
        if !action
            .strip_prefix(&prefix)
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        {
            p.push(format!("conversions[{i}].conversionAction {action:?}"));
        }
        if !c["conversionDateTime"]
            .as_str()
            .is_some_and(is_google_date_time)
        {
            p.push(format!(
                "conversions[{i}].conversionDateTime {}",
                c["conversionDateTime"]
            ));
        }
        if !c["orderId"]
            .as_str()
            .is_some_and(|o| !o.is_empty() && o.len() <= 100)
        {
            p.push(format!("conversions[{i}].orderId {}", c["orderId"]));
        }
        if let Some(v) = c.get("conversionValue")
            && !v.is_number()
        {
            p.push(format!("conversions[{i}].conversionValue is not a number"));
        }
        if let Some(cur) = c.get("currencyCode")
            && !cur
                .as_str()
                .is_some_and(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()))
        {
            p.push(format!("conversions[{i}].currencyCode {cur}"));
        }
        for (j, u) in c["userIdentifiers"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("conversions[{i}].userIdentifiers[{j}]");
            let keys: Vec<&String> = u
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            match keys.as_slice() {
                [k] if *k == "hashedEmail" || *k == "hashedPhoneNumber" => {
                    if !is_hex64(&u[k.as_str()]) {
                        p.push(format!("{at}.{k} is not SHA-256 hex"));
                    }
                }
                [k] if *k == "addressInfo" => {
                    let a = &u["addressInfo"];
                    for h in ["hashedFirstName", "hashedLastName"] {
                        if !is_hex64(&a[h]) {
                            p.push(format!("{at}.addressInfo.{h} is not SHA-256 hex"));
                        }
                    }
                    if !a["countryCode"]
                        .as_str()
                        .is_some_and(|s| s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase()))
                    {
                        p.push(format!("{at}.addressInfo.countryCode {}", a["countryCode"]));
                    }
                    if !a["postalCode"].is_string() {
                        p.push(format!("{at}.addressInfo.postalCode missing"));
                    }
                }
                other => p.push(format!("{at} has keys {other:?}")),
            }
        }
        for k in ["adUserData", "adPersonalization"] {
            if !matches!(c["consent"][k].as_str(), Some("GRANTED" | "DENIED")) {
                p.push(format!("conversions[{i}].consent.{k} {}", c["consent"][k]));
            }
        }
    }
    p
}

struct Google {
    ads: FakePlatform,
    oauth: FakePlatform,
}

impl Google {
    async fn start() -> Google {
        let token = serde_json::json!({
            "access_token": ACCESS_TOKEN,
            "expires_in": 3599,
            "scope": "https://www.googleapis.com/auth/adwords",
            "token_type": "Bearer"
        })
        .to_string();
        Google {
            ads: FakePlatform::start(Answer::new(200, r#"{"results":[{}]}"#), upload_format).await,
            oauth: FakePlatform::start(Answer::new(200, &token), token_format).await,
        }
    }

    fn sink_toml(&self) -> String {
        format!(
            r#"
[[sink]]
type = "google_ads"
customer_id = "123-456-7890"
login_customer_id = "987-654-3210"
developer_token_env = "GADS_DEV_TOKEN"
client_id_env = "GADS_CLIENT_ID"
client_secret_env = "GADS_CLIENT_SECRET"
refresh_token_env = "GADS_REFRESH_TOKEN"
endpoint = "{}"
token_endpoint = "{}/token"
api_version = "v22"
events = {{ signup_submitted = "{ACTION}" }}
[sink.delivery]
linger = "10ms"
backoff_initial = "10ms"
backoff_max = "50ms"
"#,
            self.ads.url(),
            self.oauth.url()
        )
    }

    fn uploads(&self) -> Vec<Value> {
        self.ads.requests().iter().map(Recorded::json).collect()
    }
}

fn sink(google: &Google) -> GoogleAdsSink {
    let toml = google.sink_toml();
    let table = toml
        .split("[[sink]]")
        .nth(1)
        .unwrap()
        .replace("type = \"google_ads\"\n", "")
        .replace("[sink.delivery]", "[delivery]");
    let cfg: GoogleAdsSinkConfig = toml::from_str(&table).unwrap();
    GoogleAdsSink::new(&cfg, &env).unwrap()
}

fn conversion(i: usize) -> Envelope {
    let now = OffsetDateTime::now_utc();
    let e = Event::new(
        format!("event-{i}"),
        "signup_submitted".into(),
        Origin::Proxy,
        now,
        now,
    );
    Envelope {
        event: e,
        ad_match: Some(AdMatch {
            google_click: Some(AdClick {
                kind: "gclid".into(),
                value: format!("Cj0KCQ-{i}"),
                at: now - time::Duration::days(1),
            }),
            google: Some(GoogleMatch {
                email: Some(sha256_hex("jane@example.com")),
                ..GoogleMatch::default()
            }),
            ..AdMatch::default()
        }),
    }
}

fn tc_string(purposes: &[u8], vendors: &[u16]) -> String {
    let now = OffsetDateTime::now_utc();
    tcf::encode(&TcString {
        version: 2,
        created: now - time::Duration::days(1),
        last_updated: now - time::Duration::days(1),
        cmp_id: 31,
        vendor_list_version: 140,
        policy_version: 5,
        purposes_consent: purposes.iter().fold(0, |m, p| m | 1 << (p - 1)),
        vendor_consents: vendors.to_vec(),
    })
}

fn cookie_header(set_cookies: &http::HeaderMap) -> String {
    set_cookies
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .collect::<Vec<_>>()
        .join("; ")
}

const FORM: &str = r#"
[consent]
mode = "tcf"

[[form]]
path = "/signup"
event = "signup_submitted"
lead_id = "email"
natural_key = ["lead_id"]
fields = [{ name = "value", mode = "raw" }, { name = "currency", mode = "raw" }]
user_data = { fn = "first_name", ln = "last_name", country = "country", zp = "zip", ct = "city" }
"#;

/// A visitor: lands from a Google Ads click with `consent` for the
/// landing, then signs up as `email` with `signup_consent`.
async fn land_and_sign_up(
    site: &support::Site,
    gclid: &str,
    landing_consent: &str,
    signup_consent: &str,
    email: &str,
) {
    let (landing, _) = support::get(
        &site.url(&format!(
            "/pricing?utm_source=google&utm_medium=cpc&gclid={gclid}"
        )),
        &[
            ("accept", "text/html"),
            ("cookie", &format!("euconsent-v2={landing_consent}")),
        ],
    )
    .await;
    assert_eq!(landing.status, 200);
    let cookies = cookie_header(&landing.headers);
    assert!(cookies.contains("tg_lt="), "{cookies}");
    // The app never sees the click id in a touch header.
    let seen = site.up.last();
    for (name, value) in &seen.headers {
        if name.as_str().starts_with("x-touch-") {
            assert!(!value.to_str().unwrap().contains(gclid), "{name}");
        }
    }
    // An empty `signup_consent`: the CMP's cookie is gone.
    let cookie = if signup_consent.is_empty() {
        cookies
    } else {
        format!("{cookies}; euconsent-v2={signup_consent}")
    };
    sign_up(site, &cookie, email).await;
}

/// A signup the app confirms, with `cookie` as the browser sends it.
async fn sign_up(site: &support::Site, cookie: &str, email: &str) {
    let body = format!(
        "email={}&first_name=Jane&last_name=Doe&country=de&zip=10115&city=Berlin&value=49.90&currency=EUR",
        email.replace('@', "%40")
    );
    let (signup, _) = support::send(
        "POST",
        &site.url("/signup"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", cookie),
        ],
        body,
    )
    .await;
    assert_eq!(signup.status, 200);
}

async fn site(google: &Google) -> support::Site {
    let up = support::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file_sink = format!(
        "[[sink]]\ntype = \"file\"\npath = \"{}\"\n[sink.delivery]\nlinger = \"10ms\"\n",
        dir.path().join("events.jsonl").display()
    );
    let toml = support::config_toml(
        up.addr(),
        dir.path(),
        &format!("{FORM}\n{file_sink}\n{}", google.sink_toml()),
    );
    let cfg = touchgate::config::Config::parse("test.toml", &toml, &env)
        .unwrap_or_else(|e| panic!("{e}"));
    let tg = touchgate::app::start(cfg, &env)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    support::Site { up, tg, dir }
}

#[tokio::test]
async fn a_gclid_landing_then_a_confirmed_signup_is_one_correct_upload() {
    let google = Google::start().await;
    let site = site(&google).await;
    let granted = tc_string(&[1, 2, 3, 4, 7, 8, 9, 10], &[2, 755, 1000]);
    land_and_sign_up(
        &site,
        "Cj0KCQiA-landing_1",
        &granted,
        &granted,
        "Jane.Doe@gmail.com",
    )
    .await;

    support::eventually("one upload", || !google.ads.requests().is_empty()).await;
    assert_eq!(google.ads.problems(), Vec::<String>::new());
    assert_eq!(google.oauth.problems(), Vec::<String>::new());
    assert_eq!(google.oauth.requests().len(), 1, "one token exchange");
    let uploads = google.uploads();
    assert_eq!(uploads.len(), 1);
    let c = &uploads[0]["conversions"];
    assert_eq!(c.as_array().unwrap().len(), 1);
    let c = &c[0];
    assert_eq!(c["gclid"], "Cj0KCQiA-landing_1");
    assert_eq!(
        c["conversionAction"],
        format!("customers/{CUSTOMER}/conversionActions/{ACTION}")
    );
    assert_eq!(c["conversionValue"], 49.9);
    assert_eq!(c["currencyCode"], "EUR");
    assert_eq!(c["consent"]["adUserData"], "GRANTED");
    assert_eq!(c["consent"]["adPersonalization"], "GRANTED");
    // Google's rules: gmail dots removed before the hash.
    let ids = c["userIdentifiers"].as_array().unwrap();
    assert_eq!(ids[0]["hashedEmail"], sha256_hex("janedoe@gmail.com"));
    let address = &ids[1]["addressInfo"];
    assert_eq!(address["hashedFirstName"], sha256_hex("jane"));
    assert_eq!(address["hashedLastName"], sha256_hex("doe"));
    assert_eq!(address["countryCode"], "DE");
    assert_eq!(address["postalCode"], "10115");

    // The event on disk is the same conversion, and holds no click id.
    let events = site.wait_events(2).await;
    let signup = events
        .iter()
        .find(|e| e["event_name"] == "signup_submitted")
        .unwrap();
    assert_eq!(c["orderId"], signup["event_id"]);
    let occurred = OffsetDateTime::parse(
        signup["occurred_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(
        c["conversionDateTime"],
        touchgate::sink::google_ads::conversion_date_time(occurred)
    );
    let raw = std::fs::read_to_string(site.dir.path().join("events.jsonl")).unwrap();
    for leaked in ["Cj0KCQiA-landing_1", "Jane", "Berlin", "10115"] {
        assert!(!raw.contains(leaked), "{leaked} in the analytics events");
    }
    // Its metrics, like every sink's.
    let label = touchgate::metrics::SinkLabel {
        sink: "google_ads".into(),
    };
    let m = site.tg.metrics.clone();
    support::eventually("google_ads delivered counted", || {
        m.sink_delivered_total.get_or_create(&label).get() == 1
    })
    .await;
    assert_eq!(m.sink_failures_total.get_or_create(&label).get(), 0);
}

#[tokio::test]
async fn the_same_signup_with_tcf_consent_withdrawn_uploads_nothing() {
    let google = Google::start().await;
    let site = site(&google).await;
    let granted = tc_string(&[1, 2, 3, 4, 7], &[755]);
    // Withdrawn three ways: purpose 7 (ad_user_data), Google's vendor
    // consent, no string at all.
    let no_purpose_7 = tc_string(&[1, 2, 3, 4], &[755]);
    let no_google = tc_string(&[1, 2, 3, 4, 7], &[1, 2, 754]);
    land_and_sign_up(&site, "gclid-a", &granted, &no_purpose_7, "a@example.com").await;
    land_and_sign_up(&site, "gclid-b", &granted, &no_google, "b@example.com").await;
    land_and_sign_up(&site, "gclid-c", &granted, "", "c@example.com").await;
    // A granted signup after them: the sink reads the spool in order, so
    // once it is uploaded the three before it have been passed over.
    land_and_sign_up(&site, "gclid-d", &granted, &granted, "d@example.com").await;

    support::eventually("the granted upload", || !google.ads.requests().is_empty()).await;
    assert_eq!(google.ads.problems(), Vec::<String>::new());
    let clicks: Vec<Value> = google
        .uploads()
        .iter()
        .flat_map(|u| u["conversions"].as_array().unwrap().clone())
        .map(|c| c["gclid"].clone())
        .collect();
    assert_eq!(clicks, vec![Value::from("gclid-d")]);
    let metrics = support::get(&format!("http://{}/metrics", site.tg.admin_addr), &[]).await;
    let text = String::from_utf8_lossy(&metrics.1);
    assert!(
        text.contains("touchgate_consent_tcf_invalid_total{reason=\"missing\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn a_click_older_than_90_days_is_not_sent() {
    use touchgate::event::{Touch, TouchAt};
    use touchgate::identity::cookie::{self, ClickId, ClickKind, StoredTouch};
    let google = Google::start().await;
    let site = site(&google).await;
    let keys = touchgate::identity::Keys::derive(support::SECRET.as_bytes());
    let granted = tc_string(&[1, 2, 3, 4, 7], &[755]);
    let clicked = |days: i64, gclid: &str| {
        let stored = StoredTouch {
            touch: TouchAt {
                touch: Touch {
                    source: Some("google".into()),
                    medium: Some("cpc".into()),
                    click_id_type: Some("gclid".into()),
                    channel: "Paid Search".into(),
                    valid: true,
                    ..Touch::default()
                },
                at: OffsetDateTime::now_utc() - time::Duration::days(days),
            },
            click: ClickId::new(ClickKind::Gclid, gclid),
        };
        format!(
            "tg_lt={}; euconsent-v2={granted}",
            cookie::encode_touch(&keys, cookie::LAST_TOUCH, &stored)
        )
    };
    sign_up(&site, &clicked(91, "old-click"), "old@example.com").await;
    sign_up(&site, &clicked(89, "recent-click"), "recent@example.com").await;
    support::eventually("the recent click's upload", || {
        !google.ads.requests().is_empty()
    })
    .await;
    let clicks: Vec<Value> = google
        .uploads()
        .iter()
        .flat_map(|u| u["conversions"].as_array().unwrap().clone())
        .map(|c| c["gclid"].clone())
        .collect();
    assert_eq!(clicks, vec![Value::from("recent-click")]);
    assert_eq!(google.ads.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn partial_failures_dead_letter_the_row_with_googles_message() {
    let google = Google::start().await;
    google.ads.queue(Answer::new(
        200,
        r#"{"partialFailureError":{"code":3,"message":"The click is too old.","details":[{"@type":"type.googleapis.com/google.ads.googleads.v22.errors.GoogleAdsFailure","errors":[{"errorCode":{"conversionUploadError":"EXPIRED_EVENT"},"message":"The click is too old.","location":{"fieldPathElements":[{"fieldName":"conversions","index":1}]}}]}]},"results":[{"gclid":"Cj0KCQ-0"},{}]}"#,
    ));
    let s = sink(&google);
    match s.send(&[conversion(0), conversion(1)]).await {
        Err(SinkError::Partial { rejected }) => {
            assert_eq!(rejected.len(), 1);
            assert_eq!(rejected[0].0, 1);
            assert!(
                rejected[0].1.contains("The click is too old."),
                "{}",
                rejected[0].1
            );
            assert!(rejected[0].1.contains("EXPIRED_EVENT"), "{}", rejected[0].1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(google.ads.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn the_access_token_is_reused_until_it_nears_expiry() {
    let google = Google::start().await;
    let s = sink(&google);
    s.send(&[conversion(0)]).await.unwrap();
    s.send(&[conversion(1)]).await.unwrap();
    assert_eq!(google.oauth.requests().len(), 1);
    assert_eq!(google.ads.requests().len(), 2);

    // A token that expires within the refresh margin is replaced before
    // the next upload.
    let short = Google::start().await;
    for _ in 0..2 {
        short.oauth.queue(Answer::new(
            200,
            &serde_json::json!({"access_token": ACCESS_TOKEN, "expires_in": 60, "token_type": "Bearer"}).to_string(),
        ));
    }
    let s = sink(&short);
    s.send(&[conversion(0)]).await.unwrap();
    s.send(&[conversion(1)]).await.unwrap();
    assert_eq!(short.oauth.requests().len(), 2);
    assert_eq!(short.ads.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn outages_retry_and_auth_failures_stop_the_sink() {
    let google = Google::start().await;
    let s = sink(&google);
    google.ads.queue(Answer::new(429, r#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#).header("retry-after", "3"));
    match s.send(&[conversion(0)]).await {
        Err(SinkError::Retryable {
            retry_after,
            message,
        }) => {
            assert_eq!(retry_after, Some(std::time::Duration::from_secs(3)));
            assert!(message.contains("RESOURCE_EXHAUSTED"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    google.ads.queue(Answer::new(503, "unavailable"));
    assert!(matches!(
        s.send(&[conversion(0)]).await,
        Err(SinkError::Retryable { .. })
    ));
    google.ads.queue(Answer::new(
        401,
        r#"{"error":{"code":401,"message":"Request is missing required authentication credential.","status":"UNAUTHENTICATED"}}"#,
    ));
    let before = google.ads.requests().len();
    match s.send(&[conversion(0)]).await {
        Err(SinkError::Retryable {
            message,
            retry_after,
        }) => {
            assert!(message.contains("authentication"), "{message}");
            assert!(message.contains("UNAUTHENTICATED"), "{message}");
            assert!(retry_after.is_some());
        }
        other => panic!("{other:?}"),
    }
    // Stopped: nothing more is sent to Google.
    assert!(s.send(&[conversion(1)]).await.is_err());
    assert_eq!(google.ads.requests().len(), before + 1);

    // A refused refresh token is the same failure.
    let revoked = Google::start().await;
    revoked.oauth.queue(Answer::new(
        400,
        r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
    ));
    let s = sink(&revoked);
    match s.send(&[conversion(0)]).await {
        Err(SinkError::Retryable { message, .. }) => {
            assert!(message.contains("invalid_grant"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(revoked.ads.requests().is_empty());
}

#[tokio::test]
async fn only_mapped_consented_events_after_a_click_are_taken() {
    let google = Google::start().await;
    let s = sink(&google);
    assert!(s.accepts(&conversion(0)));
    let mut other = conversion(0);
    other.event.event_name = "newsletter".into();
    assert!(!s.accepts(&other));
    let mut no_click = conversion(0);
    no_click.ad_match.as_mut().unwrap().google_click = None;
    assert!(!s.accepts(&no_click));
    let mut old = conversion(0);
    old.ad_match
        .as_mut()
        .unwrap()
        .google_click
        .as_mut()
        .unwrap()
        .at = OffsetDateTime::now_utc() - time::Duration::days(91);
    assert!(s.check(&old).unwrap_err().contains("90 days"));
    let mut no_consent = conversion(0);
    no_consent.event.consent.ads = false;
    assert!(!s.accepts(&no_consent));
}
