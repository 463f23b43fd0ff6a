//! Backward of the gated recurrences of one KV head, in the recurrent form:
//! one forward sweep rebuilds the state and gives the query gradients, one
//! reverse sweep carries the state's gradient and gives the key and value
//! gradients. Nothing of size `T × state` is stored. Gate gradients come from
//! the identity `∂L/∂b_t = Σ_h q_t ⊙ dq_t − k_t ⊙ dk_t` (for the cumulative
//! log-decay `b`), so no state is ever divided by a decay.

use crate::ops::high::kernels::{axpy, dot};

/// Gradients of the key-gated recurrence `S_t = diag(e^{g_t}) S_{t−1} + k_tᵀv_t`,
/// `o_t = q_t S_t` (per group query head) from a zero state.
pub(super) struct KeyedGrads {
    /// `[T][G·K]`.
    pub(super) dq: Vec<f32>,
    /// `[T][K]`.
    pub(super) dk: Vec<f32>,
    /// `[T][V]`.
    pub(super) dv: Vec<f32>,
    /// `∂L/∂b_t [T][K]`, the gradient of the cumulative log-decay at `t`.
    pub(super) db: Vec<f64>,
}

/// Backward of the keyed recurrence: `q [T][G·K]`, `k [T][K]`, `v [T][V]`,
/// `g [T][K]` (log-decays), `dout [T][G·V]`.
pub(super) fn keyed_backward(
    (groups, kd, vd): (usize, usize, usize),
    (q, k, v, g): (&[f32], &[f32], &[f32], &[f32]),
    dout: &[f32],
) -> KeyedGrads {
    let len = k.len() / kd.max(1);
    let (gk, gv) = (groups * kd, groups * vd);
    let mut dq = vec![0.0f32; len * gk];
    let mut dk = vec![0.0f32; len * kd];
    let mut dv = vec![0.0f32; len * vd];
    let mut state = vec![0.0f32; kd * vd];
    for t in 0..len {
        let (kt, vt, gt) = (&k[t * kd..][..kd], &v[t * vd..][..vd], &g[t * kd..][..kd]);
        for (i, row) in state.chunks_mut(vd).enumerate() {
            let decay = gt[i].exp();
            for (s, &x) in row.iter_mut().zip(vt) {
                *s = decay * *s + kt[i] * x;
            }
        }
        for h in 0..groups {
            let doh = &dout[t * gv + h * vd..][..vd];
            let dqh = &mut dq[t * gk + h * kd..][..kd];
            for (dqi, row) in dqh.iter_mut().zip(state.chunks(vd)) {
                *dqi = dot(row, doh);
            }
        }
    }
    let mut dstate = vec![0.0f32; kd * vd];
    for t in (0..len).rev() {
        for h in 0..groups {
            let qh = &q[t * gk + h * kd..][..kd];
            let doh = &dout[t * gv + h * vd..][..vd];
            for (&qi, row) in qh.iter().zip(dstate.chunks_mut(vd)) {
                axpy(row, qi, doh);
            }
        }
        let (kt, vt) = (&k[t * kd..][..kd], &v[t * vd..][..vd]);
        let dvt = &mut dv[t * vd..][..vd];
        for (i, row) in dstate.chunks(vd).enumerate() {
            dk[t * kd + i] = dot(row, vt);
            axpy(dvt, kt[i], row);
        }
        let gt = &g[t * kd..][..kd];
        for (i, row) in dstate.chunks_mut(vd).enumerate() {
            let decay = gt[i].exp();
            row.iter_mut().for_each(|s| *s *= decay);
        }
    }
    let mut db = vec![0.0f64; len * kd];
    for t in 0..len {
        for i in 0..kd {
            let mut acc = -f64::from(k[t * kd + i]) * f64::from(dk[t * kd + i]);
            for h in 0..groups {
                let j = t * gk + h * kd + i;
                acc += f64::from(q[j]) * f64::from(dq[j]);
            }
            db[t * kd + i] = acc;
        }
    }
    KeyedGrads { dq, dk, dv, db }
}

/// Gradients of GSA's slot pass `H_t = H_{t−1}·diag(e^{g_t}) + k_tᵀ s_t`
/// (`D × M`, decay on the slot side), `logits_t = q_t H_t` per group query head.
pub(super) struct SlotGrads {
    /// `[T][G·D]`.
    pub(super) dq: Vec<f32>,
    /// `[T][D]`.
    pub(super) dk: Vec<f32>,
    /// `[T][M]`.
    pub(super) ds: Vec<f32>,
    /// `∂L/∂b_t [T][M]` for the cumulative log-decay.
    pub(super) db: Vec<f64>,
}

