//! `merge-lora`: folds every LoRA branch into its frozen weight.
//!
//! ```text
//!   y = Lora{alpha}(x, W, A, B [, bias])
//!     ⇒ y = Linear(x, W' [, bias]),   W' = W + (alpha/rank)·B·A
//! ```
//!
//! `B·A` is accumulated in f64 and `W'` is stored in f32, whatever `W`'s
//! dtype was (a bf16 `W` could not hold a small update). `W'` keeps `W`'s
//! name when this node was `W`'s only reader; otherwise it gets a new name
//! (`<stem>.merged.weight`) and `W` stays for its other readers. `A` and `B`
//! are removed once nothing reads them.
//!
//! The pass plans every merge before changing the graph, adds all new nodes
//! before removing any, and so never holds a node id across a removal.

use std::collections::{BTreeSet, HashSet};

use ligerc_ir::{Graph, Node, NodeId, Op, TensorData, TensorType, ValueRef};

use crate::{Pass, PassContext, PassError};

/// The name users type after `--pass`.
const PASS: &str = "merge-lora";

/// The `merge-lora` pass (no options).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeLora;

impl Pass for MergeLora {
    fn name(&self) -> &str {
        PASS
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<(), PassError> {
        let n = merge_lora(graph)?;
        cx.notes.push(if n == 0 {
            format!("{PASS}: no Lora nodes to merge")
        } else {
            format!("{PASS}: {n} Lora nodes merged into their weights")
        });
        Ok(())
    }
}

/// Where the merged weight goes.
enum Target {
    /// Overwrite weight `name` in place (this node was its only reader).
    InPlace(String),
    /// Store under a new name.
    New(String),
}

/// One planned merge.
struct Plan {
    lora: NodeId,
    x: ValueRef,
    w: ValueRef,
    bias: Option<ValueRef>,
    merged: TensorData,
    target: Target,
    node: Node,
}

/// Replaces every `Lora` node by a `Linear` on its merged weight; returns how
/// many were merged. Errors with [`PassError::Failed`], leaving the graph
/// unchanged, when an operand of a `Lora` node is not a weight or constant or
/// the shapes do not fit.
pub fn merge_lora(graph: &mut Graph) -> Result<usize, PassError> {
    let fail = |message: String| PassError::Failed {
        pass: PASS.into(),
        message,
    };
    let lora_nodes: Vec<NodeId> = graph
        .node_ids()
        .into_iter()
        .filter(|&id| matches!(graph.node(id).map(|n| &n.op), Some(Op::Lora { .. })))
        .collect();
    let mut taken: HashSet<String> = graph.weights.keys().cloned().collect();
    let mut plans = Vec::with_capacity(lora_nodes.len());
    for &id in &lora_nodes {
        let at = graph.describe(id);
        let Some(node) = graph.node(id).cloned() else {
            continue;
        };
        let Op::Lora { alpha } = node.op else {
            continue;
        };
        let operands = graph.operands(id);
        let &[x, w, a, b, ref rest @ ..] = operands.as_slice() else {
            return Err(fail(format!(
                "{at}: has {} operands, expected 4 or 5",
                operands.len()
            )));
        };
        let data = |v: ValueRef, role: &str| -> Result<TensorData, PassError> {
            match graph.node(v.node).map(|n| &n.op) {
                Some(Op::Weight { name }) => graph.weights.get(name).cloned().ok_or_else(|| {
                    fail(format!(
                        "{at}: {role} weight `{name}` is not in the weight store"
                    ))
                }),
                Some(Op::Const(t)) => Ok(t.clone()),
                _ => Err(fail(format!(
                    "{at}: {role} is computed at run time, not a weight; cannot fold it"
                ))),
            }
        };
        let merged = merged_weight(
            &data(w, "weight")?,
            &data(a, "lora_A")?,
            &data(b, "lora_B")?,
            alpha,
        )
        .map_err(|e| fail(format!("{at}: {e}")))?;
        let w_name = match graph.node(w.node).map(|n| &n.op) {
            Some(Op::Weight { name }) => Some(name.clone()),
            _ => None,
        };
        let target = match w_name {
            Some(name) if only_reader(graph, &name) == Some(id) => Target::InPlace(name),
            other => {
                let base = other.unwrap_or_else(|| {
                    let a_name = match graph.node(a.node).map(|n| &n.op) {
                        Some(Op::Weight { name }) => name.clone(),
                        _ => format!("lora{}", id.index()),
                    };
                    let module = a_name.strip_suffix(".lora_A.weight").unwrap_or(&a_name);
                    format!("{module}.weight")
                });
                let stem = base.strip_suffix(".weight").unwrap_or(&base).to_string();
                let mut name = format!("{stem}.merged.weight");
                let mut k = 1;
                while taken.contains(&name) {
                    name = format!("{stem}.merged{k}.weight");
                    k += 1;
                }
                taken.insert(name.clone());
                Target::New(name)
            }
        };
        plans.push(Plan {
            lora: id,
            x,
            w,
            bias: rest.first().copied(),
            merged,
            target,
            node,
        });
    }
    // Apply: add and rewire everything first, remove afterwards.
    let mut maybe_dead: BTreeSet<NodeId> = BTreeSet::new();
    for plan in &plans {
        maybe_dead.extend(
            graph
                .operands(plan.lora)
                .into_iter()
                .skip(1)
                .map(|v| v.node),
        );
    }
    let count = plans.len();
    for plan in plans {
        let w = match plan.target {
            Target::InPlace(name) => {
                let ty = TensorType::fixed(plan.merged.dtype(), plan.merged.shape());
                for id in graph.node_ids() {
                    if let Some(n) = graph.node_mut(id)
                        && matches!(&n.op, Op::Weight { name: m } if *m == name)
                    {
                        n.outputs = vec![ty.clone()];
                    }
                }
                graph.weights.insert(name, plan.merged);
                plan.w
            }
            Target::New(name) => graph.add_weight(&name, plan.merged),
        };
        let mut operands = vec![plan.x, w];
        operands.extend(plan.bias);
        let linear = graph.add_node(Op::Linear, &operands, plan.node.outputs, plan.node.name);
        graph.replace_all_uses(plan.lora.into(), linear.into());
    }
    for &id in &lora_nodes {
        graph.remove_node(id);
    }
    let outputs: HashSet<NodeId> = graph.outputs.iter().map(|o| o.value.node).collect();
    let mut removed_weights = Vec::new();
    for id in maybe_dead {
        let Some(node) = graph.node(id) else { continue };
        let is_data = matches!(node.op, Op::Weight { .. } | Op::Const(_));
        if is_data
            && graph.users(id).is_empty()
            && !outputs.contains(&id)
            && let Some(Node {
                op: Op::Weight { name },
                ..
            }) = graph.remove_node(id)
        {
            removed_weights.push(name);
        }
    }
    let still_read: HashSet<String> = graph
        .node_ids()
        .into_iter()
        .filter_map(|id| match graph.node(id).map(|n| &n.op) {
            Some(Op::Weight { name }) => Some(name.clone()),
            _ => None,
        })
        .collect();
    for name in removed_weights {
        if !still_read.contains(&name) {
            graph.weights.remove(&name);
        }
    }
    Ok(count)
}

/// The single node reading weight `name` through any of its `weight` nodes,
/// or `None` when there are several readers, none, or it is a graph output.
fn only_reader(graph: &Graph, name: &str) -> Option<NodeId> {
    let mut readers = BTreeSet::new();
    for id in graph.node_ids() {
        if !matches!(graph.node(id).map(|n| &n.op), Some(Op::Weight { name: n }) if n == name) {
            continue;
        }
        if graph.outputs.iter().any(|o| o.value.node == id) {
            return None;
        }
        readers.extend(graph.users(id).into_iter().map(|(user, _, _)| user));
    }
    match readers.len() {
        1 => readers.pop_first(),
        _ => None,
    }
}

/// `W + (alpha/rank)·B·A` as f32, with `B·A` accumulated in f64.
///
/// `w [out, in]`, `a [rank, in]`, `b [out, rank]`; a rank of 0 returns `W`
/// (converted to f32).
fn merged_weight(
    w: &TensorData,
    a: &TensorData,
    b: &TensorData,
    alpha: f64,
) -> Result<TensorData, String> {
    let (out_f, in_f) = match w.shape() {
        &[o, i] => (o, i),
        s => return Err(format!("weight is {s:?}, expected [out, in]")),
    };
    let rank = match a.shape() {
        &[r, i] if i == in_f => r,
        s => return Err(format!("lora_A is {s:?}, expected [rank, {in_f}]")),
    };
    if b.shape() != [out_f, rank] {
        return Err(format!(
            "lora_B is {:?}, expected [{out_f}, {rank}]",
            b.shape()
        ));
    }
    if !alpha.is_finite() {
        return Err(format!("alpha must be finite, is {alpha}"));
    }
    let ws = w.to_f64_vec();
    let mut merged: Vec<f32> = ws.iter().map(|&v| v as f32).collect();
    if rank > 0 {
        let (a_vals, b_vals) = (a.to_f64_vec(), b.to_f64_vec());
        let scale = alpha / rank as f64;
        let mut acc = vec![0.0f64; in_f];
        for o in 0..out_f {
            acc.iter_mut().for_each(|v| *v = 0.0);
            for r in 0..rank {
                let coef = b_vals[o * rank + r];
                if coef == 0.0 {
                    continue;
                }
                for (v, &ai) in acc.iter_mut().zip(&a_vals[r * in_f..(r + 1) * in_f]) {
                    *v += coef * ai;
                }
            }
            let row = o * in_f..(o + 1) * in_f;
            for ((m, &wv), &d) in merged[row.clone()].iter_mut().zip(&ws[row]).zip(&acc) {
                *m = (wv + scale * d) as f32;
            }
        }
    }
    TensorData::from_f32(vec![out_f, in_f], &merged).map_err(|e| e.to_string())
}
