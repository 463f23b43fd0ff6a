//! Fuzz target `onnx_import`: see `ligerc_fuzz::onnx_import`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ligerc_fuzz::onnx_import(data));
