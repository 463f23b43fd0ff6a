//! Ops that rearrange elements through a strided view: Transpose, Expand,
//! Tile.

use crate::{RuntimeError, Tensor};

use super::broadcast::broadcast_pair;
use super::common::{Ctx, contiguous_strides};
use super::strided::{broadcast_strides, gather_strided};

/// `Transpose(x)`: result dim `i` is input dim `perm[i]` (default: reversed).
pub(super) fn transpose(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let x = ctx.input(0)?;
    let rank = x.shape.len();
    let perm: Vec<usize> = match ctx.attrs.ints_opt("perm")? {
        Some(p) => {
            if p.len() != rank {
                return Err(ctx.shape_err(format!("perm {p:?} does not fit rank {rank}")));
            }
            ctx.axes(p, rank)?
        }
        None => (0..rank).rev().collect(),
    };
    let own = contiguous_strides(&x.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let strides: Vec<isize> = perm.iter().map(|&p| own[p] as isize).collect();
    let data = map_data!(&x.data, |v| gather_strided(v, &shape, &strides, 0)?);
    ctx.tensor(shape, data)
}

/// `Expand(x, shape)`: `x` broadcast with `shape` (in both directions).
pub(super) fn expand(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let x = ctx.input(0)?;
    let target = ctx
        .ints_input(1, "shape")?
        .iter()
        .map(|&d| ctx.dim(d, "shape"))
        .collect::<Result<Vec<_>, _>>()?;
    let shape = broadcast_pair(&x.shape, &target).ok_or_else(|| {
        ctx.shape_err(format!(
            "input {:?} does not broadcast with shape {target:?}",
            x.shape
        ))
    })?;
    ctx.numel(&shape)?;
    let strides = broadcast_strides(&x.shape, &shape);
    let data = map_data!(&x.data, |v| gather_strided(v, &shape, &strides, 0)?);
    ctx.tensor(shape, data)
}

/// `Tile(x, repeats)`: dim `d` repeated `repeats[d]` times.
///
/// Read as the shape `[r0, d0, r1, d1, …]` with strides `[0, s0, 0, s1, …]`,
/// the tiled tensor is a plain strided view of `x`.
pub(super) fn tile(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let x = ctx.input(0)?;
    let repeats = ctx.ints_input(1, "repeats")?;
    if repeats.len() != x.shape.len() {
        return Err(ctx.shape_err(format!(
            "repeats {repeats:?} must have one entry per dim of {:?}",
            x.shape
        )));
    }
    let own = contiguous_strides(&x.shape);
    let mut view_shape = Vec::with_capacity(2 * repeats.len());
    let mut view_strides = Vec::with_capacity(2 * repeats.len());
    let mut shape = Vec::with_capacity(repeats.len());
    for (d, &r) in repeats.iter().enumerate() {
        let r = ctx.dim(r, "repeats")?;
        view_shape.extend([r, x.shape[d]]);
        view_strides.extend([0, own[d] as isize]);
        shape.push(
            r.checked_mul(x.shape[d])
                .ok_or_else(|| ctx.shape_err("tiled shape overflows"))?,
        );
    }
    ctx.numel(&shape)?;
    let data = map_data!(&x.data, |v| gather_strided(
        v,
        &view_shape,
        &view_strides,
        0
    )?);
    ctx.tensor(shape, data)
}
