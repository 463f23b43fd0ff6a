//! CUDA C++ text of the GSA (gated slot attention) training kernels: the
//! window branch of [`super::source`] plus chunk-parallel kernels for the
//! two gated passes over `M` slots ([`super::liger_train`] owns the launch
//! lists and the checks).
//!
//! Per KV head, with `γ_t ∈ R^M` the log-gate and `s_t = 1 − e^{γ_t}`:
//!
//! ```text
//! Hk_t = Hk_{t−1}·diag(e^{γ_t}) + k_tᵀ s_t      (slot pass, D×M, gate on the slot side)
//! p_t  = softmax_M(q_t · Hk_t)                  (scale 1, raw q, k)
//! Hv_t = diag(e^{γ_t}) Hv_{t−1} + s_tᵀ v_t      (value pass, M×D)
//! o_t  = p_t · Hv_t
//! ```
//!
//! Both states decay per slot, so both are kept as `[M][D]` (`Hkᵀ` and `Hv`)
//! and share one chunk decay `e^{b_L}` and one scan. Every exponent is an
//! in-chunk difference `b_t − b_s ≤ 0` or `b_t ≤ 0`; nothing divides by a decay.

use std::fmt::Write as _;

use ligerc_ir::LigerSpec;

use super::source::{HELPERS, NT, Shape, scan_kernels};
use crate::cuda::kernels::{PRELUDE, float_lit};

/// Shared-memory floats of the GSA kernels for head dim `d`, `m` slots and
/// chunk `c` (`[C][D]` tiles of stride `d + 1`, `[C][M]` tiles of stride
/// `m + 1`, `[M][D]` states of stride `d + 1`): `gsa_chunk_state`, `gsa_fwd`,
/// `gsa_probs`, `gsa_chunk_dstate`, `gsa_bwd_kv`.
pub(super) fn smem_floats(d: usize, m: usize, c: usize) -> [usize; 5] {
    let (cd, cm, st, cc) = (c * (d + 1), c * (m + 1), m * (d + 1), c * c);
    // The cumsum `bc` takes two `[C][M]` tiles (high and low parts).
    [
        2 * cd + 3 * cm,
        3 * cd + st + 4 * cm + 2 * cc,
        4 * cd + st + 6 * cm + 2 * cc,
        2 * cd + 5 * cm,
        6 * cd + st + 6 * cm + 4 * cc,
    ]
}

