//! Backward of generic elementwise ONNX ops. (Being written.)

use ligerc_ir::OnnxOp;

use super::not_differentiable;
use crate::{RuntimeError, Tensor};

pub(super) fn onnx_vjp(o: &OnnxOp, _fwd: &[&Tensor], _dy: &Tensor, _wrt: &[usize]) -> Result<Vec<Tensor>, RuntimeError> {
    Err(not_differentiable(&o.op_type, 0, "pending"))
}
