//! Concat and Split along one axis.
//!
//! Both see a tensor as `[outer, dim, inner]` around the axis: concatenation
//! interleaves each operand's `dim·inner` chunk per outer index, splitting
//! cuts every chunk at the split points.

use crate::{Data, RuntimeError, Tensor};

use super::common::{Ctx, product};

/// `Concat(inputs…)` along attribute `axis` (negative counts from the end).
pub(super) fn concat(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let first = ctx.input(0)?;
    let rank = first.shape.len();
    let axis = ctx.axis(ctx.attrs.int("axis")?, rank)?;
    let mut shape = first.shape.clone();
    shape[axis] = 0;
    for t in ctx.inputs {
        let same_rest =
            t.shape.len() == rank && (0..rank).all(|d| d == axis || t.shape[d] == first.shape[d]);
        if !same_rest {
            return Err(ctx.shape_err(format!(
                "operand {:?} does not match {:?} outside axis {axis}",
                t.shape, first.shape
            )));
        }
        shape[axis] = shape[axis]
            .checked_add(t.shape[axis])
            .ok_or_else(|| ctx.shape_err("concatenated dim overflows"))?;
    }
    ctx.numel(&shape)?;
    let outer = product(&first.shape[..axis]);
    let inner = product(&first.shape[axis + 1..]);
    let chunks: Vec<usize> = ctx.inputs.iter().map(|t| t.shape[axis] * inner).collect();
    let data = match &first.data {
        Data::F32(_) => Data::F32(join(ctx, outer, &chunks, |t| match &t.data {
            Data::F32(v) => Some(&v[..]),
            _ => None,
        })?),
        Data::I64(_) => Data::I64(join(ctx, outer, &chunks, |t| match &t.data {
            Data::I64(v) => Some(&v[..]),
            _ => None,
        })?),
        Data::Bool(_) => Data::Bool(join(ctx, outer, &chunks, |t| match &t.data {
            Data::Bool(v) => Some(&v[..]),
            _ => None,
        })?),
    };
    ctx.tensor(shape, data)
}

/// Interleaves the operands' chunks; `elems` picks each operand's elements
/// when it has the first operand's element type.
fn join<'a, T: Copy + 'a>(
    ctx: &Ctx<'a>,
    outer: usize,
    chunks: &[usize],
    elems: impl Fn(&'a Tensor) -> Option<&'a [T]>,
) -> Result<Vec<T>, RuntimeError> {
    let parts = ctx
        .inputs
        .iter()
        .map(|&t| {
            elems(t).ok_or_else(|| {
                ctx.type_err(format!(
                    "operands mix {} and {}",
                    ctx.inputs[0].kind(),
                    t.kind()
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let total: usize = chunks.iter().sum::<usize>() * outer;
    let mut out = Vec::with_capacity(total);
    for o in 0..outer {
        for (p, &c) in parts.iter().zip(chunks) {
            let piece = p
                .get(o * c..(o + 1) * c)
                .ok_or_else(|| ctx.shape_err("operand data does not match its shape"))?;
            out.extend_from_slice(piece);
        }
    }
    Ok(out)
}

/// `Split(x [, split])` along attribute `axis` into as many results as the
/// node declares: sizes from the `split` operand (or the opset < 13
/// attribute), else equal chunks with a smaller last one (`num_outputs`).
pub(super) fn split(ctx: &Ctx) -> Result<Vec<Tensor>, RuntimeError> {
    let x = ctx.input(0)?;
    let rank = x.shape.len();
    let axis = ctx.axis(ctx.attrs.int_or("axis", 0)?, rank)?;
    let dim = x.shape[axis];
    let count = match (ctx.out_types.len(), ctx.attrs.int_or("num_outputs", 0)?) {
        (0, 0) => return Err(ctx.shape_err("the number of results is unknown")),
        (0, n) => ctx.dim(n, "num_outputs")?,
        (n, _) => n,
    };
    // An empty `split` operand means "not given".
    let explicit: Option<Vec<i64>> = match ctx.opt_input(1) {
        Some(t) if t.numel() > 0 => Some(ctx.ints_input(1, "split")?.to_vec()),
        Some(_) => None,
        None => ctx.attrs.ints_opt("split")?.map(<[i64]>::to_vec),
    };
    let sizes: Vec<usize> = match explicit {
        Some(s) => {
            let s = s
                .iter()
                .map(|&v| ctx.dim(v, "split"))
                .collect::<Result<Vec<_>, _>>()?;
            if s.len() != count || s.iter().sum::<usize>() != dim {
                return Err(ctx.shape_err(format!(
                    "split {s:?} must have {count} entries summing to dim {dim} of {:?}",
                    x.shape
                )));
            }
            s
        }
        None => {
            let chunk = dim.div_ceil(count.max(1));
            (0..count)
                .map(|i| chunk.min(dim.saturating_sub(i * chunk)))
                .collect()
        }
    };
    let outer = product(&x.shape[..axis]);
    let inner = product(&x.shape[axis + 1..]);
    let mut start = 0;
    let mut results = Vec::with_capacity(count);
    for &size in &sizes {
        let mut shape = x.shape.clone();
        shape[axis] = size;
        let data = map_data!(&x.data, |v| cut(
            ctx,
            v,
            outer,
            dim * inner,
            start * inner,
            size * inner
        )?);
        results.push(ctx.tensor(shape, data)?);
        start += size;
    }
    Ok(results)
}

/// `[from, from + len)` of every `stride`-long chunk of `v`.
fn cut<T: Copy>(
    ctx: &Ctx,
    v: &[T],
    outer: usize,
    stride: usize,
    from: usize,
    len: usize,
) -> Result<Vec<T>, RuntimeError> {
    let mut out = Vec::with_capacity(outer * len);
    for o in 0..outer {
        let s = o * stride + from;
        out.extend_from_slice(
            v.get(s..s + len)
                .ok_or_else(|| ctx.shape_err("input data does not match its shape"))?,
        );
    }
    Ok(out)
}
