//! The key-gated linear recurrence as an O(T²) sum (the tests' reference form,
//! LIGER.md §2.4): with `B` the global inclusive cumsum of the log-gates,
//! `o_t = Σ_{s≤t} (Σ_d q_{t,d} k_{s,d} e^{B_{t,d} − B_{s,d}}) v_s`, from a zero
//! state. `B` is accumulated in f64 (see [`super::cumsum`]).

use super::high::kernels::{axpy, dot};
use super::{Dims, Operands, cumsum};

/// `q [T][G·key]`, `k [T][key]`, `v [T][value]`, `g [T][key]` →
/// `out [T][G·value]` (added to; pass zeros).
pub(super) fn quadratic(dims: Dims, ops: Operands<'_>, out: &mut [f32]) {
    let Operands { q, k, v, g } = ops;
    let (groups, dk, dv) = (dims.groups, dims.key, dims.value);
    let cum = cumsum(g, dk, dims.len);
    let mut weighted = vec![0.0f32; dk];
    for t in 0..dims.len {
        let bt = &cum[t * dk..(t + 1) * dk];
        let qt = &q[t * groups * dk..][..groups * dk];
        let ot = &mut out[t * groups * dv..][..groups * dv];
        for s in 0..=t {
            let bs = &cum[s * dk..(s + 1) * dk];
            let ks = &k[s * dk..(s + 1) * dk];
            for d in 0..dk {
                weighted[d] = ks[d] * ((bt[d] - bs[d]) as f32).exp();
            }
            let vs = &v[s * dv..(s + 1) * dv];
            for (oh, qh) in ot.chunks_mut(dv).zip(qt.chunks(dk)) {
                axpy(oh, dot(qh, &weighted), vs);
            }
        }
    }
}
