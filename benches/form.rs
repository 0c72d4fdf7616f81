//! The conversion capture path after the body is buffered: parse a 1 KiB
//! urlencoded form, normalize the lead identifier, hash it (keyed for the
//! event, SHA-256 for the ad platforms), build the event and run the PII
//! guard over it. Reported as events per second.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use phonenumber::country::Id;
use serde_json::json;
use touchgate::capture::{context, form, identifier};
use touchgate::event::{Event, Origin, Page, Touch};
use touchgate::identity::{Keys, Purpose};
use touchgate::privacy;

/// A realistic signup body padded to 1 KiB with a free-text message.
fn body(lead: &str) -> Bytes {
    let ctx = context::encode(&json!({
        "cid": "evt_01JDQ2W8ZK9", "exp": {"hero": "B"}, "ux": {"lcp": 1204.5, "ttfb": 120}
    }));
    let mut b: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("email", lead)
        .append_pair("name", "Bob Smith")
        .append_pair("company", "Example Ltd")
        .append_pair("plan", "pro")
        .append_pair("seats", "25")
        .append_pair("country", "GB")
        .append_pair("utm_source", "newsletter")
        .append_pair("utm_campaign", "spring_sale_2026")
        .append_pair(context::FIELD, &ctx)
        .finish();
    let filler = "We would like a demo for our team next week, thanks! ";
    let mut msg = String::new();
    while b.len() + msg.len() + 20 < 1024 {
        msg.push_str(filler);
    }
    b.push_str("&message=");
    b.push_str(&form_urlencoded::byte_serialize(msg.as_bytes()).collect::<String>());
    b.truncate(1024);
    Bytes::from(b)
}

fn template() -> Event {
    let t = time::macros::datetime!(2026-11-29 10:00:00 UTC);
    let mut e = Event::new(
        String::new(),
        "signup_submitted".into(),
        Origin::Proxy,
        t,
        t,
    );
    e.device_id = Some("0123456789abcdef0123456789abcdef".into());
    e.session_id = Some("fedcba9876543210fedcba9876543210".into());
    e.page = Some(Page {
        url: "https://shop.example/signup?utm_campaign=spring_sale_2026&utm_source=newsletter"
            .into(),
        path: "/signup".into(),
        referrer_host: Some("mail.example.net".into()),
    });
    e.touch = Some(Touch {
        source: Some("newsletter".into()),
        medium: Some("email".into()),
        campaign: Some("spring_sale_2026".into()),
        channel: "Email".into(),
        valid: true,
        ..Touch::default()
    });
    e.client.ip_prefix = Some("203.0.113.0/24".into());
    e
}

/// One conversion: everything the proxy does with a buffered form body.
fn capture(keys: &Keys, tpl: &Event, body: &Bytes) -> Event {
    let fields = form::parse(Some("application/x-www-form-urlencoded"), body).unwrap();
    let lead = fields
        .get("email")
        .and_then(|raw| identifier::normalize(raw, Id::GB))
        .unwrap();
    let lead_id = keys.hex(Purpose::Identifier, &[lead.value.as_bytes()]);
    let em = identifier::sha256_hex(&lead.value);
    let mut e = tpl.clone();
    e.event_id = keys.hex(
        Purpose::EventId,
        &[b"signup_submitted", lead_id.as_bytes(), b"2026-11-29"],
    );
    e.natural_key = Some(format!("{lead_id}|2026-11-29"));
    e.lead_id = Some(lead_id);
    e.client.context = fields
        .get(context::FIELD)
        .and_then(|c| context::decode(c).ok());
    for name in ["plan", "seats", "company", "message"] {
        if let Some(v) = fields.get(name) {
            e.properties.insert(name.into(), json!(v));
        }
    }
    let redacted = privacy::guard(&mut e);
    black_box((em, redacted));
    e
}

fn bench(c: &mut Criterion) {
    let keys = Keys::derive(b"bench secret");
    let tpl = template();
    let email_body = body("Bob.Smith@Example.com");
    let phone_body = body("+44 7911 123456");
    assert_eq!(email_body.len(), 1024);

    let mut g = c.benchmark_group("conversion_1k_urlencoded");
    g.throughput(Throughput::Elements(1));
    g.bench_function("email_lead", |b| {
        b.iter(|| capture(&keys, &tpl, black_box(&email_body)))
    });
    g.bench_function("phone_lead", |b| {
        b.iter(|| {
            let fields = form::parse(
                Some("application/x-www-form-urlencoded"),
                black_box(&phone_body),
            )
            .unwrap();
            let lead = identifier::normalize(fields.get("email").unwrap(), Id::GB).unwrap();
            assert_eq!(lead.kind, identifier::Kind::Phone);
            keys.hex(Purpose::Identifier, &[lead.value.as_bytes()])
        })
    });
    g.finish();

    let mut g = c.benchmark_group("parts");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_1k_urlencoded", |b| {
        b.iter(|| {
            form::parse(
                Some("application/x-www-form-urlencoded"),
                black_box(&email_body),
            )
            .unwrap()
        })
    });
    let clean = capture(&keys, &tpl, &email_body);
    g.bench_function("guard_clean_event", |b| {
        b.iter_batched_ref(
            || clean.clone(),
            privacy::guard,
            criterion::BatchSize::SmallInput,
        )
    });
    let mut dirty = clean.clone();
    dirty.page.as_mut().unwrap().url =
        "https://shop.example/signup?utm_content=bob%40example.com&utm_term=call+415+555+0123"
            .into();
    dirty.touch.as_mut().unwrap().content = Some("hi bob@example.com from 203.0.113.7".into());
    g.bench_function("guard_dirty_event", |b| {
        b.iter_batched_ref(
            || dirty.clone(),
            privacy::guard,
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
