#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapgate_fuzz::mps_rpc_params(data));
