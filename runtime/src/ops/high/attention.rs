//! `Attention`: scaled dot-product attention with grouped KV heads, a causal
//! rule, an optional padding mask and the decode-time KV cache.

use ligerc_ir::AttentionSpec;
use rayon::prelude::*;

use super::kernels::{axpy, consistent, dot, f32_data, rank3};
use crate::{Data, KvCache, RuntimeError, Tensor};

/// Attention of `q [B, T, heads·d]` over `k`, `v [B, S, kv_heads·d]`.
///
/// Query head `h` reads KV head `h / (heads / kv_heads)`. Scores are
/// `scale · q·k`, softmax-ed in f32. When `spec.causal`, query `t` — at
/// absolute position `S − T + t`, the keys being positions `0..S` — sees keys
/// `j ≤ S − T + t`. `mask [B, S]` (f32, integer or bool; non-zero = attend)
/// hides padded keys. A query that sees no key at all gets a zero output.
/// Work is split over `batch × heads`.
pub fn attention(
    spec: &AttentionSpec,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor, RuntimeError> {
    let (qs, ks, vs) = (
        f32_data(q, "Attention query")?,
        f32_data(k, "Attention key")?,
        f32_data(v, "Attention value")?,
    );
    let (batch, q_len, q_feat) = rank3(q, "Attention query")?;
    let (kb, kv_len, kv_feat) = rank3(k, "Attention key")?;
    let d = spec.head_dim;
    if spec.kv_heads == 0 || !spec.heads.is_multiple_of(spec.kv_heads) || d == 0 {
        return Err(RuntimeError::Shape(format!(
            "Attention needs heads ({}) a multiple of kv_heads ({}) and head_dim ({d}) > 0",
            spec.heads, spec.kv_heads
        )));
    }
    if spec.heads.checked_mul(d) != Some(q_feat) {
        return Err(RuntimeError::Shape(format!(
            "Attention query {:?} has {q_feat} features, expected {} heads × {d}",
            q.shape, spec.heads
        )));
    }
    if kb != batch || spec.kv_heads.checked_mul(d) != Some(kv_feat) {
        return Err(RuntimeError::Shape(format!(
            "Attention key {:?} does not fit query {:?}: expected [{batch}, S, {} kv_heads × {d}]",
            k.shape, q.shape, spec.kv_heads
        )));
    }
    if v.shape != k.shape {
        return Err(RuntimeError::Shape(format!(
            "Attention value {:?} differs from key {:?}",
            v.shape, k.shape
        )));
    }
    let keep = match mask {
        None => None,
        Some(m) => {
            if m.shape != [batch, kv_len] {
                return Err(RuntimeError::Shape(format!(
                    "Attention padding mask is {:?}, expected [{batch}, {kv_len}]",
                    m.shape
                )));
            }
            consistent(m, "Attention padding mask")?;
            Some(mask_values(m))
        }
    };
    let heads = spec.heads;
    let group = heads / spec.kv_heads;
    let scale = spec.scale as f32;
    let blocks: Vec<Vec<f32>> = (0..batch * heads)
        .into_par_iter()
        .map(|bh| {
            let (b, h) = (bh / heads, bh % heads);
            let kvh = h / group;
            let mut block = vec![0.0f32; q_len * d];
            let mut probs = vec![0.0f32; kv_len];
            for t in 0..q_len {
                // Keys 0..visible are allowed by the causal rule.
                let visible = if spec.causal {
                    (kv_len + t + 1).saturating_sub(q_len).min(kv_len)
                } else {
                    kv_len
                };
                let q_row = &qs[(b * q_len + t) * q_feat + h * d..][..d];
                let mut max = f32::NEG_INFINITY;
                for (j, p) in probs[..visible].iter_mut().enumerate() {
                    let attend = keep.as_ref().is_none_or(|m| m[b * kv_len + j]);
                    *p = if attend {
                        let k_row = &ks[(b * kv_len + j) * kv_feat + kvh * d..][..d];
                        dot(q_row, k_row) * scale
                    } else {
                        f32::NEG_INFINITY
                    };
                    max = max.max(*p);
                }
                if max == f32::NEG_INFINITY {
                    continue;
                }
                let mut sum = 0.0f32;
                for p in &mut probs[..visible] {
                    *p = (*p - max).exp();
                    sum += *p;
                }
                let out_row = &mut block[t * d..(t + 1) * d];
                for (j, &p) in probs[..visible].iter().enumerate() {
                    if p != 0.0 {
                        let v_row = &vs[(b * kv_len + j) * kv_feat + kvh * d..][..d];
                        axpy(out_row, p / sum, v_row);
                    }
                }
            }
            block
        })
        .collect();
    let mut out = vec![0.0f32; batch * q_len * q_feat];
    for (bh, block) in blocks.iter().enumerate() {
        let (b, h) = (bh / heads, bh % heads);
        for t in 0..q_len {
            out[(b * q_len + t) * q_feat + h * d..][..d]
                .copy_from_slice(&block[t * d..(t + 1) * d]);
        }
    }
    Tensor::f32(vec![batch, q_len, q_feat], out)
}

fn mask_values(m: &Tensor) -> Vec<bool> {
    match &m.data {
        Data::F32(v) => v.iter().map(|&x| x != 0.0).collect(),
        Data::I64(v) => v.iter().map(|&x| x != 0).collect(),
        Data::Bool(v) => v.clone(),
    }
}

/// Appends this run's keys and values (`[B, T, kv_features]`) to `cache`
/// along the sequence axis and returns the whole cache.
pub(crate) fn append_to_cache<'c>(
    cache: &'c mut KvCache,
    k: &Tensor,
    v: &Tensor,
) -> Result<(&'c Tensor, &'c Tensor), RuntimeError> {
    f32_data(k, "Attention key")?;
    f32_data(v, "Attention value")?;
    rank3(k, "Attention key")?;
    if v.shape != k.shape {
        return Err(RuntimeError::Shape(format!(
            "Attention value {:?} differs from key {:?}",
            v.shape, k.shape
        )));
    }
    match (&mut cache.k, &mut cache.v) {
        (Some(ck), Some(cv)) => {
            if ck.shape[0] != k.shape[0] || ck.shape[2] != k.shape[2] || cv.shape != ck.shape {
                return Err(RuntimeError::Shape(format!(
                    "KV cache holds {:?}, cannot append keys {:?} (batch and features must match)",
                    ck.shape, k.shape
                )));
            }
            append_seq(ck, k)?;
            append_seq(cv, v)?;
        }
        (None, None) => {
            cache.k = Some(k.clone());
            cache.v = Some(v.clone());
        }
        _ => {
            return Err(RuntimeError::Shape(
                "KV cache holds keys without values (or values without keys)".into(),
            ));
        }
    }
    match (&cache.k, &cache.v) {
        (Some(ck), Some(cv)) => Ok((ck, cv)),
        _ => Err(RuntimeError::Shape(
            "KV cache is empty after appending".into(),
        )),
    }
}

/// `cached ← concat(cached, new)` along axis 1 of `[B, S, F]` tensors whose
/// batch and feature dims agree.
fn append_seq(cached: &mut Tensor, new: &Tensor) -> Result<(), RuntimeError> {
    let (batch, old_len, feat) = rank3(cached, "KV cache")?;
    consistent(cached, "KV cache")?;
    let new_len = new.shape[1];
    let add = f32_data(new, "KV cache update")?;
    let Data::F32(data) = &mut cached.data else {
        return Err(RuntimeError::Type(
            "KV cache holds a non-float tensor".into(),
        ));
    };
    if batch == 1 {
        data.extend_from_slice(add);
    } else {
        let mut merged = Vec::with_capacity(batch * (old_len + new_len) * feat);
        for b in 0..batch {
            merged.extend_from_slice(&data[b * old_len * feat..(b + 1) * old_len * feat]);
            merged.extend_from_slice(&add[b * new_len * feat..(b + 1) * new_len * feat]);
        }
        *data = merged;
    }
    cached.shape[1] = old_len + new_len;
    Ok(())
}
