//! `raise`: decomposed exporter patterns → high-level ops.
//!
//! Order (each step a fixed-point rewrite, then dead-code elimination):
//! 1. attention blocks (seeded on `Softmax` / opset 23 `Attention`) → `Rope` + `Attention`
//!    — first, because it reads the projections as `MatMul`s with their original weights;
//! 2. RMSNorm → `RmsNorm`; 3. SwiGLU → `SwiGlu`; 4. projections → `Linear`; 5. `Gather` → `Embedding`;
//!    no-op `Cast`/`Identity` nodes dropped;
//! 6. weights renamed by role (Hugging Face names), the final projection becomes `LmHead`.
//!
//! The pass reports "N of N attention blocks raised". A block it cannot raise
//! is an error naming the node, unless `allow-partial` is set.

mod attention;
mod names;
mod norm_mlp;
pub(crate) mod trace;

use ligerc_ir::{Graph, Op};

use crate::rewrite::{Rule, rewrite};
use crate::{Pass, PassContext, PassError};

pub use attention::RaiseAttention;
pub use names::name_by_role;
pub use norm_mlp::{DropNoopCast, RaiseEmbedding, RaiseLinear, RaiseRmsNorm, RaiseSwiGlu};

/// The raising pass.
#[derive(Default)]
pub struct Raise {
    /// Continue when some attention blocks cannot be raised.
    pub allow_partial: bool,
}

/// Attention seeds left in a graph: `Softmax` and opset 23 `Attention` nodes.
fn attention_seeds(g: &Graph) -> Vec<ligerc_ir::NodeId> {
    g.node_ids()
        .into_iter()
        .filter(|&id| matches!(g.node(id).map(|n| &n.op), Some(Op::Onnx(o)) if o.op_type == "Softmax" || o.op_type == "Attention"))
        .collect()
}

impl Pass for Raise {
    fn name(&self) -> &str {
        "raise"
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<(), PassError> {
        rewrite(graph, &[&crate::fold::FoldConstants], "raise", 16)?;
        let before = attention_seeds(graph).len();
        let already = graph
            .node_ids()
            .into_iter()
            .filter(|&id| matches!(graph.node(id).map(|n| &n.op), Some(Op::Attention(_))))
            .count();
        // Attention first, one block at a time so a failure names its block.
        let mut failures = Vec::new();
        for seed in attention_seeds(graph) {
            if graph.node(seed).is_none() {
                continue;
            }
            match RaiseAttention.apply(graph, seed) {
                Ok(Some(p)) => {
                    crate::rewrite::apply_patch(graph, p);
                }
                Ok(None) => {}
                Err(e) => failures.push(format!("{}: {e}", graph.describe(seed))),
            }
        }
        graph.eliminate_dead_nodes();
        let raised = before - attention_seeds(graph).len();
        cx.notes.push(format!(
            "raise: {} of {} attention blocks raised",
            raised + already,
            before + already
        ));
        if !failures.is_empty() && !self.allow_partial {
            return Err(PassError::Failed {
                pass: "raise".into(),
                message: format!(
                    "{} of {} attention blocks were not raised (use allow-partial to continue):\n  {}",
                    failures.len(),
                    before,
                    failures.join("\n  ")
                ),
            });
        }
        let rules: [&dyn Rule; 5] = [
            &RaiseRmsNorm,
            &RaiseSwiGlu,
            &RaiseLinear,
            &RaiseEmbedding,
            &DropNoopCast,
        ];
        for rule in rules {
            rewrite(graph, &[rule], "raise", 8)?;
        }
        name_by_role(graph);
        graph.eliminate_dead_nodes();
        Ok(())
    }
}
