//! Fuzz target `safetensors_dir`: see `ligerc_fuzz::safetensors_dir`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ligerc_fuzz::safetensors_dir(data));
