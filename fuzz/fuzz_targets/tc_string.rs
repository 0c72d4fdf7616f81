#![no_main]
//! The IAB TCF v2.2 TC string decoder (cookie `euconsent-v2`) over
//! arbitrary values: never panics, and a string it reads re-encodes to one
//! that reads the same.

use libfuzzer_sys::fuzz_target;
use touchgate::capture::tcf;

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    if let Ok(tc) = tcf::decode(&value) {
        assert_eq!(tc.version, 2);
        assert!(tc.vendor_consents.windows(2).all(|w| w[0] < w[1]));
        let again = tcf::decode(&tcf::encode(&tc)).expect("an encoded string decodes");
        assert_eq!(again.purposes_consent, tc.purposes_consent);
        assert_eq!(again.vendor_consents, tc.vendor_consents);
        assert_eq!(again.policy_version, tc.policy_version);
    }
});
