//! Op kernels of the CPU backend, one file per op family.
//!
//! `onnx/` executes generic ONNX ops; `high/` executes high-level ops.

mod high;
mod onnx;

pub use high::eval_high_level;
pub use onnx::eval_onnx;
