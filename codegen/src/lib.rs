//! `ligerc-codegen`: back ends that turn an IR graph into something another
//! program runs.
//!
//! - [`onnx`]: any graph → an ONNX model that stock onnxruntime runs.
//!   Generic ops are written as they are; high-level ops are expanded into
//!   standard-domain ops.
//! - [`cuda`]: a linearized graph → fused CUDA C++ kernels, a launch plan
//!   (prefill and one decode step) and bf16 weights; NVRTC compilation.

pub mod cuda;
pub mod onnx;
