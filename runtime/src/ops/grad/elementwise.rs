//! Backward of the generic ONNX ops a raised Llama graph may keep.
//!
//! Add, Sub, Mul and Div broadcast like numpy: each operand's gradient is the
//! elementwise gradient summed (in f64) over the axes along which that operand
//! was broadcast. Neg negates, Identity and float-to-float Cast pass the
//! gradient through; Reshape, Flatten, Squeeze and Unsqueeze reshape it back;
//! Transpose applies the inverse permutation. Integer operands, shape and
//! axes operands, and casts to integer types have no gradient; any other op
//! is unsupported.

use ligerc_ir::{AttrReader, OnnxOp};
use rayon::prelude::*;

use super::not_differentiable;
use crate::ops::high::kernels::f32_data;
use crate::{RuntimeError, Tensor};

/// Backward of the ONNX op `o`: one gradient per `wrt` entry.
pub(super) fn onnx_vjp(
    o: &OnnxOp,
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
) -> Result<Vec<Tensor>, RuntimeError> {
    let op = o.op_type.as_str();
    match op {
        "Add" | "Sub" | "Mul" | "Div" => arith_vjp(op, fwd, dy, wrt),
        "Neg" | "Identity" => pass_through(op, fwd, dy, wrt, op == "Neg"),
        "Cast" => cast_vjp(o, fwd, dy, wrt),
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => reshape_vjp(op, fwd, dy, wrt),
        "Transpose" => transpose_vjp(o, fwd, dy, wrt),
        other => Err(RuntimeError::Unsupported(format!(
            "no backward rule for onnx.{other}"
        ))),
    }
}

/// Operand `i` of `op`, or a shape error when it is missing.
fn operand<'t>(op: &str, fwd: &[&'t Tensor], i: usize) -> Result<&'t Tensor, RuntimeError> {
    fwd.get(i)
        .copied()
        .ok_or_else(|| RuntimeError::Shape(format!("onnx.{op}: operand {i} is missing")))
}

/// The f32 data of operand `i`; an integer or bool operand has no gradient.
fn float_operand<'t>(op: &str, fwd: &[&'t Tensor], i: usize) -> Result<&'t [f32], RuntimeError> {
    let t = operand(op, fwd, i)?;
    if t.kind() != "f32" {
        return Err(not_differentiable(
            &format!("onnx.{op}"),
            i,
            &format!("{} tensor", t.kind()),
        ));
    }
    f32_data(t, &format!("onnx.{op} operand {i}"))
}

/// The result gradient, checked to be f32 and shaped `want`.
fn result_grad<'t>(op: &str, dy: &'t Tensor, want: &[usize]) -> Result<&'t [f32], RuntimeError> {
    let g = f32_data(dy, &format!("onnx.{op} result gradient"))?;
    if dy.shape != want {
        return Err(RuntimeError::Shape(format!(
            "onnx.{op} result gradient is {:?}, expected {want:?}",
            dy.shape
        )));
    }
    Ok(g)
}

/// Right-aligned numpy broadcast of two shapes, or a shape error.
fn broadcast(op: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>, RuntimeError> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |k| s[k]);
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(RuntimeError::Shape(format!(
                "onnx.{op}: shapes {a:?} and {b:?} do not broadcast together"
            ))),
        })
        .collect()
}

/// Strides (in elements) of `shape` read as `out`-shaped through broadcasting:
/// 0 on the axes `shape` lacks or has as 1.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut strides = vec![0usize; out.len()];
    let mut step = 1usize;
    for (k, &dim) in shape.iter().enumerate().rev() {
        let o = out.len() - shape.len() + k;
        strides[o] = if dim == 1 { 0 } else { step };
        step *= dim;
    }
    strides
}

