#![no_main]
//! The client context decoder, on raw strings and on valid base64url of
//! arbitrary bytes (so the JSON validation is reached, not just base64).
//! It must never panic, and what it accepts holds only known keys and
//! decodes again to itself.

use libfuzzer_sys::fuzz_target;
use touchgate::capture::context;

fn check(input: &str) {
    if let Ok(v) = context::decode(input) {
        let obj = v.as_object().expect("decode returns an object");
        assert!(
            obj.keys()
                .all(|k| matches!(k.as_str(), "cid" | "exp" | "ux"))
        );
        assert_eq!(context::decode(&context::encode(&v)).as_ref(), Ok(&v));
    }
}

fuzz_target!(|data: &[u8]| {
    check(&String::from_utf8_lossy(data));
    use base64::Engine;
    check(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data));
});
