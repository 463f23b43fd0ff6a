//! Backward of the sliding-window softmax branch of one KV head (the forward
//! is `ops/liger/swa.rs`): query `t` attends keys `max(0, t − window) ..= t`
//! with scale `1/√D`, the group's query heads sharing the KV head.

use crate::ops::high::kernels::{axpy, dot};

/// Gradients of `y = mix · SWA(q, k, v)` for one KV head of a run that
/// started from an empty context: `q [T][G·D]`, `k`, `v [T][D]`, `dy [T][G·D]`.
/// Adds into `dq [T][G·D]`, `dk`, `dv [T][D]`. Probabilities are recomputed per
/// query row.
#[allow(clippy::too_many_arguments)]
pub(super) fn window_backward(
    groups: usize,
    d: usize,
    window: usize,
    mix: f32,
    (q, k, v): (&[f32], &[f32], &[f32]),
    dy: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    if d == 0 || groups == 0 || mix == 0.0 {
        return;
    }
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let tokens = q.len() / (groups * d);
    let mut probs = Vec::with_capacity(window.saturating_add(1).min(tokens));
    let mut dp = Vec::with_capacity(probs.capacity());
    for t in 0..tokens {
        let lo = t.saturating_sub(window);
        for h in 0..groups {
            let row = (t * groups + h) * d;
            let qh = &q[row..row + d];
            let doh: Vec<f32> = dy[row..row + d].iter().map(|x| mix * x).collect();
            probs.clear();
            probs.extend((lo..=t).map(|j| dot(qh, &k[j * d..(j + 1) * d]) * scale));
            let max = probs.iter().fold(f32::NEG_INFINITY, |m, &p| m.max(p));
            let mut sum = 0.0f32;
            for p in probs.iter_mut() {
                *p = (*p - max).exp();
                sum += *p;
            }
            for p in probs.iter_mut() {
                *p /= sum;
            }
            dp.clear();
            dp.extend((lo..=t).map(|j| dot(&doh, &v[j * d..(j + 1) * d])));
            let mean: f32 = probs.iter().zip(&dp).map(|(p, g)| p * g).sum();
            for ((j, &p), &g) in (lo..=t).zip(&probs).zip(&dp) {
                let ds = p * (g - mean) * scale;
                axpy(&mut dq[row..row + d], ds, &k[j * d..(j + 1) * d]);
                axpy(&mut dk[j * d..(j + 1) * d], ds, qh);
                axpy(&mut dv[j * d..(j + 1) * d], p, &doh);
            }
        }
    }
}
