//! Fusion groups: which IR nodes one CUDA step (or one fixed short sequence of
//! steps) implements. An analysis only: the graph is not rewritten.
//!
//! Walking the graph in topological order, nodes are grouped as follows:
//!
//! | group | nodes | why |
//! |---|---|---|
//! | [`Group::Norm`] | `RmsNorm(Add(a, b))` (or a lone `RmsNorm`) | the residual add and the norm read the same row: one pass writes the new residual (f32) and the normed bf16 row |
//! | [`Group::Liger`] | `LigerGate(k)` + `LigerAttention(q, k, v, q_rot, k_rot, gate)` | the gate and the feature maps are computed where the recurrence loads `k` and `q`, never stored |
//! | [`Group::MaskRows`] | `Mul(v, Unsqueeze(Cast(attention_mask)))` | exporters' left-padding rule `v ⊙ mask[..., None]`: one row-scaling kernel reading the mask input directly |
//! | [`Group::Lora`] | `Lora(x, W, A, B)` | three cuBLAS calls, the last accumulating into the first's output (`beta = 1`) |
//! | everything else | one node | one kernel or one GEMM |
//!
//! A `LigerGate` whose result is also used outside LigerAttention gets its own
//! [`Group::Gate`] kernel for those users (the LigerAttention kernels still
//! recompute it from `k`). `Cast`/`Unsqueeze` nodes that only feed a
//! [`Group::MaskRows`] vanish. Any other generic ONNX op is refused with the
//! node named.

use std::collections::HashSet;

use ligerc_ir::{Graph, NodeId, Op, ValueRef};

use super::CudaError;

/// One fusion group, in the order the steps run.
#[derive(Clone, Debug, PartialEq)]
pub enum Group {
    /// `Embedding(table, ids)`.
    Embedding(NodeId),
    /// `RmsNorm(x)`, or with `add`: `RmsNorm(Add(a, b))`, the sum kept as the next residual.
    Norm {
        /// The fused residual `onnx.Add`.
        add: Option<NodeId>,
        /// The `RmsNorm`.
        norm: NodeId,
    },
    /// A residual `onnx.Add` with no norm after it.
    Add(NodeId),
    /// `Linear(x, W [, b])`.
    Linear(NodeId),
    /// `Lora(x, W, A, B [, b])`.
    Lora(NodeId),
    /// `LmHead(x, W)`.
    LmHead(NodeId),
    /// `Rope(x)`.
    Rope(NodeId),
    /// Two `Rope`s of the same frequencies (a layer's queries and keys): one launch.
    RopePair(NodeId, NodeId),
    /// `SwiGlu(gate, up)`.
    SwiGlu(NodeId),
    /// `Mul(x, Unsqueeze(Cast(mask)))` with `mask` a graph input `[batch, seq]`.
    MaskRows {
        /// The `onnx.Mul`.
        mul: NodeId,
        /// The scaled operand.
        x: ValueRef,
        /// The mask input node.
        mask: NodeId,
    },
    /// A `LigerGate` materialised for users other than LigerAttention.
    Gate(NodeId),
    /// A LigerAttention layer.
    Liger {
        /// The `LigerAttention`.
        attn: NodeId,
        /// Its `LigerGate` (absent for ungated variants).
        gate: Option<NodeId>,
    },
    /// Softmax attention kept by a hybrid.
    Attention(NodeId),
}

impl Group {
    /// The nodes the group implements, in order.
    pub fn nodes(&self) -> Vec<NodeId> {
        match *self {
            Group::Norm { add, norm } => add.into_iter().chain([norm]).collect(),
            Group::Liger { attn, gate } => gate.into_iter().chain([attn]).collect(),
            Group::MaskRows { mul, .. } => vec![mul],
            Group::RopePair(a, b) => vec![a, b],
            Group::Embedding(n)
            | Group::Add(n)
            | Group::Linear(n)
            | Group::Lora(n)
            | Group::LmHead(n)
            | Group::Rope(n)
            | Group::SwiGlu(n)
            | Group::Gate(n)
            | Group::Attention(n) => vec![n],
        }
    }
}

