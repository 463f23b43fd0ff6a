//! The step form (`--emit onnx --onnx-form step`): a graph that decodes one
//! token, carrying every layer's state as inputs and outputs.
//!
//! ## I/O contract
//!
//! `L` is the decoder layer's 0-based index (attention layers in order), `B`
//! the batch, `KV`, `D` the layer's KV heads and head dim, `W` its window, `M`
//! its GSA slots. All state tensors are f32.
//!
//! | input | shape | first step | meaning |
//! |---|---|---|---|
//! | `input_ids` | `[B, 1]` | | the new token (every input of the source graph is fed for the new token only: its sequence axis is 1, e.g. `attention_mask [B, 1]`) |
//! | `position` | int64 `[B]` (or `[1]`: one for all rows) | `0` | absolute position of the new token: RoPE angle, and which window slots are filled |
//! | `state.L` | `[B, KV, D, D]` | zeros | recurrent state `S` (GLA, HGRN2, retention, linear) |
//! | `state_k.L`, `state_v.L` | `[B, KV, D, M]`, `[B, KV, M, D]` | zeros | GSA's slot memories `Hk`, `Hv` (instead of `state.L`) |
//! | `window_k.L`, `window_v.L` | `[B, KV, W, D]` | zeros | the last `W` rotated keys / values, oldest first (absent when `W = 0`) |
//! | `past_k.L`, `past_v.L` | `[B, KV, P, D]` | `P = 0` | KV cache of a softmax layer kept by the hybrid (rotated keys) |
//!
//! | output | shape | meaning |
//! |---|---|---|
//! | `logits` | `[B, 1, vocab]` | the source graph's outputs, for the new token |
//! | `present_state.L`, `present_state_k.L`, `present_state_v.L` | as the input | updated recurrent state: feed back as `state….L` |
//! | `present_window_k.L`, `present_window_v.L` | `[B, KV, W, D]` | the window shifted by one, newest last: feed back as `window_….L` |
//! | `present_k.L`, `present_v.L` | `[B, KV, P + 1, D]` | the grown KV cache: feed back as `past_….L` |
//!
//! The decode loop: zero every state, then for `position = 0, 1, …` feed the
//! token and the previous step's `present_*` outputs. Window slot `i` of the
//! input holds the token at `position − W + i`; slots with a negative position
//! are masked, so zeros never leak into the softmax. Memory is constant in the
//! number of steps except for kept softmax layers' KV caches.
//!
//! Liger layers are `ai.ligerc::LigerAttentionStep` nodes backed by a
//! model-local function (same overload key as the full form's
//! `LigerAttention`) whose body is the step of [`super::liger`]'s recurrence
//! plus window attention over `[window ; new token]`. Softmax layers with a
//! padding-mask operand are refused (the cache has no mask).

use ligerc_frontends::onnx::tensor::dtype_to_onnx;
use ligerc_frontends::onnx_proto::{
    FunctionProto, ModelProto, TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto,
    type_proto,
};
use ligerc_ir::{AttentionSpec, DType, LigerSpec, LigerVariant, Op, RopeSpec};

use super::body::{Body, NodeSink};
use super::builder::{OnnxBuilder, int_attr};
use super::export::ExportError;
use super::liger::{
    attention_inputs, call, function, gsa_step, ints_attr, keyed_step, mix, prepare, spec_attrs,
};

/// Which graph `--emit onnx` writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnnxForm {
    /// The whole sequence at once (`input_ids [B, T]` → `logits [B, T, vocab]`).
    #[default]
    Full,
    /// One decode step with the recurrent states as inputs and outputs (see the module doc).
    Step,
}

/// The name of the position input.
const POSITION: &str = "position";

