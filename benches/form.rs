//! The conversion capture path after the body is buffered, as
//! `src/capture/conversion.rs` runs it: parse a 1 KiB urlencoded form
//! (only the fields the rule reads), normalize the lead identifier, hash it
//! (keyed for the event, SHA-256 for the ad platforms), build the event,
//! run the PII guard over it and insert its id in the dedupe set. Reported
//! as events per second (issue #4: at least 200k/s on one core).

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use phonenumber::country::Id;
use serde_json::json;
use touchgate::capture::{context, conversion, form, identifier};
use touchgate::config::{FieldMode, FieldRule, FormRule};
use touchgate::event::{Event, Origin, Page, Touch};
use touchgate::identity::{Keys, Purpose};
use touchgate::pipeline::dedupe::{self, LocalSet, Seen};
use touchgate::privacy;

/// The `[[form]]` rule the body is posted to.
fn rule() -> FormRule {
    FormRule {
        path: "/signup".into(),
        method: "POST".into(),
        event: "signup_submitted".into(),
        lead_id: Some("email".into()),
        user_id: None,
        natural_key: vec!["lead_id".into(), "day".into()],
        fields: ["plan", "seats", "company", "message"]
            .map(|name| FieldRule {
                name: name.into(),
                mode: FieldMode::Raw,
            })
            .into(),
    }
}

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

/// One conversion: everything the proxy does with a buffered form body
/// (`Capture::conversion_event`, then the guard in `Capture::emit`, then
/// the pipeline's dedupe check), short of the cookies and the queue.
fn capture(keys: &Keys, rule: &FormRule, tpl: &Event, body: &Bytes) -> Event {
    let mut fields = form::parse_wanted(Some("application/x-www-form-urlencoded"), body, |n| {
        conversion::reads_field(rule, n)
    })
    .unwrap();
    let lead = rule
        .lead_id
        .as_deref()
        .and_then(|name| fields.get(name))
        .and_then(|raw| identifier::normalize(raw, Id::GB))
        .unwrap();
    let lead_id = keys.hex(Purpose::Identifier, &[lead.value.as_bytes()]);
    let em = identifier::sha256_hex(&lead.value);
    let mut e = tpl.clone();
    let natural_key = conversion::natural_key(&rule.natural_key, |part| match part {
        "lead_id" => Some(lead_id.clone()),
        "day" => Some("2026-11-29".into()),
        _ => None,
    })
    .unwrap();
    e.event_id = keys.hex(
        Purpose::EventId,
        &[rule.event.as_bytes(), natural_key.as_bytes()],
    );
    e.natural_key = Some(natural_key);
    e.lead_id = Some(lead_id);
    e.client.context = fields
        .get(context::FIELD)
        .and_then(|c| context::decode(c).ok());
    for f in &rule.fields {
        if privacy::is_never_captured(&f.name) || e.properties.contains_key(&f.name) {
            continue;
        }
        if let Some(v) = fields.take(&f.name) {
            e.properties
                .insert(f.name.clone(), conversion::trimmed(v).into());
        }
    }
    let redacted = privacy::guard(&mut e);
    black_box((em, redacted));
    e
}

/// The email body for lead `n`: the same 1 KiB, only the digits of the
/// address differ.
fn lead_body(template: &Bytes, n: u64) -> Bytes {
    let mut b = template.to_vec();
    let at = b
        .windows(10)
        .position(|w| w == b"0000000000")
        .expect("the template's lead number");
    b[at..at + 10].copy_from_slice(format!("{n:010}").as_bytes());
    Bytes::from(b)
}

/// A dedupe set as the pipeline runs it: the shipped window and capacity,
/// and already full. A fresh 1,000,000-entry set is ~56 MB that the kernel
/// maps on first touch, so inserts into it measure page faults (about 7% of
/// the form path in an earlier profile); filling it first measures what a
/// proxy that has been up a while pays, including evicting the oldest id
/// on every insert.
fn warm_dedupe() -> LocalSet {
    let defaults = touchgate::config::DedupeConfig::default();
    let mut set = LocalSet::new(defaults.window, defaults.max_entries);
    let now = Instant::now();
    for i in 0..defaults.max_entries as u64 {
        let mut key = [0xff; 16];
        key[..8].copy_from_slice(&i.to_le_bytes());
        set.check_and_insert(key, now);
    }
    set
}

fn bench(c: &mut Criterion) {
    let keys = Keys::derive(b"bench secret");
    let rule = rule();
    let tpl = template();
    let email_template = body("Bob.Smith0000000000@Example.com");
    let email_body = lead_body(&email_template, 1);
    let phone_body = body("+44 7911 123456");
    assert_eq!(email_body.len(), 1024);

    let mut set = warm_dedupe();
    let mut n = 0u64;
    let mut g = c.benchmark_group("conversion_1k_urlencoded");
    g.throughput(Throughput::Elements(1));
    // Each iteration is a new lead (a distinct e-mail, so a distinct event
    // id), so the dedupe check inserts rather than answering "duplicate".
    g.bench_function("email_lead", |b| {
        b.iter_batched(
            || {
                n += 1;
                lead_body(&email_template, n)
            },
            |body| {
                let e = capture(&keys, &rule, &tpl, &body);
                let seen = set.check_and_insert(dedupe::key_of(&e.event_id), Instant::now());
                assert_eq!(seen, Seen::New, "every signup is a new lead");
                // Dropped here, inside the timing, as `iter` would: freeing
                // the event and the body is part of the cost.
                drop((e, body));
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("phone_lead", |b| {
        b.iter(|| {
            let fields = form::parse(
                Some("application/x-www-form-urlencoded"),
                black_box(&phone_body),
            )
            .unwrap();
            let lead = identifier::normalize(fields.get("email").unwrap(), Id::GB).unwrap();
            assert_eq!(lead.kind, identifier::IdentifierKind::Phone);
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
    g.bench_function("parse_wanted_1k_urlencoded", |b| {
        b.iter(|| {
            form::parse_wanted(
                Some("application/x-www-form-urlencoded"),
                black_box(&email_body),
                |n| conversion::reads_field(&rule, n),
            )
            .unwrap()
        })
    });
    let clean = capture(&keys, &rule, &tpl, &email_body);
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
