//! Fuzz target `importer_verifier`: see `ligerc_fuzz::importer_verifier`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ligerc_fuzz::importer_verifier(data));
