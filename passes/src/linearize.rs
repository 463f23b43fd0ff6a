//! `linearize`: softmax attention → Liger Attention (LIGER.md §1–§3).
//!
//! For every causal `Attention(Rope(q), Rope(k), v [, padding_mask])`:
//!
//! ```text
//! gate = LigerGate(k)                                      (gated variants; no new weights)
//! o    = LigerAttention(q, k, v', Rope(q), Rope(k) [, gate])
//! ```
//!
//! where `q`, `k` are the un-rotated projections (the Rope operands) and `v'`
//! is `v` with padded positions zeroed (`v ⊙ mask[..., None]`, as upstream
//! Liger does) when the attention had a padding mask. The key projection
//! feeds both the key and the gate. Layers listed by `keep-softmax` keep
//! their softmax attention (the inter-layer hybrid). Graphs still holding
//! decomposed attention are raised first.
//!
//! Options (`--pass linearize:key=value,…`, or the CLI flags `--variant`,
//! `--window`, `--mix`, `--keep-softmax`, `--slots`):
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `variant` | `gla` | `gla`, `hgrn2`, `gsa`, `retention`, `linear`, `swa-only` |
//! | `window` | `64` | a query sees itself and the `window` previous tokens (`window + 1` keys) |
//! | `mix` | `0.5/0.5` (`0/1` for `swa-only`) | `recurrent/window` weights |
//! | `keep-softmax` | none | `7/15/23` (0-based layers) or `every:8` (layers 7, 15, …) |
//! | `slots` | `64` | GSA slots |
//! | `normalizer` | variant's (16; HGRN2 1) | gate `logsigmoid(k)/normalizer` |
//! | `allow-partial` | `false` | let the implicit raise skip blocks it cannot raise |

use std::collections::BTreeSet;

use ligerc_ir::{
    Attr, Attrs, DType, Dim, GateSpec, Graph, LigerSpec, LigerVariant, NodeId, OnnxOp, Op,
    TensorData, TensorType, ValueRef,
};

use crate::rewrite::{Patch, PatchValue, apply_patch};
use crate::{Pass, PassContext, PassError, Raise};

/// Which layers keep softmax attention.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum KeepSoftmax {
    /// Every layer is linearized.
    #[default]
    None,
    /// These 0-based layer indices keep softmax attention.
    Layers(BTreeSet<usize>),
    /// Every K-th layer keeps softmax attention: layers K−1, 2K−1, …
    Every(usize),
}

impl KeepSoftmax {
    fn keeps(&self, layer: usize) -> bool {
        match self {
            KeepSoftmax::None => false,
            KeepSoftmax::Layers(s) => s.contains(&layer),
            KeepSoftmax::Every(k) => *k > 0 && (layer + 1).is_multiple_of(*k),
        }
    }
}

/// The linearize pass and its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Linearize {
    /// The recurrence.
    pub variant: LigerVariant,
    /// Earlier keys a query sees in the window branch.
    pub window: usize,
    /// Weight of the recurrent branch.
    pub mix_linear: f64,
    /// Weight of the window branch.
    pub mix_window: f64,
    /// Layers that keep softmax attention.
    pub keep_softmax: KeepSoftmax,
    /// GSA slots.
    pub slots: usize,
    /// Gate normalizer.
    pub normalizer: f64,
    /// Continue when the implicit raise cannot raise every attention block.
    pub allow_partial: bool,
}

impl Default for Linearize {
    fn default() -> Self {
        Linearize::for_variant(LigerVariant::Gla)
    }
}

impl Linearize {
    /// The defaults of LIGER.md §4 for `variant`.
    pub fn for_variant(variant: LigerVariant) -> Self {
        let swa_only = variant == LigerVariant::SwaOnly;
        Linearize {
            variant,
            window: 64,
            mix_linear: if swa_only { 0.0 } else { 0.5 },
            mix_window: if swa_only { 1.0 } else { 0.5 },
            keep_softmax: KeepSoftmax::None,
            slots: 64,
            normalizer: variant.default_normalizer(),
            allow_partial: false,
        }
    }

