//! The ONNX importer: `.onnx` files (with `.onnx.data` external data) → IR.

mod import;
pub mod tensor;
mod types;

pub use import::{OPSETS, import_onnx, import_onnx_bytes, import_onnx_bytes_with};