/// Backward of the slot pass: `q [T][G·D]`, `k [T][D]`, `s`, `g [T][M]`,
/// `logits [T][G·M]` (the forward's, for the gate identity), `dlogits [T][G·M]`.
pub(super) fn slot_backward(
    (groups, d, m): (usize, usize, usize),
    (q, k, s, g): (&[f32], &[f32], &[f32], &[f32]),
    logits: &[f32],
    dlogits: &[f32],
) -> SlotGrads {
    let len = k.len() / d.max(1);
    let (gd, gm) = (groups * d, groups * m);
    let mut dq = vec![0.0f32; len * gd];
    let mut dk = vec![0.0f32; len * d];
    let mut ds = vec![0.0f32; len * m];
    let mut state = vec![0.0f32; d * m];
    for t in 0..len {
        let (kt, st, gt) = (&k[t * d..][..d], &s[t * m..][..m], &g[t * m..][..m]);
        let decay: Vec<f32> = gt.iter().map(|x| x.exp()).collect();
        for (row, &ki) in state.chunks_mut(m).zip(kt) {
            for ((x, &a), &sj) in row.iter_mut().zip(&decay).zip(st) {
                *x = a * *x + ki * sj;
            }
        }
        for h in 0..groups {
            let dl = &dlogits[t * gm + h * m..][..m];
            let dqh = &mut dq[t * gd + h * d..][..d];
            for (dqi, row) in dqh.iter_mut().zip(state.chunks(m)) {
                *dqi = dot(row, dl);
            }
        }
    }
    let mut dstate = vec![0.0f32; d * m];
    for t in (0..len).rev() {
        for h in 0..groups {
            let qh = &q[t * gd + h * d..][..d];
            let dl = &dlogits[t * gm + h * m..][..m];
            for (&qi, row) in qh.iter().zip(dstate.chunks_mut(m)) {
                axpy(row, qi, dl);
            }
        }
        let (kt, st) = (&k[t * d..][..d], &s[t * m..][..m]);
        let dst = &mut ds[t * m..][..m];
        for (i, row) in dstate.chunks(m).enumerate() {
            dk[t * d + i] = dot(row, st);
            axpy(dst, kt[i], row);
        }
        let decay: Vec<f32> = g[t * m..][..m].iter().map(|x| x.exp()).collect();
        for row in dstate.chunks_mut(m) {
            for (x, &a) in row.iter_mut().zip(&decay) {
                *x *= a;
            }
        }
    }
    let mut db = vec![0.0f64; len * m];
    for t in 0..len {
        for j in 0..m {
            let mut acc = -f64::from(s[t * m + j]) * f64::from(ds[t * m + j]);
            for h in 0..groups {
                let i = t * gm + h * m + j;
                acc += f64::from(logits[i]) * f64::from(dlogits[i]);
            }
            db[t * m + j] = acc;
        }
    }
    SlotGrads { dq, dk, ds, db }
}

/// Forward of the slot pass from a zero state: `logits [T][G·M]`.
pub(super) fn slot_forward(
    (groups, d, m): (usize, usize, usize),
    (q, k, s, g): (&[f32], &[f32], &[f32], &[f32]),
) -> Vec<f32> {
    let len = k.len() / d.max(1);
    let (gd, gm) = (groups * d, groups * m);
    let mut out = vec![0.0f32; len * gm];
    let mut state = vec![0.0f32; d * m];
    for t in 0..len {
        let (kt, st, gt) = (&k[t * d..][..d], &s[t * m..][..m], &g[t * m..][..m]);
        for (row, &ki) in state.chunks_mut(m).zip(kt) {
            for ((x, &gj), &sj) in row.iter_mut().zip(gt).zip(st) {
                *x = gj.exp() * *x + ki * sj;
            }
        }
        for h in 0..groups {
            let o = &mut out[t * gm + h * m..][..m];
            for (&qi, row) in q[t * gd + h * d..][..d].iter().zip(state.chunks(m)) {
                axpy(o, qi, row);
            }
        }
    }
    out
}

/// `dg_t = Σ_{u ≥ t} db_u` per channel: the gradient of the per-step log-gate
/// from that of the cumulative log-decay (`b_t = Σ_{u ≤ t} g_u`).
pub(super) fn reverse_cumsum(db: &[f64], width: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; db.len()];
    if width == 0 {
        return out;
    }
    let mut acc = vec![0.0f64; width];
    for (o, d) in out.chunks_mut(width).zip(db.chunks(width)).rev() {
        for ((o, a), &x) in o.iter_mut().zip(acc.iter_mut()).zip(d) {
            *a += x;
            *o = *a as f32;
        }
    }
    out
}
