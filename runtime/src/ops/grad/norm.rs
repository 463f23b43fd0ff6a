//! Backward of RmsNorm and SwiGlu. (Being written.)

use super::not_differentiable;
use crate::{RuntimeError, Tensor};

pub(super) fn rms_norm_vjp(_eps: f64, _fwd: &[&Tensor], _dy: &Tensor, _wrt: &[usize]) -> Result<Vec<Tensor>, RuntimeError> {
    Err(not_differentiable("RmsNorm", 0, "pending"))
}
pub(super) fn swiglu_vjp(_fwd: &[&Tensor], _dy: &Tensor, _wrt: &[usize]) -> Result<Vec<Tensor>, RuntimeError> {
    Err(not_differentiable("SwiGlu", 0, "pending"))
}
