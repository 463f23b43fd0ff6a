//! The key-gated linear recurrence in chunk-parallel form (prefill; LIGER.md
//! §2.4). For the chunk `[c, c+L)` with inclusive in-chunk cumsums
//! `b_t = Σ_{s=c..t} g_s` (every entry ≤ 0):
//!
//! ```text
//! inter: o_t += (q_t ⊙ e^{b_t}) · S
//! intra: o_t += Σ_{s≤t} (Σ_d q_{t,d} k_{s,d} e^{b_{t,d} − b_{s,d}}) v_s
//! state: S ← diag(e^{b_L}) S + Σ_s (k_s ⊙ e^{b_L − b_s})ᵀ v_s
//! ```
//!
//! Pair weights come from cumsum differences `e^{b_t − b_s}` (≤ 1), never
//! from `e^{b_t}·e^{−b_s}`, which overflows over long spans. The cumsums are
//! accumulated in f64 (see [`super::cumsum`]); everything else is f32.

use super::high::kernels::{axpy, dot};
use super::{Dims, Operands, cumsum};

/// Runs `q [T][G·key]`, `k [T][key]`, `v [T][value]`, `g [T][key]` in chunks
/// of `chunk` tokens from the initial `state` (`key × value`); writes
/// `out [T][G·value]` and leaves the final state.
pub(super) fn chunked(
    dims: Dims,
    ops: Operands<'_>,
    chunk: usize,
    state: &mut [f32],
    out: &mut [f32],
) {
    let Operands { q, k, v, g } = ops;
    let (groups, dk, dv) = (dims.groups, dims.key, dims.value);
    let chunk = chunk.max(1);
    let mut decay = vec![0.0f32; dk];
    let mut weighted = vec![0.0f32; dk];
    let mut start = 0;
    while start < dims.len {
        let len = chunk.min(dims.len - start);
        let b = cumsum(&g[start * dk..], dk, len);
        for t in 0..len {
            let bt = &b[t * dk..(t + 1) * dk];
            let qt = &q[(start + t) * groups * dk..][..groups * dk];
            let ot = &mut out[(start + t) * groups * dv..][..groups * dv];
            for (e, &x) in decay.iter_mut().zip(bt) {
                *e = (x as f32).exp();
            }
            for (oh, qh) in ot.chunks_mut(dv).zip(qt.chunks(dk)) {
                for d in 0..dk {
                    axpy(oh, qh[d] * decay[d], &state[d * dv..(d + 1) * dv]);
                }
            }
            for s in 0..=t {
                let bs = &b[s * dk..(s + 1) * dk];
                let ks = &k[(start + s) * dk..][..dk];
                for d in 0..dk {
                    weighted[d] = ks[d] * ((bt[d] - bs[d]) as f32).exp();
                }
                let vs = &v[(start + s) * dv..][..dv];
                for (oh, qh) in ot.chunks_mut(dv).zip(qt.chunks(dk)) {
                    axpy(oh, dot(qh, &weighted), vs);
                }
            }
        }
        let last = &b[(len - 1) * dk..len * dk];
        for (row, &bl) in state.chunks_mut(dv).zip(last) {
            let e = (bl as f32).exp();
            row.iter_mut().for_each(|x| *x *= e);
        }
        for s in 0..len {
            let bs = &b[s * dk..(s + 1) * dk];
            let ks = &k[(start + s) * dk..][..dk];
            let vs = &v[(start + s) * dv..][..dv];
            for (d, row) in state.chunks_mut(dv).enumerate().take(dk) {
                axpy(row, ks[d] * ((last[d] - bs[d]) as f32).exp(), vs);
            }
        }
        start += len;
    }
}
