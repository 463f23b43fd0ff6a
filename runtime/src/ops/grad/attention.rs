//! Backward of softmax Attention. (Being written.)

use ligerc_ir::AttentionSpec;

use super::not_differentiable;
use crate::{RuntimeError, Tensor};

pub(super) fn attention_vjp(_spec: &AttentionSpec, _fwd: &[&Tensor], _dy: &Tensor, _wrt: &[usize]) -> Result<Vec<Tensor>, RuntimeError> {
    Err(not_differentiable("Attention", 0, "pending"))
}
