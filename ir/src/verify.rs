//! The verifier: checks every structural and type invariant of a [`Graph`].
//!
//! Invariants, each reported with the node it concerns (all problems are
//! collected, not just the first):
//! 1. the graph is acyclic;
//! 2. every edge reads an existing result (`port < outputs.len()`);
//! 3. a node's operand slots are exactly `0..n`, each filled once;
//! 4. operand and result counts are within the op's arity;
//! 5. `weight` nodes name a stored weight of the same dtype and shape, `const`
//!    types match their data, input names are unique;
//! 6. graph outputs name existing results;
//! 7. high-level ops get operands of the right dtype and, where dims are known,
//!    shape (Linear `in` features, RmsNorm width, head counts, …).

use std::collections::HashSet;

use crate::{Dim, Graph, NodeId, Op, TensorType};

/// Checks all invariants; `Err` lists every problem found.
pub fn verify(graph: &Graph) -> Result<(), crate::IrError> {
    let mut errors = Vec::new();
    if let Err(e) = graph.topo_order() {
        errors.push(e.to_string());
    }
    let mut input_names = HashSet::new();
    for id in graph.node_ids() {
        let Some(node) = graph.node(id) else { continue };
        let at = graph.describe(id);
        let edges = graph.operand_edges(id);
        for (i, (slot, v)) in edges.iter().enumerate() {
            if *slot as usize != i {
                errors.push(format!(
                    "{at}: operand slots are not 0..{} (slot {slot} at position {i})",
                    edges.len()
                ));
                break;
            }
            if graph.value_type(*v).is_err() {
                errors.push(format!(
                    "{at}: operand {slot} reads missing result {}#{}",
                    v.node.index(),
                    v.port
                ));
            }
        }
        match node.op.arity() {
            Err(e) => errors.push(format!("{at}: {e}")),
            Ok(crate::op::Arity {
                inputs: (lo, hi),
                outputs: (olo, ohi),
            }) => {
                if edges.len() < lo || edges.len() > hi {
                    errors.push(format!(
                        "{at}: takes {lo}..={hi} operands, has {}",
                        edges.len()
                    ));
                }
                if node.outputs.len() < olo || node.outputs.len() > ohi {
                    errors.push(format!(
                        "{at}: has {}..={ohi} results, declares {}",
                        olo,
                        node.outputs.len()
                    ));
                }
            }
        }
        match &node.op {
            Op::Input { name } => {
                if !input_names.insert(name.clone()) {
                    errors.push(format!("{at}: duplicate input name `{name}`"));
                }
            }
            Op::Weight { name } => match graph.weights.get(name) {
                None => errors.push(format!("{at}: weight `{name}` is not in the weight store")),
                Some(w) => {
                    let want = TensorType::fixed(w.dtype(), w.shape());
                    if node.outputs.first() != Some(&want) {
                        errors.push(format!(
                            "{at}: weight `{name}` is {want}, node declares {:?}",
                            node.outputs.first().map(|t| t.to_string())
                        ));
                    }
                }
            },
            Op::Const(t) => {
                let want = TensorType::fixed(t.dtype(), t.shape());
                if node.outputs.first() != Some(&want) {
                    errors.push(format!(
                        "{at}: const data is {want}, node declares another type"
                    ));
                }
            }
            _ => check_types(graph, id, &at, &mut errors),
        }
    }
    for o in &graph.outputs {
        if graph.value_type(o.value).is_err() {
            errors.push(format!(
                "output `{}` reads missing result {}#{}",
                o.name,
                o.value.node.index(),
                o.value.port
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(crate::IrError::Verify { errors })
    }
}

/// `heads × per_head` as a dim. Counts come from attributes a user wrote, so
/// the product saturates instead of overflowing: no real tensor is that wide,
/// and the mismatch is reported like any other.
fn width(heads: usize, per_head: usize) -> Dim {
    Dim::Fixed(heads.saturating_mul(per_head))
}

fn last_dim(t: &TensorType) -> Option<&Dim> {
    t.dim(-1)
}

fn expect_dim(errors: &mut Vec<String>, at: &str, what: &str, got: Option<&Dim>, want: &Dim) {
    if let Some(g) = got
        && !g.compatible(want)
    {
        errors.push(format!("{at}: {what} is {g}, expected {want}"));
    }
}

/// Type rules of the high-level ops.
fn check_types(graph: &Graph, id: NodeId, at: &str, errors: &mut Vec<String>) {
    let Some(node) = graph.node(id) else { return };
    let ops: Vec<TensorType> = graph
        .operands(id)
        .into_iter()
        .filter_map(|v| graph.value_type(v).ok().cloned())
        .collect();
    let float = |errors: &mut Vec<String>, i: usize| {
        if let Some(t) = ops.get(i)
            && !t.dtype.is_float()
        {
            errors.push(format!("{at}: operand {i} must be floating point, is {t}"));
        }
    };
    match &node.op {
        Op::Linear | Op::LmHead => {
            float(errors, 0);
            float(errors, 1);
            if let (Some(x), Some(w)) = (ops.first(), ops.get(1)) {
                if w.rank().is_some_and(|r| r != 2) {
                    errors.push(format!("{at}: weight must be [out, in], is {w}"));
                } else if let (Some(win), Some(wout)) = (w.dim(1), w.dim(0)) {
                    expect_dim(errors, at, "input features", last_dim(x), win);
                    if let Some(b) = ops.get(2) {
                        expect_dim(errors, at, "bias length", b.dim(0), wout);
                    }
                    if let Some(out) = node.outputs.first() {
                        expect_dim(errors, at, "output features", last_dim(out), wout);
                    }
                }
            }
        }
        Op::RmsNorm { eps } => {
            float(errors, 0);
            if !(eps.is_finite() && *eps >= 0.0) {
                errors.push(format!(
                    "{at}: eps must be finite and non-negative, is {eps}"
                ));
            }
            if let (Some(x), Some(w)) = (ops.first(), ops.get(1))
                && let Some(wd) = w.dim(0)
            {
                expect_dim(errors, at, "normalised width", last_dim(x), wd);
            }
        }
        Op::Embedding => {
            float(errors, 0);
            if let Some(ids) = ops.get(1)
                && !ids.dtype.is_int()
            {
                errors.push(format!("{at}: ids must be integers, are {ids}"));
            }
        }
        Op::Rope(r) => {
            float(errors, 0);
            if r.head_dim % 2 != 0 || r.head_dim == 0 {
                errors.push(format!(
                    "{at}: head_dim must be even and positive, is {}",
                    r.head_dim
                ));
            }
            if let Some(x) = ops.first() {
                expect_dim(
                    errors,
                    at,
                    "features",
                    last_dim(x),
                    &width(r.heads, r.head_dim),
                );
            }
        }
        Op::Attention(s) => {
            for i in 0..3 {
                float(errors, i);
            }
            if s.kv_heads == 0 || s.heads % s.kv_heads != 0 {
                errors.push(format!(
                    "{at}: heads ({}) must be a multiple of kv_heads ({})",
                    s.heads, s.kv_heads
                ));
            }
            let q_w = width(s.heads, s.head_dim);
            let kv_w = width(s.kv_heads, s.head_dim);
            if let Some(q) = ops.first() {
                expect_dim(errors, at, "query features", last_dim(q), &q_w);
            }
            for (i, name) in [(1, "key features"), (2, "value features")] {
                if let Some(t) = ops.get(i) {
                    expect_dim(errors, at, name, last_dim(t), &kv_w);
                }
            }
        }
        Op::LigerGate(g) => {
            float(errors, 0);
            if g.variant.has_gate() {
                if let Some(k) = ops.first() {
                    expect_dim(
                        errors,
                        at,
                        "key features",
                        last_dim(k),
                        &width(g.kv_heads, g.head_dim),
                    );
                }
                if let Some(out) = node.outputs.first() {
                    expect_dim(
                        errors,
                        at,
                        "gate width",
                        last_dim(out),
                        &width(g.kv_heads, g.width()),
                    );
                }
            } else {
                errors.push(format!("{at}: variant {} has no gate", g.variant));
            }
            if g.variant == crate::LigerVariant::Gsa && (g.slots == 0 || g.slots > g.head_dim) {
                errors.push(format!(
                    "{at}: GSA needs 1..={} slots, has {}",
                    g.head_dim, g.slots
                ));
            }
        }
        Op::LigerAttention(l) => {
            for i in 0..ops.len() {
                float(errors, i);
            }
            if l.kv_heads == 0 || !l.heads.is_multiple_of(l.kv_heads) {
                errors.push(format!(
                    "{at}: heads ({}) must be a multiple of kv_heads ({})",
                    l.heads, l.kv_heads
                ));
            }
            if l.variant == crate::LigerVariant::Gsa && (l.slots == 0 || l.slots > l.head_dim) {
                errors.push(format!(
                    "{at}: GSA needs 1..={} slots, has {}",
                    l.head_dim, l.slots
                ));
            }
            let q_w = width(l.heads, l.head_dim);
            let kv_w = width(l.kv_heads, l.head_dim);
            let gate_w = width(l.kv_heads, l.variant.gate_width(l.head_dim, l.slots));
            let names = [
                ("q", &q_w),
                ("k", &kv_w),
                ("v", &kv_w),
                ("q_rot", &q_w),
                ("k_rot", &kv_w),
                ("gate", &gate_w),
            ];
            for (i, (name, want)) in names.into_iter().enumerate() {
                if let Some(t) = ops.get(i) {
                    expect_dim(errors, at, &format!("{name} features"), last_dim(t), want);
                }
            }
        }
        Op::Lora { alpha } => {
            if !alpha.is_finite() {
                errors.push(format!("{at}: alpha must be finite, is {alpha}"));
            }
            if let (Some(x), Some(w), Some(a), Some(b)) =
                (ops.first(), ops.get(1), ops.get(2), ops.get(3))
                && let (Some(win), Some(wout), Some(rank)) = (w.dim(1), w.dim(0), a.dim(0))
            {
                expect_dim(errors, at, "input features", last_dim(x), win);
                expect_dim(errors, at, "lora_A input features", a.dim(1), win);
                expect_dim(errors, at, "lora_B output features", b.dim(0), wout);
                expect_dim(errors, at, "lora_B rank", b.dim(1), rank);
            }
        }
        Op::SwiGlu => {
            float(errors, 0);
            float(errors, 1);
            if let (Some(a), Some(b)) = (ops.first(), ops.get(1))
                && let (Some(sa), Some(sb)) = (&a.shape, &b.shape)
                && (sa.len() != sb.len() || sa.iter().zip(sb).any(|(x, y)| !x.compatible(y)))
            {
                errors.push(format!("{at}: gate {a} and up {b} differ in shape"));
            }
        }
        Op::CrossEntropy { .. } => {
            float(errors, 0);
            if let Some(t) = ops.get(1)
                && (t.dtype.is_float() || t.dtype == crate::DType::Bool)
            {
                errors.push(format!("{at}: targets must be integers, are {t}"));
            }
            if let (Some(l), Some(t)) = (ops.first(), ops.get(1))
                && let (Some(sl), Some(st)) = (&l.shape, &t.shape)
                && (sl.len() != st.len() + 1 || sl.iter().zip(st).any(|(x, y)| !x.compatible(y)))
            {
                errors.push(format!(
                    "{at}: targets {t} must be the logits' shape {l} without the vocabulary axis"
                ));
            }
            for (i, o) in node.outputs.iter().enumerate() {
                if o.rank() != Some(0) || !o.dtype.is_float() {
                    errors.push(format!("{at}: result {i} must be a float scalar, is {o}"));
                }
            }
        }
        Op::Vjp(v) => check_vjp(v, &ops, &node.outputs, at, errors),
        _ => {}
    }
}

/// A `vjp.*` node: one more operand than its forward op (the result gradient,
/// shaped like nothing in particular here), and one result per `wrt` index,
/// typed like that forward operand.
fn check_vjp(
    v: &crate::VjpSpec,
    ops: &[TensorType],
    outputs: &[TensorType],
    at: &str,
    errors: &mut Vec<String>,
) {
    if matches!(
        *v.forward,
        Op::Vjp(_) | Op::Input { .. } | Op::Weight { .. } | Op::Const(_)
    ) {
        errors.push(format!(
            "{at}: cannot differentiate {}",
            v.forward.mnemonic()
        ));
        return;
    }
    let forward_operands = ops.len().saturating_sub(1);
    let mut seen = HashSet::new();
    for (i, &w) in v.wrt.iter().enumerate() {
        if w >= forward_operands {
            errors.push(format!(
                "{at}: gradient {i} is of operand {w}, but the forward op has {forward_operands}"
            ));
            continue;
        }
        if !seen.insert(w) {
            errors.push(format!("{at}: operand {w} is differentiated twice"));
        }
        if !ops[w].dtype.is_float() {
            errors.push(format!(
                "{at}: operand {w} is {}, not differentiable",
                ops[w]
            ));
        }
        if let Some(o) = outputs.get(i)
            && (o.dtype != ops[w].dtype
                || !matches!((&o.shape, &ops[w].shape), (Some(a), Some(b))
                    if a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.compatible(y))))
        {
            errors.push(format!(
                "{at}: gradient {i} is {o}, but operand {w} is {}",
                ops[w]
            ));
        }
    }
}
