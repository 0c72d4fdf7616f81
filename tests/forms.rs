//! Form bodies, the client context object and identifier normalization.

use bytes::Bytes;
use phonenumber::country::Id;
use proptest::prelude::*;
use serde_json::json;
use touchgate::capture::context::{self, ContextError};
use touchgate::capture::form::{self, FormError, MAX_FIELDS, MAX_VALUE};
use touchgate::capture::identifier::{IdentifierKind, normalize, sha256_hex};

const URLENCODED: &str = "application/x-www-form-urlencoded";

fn parse(ct: &str, body: &[u8]) -> Result<form::Fields, FormError> {
    form::parse(Some(ct), &Bytes::copy_from_slice(body))
}

// ---------------------------------------------------------------- urlencoded

#[test]
fn urlencoded_decodes_plus_and_escapes_and_keeps_order() {
    let f = parse(
        "application/x-www-form-urlencoded; charset=UTF-8",
        b"email=Bob%2Btag%40Example.com&name=Bob+Smith&tag=a&tag=b&empty=&caf%C3%A9=cr%C3%A8me&bad=%FF",
    )
    .unwrap();
    assert_eq!(f.get("email"), Some("Bob+tag@Example.com"));
    assert_eq!(f.get("name"), Some("Bob Smith"));
    assert_eq!(f.get("tag"), Some("a"), "first value wins for lookups");
    assert_eq!(f.get_all("tag").collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(f.get("empty"), Some(""));
    assert_eq!(f.get("café"), Some("crème"));
    assert_eq!(
        f.get("bad"),
        Some("\u{FFFD}"),
        "invalid UTF-8 is decoded lossily"
    );
    assert_eq!(f.get("missing"), None);
    let names: Vec<&str> = f.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["email", "name", "tag", "tag", "empty", "café", "bad"]
    );
}

#[test]
fn urlencoded_bounds_fields_and_values() {
    let mut body = String::new();
    for i in 0..1000 {
        body.push_str(&format!("f{i}=v{i}&"));
    }
    let f = parse(URLENCODED, body.as_bytes()).unwrap();
    assert_eq!(f.len(), MAX_FIELDS);
    assert_eq!(f.get("f0"), Some("v0"));

    let body = format!("big={}&small=1", "x".repeat(MAX_VALUE + 1));
    let f = parse(URLENCODED, body.as_bytes()).unwrap();
    assert_eq!(
        f.get("big"),
        None,
        "oversize values are dropped, not truncated"
    );
    assert_eq!(f.get("small"), Some("1"));
    let body = format!("ok={}", "x".repeat(MAX_VALUE));
    assert_eq!(
        parse(URLENCODED, body.as_bytes())
            .unwrap()
            .get("ok")
            .map(str::len),
        Some(MAX_VALUE)
    );
}

// ----------------------------------------------------------------- multipart

fn multipart_body(boundary: &str) -> Vec<u8> {
    let mut b = Vec::new();
    let part = |b: &mut Vec<u8>, headers: &str, body: &[u8]| {
        b.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
        b.extend_from_slice(body);
        b.extend_from_slice(b"\r\n");
    };
    part(
        &mut b,
        "Content-Disposition: form-data; name=\"email\"",
        b"bob@example.com",
    );
    // A binary upload, with bytes that look like a boundary prefix and CRLFs.
    let mut binary: Vec<u8> = (0..=255u8).cycle().take(20_000).collect();
    binary.extend_from_slice(b"\r\n--not-the-boundary\r\n\x00\xff");
    part(
        &mut b,
        "Content-Disposition: form-data; name=\"avatar\"; filename=\"me.png\"\r\nContent-Type: image/png",
        &binary,
    );
    part(
        &mut b,
        "Content-Disposition: form-data; name=\"plan\"",
        "pro ✓".as_bytes(),
    );
    part(
        &mut b,
        "Content-Disposition: form-data; name=\"cv\"; filename=\"\"",
        b"",
    );
    part(
        &mut b,
        "Content-Disposition: form-data; name=\"plan\"",
        b"second",
    );
    part(
        &mut b,
        "Content-Disposition: form-data; name=\"latin\"",
        b"caf\xe9",
    );
    part(&mut b, "Content-Disposition: form-data", b"no name");
    b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    b
}

