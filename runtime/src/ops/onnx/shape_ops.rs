//! Ops that read or change a shape but never move elements: Shape, Reshape,
//! Flatten, Squeeze, Unsqueeze.

use crate::{Data, RuntimeError, Tensor};

use super::common::{Ctx, product};

/// `Shape(x)`: the dims of `x` as i64, optionally `[start, end)` of them
/// (negative bounds count from the end; both are clamped to the rank).
pub(super) fn shape(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let x = ctx.input(0)?;
    let rank = x.shape.len() as i64;
    let clamp = |v: i64| {
        let v = if v < 0 { v.saturating_add(rank) } else { v };
        v.clamp(0, rank) as usize
    };
    let start = clamp(ctx.attrs.int_or("start", 0)?);
    let end = clamp(ctx.attrs.int_or("end", rank)?);
    let dims: Vec<i64> = x.shape[start..end.max(start)]
        .iter()
        .map(|&d| d as i64)
        .collect();
    ctx.tensor(vec![dims.len()], Data::I64(dims))
}

/// `Reshape(x, shape)`: `0` copies the input dim at that index (unless
/// `allowzero = 1`, where it means a zero dim) and one `-1` is inferred.
pub(super) fn reshape(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let x = ctx.input(0)?;
    let spec = ctx.ints_input(1, "shape")?;
    let allow_zero = ctx.attrs.int_or("allowzero", 0)? != 0;
    let numel = ctx.numel(&x.shape)?;
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        out.push(match d {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err(ctx.shape_err(format!("shape {spec:?} has more than one -1")));
                }
                1
            }
            0 if !allow_zero => *x.shape.get(i).ok_or_else(|| {
                ctx.shape_err(format!(
                    "shape {spec:?}: 0 at index {i} copies a dim {:?} lacks",
                    x.shape
                ))
            })?,
            d => ctx.dim(d, "shape")?,
        });
    }
    if allow_zero && infer.is_some() && spec.contains(&0) {
        return Err(ctx.shape_err(format!(
            "shape {spec:?} has both 0 and -1 with allowzero = 1"
        )));
    }
    let known = ctx.numel(&out)?;
    if let Some(i) = infer {
        if known == 0 || numel % known != 0 {
            return Err(ctx.shape_err(format!(
                "cannot infer the -1 in {spec:?} for {} elements of {:?}",
                numel, x.shape
            )));
        }
        out[i] = numel / known;
    } else if known != numel {
        return Err(ctx.shape_err(format!(
            "cannot reshape {:?} ({numel} elements) to {spec:?} ({known} elements)",
            x.shape
        )));
    }
    ctx.tensor(out, x.data.clone())
}

/// `Flatten(x)`: `[d0·…·d(axis-1), d(axis)·…·d(r-1)]`; `axis` in `[-r, r]`.
pub(super) fn flatten(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let x = ctx.input(0)?;
    let rank = x.shape.len();
    let raw = ctx.attrs.int_or("axis", 1)?;
    let r = rank as i64;
    let axis = if raw < 0 { raw.saturating_add(r) } else { raw };
    if !(0..=r).contains(&axis) {
        return Err(ctx.shape_err(format!("axis {raw} is out of range [-{r}, {r}]")));
    }
    let axis = axis as usize;
    let shape = vec![product(&x.shape[..axis]), product(&x.shape[axis..])];
    ctx.tensor(shape, x.data.clone())
}

/// The `axes` of Squeeze/Unsqueeze: operand 1 (opset ≥ 13) or the attribute.
fn axes_operand<'a>(ctx: &Ctx<'a>) -> Result<Option<Vec<i64>>, RuntimeError> {
    match ctx.opt_input(1) {
        Some(_) => Ok(Some(ctx.ints_input(1, "axes")?.to_vec())),
        None => Ok(ctx.attrs.ints_opt("axes")?.map(<[i64]>::to_vec)),
    }
}

/// `Squeeze(x [, axes])`: removes the listed unit dims, or every unit dim.
pub(super) fn squeeze(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let x = ctx.input(0)?;
    let rank = x.shape.len();
    let shape: Vec<usize> = match axes_operand(ctx)? {
        Some(axes) if !axes.is_empty() => {
            let axes = ctx.axes(&axes, rank)?;
            if let Some(&a) = axes.iter().find(|&&a| x.shape[a] != 1) {
                return Err(ctx.shape_err(format!(
                    "cannot squeeze axis {a} of {:?}: its size is not 1",
                    x.shape
                )));
            }
            (0..rank)
                .filter(|d| !axes.contains(d))
                .map(|d| x.shape[d])
                .collect()
        }
        _ => x.shape.iter().copied().filter(|&d| d != 1).collect(),
    };
    ctx.tensor(shape, x.data.clone())
}

/// `Unsqueeze(x, axes)`: inserts unit dims at `axes` of the result.
pub(super) fn unsqueeze(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let x = ctx.input(0)?;
    let axes = axes_operand(ctx)?.ok_or_else(|| ctx.shape_err("axes are missing"))?;
    let rank = x.shape.len() + axes.len();
    let axes = ctx.axes(&axes, rank)?;
    let mut dims = x.shape.iter();
    let shape: Vec<usize> = (0..rank)
        .map(|d| {
            if axes.contains(&d) {
                Some(1)
            } else {
                dims.next().copied()
            }
        })
        .collect::<Option<_>>()
        .ok_or_else(|| ctx.shape_err("internal: unsqueeze ran out of dims"))?;
    ctx.tensor(shape, x.data.clone())
}
