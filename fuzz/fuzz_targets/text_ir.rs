//! Fuzz target `text_ir`: see `ligerc_fuzz::text_ir`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ligerc_fuzz::text_ir(data));
