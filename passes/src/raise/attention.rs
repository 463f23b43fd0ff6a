//! Raising exported attention blocks to `Rope` + `Attention`.
//!
//! Seeded on `Softmax` (decomposed eager / SDPA exports) or on opset 23's
//! `Attention`:
//!
//! ```text
//!  x·Wq ─ Reshape/Transpose ─ rotary(cos, sin ← pos ⊗ inv_freq) ─┐
//!  x·Wk ─ Reshape/Transpose ─ rotary ─ repeat_kv ─ Transpose ─────┼─ MatMul ─ ·scale ─ +mask ─ Softmax ─┐
//!  x·Wv ─ Reshape/Transpose ─ repeat_kv ─────────────────────────────────────────────────────────────── MatMul ─ Transpose ─ Reshape ─ ·Wo
//! ```
//!
//! becomes `Attention(Rope(x·Wq), Rope(x·Wk), x·Wv [, attention_mask])`. The
//! projections are found by walking each operand back to the unique
//! `MatMul` with a rank-2 weight (never entering `Shape` operands); head
//! counts come from the weights' widths and the rotary table's length;
//! theta is recovered from the `inv_freq` table and checked entry by entry;
//! the scale is the product of the scalar factors around the score MatMul.

use ligerc_ir::{AttentionSpec, Graph, NodeId, Op, RopeScaling, RopeSpec, ValueRef};

use super::trace::{
    activation_type, arg, constant, inputs_above, is, is_projection, matrix_weight, onnx,
    projections_above, scalar, single_user, walk_back,
};
use crate::rewrite::{Patch, PatchValue, Rule};

/// The attention-raising rule.
pub struct RaiseAttention;

/// What a matched block is made of.
struct Block {
    q: ValueRef,
    k: ValueRef,
    v: ValueRef,
    /// The value `[B,T,H·D]` that feeds the output projection.
    out: ValueRef,
    scale: Option<f64>,
    causal: bool,
    padding_mask: Option<ValueRef>,
    /// Where to look for the rotary table.
    rotary_probe: ValueRef,
}

impl Rule for RaiseAttention {
    fn name(&self) -> &str {
        "raise-attention"
    }

    fn apply(&self, g: &Graph, id: NodeId) -> Result<Option<Patch>, String> {
        let block = if is(g, id, "Softmax") {
            match_softmax(g, id)?
        } else if is(g, id, "Attention") {
            match_attention_op(g, id)?
        } else {
            return Ok(None);
        };
        build(g, &block).map(Some)
    }
}

/// The unique projection above `v`, with its bias: `(value after bias, out features)`.
fn projection(g: &Graph, v: ValueRef, role: &str) -> Result<(ValueRef, usize), String> {
    let found = projections_above(g, v);
    let [p] = found.as_slice() else {
        return Err(format!(
            "the {role} operand comes from {} projections, expected exactly one",
            found.len()
        ));
    };
    let w = arg(g, *p, 1)
        .and_then(|w| matrix_weight(g, w))
        .ok_or("projection without a weight")?;
    let width = w.1.shape()[1];
    let mut value: ValueRef = (*p).into();
    if let Some(add) = single_user(g, value)
        && is(g, add, "Add")
        && let Some(other) = g.operands(add).into_iter().find(|o| *o != value)
        && constant(g, other).is_some_and(|b| b.shape() == [width])
    {
        value = add.into();
    }
    Ok((value, width))
}

/// Strips scalar Mul/Div factors from the top of `v`: `(core, factor)`.
fn peel_scale(g: &Graph, mut v: ValueRef) -> (ValueRef, f64) {
    let mut factor = 1.0;
    while let Some(o) = onnx(g, v.node) {
        let (Some(a), Some(b)) = (arg(g, v.node, 0), arg(g, v.node, 1)) else {
            break;
        };
        match (o.op_type.as_str(), scalar(g, a), scalar(g, b)) {
            ("Mul", _, Some(s)) => {
                factor *= s;
                v = a;
            }
            ("Mul", Some(s), _) => {
                factor *= s;
                v = b;
            }
            ("Div", _, Some(s)) => {
                factor /= s;
                v = a;
            }
            _ => break,
        }
    }
    (v, factor)
}

