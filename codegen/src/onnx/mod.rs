//! ONNX export.
//!
//! Generic ops keep the graph's opset (imported graphs) or use opset 18
//! (graphs built from Hugging Face or GGUF checkpoints). High-level ops expand
//! into standard ops valid from opset 13 on (see `expand.rs`). Float weights
//! become f32 initializers (onnxruntime's CPU kernels lack bf16 MatMul);
//! integer weights keep their type.
//!
//! Liger ops become `ai.ligerc` nodes backed by model-local functions
//! ([`liger`]); [`OnnxForm::Step`] writes a one-token decode graph with the
//! recurrent states as inputs and outputs ([`step`] documents the contract).

mod body;
mod builder;
mod expand;
mod export;
pub mod liger;
mod lora;
pub mod step;

pub use export::{ExportError, ExportOptions, export_onnx, export_onnx_bytes};
pub use step::OnnxForm;
