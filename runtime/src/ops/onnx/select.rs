//! Ops that choose between elements: Where, variadic Max / Min, Trilu.

use crate::{Data, RuntimeError, Tensor};

use super::binary::mismatch;
use super::broadcast::{broadcast_shapes, zip_map};
use super::common::Ctx;
use super::strided::broadcast_to;

/// `Where(condition, x, y)`: `x` where the condition holds, else `y`, all
/// three broadcast together.
pub(super) fn where_(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let (c, x, y) = (ctx.input(0)?, ctx.input(1)?, ctx.input(2)?);
    let Data::Bool(cond) = &c.data else {
        return Err(ctx.type_err(format!("condition must be bool, got {}", c.kind())));
    };
    let shape = broadcast_shapes(ctx.op, &[&c.shape, &x.shape, &y.shape])?;
    let cond = broadcast_to(cond, &c.shape, &shape)?;
    let data = match (&x.data, &y.data) {
        (Data::F32(a), Data::F32(b)) => Data::F32(choose(&cond, a, &x.shape, b, &y.shape, &shape)?),
        (Data::I64(a), Data::I64(b)) => Data::I64(choose(&cond, a, &x.shape, b, &y.shape, &shape)?),
        (Data::Bool(a), Data::Bool(b)) => {
            Data::Bool(choose(&cond, a, &x.shape, b, &y.shape, &shape)?)
        }
        _ => return Err(mismatch(ctx, x, y, "x and y of one element type")),
    };
    ctx.tensor(shape, data)
}

fn choose<T: Copy>(
    cond: &[bool],
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    shape: &[usize],
) -> Result<Vec<T>, RuntimeError> {
    let a = broadcast_to(a, sa, shape)?;
    let b = broadcast_to(b, sb, shape)?;
    Ok(cond
        .iter()
        .zip(a.iter().zip(&b))
        .map(|(&c, (&p, &q))| if c { p } else { q })
        .collect())
}

/// Elementwise maximum or minimum of one or more broadcast operands; a NaN
/// operand gives NaN (numpy `maximum`/`minimum`).
pub(super) fn max_min(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let is_max = ctx.op == "Max";
    let first = ctx.input(0)?;
    let mut acc = first.clone();
    for &t in &ctx.inputs[1..] {
        let (shape, data) = match (&acc.data, &t.data) {
            (Data::F32(a), Data::F32(b)) => {
                let f = if is_max { fmax } else { fmin };
                let (s, v) = zip_map(ctx.op, (&acc.shape, a), (&t.shape, b), f)?;
                (s, Data::F32(v))
            }
            (Data::I64(a), Data::I64(b)) => {
                let f = if is_max { i64::max } else { i64::min };
                let (s, v) = zip_map(ctx.op, (&acc.shape, a), (&t.shape, b), f)?;
                (s, Data::I64(v))
            }
            _ => {
                return Err(mismatch(
                    ctx,
                    &acc,
                    t,
                    "float or integer operands of one type",
                ));
            }
        };
        acc = ctx.tensor(shape, data)?;
    }
    if matches!(acc.data, Data::Bool(_)) {
        return Err(ctx.type_err("expected float or integer operands, got bool"));
    }
    Ok(acc)
}

fn fmax(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

fn fmin(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.min(b)
    }
}

/// `Trilu(x [, k])`: keeps the upper (`upper = 1`, default) or lower triangle
/// of the last two dims, counted from diagonal `k`; zeroes the rest.
pub(super) fn trilu(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let x = ctx.input(0)?;
    let upper = ctx.attrs.int_or("upper", 1)? != 0;
    let k = match ctx.opt_input(1) {
        Some(_) => ctx.scalar_int_input(1, "k")?,
        None => 0,
    };
    let rank = x.shape.len();
    if rank < 2 {
        return Err(ctx.shape_err(format!("input must have rank >= 2, got {:?}", x.shape)));
    }
    let (rows, cols) = (x.shape[rank - 2], x.shape[rank - 1]);
    let keep = |i: usize, j: usize| {
        let d = j as i64 - i as i64;
        if upper { d >= k } else { d <= k }
    };
    let data = map_data!(&x.data, |v| mask_triangle(v, rows, cols, &keep));
    ctx.tensor(x.shape.clone(), data)
}

fn mask_triangle<T: Copy + Default>(
    v: &[T],
    rows: usize,
    cols: usize,
    keep: &impl Fn(usize, usize) -> bool,
) -> Vec<T> {
    let mut out = v.to_vec();
    if rows == 0 || cols == 0 {
        return out;
    }
    for mat in out.chunks_mut(rows * cols) {
        for (i, r) in mat.chunks_mut(cols).enumerate() {
            for (j, e) in r.iter_mut().enumerate() {
                if !keep(i, j) {
                    *e = T::default();
                }
            }
        }
    }
    out
}
