#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapgate_fuzz::oss_post_form(data));
