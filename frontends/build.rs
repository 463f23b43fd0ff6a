//! Generates the ONNX protobuf types from the vendored `proto/onnx.proto`.
//!
//! `protox` parses the proto file in pure Rust (no `protoc` binary needed) and
//! `prost-build` turns the resulting descriptor set into `$OUT_DIR/onnx.rs`.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let descriptors = protox::compile(["onnx.proto"], ["proto"])?;
    // `bytes` fields become `bytes::Bytes`, so tensor data decoded from a
    // memory-mapped file is sliced, not copied.
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
