//! High-level ops on the CPU.

use ligerc_ir::{NodeId, Op};

use crate::{ExecState, RuntimeError, Tensor};

/// Executes one high-level op; `node` keys its KV cache in `state`.
pub fn eval_high_level(op: &Op, node: NodeId, inputs: &[&Tensor], state: &mut ExecState) -> Result<Vec<Tensor>, RuntimeError> {
    let _ = (node, inputs, state);
    Err(RuntimeError::Unsupported(op.mnemonic()))
}
