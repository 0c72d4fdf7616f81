#![no_main]
// Placeholder: the real target replaces this.
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});
