//! Op kernels of the CPU backend, one file per op family.
//!
//! `onnx/` executes generic ONNX ops; `high/` executes high-level ops;
//! `liger/` executes the Liger ops (dispatched from `high/`); `grad/` executes
//! the loss and the backward (`vjp.*`) ops.

mod grad;
mod high;
mod liger;
mod onnx;

pub use grad::eval_vjp;
pub use high::eval_high_level;
pub use liger::{DEFAULT_CHUNK, LigerMode, LigerState};
pub use onnx::eval_onnx;