fn match_softmax(g: &Graph, sm: NodeId) -> Result<Block, String> {
    let axis = onnx(g, sm).and_then(|o| o.attrs.get("axis")).cloned();
    if !matches!(
        axis,
        None | Some(ligerc_ir::Attr::Int(-1)) | Some(ligerc_ir::Attr::Int(3))
    ) {
        return Err("softmax is not over the last (key) axis".into());
    }
    // Scores side: peel masks and scale down to the q·kᵀ MatMul.
    let mut v = arg(g, sm, 0).ok_or("softmax without operand")?;
    let mut scale = 1.0;
    let mut masks = Vec::new();
    loop {
        let (core, f) = peel_scale(g, v);
        scale *= f;
        v = core;
        if is(g, v.node, "MatMul") {
            break;
        }
        let ops = g.operands(v.node);
        let on_scores = |x: &ValueRef| !projections_above(g, *x).is_empty();
        if is(g, v.node, "Add") || is(g, v.node, "Where") {
            let (scores, rest): (Vec<ValueRef>, Vec<ValueRef>) =
                ops.into_iter().partition(on_scores);
            let [s] = scores.as_slice() else {
                return Err("cannot tell the scores from the mask".into());
            };
            masks.extend(rest);
            v = *s;
        } else if is(g, v.node, "Cast") || is(g, v.node, "Identity") {
            v = ops.first().copied().ok_or("cast without operand")?;
        } else {
            return Err(format!(
                "unexpected {} between the scores and the softmax",
                g.describe(v.node)
            ));
        }
    }
    let (q_side, fq) = peel_scale(g, arg(g, v.node, 0).ok_or("matmul without operand")?);
    let (k_side, fk) = peel_scale(g, arg(g, v.node, 1).ok_or("matmul without operand")?);
    scale *= fq * fk;
    // Value side: the MatMul that reads the probabilities.
    let mut p: ValueRef = sm.into();
    let pv = loop {
        // SDPA exports guard fully masked rows with `Where(IsNaN(p), 0, p)`: the IsNaN user is not the data path.
        let users: Vec<NodeId> = g
            .value_users(p)
            .into_iter()
            .map(|u| u.0)
            .filter(|&u| !is(g, u, "IsNaN"))
            .collect();
        let [user] = users.as_slice() else {
            return Err("the attention probabilities have several users".into());
        };
        let user = *user;
        if is(g, user, "MatMul") && arg(g, user, 0) == Some(p) {
            break user;
        }
        if is(g, user, "Where") || is(g, user, "Cast") || is(g, user, "Identity") {
            p = user.into();
            continue;
        }
        return Err(format!("unexpected {} after the softmax", g.describe(user)));
    };
    let v_side = arg(g, pv, 1).ok_or("matmul without operand")?;
    let (causal, padding_mask) = classify_masks(g, &masks);
    Ok(Block {
        q: q_side,
        k: k_side,
        v: v_side,
        out: output_value(g, pv.into())?,
        scale: Some(scale),
        causal,
        padding_mask,
        rotary_probe: q_side,
    })
}

fn match_attention_op(g: &Graph, at: NodeId) -> Result<Block, String> {
    let o = onnx(g, at).ok_or("not an op")?;
    let r = ligerc_ir::AttrReader::new("Attention", &o.attrs);
    if r.float_or("softcap", 0.0).map_err(|e| e.to_string())? != 0.0 {
        return Err("softcap is not supported".into());
    }
    if g.node(at).is_some_and(|n| n.outputs.len() > 1) && g.users(at).iter().any(|u| u.1 > 0) {
        return Err("present key/value outputs are used".into());
    }
    let ops = g.operands(at);
    let (q, k, v) = match ops.as_slice() {
        [q, k, v, ..] => (*q, *k, *v),
        _ => return Err("Attention needs q, k, v".into()),
    };
    if ops.len() > 4 {
        return Err("past key/value inputs are not supported".into());
    }
    let (mask_causal, padding_mask) = classify_masks(g, &ops[3.min(ops.len())..]);
    let is_causal = r.int_or("is_causal", 0).map_err(|e| e.to_string())? != 0;
    let scale = o.attrs.get("scale").and_then(|a| match a {
        ligerc_ir::Attr::Float(f) => Some(*f),
        _ => None,
    });
    Ok(Block {
        q,
        k,
        v,
        out: output_value(g, at.into())?,
        scale,
        causal: is_causal || mask_causal,
        padding_mask,
        rotary_probe: q,
    })
}

/// A mask operand that reads only shapes is the causal mask; one that reads a
/// graph input other than the token ids is a padding mask over that input.
fn classify_masks(g: &Graph, masks: &[ValueRef]) -> (bool, Option<ValueRef>) {
    let mut causal = false;
    let mut padding = None;
    for &m in masks {
        causal = true;
        for input in inputs_above(g, m) {
            if let Some(Op::Input { name }) = g.node(input).map(|n| &n.op)
                && name != "input_ids"
            {
                padding = Some(input.into());
            }
        }
    }
    (causal, padding)
}

