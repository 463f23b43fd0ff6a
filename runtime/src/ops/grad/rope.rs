//! Backward of Rope. (Being written.)

use ligerc_ir::RopeSpec;

use super::not_differentiable;
use crate::{RuntimeError, Tensor};

pub(super) fn rope_vjp(_spec: &RopeSpec, _offset: usize, _fwd: &[&Tensor], _dy: &Tensor, _wrt: &[usize]) -> Result<Vec<Tensor>, RuntimeError> {
    Err(not_differentiable("Rope", 0, "pending"))
}
