//! Fuzz target `hf_config`: see `ligerc_fuzz::hf_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ligerc_fuzz::hf_config(data));
