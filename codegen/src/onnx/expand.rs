//! High-level ops → standard ONNX ops (valid from opset 13 on).
//!
//! | op | expansion |
//! |---|---|
//! | Embedding | `Gather(table, ids, axis 0)` |
//! | Linear, LmHead | `MatMul(x, Transpose(W)) (+ b)` |
//! | RmsNorm | `w · x · Reciprocal(Sqrt(ReduceMean(x², -1) + eps))` (as torch exports it) |
//! | Rope | positions `Range(0, seq)`, angles `pos ⊗ inv_freq`, rotate-half with Slice/Neg/Concat |
//! | Attention | heads split by Reshape/Transpose, KV heads repeated by Expand, `Softmax(q·kᵀ·scale + mask)·v` |
//! | SwiGlu | `g · Sigmoid(g) · u` |

use ligerc_frontends::onnx_proto::AttributeProto;
use ligerc_ir::{AttentionSpec, Op, RopeSpec};

use super::builder::{OnnxBuilder, int_attr};
use super::export::ExportError;

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    super::builder::attr(name, &ligerc_ir::Attr::Ints(v.to_vec()))
}

/// Appends the expansion of `op` reading `inputs`, writing its result to `out`,
/// in ops valid at `opset`.
pub fn expand(
    b: &mut OnnxBuilder,
    op: &Op,
    inputs: &[String],
    out: &str,
    opset: i64,
) -> Result<(), ExportError> {
    let arg = |i: usize| -> Result<&str, ExportError> {
        inputs
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| ExportError::Unsupported(format!("{} lacks operand {i}", op.mnemonic())))
    };
    let out = [out.to_string()];
    match op {
        Op::Embedding => b.op_named(
            "Gather",
            &[arg(0)?, arg(1)?],
            vec![int_attr("axis", 0)],
            &out,
        ),
        Op::Linear | Op::LmHead => {
            let wt = b.op(
                "Transpose",
                &[arg(1)?],
                vec![ints_attr("perm", &[1, 0])],
                "w_t",
            );
            if let Some(bias) = inputs.get(2) {
                let y = b.op("MatMul", &[arg(0)?, &wt], vec![], "matmul");
                b.op_named("Add", &[&y, bias], vec![], &out);
            } else {
                b.op_named("MatMul", &[arg(0)?, &wt], vec![], &out);
            }
        }
        Op::RmsNorm { eps } => rms_norm(b, arg(0)?, arg(1)?, *eps, opset, &out),
        Op::Rope(spec) => rope(b, arg(0)?, spec, &out),
        Op::Attention(spec) => attention(
            b,
            arg(0)?,
            arg(1)?,
            arg(2)?,
            inputs.get(3).map(String::as_str),
            spec,
            &out,
        ),
        Op::SwiGlu => {
            let s = b.op("Sigmoid", &[arg(0)?], vec![], "sigmoid");
            let silu = b.op("Mul", &[arg(0)?, &s], vec![], "silu");
            b.op_named("Mul", &[&silu, arg(1)?], vec![], &out);
        }
        other => {
            return Err(ExportError::Unsupported(format!(
                "no ONNX expansion for {}",
                other.mnemonic()
            )));
        }
    }
    Ok(())
}

fn rms_norm(b: &mut OnnxBuilder, x: &str, w: &str, eps: f64, opset: i64, out: &[String]) {
    let two = b.floats("two", &[], &[2.0]);
    let sq = b.op("Pow", &[x, &two], vec![], "sq");
    // ReduceMean took its axes as an attribute before opset 18, as an input since.
    let ms = if opset >= 18 {
        let axes = b.ints("axes", &[-1]);
        b.op(
            "ReduceMean",
            &[&sq, &axes],
            vec![int_attr("keepdims", 1)],
            "mean_sq",
        )
    } else {
        b.op(
            "ReduceMean",
            &[&sq],
            vec![ints_attr("axes", &[-1]), int_attr("keepdims", 1)],
            "mean_sq",
        )
    };
    let eps = b.floats("eps", &[], &[eps as f32]);
    let ms = b.op("Add", &[&ms, &eps], vec![], "mean_sq_eps");
    let rms = b.op("Sqrt", &[&ms], vec![], "rms");
    let inv = b.op("Reciprocal", &[&rms], vec![], "inv_rms");
    let xn = b.op("Mul", &[x, &inv], vec![], "normed");
    b.op_named("Mul", &[w, &xn], vec![], out);
}

