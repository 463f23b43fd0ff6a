//! Raising RMSNorm, SwiGLU, projections and the embedding lookup.

use ligerc_ir::{Graph, NodeId, Op, TensorData};

use super::trace::{arg, constant, is, matrix_weight, onnx, scalar, single_user};
use crate::rewrite::{Patch, PatchValue, Rule};

/// `w · x / sqrt(mean(x², -1) + eps)` (Pow or Mul square; Sqrt+Reciprocal,
/// Div(1, ·) or Div(x, ·); optional Casts) or opset 23's `RMSNormalization`
/// → `RmsNorm`. Seeded on the `ReduceMean` (or `RMSNormalization`).
pub struct RaiseRmsNorm;

fn is_last_axis_mean(g: &Graph, id: NodeId) -> bool {
    let Some(o) = onnx(g, id) else { return false };
    if o.op_type != "ReduceMean"
        || !matches!(
            o.attrs.get("keepdims"),
            None | Some(ligerc_ir::Attr::Int(1))
        )
    {
        return false;
    }
    let axes: Option<Vec<i64>> = match o.attrs.get("axes") {
        Some(ligerc_ir::Attr::Ints(a)) => Some(a.clone()),
        _ => arg(g, id, 1)
            .and_then(|a| constant(g, a))
            .map(|t| t.to_i64_vec()),
    };
    let rank = arg(g, id, 0)
        .and_then(|x| g.value_type(x).ok())
        .and_then(|t| t.rank());
    matches!(axes.as_deref(), Some([-1]))
        || matches!((axes.as_deref(), rank), (Some([a]), Some(r)) if *a == r as i64 - 1)
}

impl Rule for RaiseRmsNorm {
    fn name(&self) -> &str {
        "raise-rmsnorm"
    }

    fn apply(&self, g: &Graph, id: NodeId) -> Result<Option<Patch>, String> {
        if is(g, id, "RMSNormalization") {
            let o = onnx(g, id).ok_or("not an op")?;
            let r = ligerc_ir::AttrReader::new("RMSNormalization", &o.attrs);
            if r.int_or("axis", -1).map_err(|e| e.to_string())? != -1 {
                return Ok(None);
            }
            let eps = r.float_or("epsilon", 1e-5).map_err(|e| e.to_string())?;
            let (Some(x), Some(w)) = (arg(g, id, 0), arg(g, id, 1)) else {
                return Ok(None);
            };
            return Ok(Some(rms_patch(g, x, w, eps, id)));
        }
        if !is_last_axis_mean(g, id) {
            return Ok(None);
        }
        // mean(x²)
        let Some(sq) = arg(g, id, 0) else {
            return Ok(None);
        };
        let squares = (is(g, sq.node, "Pow")
            && arg(g, sq.node, 1).and_then(|e| scalar(g, e)) == Some(2.0))
            || (is(g, sq.node, "Mul") && arg(g, sq.node, 0) == arg(g, sq.node, 1));
        let x = if squares { arg(g, sq.node, 0) } else { None };
        let Some(x) = x else { return Ok(None) };
        // + eps
        let Some(add) = single_user(g, id.into()) else {
            return Ok(None);
        };
        if !is(g, add, "Add") {
            return Ok(None);
        }
        let Some(eps) = g
            .operands(add)
            .into_iter()
            .find(|v| v.node != id)
            .and_then(|v| scalar(g, v))
        else {
            return Ok(None);
        };
        // sqrt, then 1/·
        let Some(sqrt) = single_user(g, add.into()) else {
            return Ok(None);
        };
        if !is(g, sqrt, "Sqrt") {
            return Ok(None);
        }
        let Some(next) = single_user(g, sqrt.into()) else {
            return Ok(None);
        };
        let normed = if is(g, next, "Reciprocal")
            || (is(g, next, "Div") && arg(g, next, 0).and_then(|a| scalar(g, a)) == Some(1.0))
        {
            let Some(mul) = single_user(g, next.into()) else {
                return Ok(None);
            };
            let others: Vec<_> = g
                .operands(mul)
                .into_iter()
                .filter(|v| v.node != next)
                .collect();
            if !is(g, mul, "Mul") || others != [x] {
                return Ok(None);
            }
            mul
        } else if is(g, next, "Div") && arg(g, next, 0) == Some(x) {
            next
        } else {
            return Ok(None);
        };
        // · w, possibly behind Casts
        let mut cur = normed;
        let wmul = loop {
            match single_user(g, cur.into()) {
                Some(u) if is(g, u, "Cast") || is(g, u, "Identity") => cur = u,
                Some(u) if is(g, u, "Mul") => break u,
                _ => return Ok(None),
            }
        };
        let Some(w) = g
            .operands(wmul)
            .into_iter()
            .find(|v| constant(g, *v).is_some_and(|t| t.shape().len() == 1))
        else {
            return Ok(None);
        };
        Ok(Some(rms_patch(g, x, w, eps, wmul)))
    }
}

