//! The key-gated linear recurrence, one token at a time (decode form):
//! `S_t = diag(e^{g_t}) S_{t−1} + k_tᵀ v_t`, `o_t = q_t S_t` for each of the
//! group's query heads, with `S` (`key × value`, fp32) shared by the group.

use super::high::kernels::axpy;
use super::{Dims, Operands};

/// One token: updates `state` (`key × value`) with `k [key]`, `v [value]`,
/// `g [key]`, then writes `out [G·value] = q [G·key] · state`.
pub(super) fn step(dims: Dims, token: Operands<'_>, state: &mut [f32], out: &mut [f32]) {
    let Operands { q, k, v, g } = token;
    let (dk, dv) = (dims.key, dims.value);
    for (d, row) in state.chunks_mut(dv).enumerate().take(dk) {
        let (decay, kd) = (g[d].exp(), k[d]);
        for (s, &x) in row.iter_mut().zip(v) {
            *s = decay * *s + kd * x;
        }
    }
    for (o, qh) in out.chunks_mut(dv).zip(q.chunks(dk)).take(dims.groups) {
        o.fill(0.0);
        for (&qd, row) in qh.iter().zip(state.chunks(dv)) {
            axpy(o, qd, row);
        }
    }
}

/// Every token in order: `q [T][G·key]`, `k [T][key]`, `v [T][value]`,
/// `g [T][key]`; writes `out [T][G·value]` and leaves the final state.
pub(super) fn recurrent(dims: Dims, ops: Operands<'_>, state: &mut [f32], out: &mut [f32]) {
    let gv = dims.groups * dims.value;
    for t in 0..dims.len {
        step(
            dims,
            ops.token(dims, t),
            state,
            &mut out[t * gv..(t + 1) * gv],
        );
    }
}