fn onnx_type(g: &Graph, id: NodeId) -> Option<&str> {
    match &g.node(id)?.op {
        Op::Onnx(o) => Some(o.op_type.as_str()),
        _ => None,
    }
}

/// Follows `v` back through `Unsqueeze(·, [-1] or [2])` and `Cast` to a graph
/// input of rank 2; returns that input node and the chain's nodes.
fn mask_chain(g: &Graph, v: ValueRef) -> Option<(NodeId, Vec<NodeId>)> {
    let mut chain = Vec::new();
    let mut cur = v.node;
    let mut unsqueezed = false;
    loop {
        let node = g.node(cur)?;
        match &node.op {
            Op::Input { .. } => {
                let rank2 = node.outputs.first()?.rank() == Some(2);
                return (rank2 && unsqueezed).then_some((cur, chain));
            }
            Op::Onnx(o) if o.op_type == "Cast" => {}
            Op::Onnx(o) if o.op_type == "Unsqueeze" && !unsqueezed => {
                let ops = g.operands(cur);
                let axes: Vec<i64> = match ops.get(1) {
                    Some(a) => match &g.node(a.node)?.op {
                        Op::Const(t) => t.to_i64_vec(),
                        _ => return None,
                    },
                    None => match o.attrs.get("axes") {
                        Some(ligerc_ir::Attr::Ints(v)) => v.clone(),
                        _ => return None,
                    },
                };
                if axes != [-1] && axes != [2] {
                    return None;
                }
                unsqueezed = true;
                if let Some(a) = ops.get(1) {
                    chain.push(a.node);
                }
            }
            _ => return None,
        }
        chain.push(cur);
        cur = g.operands(cur).first()?.node;
    }
}

