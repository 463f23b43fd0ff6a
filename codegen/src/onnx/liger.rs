//! Liger ops as ONNX model-local functions (LIGER.md §2–§3).
//!
//! `LigerGate` and `LigerAttention` become nodes of the custom domain
//! `ai.ligerc` (opset 1) whose `op_type` is the op's name and whose attributes
//! are the op's spec (the same keys the text IR prints). Each distinct spec
//! gets its own [`FunctionProto`] in `ModelProto.functions`: name = op type,
//! `overload` = a key built from the spec (`gla_h4_kv2_d16_w64_mix0.5_0.5`),
//! body = standard-domain ops with the spec's constants baked in. The function
//! declares the spec attributes (`attribute_proto`, defaults = the baked
//! values) so that the node's attributes are legal; the body does not read
//! them. A runtime that knows `ai.ligerc` can match the node and fuse it;
//! onnxruntime and every other runtime inline the body. Overloads need IR
//! version 10, so a model holding functions is written with IR ≥ 10.
//!
//! ## Function bodies
//!
//! Shapes: `q [B,T,H·D]`, `k`, `v [B,T,KV·D]`, `G = H/KV`; a query head
//! `h = j·G + g` reads KV head `j`. All arithmetic is f32.
//!
//! - **LigerGate** `(k_raw) → gate`: GLA/HGRN2 `logsigmoid(k)/n` per channel;
//!   GSA `k` per head times the `AdaptiveAvgPool1d` matrix `[D, M]`, then
//!   `logsigmoid/n`; retention the per-head mean (times a `[D, 1]` matrix of
//!   `1/D`), then `logsigmoid/n`. `logsigmoid(x) = min(x, 0) − ln(1 + e^{−|x|})`.
//! - **Feature maps and gates** (before the recurrence, for all tokens at
//!   once): `q̃ = Softmax_D(q)` per query head and `k̃ = Softmax_D(k)` per KV
//!   head (GLA, retention, linear); HGRN2 `q̃ = Softmax_D(q)` and key `1 − α`;
//!   GSA raw q, k. Decay `α = Exp(gate)` (retention: one per head, broadcast
//!   over the state's rows; linear: none). `1 − α` is computed as
//!   `−tanh(γ/2)·(1 + α)`, exact near `γ = 0` where `1 − Exp(γ)` cancels.
//! - **The recurrence** is an ONNX `Scan` over the time axis (axis 1 of the
//!   `[B,T,KV,…]` operands; linear in T). Its state is one matrix per
//!   (batch row, KV head), shared by the group's query heads exactly as
//!   upstream's `repeat_kv`'d states are; it starts at zero. One step:
//!
//!   ```text
//!   keyed (GLA, HGRN2, retention, linear), S [B,KV,D,D]:
//!     S ← S ⊙ α[…, :, None] + k̃[…, :, None] ⊙ v[…, None, :]     (Mul/Add: the outer product)
//!     o = q̃ [B,KV,G,D] · S                                        (MatMul)
//!   GSA, Hk [B,KV,D,M], Hv [B,KV,M,D], s = 1 − α:
//!     Hk ← Hk ⊙ α[…, None, :] + k[…, :, None] ⊙ s[…, None, :]
//!     p  = Softmax_M(q · Hk)
//!     Hv ← Hv ⊙ α[…, :, None] + s[…, :, None] ⊙ v[…, None, :]
//!     o  = p · Hv
//!   ```
//!
//!   The Scan's stacked outputs (`scan_output_axes = [1]`) are `[B,T,KV,G,D]`,
//!   i.e. `[B,T,H·D]` after a Reshape.
//! - **The window branch**: rotated q and k split into heads (q as
//!   `[B,KV,G,T,D]`, k and v as `[B,KV,1,T,D]`, so GQA is a broadcast, not a
//!   copy), scores `q·kᵀ/√D`, the band mask `t − window ≤ s ≤ t` applied with
//!   `Where(mask, scores, f32::MIN)`, `Softmax`, `·v`. This part is quadratic
//!   in T, like any exported attention.
//! - **The mix**: `mix_window · window + mix_linear · recurrence` (swa-only:
//!   the window term alone).
//!
//! The step form ([`super::step`]) reuses the same step functions for one token
//! with the state as an input. `Lora` nodes need no function: they become
//! `MatMul(x, Wᵀ) + (alpha/rank) · MatMul(MatMul(x, Aᵀ), Bᵀ)` (`lora.rs`).