fn rms_patch(
    g: &Graph,
    x: ligerc_ir::ValueRef,
    w: ligerc_ir::ValueRef,
    eps: f64,
    out: NodeId,
) -> Patch {
    let mut p = Patch::default();
    let ty = g
        .node(out)
        .and_then(|n| n.outputs.first().cloned())
        .unwrap_or_else(|| ligerc_ir::TensorType::unranked(ligerc_ir::DType::F32));
    let n = p.add(
        Op::RmsNorm { eps },
        vec![PatchValue::Graph(x), PatchValue::Graph(w)],
        ty,
    );
    p.replace.push((out.into(), n));
    p
}

/// `Mul(Mul(g, Sigmoid(g)), u)` → `SwiGlu(g, u)`.
pub struct RaiseSwiGlu;

impl Rule for RaiseSwiGlu {
    fn name(&self) -> &str {
        "raise-swiglu"
    }

    fn apply(&self, g: &Graph, id: NodeId) -> Result<Option<Patch>, String> {
        if !is(g, id, "Mul") {
            return Ok(None);
        }
        let ops = g.operands(id);
        for (i, silu) in ops.iter().enumerate() {
            if !is(g, silu.node, "Mul") {
                continue;
            }
            let inner = g.operands(silu.node);
            let gate = inner.iter().find(|a| {
                inner
                    .iter()
                    .any(|s| is(g, s.node, "Sigmoid") && arg(g, s.node, 0) == Some(**a))
            });
            let Some(&gate) = gate else { continue };
            let Some(&up) = ops.get(1 - i) else { continue };
            let ty = g
                .node(id)
                .and_then(|n| n.outputs.first().cloned())
                .ok_or("no type")?;
            let mut p = Patch::default();
            let s = p.add(
                Op::SwiGlu,
                vec![PatchValue::Graph(gate), PatchValue::Graph(up)],
                ty,
            );
            p.replace.push((id.into(), s));
            return Ok(Some(p));
        }
        Ok(None)
    }
}

/// `MatMul(x, W)` (+ `Add(·, b)`) with a rank-2 weight → `Linear(x, Wᵀ [, b])`;
/// the weight is stored transposed once, as `[out, in]`.
pub struct RaiseLinear;

impl Rule for RaiseLinear {
    fn name(&self) -> &str {
        "raise-linear"
    }

