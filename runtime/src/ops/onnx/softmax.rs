//! Softmax along one axis (opset 13 semantics; `axis` defaults to -1).
//!
//! Numerically stable: the row maximum is subtracted before `exp`. A row
//! that is entirely `-inf` yields NaN, as in ONNX's reference and
//! onnxruntime (exporters follow Softmax with IsNaN/Where for that case).

use rayon::prelude::*;

use crate::{Data, RuntimeError, Tensor};

use super::broadcast::PAR_THRESHOLD;
use super::common::{Ctx, product};

/// In-place softmax of one contiguous row.
pub(super) fn softmax_row(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// `Softmax(x)` along attribute `axis`.
pub(super) fn softmax(ctx: &Ctx) -> Result<Tensor, RuntimeError> {
    let x = ctx.input(0)?;
    let v = ctx.f32_input(0, "input")?;
    let rank = x.shape.len();
    if rank == 0 {
        return Err(ctx.shape_err("input must have rank >= 1"));
    }
    let axis = ctx.axis(ctx.attrs.int_or("axis", -1)?, rank)?;
    let n = x.shape[axis];
    let inner = product(&x.shape[axis + 1..]);
    let mut out = v.to_vec();
    if out.len() != ctx.numel(&x.shape)? {
        return Err(ctx.shape_err("input data does not match its shape"));
    }
    if n == 0 || out.is_empty() {
        return ctx.tensor(x.shape.clone(), Data::F32(out));
    }
    if inner == 1 {
        if out.len() >= PAR_THRESHOLD {
            out.par_chunks_mut(n).for_each(softmax_row);
        } else {
            out.chunks_mut(n).for_each(softmax_row);
        }
    } else {
        // Gather each strided row into a buffer, normalize, scatter back.
        let mut buf = vec![0f32; n];
        for block in out.chunks_mut(n * inner) {
            for i in 0..inner {
                for (j, b) in buf.iter_mut().enumerate() {
                    *b = block[j * inner + i];
                }
                softmax_row(&mut buf);
                for (j, b) in buf.iter().enumerate() {
                    block[j * inner + i] = *b;
                }
            }
        }
    }
    ctx.tensor(x.shape.clone(), Data::F32(out))
}