use std::collections::BTreeMap;

use ligerc_frontends::onnx_proto::{
    AttributeProto, FunctionProto, ModelProto, NodeProto, OperatorSetIdProto,
    attribute_proto::AttributeType,
};
use ligerc_ir::{GateSpec, Graph, LigerSpec, LigerVariant, NodeId, Op};

use super::body::{Body, NodeSink};
use super::builder::{OnnxBuilder, attr, int_attr};
use super::export::ExportError;
use super::step::{OnnxForm, StepIo};

/// The custom domain of Liger ops.
pub const DOMAIN: &str = "ai.ligerc";
/// The IR version that introduced function overloads.
const OVERLOAD_IR_VERSION: i64 = 10;

pub(super) fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    attr(name, &ligerc_ir::Attr::Ints(v.to_vec()))
}

/// The high-level ops this module exports, and the model-local functions
/// they need. One per export.
pub(super) struct Extensions {
    form: OnnxForm,
    opset: i64,
    functions: BTreeMap<(String, String), FunctionProto>,
    step: StepIo,
}

impl Extensions {
    /// Settings for one export of a graph at `opset`.
    pub(super) fn new(form: OnnxForm, opset: i64) -> Self {
        Extensions {
            form,
            opset,
            functions: BTreeMap::new(),
            step: StepIo::default(),
        }
    }