    /// Builds the pass from `key=value` options (see the module doc).
    pub fn from_options(options: &[(String, String)]) -> Result<Self, PassError> {
        let usage = |m: String| PassError::Usage(format!("pass `linearize`: {m}"));
        let variant = match options.iter().find(|(k, _)| k == "variant") {
            Some((_, v)) => v.parse::<LigerVariant>().map_err(usage)?,
            None => LigerVariant::Gla,
        };
        let mut p = Linearize::for_variant(variant);
        for (k, v) in options {
            let num = |what: &str| -> Result<f64, PassError> {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| usage(format!("{what} `{v}` is not a number")))
            };
            match k.as_str() {
                "variant" => {}
                "window" => {
                    p.window = v
                        .parse()
                        .map_err(|_| usage(format!("window `{v}` is not a non-negative integer")))?
                }
                "slots" => {
                    p.slots =
                        v.parse().ok().filter(|&s| s > 0).ok_or_else(|| {
                            usage(format!("slots `{v}` is not a positive integer"))
                        })?
                }
                "normalizer" => {
                    p.normalizer = num("normalizer")?;
                    if p.normalizer <= 0.0 {
                        return Err(usage("normalizer must be positive".into()));
                    }
                }
                "mix" => {
                    let parts: Vec<&str> = v.split(['/', ',']).collect();
                    let [a, b] = parts.as_slice() else {
                        return Err(usage(format!("mix `{v}` is not RECURRENT/WINDOW")));
                    };
                    let parse =
                        |s: &str| s.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0);
                    match (parse(a), parse(b)) {
                        (Some(a), Some(b)) => (p.mix_linear, p.mix_window) = (a, b),
                        _ => {
                            return Err(usage(format!("mix `{v}` needs two non-negative numbers")));
                        }
                    }
                }
                "keep-softmax" => p.keep_softmax = parse_keep(v).map_err(usage)?,
                "allow-partial" => p.allow_partial = crate::registry::parse_bool(k, v)?,
                other => {
                    return Err(usage(format!(
                        "no option `{other}` (options: variant, window, mix, keep-softmax, slots, normalizer, allow-partial)"
                    )));
                }
            }
        }
        if variant == LigerVariant::SwaOnly && p.mix_linear != 0.0 {
            return Err(usage(
                "swa-only has no recurrent branch: its mix must be 0/W".into(),
            ));
        }
        Ok(p)
    }

    fn describe(&self) -> String {
        format!(
            "Liger-{} (window {}: {} keys, mix {}/{}{})",
            self.variant,
            self.window,
            self.window + 1,
            self.mix_linear,
            self.mix_window,
            if self.variant == LigerVariant::Gsa {
                format!(", {} slots", self.slots)
            } else {
                String::new()
            }
        )
    }
}

fn parse_keep(v: &str) -> Result<KeepSoftmax, String> {
    if v.is_empty() || v == "none" {
        return Ok(KeepSoftmax::None);
    }
    if let Some(k) = v.strip_prefix("every:") {
        return k
            .parse()
            .ok()
            .filter(|&k| k > 0)
            .map(KeepSoftmax::Every)
            .ok_or_else(|| format!("keep-softmax `{v}`: every:K needs K ≥ 1"));
    }
    v.split(['/', ','])
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("keep-softmax `{v}`: `{s}` is not a layer index"))
        })
        .collect::<Result<BTreeSet<_>, _>>()
        .map(KeepSoftmax::Layers)
}

fn attention_nodes(g: &Graph) -> Result<Vec<NodeId>, PassError> {
    let order = g.topo_order().map_err(|e| PassError::Failed {
        pass: "linearize".into(),
        message: e.to_string(),
    })?;
    Ok(order
        .into_iter()
        .filter(|&id| matches!(g.node(id).map(|n| &n.op), Some(Op::Attention(_))))
        .collect())
}

fn has_decomposed_attention(g: &Graph) -> bool {
    g.node_ids()
        .into_iter()
        .any(|id| matches!(g.node(id).map(|n| &n.op), Some(Op::Onnx(o)) if o.op_type == "Softmax" || o.op_type == "Attention"))
}

fn onnx(op_type: &str, attrs: Attrs) -> Op {
    Op::Onnx(OnnxOp {
        op_type: op_type.into(),
        attrs,
    })
}

