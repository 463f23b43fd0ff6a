//! Constant folding of weight-only arithmetic that exporters leave behind
//! (`Transpose(W)` before a MatMul, `Sqrt(CastLike(0.25, q))` scales, …).
//!
//! Folds a node when every operand is a weight or literal and its op is one
//! of: Identity, Cast, CastLike, Transpose, Reshape, Neg, Sqrt, Reciprocal, and
//! Add/Sub/Mul/Div of equal shapes or with a one-element side. Results of more
//! than 64 elements become weights named after the node; smaller ones literals.

use ligerc_ir::{Attr, DType, Graph, NodeId, Op, TensorData};

use crate::raise::trace::{constant, onnx};
use crate::rewrite::{Patch, Rule};

/// The folding rule.
pub struct FoldConstants;

fn dtype_of_code(code: i64) -> Option<DType> {
    Some(match code {
        1 => DType::F32,
        10 => DType::F16,
        16 => DType::BF16,
        11 => DType::F64,
        7 => DType::I64,
        6 => DType::I32,
        3 => DType::I8,
        2 => DType::U8,
        9 => DType::Bool,
        _ => return None,
    })
}

fn transpose(t: &TensorData, perm: &[usize]) -> Option<TensorData> {
    let shape = t.shape();
    if perm.len() != shape.len() {
        return None;
    }
    let out_shape: Vec<usize> = perm
        .iter()
        .map(|&p| shape.get(p).copied())
        .collect::<Option<_>>()?;
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    let src = t.to_f64_vec();
    let mut out = Vec::with_capacity(src.len());
    let mut idx = vec![0usize; out_shape.len()];
    for _ in 0..src.len() {
        let off: usize = idx.iter().zip(perm).map(|(&i, &p)| i * strides[p]).sum();
        out.push(*src.get(off)?);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    TensorData::from_f64_as(t.dtype(), out_shape, &out).ok()
}

/// ONNX Reshape of a constant (0 copies a dim, one -1 is inferred).
fn reshape(a: &TensorData, spec: &[i64]) -> Option<TensorData> {
    let mut dims = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            0 => dims.push(*a.shape().get(i)?),
            -1 if infer.is_none() => {
                infer = Some(i);
                dims.push(1);
            }
            d if d > 0 => dims.push(d as usize),
            _ => return None,
        }
    }
    if let Some(i) = infer {
        let known: usize = dims.iter().product();
        if known == 0 || !a.numel().is_multiple_of(known) {
            return None;
        }
        dims[i] = a.numel() / known;
    }
    a.reshaped(dims).ok()
}

fn binary(op: &str, a: &TensorData, b: &TensorData) -> Option<TensorData> {
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    let shape = if a.numel() >= b.numel() {
        a.shape()
    } else {
        b.shape()
    };
    if !(a.shape() == b.shape() || a.numel() == 1 || b.numel() == 1) {
        return None;
    }
    let n = x.len().max(y.len());
    let get = |v: &[f64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
    let f = |p: f64, q: f64| match op {
        "Add" => p + q,
        "Sub" => p - q,
        "Mul" => p * q,
        _ => p / q,
    };
    // Compute in the operands' precision: f32 math for f32 tensors, like the runtime.
    let vals: Vec<f64> = (0..n)
        .map(|i| {
            if a.dtype() == DType::F32 {
                f(get(&x, i) as f32 as f64, get(&y, i) as f32 as f64) as f32 as f64
            } else {
                f(get(&x, i), get(&y, i))
            }
        })
        .collect();
    if a.dtype().is_int() && op == "Div" {
        return None;
    }
    TensorData::from_f64_as(a.dtype(), shape.to_vec(), &vals).ok()
}

impl Rule for FoldConstants {
    fn name(&self) -> &str {
        "fold-constants"
    }

    fn apply(&self, g: &Graph, id: NodeId) -> Result<Option<Patch>, String> {
        let Some(o) = onnx(g, id) else {
            return Ok(None);
        };
        let operands = g.operands(id);
        if operands.is_empty() {
            return Ok(None);
        }
        // CastLike reads only the dtype of its second operand.
        if o.op_type == "CastLike"
            && let (Some(a), Some(like)) = (
                operands.first().and_then(|v| constant(g, *v)),
                operands.get(1),
            )
            && constant(g, *like).is_none()
        {
            let Ok(ty) = g.value_type(*like) else {
                return Ok(None);
            };
            let Ok(t) = TensorData::from_f64_as(ty.dtype, a.shape().to_vec(), &a.to_f64_vec())
            else {
                return Ok(None);
            };
            let mut p = Patch::default();
            let c = p.add(
                Op::Const(t.clone()),
                vec![],
                ligerc_ir::TensorType::fixed(t.dtype(), t.shape()),
            );
            p.replace.push((id.into(), c));
            return Ok(Some(p));
        }
        let Some(vals): Option<Vec<TensorData>> =
            operands.iter().map(|v| constant(g, *v)).collect()
        else {
            return Ok(None);
        };
        let folded = match (o.op_type.as_str(), vals.as_slice()) {
            ("Identity", [a]) => Some(a.clone()),
            ("Cast", [a]) => match o.attrs.get("to") {
                Some(Attr::Int(c)) => dtype_of_code(*c).and_then(|d| {
                    TensorData::from_f64_as(d, a.shape().to_vec(), &a.to_f64_vec()).ok()
                }),
                _ => None,
            },
            ("CastLike", [a, like]) => {
                TensorData::from_f64_as(like.dtype(), a.shape().to_vec(), &a.to_f64_vec()).ok()
            }
            ("Transpose", [a]) => {
                let perm: Vec<usize> = match o.attrs.get("perm") {
                    Some(Attr::Ints(p)) => p.iter().map(|&x| x as usize).collect(),
                    _ => (0..a.shape().len()).rev().collect(),
                };
                transpose(a, &perm)
            }
            ("Neg" | "Sqrt" | "Reciprocal", [a]) if a.dtype().is_float() => {
                let f = |v: f64| match o.op_type.as_str() {
                    "Neg" => -v,
                    "Sqrt" => (v as f32).sqrt() as f64,
                    _ => (1.0 / v as f32) as f64,
                };
                TensorData::from_f64_as(
                    a.dtype(),
                    a.shape().to_vec(),
                    &a.to_f64_vec().into_iter().map(f).collect::<Vec<_>>(),
                )
                .ok()
            }
            ("Add" | "Sub" | "Mul" | "Div", [a, b]) if a.dtype() == b.dtype() => {
                binary(&o.op_type, a, b)
            }
            ("Reshape", [a, shape]) => reshape(a, &shape.to_i64_vec()),
            _ => None,
        };
        let Some(t) = folded else { return Ok(None) };
        if g.node(id).and_then(|n| n.outputs.len().checked_sub(1)) != Some(0) {
            return Ok(None);
        }
        let mut p = Patch::default();
        let v = if t.numel() > 64 {
            let base = g
                .node(id)
                .and_then(|n| n.name.clone())
                .unwrap_or_else(|| format!("folded_{}", id.index()));
            let mut name = base.clone();
            let mut k = 1;
            while g.weights.contains_key(&name) {
                name = format!("{base}.{k}");
                k += 1;
            }
            p.weight(&name, t)
        } else {
            let ty = ligerc_ir::TensorType::fixed(t.dtype(), t.shape());
            p.add(Op::Const(t), vec![], ty)
        };
        p.replace.push((id.into(), v));
        Ok(Some(p))
    }
}