    /// Emits node `id` (its op `op`, operand names, result names) if this
    /// module owns its op in the current form; returns whether it did.
    pub(super) fn emit(
        &mut self,
        b: &mut OnnxBuilder,
        graph: &Graph,
        id: NodeId,
        operands: &[String],
        outputs: &[String],
    ) -> Result<bool, ExportError> {
        let op = &graph.try_node(id)?.op;
        let out = outputs.first().ok_or_else(|| {
            ExportError::Unsupported(format!("{} has no result", graph.describe(id)))
        })?;
        let at = |e: ExportError| match e {
            ExportError::Unsupported(m) => {
                ExportError::Unsupported(format!("{}: {m}", graph.describe(id)))
            }
            e => e,
        };
        match (op, self.form) {
            (Op::LigerGate(spec), _) => self.gate(b, spec, operands, out).map_err(at)?,
            (Op::LigerAttention(spec), OnnxForm::Full) => {
                self.attention(b, spec, operands, out).map_err(at)?
            }
            (Op::LigerAttention(spec), OnnxForm::Step) => {
                check_attention(spec).map_err(at)?;
                let key = attention_key(spec);
                let opset = self.opset;
                self.functions
                    .entry(("LigerAttentionStep".into(), key.clone()))
                    .or_insert_with(|| super::step::attention_step_function(spec, &key, opset));
                self.step.liger_attention(b, spec, &key, operands, out);
            }
            (Op::Lora { alpha }, _) => {
                super::lora::lora(b, graph, id, *alpha, operands, out).map_err(at)?
            }
            (Op::Rope(spec), OnnxForm::Step) => {
                self.step.rope(b, spec, operands, out).map_err(at)?
            }
            (Op::Attention(spec), OnnxForm::Step) => {
                self.step.attention(b, spec, operands, out).map_err(at)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Adds the functions, the `ai.ligerc` opset and (step form) the state
    /// inputs and outputs to `model`.
    pub(super) fn finish(self, model: &mut ModelProto) {
        if self.form == OnnxForm::Step {
            self.step.finish(model);
        }
        if self.functions.is_empty() {
            return;
        }
        model.opset_import.push(OperatorSetIdProto {
            domain: Some(DOMAIN.into()),
            version: Some(1),
        });
        model.ir_version = Some(model.ir_version().max(OVERLOAD_IR_VERSION));
        model.functions = self.functions.into_values().collect();
    }

    fn gate(
        &mut self,
        b: &mut OnnxBuilder,
        spec: &GateSpec,
        operands: &[String],
        out: &str,
    ) -> Result<(), ExportError> {
        check_gate(spec)?;
        let key = gate_key(spec);
        let attrs = spec_attrs(&Op::LigerGate(spec.clone()));
        let opset = self.opset;
        self.functions
            .entry(("LigerGate".into(), key.clone()))
            .or_insert_with(|| {
                let mut body = Body::new("");
                let g = gate_body(&mut body, spec, "k_raw");
                body.op_named("Identity", &[&g], vec![], &["gate".into()]);
                function(
                    "LigerGate",
                    &key,
                    &["k_raw"],
                    &["gate"],
                    attrs.clone(),
                    body,
                    opset,
                    "LigerGate: log-space forget gate from the key projection",
                )
            });
        b.nodes
            .push(call("LigerGate", &key, attrs, operands, &[out.to_string()]));
        Ok(())
    }

    fn attention(
        &mut self,
        b: &mut OnnxBuilder,
        spec: &LigerSpec,
        operands: &[String],
        out: &str,
    ) -> Result<(), ExportError> {
        check_attention(spec)?;
        let key = attention_key(spec);
        let attrs = spec_attrs(&Op::LigerAttention(spec.clone()));
        let opset = self.opset;
        self.functions
            .entry(("LigerAttention".into(), key.clone()))
            .or_insert_with(|| {
                let mut body = Body::new("");
                let o = attention_body(&mut body, spec);
                body.op_named("Identity", &[&o], vec![], &["o".into()]);
                let inputs = attention_inputs(spec);
                function(
                    "LigerAttention",
                    &key,
                    &inputs,
                    &["o"],
                    attrs.clone(),
                    body,
                    opset,
                    "LigerAttention: mix_window · SWA + mix_linear · gated recurrence",
                )
            });
        b.nodes.push(call(
            "LigerAttention",
            &key,
            attrs,
            operands,
            &[out.to_string()],
        ));
        Ok(())
    }
}

/// The op's spec as ONNX attributes.
pub(super) fn spec_attrs(op: &Op) -> Vec<AttributeProto> {
    op.attrs().iter().map(|(k, v)| attr(k, v)).collect()
}

/// A node of domain `ai.ligerc` calling function `name`/`overload`.
pub(super) fn call(
    name: &str,
    overload: &str,
    attrs: Vec<AttributeProto>,
    inputs: &[String],
    outputs: &[String],
) -> NodeProto {
    NodeProto {
        input: inputs.to_vec(),
        output: outputs.to_vec(),
        name: Some(format!(
            "{name}_{}",
            outputs.first().map_or("", String::as_str)
        )),
        op_type: Some(name.to_string()),
        domain: Some(DOMAIN.into()),
        overload: Some(overload.to_string()),
        attribute: attrs,
        ..Default::default()
    }
}

/// A function of domain `ai.ligerc` whose body is `body` (standard ops at `opset`).
#[allow(clippy::too_many_arguments)]
pub(super) fn function(
    name: &str,
    overload: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
    body: Body,
    opset: i64,
    doc: &str,
) -> FunctionProto {
    FunctionProto {
        name: Some(name.to_string()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute_proto: attrs,
        node: body.nodes,
        doc_string: Some(format!(
            "{doc} ({overload}); generated by ligerc, constants baked in"
        )),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        domain: Some(DOMAIN.into()),
        overload: Some(overload.to_string()),
        ..Default::default()
    }
}

/// The function inputs of LigerAttention (the IR operands, in order).
pub(super) fn attention_inputs(spec: &LigerSpec) -> Vec<&'static str> {
    let mut v = vec!["q", "k", "v", "q_rot", "k_rot"];
    if spec.variant.has_gate() {
        v.push("gate");
    }
    v
}

fn check_gate(spec: &GateSpec) -> Result<(), ExportError> {
    if !spec.variant.has_gate() || spec.kv_heads == 0 || spec.head_dim == 0 {
        return Err(ExportError::Unsupported(format!(
            "LigerGate {spec:?} is not a valid gate"
        )));
    }
    if spec.variant == LigerVariant::Gsa && !(1..=spec.head_dim).contains(&spec.slots) {
        return Err(ExportError::Unsupported(format!(
            "LigerGate: GSA needs 1..={} slots, has {}",
            spec.head_dim, spec.slots
        )));
    }
    if !(spec.normalizer.is_finite() && spec.normalizer > 0.0) {
        return Err(ExportError::Unsupported(format!(
            "LigerGate: normalizer {} must be finite and positive",
            spec.normalizer
        )));
    }
    Ok(())
}

/// Checks the sizes of a LigerAttention spec.
pub(super) fn check_attention(spec: &LigerSpec) -> Result<(), ExportError> {
    if spec.kv_heads == 0 || spec.head_dim == 0 || !spec.heads.is_multiple_of(spec.kv_heads) {
        return Err(ExportError::Unsupported(format!(
            "LigerAttention needs heads ({}) a multiple of kv_heads ({}) and head_dim ({}) > 0",
            spec.heads, spec.kv_heads, spec.head_dim
        )));
    }
    if spec.variant == LigerVariant::Gsa && !(1..=spec.head_dim).contains(&spec.slots) {
        return Err(ExportError::Unsupported(format!(
            "LigerAttention: GSA needs 1..={} slots, has {}",
            spec.head_dim, spec.slots
        )));
    }
    if !(spec.mix_window.is_finite() && spec.mix_linear.is_finite()) {
        return Err(ExportError::Unsupported(
            "LigerAttention: mix weights must be finite".into(),
        ));
    }
    Ok(())
}

fn gate_key(s: &GateSpec) -> String {
    let mut k = format!(
        "{}_kv{}_d{}_n{}",
        s.variant, s.kv_heads, s.head_dim, s.normalizer
    );
    if s.variant == LigerVariant::Gsa {
        k.push_str(&format!("_m{}", s.slots));
    }
    k
}

/// The overload key of a LigerAttention spec.
pub(super) fn attention_key(s: &LigerSpec) -> String {
    let mut k = format!(
        "{}_h{}_kv{}_d{}_w{}_mix{}_{}",
        s.variant, s.heads, s.kv_heads, s.head_dim, s.window, s.mix_linear, s.mix_window
    );
    if s.variant == LigerVariant::Gsa {
        k.push_str(&format!("_m{}", s.slots));
    }
    k
}

/// `AdaptiveAvgPool1d(D → M)` as a `[D, M]` matrix: bin `i` averages channels
/// `⌊i·D/M⌋ .. ⌈(i+1)·D/M⌉`.
fn pool_matrix(d: usize, m: usize) -> Vec<f32> {
    let mut p = vec![0.0f32; d * m];
    for i in 0..m {
        let (lo, hi) = (i * d / m, ((i + 1) * d).div_ceil(m));
        for c in lo..hi {
            p[c * m + i] = 1.0 / (hi - lo) as f32;
        }
    }
    p
}

/// `log σ(x) = min(x, 0) − ln(1 + e^{−|x|})`.
fn logsigmoid<S: NodeSink>(b: &mut S, x: &str) -> String {
    let zero = b.floats("zero", &[], &[0.0]);
    let one = b.floats("one", &[], &[1.0]);
    let lo = b.op("Min", &[x, &zero], vec![], "x_neg");
    let abs = b.op("Abs", &[x], vec![], "abs");
    let nabs = b.op("Neg", &[&abs], vec![], "neg_abs");
    let e = b.op("Exp", &[&nabs], vec![], "exp");
    let e1 = b.op("Add", &[&e, &one], vec![], "one_plus");
    let l = b.op("Log", &[&e1], vec![], "log1p");
    b.op("Sub", &[&lo, &l], vec![], "logsigmoid")
}

/// The gate of `k_raw [B,T,KV·D]` → `[B,T,KV·width]` (see the module doc).
fn gate_body<S: NodeSink>(b: &mut S, spec: &GateSpec, k: &str) -> String {
    let (kv, d) = (spec.kv_heads as i64, spec.head_dim as i64);
    let width = spec.width() as i64;
    let x = match spec.variant {
        LigerVariant::Gsa | LigerVariant::Retention => {
            let heads = b.ints("heads_shape", &[0, 0, kv, d]);
            let kh = b.op("Reshape", &[k, &heads], vec![], "k_heads");
            let pool = if spec.variant == LigerVariant::Gsa {
                pool_matrix(spec.head_dim, spec.slots)
            } else {
                vec![1.0 / spec.head_dim as f32; spec.head_dim]
            };
            let pool = b.floats("pool", &[d, width], &pool);
            b.op("MatMul", &[&kh, &pool], vec![], "pooled")
        }
        _ => k.to_string(),
    };
    let ls = logsigmoid(b, &x);
    let n = b.floats("normalizer", &[], &[spec.normalizer as f32]);
    let g = b.op("Div", &[&ls, &n], vec![], "gate");
    let merge = b.ints("merge_shape", &[0, 0, kv * width]);
    b.op("Reshape", &[&g, &merge], vec![], "gate_flat")
}

/// The recurrence's operands for all tokens (full form, `lead = [0, 0]`:
/// `[B,T,KV,…]`) or one token (step form, `lead = [0]`: `[B,KV,…]`).
pub(super) struct Prepared {
    /// Queries `[…,KV,G,D]`: feature-mapped, raw for GSA.
    pub q: String,
    /// Keys `[…,KV,D]`: feature-mapped, `1 − α` for HGRN2, raw for GSA.
    pub k: String,
    /// Values `[…,KV,D]`.
    pub v: String,
    /// Decay `α = e^γ` `[…,KV,width]` (none for linear).
    pub decay: Option<String>,
    /// GSA's slot writes `s = 1 − α` `[…,KV,M]`.
    pub slot_write: Option<String>,
}

fn softmax_last<S: NodeSink>(b: &mut S, x: &str, stem: &str) -> String {
    b.op("Softmax", &[x], vec![int_attr("axis", -1)], stem)
}

/// `1 − e^γ = −tanh(γ/2)·(1 + e^γ)`, given `γ` and `α = e^γ`.
fn one_minus_exp<S: NodeSink>(b: &mut S, gate: &str, decay: &str) -> String {
    let half = b.floats("half", &[], &[0.5]);
    let one = b.floats("one", &[], &[1.0]);
    let h = b.op("Mul", &[gate, &half], vec![], "half_gate");
    let t = b.op("Tanh", &[&h], vec![], "tanh");
    let a1 = b.op("Add", &[decay, &one], vec![], "one_plus_decay");
    let p = b.op("Mul", &[&t, &a1], vec![], "neg_one_minus");
    b.op("Neg", &[&p], vec![], "one_minus_decay")
}

/// Feature maps, keys and decays (see the module doc).
pub(super) fn prepare<S: NodeSink>(
    b: &mut S,
    spec: &LigerSpec,
    lead: &[i64],
    q: &str,
    k: &str,
    v: &str,
    gate: Option<&str>,
) -> Prepared {
    let (kv, d) = (spec.kv_heads as i64, spec.head_dim as i64);
    let g = (spec.heads / spec.kv_heads) as i64;
    let width = spec.variant.gate_width(spec.head_dim, spec.slots) as i64;
    let shape = |b: &mut S, tail: &[i64], stem: &str| b.ints(stem, &[lead, tail].concat());
    let qs = shape(b, &[kv, g, d], "q_shape");
    let kvs = shape(b, &[kv, d], "kv_shape");
    let gs = shape(b, &[kv, width], "gate_shape");
    let qh = b.op("Reshape", &[q, &qs], vec![], "q_heads");
    let kh = b.op("Reshape", &[k, &kvs], vec![], "k_heads");
    let vh = b.op("Reshape", &[v, &kvs], vec![], "v_heads");
    let (gamma, decay) = match gate {
        Some(gate) if spec.variant.has_gate() => {
            let gh = b.op("Reshape", &[gate, &gs], vec![], "gate_heads");
            let a = b.op("Exp", &[&gh], vec![], "decay");
            (Some(gh), Some(a))
        }
        _ => (None, None),
    };
    let write = match (&gamma, &decay) {
        (Some(gm), Some(a)) if matches!(spec.variant, LigerVariant::Hgrn2 | LigerVariant::Gsa) => {
            Some(one_minus_exp(b, gm, a))
        }
        _ => None,
    };
    match spec.variant {
        LigerVariant::Gsa => Prepared {
            q: qh,
            k: kh,
            v: vh,
            decay,
            slot_write: write,
        },
        LigerVariant::Hgrn2 => {
            let qf = softmax_last(b, &qh, "q_feat");
            Prepared {
                q: qf,
                k: write.unwrap_or(kh),
                v: vh,
                decay,
                slot_write: None,
            }
        }
        _ => {
            let qf = softmax_last(b, &qh, "q_feat");
            let kf = softmax_last(b, &kh, "k_feat");
            Prepared {
                q: qf,
                k: kf,
                v: vh,
                decay,
                slot_write: None,
            }
        }
    }
}

/// One keyed step: `S ← S ⊙ α[…,:,None] + k[…,:,None] ⊙ v[…,None,:]`,
/// `o = q · S`. Shapes `S [B,KV,D,D]`, `q [B,KV,G,D]`, `k`, `v [B,KV,D]`,
/// `α [B,KV,D or 1]`. Returns `(S, o)`.
pub(super) fn keyed_step<S: NodeSink>(
    b: &mut S,
    state: &str,
    q: &str,
    k: &str,
    v: &str,
    decay: Option<&str>,
) -> (String, String) {
    let last = b.ints("axis_last", &[-1]);
    let second = b.ints("axis_second_last", &[-2]);
    let kc = b.op("Unsqueeze", &[k, &last], vec![], "k_col");
    let vr = b.op("Unsqueeze", &[v, &second], vec![], "v_row");
    let kv = b.op("Mul", &[&kc, &vr], vec![], "k_outer_v");
    let decayed = match decay {
        Some(a) => {
            let ac = b.op("Unsqueeze", &[a, &last], vec![], "decay_col");
            b.op("Mul", &[state, &ac], vec![], "state_decayed")
        }
        None => state.to_string(),
    };
    let s = b.op("Add", &[&decayed, &kv], vec![], "state_next");
    let o = b.op("MatMul", &[q, &s], vec![], "recurrent_out");
    (s, o)
}

/// One GSA step (see the module doc). Shapes `Hk [B,KV,D,M]`, `Hv [B,KV,M,D]`,
/// `q [B,KV,G,D]`, `k`, `v [B,KV,D]`, `α`, `s [B,KV,M]`. Returns `(Hk, Hv, o)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn gsa_step<S: NodeSink>(
    b: &mut S,
    slot_keys: &str,
    slot_values: &str,
    q: &str,
    k: &str,
    v: &str,
    decay: &str,
    write: &str,
) -> (String, String, String) {
    let last = b.ints("axis_last", &[-1]);
    let second = b.ints("axis_second_last", &[-2]);
    let a_row = b.op("Unsqueeze", &[decay, &second], vec![], "decay_row");
    let a_col = b.op("Unsqueeze", &[decay, &last], vec![], "decay_col");
    let s_row = b.op("Unsqueeze", &[write, &second], vec![], "write_row");
    let s_col = b.op("Unsqueeze", &[write, &last], vec![], "write_col");
    let k_col = b.op("Unsqueeze", &[k, &last], vec![], "k_col");
    let v_row = b.op("Unsqueeze", &[v, &second], vec![], "v_row");
    let hk = b.op("Mul", &[slot_keys, &a_row], vec![], "slot_keys_decayed");
    let ks = b.op("Mul", &[&k_col, &s_row], vec![], "k_outer_s");
    let hk = b.op("Add", &[&hk, &ks], vec![], "slot_keys_next");
    let logits = b.op("MatMul", &[q, &hk], vec![], "slot_logits");
    let p = softmax_last(b, &logits, "slot_probs");
    let hv = b.op("Mul", &[slot_values, &a_col], vec![], "slot_values_decayed");
    let sv = b.op("Mul", &[&s_col, &v_row], vec![], "s_outer_v");
    let hv = b.op("Add", &[&hv, &sv], vec![], "slot_values_next");
    let o = b.op("MatMul", &[&p, &hv], vec![], "recurrent_out");
    (hk, hv, o)
}

/// Zeros of shape `[batch of x, tail…]`.
fn zeros_like_batch<S: NodeSink>(b: &mut S, x: &str, tail: &[i64]) -> String {
    let shape = b.op("Shape", &[x], vec![], "shape");
    let (s0, s1, ax) = (
        b.ints("start", &[0]),
        b.ints("end", &[1]),
        b.ints("axis0", &[0]),
    );
    let batch = b.op("Slice", &[&shape, &s0, &s1, &ax], vec![], "batch");
    let tail = b.ints("state_dims", tail);
    let full = b.op(
        "Concat",
        &[&batch, &tail],
        vec![int_attr("axis", 0)],
        "state_shape",
    );
    b.op("ConstantOfShape", &[&full], vec![], "zero_state")
}

fn graph_attr(name: &str, g: ligerc_frontends::onnx_proto::GraphProto) -> AttributeProto {
    let mut a = AttributeProto {
        name: Some(name.into()),
        g: Some(g),
        ..Default::default()
    };
    a.set_type(AttributeType::Graph);
    a
}

/// The recurrence over all tokens as a `Scan` over axis 1; returns `[B,T,KV,G,D]`.
fn scan_recurrence(b: &mut Body, spec: &LigerSpec, p: &Prepared) -> String {
    let (kv, d) = (spec.kv_heads as i64, spec.head_dim as i64);
    let mut body = Body::new("scan_");
    let (init, scan_in, body_in, body_out) = if spec.variant == LigerVariant::Gsa {
        let m = spec.slots as i64;
        let (decay, write) = (
            p.decay.clone().unwrap_or_default(),
            p.slot_write.clone().unwrap_or_default(),
        );
        let hk0 = zeros_like_batch(b, &p.q, &[kv, d, m]);
        let hv0 = zeros_like_batch(b, &p.q, &[kv, m, d]);
        let names = [
            "scan_slot_keys",
            "scan_slot_values",
            "scan_q",
            "scan_k",
            "scan_v",
            "scan_decay",
            "scan_write",
        ];
        let (hk, hv, o) = gsa_step(
            &mut body, names[0], names[1], names[2], names[3], names[4], names[5], names[6],
        );
        (
            vec![hk0, hv0],
            vec![p.q.clone(), p.k.clone(), p.v.clone(), decay, write],
            names.to_vec(),
            vec![hk, hv, o],
        )
    } else {
        let s0 = zeros_like_batch(b, &p.q, &[kv, d, d]);
        let mut names = vec!["scan_state", "scan_q", "scan_k", "scan_v"];
        let mut scanned = vec![p.q.clone(), p.k.clone(), p.v.clone()];
        if let Some(a) = &p.decay {
            names.push("scan_decay");
            scanned.push(a.clone());
        }
        let decay = p.decay.as_ref().map(|_| "scan_decay");
        let (s, o) = keyed_step(&mut body, names[0], names[1], names[2], names[3], decay);
        (vec![s0], scanned, names, vec![s, o])
    };
    let outs: Vec<&str> = body_out.iter().map(String::as_str).collect();
    let graph = body.into_graph("liger_recurrence_step", &body_in, &outs);
    let n_scan = scan_in.len() as i64;
    let n_state = init.len();
    let final_states: Vec<String> = (0..n_state).map(|_| b.fresh("final_state")).collect();
    let o = b.fresh("recurrent_all");
    let mut outputs = final_states;
    outputs.push(o.clone());
    let inputs: Vec<&str> = init.iter().chain(&scan_in).map(String::as_str).collect();
    let attrs = vec![
        graph_attr("body", graph),
        int_attr("num_scan_inputs", n_scan),
        ints_attr("scan_input_axes", &vec![1; scan_in.len()]),
        ints_attr("scan_output_axes", &[1]),
    ];
    b.op_named("Scan", &inputs, attrs, &outputs);
    o
}

/// The sliding-window branch over all tokens: `[B,T,H·D]` (not yet weighted).
fn window_full<S: NodeSink>(
    b: &mut S,
    spec: &LigerSpec,
    q_rot: &str,
    k_rot: &str,
    v: &str,
) -> String {
    let (h, kv, d) = (
        spec.heads as i64,
        spec.kv_heads as i64,
        spec.head_dim as i64,
    );
    let g = h / kv;
    let qs = b.ints("q_shape", &[0, 0, kv, g, d]);
    let kvs = b.ints("kv_shape", &[0, 0, kv, 1, d]);
    let qh = b.op("Reshape", &[q_rot, &qs], vec![], "q_rot_heads");
    let qh = b.op(
        "Transpose",
        &[&qh],
        vec![ints_attr("perm", &[0, 2, 3, 1, 4])],
        "q_bkgtd",
    );
    let kh = b.op("Reshape", &[k_rot, &kvs], vec![], "k_rot_heads");
    let kt = b.op(
        "Transpose",
        &[&kh],
        vec![ints_attr("perm", &[0, 2, 3, 4, 1])],
        "k_bk1dt",
    );
    let vh = b.op("Reshape", &[v, &kvs], vec![], "v_heads");
    let vh = b.op(
        "Transpose",
        &[&vh],
        vec![ints_attr("perm", &[0, 2, 3, 1, 4])],
        "v_bk1td",
    );
    let scores = b.op("MatMul", &[&qh, &kt], vec![], "scores");
    let scale = b.floats(
        "scale",
        &[],
        &[(1.0 / (spec.head_dim as f64).sqrt()) as f32],
    );
    let scores = b.op("Mul", &[&scores, &scale], vec![], "scaled");
    // Band mask: query t sees keys s with 0 ≤ t − s ≤ window.
    let shape = b.op("Shape", &[q_rot], vec![], "shape");
    let one = b.ints("one", &[1]);
    let seq = b.op("Gather", &[&shape, &one], vec![int_attr("axis", 0)], "seq");
    let seq = b.op("Squeeze", &[&seq], vec![], "seq_scalar");
    let zero = b.ints("zero", &[0]);
    let zero = b.op("Squeeze", &[&zero], vec![], "zero_scalar");
    let step = b.op("Squeeze", &[&one], vec![], "one_scalar");
    let pos = b.op("Range", &[&zero, &seq, &step], vec![], "pos");
    let ax1 = b.ints("axis1", &[1]);
    let ax0 = b.ints("axis0", &[0]);
    let qpos = b.op("Unsqueeze", &[&pos, &ax1], vec![], "qpos");
    let kpos = b.op("Unsqueeze", &[&pos, &ax0], vec![], "kpos");
    let dist = b.op("Sub", &[&qpos, &kpos], vec![], "distance");
    let zero_i = b.ints("zero_i", &[0]);
    let window = b.ints("window", &[spec.window as i64]);
    let causal = b.op("GreaterOrEqual", &[&dist, &zero_i], vec![], "causal");
    let near = b.op("LessOrEqual", &[&dist, &window], vec![], "in_window");
    let band = b.op("And", &[&causal, &near], vec![], "band");
    let neg = b.floats("neg_big", &[], &[f32::MIN]);
    let scores = b.op("Where", &[&band, &scores, &neg], vec![], "band_scores");
    let p = softmax_last(b, &scores, "probs");
    let y = b.op("MatMul", &[&p, &vh], vec![], "window_out");
    let y = b.op(
        "Transpose",
        &[&y],
        vec![ints_attr("perm", &[0, 3, 1, 2, 4])],
        "window_btkgd",
    );
    let merge = b.ints("merge_shape", &[0, 0, h * d]);
    b.op("Reshape", &[&y, &merge], vec![], "window_flat")
}

/// `mix_window · y (+ mix_linear · r)`.
pub(super) fn mix<S: NodeSink>(
    b: &mut S,
    spec: &LigerSpec,
    window: &str,
    recurrent: Option<&str>,
) -> String {
    let mw = b.floats("mix_window", &[], &[spec.mix_window as f32]);
    let y = b.op("Mul", &[window, &mw], vec![], "window_mixed");
    match recurrent {
        None => y,
        Some(r) => {
            let ml = b.floats("mix_linear", &[], &[spec.mix_linear as f32]);
            let r = b.op("Mul", &[r, &ml], vec![], "recurrent_mixed");
            b.op("Add", &[&y, &r], vec![], "liger_out")
        }
    }
}

/// The full-form LigerAttention body, reading the function inputs by name.
fn attention_body(b: &mut Body, spec: &LigerSpec) -> String {
    let y = window_full(b, spec, "q_rot", "k_rot", "v");
    if spec.variant == LigerVariant::SwaOnly {
        return mix(b, spec, &y, None);
    }
    let gate = spec.variant.has_gate().then_some("gate");
    let p = prepare(b, spec, &[0, 0], "q", "k", "v", gate);
    let r = scan_recurrence(b, spec, &p);
    let merge = b.ints("merge_shape", &[0, 0, (spec.heads * spec.head_dim) as i64]);
    let r = b.op("Reshape", &[&r, &merge], vec![], "recurrent_flat");
    mix(b, spec, &y, Some(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_matrix_matches_adaptive_avg_pool_bins() {
        // D = 5 → M = 3: bins [0,2), [1,4), [3,5).
        let p = pool_matrix(5, 3);
        let col = |i: usize| (0..5).map(|c| p[c * 3 + i]).collect::<Vec<_>>();
        assert_eq!(col(0), vec![0.5, 0.5, 0.0, 0.0, 0.0]);
        let third = 1.0 / 3.0;
        assert_eq!(col(1), vec![0.0, third, third, third, 0.0]);
        assert_eq!(col(2), vec![0.0, 0.0, 0.0, 0.5, 0.5]);
    }

    #[test]
    fn keys_name_every_spec_field() {
        let spec = LigerSpec {
            variant: LigerVariant::Gsa,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            window: 64,
            mix_window: 0.5,
            mix_linear: 0.5,
            slots: 8,
        };
        assert_eq!(attention_key(&spec), "gsa_h4_kv2_d16_w64_mix0.5_0.5_m8");
    }
}