/// Calls `f(flat, offset)` for every element of a row-major `shape`, with
/// `offset = Σ index_i·strides_i`.
fn for_each_offset(shape: &[usize], strides: &[usize], mut f: impl FnMut(usize, usize)) {
    let numel: usize = shape.iter().product();
    let mut index = vec![0usize; shape.len()];
    let mut offset = 0usize;
    for flat in 0..numel {
        f(flat, offset);
        for k in (0..shape.len()).rev() {
            index[k] += 1;
            offset += strides[k];
            if index[k] < shape[k] {
                break;
            }
            offset -= strides[k] * shape[k];
            index[k] = 0;
        }
    }
}

/// Add, Sub, Mul, Div: `da = Σ_bcast dy·∂(a∘b)/∂a`, `db` likewise.
fn arith_vjp(
    op: &str,
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
) -> Result<Vec<Tensor>, RuntimeError> {
    let (ta, tb) = (operand(op, fwd, 0)?, operand(op, fwd, 1)?);
    let out = broadcast(op, &ta.shape, &tb.shape)?;
    let g = result_grad(op, dy, &out)?;
    let a = float_operand(op, fwd, 0)?;
    let b = float_operand(op, fwd, 1)?;
    let (sa, sb) = (
        broadcast_strides(&ta.shape, &out),
        broadcast_strides(&tb.shape, &out),
    );
    wrt.iter()
        .map(|&i| {
            let target = if i == 0 { ta } else { tb };
            let local = local_grad(op, i);
            if ta.shape == tb.shape {
                // No broadcasting (residual adds): a plain elementwise map.
                let data = (0..g.len())
                    .into_par_iter()
                    .map(|k| local(g[k], a[k], b[k]) as f32)
                    .collect();
                return Tensor::f32(target.shape.clone(), data);
            }
            let mut acc = vec![0.0f64; target.numel()];
            for_each_pair(&out, &sa, &sb, |flat, oa, ob| {
                acc[if i == 0 { oa } else { ob }] += local(g[flat], a[oa], b[ob]);
            });
            Tensor::f32(
                target.shape.clone(),
                acc.into_iter().map(|v| v as f32).collect(),
            )
        })
        .collect()
}

/// Calls `f(flat, offset_a, offset_b)` for every element of a row-major
/// `shape` read through two sets of broadcast strides.
fn for_each_pair(
    shape: &[usize],
    sa: &[usize],
    sb: &[usize],
    mut f: impl FnMut(usize, usize, usize),
) {
    let numel: usize = shape.iter().product();
    let mut index = vec![0usize; shape.len()];
    let (mut oa, mut ob) = (0usize, 0usize);
    for flat in 0..numel {
        f(flat, oa, ob);
        for k in (0..shape.len()).rev() {
            index[k] += 1;
            oa += sa[k];
            ob += sb[k];
            if index[k] < shape[k] {
                break;
            }
            oa -= sa[k] * shape[k];
            ob -= sb[k] * shape[k];
            index[k] = 0;
        }
    }
}

/// `dy·∂(a∘b)/∂operand` for one element, in f64.
fn local_grad(op: &str, operand: usize) -> fn(f32, f32, f32) -> f64 {
    match (op, operand) {
        ("Add", _) | ("Sub", 0) => |g, _, _| g as f64,
        ("Sub", _) => |g, _, _| -(g as f64),
        ("Mul", 0) => |g, _, b| g as f64 * b as f64,
        ("Mul", _) => |g, a, _| g as f64 * a as f64,
        (_, 0) => |g, _, b| g as f64 / b as f64,
        _ => |g, a, b| -(g as f64) * a as f64 / (b as f64 * b as f64),
    }
}

/// Neg (`dx = −dy`) and Identity (`dx = dy`).
fn pass_through(
    op: &str,
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
    negate: bool,
) -> Result<Vec<Tensor>, RuntimeError> {
    let x = operand(op, fwd, 0)?;
    float_operand(op, fwd, 0)?;
    let g = result_grad(op, dy, &x.shape)?;
    let data = if negate {
        g.iter().map(|v| -v).collect()
    } else {
        g.to_vec()
    };
    let dx = Tensor::f32(x.shape.clone(), data)?;
    Ok(wrt.iter().map(|_| dx.clone()).collect())
}

