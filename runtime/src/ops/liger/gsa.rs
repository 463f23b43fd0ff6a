//! Gated slot attention (LIGER.md §3 table): two gated passes over `M` slots
//! on raw q, k, with slot writes `s_t = 1 − e^{γ_t}`:
//!
//! ```text
//! Hk_t = Hk_{t−1}·diag(e^{γ_t}) + k_tᵀ s_t        (D×M; the "slot pass")
//! p_t  = softmax_M(q_t · Hk_t)                    (scale 1)
//! Hv_t = diag(e^{γ_t}) Hv_{t−1} + s_tᵀ v_t        (M×D)
//! o_t  = p_t · Hv_t
//! ```
//!
//! The second pass is the key-gated recurrence with queries `p`, keys `s` and
//! gate `γ` over `M` channels, so it reuses the GLA kernels. The slot pass has
//! its gate on the value side (slot columns); its chunked form mirrors GLA's:
//! with in-chunk cumsums `b` over slots,
//! `logits_t = (q_t·Hk) ⊙ e^{b_t} + Σ_{s≤t} (q_t·k_s) (s_s ⊙ e^{b_t − b_s})` and
//! `Hk ← Hk·diag(e^{b_L}) + Σ_s k_sᵀ (s_s ⊙ e^{b_L − b_s})`. Both passes are
//! therefore truly chunk-parallel: the slot pass over the whole run first,
//! then the softmax, then the value pass.

use super::feature::softmax_rows;
use super::high::kernels::{axpy, dot};
use super::{Dims, Form, Operands, cumsum, gla_chunked, gla_quadratic, gla_recurrent};

/// Sizes of one (batch row, KV head) of GSA.
#[derive(Clone, Copy, Debug)]
pub(super) struct GsaDims {
    /// Query heads per KV head.
    pub(super) groups: usize,
    /// Tokens in this run.
    pub(super) len: usize,
    /// Features per head (`D`).
    pub(super) head_dim: usize,
    /// Slots (`M`).
    pub(super) slots: usize,
}

/// GSA's operands, token-major: `q [T][G·D]`, `k`, `v [T][D]`, `s`, `g [T][M]`.
#[derive(Clone, Copy)]
pub(super) struct SlotOperands<'a> {
    /// Raw queries.
    pub(super) q: &'a [f32],
    /// Raw keys.
    pub(super) k: &'a [f32],
    /// Values.
    pub(super) v: &'a [f32],
    /// Slot writes `1 − e^{γ}`.
    pub(super) s: &'a [f32],
    /// Log-gates `γ`.
    pub(super) g: &'a [f32],
}

/// Runs GSA in `form` from the memories `hk` (`D×M`) and `hv` (`M×D`),
/// leaving their final values; writes `out [T][G·D]`.
pub(super) fn gsa(
    form: Form,
    dims: GsaDims,
    ops: SlotOperands<'_>,
    hk: &mut [f32],
    hv: &mut [f32],
    out: &mut [f32],
) {
    let (groups, len, d, m) = (dims.groups, dims.len, dims.head_dim, dims.slots);
    let slot_dims = Dims {
        groups,
        len,
        key: d,
        value: m,
    };
    let value_dims = Dims {
        groups,
        len,
        key: m,
        value: d,
    };
    let slot_ops = Operands {
        q: ops.q,
        k: ops.k,
        v: ops.s,
        g: ops.g,
    };
    let mut p = vec![0.0f32; len * groups * m];
    match form {
        Form::Recurrent => {
            let one = Dims {
                len: 1,
                ..value_dims
            };
            for t in 0..len {
                let pt = &mut p[t * groups * m..(t + 1) * groups * m];
                slot_step(slot_dims, slot_ops, t, hk, pt);
                softmax_rows(pt, m);
                let token = Operands {
                    q: pt,
                    k: &ops.s[t * m..(t + 1) * m],
                    v: &ops.v[t * d..(t + 1) * d],
                    g: &ops.g[t * m..(t + 1) * m],
                };
                gla_recurrent::step(
                    one,
                    token,
                    hv,
                    &mut out[t * groups * d..(t + 1) * groups * d],
                );
            }
        }
        Form::Chunked(chunk) => {
            slot_chunked(slot_dims, slot_ops, chunk, hk, &mut p);
            softmax_rows(&mut p, m);
            gla_chunked::chunked(value_dims, value_operands(&p, ops), chunk, hv, out);
        }
        Form::Quadratic => {
            slot_quadratic(slot_dims, slot_ops, &mut p);
            softmax_rows(&mut p, m);
            gla_quadratic::quadratic(value_dims, value_operands(&p, ops), out);
        }
    }
}

/// The value pass's operands: queries `p`, keys `s`, values `v`, gate `γ`.
fn value_operands<'a>(p: &'a [f32], ops: SlotOperands<'a>) -> Operands<'a> {
    Operands {
        q: p,
        k: ops.s,
        v: ops.v,
        g: ops.g,
    }
}

