#![no_main]
//! Request classification and the smuggling guard's framing follower over
//! arbitrary bytes: the first line is the path, the rest are headers.

use libfuzzer_sys::fuzz_target;
use touchgate::proxy::smuggling::{AmbiguousHeads, HeadTracker};

fuzz_target!(|data: &[u8]| {
    // The framing follower sees raw connection bytes, split anywhere.
    let heads = AmbiguousHeads::new();
    let mut tracker = HeadTracker::new(8192, heads.clone());
    let split = data.first().map(|b| *b as usize % 17 + 1).unwrap_or(1);
    for chunk in data.chunks(split) {
        tracker.feed(chunk);
    }
    // Navigation detection and form matching over parsed headers.
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let path = lines.next().unwrap_or("/");
    let mut headers = http::HeaderMap::new();
    for line in lines.take(64) {
        if let Some((k, v)) = line.split_once(':')
            && let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.trim().as_bytes()), http::HeaderValue::from_str(v.trim()))
        {
            headers.append(k, v);
        }
    }
    let _ = touchgate::capture::is_navigation(&headers);
    let rule = touchgate::config::FormRule {
        path: "/signup*".into(),
        method: "POST".into(),
        event: "signup_submitted".into(),
        lead_id: None,
        user_id: None,
        natural_key: vec![],
        fields: vec![],
    };
    let _ = touchgate::capture::form_matches(&rule, &http::Method::POST, path);
});