impl Pass for Linearize {
    fn name(&self) -> &str {
        "linearize"
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<(), PassError> {
        if has_decomposed_attention(graph) {
            Raise {
                allow_partial: self.allow_partial,
            }
            .run(graph, cx)?;
        }
        let fail = |m: String| PassError::Failed {
            pass: "linearize".into(),
            message: m,
        };
        let nodes = attention_nodes(graph)?;
        if nodes.is_empty() {
            return Err(fail("the graph has no attention layer to linearize".into()));
        }
        if let KeepSoftmax::Layers(s) = &self.keep_softmax
            && let Some(bad) = s.iter().find(|&&l| l >= nodes.len())
        {
            return Err(PassError::Usage(format!(
                "keep-softmax names layer {bad}, but the model has {} layers",
                nodes.len()
            )));
        }
        let mut kept = Vec::new();
        for (layer, id) in nodes.into_iter().enumerate() {
            if self.keep_softmax.keeps(layer) {
                kept.push(layer);
                continue;
            }
            let patch = self
                .layer_patch(graph, id)
                .map_err(|m| fail(format!("layer {layer}, {}: {m}", graph.describe(id))))?;
            apply_patch(graph, patch);
        }
        graph.eliminate_dead_nodes();
        let total = attention_nodes(graph)?.len()
            + graph
                .node_ids()
                .into_iter()
                .filter(|&id| matches!(graph.node(id).map(|n| &n.op), Some(Op::LigerAttention(_))))
                .count();
        cx.notes.push(format!(
            "linearize: {} of {total} attention layers → {}{}",
            total - kept.len(),
            self.describe(),
            if kept.is_empty() {
                String::new()
            } else {
                format!("; softmax kept in layers {kept:?}")
            }
        ));
        Ok(())
    }
}

impl Linearize {
    fn layer_patch(&self, g: &Graph, id: NodeId) -> Result<Patch, String> {
        let Some(Op::Attention(a)) = g.node(id).map(|n| n.op.clone()) else {
            return Err("not an attention node".into());
        };
        if !a.causal {
            return Err("only causal attention can be linearized".into());
        }
        let ops = g.operands(id);
        let (q_rot, k_rot, v) = match ops.as_slice() {
            [q, k, v, ..] => (*q, *k, *v),
            _ => return Err("attention without q, k, v".into()),
        };
        let unrotated = |r: ValueRef, what: &str| -> Result<ValueRef, String> {
            match g.node(r.node).map(|n| &n.op) {
                Some(Op::Rope(_)) => g
                    .operands(r.node)
                    .first()
                    .copied()
                    .ok_or_else(|| format!("{what} rope without operand")),
                _ => Err(format!(
                    "the {what} operand is not a Rope node; Liger needs the un-rotated projection"
                )),
            }
        };
        let q = unrotated(q_rot, "query")?;
        let k = unrotated(k_rot, "key")?;
        let mut p = Patch::default();
        let kv_width = a.kv_heads * a.head_dim;
        let out_ty = g
            .node(id)
            .and_then(|n| n.outputs.first().cloned())
            .ok_or("attention without a type")?;
        let batch_seq = |w: usize| -> TensorType {
            let mut dims = out_ty
                .shape
                .clone()
                .unwrap_or_else(|| vec![Dim::Unknown, Dim::Unknown, Dim::Unknown]);
            if let Some(last) = dims.last_mut() {
                *last = Dim::Fixed(w);
            }
            TensorType::new(DType::F32, dims)
        };
        // Zero padded positions' values (upstream: v ← v ⊙ attention_mask[:, :, None]).
        let v = match ops.get(3) {
            None => PatchValue::Graph(v),
            Some(&mask) => {
                let mut to = Attrs::new();
                to.insert("to".into(), Attr::Int(1));
                let m = p.add(
                    onnx("Cast", to),
                    vec![PatchValue::Graph(mask)],
                    TensorType::unranked(DType::F32),
                );
                let axes = p.add(
                    Op::Const(TensorData::from_i64(vec![1], &[-1]).map_err(|e| e.to_string())?),
                    vec![],
                    TensorType::fixed(DType::I64, &[1]),
                );
                let m = p.add(
                    onnx("Unsqueeze", Attrs::new()),
                    vec![m, axes],
                    TensorType::unranked(DType::F32),
                );
                p.add(
                    onnx("Mul", Attrs::new()),
                    vec![PatchValue::Graph(v), m],
                    batch_seq(kv_width),
                )
            }
        };
        let mut operands = vec![
            PatchValue::Graph(q),
            PatchValue::Graph(k),
            v,
            PatchValue::Graph(q_rot),
            PatchValue::Graph(k_rot),
        ];
        if self.variant.has_gate() {
            let gate = GateSpec {
                variant: self.variant,
                kv_heads: a.kv_heads,
                head_dim: a.head_dim,
                slots: self.slots,
                normalizer: self.normalizer,
            };
            let width = a.kv_heads * gate.width();
            operands.push(p.add(
                Op::LigerGate(gate),
                vec![PatchValue::Graph(k)],
                batch_seq(width),
            ));
        }
        if self.variant == LigerVariant::Gsa && self.slots > a.head_dim {
            return Err(format!(
                "GSA slots ({}) cannot exceed head_dim ({})",
                self.slots, a.head_dim
            ));
        }
        let spec = LigerSpec {
            variant: self.variant,
            heads: a.heads,
            kv_heads: a.kv_heads,
            head_dim: a.head_dim,
            window: self.window,
            mix_window: self.mix_window,
            mix_linear: self.mix_linear,
            slots: self.slots,
        };
        let l = p.add(Op::LigerAttention(spec), operands, out_ty);
        p.replace.push((id.into(), l));
        Ok(p)
    }
}