#[test]
fn multipart_skips_files_and_keeps_text_parts() {
    let ct = "multipart/form-data; boundary=----tgBoundary7MA4YWxk";
    let body = multipart_body("----tgBoundary7MA4YWxk");
    let f = parse(ct, &body).unwrap();
    assert_eq!(f.get("email"), Some("bob@example.com"));
    assert_eq!(f.get("plan"), Some("pro ✓"));
    assert_eq!(f.get_all("plan").count(), 2);
    assert_eq!(f.get("latin"), Some("caf\u{FFFD}"));
    assert_eq!(f.get("avatar"), None, "file parts are skipped");
    assert_eq!(
        f.get("cv"),
        None,
        "an empty file input is still a file part"
    );
    assert_eq!(f.len(), 4);
}

#[test]
fn multipart_drops_oversize_text_parts() {
    let boundary = "XyZ";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"essay\"\r\n\r\n{}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nbob@example.com\r\n--{boundary}--\r\n",
        "w".repeat(MAX_VALUE + 1)
    );
    let f = parse("multipart/form-data; boundary=XyZ", body.as_bytes()).unwrap();
    assert_eq!(f.get("essay"), None);
    assert_eq!(f.get("email"), Some("bob@example.com"));
}

#[test]
fn multipart_errors_are_errors() {
    for (ct, body) in [
        ("multipart/form-data", &b"--x\r\n"[..]),
        ("multipart/form-data; boundary=x", b""),
        (
            "multipart/form-data; boundary=x",
            b"garbage without boundary",
        ),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated",
        ),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nbroken header\r\n\r\nv\r\n--x--\r\n",
        ),
    ] {
        let r = parse(ct, body);
        assert!(
            matches!(r, Err(FormError::Multipart(_))),
            "{ct} {body:?}: {r:?}"
        );
        assert_eq!(r.unwrap_err().reason(), "multipart");
    }
}

// ---------------------------------------------------------------------- JSON