/// Slot pass, token `t`: `Hk ← Hk·diag(e^{γ_t}) + k_tᵀ s_t`, then
/// `logits [G·M] = q_t · Hk`. In `ops`, `v` holds `s` and `g` has `M` columns.
fn slot_step(dims: Dims, ops: Operands<'_>, t: usize, hk: &mut [f32], logits: &mut [f32]) {
    let (groups, d, m) = (dims.groups, dims.key, dims.value);
    let (kt, st, gt) = (
        &ops.k[t * d..(t + 1) * d],
        &ops.v[t * m..(t + 1) * m],
        &ops.g[t * m..(t + 1) * m],
    );
    let decay: Vec<f32> = gt.iter().map(|x| x.exp()).collect();
    for (row, &kd) in hk.chunks_mut(m).zip(kt) {
        for ((h, &a), &s) in row.iter_mut().zip(&decay).zip(st) {
            *h = *h * a + kd * s;
        }
    }
    let qt = &ops.q[t * groups * d..(t + 1) * groups * d];
    for (lg, qh) in logits.chunks_mut(m).zip(qt.chunks(d)) {
        lg.fill(0.0);
        for (&qd, row) in qh.iter().zip(hk.chunks(m)) {
            axpy(lg, qd, row);
        }
    }
}

/// Slot pass in chunks (see the module doc); writes `logits [T][G·M]`.
fn slot_chunked(dims: Dims, ops: Operands<'_>, chunk: usize, hk: &mut [f32], logits: &mut [f32]) {
    let (groups, d, m) = (dims.groups, dims.key, dims.value);
    let chunk = chunk.max(1);
    let mut start = 0;
    let mut carried = vec![0.0f32; m];
    let mut weights = vec![0.0f32; m];
    while start < dims.len {
        let len = chunk.min(dims.len - start);
        let b = cumsum(&ops.g[start * m..], m, len);
        for t in 0..len {
            let bt = &b[t * m..(t + 1) * m];
            let qt = &ops.q[(start + t) * groups * d..][..groups * d];
            let lt = &mut logits[(start + t) * groups * m..][..groups * m];
            for (lg, qh) in lt.chunks_mut(m).zip(qt.chunks(d)) {
                carried.fill(0.0);
                for (&qd, row) in qh.iter().zip(hk.chunks(m)) {
                    axpy(&mut carried, qd, row);
                }
                for ((l, &c), &x) in lg.iter_mut().zip(&carried).zip(bt) {
                    *l = c * (x as f32).exp();
                }
            }
            for s in 0..=t {
                pair_weights(&b, &ops.v[(start + s) * m..][..m], t, s, m, &mut weights);
                let ks = &ops.k[(start + s) * d..][..d];
                for (lg, qh) in lt.chunks_mut(m).zip(qt.chunks(d)) {
                    axpy(lg, dot(qh, ks), &weights);
                }
            }
        }
        let last = &b[(len - 1) * m..len * m];
        for row in hk.chunks_mut(m) {
            for (h, &x) in row.iter_mut().zip(last) {
                *h *= (x as f32).exp();
            }
        }
        for s in 0..len {
            pair_weights(
                &b,
                &ops.v[(start + s) * m..][..m],
                len - 1,
                s,
                m,
                &mut weights,
            );
            let ks = &ops.k[(start + s) * d..][..d];
            for (row, &kd) in hk.chunks_mut(m).zip(ks) {
                axpy(row, kd, &weights);
            }
        }
        start += len;
    }
}

/// Slot pass as an O(T²) sum from a zero memory; writes `logits [T][G·M]`.
fn slot_quadratic(dims: Dims, ops: Operands<'_>, logits: &mut [f32]) {
    let (groups, d, m) = (dims.groups, dims.key, dims.value);
    let b = cumsum(ops.g, m, dims.len);
    let mut weights = vec![0.0f32; m];
    for t in 0..dims.len {
        let qt = &ops.q[t * groups * d..(t + 1) * groups * d];
        let lt = &mut logits[t * groups * m..(t + 1) * groups * m];
        for s in 0..=t {
            pair_weights(&b, &ops.v[s * m..(s + 1) * m], t, s, m, &mut weights);
            let ks = &ops.k[s * d..(s + 1) * d];
            for (lg, qh) in lt.chunks_mut(m).zip(qt.chunks(d)) {
                axpy(lg, dot(qh, ks), &weights);
            }
        }
    }
}

/// `weights = s_s ⊙ e^{b_t − b_s}` from the cumsums `b [·][M]`.
fn pair_weights(b: &[f64], slot_write: &[f32], t: usize, s: usize, m: usize, weights: &mut [f32]) {
    let (bt, bs) = (&b[t * m..(t + 1) * m], &b[s * m..(s + 1) * m]);
    for i in 0..m {
        weights[i] = slot_write[i] * ((bt[i] - bs[i]) as f32).exp();
    }
}