/// From the attention's `[B,H,T,D]` result, the Transpose/Reshape chain to the
/// value that feeds the output projection.
fn output_value(g: &Graph, mut v: ValueRef) -> Result<ValueRef, String> {
    for _ in 0..8 {
        if g.value_users(v)
            .iter()
            .any(|(u, slot)| *slot == 0 && is_projection(g, *u))
        {
            return Ok(v);
        }
        // Shape users read only dims (exporters size the next Reshape from them).
        let users: Vec<NodeId> = g
            .value_users(v)
            .into_iter()
            .map(|u| u.0)
            .filter(|&u| !is(g, u, "Shape"))
            .collect();
        let [user] = users.as_slice() else {
            return Err(
                "the attention output has several users before the output projection".into(),
            );
        };
        let user = *user;
        if !(is(g, user, "Transpose") || is(g, user, "Reshape")) {
            return Err(format!(
                "unexpected {} between the attention and its output projection",
                g.describe(user)
            ));
        }
        v = user.into();
    }
    Err("no output projection after the attention".into())
}

/// The inverse frequencies of the rotary table used on `probe`'s path.
fn inv_freq(g: &Graph, probe: ValueRef) -> Result<Vec<f64>, String> {
    let (_, seen) = walk_back(g, probe, |id| is_projection(g, id));
    let mut trig: Vec<NodeId> = seen
        .into_iter()
        .filter(|&id| is(g, id, "Cos") || is(g, id, "Sin"))
        .collect();
    trig.sort();
    for t in trig {
        let Some(angle) = arg(g, t, 0) else { continue };
        let (_, above) = walk_back(g, angle, |_| false);
        let mut tables: Vec<Vec<f64>> = above
            .into_iter()
            .filter_map(|id| constant(g, id.into()))
            .filter(|c| {
                c.dtype().is_float()
                    && c.numel() >= 1
                    && c.shape().iter().filter(|&&d| d > 1).count() <= 1
            })
            .map(|c| c.to_f64_vec())
            .filter(|v| v.len() > 1 || v.first().is_some_and(|&x| x == 1.0))
            .collect();
        tables.sort_by_key(|t| std::cmp::Reverse(t.len()));
        if let Some(t) = tables.into_iter().next() {
            return Ok(t);
        }
    }
    Err("no rotary frequency table (cos/sin of positions × inv_freq) on the query path".into())
}

/// `theta` such that `inv_freq[i] = theta^(-2i/d)`, checked on every entry.
fn fit_theta(inv: &[f64], head_dim: usize) -> Result<f64, String> {
    let d = head_dim as f64;
    let fitted = match inv.get(1) {
        Some(&f1) if f1 > 0.0 && f1 < 1.0 => (1.0 / f1).powf(d / 2.0),
        _ => return Err("rotary table too short to recover theta".into()),
    };
    // The table is f32; configs use round numbers (10000, 500000): prefer the integer when it fits as well.
    let theta = if (fitted - fitted.round()).abs() < 1e-4 * fitted {
        fitted.round()
    } else {
        fitted
    };
    for (i, &f) in inv.iter().enumerate() {
        let want = theta.powf(-2.0 * i as f64 / d);
        if (f - want).abs() > 1e-5 * want.abs().max(1e-12) {
            return Err(format!(
                "rotary frequencies are not theta^(-2i/d) (entry {i}: {f} vs {want} for theta {theta:.1}); scaled RoPE is not raised"
            ));
        }
    }
    Ok(theta)
}

fn build(g: &Graph, b: &Block) -> Result<Patch, String> {
    let (q, q_w) = projection(g, b.q, "query")?;
    let (k, k_w) = projection(g, b.k, "key")?;
    let (v, v_w) = projection(g, b.v, "value")?;
    let inv = inv_freq(g, b.rotary_probe)?;
    let head_dim = inv.len() * 2;
    if q_w % head_dim != 0 || k_w % head_dim != 0 || k_w != v_w {
        return Err(format!(
            "projection widths q {q_w}, k {k_w}, v {v_w} do not split into heads of {head_dim}"
        ));
    }
    let (heads, kv_heads) = (q_w / head_dim, k_w / head_dim);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(format!(
            "{heads} query heads are not a multiple of {kv_heads} KV heads"
        ));
    }
    let theta = fit_theta(&inv, head_dim)?;
    let rope = |h| {
        Op::Rope(RopeSpec {
            heads: h,
            head_dim,
            theta,
            scaling: RopeScaling::None,
        })
    };
    let mut p = Patch::default();
    let qr = p.add(
        rope(heads),
        vec![PatchValue::Graph(q)],
        activation_type(g, q_w),
    );
    let kr = p.add(
        rope(kv_heads),
        vec![PatchValue::Graph(k)],
        activation_type(g, k_w),
    );
    let mut operands = vec![qr, kr, PatchValue::Graph(v)];
    if let Some(m) = b.padding_mask {
        operands.push(PatchValue::Graph(m));
    }
    let spec = AttentionSpec {
        heads,
        kv_heads,
        head_dim,
        scale: b.scale.unwrap_or(1.0 / (head_dim as f64).sqrt()),
        causal: b.causal,
    };
    let a = p.add(Op::Attention(spec), operands, activation_type(g, q_w));
    p.replace.push((b.out, a));
    Ok(p)
}