/// ONNX dtype codes of the float types (float, float16, double, bfloat16).
const FLOAT_CODES: [i64; 4] = [1, 10, 11, 16];

/// Cast: a float-to-float cast passes the gradient through (the rounding to
/// a narrower float is treated as the identity); a cast to an integer or
/// bool type, or from one, has no gradient.
fn cast_vjp(
    o: &OnnxOp,
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
) -> Result<Vec<Tensor>, RuntimeError> {
    let code = AttrReader::new(&o.op_type, &o.attrs).int("to")?;
    if !FLOAT_CODES.contains(&code) {
        let what = format!("cast to ONNX dtype code {code}, not a float type");
        return Err(not_differentiable("onnx.Cast", 0, &what));
    }
    pass_through("Cast", fwd, dy, wrt, false)
}

/// Reshape, Flatten, Squeeze, Unsqueeze: the gradient reshaped back to the
/// input's shape; the shape or axes operand has no gradient.
fn reshape_vjp(
    op: &str,
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
) -> Result<Vec<Tensor>, RuntimeError> {
    if let Some(&w) = wrt.iter().find(|&&w| w != 0) {
        return Err(not_differentiable(
            &format!("onnx.{op}"),
            w,
            "shape or axes",
        ));
    }
    let x = operand(op, fwd, 0)?;
    float_operand(op, fwd, 0)?;
    let g = f32_data(dy, &format!("onnx.{op} result gradient"))?;
    if g.len() != x.numel() {
        return Err(RuntimeError::Shape(format!(
            "onnx.{op} result gradient {:?} has {} elements, input {:?} has {}",
            dy.shape,
            g.len(),
            x.shape,
            x.numel()
        )));
    }
    let dx = Tensor::f32(x.shape.clone(), g.to_vec())?;
    Ok(wrt.iter().map(|_| dx.clone()).collect())
}

/// Transpose: the gradient moved back through the inverse permutation
/// (result axis `k` is input axis `perm[k]`; default `perm` reverses).
fn transpose_vjp(
    o: &OnnxOp,
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
) -> Result<Vec<Tensor>, RuntimeError> {
    let x = operand("Transpose", fwd, 0)?;
    float_operand("Transpose", fwd, 0)?;
    let perm = permutation(o, x.shape.len())?;
    let out: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let g = result_grad("Transpose", dy, &out)?;
    let mut own = vec![1usize; x.shape.len()];
    for k in (0..x.shape.len().saturating_sub(1)).rev() {
        own[k] = own[k + 1] * x.shape[k + 1];
    }
    let strides: Vec<usize> = perm.iter().map(|&p| own[p]).collect();
    let mut dx = vec![0.0f32; g.len()];
    for_each_offset(&out, &strides, |flat, at| dx[at] = g[flat]);
    let dx = Tensor::f32(x.shape.clone(), dx)?;
    Ok(wrt.iter().map(|_| dx.clone()).collect())
}

/// The `perm` attribute of a Transpose on a rank-`rank` input, checked to be
/// a permutation of `0..rank` (negative axes count from the end).
fn permutation(o: &OnnxOp, rank: usize) -> Result<Vec<usize>, RuntimeError> {
    let Some(raw) = AttrReader::new(&o.op_type, &o.attrs).ints_opt("perm")? else {
        return Ok((0..rank).rev().collect());
    };
    let mut seen = vec![false; rank];
    let perm: Option<Vec<usize>> = raw
        .iter()
        .map(|&p| {
            let axis = if p < 0 { p + rank as i64 } else { p };
            let axis = usize::try_from(axis).ok().filter(|&a| a < rank)?;
            (!std::mem::replace(&mut seen[axis], true)).then_some(axis)
        })
        .collect();
    match perm {
        Some(p) if p.len() == rank => Ok(p),
        _ => Err(RuntimeError::Shape(format!(
            "onnx.Transpose: perm {raw:?} is not a permutation of a rank-{rank} input"
        ))),
    }
}
