//! Backward (vector-Jacobian product) kernels of the CPU backend, and the loss.
//!
//! A `vjp.OP` node (built by the autodiff pass) receives the forward op's
//! operands followed by the gradient of the forward result, and returns the
//! gradients of the forward operands its `wrt` list names, in that order.
//! Every kernel computes only what `wrt` asks for (a frozen weight's gradient
//! is never formed) and recomputes what it needs from the forward operands
//! instead of reading saved intermediates, so a training graph keeps only the
//! op inputs alive between the forward and the backward sweep.
//!
//! Files: `loss.rs` (CrossEntropy and its VJP), `dense.rs` (Linear, LmHead,
//! Lora, Embedding), `norm.rs` (RmsNorm, SwiGlu), `rope.rs`, `attention.rs`
//! (softmax attention), `elementwise.rs` (the generic ONNX ops a raised graph
//! keeps: Add, Sub, Mul with broadcasting, Cast, Identity), `liger.rs`
//! (LigerGate and LigerAttention).

mod attention;
mod dense;
mod elementwise;
mod liger;
mod loss;
mod norm;
mod rope;

use ligerc_ir::{Op, VjpSpec};

use crate::{ExecState, RuntimeError, Tensor};

pub(crate) use loss::cross_entropy;

/// Executes a `vjp.OP` node: `inputs` are the forward operands followed by the
/// result gradient; returns one gradient per `spec.wrt` entry.
///
/// `Rope` reads `state.position_offset` exactly like its forward.
pub fn eval_vjp(
    spec: &VjpSpec,
    inputs: &[&Tensor],
    state: &ExecState,
) -> Result<Vec<Tensor>, RuntimeError> {
    let Some((&dy, fwd)) = inputs.split_last() else {
        return Err(RuntimeError::Shape(
            "a vjp node needs the forward operands and a result gradient".into(),
        ));
    };
    if let Some(&w) = spec.wrt.iter().find(|&&w| w >= fwd.len()) {
        return Err(RuntimeError::Shape(format!(
            "gradient of operand {w} asked, but {} has {} operands",
            spec.forward.mnemonic(),
            fwd.len()
        )));
    }
    let wrt = &spec.wrt;
    let grads = match spec.forward.as_ref() {
        Op::Linear | Op::LmHead => dense::linear_vjp(fwd, dy, wrt)?,
        Op::Lora { alpha } => dense::lora_vjp(*alpha, fwd, dy, wrt)?,
        Op::Embedding => dense::embedding_vjp(fwd, dy, wrt)?,
        Op::RmsNorm { eps } => norm::rms_norm_vjp(*eps, fwd, dy, wrt)?,
        Op::SwiGlu => norm::swiglu_vjp(fwd, dy, wrt)?,
        Op::Rope(r) => rope::rope_vjp(r, state.position_offset, fwd, dy, wrt)?,
        Op::Attention(a) => attention::attention_vjp(a, fwd, dy, wrt)?,
        Op::CrossEntropy { ignore_index } => loss::cross_entropy_vjp(*ignore_index, fwd, dy, wrt)?,
        Op::LigerGate(g) => liger::gate_vjp(g, fwd, dy, wrt)?,
        Op::LigerAttention(l) => liger::liger_attention_vjp(l, fwd, dy, wrt)?,
        Op::Onnx(o) => elementwise::onnx_vjp(o, fwd, dy, wrt)?,
        other @ (Op::Input { .. } | Op::Weight { .. } | Op::Const(_) | Op::Vjp(_)) => {
            return Err(RuntimeError::Unsupported(format!(
                "{} cannot be differentiated",
                other.mnemonic()
            )));
        }
    };
    if grads.len() != wrt.len() {
        return Err(RuntimeError::Shape(format!(
            "internal: {} backward returned {} gradients for {} requested",
            spec.forward.mnemonic(),
            grads.len(),
            wrt.len()
        )));
    }
    for (g, &w) in grads.iter().zip(wrt) {
        if g.shape != fwd[w].shape {
            return Err(RuntimeError::Shape(format!(
                "internal: {} backward gave operand {w} a gradient of shape {:?}, operand is {:?}",
                spec.forward.mnemonic(),
                g.shape,
                fwd[w].shape
            )));
        }
    }
    Ok(grads)
}

/// The error for a `wrt` index a kernel cannot differentiate (integer ids,
/// targets, masks).
pub(crate) fn not_differentiable(op: &str, operand: usize, what: &str) -> RuntimeError {
    RuntimeError::Unsupported(format!("{op}: operand {operand} ({what}) has no gradient"))
}
