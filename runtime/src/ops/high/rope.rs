//! `Rope`: rotary position embedding, Hugging Face "rotate half" convention.

use ligerc_ir::RopeSpec;
use rayon::prelude::*;

use super::kernels::{f32_data, rank3};
use crate::{RuntimeError, Tensor};

/// Rotates every head of `x [batch, seq, heads·head_dim]`; token `t` is at
/// absolute position `position_offset + t`.
///
/// For `i < d/2` (`d = head_dim`), with `θ = pos · inv_freq[i]`:
/// `out[i] = x[i]·cos θ − x[i+d/2]·sin θ` and
/// `out[i+d/2] = x[i+d/2]·cos θ + x[i]·sin θ`.
/// As in transformers, `inv_freq` and the position are f32 and their product
/// is taken in f32 before `cos`/`sin`.
pub fn rope(x: &Tensor, spec: &RopeSpec, position_offset: usize) -> Result<Tensor, RuntimeError> {
    let xs = f32_data(x, "Rope input")?;
    let (_, seq, features) = rank3(x, "Rope input")?;
    let d = spec.head_dim;
    if d == 0 || !d.is_multiple_of(2) {
        return Err(RuntimeError::Shape(format!(
            "Rope head_dim must be even and positive, is {d}"
        )));
    }
    if spec.heads.checked_mul(d) != Some(features) {
        return Err(RuntimeError::Shape(format!(
            "Rope input has {features} features, expected {} heads × {d}",
            spec.heads
        )));
    }
    let half = d / 2;
    let inv_freq: Vec<f32> = spec.inv_freq().into_iter().map(|f| f as f32).collect();
    // cos/sin per (token, frequency), shared by every batch row and head.
    let mut cos = vec![0.0f32; seq * half];
    let mut sin = vec![0.0f32; seq * half];
    for t in 0..seq {
        let pos = (position_offset + t) as f32;
        for (i, &f) in inv_freq.iter().enumerate() {
            let angle = pos * f;
            cos[t * half + i] = angle.cos();
            sin[t * half + i] = angle.sin();
        }
    }
    let mut out = vec![0.0f32; xs.len()];
    if features > 0 && seq > 0 {
        out.par_chunks_mut(features)
            .zip(xs.par_chunks(features))
            .enumerate()
            .for_each(|(row, (o, xr))| {
                let t = row % seq;
                let (c, s) = (
                    &cos[t * half..(t + 1) * half],
                    &sin[t * half..(t + 1) * half],
                );
                for (oh, xh) in o.chunks_mut(d).zip(xr.chunks(d)) {
                    let (x1, x2) = xh.split_at(half);
                    let (o1, o2) = oh.split_at_mut(half);
                    for i in 0..half {
                        o1[i] = x1[i] * c[i] - x2[i] * s[i];
                        o2[i] = x2[i] * c[i] + x1[i] * s[i];
                    }
                }
            });
    }
    Tensor::f32(x.shape.clone(), out)
}
