//! Small queries over exported graphs that the raising rules share.

use std::collections::{HashSet, VecDeque};

use ligerc_ir::{DType, Dim, Graph, NodeId, OnnxOp, Op, TensorData, TensorType, ValueRef};

/// The generic op of `id`, if it is one.
pub fn onnx(g: &Graph, id: NodeId) -> Option<&OnnxOp> {
    match &g.node(id)?.op {
        Op::Onnx(o) => Some(o),
        _ => None,
    }
}

/// True when `id` is the generic op `op_type`.
pub fn is(g: &Graph, id: NodeId, op_type: &str) -> bool {
    onnx(g, id).is_some_and(|o| o.op_type == op_type)
}

/// Operand `i` of `id`.
pub fn arg(g: &Graph, id: NodeId, i: usize) -> Option<ValueRef> {
    g.operands(id).get(i).copied()
}

/// The constant data of a weight or literal (looking through Identity and Cast).
pub fn constant(g: &Graph, v: ValueRef) -> Option<TensorData> {
    let node = g.node(v.node)?;
    match &node.op {
        Op::Weight { name } => g.weights.get(name).cloned(),
        Op::Const(t) => Some(t.clone()),
        Op::Onnx(o) if o.op_type == "Identity" || o.op_type == "Cast" => {
            constant(g, arg(g, v.node, 0)?)
        }
        _ => None,
    }
}

/// A constant with one element, as f64.
pub fn scalar(g: &Graph, v: ValueRef) -> Option<f64> {
    let t = constant(g, v)?;
    (t.numel() == 1)
        .then(|| t.to_f64_vec().first().copied())
        .flatten()
}

/// A rank-2 float weight used as the right operand of a MatMul: `(name, data)`.
pub fn matrix_weight(g: &Graph, v: ValueRef) -> Option<(String, TensorData)> {
    match &g.node(v.node)?.op {
        Op::Weight { name } => {
            let t = g.weights.get(name)?;
            (t.shape().len() == 2 && t.dtype().is_float()).then(|| (name.clone(), t.clone()))
        }
        _ => None,
    }
}

/// A projection: `MatMul(x, W)` with `W` a rank-2 float weight.
pub fn is_projection(g: &Graph, id: NodeId) -> bool {
    is(g, id, "MatMul")
        && arg(g, id, 1).is_some_and(|w| matrix_weight(g, w).is_some())
        && arg(g, id, 0).is_some_and(|x| constant(g, x).is_none())
}

/// The only consumer of `v`, if exactly one node uses it and it is not a graph output.
pub fn single_user(g: &Graph, v: ValueRef) -> Option<NodeId> {
    let users = g.value_users(v);
    if users.len() == 1 && !g.outputs.iter().any(|o| o.value == v) {
        users.first().map(|u| u.0)
    } else {
        None
    }
}

/// Nodes reached walking operands backwards from `v`, not entering `Shape`
/// operands (they read only dims) nor `CastLike`'s type operand and stopping at nodes `stop` accepts.
/// Returns the stop nodes found and every node visited.
pub fn walk_back(
    g: &Graph,
    v: ValueRef,
    stop: impl Fn(NodeId) -> bool,
) -> (Vec<NodeId>, HashSet<NodeId>) {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([v.node]);
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        if stop(id) {
            found.push(id);
            continue;
        }
        if is(g, id, "Shape") {
            continue;
        }
        // CastLike's second operand gives only a dtype.
        let ops = g.operands(id);
        let n = if is(g, id, "CastLike") { 1 } else { ops.len() };
        queue.extend(ops.into_iter().take(n).map(|o| o.node));
    }
    found.sort();
    (found, seen)
}

/// The projections `v` is computed from.
pub fn projections_above(g: &Graph, v: ValueRef) -> Vec<NodeId> {
    walk_back(g, v, |id| is_projection(g, id)).0
}

/// The graph inputs (other than through `Shape`) `v` depends on.
pub fn inputs_above(g: &Graph, v: ValueRef) -> Vec<NodeId> {
    walk_back(g, v, |id| {
        matches!(g.node(id).map(|n| &n.op), Some(Op::Input { .. }))
    })
    .0
}

/// `[batch, seq, width]` with the graph's own symbolic batch/seq dims when its first input names them.
pub fn activation_type(g: &Graph, width: usize) -> TensorType {
    let (b, s) = g
        .inputs()
        .first()
        .and_then(|(id, _)| g.node(*id))
        .and_then(|n| n.outputs.first())
        .and_then(|t| t.shape.clone())
        .and_then(|d| Some((d.first()?.clone(), d.get(1)?.clone())))
        .unwrap_or((Dim::Unknown, Dim::Unknown));
    TensorType::new(DType::F32, vec![b, s, Dim::Fixed(width)])
}
