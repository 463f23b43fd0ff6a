//! High-level transformer ops on the CPU, in f32: one file per op family.
//!
//! Layouts are those of [`ligerc_ir::Op`]: activations `[batch, seq,
//! heads·head_dim]`, linear weights `[out, in]`. Every kernel checks its
//! operands' kinds and shapes and returns [`RuntimeError`] instead of
//! panicking. Matrix products go through `matrixmultiply::sgemm`; the other
//! kernels split their work over rows with rayon.
//!
//! This module owns the kernels only; [`crate::Executor`] owns scheduling and
//! [`ExecState`] (positions and KV caches) is read or appended to here, never
//! reset.

mod attention;
mod embedding;
pub(crate) mod kernels;
mod linear;
mod lora;
mod rms_norm;
pub(super) mod rope;
mod swiglu;

use ligerc_ir::{NodeId, Op};

use super::liger::{liger_attention, liger_gate};
use crate::{ExecState, RuntimeError, Tensor};

use attention::attention;
use embedding::embedding;
use linear::linear;
use lora::lora;
use rms_norm::rms_norm;
use rope::rope;
use swiglu::swiglu;

/// Executes one high-level op; `node` keys its KV cache in `state`.
///
/// `Rope` reads `state.position_offset`; `Attention` reads and, when
/// `state.use_cache` is set, appends to `state.kv[node]`; `LigerAttention`
/// reads `state.liger_mode` and, when `state.use_cache` is set, continues from
/// and updates `state.liger[node]`.
pub fn eval_high_level(
    op: &Op,
    node: NodeId,
    inputs: &[&Tensor],
    state: &mut ExecState,
) -> Result<Vec<Tensor>, RuntimeError> {
    let out = match op {
        Op::Embedding => {
            operand_count(op, inputs, 2, 2)?;
            embedding(inputs[0], inputs[1])?
        }
        Op::Linear => {
            operand_count(op, inputs, 2, 3)?;
            linear(inputs[0], inputs[1], inputs.get(2).copied())?
        }
        Op::LmHead => {
            operand_count(op, inputs, 2, 2)?;
            linear(inputs[0], inputs[1], None)?
        }
        Op::RmsNorm { eps } => {
            operand_count(op, inputs, 2, 2)?;
            rms_norm(inputs[0], inputs[1], *eps)?
        }
        Op::Rope(spec) => {
            operand_count(op, inputs, 1, 1)?;
            rope(inputs[0], spec, state.position_offset)?
        }
        Op::Attention(spec) => {
            operand_count(op, inputs, 3, 4)?;
            let mask = inputs.get(3).copied();
            if state.use_cache {
                let cache = state.kv.entry(node).or_default();
                let (k, v) = attention::append_to_cache(cache, inputs[1], inputs[2])?;
                attention(spec, inputs[0], k, v, mask)?
            } else {
                attention(spec, inputs[0], inputs[1], inputs[2], mask)?
            }
        }
        Op::SwiGlu => {
            operand_count(op, inputs, 2, 2)?;
            swiglu(inputs[0], inputs[1])?
        }
        Op::Lora { alpha } => {
            operand_count(op, inputs, 4, 5)?;
            lora(
                inputs[0],
                inputs[1],
                inputs[2],
                inputs[3],
                inputs.get(4).copied(),
                *alpha,
            )?
        }
        Op::LigerGate(spec) => {
            operand_count(op, inputs, 1, 1)?;
            liger_gate(spec, inputs[0])?
        }
        Op::LigerAttention(spec) => liger_attention(spec, node, inputs, state)?,
        Op::CrossEntropy { ignore_index } => {
            operand_count(op, inputs, 2, 2)?;
            return super::grad::cross_entropy(*ignore_index, inputs[0], inputs[1]);
        }
        Op::Vjp(spec) => return super::grad::eval_vjp(spec, inputs, state),
        Op::Input { .. } | Op::Weight { .. } | Op::Const(_) | Op::Onnx(_) => {
            return Err(RuntimeError::Unsupported(format!(
                "{} is not a high-level op",
                op.mnemonic()
            )));
        }
    };
    Ok(vec![out])
}

fn operand_count(op: &Op, inputs: &[&Tensor], lo: usize, hi: usize) -> Result<(), RuntimeError> {
    if inputs.len() < lo || inputs.len() > hi {
        let want = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo} to {hi}")
        };
        return Err(RuntimeError::Shape(format!(
            "{} takes {want} operands, got {}",
            op.mnemonic(),
            inputs.len()
        )));
    }
    Ok(())
}
