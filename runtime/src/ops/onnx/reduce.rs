//! ReduceMean, ReduceSum and ReduceMax.
//!
//! `axes` comes from operand 1 when present (ReduceSum since opset 13, the
//! others since 18) and from the attribute otherwise. Empty axes reduce
//! everything, unless `noop_with_empty_axes = 1`, which returns the input.
//! Reduced axes are moved innermost (a strided copy unless they already
//! are), so every result element reduces one contiguous row. Float sums
//! accumulate in f64.

use crate::{Data, RuntimeError, Tensor};

use super::common::{Ctx, contiguous_strides, product};
use super::strided::gather_strided;

/// Which reduction.
#[derive(Clone, Copy)]
enum Kind {
    Mean,
    Sum,
    Max,
}

/// Runs the reduction named by `ctx.op`.
pub(super) fn reduce(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let kind = match ctx.op {
        "ReduceMean" => Kind::Mean,
        "ReduceSum" => Kind::Sum,
        _ => Kind::Max,
    };
    let x = ctx.input(0)?;
    let rank = x.shape.len();
    let axes: Vec<i64> = match ctx.opt_input(1) {
        Some(_) => ctx.ints_input(1, "axes")?.to_vec(),
        None => ctx
            .attrs
            .ints_opt("axes")?
            .map(<[i64]>::to_vec)
            .unwrap_or_default(),
    };
    let keepdims = ctx.attrs.int_or("keepdims", 1)? != 0;
    if axes.is_empty() && ctx.attrs.int_or("noop_with_empty_axes", 0)? != 0 {
        return Ok(x.clone());
    }
    let mut reduced = if axes.is_empty() {
        (0..rank).collect()
    } else {
        ctx.axes(&axes, rank)?
    };
    reduced.sort_unstable();
    let kept: Vec<usize> = (0..rank).filter(|d| !reduced.contains(d)).collect();
    let row = product(&reduced.iter().map(|&d| x.shape[d]).collect::<Vec<_>>());
    let out_shape: Vec<usize> = (0..rank)
        .filter_map(|d| match (reduced.contains(&d), keepdims) {
            (false, _) => Some(x.shape[d]),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    let rows = product(&kept.iter().map(|&d| x.shape[d]).collect::<Vec<_>>());
    // Reduced axes innermost: a no-op when they already are.
    let order: Vec<usize> = kept.iter().chain(&reduced).copied().collect();
    let trailing = order.iter().enumerate().all(|(i, &d)| i == d);
    let own = contiguous_strides(&x.shape);
    let perm_shape: Vec<usize> = order.iter().map(|&d| x.shape[d]).collect();
    let perm_strides: Vec<isize> = order.iter().map(|&d| own[d] as isize).collect();
    let data = match &x.data {
        Data::F32(v) => {
            let moved;
            let v: &[f32] = if trailing {
                v
            } else {
                moved = gather_strided(v, &perm_shape, &perm_strides, 0)?;
                &moved
            };
            Data::F32(reduce_rows(ctx, v, rows, row, |r| reduce_f32(kind, r))?)
        }
        Data::I64(v) => {
            let moved;
            let v: &[i64] = if trailing {
                v
            } else {
                moved = gather_strided(v, &perm_shape, &perm_strides, 0)?;
                &moved
            };
            if matches!(kind, Kind::Mean) && row == 0 {
                return Err(ctx.shape_err("mean of an empty integer set"));
            }
            Data::I64(reduce_rows(ctx, v, rows, row, |r| reduce_i64(kind, r))?)
        }
        Data::Bool(_) => return Err(ctx.type_err("expected a float or integer tensor, got bool")),
    };
    ctx.tensor(out_shape, data)
}

fn reduce_rows<T: Copy, R>(
    ctx: &Ctx,
    v: &[T],
    rows: usize,
    row: usize,
    f: impl Fn(&[T]) -> R,
) -> Result<Vec<R>, RuntimeError> {
    (0..rows)
        .map(|i| {
            v.get(i * row..(i + 1) * row)
                .map(&f)
                .ok_or_else(|| ctx.shape_err("input data does not match its shape"))
        })
        .collect()
}

fn reduce_f32(kind: Kind, r: &[f32]) -> f32 {
    match kind {
        Kind::Sum => r.iter().map(|&v| f64::from(v)).sum::<f64>() as f32,
        Kind::Mean => (r.iter().map(|&v| f64::from(v)).sum::<f64>() / r.len() as f64) as f32,
        Kind::Max => r.iter().fold(f32::NEG_INFINITY, |m, &v| {
            if m.is_nan() || v.is_nan() {
                f32::NAN
            } else {
                m.max(v)
            }
        }),
    }
}

fn reduce_i64(kind: Kind, r: &[i64]) -> i64 {
    let sum = || r.iter().fold(0i64, |a, &v| a.wrapping_add(v));
    match kind {
        Kind::Sum => sum(),
        Kind::Mean => sum().wrapping_div(r.len().max(1) as i64),
        Kind::Max => r.iter().copied().max().unwrap_or(i64::MIN),
    }
}
