//! The sliding-window softmax branch (LIGER.md §2.5): causal attention of the
//! rotated queries over the rotated keys, scale `1/√D`, the query at position
//! `p` seeing keys `max(0, p − window) ..= p` (`window + 1` keys), each query
//! head reading its group's KV head.

use super::high::kernels::{axpy, dot};

/// Shape and weight of the window branch for one KV head.
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    /// Query heads per KV head.
    pub(super) groups: usize,
    /// Features per head.
    pub(super) head_dim: usize,
    /// Earlier keys a query sees.
    pub(super) window: usize,
    /// Weight of the branch in the output.
    pub(super) mix: f32,
}

/// Adds `mix · y` to `out [T][G·D]`, `y` the window attention of the queries
/// `q [T][G·D]` over the context `keys`, `values [S][D]` (`S ≥ T`). Query `t`
/// sits at context position `S − T + t`: the context is the tokens kept from
/// earlier runs (the ring) followed by this run's tokens.
pub(super) fn window_attention(
    w: Window,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    out: &mut [f32],
) {
    let (groups, d) = (w.groups, w.head_dim);
    if d == 0 || groups == 0 {
        return;
    }
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let context = keys.len() / d;
    let tokens = q.len() / (groups * d);
    let first = context - tokens;
    let mut probs = Vec::with_capacity(w.window.saturating_add(1).min(context));
    for t in 0..tokens {
        let pos = first + t;
        let lo = pos.saturating_sub(w.window);
        let qt = &q[t * groups * d..(t + 1) * groups * d];
        let ot = &mut out[t * groups * d..(t + 1) * groups * d];
        for (oh, qh) in ot.chunks_mut(d).zip(qt.chunks(d)) {
            probs.clear();
            probs.extend((lo..=pos).map(|j| dot(qh, &keys[j * d..(j + 1) * d]) * scale));
            let max = probs.iter().fold(f32::NEG_INFINITY, |m, &p| m.max(p));
            let mut sum = 0.0f32;
            for p in probs.iter_mut() {
                *p = (*p - max).exp();
                sum += *p;
            }
            for (j, &p) in (lo..=pos).zip(&probs) {
                axpy(oh, w.mix * p / sum, &values[j * d..(j + 1) * d]);
            }
        }
    }
}