/// The whole GSA training source of `spec` with kernel names starting `prefix`.
pub(super) fn source(spec: &LigerSpec, prefix: &str, shape: Shape) -> String {
    let (h, kv, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    let mut s = String::from("#include <cuda_bf16.h>\n");
    s.push_str(PRELUDE);
    let _ = write!(
        s,
        r#"
// ---- LigerAttention training (gsa): constants of this spec
constexpr int H = {h};             // query heads
constexpr int HKV = {kv};           // KV heads
constexpr int G = H / HKV;       // query heads per KV head
constexpr int D = {d};             // head dim
constexpr int M = {m};             // slots
constexpr int W = {w};             // a query sees itself and the W previous tokens
constexpr int C = {c};             // chunk length
constexpr int RS = D + 1;          // row stride of [C][D] tiles and [M][D] states in shared memory
constexpr int RM = M + 1;          // row stride of [C][M] tiles
constexpr int MD = M * D;          // floats of one state in global memory ([M][D], unpadded)
constexpr int NT = {nt};           // threads of the chunked kernels
constexpr float SCALE = {scale};     // 1/sqrt(D)
constexpr float MIX_WIN = {mix_win};
constexpr float MIX_LIN = {mix_lin};
[[maybe_unused]] constexpr bool Y_SAVED = false;  // win_fwd writes y; GSA's fwd adds its part

{helpers}{gsa_helpers}"#,
        m = spec.slots,
        w = spec.window,
        c = shape.chunk,
        nt = NT,
        scale = float_lit(1.0 / (d as f64).sqrt()),
        mix_win = float_lit(spec.mix_window),
        mix_lin = float_lit(spec.mix_linear),
        helpers = HELPERS,
        gsa_helpers = GSA_HELPERS,
    );
    s.push_str(&super::win_tc::window_source(spec, prefix, shape));
    s.push_str(&gsa_kernels(prefix));
    s
}

/// Device helpers of the GSA kernels.
const GSA_HELPERS: &str = r#"
// In-chunk inclusive cumsum b of the log-gates of KV head j as two floats, bc [C][RM] (high part)
// and bc + C*RM [C][RM] (low part), summed in double: a gate near -30 makes |b| large, and the
// difference of two such f32 sums would lose the small gates between them. Slot writes
// sw = 1 - e^g [C][RM]. Rows >= L zero. Ends with a barrier.
__device__ void gsa_load_gates(float* bc, float* sw, const float* gate, long long row0, int j, int L) {
    float* bl = bc + C * RM;
    for (int m = threadIdx.x; m < M; m += NT) {
        double acc = 0.0;
        for (int t = 0; t < C; ++t) {
            const float g = t < L ? gate[(row0 + t) * (HKV * M) + j * M + m] : 0.0f;
            acc += (double)g;
            const float hi = (float)acc;
            bc[t * RM + m] = t < L ? hi : 0.0f;
            bl[t * RM + m] = t < L ? (float)(acc - (double)hi) : 0.0f;
            sw[t * RM + m] = t < L ? -expm1f(g) : 0.0f;
        }
    }
    __syncthreads();
}

// e^(b_tm - b_sm) (s <= t) from the two-float cumsum: the high parts' difference is exact when small.
__device__ __forceinline__ float gsa_decay(const float* bc, int t, int s, int m) {
    const float* bl = bc + C * RM;
    return expf((bc[t * RM + m] - bc[s * RM + m]) + (bl[t * RM + m] - bl[s * RM + m]));
}

// e^(b_tm).
__device__ __forceinline__ float gsa_gain(const float* bc, int t, int m) {
    return expf(bc[t * RM + m] + bc[C * RM + t * RM + m]);
}

// The M floats at `off` of each row of a [rows][stride] tensor into x [C][RM] (rows >= L zero).
// No barrier.
__device__ void gsa_load_mrows(float* x, const float* src, long long row0, int stride, int off, int L) {
    for (int e = threadIdx.x; e < C * M; e += NT) {
        const int t = e / M, m = e % M;
        x[t * RM + m] = t < L ? src[(row0 + t) * stride + off + m] : 0.0f;
    }
}

// An [M][D] state from global into shared memory (row stride RS). No barrier.
__device__ void gsa_load_state(float* dst, const float* src) {
    for (int e = threadIdx.x; e < MD; e += NT) dst[(e / D) * RS + e % D] = src[e];
}

// out[t][m] = e^(bc_tm) (X_t . S_m) + sum_(s<=t) P[t][s] sw_sm e^(bc_tm - bc_sm) for t < L, else 0
// (X [C][RS], S [M][RS], P [C][C], out [C][RM]). Ends with a barrier.
__device__ void gsa_slot_scores(float* out, const float* X, const float* S, const float* P,
                                const float* bc, const float* sw, int L) {
    for (int e = threadIdx.x; e < C * M; e += NT) {
        const int t = e / M, m = e % M;
        float a = 0.0f;
        if (t < L) {
            for (int i = 0; i < D; ++i) a += X[t * RS + i] * S[m * RS + i];
            a *= gsa_gain(bc, t, m);
            for (int s = 0; s <= t; ++s) a += P[t * C + s] * sw[s * RM + m] * gsa_decay(bc, t, s, m);
        }
        out[t * RM + m] = a;
    }
    __syncthreads();
}

// A[t][s] = sum_m X_tm sw_sm e^(bc_tm - bc_sm) for s <= t < L, else 0 (X [C][RM]). Ends with a barrier.
__device__ void gsa_slot_mix(float* A, const float* X, const float* bc, const float* sw, int L) {
    for (int e = threadIdx.x; e < C * C; e += NT) {
        const int t = e / C, s = e % C;
        float a = 0.0f;
        if (t < L && s <= t)
            for (int m = 0; m < M; ++m) a += X[t * RM + m] * sw[s * RM + m] * gsa_decay(bc, t, s, m);
        A[e] = a;
    }
    __syncthreads();
}

// sum_m Xe_tm S[m][c] + sum_(s<=t) A[t][s] Y[s][c] (Xe [C][RM], already times e^bc; S [M][RS]; Y [C][RS]).
__device__ __forceinline__ float gsa_mix_out(int t, int c, const float* Xe, const float* S, const float* A,
                                             const float* Y) {
    float o = 0.0f;
    for (int m = 0; m < M; ++m) o += Xe[t * RM + m] * S[m * RS + c];
    for (int s = 0; s <= t; ++s) o += A[t * C + s] * Y[s * RS + c];
    return o;
}

// p = softmax over M of each of the first L rows of x ([C][RM]; p may be x); rows >= L of p zero.
// One warp per row. Ends with a barrier.
__device__ void gsa_softmax(float* p, const float* x, int L) {
    const int lane = threadIdx.x & 31;
    for (int r = threadIdx.x >> 5; r < C; r += NT / 32) {
        if (r >= L) {
            for (int i = lane; i < M; i += 32) p[r * RM + i] = 0.0f;
            continue;
        }
        float mx = neg_inf();
        for (int i = lane; i < M; i += 32) mx = fmaxf(mx, x[r * RM + i]);
        mx = warp_max(mx);
        float z = 0.0f;
        for (int i = lane; i < M; i += 32) {
            const float e = expf(x[r * RM + i] - mx);
            p[r * RM + i] = e;
            z += e;
        }
        z = warp_sum(z);
        for (int i = lane; i < M; i += 32) p[r * RM + i] /= z;
    }
    __syncthreads();
}

// Multiplies the first L rows of x [C][RM] by e^bc. No barrier.
__device__ void gsa_times_decay(float* x, const float* bc, int L) {
    for (int e = threadIdx.x; e < L * M; e += NT) x[(e / M) * RM + e % M] *= gsa_gain(bc, e / M, e % M);
}
"#;

/// The chunk-parallel slot and value passes, forward and backward.
fn gsa_kernels(p: &str) -> String {
    // Both states of a slot ([M][D] each) decay by their slot row.
    let scans = scan_kernels(&format!("{p}_gsa_scan"), "2 * MD", "(e % MD) / D", "M");
    format!(
        r#"
// Chunk n (L valid rows from token row row0, b = in-chunk inclusive cumsum of the log-gates, s = 1 - e^g)
// of KV head j, with A = Hk^T and V = Hv ([M][D], both decaying per slot row m):
//   logits_t = e^b_t (q_t . A_n) + sum_(s<=t) (q_t . k_s) s_s e^(b_t - b_s)        (per slot)
//   p_t      = softmax_M(logits_t)
//   o_t      = sum_m p_tm e^b_tm V_n[m] + sum_(s<=t) (sum_m p_tm s_sm e^(b_tm - b_sm)) v_s
//   A_(n+1)  = diag(e^b_L) A_n + sum_s (s_s e^(b_L - b_s))^T k_s, likewise V with v_s.
// Scratch per (row, KV head, chunk) slot (b * HKV + j) * nch + n: A then V (2 [M][D]) and e^b_L [M].

// 1. Each chunk's dA, dV into states[slot] and e^b_L into dec[slot]. Grid (nch, HKV, batch).
// Shared: ks, vs [C][RS], bc (high, low), sw [C][RM].
extern "C" __global__ void {p}_gsa_chunk_state(const float* __restrict__ k, const float* __restrict__ v,
        const float* __restrict__ gate, float* __restrict__ states, float* __restrict__ dec, int seq) {{
    extern __shared__ float smem[];
    float* ks = smem;
    float* vs = ks + C * RS;
    float* bc = vs + C * RS;
    float* sw = bc + 2 * C * RM;
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + n * C, at = (long long)(b * HKV + j) * nch + n;
    load_rows(ks, k, row0, HKV * D, j * D, L, 1.0f);
    load_rows(vs, v, row0, HKV * D, j * D, L, 1.0f);
    gsa_load_gates(bc, sw, gate, row0, j, L);
    for (int e = threadIdx.x; e < L * M; e += NT) {{
        const int t = e / M, m = e % M;
        sw[t * RM + m] *= gsa_decay(bc, L - 1, t, m);
    }}
    __syncthreads();
    float* dst = states + at * 2 * MD;
    for (int e = threadIdx.x; e < 2 * MD; e += NT) {{
        const int r = e % MD, m = r / D, i = r % D;
        const float* X = e < MD ? ks : vs;
        float acc = 0.0f;
        for (int s = 0; s < L; ++s) acc += sw[s * RM + m] * X[s * RS + i];
        dst[e] = acc;
    }}
    for (int m = threadIdx.x; m < M; m += NT) dec[at * M + m] = gsa_gain(bc, L - 1, m);
}}

{scan_fwd}
// 3. Output of chunk n, query head h: y += MIX_LIN * o (y holds the window part). Grid (nch, H, batch).
// Shared: qs, ks, vs [C][RS], S [M][RS], bc (high, low), sw, pr [C][RM], QK, Ap [C][C].
extern "C" __global__ void {p}_gsa_fwd(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ v, const float* __restrict__ gate, const float* __restrict__ states,
        float* __restrict__ y, int seq) {{
    extern __shared__ float smem[];
    float* qs = smem;
    float* ks = qs + C * RS;
    float* vs = ks + C * RS;
    float* S = vs + C * RS;
    float* bc = S + M * RS;
    float* sw = bc + 2 * C * RM;
    float* pr = sw + C * RM;
    float* QK = pr + C * RM;
    float* Ap = QK + C * C;
    const int n = blockIdx.x, h = blockIdx.y, b = blockIdx.z, j = h / G, nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + n * C, at = (long long)(b * HKV + j) * nch + n;
    gsa_load_state(S, states + at * 2 * MD);
    load_rows(qs, q, row0, H * D, h * D, L, 1.0f);
    load_rows(ks, k, row0, HKV * D, j * D, L, 1.0f);
    load_rows(vs, v, row0, HKV * D, j * D, L, 1.0f);
    gsa_load_gates(bc, sw, gate, row0, j, L);
    causal_dots(QK, qs, ks, L);
    gsa_slot_scores(pr, qs, S, QK, bc, sw, L);
    gsa_softmax(pr, pr, L);
    gsa_slot_mix(Ap, pr, bc, sw, L);
    gsa_load_state(S, states + at * 2 * MD + MD);
    gsa_times_decay(pr, bc, L);
    __syncthreads();
    for (int e = threadIdx.x; e < L * D; e += NT) {{
        const int t = e / D, c = e % D;
        y[(row0 + t) * (H * D) + h * D + c] += MIX_LIN * gsa_mix_out(t, c, pr, S, Ap, vs);
    }}
}}

// Backward, with do = MIX_LIN * dy, dp_t = d o / d p_t, dl_t = p_t (dp_t - <p_t, dp_t>) the logits'
// gradient. Per-head scratch rows [row][H][M]: p, dl and hb = p dp + logits dl (the heads' part of
// dL/db, by the gate identity of both passes).
// 4. Per (chunk n, query head h): p, dl, hb to scratch and dq = e^b (dl . A_n) + sum_(s<=t) W_ts k_s with
// W_ts = sum_m dl_tm s_sm e^(b_tm - b_sm) (written: the raw q gets only the slot pass's gradient).
// Grid (nch, H, batch). Shared: qs, ks, vs, dO [C][RS], S [M][RS], bc (high, low), sw, lg, pr, dp [C][RM], P1, P2 [C][C].
extern "C" __global__ void {p}_gsa_probs(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ v, const float* __restrict__ gate, const float* __restrict__ dy,
        const float* __restrict__ states, float* __restrict__ pbuf, float* __restrict__ dlbuf,
        float* __restrict__ hbbuf, float* __restrict__ dq, int seq) {{
    extern __shared__ float smem[];
    float* qs = smem;
    float* ks = qs + C * RS;
    float* vs = ks + C * RS;
    float* dO = vs + C * RS;
    float* S = dO + C * RS;
    float* bc = S + M * RS;
    float* sw = bc + 2 * C * RM;
    float* lg = sw + C * RM;
    float* pr = lg + C * RM;
    float* dp = pr + C * RM;
    float* P1 = dp + C * RM;
    float* P2 = P1 + C * C;
    const int n = blockIdx.x, h = blockIdx.y, b = blockIdx.z, j = h / G, nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + n * C, at = (long long)(b * HKV + j) * nch + n;
    const int lane = threadIdx.x & 31;
    gsa_load_state(S, states + at * 2 * MD);
    load_rows(qs, q, row0, H * D, h * D, L, 1.0f);
    load_rows(ks, k, row0, HKV * D, j * D, L, 1.0f);
    load_rows(vs, v, row0, HKV * D, j * D, L, 1.0f);
    load_rows(dO, dy, row0, H * D, h * D, L, MIX_LIN);
    gsa_load_gates(bc, sw, gate, row0, j, L);
    causal_dots(P1, qs, ks, L);
    gsa_slot_scores(lg, qs, S, P1, bc, sw, L);
    gsa_softmax(pr, lg, L);
    gsa_load_state(S, states + at * 2 * MD + MD);
    causal_dots(P2, dO, vs, L);
    gsa_slot_scores(dp, dO, S, P2, bc, sw, L);
    for (int r = threadIdx.x >> 5; r < L; r += NT / 32) {{
        float inner = 0.0f;
        for (int m = lane; m < M; m += 32) inner += pr[r * RM + m] * dp[r * RM + m];
        inner = warp_sum(inner);
        const long long o = ((row0 + r) * H + h) * M;
        for (int m = lane; m < M; m += 32) {{
            const float pm = pr[r * RM + m], dpm = dp[r * RM + m], dl = pm * (dpm - inner);
            pbuf[o + m] = pm;
            dlbuf[o + m] = dl;
            hbbuf[o + m] = pm * dpm + lg[r * RM + m] * dl;
            dp[r * RM + m] = dl;
        }}
    }}
    __syncthreads();
    gsa_slot_mix(P1, dp, bc, sw, L);
    gsa_load_state(S, states + at * 2 * MD);
    gsa_times_decay(dp, bc, L);
    __syncthreads();
    for (int e = threadIdx.x; e < L * D; e += NT) {{
        const int t = e / D, i = e % D;
        dq[(row0 + t) * (H * D) + h * D + i] = gsa_mix_out(t, i, dp, S, P1, ks);
    }}
}}

// 5. Each chunk's contribution to the gradients of the states entering it:
//   dA += sum_h sum_t (dl^h_t e^b_t)^T q^h_t,   dV += sum_h sum_t (p^h_t e^b_t)^T do^h_t.
// Grid (nch, HKV, batch). Shared: qs, dO [C][RS], bc (high, low), sw, pe, de [C][RM].
extern "C" __global__ void {p}_gsa_chunk_dstate(const float* __restrict__ q, const float* __restrict__ dy,
        const float* __restrict__ gate, const float* __restrict__ pbuf, const float* __restrict__ dlbuf,
        float* __restrict__ dstates, int seq) {{
    extern __shared__ float smem[];
    float* qs = smem;
    float* dO = qs + C * RS;
    float* bc = dO + C * RS;
    float* sw = bc + 2 * C * RM;
    float* pe = sw + C * RM;
    float* de = pe + C * RM;
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + n * C, at = (long long)(b * HKV + j) * nch + n;
    float* dst = dstates + at * 2 * MD;
    gsa_load_gates(bc, sw, gate, row0, j, L);
    for (int g = 0; g < G; ++g) {{
        const int h = j * G + g;
        load_rows(qs, q, row0, H * D, h * D, L, 1.0f);
        load_rows(dO, dy, row0, H * D, h * D, L, MIX_LIN);
        gsa_load_mrows(pe, pbuf, row0, H * M, h * M, L);
        gsa_load_mrows(de, dlbuf, row0, H * M, h * M, L);
        __syncthreads();
        gsa_times_decay(pe, bc, L);
        gsa_times_decay(de, bc, L);
        __syncthreads();
        for (int e = threadIdx.x; e < 2 * MD; e += NT) {{
            const int r = e % MD, m = r / D, i = r % D;
            const float* X = e < MD ? de : pe;
            const float* Y = e < MD ? qs : dO;
            float acc = 0.0f;
            for (int t = 0; t < L; ++t) acc += X[t * RM + m] * Y[t * RS + i];
            dst[e] = g == 0 ? acc : dst[e] + acc;
        }}
        __syncthreads();
    }}
}}

{scan_bwd}
// 7. Per (chunk n, KV head j), with dGA, dGV the gradients of the states leaving it, QK^h_ts = q^h_t . k_s,
// DV^h_ts = do^h_t . v_s, W^h_ts = sum_m dl^h_tm s_sm e^(b_tm - b_sm), Ap^h_ts likewise with p:
//   dk_s  = sum_m s_sm e^(b_Lm - b_sm) dGA[m] + sum_h sum_(t>=s) W^h_ts q^h_t                  -> dk
//   dv_s += sum_m s_sm e^(b_Lm - b_sm) dGV[m] + sum_h sum_(t>=s) Ap^h_ts do^h_t                 -> dv
//   ds_sm = e^(b_Lm - b_sm) (dGA[m] . k_s + dGV[m] . v_s)
//         + sum_h sum_(t>=s) e^(b_tm - b_sm) (dl^h_tm QK^h_ts + p^h_tm DV^h_ts)               -> dsbuf
//   db_sm = sum_h hb^h_sm - s_sm ds_sm                                                      -> dbuf
// Grid (nch, HKV, batch). Shared: ks, vs, qs, dO, dks, dvs [C][RS], S [M][RS], bc (high, low), sw, pr, dl, dss [C][RM],
// QK, DV, Wd, Ap [C][C].
extern "C" __global__ void {p}_gsa_bwd_kv(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ v, const float* __restrict__ gate, const float* __restrict__ dy,
        const float* __restrict__ pbuf, const float* __restrict__ dlbuf, const float* __restrict__ hbbuf,
        const float* __restrict__ dstates, float* __restrict__ dk, float* __restrict__ dv,
        float* __restrict__ dbuf, float* __restrict__ dsbuf, int seq) {{
    extern __shared__ float smem[];
    float* ks = smem;
    float* vs = ks + C * RS;
    float* qs = vs + C * RS;
    float* dO = qs + C * RS;
    float* dks = dO + C * RS;
    float* dvs = dks + C * RS;
    float* S = dvs + C * RS;
    float* bc = S + M * RS;
    float* sw = bc + 2 * C * RM;
    float* pr = sw + C * RM;
    float* dl = pr + C * RM;
    float* dss = dl + C * RM;
    float* QK = dss + C * RM;
    float* DV = QK + C * C;
    float* Wd = DV + C * C;
    float* Ap = Wd + C * C;
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + n * C, at = (long long)(b * HKV + j) * nch + n;
    load_rows(ks, k, row0, HKV * D, j * D, L, 1.0f);
    load_rows(vs, v, row0, HKV * D, j * D, L, 1.0f);
    gsa_load_state(S, dstates + at * 2 * MD);
    gsa_load_gates(bc, sw, gate, row0, j, L);
    // Inter-chunk parts: the slot state's gradient, then the value state's.
    for (int e = threadIdx.x; e < C * D; e += NT) {{
        const int s = e / D, i = e % D;
        float acc = 0.0f;
        if (s < L)
            for (int m = 0; m < M; ++m) acc += sw[s * RM + m] * gsa_decay(bc, L - 1, s, m) * S[m * RS + i];
        dks[s * RS + i] = acc;
    }}
    for (int e = threadIdx.x; e < C * M; e += NT) {{
        const int s = e / M, m = e % M;
        float acc = 0.0f;
        if (s < L) {{
            for (int i = 0; i < D; ++i) acc += S[m * RS + i] * ks[s * RS + i];
            acc *= gsa_decay(bc, L - 1, s, m);
        }}
        dss[s * RM + m] = acc;
    }}
    __syncthreads();
    gsa_load_state(S, dstates + at * 2 * MD + MD);
    __syncthreads();
    for (int e = threadIdx.x; e < C * D; e += NT) {{
        const int s = e / D, c = e % D;
        float acc = 0.0f;
        if (s < L)
            for (int m = 0; m < M; ++m) acc += sw[s * RM + m] * gsa_decay(bc, L - 1, s, m) * S[m * RS + c];
        dvs[s * RS + c] = acc;
    }}
    for (int e = threadIdx.x; e < L * M; e += NT) {{
        const int s = e / M, m = e % M;
        float acc = 0.0f;
        for (int c = 0; c < D; ++c) acc += S[m * RS + c] * vs[s * RS + c];
        dss[s * RM + m] += gsa_decay(bc, L - 1, s, m) * acc;
    }}
    __syncthreads();
    for (int g = 0; g < G; ++g) {{
        const int h = j * G + g;
        load_rows(qs, q, row0, H * D, h * D, L, 1.0f);
        load_rows(dO, dy, row0, H * D, h * D, L, MIX_LIN);
        gsa_load_mrows(pr, pbuf, row0, H * M, h * M, L);
        gsa_load_mrows(dl, dlbuf, row0, H * M, h * M, L);
        __syncthreads();
        causal_dots(QK, qs, ks, L);
        causal_dots(DV, dO, vs, L);
        gsa_slot_mix(Wd, dl, bc, sw, L);
        gsa_slot_mix(Ap, pr, bc, sw, L);
        for (int e = threadIdx.x; e < L * D; e += NT) {{
            const int s = e / D, i = e % D;
            float ak = 0.0f, av = 0.0f;
            for (int t = s; t < L; ++t) {{
                ak += Wd[t * C + s] * qs[t * RS + i];
                av += Ap[t * C + s] * dO[t * RS + i];
            }}
            dks[s * RS + i] += ak;
            dvs[s * RS + i] += av;
        }}
        for (int e = threadIdx.x; e < L * M; e += NT) {{
            const int s = e / M, m = e % M;
            float acc = 0.0f;
            for (int t = s; t < L; ++t)
                acc += gsa_decay(bc, t, s, m) * (dl[t * RM + m] * QK[t * C + s] + pr[t * RM + m] * DV[t * C + s]);
            dss[s * RM + m] += acc;
        }}
        __syncthreads();
    }}
    for (int e = threadIdx.x; e < L * D; e += NT) {{
        const int s = e / D, i = e % D;
        const long long o = (row0 + s) * (HKV * D) + j * D + i;
        dk[o] = dks[s * RS + i];
        dv[o] += dvs[s * RS + i];
    }}
    for (int e = threadIdx.x; e < L * M; e += NT) {{
        const int s = e / M, m = e % M;
        float hb = 0.0f;
        for (int g = 0; g < G; ++g) hb += hbbuf[((row0 + s) * H + j * G + g) * M + m];
        const long long o = (row0 + s) * (HKV * M) + j * M + m;
        dbuf[o] = hb - sw[s * RM + m] * dss[s * RM + m];
        dsbuf[o] = dss[s * RM + m];
    }}
}}

// 8. dgate_t = sum_(u>=t) db_u - e^g_t ds_t (dgate holds ds on entry; s = 1 - e^g), f64 accumulator.
// One thread per (row, KV head, slot): grid ceil(batch*HKV*M / NT).
extern "C" __global__ void {p}_gsa_finish(const float* __restrict__ gate, const float* __restrict__ db,
        float* __restrict__ dgate, int batch, int seq) {{
    const long long id = (long long)blockIdx.x * NT + threadIdx.x;
    if (id >= (long long)batch * HKV * M) return;
    const long long b = id / (HKV * M), col = id % (HKV * M);
    double acc = 0.0;
    for (int t = seq - 1; t >= 0; --t) {{
        const long long at = (b * seq + t) * (HKV * M) + col;
        acc += (double)db[at];
        dgate[at] = (float)acc - expf(gate[at]) * dgate[at];
    }}
}}
"#,
        scan_fwd = scans[0],
        scan_bwd = scans[1],
    )
}