/// A dimension of a declared shape.
#[derive(Clone, Copy)]
enum D {
    Fixed(i64),
    Sym(&'static str),
    Unknown,
}

fn value_info(name: &str, dtype: DType, dims: &[D]) -> ValueInfoProto {
    use tensor_shape_proto::dimension::Value;
    let shape = Some(TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| tensor_shape_proto::Dimension {
                value: match d {
                    D::Fixed(n) => Some(Value::DimValue(*n)),
                    D::Sym(s) => Some(Value::DimParam(s.to_string())),
                    D::Unknown => None,
                },
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype_to_onnx(dtype)),
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The state inputs and outputs the step graph gains, layer by layer.
#[derive(Default)]
pub(super) struct StepIo {
    layer: usize,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
}

impl StepIo {
    /// Declares a state: input `name.L`, output `present_name.L`; returns both names.
    fn state(&mut self, name: &str, dims: [D; 4]) -> (String, String) {
        let (i, o) = (
            format!("{name}.{}", self.layer),
            format!("present_{name}.{}", self.layer),
        );
        self.inputs.push(value_info(&i, DType::F32, &dims));
        self.outputs.push(value_info(&o, DType::F32, &dims));
        (i, o)
    }

    /// Rope of one token at `position`: operand `[B, 1, heads·D]`.
    pub(super) fn rope(
        &mut self,
        b: &mut OnnxBuilder,
        spec: &RopeSpec,
        operands: &[String],
        out: &str,
    ) -> Result<(), ExportError> {
        let x = operands
            .first()
            .ok_or_else(|| ExportError::Unsupported("Rope lacks its operand".into()))?;
        let (h, d) = (spec.heads as i64, spec.head_dim as i64);
        if d == 0 || d % 2 != 0 {
            return Err(ExportError::Unsupported(format!(
                "Rope head_dim must be even and positive, is {d}"
            )));
        }
        let inv: Vec<f32> = spec.inv_freq().into_iter().map(|f| f as f32).collect();
        let col = b.ints("col_shape", &[-1, 1]);
        let pos = b.op("Reshape", &[POSITION, &col], vec![], "pos_col");
        let pos = b.op("Cast", &[&pos], vec![int_attr("to", 1)], "pos_f");
        let inv = b.floats("inv_freq", &[1, d / 2], &inv);
        let ang = b.op("Mul", &[&pos, &inv], vec![], "angles");
        let emb = b.op("Concat", &[&ang, &ang], vec![int_attr("axis", -1)], "emb");
        let cos = b.op("Cos", &[&emb], vec![], "cos");
        let sin = b.op("Sin", &[&emb], vec![], "sin");
        // [B|1, D] → [B|1, 1, 1, D] to broadcast over [B, 1, heads, D].
        let bcast = b.ints("bcast_shape", &[-1, 1, 1, d]);
        let cos = b.op("Reshape", &[&cos, &bcast], vec![], "cos_b");
        let sin = b.op("Reshape", &[&sin, &bcast], vec![], "sin_b");
        super::expand::rotate_half(b, x, &cos, &sin, h, d, &[out.to_string()]);
        Ok(())
    }

    /// Softmax attention of one token over `[past ; new]` keys and values.
    pub(super) fn attention(
        &mut self,
        b: &mut OnnxBuilder,
        s: &AttentionSpec,
        operands: &[String],
        out: &str,
    ) -> Result<(), ExportError> {
        if operands.len() > 3 {
            return Err(ExportError::Unsupported(
                "the step form cannot export softmax attention with a padding mask (its KV cache has no mask)".into(),
            ));
        }
        if !s.causal {
            return Err(ExportError::Unsupported(
                "the step form needs causal attention".into(),
            ));
        }
        let [q, k, v] = operands else {
            return Err(ExportError::Unsupported("Attention lacks q, k or v".into()));
        };
        if s.kv_heads == 0 || s.head_dim == 0 || !s.heads.is_multiple_of(s.kv_heads) {
            return Err(ExportError::Unsupported(format!(
                "Attention {s:?}: heads must be a multiple of kv_heads"
            )));
        }
        let (h, kv, d) = (s.heads as i64, s.kv_heads as i64, s.head_dim as i64);
        let past = || [D::Sym("batch"), D::Fixed(kv), D::Sym("past"), D::Fixed(d)];
        let present = || [D::Sym("batch"), D::Fixed(kv), D::Unknown, D::Fixed(d)];
        let l = self.layer;
        let (pk, pv) = (format!("past_k.{l}"), format!("past_v.{l}"));
        let (pk_out, pv_out) = (format!("present_k.{l}"), format!("present_v.{l}"));
        for (i, o) in [(&pk, &pk_out), (&pv, &pv_out)] {
            self.inputs.push(value_info(i, DType::F32, &past()));
            self.outputs.push(value_info(o, DType::F32, &present()));
        }
        self.layer += 1;
        let qs = b.ints("q_shape", &[0, kv, h / kv, d]);
        let kvs = b.ints("kv_shape", &[0, kv, 1, d]);
        let qh = b.op("Reshape", &[q, &qs], vec![], "q_heads");
        let kn = b.op("Reshape", &[k, &kvs], vec![], "k_new");
        let vn = b.op("Reshape", &[v, &kvs], vec![], "v_new");
        b.op_named(
            "Concat",
            &[&pk, &kn],
            vec![int_attr("axis", 2)],
            std::slice::from_ref(&pk_out),
        );
        b.op_named(
            "Concat",
            &[&pv, &vn],
            vec![int_attr("axis", 2)],
            std::slice::from_ref(&pv_out),
        );
        let kt = b.op(
            "Transpose",
            &[&pk_out],
            vec![ints_attr("perm", &[0, 1, 3, 2])],
            "k_t",
        );
        let scores = b.op("MatMul", &[&qh, &kt], vec![], "scores");
        let scale = b.floats("scale", &[], &[s.scale as f32]);
        let scores = b.op("Mul", &[&scores, &scale], vec![], "scaled");
        let p = b.op("Softmax", &[&scores], vec![int_attr("axis", -1)], "probs");
        let y = b.op("MatMul", &[&p, &pv_out], vec![], "attn");
        let merge = b.ints("merge_shape", &[0, 1, h * d]);
        b.op_named("Reshape", &[&y, &merge], vec![], &[out.to_string()]);
        Ok(())
    }

    /// A `LigerAttentionStep` node for layer `self.layer`, declaring its states.
    pub(super) fn liger_attention(
        &mut self,
        b: &mut OnnxBuilder,
        spec: &LigerSpec,
        key: &str,
        operands: &[String],
        out: &str,
    ) {
        let (kv, d, w) = (
            spec.kv_heads as i64,
            spec.head_dim as i64,
            spec.window as i64,
        );
        let m = spec.slots as i64;
        let dims = |r: i64, c: i64| [D::Sym("batch"), D::Fixed(kv), D::Fixed(r), D::Fixed(c)];
        let mut inputs = operands.to_vec();
        inputs.push(POSITION.into());
        let mut outputs = vec![out.to_string()];
        let mut states = Vec::new();
        match spec.variant {
            LigerVariant::SwaOnly => {}
            LigerVariant::Gsa => {
                states.push(self.state("state_k", dims(d, m)));
                states.push(self.state("state_v", dims(m, d)));
            }
            _ => states.push(self.state("state", dims(d, d))),
        }
        if spec.window > 0 {
            states.push(self.state("window_k", dims(w, d)));
            states.push(self.state("window_v", dims(w, d)));
        }
        for (i, o) in states {
            inputs.push(i);
            outputs.push(o);
        }
        self.layer += 1;
        let attrs = spec_attrs(&Op::LigerAttention(spec.clone()));
        b.nodes
            .push(call("LigerAttentionStep", key, attrs, &inputs, &outputs));
    }

    /// Declares the sequence axis of the source graph's inputs and outputs as
    /// 1, and appends `position` and the states.
    pub(super) fn finish(self, model: &mut ModelProto) {
        let Some(g) = model.graph.as_mut() else {
            return;
        };
        for v in g.input.iter_mut().chain(g.output.iter_mut()) {
            if let Some(type_proto::Value::TensorType(t)) =
                v.r#type.as_mut().and_then(|t| t.value.as_mut())
                && let Some(dim) = t.shape.as_mut().and_then(|s| s.dim.get_mut(1))
            {
                dim.value = Some(tensor_shape_proto::dimension::Value::DimValue(1));
            }
        }
        g.input
            .push(value_info(POSITION, DType::I64, &[D::Sym("batch")]));
        g.input.extend(self.inputs);
        g.output.extend(self.outputs);
    }
}

/// The function inputs and outputs of `LigerAttentionStep`.
fn step_io(spec: &LigerSpec) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut inputs = attention_inputs(spec);
    inputs.push(POSITION);
    let mut outputs = vec!["o"];
    match spec.variant {
        LigerVariant::SwaOnly => {}
        LigerVariant::Gsa => {
            inputs.extend(["state_k", "state_v"]);
            outputs.extend(["present_state_k", "present_state_v"]);
        }
        _ => {
            inputs.push("state");
            outputs.push("present_state");
        }
    }
    if spec.window > 0 {
        inputs.extend(["window_k", "window_v"]);
        outputs.extend(["present_window_k", "present_window_v"]);
    }
    (inputs, outputs)
}

/// Window attention of one token over `[window ; new]` (function inputs by
/// name); returns `(y [B,1,H·D], present keys, present values)`.
fn window_step(b: &mut Body, spec: &LigerSpec) -> (String, Option<(String, String)>) {
    let (h, kv, d, w) = (
        spec.heads as i64,
        spec.kv_heads as i64,
        spec.head_dim as i64,
        spec.window as i64,
    );
    let qs = b.ints("q_shape", &[0, kv, h / kv, d]);
    let kvs = b.ints("kv_shape", &[0, kv, 1, d]);
    let qh = b.op("Reshape", &["q_rot", &qs], vec![], "q_rot_heads");
    let kn = b.op("Reshape", &["k_rot", &kvs], vec![], "k_new");
    let vn = b.op("Reshape", &["v", &kvs], vec![], "v_new");
    let (keys, values) = if w > 0 {
        let keys = b.op(
            "Concat",
            &["window_k", &kn],
            vec![int_attr("axis", 2)],
            "keys",
        );
        let values = b.op(
            "Concat",
            &["window_v", &vn],
            vec![int_attr("axis", 2)],
            "values",
        );
        (keys, values)
    } else {
        (kn, vn)
    };
    let kt = b.op(
        "Transpose",
        &[&keys],
        vec![ints_attr("perm", &[0, 1, 3, 2])],
        "k_t",
    );
    let scores = b.op("MatMul", &[&qh, &kt], vec![], "scores");
    let scale = b.floats(
        "scale",
        &[],
        &[(1.0 / (spec.head_dim as f64).sqrt()) as f32],
    );
    let mut scores = b.op("Mul", &[&scores, &scale], vec![], "scaled");
    if w > 0 {
        // Slot i holds position `position − W + i` (i = W: the new token).
        let col = b.ints("col_shape", &[-1, 1]);
        let pos = b.op("Reshape", &[POSITION, &col], vec![], "pos_col");
        let offsets: Vec<i64> = (-w..=0).collect();
        let offsets = b.ints("slot_offsets", &offsets);
        let slot_pos = b.op("Add", &[&pos, &offsets], vec![], "slot_pos");
        let zero = b.ints("zero", &[0]);
        let valid = b.op("GreaterOrEqual", &[&slot_pos, &zero], vec![], "filled");
        let axes = b.ints("axes12", &[1, 2]);
        let valid = b.op("Unsqueeze", &[&valid, &axes], vec![], "filled4");
        let neg = b.floats("neg_big", &[], &[f32::MIN]);
        scores = b.op("Where", &[&valid, &scores, &neg], vec![], "window_scores");
    }
    let p = b.op("Softmax", &[&scores], vec![int_attr("axis", -1)], "probs");
    let y = b.op("MatMul", &[&p, &values], vec![], "window_out");
    let merge = b.ints("merge_shape", &[0, 1, h * d]);
    let y = b.op("Reshape", &[&y, &merge], vec![], "window_flat");
    let present = (w > 0).then(|| {
        let (start, end, axis) = (
            b.ints("start", &[1]),
            b.ints("end", &[w + 1]),
            b.ints("axis2", &[2]),
        );
        let pk = b.op(
            "Slice",
            &[&keys, &start, &end, &axis],
            vec![],
            "window_k_next",
        );
        let pv = b.op(
            "Slice",
            &[&values, &start, &end, &axis],
            vec![],
            "window_v_next",
        );
        (pk, pv)
    });
    (y, present)
}

/// The model-local function of one LigerAttention step (see the module doc).
pub(super) fn attention_step_function(spec: &LigerSpec, key: &str, opset: i64) -> FunctionProto {
    let mut b = Body::new("");
    let (y, window) = window_step(&mut b, spec);
    let mut presents: Vec<String> = Vec::new();
    let o = if spec.variant == LigerVariant::SwaOnly {
        mix(&mut b, spec, &y, None)
    } else {
        let gate = spec.variant.has_gate().then_some("gate");
        let p = prepare(&mut b, spec, &[0], "q", "k", "v", gate);
        let r = if spec.variant == LigerVariant::Gsa {
            let (decay, write) = (
                p.decay.clone().unwrap_or_default(),
                p.slot_write.clone().unwrap_or_default(),
            );
            let (hk, hv, o) = gsa_step(
                &mut b, "state_k", "state_v", &p.q, &p.k, &p.v, &decay, &write,
            );
            presents.extend([hk, hv]);
            o
        } else {
            let (s, o) = keyed_step(&mut b, "state", &p.q, &p.k, &p.v, p.decay.as_deref());
            presents.push(s);
            o
        };
        let merge = b.ints("merge_shape", &[0, 1, (spec.heads * spec.head_dim) as i64]);
        let r = b.op("Reshape", &[&r, &merge], vec![], "recurrent_flat");
        mix(&mut b, spec, &y, Some(&r))
    };
    if let Some((k, v)) = window {
        presents.extend([k, v]);
    }
    let (inputs, outputs) = step_io(spec);
    for (value, name) in std::iter::once(&o).chain(&presents).zip(&outputs) {
        b.op_named("Identity", &[value], vec![], &[name.to_string()]);
    }
    let attrs = spec_attrs(&Op::LigerAttention(spec.clone()));
    function(
        "LigerAttentionStep",
        key,
        &inputs,
        &outputs,
        attrs,
        b,
        opset,
        "LigerAttentionStep: one decode step of LigerAttention with its recurrent state and window cache",
    )
}
