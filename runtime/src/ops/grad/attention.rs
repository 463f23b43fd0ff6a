//! Backward of softmax Attention.
//!
//! For one query row `t` with probabilities `p = softmax(s)`,
//! `s_j = scale·q·k_j` over the keys it sees, and result gradient `do`:
//! `dv_j += p_j·do`, `dp_j = do·v_j`, `ds_j = p_j·(dp_j − Σ_i p_i·dp_i)`,
//! `dq += scale·Σ_j ds_j·k_j`, `dk_j += scale·ds_j·q`.
//!
//! Probabilities are recomputed row by row exactly as the forward computes
//! them (never a `T × S` matrix). Work is split over `batch × kv_heads`: a
//! task owns the key and value gradients of its KV head and the query
//! gradients of the query heads that read it, so no two tasks write one cell.

use ligerc_ir::AttentionSpec;
use rayon::prelude::*;

use super::not_differentiable;
use crate::ops::high::kernels::{axpy, consistent, dot, f32_data, rank3};
use crate::{Data, RuntimeError, Tensor};

/// Checked sizes and operands of one attention backward.
struct Problem<'t> {
    q: &'t [f32],
    k: &'t [f32],
    v: &'t [f32],
    dout: &'t [f32],
    keep: Option<Vec<bool>>,
    batch: usize,
    q_len: usize,
    kv_len: usize,
    heads: usize,
    group: usize,
    d: usize,
    scale: f32,
    causal: bool,
}

impl Problem<'_> {
    /// Query features per token.
    fn q_feat(&self) -> usize {
        self.heads * self.d
    }

    /// Key/value features per token.
    fn kv_feat(&self) -> usize {
        (self.heads / self.group) * self.d
    }

    /// Keys `0..visible` are allowed to query `t` by the causal rule.
    fn visible(&self, t: usize) -> usize {
        if self.causal {
            (self.kv_len + t + 1)
                .saturating_sub(self.q_len)
                .min(self.kv_len)
        } else {
            self.kv_len
        }
    }
}

/// Which gradients a task forms.
#[derive(Clone, Copy)]
struct Want {
    q: bool,
    k: bool,
    v: bool,
}

/// The gradients one `(batch, kv head)` task forms: `dq [group, T, d]`,
/// `dk` and `dv` `[S, d]` (empty when not wanted).
struct Block {
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

/// Backward of `Attention` (`q, k, v [, mask]`): gradients of `q`, `k` and `v`
/// as `wrt` names them; the padding mask has none.
pub(super) fn attention_vjp(
    spec: &AttentionSpec,
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
) -> Result<Vec<Tensor>, RuntimeError> {
    if let Some(&w) = wrt.iter().find(|&&w| w > 2) {
        return Err(not_differentiable("Attention", w, "padding mask"));
    }
    let p = problem(spec, fwd, dy)?;
    let want = Want {
        q: wrt.contains(&0),
        k: wrt.contains(&1),
        v: wrt.contains(&2),
    };
    let kv_heads = p.heads / p.group;
    let blocks: Vec<Block> = (0..p.batch * kv_heads)
        .into_par_iter()
        .map(|task| block(&p, task / kv_heads, task % kv_heads, want))
        .collect();
    let (dq, dk, dv) = scatter(&p, &blocks, want);
    let (q_shape, kv_shape) = (
        vec![p.batch, p.q_len, p.q_feat()],
        vec![p.batch, p.kv_len, p.kv_feat()],
    );
    wrt.iter()
        .map(|&i| match i {
            0 => Tensor::f32(q_shape.clone(), dq.clone()),
            1 => Tensor::f32(kv_shape.clone(), dk.clone()),
            _ => Tensor::f32(kv_shape.clone(), dv.clone()),
        })
        .collect()
}

/// Checks the operands as the forward does, and `dy` against the query.
fn problem<'t>(
    spec: &AttentionSpec,
    fwd: &[&'t Tensor],
    dy: &'t Tensor,
) -> Result<Problem<'t>, RuntimeError> {
    let (q, k, v, mask) = match fwd {
        [q, k, v] => (*q, *k, *v, None),
        [q, k, v, m] => (*q, *k, *v, Some(*m)),
        _ => {
            return Err(RuntimeError::Shape(format!(
                "Attention takes 3 or 4 operands, got {}",
                fwd.len()
            )));
        }
    };
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
    if kb != batch || spec.kv_heads.checked_mul(d) != Some(kv_feat) || v.shape != k.shape {
        return Err(RuntimeError::Shape(format!(
            "Attention key {:?} and value {:?} do not fit query {:?}: expected [{batch}, S, {} kv_heads × {d}]",
            k.shape, v.shape, q.shape, spec.kv_heads
        )));
    }
    if dy.shape != q.shape {
        return Err(RuntimeError::Shape(format!(
            "Attention result gradient is {:?}, expected {:?}",
            dy.shape, q.shape
        )));
    }
    let keep = match mask {
        None => None,
        Some(m) => Some(mask_values(m, batch, kv_len)?),
    };
    Ok(Problem {
        q: f32_data(q, "Attention query")?,
        k: f32_data(k, "Attention key")?,
        v: f32_data(v, "Attention value")?,
        dout: f32_data(dy, "Attention result gradient")?,
        keep,
        batch,
        q_len,
        kv_len,
        heads: spec.heads,
        group: spec.heads / spec.kv_heads,
        d,
        scale: spec.scale as f32,
        causal: spec.causal,
    })
}

