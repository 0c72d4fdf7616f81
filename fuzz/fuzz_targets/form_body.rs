#![no_main]
//! Form bodies: the first byte picks the content type (the three supported
//! ones, multipart with a boundary taken from the input, or arbitrary
//! bytes as the content type); the rest is the body. The parser must never
//! panic and must keep its bounds.

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use touchgate::capture::form::{self, MAX_FIELDS, MAX_NAME, MAX_VALUE};

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let (ct, body) = match choice % 6 {
        0 => ("application/x-www-form-urlencoded".to_string(), rest),
        1 => ("application/json".to_string(), rest),
        2 => ("multipart/form-data; boundary=B".to_string(), rest),
        3 => {
            // Boundary from the input: up to the first newline.
            let cut = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let boundary = String::from_utf8_lossy(&rest[..cut]).into_owned();
            (
                format!("multipart/form-data; boundary=\"{boundary}\""),
                rest.get(cut + 1..).unwrap_or(&[]),
            )
        }
        4 => ("multipart/form-data".to_string(), rest),
        _ => {
            let cut = rest
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(rest.len().min(64));
            (
                String::from_utf8_lossy(&rest[..cut]).into_owned(),
                rest.get(cut + 1..).unwrap_or(&[]),
            )
        }
    };
    if let Ok(fields) = form::parse(Some(&ct), &Bytes::copy_from_slice(body)) {
        assert!(fields.len() <= MAX_FIELDS);
        for (n, v) in fields.iter() {
            assert!(!n.is_empty() && n.len() <= MAX_NAME && v.len() <= MAX_VALUE);
        }
    }
});
