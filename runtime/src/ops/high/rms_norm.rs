//! `RmsNorm`: root-mean-square normalisation over the last axis.

use rayon::prelude::*;

use super::kernels::{dot, f32_data};
use crate::{RuntimeError, Tensor};

/// `x / sqrt(mean(x²) + eps) · w` over the last axis of `x [.., D]`, `w [D]`.
///
/// Computed in f32 the way transformers' `LlamaRMSNorm` does once it has
/// upcast: the mean square, `rsqrt(var + eps)`, `x · r`, then `· w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor, RuntimeError> {
    let xs = f32_data(x, "RmsNorm input")?;
    let ws = f32_data(w, "RmsNorm weight")?;
    let dim = *x
        .shape
        .last()
        .ok_or_else(|| RuntimeError::Shape("RmsNorm input is a scalar".into()))?;
    if w.shape != [dim] {
        return Err(RuntimeError::Shape(format!(
            "RmsNorm weight is {:?}, expected [{dim}] to match input {:?}",
            w.shape, x.shape
        )));
    }
    let mut out = vec![0.0f32; xs.len()];
    if dim > 0 {
        let eps = eps as f32;
        out.par_chunks_mut(dim)
            .zip(xs.par_chunks(dim))
            .for_each(|(o, row)| {
                let sum_sq = dot(row, row);
                let r = 1.0 / (sum_sq / dim as f32 + eps).sqrt();
                for ((o, &xi), &wi) in o.iter_mut().zip(row).zip(ws) {
                    *o = wi * (xi * r);
                }
            });
    }
    Tensor::f32(x.shape.clone(), out)
}