/// Positions `0..seq` of a `[batch, seq, …]` value, as f32 `[seq, 1]`.
fn positions(b: &mut OnnxBuilder, x: &str) -> String {
    let shape = b.op("Shape", &[x], vec![], "shape");
    let one = b.ints("one", &[1]);
    let seq = b.op("Gather", &[&shape, &one], vec![int_attr("axis", 0)], "seq");
    let seq = b.op("Squeeze", &[&seq], vec![], "seq_scalar");
    let zero = b.ints("zero", &[0]);
    let zero = b.op("Squeeze", &[&zero], vec![], "zero_scalar");
    let step = b.ints("step", &[1]);
    let step = b.op("Squeeze", &[&step], vec![], "step_scalar");
    let pos = b.op("Range", &[&zero, &seq, &step], vec![], "pos");
    let pos = b.op("Cast", &[&pos], vec![int_attr("to", 1)], "pos_f");
    let axis = b.ints("axis1", &[1]);
    b.op("Unsqueeze", &[&pos, &axis], vec![], "pos_col")
}

fn rope(b: &mut OnnxBuilder, x: &str, spec: &RopeSpec, out: &[String]) {
    let (h, d) = (spec.heads as i64, spec.head_dim as i64);
    let inv: Vec<f32> = spec.inv_freq().into_iter().map(|f| f as f32).collect();
    let pos = positions(b, x);
    let inv = b.floats("inv_freq", &[1, d / 2], &inv);
    let ang = b.op("Mul", &[&pos, &inv], vec![], "angles");
    let emb = b.op("Concat", &[&ang, &ang], vec![int_attr("axis", -1)], "emb");
    let cos = b.op("Cos", &[&emb], vec![], "cos");
    let sin = b.op("Sin", &[&emb], vec![], "sin");
    // [seq, d] → [seq, 1, d] to broadcast over [batch, seq, heads, d].
    let axis = b.ints("axis1", &[1]);
    let cos = b.op("Unsqueeze", &[&cos, &axis], vec![], "cos_b");
    let sin = b.op("Unsqueeze", &[&sin, &axis], vec![], "sin_b");
    rotate_half(b, x, &cos, &sin, h, d, out);
}

/// `x·cos + rotate_half(x)·sin` on `[batch, seq, heads·d]`, with `cos`/`sin`
/// already shaped to broadcast over `[batch, seq, heads, d]`; writes `out`.
pub(super) fn rotate_half(
    b: &mut OnnxBuilder,
    x: &str,
    cos: &str,
    sin: &str,
    h: i64,
    d: i64,
    out: &[String],
) {
    let split = b.ints("heads_shape", &[0, 0, h, d]);
    let xh = b.op("Reshape", &[x, &split], vec![], "x_heads");
    let (s0, s1, s2, ax) = (
        b.ints("s0", &[0]),
        b.ints("s1", &[d / 2]),
        b.ints("s2", &[d]),
        b.ints("ax", &[3]),
    );
    let x1 = b.op("Slice", &[&xh, &s0, &s1, &ax], vec![], "x1");
    let x2 = b.op("Slice", &[&xh, &s1, &s2, &ax], vec![], "x2");
    let nx2 = b.op("Neg", &[&x2], vec![], "neg_x2");
    let rot = b.op("Concat", &[&nx2, &x1], vec![int_attr("axis", -1)], "rot");
    let a = b.op("Mul", &[&xh, cos], vec![], "x_cos");
    let c = b.op("Mul", &[&rot, sin], vec![], "rot_sin");
    let y = b.op("Add", &[&a, &c], vec![], "roped");
    let merge = b.ints("merge_shape", &[0, 0, h * d]);
    b.op_named("Reshape", &[&y, &merge], vec![], out);
}

/// `[batch, seq, heads·d]` → `[batch, heads, seq, d]`.
fn split_heads(b: &mut OnnxBuilder, x: &str, heads: i64, d: i64) -> String {
    let shape = b.ints("heads_shape", &[0, 0, heads, d]);
    let x = b.op("Reshape", &[x, &shape], vec![], "split");
    b.op(
        "Transpose",
        &[&x],
        vec![ints_attr("perm", &[0, 2, 1, 3])],
        "bhsd",
    )
}

