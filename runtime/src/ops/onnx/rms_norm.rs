//! `RMSNormalization(X, scale)` (opset 23).
//!
//! Over the trailing dims from `axis` (default -1):
//! `Y = X · 1/sqrt(mean(X²) + epsilon) · scale`, with `scale` broadcast to
//! `X` (normally the shape of the normalized dims). Computed in f32
//! (`stash_type = 1`, the only type the ONNX reference implements); the mean
//! of squares accumulates in f64.

use rayon::prelude::*;

use crate::{Data, RuntimeError, Tensor};

use super::broadcast::{PAR_THRESHOLD, broadcast_pair, zip_map};
use super::common::{Ctx, product};

/// Runs RMSNormalization.
pub(super) fn rms_normalization(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let x = ctx.input(0)?;
    let xv = ctx.f32_input(0, "X")?;
    let scale = ctx.input(1)?;
    let sv = ctx.f32_input(1, "scale")?;
    let rank = x.shape.len();
    if rank == 0 {
        return Err(ctx.shape_err("X must have rank >= 1"));
    }
    let axis = ctx.axis(ctx.attrs.int_or("axis", -1)?, rank)?;
    let eps = ctx.attrs.float_or("epsilon", 1e-5)? as f32;
    let stash = ctx.attrs.int_or("stash_type", 1)?;
    if stash != 1 {
        return Err(ctx.unsupported(format!("stash_type {stash} (only 1, float, is defined)")));
    }
    if broadcast_pair(&scale.shape, &x.shape).as_deref() != Some(&x.shape[..]) {
        return Err(ctx.shape_err(format!(
            "scale {:?} does not broadcast to X {:?}",
            scale.shape, x.shape
        )));
    }
    let inner = product(&x.shape[axis..]);
    if xv.len() != ctx.numel(&x.shape)? {
        return Err(ctx.shape_err("X data does not match its shape"));
    }
    let mut y = xv.to_vec();
    if inner == 0 {
        return ctx.tensor(x.shape.clone(), Data::F32(y));
    }
    // The usual case: scale covers exactly the normalized dims.
    let trailing = scale.numel() == inner
        && scale
            .shape
            .iter()
            .skip_while(|&&d| d == 1)
            .eq(x.shape[axis..].iter().skip_while(|&&d| d == 1));
    let norm = |row: &mut [f32]| {
        let ms = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            / row.len() as f64;
        let inv = 1.0 / ((ms as f32) + eps).sqrt();
        if trailing {
            for (v, &s) in row.iter_mut().zip(sv) {
                *v = (*v * inv) * s;
            }
        } else {
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    };
    if y.len() >= PAR_THRESHOLD {
        y.par_chunks_mut(inner).for_each(norm);
    } else {
        y.chunks_mut(inner).for_each(norm);
    }
    if !trailing {
        let (_, scaled) = zip_map(ctx.op, (&x.shape, &y), (&scale.shape, sv), |a, b| a * b)?;
        y = scaled;
    }
    ctx.tensor(x.shape.clone(), Data::F32(y))
}
