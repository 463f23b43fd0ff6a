//! Generic ONNX ops on the CPU.

use ligerc_ir::{OnnxOp, TensorType};

use crate::{RuntimeError, Tensor};

/// Executes one generic ONNX op. `out_types` are the node's declared result
/// types (used where ONNX semantics depend on them, e.g. result count).
pub fn eval_onnx(op: &OnnxOp, inputs: &[&Tensor], out_types: &[TensorType]) -> Result<Vec<Tensor>, RuntimeError> {
    let _ = (inputs, out_types);
    Err(RuntimeError::Unsupported(format!("ONNX op {}", op.op_type)))
}
