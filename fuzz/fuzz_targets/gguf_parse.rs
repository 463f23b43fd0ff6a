//! Fuzz target `gguf_parse`: see `ligerc_fuzz::gguf_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ligerc_fuzz::gguf_parse(data));
