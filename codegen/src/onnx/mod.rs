//! ONNX export.
//!
//! Generic ops keep the graph's opset (imported graphs) or use opset 18
//! (graphs built from Hugging Face or GGUF checkpoints). High-level ops expand
//! into standard ops valid from opset 13 on (see [`expand`]). Float weights
//! become f32 initializers (onnxruntime's CPU kernels lack bf16 MatMul);
//! integer weights keep their type.

mod builder;
mod expand;
mod export;

pub use export::{ExportError, ExportOptions, export_onnx, export_onnx_bytes};