    fn apply(&self, g: &Graph, id: NodeId) -> Result<Option<Patch>, String> {
        if !is(g, id, "MatMul") {
            return Ok(None);
        }
        let (Some(x), Some(wv)) = (arg(g, id, 0), arg(g, id, 1)) else {
            return Ok(None);
        };
        let Some((name, w)) = matrix_weight(g, wv) else {
            return Ok(None);
        };
        if constant(g, x).is_some() {
            return Ok(None);
        }
        let (rows, cols) = (w.shape()[0], w.shape()[1]);
        // A MatMul whose known input width disagrees with the weight is not a projection
        // ligerc can raise; leave it generic (the runtime reports the mismatch by node).
        if g.value_type(x)
            .ok()
            .and_then(|t| t.dim(-1))
            .and_then(|d| d.fixed())
            .is_some_and(|n| n != rows)
        {
            return Ok(None);
        }
        let data = w.to_f32_vec();
        let mut t = vec![0f32; data.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = data[r * cols + c];
            }
        }
        let wt = TensorData::from_f32(vec![cols, rows], &t).map_err(|e| e.to_string())?;
        let mut p = Patch::default();
        let wn = p.weight(&format!("{name}.T"), wt);
        let mut operands = vec![PatchValue::Graph(x), wn];
        let mut out: ligerc_ir::ValueRef = id.into();
        if let Some(add) = single_user(g, id.into())
            && is(g, add, "Add")
            && let Some(b) = g.operands(add).into_iter().find(|v| v.node != id)
            && constant(g, b).is_some_and(|t| t.shape() == [cols])
        {
            operands.push(PatchValue::Graph(b));
            out = add.into();
        }
        let ty = g
            .node(out.node)
            .and_then(|n| n.outputs.first().cloned())
            .ok_or("no type")?;
        let l = p.add(Op::Linear, operands, ty);
        p.replace.push((out, l));
        Ok(Some(p))
    }
}

/// `Gather(table, ids, axis 0)` with a rank-2 float weight table → `Embedding`.
pub struct RaiseEmbedding;

impl Rule for RaiseEmbedding {
    fn name(&self) -> &str {
        "raise-embedding"
    }

    fn apply(&self, g: &Graph, id: NodeId) -> Result<Option<Patch>, String> {
        if !is(g, id, "Gather")
            || !matches!(
                onnx(g, id).and_then(|o| o.attrs.get("axis")),
                None | Some(ligerc_ir::Attr::Int(0))
            )
        {
            return Ok(None);
        }
        let (Some(table), Some(ids)) = (arg(g, id, 0), arg(g, id, 1)) else {
            return Ok(None);
        };
        if matrix_weight(g, table).is_none() || constant(g, ids).is_some() {
            return Ok(None);
        }
        let ty = g
            .node(id)
            .and_then(|n| n.outputs.first().cloned())
            .ok_or("no type")?;
        let mut p = Patch::default();
        let e = p.add(
            Op::Embedding,
            vec![PatchValue::Graph(table), PatchValue::Graph(ids)],
            ty,
        );
        p.replace.push((id.into(), e));
        Ok(Some(p))
    }
}

/// `Cast` to the dtype its operand already has → the operand.
pub struct DropNoopCast;

impl Rule for DropNoopCast {
    fn name(&self) -> &str {
        "drop-noop-cast"
    }

    fn apply(&self, g: &Graph, id: NodeId) -> Result<Option<Patch>, String> {
        let Some(o) = onnx(g, id) else {
            return Ok(None);
        };
        if o.op_type != "Cast" && o.op_type != "Identity" {
            return Ok(None);
        }
        let Some(x) = arg(g, id, 0) else {
            return Ok(None);
        };
        let Ok(from) = g.value_type(x) else {
            return Ok(None);
        };
        let to = match (o.op_type.as_str(), o.attrs.get("to")) {
            ("Identity", _) => Some(from.dtype),
            (_, Some(ligerc_ir::Attr::Int(1))) => Some(ligerc_ir::DType::F32),
            (_, Some(ligerc_ir::Attr::Int(7))) => Some(ligerc_ir::DType::I64),
            _ => None,
        };
        if to != Some(from.dtype) || g.outputs.iter().any(|out| out.value == id.into()) {
            return Ok(None);
        }
        let mut p = Patch::default();
        p.replace.push((id.into(), PatchValue::Graph(x)));
        Ok(Some(p))
    }
}