/// Groups the nodes of `graph` (see the module doc). Errors name the first node
/// the CUDA back end has no kernel for.
pub fn fuse(graph: &Graph) -> Result<Vec<Group>, CudaError> {
    let order = graph.topo_order()?;
    // Pass 1: padding-mask multiplies and the Cast/Unsqueeze chains only they use.
    let mut masks: Vec<(NodeId, ValueRef, NodeId, Vec<NodeId>)> = Vec::new();
    for &id in &order {
        if onnx_type(graph, id) != Some("Mul") {
            continue;
        }
        let ops = graph.operands(id);
        if ops.len() != 2 {
            continue;
        }
        for (x, m) in [(ops[0], ops[1]), (ops[1], ops[0])] {
            if let Some((input, chain)) = mask_chain(graph, m) {
                masks.push((id, x, input, chain));
                break;
            }
        }
    }
    let muls: HashSet<NodeId> = masks.iter().map(|m| m.0).collect();
    let mut absorbed: HashSet<NodeId> = HashSet::new();
    for &id in order.iter().rev() {
        let is_chain = masks.iter().any(|m| m.3.contains(&id));
        if is_chain
            && graph
                .users(id)
                .iter()
                .all(|(u, _, _)| muls.contains(u) || absorbed.contains(u))
        {
            absorbed.insert(id);
        }
    }
    let mut groups = Vec::new();
    for &id in &order {
        if absorbed.contains(&id) {
            continue;
        }
        let node = graph.try_node(id)?;
        let group = match &node.op {
            Op::Input { .. } | Op::Weight { .. } | Op::Const(_) => continue,
            Op::Embedding => Group::Embedding(id),
            Op::Linear => Group::Linear(id),
            Op::Lora { .. } => Group::Lora(id),
            Op::LmHead => Group::LmHead(id),
            Op::Rope(_) => Group::Rope(id),
            Op::SwiGlu => Group::SwiGlu(id),
            Op::Attention(_) => Group::Attention(id),
            Op::RmsNorm { .. } => Group::Norm {
                add: None,
                norm: id,
            },
            Op::LigerGate(_) => {
                let users = graph.users(id);
                let k = graph.operands(id).first().copied();
                let only_attention = !users.is_empty()
                    && !graph.outputs.iter().any(|o| o.value.node == id)
                    && users.iter().all(|&(u, _, slot)| {
                        slot == 5
                            && matches!(graph.node(u).map(|n| &n.op), Some(Op::LigerAttention(_)))
                            && graph.operands(u).get(1).copied() == k
                    });
                if only_attention {
                    absorbed.insert(id);
                    continue;
                }
                Group::Gate(id)
            }
            Op::LigerAttention(_) => {
                let gate =
                    graph.operands(id).get(5).map(|v| v.node).filter(|g| {
                        matches!(graph.node(*g).map(|n| &n.op), Some(Op::LigerGate(_)))
                    });
                Group::Liger { attn: id, gate }
            }
            Op::Onnx(o) if o.op_type == "Add" && graph.operands(id).len() == 2 => {
                let norm = graph.value_users(id.into()).into_iter().find(|&(u, slot)| {
                    slot == 0
                        && !absorbed.contains(&u)
                        && matches!(graph.node(u).map(|n| &n.op), Some(Op::RmsNorm { .. }))
                });
                match norm {
                    Some((n, _)) => {
                        absorbed.insert(n);
                        Group::Norm {
                            add: Some(id),
                            norm: n,
                        }
                    }
                    None => Group::Add(id),
                }
            }
            Op::Onnx(o) if o.op_type == "Mul" && muls.contains(&id) => {
                let (_, x, mask, _) =
                    masks.iter().find(|m| m.0 == id).cloned().ok_or_else(|| {
                        CudaError::Unsupported {
                            node: graph.describe(id),
                            reason: "internal: mask pattern lost".into(),
                        }
                    })?;
                Group::MaskRows { mul: id, x, mask }
            }
            Op::CrossEntropy { .. } | Op::Vjp(_) => {
                return Err(CudaError::Unsupported {
                    node: graph.describe(id),
                    reason: "training graphs (loss and gradient ops) are run by `ligerc finetune`, not emitted \
                             as an inference plan"
                        .into(),
                });
            }
            Op::Onnx(o) => {
                return Err(CudaError::Unsupported {
                    node: graph.describe(id),
                    reason: format!(
                        "the CUDA back end has no kernel for the generic ONNX op `{}` (it handles the high-level \
                         ops raise produces, residual Adds and the padding-mask multiply); run the raise pass, \
                         or use --emit onnx",
                        o.op_type
                    ),
                });
            }
        };
        groups.push(group);
    }
    Ok(pair_ropes(graph, groups))
}

