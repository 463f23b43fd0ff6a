//! `ligerc-frontends`: importers that turn model files into data the compiler
//! understands.
//!
//! - [`onnx_proto`]: prost types generated from the vendored `onnx.proto`
//!   (ONNX 1.23.2, proto2 flavour, so field presence is kept: use the generated
//!   getters such as `node.op_type()`).
//! - [`gguf`]: a bounded GGUF (llama.cpp) reader and dequantizer.
//! - [`hf_config`]: Hugging Face `config.json` for Llama-family models.
//! - [`limits`]: bounds on declared sizes; [`finite`]: the NaN/Inf check on weights.
//!
//! Nothing here knows about devices; importers only read files and report
//! typed errors naming the file, key, node or tensor at fault.

pub mod error;
pub mod finite;
pub mod gguf;
pub mod hf_config;
pub mod limits;
pub mod llama;
pub mod onnx;
pub mod onnx_proto;

pub use error::{ImportError, ImportResult};
pub use finite::check_finite;
pub use limits::ImportLimits;
