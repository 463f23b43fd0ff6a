//! Gives raised weights their Hugging Face names, by role.
//!
//! Exporters name initializers freely (`val_31`, `onnx::MatMul_123`); after
//! raising, the roles are known from the structure, so weights get the names
//! a Hugging Face Llama checkpoint uses (`model.layers.3.self_attn.q_proj.weight`,
//! …). LoRA targets, adapters and merged exports rely on them. The final
//! projection becomes `LmHead`.

use std::collections::HashMap;

use ligerc_ir::{Graph, NodeId, Op, ValueRef};

/// Renames weights by role; returns the number of decoder layers named.
pub fn name_by_role(g: &mut Graph) -> usize {
    let order = match g.topo_order() {
        Ok(o) => o,
        Err(_) => return 0,
    };
    let mut names: HashMap<NodeId, String> = HashMap::new();
    let op_of = |g: &Graph, v: ValueRef| g.node(v.node).map(|n| n.op.clone());
    // The weight node feeding operand `slot` of `id`.
    let weight_at = |g: &Graph, id: NodeId, slot: usize| -> Option<NodeId> {
        let w = g.operands(id).get(slot).copied()?;
        matches!(g.node(w.node)?.op, Op::Weight { .. }).then_some(w.node)
    };
    let linear_of = |g: &Graph, v: ValueRef| -> Option<NodeId> {
        matches!(op_of(g, v)?, Op::Linear).then_some(v.node)
    };
    let mut layer = 0usize;
    let mut mlp = 0usize;
    for &id in &order {
        let Some(node) = g.node(id) else { continue };
        match &node.op {
            Op::Embedding => {
                if let Some(w) = weight_at(g, id, 0) {
                    names.insert(w, "model.embed_tokens.weight".into());
                }
            }
            Op::Attention(_) => {
                let ops = g.operands(id);
                let p = format!("model.layers.{layer}");
                for (slot, role) in [(0usize, "q_proj"), (1, "k_proj"), (2, "v_proj")] {
                    let Some(&v) = ops.get(slot) else { continue };
                    // q and k pass through Rope.
                    let v = if matches!(op_of(g, v), Some(Op::Rope(_))) {
                        g.operands(v.node).first().copied().unwrap_or(v)
                    } else {
                        v
                    };
                    if let Some(lin) = linear_of(g, v) {
                        name_linear(g, lin, &format!("{p}.self_attn.{role}"), &mut names);
                        if role == "q_proj"
                            && let Some(x) = g.operands(lin).first().copied()
                            && matches!(op_of(g, x), Some(Op::RmsNorm { .. }))
                            && let Some(w) = weight_at(g, x.node, 1)
                        {
                            names.insert(w, format!("{p}.input_layernorm.weight"));
                        }
                    }
                }
                for (user, _) in g.value_users(id.into()) {
                    if matches!(g.node(user).map(|n| &n.op), Some(Op::Linear)) {
                        name_linear(g, user, &format!("{p}.self_attn.o_proj"), &mut names);
                    }
                }
                layer += 1;
            }
            Op::SwiGlu => {
                let p = format!("model.layers.{mlp}.mlp");
                let ops = g.operands(id);
                for (slot, role) in [(0usize, "gate_proj"), (1, "up_proj")] {
                    if let Some(lin) = ops.get(slot).and_then(|v| linear_of(g, *v)) {
                        name_linear(g, lin, &format!("{p}.{role}"), &mut names);
                        if role == "gate_proj"
                            && let Some(x) = g.operands(lin).first().copied()
                            && matches!(op_of(g, x), Some(Op::RmsNorm { .. }))
                            && let Some(w) = weight_at(g, x.node, 1)
                        {
                            names.insert(
                                w,
                                format!("model.layers.{mlp}.post_attention_layernorm.weight"),
                            );
                        }
                    }
                }
                for (user, _) in g.value_users(id.into()) {
                    if matches!(g.node(user).map(|n| &n.op), Some(Op::Linear)) {
                        name_linear(g, user, &format!("{p}.down_proj"), &mut names);
                    }
                }
                mlp += 1;
            }
            _ => {}
        }
    }
    // The final norm and the head: the Linear producing the first output.
    if let Some(out) = g.outputs.first().map(|o| o.value)
        && matches!(op_of(g, out), Some(Op::Linear))
        && g.operands(out.node).len() == 2
    {
        if let Some(n) = g.node_mut(out.node) {
            n.op = Op::LmHead;
        }
        if let Some(w) = weight_at(g, out.node, 1) {
            names.entry(w).or_insert_with(|| "lm_head.weight".into());
        }
        if let Some(x) = g.operands(out.node).first().copied()
            && matches!(op_of(g, x), Some(Op::RmsNorm { .. }))
            && let Some(w) = weight_at(g, x.node, 1)
        {
            names.insert(w, "model.norm.weight".into());
        }
    }
    for (node, new) in names {
        rename_weight_node(g, node, &new);
    }
    layer
}

fn name_linear(g: &Graph, lin: NodeId, prefix: &str, names: &mut HashMap<NodeId, String>) {
    let ops = g.operands(lin);
    for (slot, suffix) in [(1usize, "weight"), (2, "bias")] {
        if let Some(w) = ops.get(slot)
            && matches!(g.node(w.node).map(|n| &n.op), Some(Op::Weight { .. }))
        {
            names.insert(w.node, format!("{prefix}.{suffix}"));
        }
    }
}

/// Points weight node `node` at `new`, moving (or sharing) the stored data.
fn rename_weight_node(g: &mut Graph, node: NodeId, new: &str) {
    let Some(Op::Weight { name: old }) = g.node(node).map(|n| n.op.clone()) else {
        return;
    };
    if old == new {
        return;
    }
    let Some(data) = g.weights.get(&old).cloned() else {
        return;
    };
    g.weights.insert(new.to_string(), data);
    if let Some(n) = g.node_mut(node) {
        n.op = Op::Weight {
            name: new.to_string(),
        };
    }
    let still_used = g
        .node_ids()
        .into_iter()
        .any(|id| matches!(g.node(id).map(|n| &n.op), Some(Op::Weight { name }) if *name == old));
    if !still_used {
        g.weights.remove(&old);
    }
}