/// Merges each `Rope` with the next `Rope` of the same frequencies (head dim, theta,
/// scaling) into one [`Group::RopePair`] at the second one's place, when nothing in
/// between (the second included) reads the first one's output.
fn pair_ropes(graph: &Graph, groups: Vec<Group>) -> Vec<Group> {
    let spec = |n: NodeId| match graph.node(n).map(|x| &x.op) {
        Some(Op::Rope(s)) => Some((s.head_dim, s.theta.to_bits(), s.scaling.clone())),
        _ => None,
    };
    let mut out: Vec<Option<Group>> = groups.into_iter().map(Some).collect();
    for i in 0..out.len() {
        let Some(Group::Rope(a)) = out[i] else {
            continue;
        };
        let key = spec(a);
        for j in i + 1..out.len() {
            let Some(g) = &out[j] else { continue };
            let reads_a = g
                .nodes()
                .iter()
                .any(|&n| graph.operands(n).iter().any(|v| v.node == a));
            if reads_a {
                break;
            }
            if let Group::Rope(b) = *g
                && spec(b) == key
            {
                out[j] = Some(Group::RopePair(a, b));
                out[i] = None;
                break;
            }
        }
    }
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ligerc_ir::text::parse;

    fn kinds(g: &Graph) -> Vec<String> {
        fuse(g)
            .unwrap()
            .iter()
            .map(|grp| {
                let names: Vec<String> = grp
                    .nodes()
                    .iter()
                    .map(|&n| g.node(n).unwrap().op.mnemonic())
                    .collect();
                names.join("+")
            })
            .collect()
    }

    #[test]
    fn gate_joins_the_attention_and_add_joins_the_norm() {
        let g = parse(
            r#"graph "block" {
  %x = input "x" : f32[batch, seq, 8]
  %wq = weight "q" : f32[8, 8]
  %wk = weight "k" : f32[4, 8]
  %wn = weight "n" : f32[8]
  %q = Linear(%x, %wq) : f32[batch, seq, 8]
  %k = Linear(%x, %wk) : f32[batch, seq, 4]
  %qr = Rope(%q) {head_dim = 4, heads = 2, theta = 10000.0} : f32[batch, seq, 8]
  %kr = Rope(%k) {head_dim = 4, heads = 1, theta = 10000.0} : f32[batch, seq, 4]
  %g = LigerGate(%k) {head_dim = 4, kv_heads = 1, normalizer = 16.0, variant = "gla"} : f32[batch, seq, 4]
  %a = LigerAttention(%q, %k, %k, %qr, %kr, %g) {head_dim = 4, heads = 2, kv_heads = 1, mix_linear = 0.5, mix_window = 0.5, variant = "gla", window = 64} : f32[batch, seq, 8]
  %s = onnx.Add(%x, %a) : f32[batch, seq, 8]
  %n = RmsNorm(%s, %wn) {eps = 1e-5} : f32[batch, seq, 8]
  output "y" = %n
  output "r" = %s
}"#,
        )
        .unwrap();
        assert_eq!(
            kinds(&g),
            [
                "Linear",
                "Linear",
                "Rope+Rope",
                "LigerGate+LigerAttention",
                "onnx.Add+RmsNorm"
            ]
        );
    }

    #[test]
    fn a_gate_with_other_users_is_also_materialised() {
        let g = parse(
            r#"graph "block" {
  %x = input "x" : f32[batch, seq, 4]
  %g = LigerGate(%x) {head_dim = 4, kv_heads = 1, normalizer = 16.0, variant = "gla"} : f32[batch, seq, 4]
  %a = LigerAttention(%x, %x, %x, %x, %x, %g) {head_dim = 4, heads = 1, kv_heads = 1, mix_linear = 0.5, mix_window = 0.5, variant = "gla", window = 4} : f32[batch, seq, 4]
  output "y" = %a
  output "gate" = %g
}"#,
        )
        .unwrap();
        assert_eq!(kinds(&g), ["LigerGate", "LigerGate+LigerAttention"]);
    }

    #[test]
    fn generic_ops_are_refused_by_name() {
        let g = parse(
            r#"graph "g" {
  %x = input "x" : f32[batch, seq, 4]
  %y = onnx.Softmax(%x) {axis = -1} : f32[batch, seq, 4]
  output "y" = %y
}"#,
        )
        .unwrap();
        let e = fuse(&g).unwrap_err().to_string();
        assert!(e.contains("Softmax") && e.contains("node"), "{e}");
    }

    #[test]
    fn ropes_pair_only_with_equal_frequencies_and_no_reader_between() {
        let g = parse(
            r#"graph "ropes" {
  %x = input "x" : f32[batch, seq, 8]
  %qr = Rope(%x) {head_dim = 4, heads = 2, theta = 10000.0} : f32[batch, seq, 8]
  %other = Rope(%x) {head_dim = 4, heads = 2, theta = 500000.0} : f32[batch, seq, 8]
  %s = onnx.Add(%qr, %x) : f32[batch, seq, 8]
  %kr = Rope(%x) {head_dim = 4, heads = 2, theta = 10000.0} : f32[batch, seq, 8]
  %k2 = Rope(%x) {head_dim = 4, heads = 2, theta = 10000.0} : f32[batch, seq, 8]
  output "a" = %s
  output "b" = %other
  output "c" = %kr
  output "d" = %k2
}"#,
        )
        .unwrap();
        // %qr's reader (the Add) comes before the next Rope of its theta: no pair; %other has
        // no partner of its theta; %kr and %k2 pair.
        assert_eq!(kinds(&g), ["Rope", "Rope", "onnx.Add", "Rope+Rope"]);
    }
}