#[test]
fn json_flattens_one_level_and_ignores_arrays() {
    let body = json!({
        "email": "bob@example.com",
        "age": 42,
        "ratio": 0.5,
        "consent": true,
        "nothing": null,
        "tags": ["a", "b"],
        "user": {"phone": "+1 415 555 2671", "id": 7, "deep": {"x": 1}, "list": [1]},
    });
    let f = parse(
        "application/json; charset=utf-8",
        body.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(f.get("email"), Some("bob@example.com"));
    assert_eq!(f.get("age"), Some("42"));
    assert_eq!(f.get("ratio"), Some("0.5"));
    assert_eq!(f.get("consent"), Some("true"));
    assert_eq!(f.get("nothing"), None);
    assert_eq!(f.get("tags"), None, "arrays are ignored");
    assert_eq!(f.get("user.phone"), Some("+1 415 555 2671"));
    assert_eq!(f.get("user.id"), Some("7"));
    assert_eq!(f.get("user.deep"), None);
    assert_eq!(f.get("user.deep.x"), None, "only one level of nesting");
    assert_eq!(f.len(), 6);

    let f = parse("application/vnd.api+json", br#"{"a":"b"}"#).unwrap();
    assert_eq!(f.get("a"), Some("b"));
}

#[test]
fn json_errors_are_errors() {
    assert!(matches!(
        parse("application/json", b"{\"a\":"),
        Err(FormError::Json(_))
    ));
    assert!(matches!(
        parse("application/json", b""),
        Err(FormError::Json(_))
    ));
    assert!(matches!(
        parse("application/json", b"[1,2]"),
        Err(FormError::NotAnObject)
    ));
    assert!(matches!(
        parse("application/json", b"\"s\""),
        Err(FormError::NotAnObject)
    ));
    let deep = "[".repeat(10_000);
    assert!(matches!(
        parse("application/json", deep.as_bytes()),
        Err(FormError::Json(_))
    ));
    // Invalid UTF-8 inside a string is decoded lossily rather than failing.
    let f = parse("application/json", b"{\"n\":\"caf\xe9\"}").unwrap();
    assert_eq!(f.get("n"), Some("caf\u{FFFD}"));
}

#[test]
fn unknown_content_types_are_unsupported() {
    for ct in [
        "text/plain",
        "application/xml",
        "",
        "multipart/mixed; boundary=x",
        "application/+json",
    ] {
        let r = parse(ct, b"a=b");
        assert!(matches!(r, Err(FormError::Unsupported(_))), "{ct}: {r:?}");
    }
    assert!(matches!(
        form::parse(None, &Bytes::from_static(b"a=b")),
        Err(FormError::Unsupported(_))
    ));
}

// ------------------------------------------------------------------ context

fn enc(v: &serde_json::Value) -> String {
    context::encode(v)
}

#[test]
fn context_valid_objects_round_trip() {
    let v = json!({
        "cid": "evt_01J:abc.def-9",
        "exp": {"hero_test": "B", "checkout.v2": "control"},
        "ux": {"ttfb": 120, "fcp": 830.5, "lcp": 1204.2, "cls": 0.02, "inp": 96, "dcl": 900, "load": 1500},
    });
    assert_eq!(context::decode(&enc(&v)).unwrap(), v);
    assert_eq!(context::decode(&enc(&json!({}))).unwrap(), json!({}));
    assert_eq!(
        context::decode(&enc(&json!({"cid": "x"}))).unwrap(),
        json!({"cid": "x"})
    );
    assert_eq!(context::FIELD, "_tg_ctx");
    assert_eq!(context::HEADER, "x-touch-context");
}

#[test]
fn context_tolerates_padding() {
    use base64::Engine;
    let json = br#"{"cid":"abc"}"#; // 13 bytes: two padding characters
    let padded = base64::engine::general_purpose::URL_SAFE.encode(&json[..]);
    assert!(padded.ends_with('='), "{padded}");
    assert_eq!(context::decode(&padded).unwrap(), json!({"cid": "abc"}));
    let unpadded = padded.trim_end_matches('=');
    assert_eq!(context::decode(unpadded).unwrap(), json!({"cid": "abc"}));
}

#[test]
fn context_drops_unknown_keys_and_metrics() {
    let v = json!({"cid": "a", "future": {"x": 1}, "email": "bob@example.com", "ux": {"lcp": 1, "custom": 5}});
    assert_eq!(
        context::decode(&enc(&v)).unwrap(),
        json!({"cid": "a", "ux": {"lcp": 1}})
    );
}

#[test]
fn context_rejects_wrong_types_and_values() {
    let cases = [
        json!({"cid": 5}),
        json!({"cid": ""}),
        json!({"cid": "x".repeat(65)}),
        json!({"cid": "bob@example.com"}),
        json!({"cid": "has space"}),
        json!({"exp": ["a"]}),
        json!({"exp": {"a": 1}}),
        json!({"exp": {"a": ""}}),
        json!({"exp": {"bad id": "b"}}),
        json!({"ux": {"lcp": -1}}),
        json!({"ux": {"lcp": "12"}}),
        json!({"ux": {"lcp": 1e12}}),
        json!({"ux": 5}),
        json!({"exp": (0..21).map(|i| (format!("e{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
        json!({"ux": (0..21).map(|i| (format!("m{i}"), json!(1))).collect::<serde_json::Map<_, _>>()}),
    ];
    for v in cases {
        assert!(
            matches!(context::decode(&enc(&v)), Err(ContextError::Invalid(_))),
            "{v} should be invalid"
        );
    }
    let ok20 = json!({"exp": (0..20).map(|i| (format!("e{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()});
    assert_eq!(context::decode(&enc(&ok20)).unwrap(), ok20);
}

/// Found by the `context` fuzz target: a metric written with many digits
/// decoded to 1e-32, whose text then decoded to 9.999999999999999e-33, so
/// the stored context did not decode to itself (a re-ingested or replayed
/// event would change). Fixed by serde_json's correctly rounded float
/// parsing (`float_roundtrip`).
#[test]
fn context_metrics_decode_to_themselves() {
    let raw = format!(
        r#"{{"ux":{{"fid":0.{}1{}5}}}}"#,
        "0".repeat(31),
        "0".repeat(60)
    );
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw);
    let once = context::decode(&encoded).unwrap();
    let twice = context::decode(&context::encode(&once)).unwrap();
    assert_eq!(once, twice);
    for x in [
        1e-32,
        0.1,
        1204.5,
        0.3,
        2.2250738585072014e-308,
        3_599_999.999_999_999_5,
    ] {
        let v = json!({ "ux": { "cls": x } });
        assert_eq!(context::decode(&enc(&v)).unwrap(), v, "{x:e}");
    }
}

#[test]
fn context_rejects_bad_encodings() {
    assert_eq!(context::decode("!!!not base64"), Err(ContextError::Base64));
    assert_eq!(
        context::decode("eyJ+"),
        Err(ContextError::Base64),
        "standard alphabet is not base64url"
    );
    assert_eq!(
        context::decode(&context::encode(&json!("str"))),
        Err(ContextError::NotAnObject)
    );
    assert_eq!(
        context::decode(&context::encode(&json!([1]))),
        Err(ContextError::NotAnObject)
    );
    use base64::Engine;
    let not_json = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"{cid: x}");
    assert_eq!(context::decode(&not_json), Err(ContextError::Json));
    assert_eq!(context::decode(""), Err(ContextError::Json));
    let dup = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"cid":"a","cid":"b"}"#);
    assert_eq!(
        context::decode(&dup),
        Err(ContextError::Json),
        "a repeated key is rejected"
    );
    let null =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#" {"cid":null,"ux":{"lcp":1}}"#);
    assert_eq!(
        context::decode(&null).unwrap(),
        json!({"ux": {"lcp": 1}}),
        "null is absent"
    );
}

/// An encoded object of exactly `len` bytes: `{"cid":"x","pad":"…"}` with
/// a padding key (dropped on decode) sized to hit the length.
fn encoded_of_len(len: usize) -> String {
    for pad in 0..2000 {
        let e = enc(&json!({"cid": "x", "pad": "p".repeat(pad)}));
        if e.len() == len {
            return e;
        }
        if e.len() > len {
            break;
        }
    }
    // base64 lengths skip values ≡ 1 (mod 4); widen with trailing spaces in
    // the JSON instead, which serde_json ignores.
    use base64::Engine;
    for pad in 0..2000 {
        for spaces in 0..3 {
            let j = format!(
                "{}{}",
                json!({"cid": "x", "pad": "p".repeat(pad)}),
                " ".repeat(spaces)
            );
            let e = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(j);
            if e.len() == len {
                return e;
            }
        }
    }
    panic!("no encoding of length {len}")
}

#[test]
fn context_size_boundary() {
    let at = encoded_of_len(context::MAX_ENCODED);
    assert_eq!(at.len(), 2048);
    assert_eq!(context::decode(&at).unwrap(), json!({"cid": "x"}));
    let over = format!("{at}A");
    assert_eq!(over.len(), 2049);
    assert_eq!(context::decode(&over), Err(ContextError::TooLong(2049)));
    let over = encoded_of_len(2050);
    assert_eq!(context::decode(&over), Err(ContextError::TooLong(2050)));
}

// --------------------------------------------------------------- identifiers

/// Raw input, default country, expected kind and value (None: rejected).
type Case = (&'static str, Id, Option<(IdentifierKind, &'static str)>);

#[test]
fn identifiers_normalize() {
    let cases: &[Case] = &[
        (
            "  Bob.Smith+Promo@Example.COM ",
            Id::US,
            Some((IdentifierKind::Email, "bob.smith+promo@example.com")),
        ),
        (
            "b.o.b@gmail.com",
            Id::US,
            Some((IdentifierKind::Email, "b.o.b@gmail.com")),
        ),
        (
            "JOSÉ@Exämple.com",
            Id::US,
            Some((IdentifierKind::Email, "josé@exämple.com")),
        ),
        (
            "(415) 555-2671",
            Id::US,
            Some((IdentifierKind::Phone, "14155552671")),
        ),
        (
            "415.555.2671",
            Id::US,
            Some((IdentifierKind::Phone, "14155552671")),
        ),
        (
            "4155552671",
            Id::US,
            Some((IdentifierKind::Phone, "14155552671")),
        ),
        (
            "+1 415 555 2671",
            Id::GB,
            Some((IdentifierKind::Phone, "14155552671")),
        ),
        (
            "1-415-555-2671",
            Id::US,
            Some((IdentifierKind::Phone, "14155552671")),
        ),
        (
            "011 44 20 7946 0958",
            Id::US,
            Some((IdentifierKind::Phone, "442079460958")),
        ),
        (
            "020 7946 0958",
            Id::GB,
            Some((IdentifierKind::Phone, "442079460958")),
        ),
        (
            "07911 123456",
            Id::GB,
            Some((IdentifierKind::Phone, "447911123456")),
        ),
        (
            "+44 7911 123456",
            Id::US,
            Some((IdentifierKind::Phone, "447911123456")),
        ),
        (
            "0044 7911 123456",
            Id::GB,
            Some((IdentifierKind::Phone, "447911123456")),
        ),
        (
            "0044 7911 123456",
            Id::US,
            Some((IdentifierKind::Phone, "447911123456")),
        ),
        (
            "00 49 30 1234567",
            Id::US,
            Some((IdentifierKind::Phone, "49301234567")),
        ),
        (
            "030 1234567",
            Id::DE,
            Some((IdentifierKind::Phone, "49301234567")),
        ),
        (
            "555-0123",
            Id::US,
            Some((IdentifierKind::Other, "555-0123")),
        ),
        (
            "1234567890",
            Id::US,
            Some((IdentifierKind::Other, "1234567890")),
        ),
        (
            "  123456  ",
            Id::US,
            Some((IdentifierKind::Other, "123456")),
        ),
        (
            "123E4567-e89b-12d3-a456-426614174000",
            Id::US,
            Some((
                IdentifierKind::Other,
                "123E4567-e89b-12d3-a456-426614174000",
            )),
        ),
        (
            "bob@localhost",
            Id::US,
            Some((IdentifierKind::Other, "bob@localhost")),
        ),
        (
            "a@b@c.com",
            Id::US,
            Some((IdentifierKind::Other, "a@b@c.com")),
        ),
        ("", Id::US, None),
        ("   ", Id::US, None),
        ("a\u{0}b", Id::US, None),
    ];
    for (raw, country, want) in cases {
        let got = normalize(raw, *country).map(|n| (n.kind, n.value));
        let want = want.map(|(k, v)| (k, v.to_string()));
        assert_eq!(got, want, "{raw:?} with {country:?}");
    }
    assert_eq!(normalize(&"x".repeat(513), Id::US), None);
}

#[test]
fn sha256_hex_is_the_ad_platform_form() {
    // Meta's documented example: sha256("john_smith@gmail.com").
    let em = normalize(" John_Smith@Gmail.com ", Id::US).unwrap();
    assert_eq!(
        sha256_hex(&em.value),
        "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    );
    let h = sha256_hex("14155552671");
    assert_eq!(h.len(), 64);
    assert!(
        h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
}

// --------------------------------------------------------------- properties

proptest! {
    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        which in 0usize..5,
        boundary in "[A-Za-z0-9'()+_,./:=?-]{1,70}",
    ) {
        let ct = match which {
            0 => URLENCODED.to_string(),
            1 => format!("multipart/form-data; boundary={boundary}"),
            2 => "application/json".to_string(),
            3 => "multipart/form-data".to_string(),
            _ => String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned(),
        };
        if let Ok(f) = form::parse(Some(&ct), &Bytes::from(body.clone())) {
            prop_assert!(f.len() <= MAX_FIELDS);
            prop_assert!(f.iter().all(|(n, v)| !n.is_empty() && v.len() <= MAX_VALUE));
        }
    }

    #[test]
    fn multipart_with_real_structure_never_panics(
        parts in proptest::collection::vec(("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..300), any::<bool>()), 0..6),
        cut in any::<proptest::sample::Index>(),
    ) {
        let mut body = Vec::new();
        for (name, data, file) in &parts {
            let fname = if *file { "; filename=\"f.bin\"" } else { "" };
            body.extend_from_slice(format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"{fname}\r\n\r\n").as_bytes());
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--B--\r\n");
        let cut = cut.index(body.len() + 1);
        let _ = form::parse(Some("multipart/form-data; boundary=B"), &Bytes::from(body[..cut].to_vec()));
    }

    #[test]
    fn context_decoder_never_panics(s in "\\PC{0,3000}", b in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let _ = context::decode(&s);
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&b);
        if let Ok(v) = context::decode(&e) {
            prop_assert!(v.is_object());
        }
    }

    #[test]
    fn context_output_has_only_known_keys(
        cid in proptest::option::of("[A-Za-z0-9_.:-]{1,64}"),
        extra in "[a-z]{1,8}",
        lcp in 0.0f64..100000.0,
    ) {
        prop_assume!(!["cid", "exp", "ux"].contains(&extra.as_str()));
        let mut m = serde_json::Map::new();
        if let Some(c) = &cid { m.insert("cid".into(), json!(c)); }
        m.insert(extra.clone(), json!("zz"));
        m.insert("ux".into(), json!({"lcp": lcp}));
        let v = context::decode(&context::encode(&serde_json::Value::Object(m))).unwrap();
        let obj = v.as_object().unwrap();
        prop_assert!(obj.keys().all(|k| ["cid", "exp", "ux"].contains(&k.as_str())));
        prop_assert_eq!(obj.get("cid").and_then(|c| c.as_str()), cid.as_deref());
    }

    #[test]
    fn normalize_never_panics(s in "\\PC{0,80}") {
        if let Some(n) = normalize(&s, Id::US) {
            prop_assert!(!n.value.is_empty());
            if n.kind == IdentifierKind::Phone {
                prop_assert!(n.value.bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }
}

// ---------------------------------------------------------------- success rules in the config

fn check_config(toml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_touchgate"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .env("TOUCHGATE_SECRET", "0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    let p = path.display().to_string();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).replace(&p, "c.toml"),
        String::from_utf8_lossy(&out.stderr).replace(&p, "c.toml"),
    )
}

#[test]
fn check_config_warns_about_forms_that_cannot_work_as_meant_and_still_exits_0() {
    let (code, out, err) = check_config(
        r#"
[[form]]
path = "/signup*"
event = "signup_submitted"

[[form]]
path = "/signup/step2"
event = "signup_step2"

[[form]]
path = "/search"
method = "GET"
event = "searched"

[[form]]
path = "/contact?sent=1"
event = "contact_submitted"
success_status = [200, 422]

[[form]]
path = "/login/"
event = "logged_in"
success_status = [302]
failure_body = "errorlist"
"#,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("c.toml: ok\n"), "{out}");
    let lines: Vec<&str> = err.lines().collect();
    for (i, want) in [
        r#"c.toml:3: form[0].path: warning: the prefix rule "/signup*" also matches /signup-anything"#,
        "c.toml:7: form[1].path: warning: form[0] comes first and matches every request this one would",
        "c.toml:12: form[2].method: warning: GET requests are page loads",
        "c.toml:16: form[3].path: warning: a form path is compared with the request's path, without its query",
        "c.toml:18: form[3].success_status: warning: 422 is an error answer",
        "c.toml:24: form[4].failure_body: warning: failure_body is searched only in 2xx answers",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            lines.get(i).is_some_and(|l| l.starts_with(want)),
            "line {i}: want {want:?}\n{err}"
        );
    }
    assert_eq!(lines.len(), 6, "{err}");
}

#[test]
fn success_rules_that_cannot_compile_are_errors_with_their_line() {
    let (code, _, err) = check_config(
        r#"
[[form]]
path = "/signup"
event = "signup_submitted"
failure_body = "class=\"errorlist("
"#,
    );
    assert_eq!(code, 2);
    assert!(
        err.starts_with("c.toml:5: form[0].failure_body: not a valid regex"),
        "{err}"
    );
    for (key, value, message) in [
        ("success_location", "'^/thanks['", "not a valid regex"),
        ("failure_location", "'(?<'", "not a valid regex"),
        ("success_header", "'X Signup'", "is not a header name"),
        (
            "success_header",
            "'X-Signup='",
            "must be printable ASCII and not empty",
        ),
        (
            "success_status",
            "[302, 99]",
            "99 is not a final HTTP status",
        ),
        ("event", "'form_attempt'", "touchgate's own event name"),
    ] {
        let (code, _, err) = check_config(
            &format!(
                "[[form]]\npath = \"/signup\"\nevent = \"signup_submitted\"\n{key} = {value}\n"
            )
            .replace("event = \"signup_submitted\"\nevent = ", "event = "),
        );
        assert_eq!(code, 2, "{key} = {value}: {err}");
        assert!(err.contains(&format!("form[0].{key}: ")), "{key}: {err}");
        assert!(err.contains(message), "{key}: {err}");
    }
}
