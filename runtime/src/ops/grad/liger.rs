//! Backward of LigerGate and LigerAttention. (Being written.)

use ligerc_ir::{GateSpec, LigerSpec};

use super::not_differentiable;
use crate::{RuntimeError, Tensor};

pub(super) fn gate_vjp(_g: &GateSpec, _fwd: &[&Tensor], _dy: &Tensor, _wrt: &[usize]) -> Result<Vec<Tensor>, RuntimeError> {
    Err(not_differentiable("LigerGate", 0, "pending"))
}
pub(super) fn liger_attention_vjp(_l: &LigerSpec, _fwd: &[&Tensor], _dy: &Tensor, _wrt: &[usize]) -> Result<Vec<Tensor>, RuntimeError> {
    Err(not_differentiable("LigerAttention", 0, "pending"))
}
