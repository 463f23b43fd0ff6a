//! `LigerGate`: the log-space forget gate derived from the key projection
//! (LIGER.md §3).

use ligerc_ir::{GateSpec, LigerVariant};
use rayon::prelude::*;

use super::feature::logsigmoid;
use super::high::kernels::{f32_data, rank3};
use crate::{RuntimeError, Tensor};

/// The gate of `k_raw [B, T, kv_heads·head_dim]`: `[B, T, kv_heads·width]`,
/// every entry ≤ 0.
///
/// Per KV head, with `n = spec.normalizer`:
/// - GLA, HGRN2: `logsigmoid(k_d)/n` per channel;
/// - GSA: `AdaptiveAvgPool1d` to `slots` bins (bin `i` is the mean of channels
///   `⌊i·D/M⌋ .. ⌈(i+1)·D/M⌉`), then `logsigmoid/n`;
/// - retention: `logsigmoid(mean_d k_d)/n`.
///
/// Work is split over rows `(b, t)`.
pub(crate) fn liger_gate(spec: &GateSpec, k: &Tensor) -> Result<Tensor, RuntimeError> {
    if !spec.variant.has_gate() {
        return Err(RuntimeError::Shape(format!(
            "LigerGate: variant {} has no gate",
            spec.variant
        )));
    }
    let d = spec.head_dim;
    if spec.kv_heads == 0 || d == 0 {
        return Err(RuntimeError::Shape(format!(
            "LigerGate needs kv_heads ({}) and head_dim ({d}) > 0",
            spec.kv_heads
        )));
    }
    if spec.variant == LigerVariant::Gsa && (spec.slots == 0 || spec.slots > d) {
        return Err(RuntimeError::Shape(format!(
            "LigerGate: GSA needs 1..={d} slots, has {}",
            spec.slots
        )));
    }
    if !(spec.normalizer.is_finite() && spec.normalizer > 0.0) {
        return Err(RuntimeError::Shape(format!(
            "LigerGate: the normalizer must be finite and positive, is {}",
            spec.normalizer
        )));
    }
    let ks = f32_data(k, "LigerGate key")?;
    let (batch, seq, features) = rank3(k, "LigerGate key")?;
    if spec.kv_heads.checked_mul(d) != Some(features) {
        return Err(RuntimeError::Shape(format!(
            "LigerGate key {:?} has {features} features, expected {} kv_heads × {d}",
            k.shape, spec.kv_heads
        )));
    }
    let width = spec.width();
    let out_features = spec.kv_heads * width;
    let norm = spec.normalizer as f32;
    let mut out = vec![0.0f32; batch * seq * out_features];
    if out_features > 0 {
        out.par_chunks_mut(out_features)
            .zip(ks.par_chunks(features))
            .for_each(|(o, x)| {
                for (oh, xh) in o.chunks_mut(width).zip(x.chunks(d)) {
                    gate_head(spec.variant, xh, oh, norm);
                }
            });
    }
    Tensor::f32(vec![batch, seq, out_features], out)
}

/// The gate of one head: `x` holds its `D` key channels, `out` its `width` gates.
fn gate_head(variant: LigerVariant, x: &[f32], out: &mut [f32], norm: f32) {
    match variant {
        LigerVariant::Gsa => {
            let (d, m) = (x.len(), out.len());
            for (i, o) in out.iter_mut().enumerate() {
                let lo = i * d / m;
                let hi = ((i + 1) * d).div_ceil(m);
                let mean = x[lo..hi].iter().sum::<f32>() / (hi - lo) as f32;
                *o = logsigmoid(mean) / norm;
            }
        }
        LigerVariant::Retention => {
            let mean = x.iter().sum::<f32>() / x.len() as f32;
            out[0] = logsigmoid(mean) / norm;
        }
        _ => {
            for (o, &xi) in out.iter_mut().zip(x) {
                *o = logsigmoid(xi) / norm;
            }
        }
    }
}
