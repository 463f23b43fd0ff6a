//! `Lora` → standard ops: `y = MatMul(x, Wᵀ) + (alpha/rank) · MatMul(MatMul(x, Aᵀ), Bᵀ) (+ bias)`,
//! the rank read from `A`'s declared shape `[rank, in]`.

use ligerc_ir::{Dim, Graph, NodeId};

use super::body::NodeSink;
use super::builder::OnnxBuilder;
use super::export::ExportError;
use super::liger::ints_attr;

/// Emits the `Lora{alpha}` node `id` reading `operands` (`x, w, a, b [, bias]`) into `out`.
pub(super) fn lora(
    b: &mut OnnxBuilder,
    graph: &Graph,
    id: NodeId,
    alpha: f64,
    operands: &[String],
    out: &str,
) -> Result<(), ExportError> {
    let (x, w, a, up) = match operands {
        [x, w, a, up, ..] => (x, w, a, up),
        _ => {
            return Err(ExportError::Unsupported(
                "Lora takes x, w, lora_A, lora_B [, bias]".into(),
            ));
        }
    };
    let a_ref = graph.operands(id)[2];
    let rank = match graph.value_type(a_ref)?.shape.as_deref() {
        Some([Dim::Fixed(r), _]) => *r,
        other => {
            return Err(ExportError::Unsupported(format!(
                "Lora lora_A must have a fixed shape [rank, in], has {other:?}"
            )));
        }
    };
    let t = |b: &mut OnnxBuilder, m: &str, stem: &str| {
        NodeSink::op(b, "Transpose", &[m], vec![ints_attr("perm", &[1, 0])], stem)
    };
    let wt = t(b, w, "w_t");
    let base = b.op("MatMul", &[x, &wt], vec![], "matmul");
    let at = t(b, a, "lora_a_t");
    let down = b.op("MatMul", &[x, &at], vec![], "lora_down");
    let bt = t(b, up, "lora_b_t");
    let upd = b.op("MatMul", &[&down, &bt], vec![], "lora_up");
    let scale = if rank == 0 {
        0.0
    } else {
        (alpha / rank as f64) as f32
    };
    let scale = b.floats("lora_scale", &[], &[scale]);
    let branch = b.op("Mul", &[&upd, &scale], vec![], "lora_branch");
    let base = match operands.get(4) {
        Some(bias) => b.op("Add", &[&base, bias], vec![], "biased"),
        None => base,
    };
    b.op_named("Add", &[&base, &branch], vec![], &[out.to_string()]);
    Ok(())
}
