#![no_main]
//! What remains of request-head handling, over arbitrary bytes: the
//! smuggling guard gives the same verdicts however the bytes are split,
//! and the whole request path (`audit --request`, no network) either
//! refuses the request or hands the app a head with no hop-by-hop field,
//! no client-sent `x-touch-*` value and well-formed forwarding headers.

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use touchgate::proxy::smuggling::{AmbiguousHeads, HeadTracker};

fn config() -> &'static str {
    static CFG: OnceLock<String> = OnceLock::new();
    CFG.get_or_init(|| {
        r#"
[proxy]
upstream = "http://127.0.0.1:3000"
[identity]
secret_env = "FUZZ_SECRET"
[[form]]
path = "/signup"
event = "signup_submitted"
lead_id = "email"
natural_key = ["lead_id", "day"]
"#
        .to_string()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };

    // The guard: whole or split, the same verdict for every request.
    let whole = AmbiguousHeads::new();
    HeadTracker::new(8192, whole.clone()).feed(data);
    let pieces = AmbiguousHeads::new();
    let mut t = HeadTracker::new(8192, pieces.clone());
    for chunk in data.chunks(usize::from(split % 31) + 1) {
        t.feed(chunk);
    }
    for i in 0..8 {
        assert_eq!(whole.ambiguity(i), pieces.ambiguity(i), "request {i}");
    }

    // The request path, with no network.
    let env = |k: &str| (k == "FUZZ_SECRET").then(|| "fuzz-secret-0123456789abcdef0123".to_string());
    let Ok(cfg) = touchgate::config::Config::parse("fuzz.toml", config(), &env) else {
        panic!("the fuzz config is valid");
    };
    let Ok(run) = touchgate::cli::audit::dry_run(cfg, data, 200, &env) else {
        return;
    };
    let Some(up) = run.upstream_request else {
        return;
    };
    for (name, value) in &up.headers {
        let name = name.to_ascii_lowercase();
        assert!(
            !matches!(
                name.as_str(),
                "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
                    | "proxy-authorization" | "expect"
            ),
            "{name} forwarded"
        );
        if let Some(rest) = name.strip_prefix("x-touch-") {
            assert!(
                matches!(rest, "device" | "session" | "first" | "last" | "id"),
                "client x-touch-{rest} forwarded"
            );
        }
        assert!(!value.contains(['\r', '\n']), "{name}: line break in value");
    }
    let xff: Vec<&str> = up
        .headers
        .iter()
        .filter(|(n, _)| n == "x-forwarded-for")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(xff, ["203.0.113.0"], "x-forwarded-for is overwritten with the truncated peer");
});
