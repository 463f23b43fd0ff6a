//! Indexing ops: Gather (along one axis) and GatherND (by index tuples).
//! Negative indices count from the end; out-of-range ones are errors.

use crate::{RuntimeError, Tensor};

use super::common::{Ctx, contiguous_strides, product};

/// `index` (possibly negative) checked against a dim of size `dim`.
fn resolve(ctx: &Ctx, index: i64, dim: usize) -> Result<usize, RuntimeError> {
    let d = dim as i64;
    let i = if index < 0 {
        index.saturating_add(d)
    } else {
        index
    };
    if (0..d).contains(&i) {
        Ok(i as usize)
    } else {
        Err(ctx.shape_err(format!(
            "index {index} is out of range for a dim of size {dim}"
        )))
    }
}

/// `Gather(data, indices)` along attribute `axis` (default 0): the result
/// is `data.shape[..axis] + indices.shape + data.shape[axis+1..]`.
pub(super) fn gather(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let data = ctx.input(0)?;
    let indices = ctx.input(1)?;
    let idx = ctx.ints_input(1, "indices")?;
    let rank = data.shape.len();
    let axis = ctx.axis(ctx.attrs.int_or("axis", 0)?, rank)?;
    let dim = data.shape[axis];
    let rows = idx
        .iter()
        .map(|&i| resolve(ctx, i, dim))
        .collect::<Result<Vec<_>, _>>()?;
    let outer = product(&data.shape[..axis]);
    let inner = product(&data.shape[axis + 1..]);
    let mut shape = data.shape[..axis].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&data.shape[axis + 1..]);
    ctx.numel(&shape)?;
    let out = map_data!(&data.data, |v| take(
        ctx,
        v,
        outer,
        dim * inner,
        inner,
        &rows
    )?);
    ctx.tensor(shape, out)
}

/// For each outer block of `block` elements, the `inner`-long rows `rows`.
fn take<T: Copy>(
    ctx: &Ctx,
    v: &[T],
    outer: usize,
    block: usize,
    inner: usize,
    rows: &[usize],
) -> Result<Vec<T>, RuntimeError> {
    let mut out = Vec::with_capacity(outer * rows.len() * inner);
    for o in 0..outer {
        for &r in rows {
            let s = o * block + r * inner;
            out.extend_from_slice(
                v.get(s..s + inner)
                    .ok_or_else(|| ctx.shape_err("data does not match its shape"))?,
            );
        }
    }
    Ok(out)
}

/// `GatherND(data, indices)` with attribute `batch_dims` (default 0): the
/// last dim of `indices` holds tuples indexing `data` after the batch dims.
pub(super) fn gather_nd(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let data = ctx.input(0)?;
    let indices = ctx.input(1)?;
    let idx = ctx.ints_input(1, "indices")?;
    let b = ctx.dim(ctx.attrs.int_or("batch_dims", 0)?, "batch_dims")?;
    let (ds, is) = (&data.shape, &indices.shape);
    let Some(&k) = is.last() else {
        return Err(ctx.shape_err("indices must have rank >= 1"));
    };
    if b >= is.len() || b >= ds.len() || ds[..b] != is[..b] {
        return Err(ctx.shape_err(format!(
            "batch_dims {b}: the leading dims of data {ds:?} and indices {is:?} must match"
        )));
    }
    if k < 1 || k > ds.len() - b {
        return Err(ctx.shape_err(format!(
            "index tuples of length {k} do not fit data {ds:?} after {b} batch dims"
        )));
    }
    let batches = product(&ds[..b]);
    let tuples = product(&is[b..is.len() - 1]);
    let chunk = product(&ds[b + k..]);
    let batch_stride = product(&ds[b..]);
    let strides = contiguous_strides(&ds[b..]);
    let mut starts = Vec::with_capacity(batches * tuples);
    for (t, tuple) in idx.chunks(k).enumerate() {
        let batch = t / tuples.max(1);
        let mut off = batch * batch_stride;
        for (j, &i) in tuple.iter().enumerate() {
            off += resolve(ctx, i, ds[b + j])? * strides[j];
        }
        starts.push(off);
    }
    let mut shape = is[..is.len() - 1].to_vec();
    shape.extend_from_slice(&ds[b + k..]);
    ctx.numel(&shape)?;
    let out = map_data!(&data.data, |v| {
        let mut out = Vec::with_capacity(starts.len() * chunk);
        for &s in &starts {
            out.extend_from_slice(
                v.get(s..s + chunk)
                    .ok_or_else(|| ctx.shape_err("data does not match its shape"))?,
            );
        }
        out
    });
    ctx.tensor(shape, out)
}
