//! The PII corpus: personal data placed everywhere a client controls must
//! never appear raw in an event or an `x-touch-*` header.

#[path = "support/upstream.rs"]
mod support;

use base64::Engine;
use support::*;

const PII: &[&str] = &[
    "bob.smith@example.com",
    "first.last+tag@mail.example.co.uk",
    "+1 415 555 2671",
    "(415) 555-2671",
    "+44 20 7946 0958",
    "203.0.113.77",
    "2001:db8:85a3::8a2e:370:7334",
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "378282246310005",
];

/// The forms a raw value can take on the wire and then in an event.
fn shapes(v: &str) -> Vec<String> {
    let enc: String = form_urlencoded::byte_serialize(v.as_bytes()).collect();
    let digits: String = v.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut out = vec![v.to_string(), v.to_lowercase(), enc, enc_lower(v)];
    if digits.len() >= 9 && !v.contains('.') && !v.contains(':') {
        out.push(digits);
    }
    out
}

fn enc_lower(v: &str) -> String {
    form_urlencoded::byte_serialize(v.to_lowercase().as_bytes()).collect()
}

#[tokio::test]
async fn no_pii_reaches_events_or_touch_headers() {
    let Site { up, tg, dir } = Site::new(
        r#"
[[form]]
path = "/contact"
event = "contact_submitted"
lead_id = "email"
fields = [{ name = "message", mode = "raw" }, { name = "plan", mode = "raw" }]

[[ingest]]
event = "account_created"
natural_key = ["user_id", "day"]
"#,
    )
    .await;
    let base = format!("http://{}", tg.proxy_addr);
    let mut expected_events = 0;
    for (i, pii) in PII.iter().enumerate() {
        let q: String = form_urlencoded::byte_serialize(pii.as_bytes()).collect();
        // Campaign values, click ids, other parameters, the path.
        let url = format!(
            "{base}/p/{q}?utm_source=news{i}&utm_medium=email&utm_campaign=c%20{q}&utm_content={q}&utm_term={q}&utm_id={q}&gclid={q}&email={q}"
        );
        let referer = format!(
            "https://{}/from?who={q}",
            if i % 2 == 0 {
                "203.0.113.9"
            } else {
                "partner.example"
            }
        );
        let ctx = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            r#"{{"cid":"c{i}","exp":{{"{pii}":"{pii}"}},"ux":{{"ttfb":1}}}}"#
        ));
        get(
            &url,
            &[
                ("sec-fetch-dest", "document"),
                ("referer", &referer),
                ("user-agent", &format!("Mozilla/5.0 {pii}")),
                ("x-touch-context", &ctx),
            ],
        )
        .await;
        expected_events += 1;
        for (k, v) in up.last().headers.iter() {
            if k.as_str().starts_with("x-touch-") {
                let v = v.to_str().unwrap().to_lowercase();
                for s in shapes(pii) {
                    assert!(!v.contains(&s.to_lowercase()), "{pii} in header {k}: {v}");
                }
            }
        }
        // A form post with PII in every field, the context object and the query.
        let body = format!("email={q}&message=call+me+at+{q}+or+mail+{q}&plan={q}&_tg_ctx={ctx}");
        let (p, _) = send(
            "POST",
            &format!("{base}/contact?utm_content={q}"),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-touch-context", &ctx),
            ],
            body,
        )
        .await;
        assert_eq!(p.status, 200);
        expected_events += 1;
    }
    // Ingest with PII in properties.
    let at = touchgate::event::rfc3339_millis::format(
        time::OffsetDateTime::now_utc() - time::Duration::hours(1),
    );
    let lines: String = PII
        .iter()
        .enumerate()
        .map(|(i, pii)| {
            format!(
                "{}\n",
                serde_json::json!({"event_name": "account_created", "occurred_at": at, "user_id": format!("u{i}"), "properties": {"note": format!("contact {pii}"), "plan": pii}})
            )
        })
        .collect();
    let (p, body) = send(
        "POST",
        &format!("http://{}/v1/events", tg.admin_addr),
        &[("authorization", "Bearer ingest-token")],
        lines,
    )
    .await;
    assert_eq!(p.status, 200, "{body:?}");
    expected_events += PII.len();

    let path = dir.path().join("events.jsonl");
    eventually("all events on disk", || {
        events(&path).len() >= expected_events
    })
    .await;
    let text = std::fs::read_to_string(&path).unwrap().to_lowercase();
    for pii in PII {
        for s in shapes(pii) {
            assert!(
                !text.contains(&s.to_lowercase()),
                "{pii} (as {s}) leaked into events"
            );
        }
    }
    let m = tg.metrics.encode();
    assert!(
        m.contains("touchgate_pii_redacted_total{field="),
        "redactions are counted"
    );
}
