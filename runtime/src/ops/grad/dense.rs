//! Backward of Linear, LmHead, Lora and Embedding. (Being written.)

use super::not_differentiable;
use crate::{RuntimeError, Tensor};

pub(super) fn linear_vjp(_fwd: &[&Tensor], _dy: &Tensor, _wrt: &[usize]) -> Result<Vec<Tensor>, RuntimeError> {
    Err(not_differentiable("Linear", 0, "pending"))
}
pub(super) fn lora_vjp(_alpha: f64, _fwd: &[&Tensor], _dy: &Tensor, _wrt: &[usize]) -> Result<Vec<Tensor>, RuntimeError> {
    Err(not_differentiable("Lora", 0, "pending"))
}
pub(super) fn embedding_vjp(_fwd: &[&Tensor], _dy: &Tensor, _wrt: &[usize]) -> Result<Vec<Tensor>, RuntimeError> {
    Err(not_differentiable("Embedding", 0, "pending"))
}