/// The padding mask `[B, S]` as booleans (non-zero = attend).
fn mask_values(m: &Tensor, batch: usize, kv_len: usize) -> Result<Vec<bool>, RuntimeError> {
    if m.shape != [batch, kv_len] {
        return Err(RuntimeError::Shape(format!(
            "Attention padding mask is {:?}, expected [{batch}, {kv_len}]",
            m.shape
        )));
    }
    consistent(m, "Attention padding mask")?;
    Ok(match &m.data {
        Data::F32(v) => v.iter().map(|&x| x != 0.0).collect(),
        Data::I64(v) => v.iter().map(|&x| x != 0).collect(),
        Data::Bool(v) => v.clone(),
    })
}

/// The gradients of batch row `b`, KV head `kvh` and its query heads.
fn block(p: &Problem, b: usize, kvh: usize, want: Want) -> Block {
    let (d, group) = (p.d, p.group);
    let (q_feat, kv_feat) = (p.q_feat(), p.kv_feat());
    let mut out = Block {
        dq: vec![0.0f32; if want.q { group * p.q_len * d } else { 0 }],
        dk: vec![0.0f32; if want.k { p.kv_len * d } else { 0 }],
        dv: vec![0.0f32; if want.v { p.kv_len * d } else { 0 }],
    };
    let key = |j: usize| &p.k[(b * p.kv_len + j) * kv_feat + kvh * d..][..d];
    let value = |j: usize| &p.v[(b * p.kv_len + j) * kv_feat + kvh * d..][..d];
    let mut probs = vec![0.0f32; p.kv_len];
    let mut dprobs = vec![0.0f32; p.kv_len];
    for g in 0..group {
        let h = kvh * group + g;
        for t in 0..p.q_len {
            let visible = p.visible(t);
            let row = (b * p.q_len + t) * q_feat + h * d;
            let (q_row, do_row) = (&p.q[row..][..d], &p.dout[row..][..d]);
            if !softmax_row(p, b, q_row, &key, &mut probs[..visible]) {
                continue;
            }
            // Σ_j p_j·dp_j, in f64.
            let mut mean = 0.0f64;
            for (j, (&pj, dp)) in probs[..visible].iter().zip(&mut dprobs).enumerate() {
                *dp = if pj != 0.0 {
                    dot(do_row, value(j))
                } else {
                    0.0
                };
                mean += pj as f64 * *dp as f64;
            }
            let mean = mean as f32;
            for j in 0..visible {
                let pj = probs[j];
                if pj == 0.0 {
                    continue;
                }
                if want.v {
                    axpy(&mut out.dv[j * d..(j + 1) * d], pj, do_row);
                }
                let ds = p.scale * pj * (dprobs[j] - mean);
                if want.q {
                    axpy(&mut out.dq[(g * p.q_len + t) * d..][..d], ds, key(j));
                }
                if want.k {
                    axpy(&mut out.dk[j * d..(j + 1) * d], ds, q_row);
                }
            }
        }
    }
    out
}

/// Fills `probs` (the visible keys) with query `q_row`'s softmax
/// probabilities, computed as the forward computes them; masked keys get 0.
/// Returns false when the query sees no key (its output is zero).
fn softmax_row<'k>(
    p: &Problem,
    b: usize,
    q_row: &[f32],
    key: &impl Fn(usize) -> &'k [f32],
    probs: &mut [f32],
) -> bool {
    let mut max = f32::NEG_INFINITY;
    for (j, s) in probs.iter_mut().enumerate() {
        let attend = p.keep.as_ref().is_none_or(|m| m[b * p.kv_len + j]);
        *s = if attend {
            dot(q_row, key(j)) * p.scale
        } else {
            f32::NEG_INFINITY
        };
        max = max.max(*s);
    }
    if max == f32::NEG_INFINITY {
        return false;
    }
    let mut sum = 0.0f32;
    for s in probs.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    for s in probs.iter_mut() {
        *s /= sum;
    }
    true
}

/// Assembles the per-task blocks into `dq [B, T, heads·d]` and
/// `dk`, `dv [B, S, kv_heads·d]` (zero-length when not wanted).
fn scatter(p: &Problem, blocks: &[Block], want: Want) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (d, group) = (p.d, p.group);
    let (q_feat, kv_feat) = (p.q_feat(), p.kv_feat());
    let kv_heads = p.heads / group;
    let sized = |on: bool, n: usize| vec![0.0f32; if on { n } else { 0 }];
    let mut dq = sized(want.q, p.batch * p.q_len * q_feat);
    let mut dk = sized(want.k, p.batch * p.kv_len * kv_feat);
    let mut dv = sized(want.v, p.batch * p.kv_len * kv_feat);
    for (task, blk) in blocks.iter().enumerate() {
        let (b, kvh) = (task / kv_heads, task % kv_heads);
        if want.q {
            for g in 0..group {
                let h = kvh * group + g;
                for t in 0..p.q_len {
                    dq[(b * p.q_len + t) * q_feat + h * d..][..d]
                        .copy_from_slice(&blk.dq[(g * p.q_len + t) * d..][..d]);
                }
            }
        }
        for j in 0..p.kv_len {
            let at = (b * p.kv_len + j) * kv_feat + kvh * d;
            if want.k {
                dk[at..at + d].copy_from_slice(&blk.dk[j * d..(j + 1) * d]);
            }
            if want.v {
                dv[at..at + d].copy_from_slice(&blk.dv[j * d..(j + 1) * d]);
            }
        }
    }
    (dq, dk, dv)
}