/// Repeats each of `kv` heads `group` times: `[b, kv, s, d]` → `[b, kv·group, s, d]`.
fn repeat_kv(b: &mut OnnxBuilder, x: &str, kv: i64, group: i64, d: i64) -> String {
    if group == 1 {
        return x.to_string();
    }
    let axis = b.ints("axis2", &[2]);
    let x = b.op("Unsqueeze", &[x, &axis], vec![], "kv5");
    let target = b.ints("expand", &[1, 1, group, 1, 1]);
    let x = b.op("Expand", &[&x, &target], vec![], "kv_rep");
    let shape = b.ints("rep_shape", &[0, kv * group, -1, d]);
    b.op("Reshape", &[&x, &shape], vec![], "kv_heads")
}

fn attention(
    b: &mut OnnxBuilder,
    q: &str,
    k: &str,
    v: &str,
    mask: Option<&str>,
    s: &AttentionSpec,
    out: &[String],
) {
    let (h, kv, d) = (s.heads as i64, s.kv_heads as i64, s.head_dim as i64);
    let group = if kv > 0 { h / kv } else { 1 };
    let qh = split_heads(b, q, h, d);
    let kh = split_heads(b, k, kv, d);
    let vh = split_heads(b, v, kv, d);
    let kh = repeat_kv(b, &kh, kv, group, d);
    let vh = repeat_kv(b, &vh, kv, group, d);
    let kt = b.op(
        "Transpose",
        &[&kh],
        vec![ints_attr("perm", &[0, 1, 3, 2])],
        "k_t",
    );
    let scores = b.op("MatMul", &[&qh, &kt], vec![], "scores");
    let scale = b.floats("scale", &[], &[s.scale as f32]);
    let mut scores = b.op("Mul", &[&scores, &scale], vec![], "scaled");
    let neg = b.floats("neg_big", &[], &[f32::MIN]);
    if s.causal {
        // Query t of T sees keys 0..=t + (S - T).
        let qpos = positions(b, q); // [T, 1]
        let kpos = positions(b, k); // [S, 1]
        let kpos = b.op(
            "Transpose",
            &[&kpos],
            vec![ints_attr("perm", &[1, 0])],
            "kpos_row",
        ); // [1, S]
        let shape_q = b.op("Shape", &[q], vec![], "shape_q");
        let shape_k = b.op("Shape", &[k], vec![], "shape_k");
        let one = b.ints("one", &[1]);
        let tq = b.op("Gather", &[&shape_q, &one], vec![int_attr("axis", 0)], "tq");
        let tk = b.op("Gather", &[&shape_k, &one], vec![int_attr("axis", 0)], "tk");
        let off = b.op("Sub", &[&tk, &tq], vec![], "offset");
        let off = b.op("Cast", &[&off], vec![int_attr("to", 1)], "offset_f");
        let limit = b.op("Add", &[&qpos, &off], vec![], "limit");
        let allowed = b.op("LessOrEqual", &[&kpos, &limit], vec![], "causal");
        scores = b.op("Where", &[&allowed, &scores, &neg], vec![], "causal_scores");
    }
    if let Some(mask) = mask {
        // [B, S] → [B, 1, 1, S], non-zero = attend.
        let axes = b.ints("axes12", &[1, 2]);
        let m = b.op("Unsqueeze", &[mask, &axes], vec![], "mask4");
        let m = b.op("Cast", &[&m], vec![int_attr("to", 9)], "mask_b");
        scores = b.op("Where", &[&m, &scores, &neg], vec![], "masked_scores");
    }
    let p = b.op("Softmax", &[&scores], vec![int_attr("axis", -1)], "probs");
    let y = b.op("MatMul", &[&p, &vh], vec![], "attn");
    let y = b.op(
        "Transpose",
        &[&y],
        vec![ints_attr("perm", &[0, 2, 1, 3])],
        "bshd",
    );
    let merge = b.ints("merge_shape", &[0, 0, h * d]);
    b.op_named("Reshape", &[&y, &merge], vec![], out);
}
