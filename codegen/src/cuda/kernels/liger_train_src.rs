//! CUDA C++ text of the LigerAttention training kernels (one source per
//! spec; [`super::liger_train`] owns the launch lists and the checks).
//!
//! The source is the shared prelude, the spec's constants, a few device
//! helpers (chunk loaders, causal score blocks, the window's online softmax,
//! the softmax backward of one row) and the entry points. Every exponent of a
//! decay is a difference `b_t − b_s ≤ 0` of in-chunk cumulative log-gates, or
//! `b_t ≤ 0` itself; nothing divides by a decay.

use std::fmt::Write as _;

use ligerc_ir::{LigerSpec, LigerVariant};

use crate::cuda::kernels::{PRELUDE, float_lit};

/// Threads per block of the chunked kernels.
pub(super) const NT: usize = 256;
/// Warps per block of the window kernels (one warp per query or key row).
pub(super) const WIN_WARPS: usize = 4;

/// Sizes the source is generated for.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    /// Chunk length.
    pub(super) chunk: usize,
    /// Value columns (forward, dv) or key rows (dq/dk) per block.
    pub(super) tile: usize,
}

/// Per-variant pieces: the log-decay of channel `i`, the key operand before
/// its map, whether the key map is a softmax, and the finish of the key row.
fn variant_code(v: LigerVariant) -> (&'static str, &'static str, bool, &'static str) {
    let gate = match v {
        LigerVariant::Gla | LigerVariant::Hgrn2 => "return gate[row * (HKV * D) + j * D + i];",
        LigerVariant::Retention => "(void)i;\n    return gate[row * HKV + j];",
        _ => "(void)gate; (void)row; (void)j; (void)i;\n    return 0.0f;",
    };
    let key = match v {
        LigerVariant::Hgrn2 => "(void)k;\n    return -expm1f(gate_at(gate, row, j, i));",
        _ => "(void)gate;\n    return k[row * (HKV * D) + j * D + i];",
    };
    let finish = match v {
        LigerVariant::Gla => {
            "softmax_backward_row(k + kat, dk + kat);\n            \
             for (int i = lane; i < D; i += 32) dgate[kat + i] = rsum[kat + i];"
        }
        LigerVariant::Hgrn2 => {
            "(void)k;\n            \
             for (int i = lane; i < D; i += 32) {\n                \
             dgate[kat + i] = rsum[kat + i] - expf(gate[kat + i]) * dk[kat + i];\n                \
             dk[kat + i] = 0.0f;  // k~ = 1 - e^g: the key reaches k only through the gate\n            }"
        }
        LigerVariant::Retention => {
            "softmax_backward_row(k + kat, dk + kat);\n            \
             float part = 0.0f;\n            \
             for (int i = lane; i < D; i += 32) part += rsum[kat + i];\n            \
             part = warp_sum(part);\n            \
             if (lane == 0) dgate[row * HKV + j] = part;"
        }
        _ => {
            "(void)gate; (void)dgate; (void)rsum;\n            softmax_backward_row(k + kat, dk + kat);"
        }
    };
    (gate, key, v != LigerVariant::Hgrn2, finish)
}

/// The whole training source of `spec` with kernel names starting `prefix`.
pub(super) fn source(spec: &LigerSpec, prefix: &str, shape: Shape) -> String {
    let (h, kv, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    let (gate, key, softmax_key, finish) = variant_code(spec.variant);
    let mut s = String::from("#include <cuda_bf16.h>\n");
    s.push_str(PRELUDE);
    let _ = write!(
        s,
        r#"
// ---- LigerAttention training ({variant}): constants of this spec
constexpr int H = {h};             // query heads
constexpr int HKV = {kv};           // KV heads
constexpr int G = H / HKV;       // query heads per KV head
constexpr int D = {d};             // head dim (= key channels = value channels)
constexpr int W = {w};             // a query sees itself and the W previous tokens
constexpr int C = {c};             // chunk length
constexpr int TILE = {tile};          // value columns (forward, dv) or key rows (dq, dk) per block
constexpr int NT = {nt};           // threads of the chunked kernels
constexpr int WARPS = {warps};          // warps of the window kernels
constexpr int DPL = (D + 31) / 32; // features per lane
constexpr float SCALE = {scale};     // 1/sqrt(D)
constexpr float MIX_WIN = {mix_win};
constexpr float MIX_LIN = {mix_lin};
constexpr bool KEY_SOFTMAX = {softmax_key};

// Log-decay of channel i of KV head j at token row `row` (<= 0).
__device__ __forceinline__ float gate_at(const float* gate, long long row, int j, int i) {{
    {gate}
}}

// The key operand of channel i before its feature map.
__device__ __forceinline__ float key_raw(const float* k, const float* gate, long long row, int j, int i) {{
    {key}
}}
{helpers}"#,
        variant = spec.variant,
        w = spec.window,
        c = shape.chunk,
        tile = shape.tile,
        nt = NT,
        warps = WIN_WARPS,
        scale = float_lit(1.0 / (d as f64).sqrt()),
        mix_win = float_lit(spec.mix_window),
        mix_lin = float_lit(spec.mix_linear),
        helpers = HELPERS,
    );
    s.push_str(&window_kernels(prefix));
    s.push_str(&recurrence_kernels(prefix));
    let _ = write!(
        s,
        r#"
// dS-free tail of the backward: softmax backward of q~ and k~ (DQ, DK hold dq~, dk~), gate gradient
// from the reverse cumsum `rsum` of db. One block per (token, row); a warp per query head, then per KV head.
extern "C" __global__ void {prefix}_finish(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ gate, const float* __restrict__ rsum, float* __restrict__ dq,
        float* __restrict__ dk, float* __restrict__ dgate, int seq) {{
    const long long row = (long long)blockIdx.y * seq + blockIdx.x;
    [[maybe_unused]] const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int u = warp; u < H + HKV; u += NT / 32) {{
        if (u < H) {{
            softmax_backward_row(q + row * (H * D) + u * D, dq + row * (H * D) + u * D);
        }} else {{
            const int j = u - H;
            const long long kat = row * (HKV * D) + j * D;
            {finish}
        }}
    }}
}}

// Zeroes the `F` floats of each of batch*seq rows (swa-only: DQ and DK get no gradient).
template <int F>
__device__ __forceinline__ void zero_rows(float* x, int batch, int seq) {{
    const long long n = (long long)batch * seq * F;
    for (long long e = (long long)blockIdx.x * NT + threadIdx.x; e < n; e += (long long)gridDim.x * NT) x[e] = 0.0f;
}}
extern "C" __global__ void {prefix}_zero_q(float* __restrict__ x, int batch, int seq) {{ zero_rows<H * D>(x, batch, seq); }}
extern "C" __global__ void {prefix}_zero_k(float* __restrict__ x, int batch, int seq) {{ zero_rows<HKV * D>(x, batch, seq); }}
"#
    );
    s
}

/// Device helpers shared by the kernels of one source.
const HELPERS: &str = r#"
// Mapped keys kf [C][D] (softmax over D, or 1 - e^g for HGRN2) and the in-chunk inclusive cumsum of the
// log-gates bc [C][D] of the chunk starting at token row row0 (L valid rows, the rest zero). Ends with a barrier.
__device__ void load_keys_gates(float* kf, float* bc, const float* k, const float* gate, long long row0, int j, int L) {
    for (int e = threadIdx.x; e < C * D; e += NT) {
        const int t = e / D, i = e % D;
        kf[e] = t < L ? key_raw(k, gate, row0 + t, j, i) : 0.0f;
        bc[e] = t < L ? gate_at(gate, row0 + t, j, i) : 0.0f;
    }
    __syncthreads();
    if constexpr (KEY_SOFTMAX) softmax_rows(kf, L, D);
    for (int i = threadIdx.x; i < D; i += NT) {
        float acc = 0.0f;
        for (int t = 0; t < L; ++t) {
            acc += bc[t * D + i];
            bc[t * D + i] = acc;
        }
    }
    __syncthreads();
}

// q~ = softmax over D of query head h's rows of the chunk into qf [C][D]. Ends with a barrier.
__device__ void load_queries(float* qf, const float* q, long long row0, int h, int L) {
    for (int e = threadIdx.x; e < C * D; e += NT) {
        const int t = e / D;
        qf[e] = t < L ? q[(row0 + t) * (H * D) + h * D + e % D] : 0.0f;
    }
    __syncthreads();
    softmax_rows(qf, L, D);
    __syncthreads();
}

// A[t][s] = sum_i qf[t,i] kf[s,i] e^(bc[t,i] - bc[s,i]) for s <= t < L, else 0. Ends with a barrier.
__device__ void gated_scores(float* A, const float* qf, const float* kf, const float* bc, int L) {
    for (int e = threadIdx.x; e < C * C; e += NT) {
        const int t = e / C, s = e % C;
        float a = 0.0f;
        if (t < L && s <= t)
            for (int i = 0; i < D; ++i) a += qf[t * D + i] * kf[s * D + i] * expf(bc[t * D + i] - bc[s * D + i]);
        A[e] = a;
    }
    __syncthreads();
}

// P[t][s] = <X_t, Y_s> over D for s <= t < L, else 0 (X, Y [C][D]). Ends with a barrier.
__device__ void causal_dots(float* P, const float* X, const float* Y, int L) {
    for (int e = threadIdx.x; e < C * C; e += NT) {
        const int t = e / C, s = e % C;
        float a = 0.0f;
        if (t < L && s <= t)
            for (int i = 0; i < D; ++i) a += X[t * D + i] * Y[s * D + i];
        P[e] = a;
    }
    __syncthreads();
}

// <x, y> over D of a shared row and a global row, by one lane.
__device__ __forceinline__ float row_dot(const float* x, const float* y) {
    float a = 0.0f;
    for (int i = 0; i < D; ++i) a += x[i] * y[i];
    return a;
}

// Online softmax of the query qs (D floats) over the keys lo..p of kb / vb (rows of stride HKV*D):
// m, l and acc[r] = sum_s e^(score_s - m) v_s[lane + 32 r]. 32 keys a round, lane = key for the
// scores, lane = feature for the sum. Warp-collective.
__device__ void window_attend(const float* qs, const float* kb, const float* vb, int lo, int p,
                              float& m, float& l, float* acc) {
    const int lane = threadIdx.x & 31;
    m = neg_inf();
    l = 0.0f;
    for (int r = 0; r < DPL; ++r) acc[r] = 0.0f;
    for (int c0 = lo; c0 <= p; c0 += 32) {
        const int key = c0 + lane;
        const bool valid = key <= p;
        const float s = valid ? row_dot(qs, kb + (long long)key * (HKV * D)) * SCALE : neg_inf();
        const float m_new = fmaxf(m, warp_max(s));
        const float corr = m == m_new ? 1.0f : expf(m - m_new);
        const float e = valid ? expf(s - m_new) : 0.0f;
        l = l * corr + warp_sum(e);
        for (int r = 0; r < DPL; ++r) acc[r] *= corr;
        const int nk = min(32, p - c0 + 1);
        for (int kk = 0; kk < nk; ++kk) {
            const float pk = __shfl_sync(0xffffffffu, e, kk);
            const float* vp = vb + (long long)(c0 + kk) * (HKV * D);
            for (int r = 0; r < DPL; ++r) {
                const int i = lane + 32 * r;
                if (i < D) acc[r] += pk * vp[i];
            }
        }
        m = m_new;
    }
}

// g <- y * (g - <y, g>) with y = softmax(x), for one D-long row (x read-only). Warp-collective.
__device__ void softmax_backward_row(const float* x, float* g) {
    const int lane = threadIdx.x & 31;
    float m = neg_inf();
    for (int i = lane; i < D; i += 32) m = fmaxf(m, x[i]);
    m = warp_max(m);
    float z = 0.0f;
    for (int i = lane; i < D; i += 32) z += expf(x[i] - m);
    z = warp_sum(z);
    float inner = 0.0f;
    for (int i = lane; i < D; i += 32) inner += expf(x[i] - m) / z * g[i];
    inner = warp_sum(inner);
    for (int i = lane; i < D; i += 32) g[i] = expf(x[i] - m) / z * (g[i] - inner);
}
"#;

/// The window branch: forward, and the deterministic two-pass backward.
fn window_kernels(p: &str) -> String {
    format!(
        r#"
// Window forward: y = MIX_WIN * softmax(q k^T * SCALE) v over keys max(0, t-W) ..= t (overwrites y).
// One warp per (token, query head): grid (ceil(seq/WARPS), H, batch).
extern "C" __global__ void {p}_win_fwd(const float* __restrict__ q_rot, const float* __restrict__ k_rot,
        const float* __restrict__ v, float* __restrict__ y, int seq) {{
    __shared__ float qs[WARPS][D];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int t = blockIdx.x * WARPS + warp, h = blockIdx.y, b = blockIdx.z, j = h / G;
    if (t >= seq) return;  // warp-uniform; no block barrier below
    const long long row = (long long)b * seq + t, base = (long long)b * seq * (HKV * D) + j * D;
    for (int i = lane; i < D; i += 32) qs[warp][i] = q_rot[row * (H * D) + h * D + i];
    __syncwarp();
    float m, l, acc[DPL];
    window_attend(qs[warp], k_rot + base, v + base, max(0, t - W), t, m, l, acc);
    for (int r = 0; r < DPL; ++r) {{
        const int i = lane + 32 * r;
        if (i < D) y[row * (H * D) + h * D + i] = MIX_WIN * acc[r] / l;
    }}
}}

// Window backward, pass 1 (one warp per (token, query head)): recomputes the probabilities p, writes
// dq_rot = sum_s p_s (dp_s - delta) * SCALE * k_s with dp_s = do.v_s, do = MIX_WIN * dy, delta = do.o,
// and keeps (log-sum-exp, delta) per (token, head) in `stats` for pass 2.
extern "C" __global__ void {p}_win_dq(const float* __restrict__ q_rot, const float* __restrict__ k_rot,
        const float* __restrict__ v, const float* __restrict__ dy, float* __restrict__ dq_rot,
        float* __restrict__ stats, int seq) {{
    __shared__ float qs[WARPS][D];
    __shared__ float dos[WARPS][D];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int t = blockIdx.x * WARPS + warp, h = blockIdx.y, b = blockIdx.z, j = h / G;
    if (t >= seq) return;  // warp-uniform
    const long long row = (long long)b * seq + t, base = (long long)b * seq * (HKV * D) + j * D;
    for (int i = lane; i < D; i += 32) {{
        qs[warp][i] = q_rot[row * (H * D) + h * D + i];
        dos[warp][i] = MIX_WIN * dy[row * (H * D) + h * D + i];
    }}
    __syncwarp();
    const int lo = max(0, t - W);
    float m, l, acc[DPL];
    window_attend(qs[warp], k_rot + base, v + base, lo, t, m, l, acc);
    float part = 0.0f;
    for (int r = 0; r < DPL; ++r) {{
        const int i = lane + 32 * r;
        if (i < D) part += dos[warp][i] * acc[r] / l;
    }}
    const float delta = warp_sum(part);
    float dq[DPL];
    for (int r = 0; r < DPL; ++r) dq[r] = 0.0f;
    for (int c0 = lo; c0 <= t; c0 += 32) {{
        const int key = c0 + lane;
        float ds = 0.0f;
        if (key <= t) {{
            const float pr = expf(row_dot(qs[warp], k_rot + base + (long long)key * (HKV * D)) * SCALE - m) / l;
            const float dp = row_dot(dos[warp], v + base + (long long)key * (HKV * D));
            ds = pr * (dp - delta) * SCALE;
        }}
        const int nk = min(32, t - c0 + 1);
        for (int kk = 0; kk < nk; ++kk) {{
            const float dsk = __shfl_sync(0xffffffffu, ds, kk);
            const float* kp = k_rot + base + (long long)(c0 + kk) * (HKV * D);
            for (int r = 0; r < DPL; ++r) {{
                const int i = lane + 32 * r;
                if (i < D) dq[r] += dsk * kp[i];
            }}
        }}
    }}
    for (int r = 0; r < DPL; ++r) {{
        const int i = lane + 32 * r;
        if (i < D) dq_rot[row * (H * D) + h * D + i] = dq[r];
    }}
    if (lane == 0) {{
        stats[(row * H + h) * 2] = m + logf(l);
        stats[(row * H + h) * 2 + 1] = delta;
    }}
}}

// Window backward, pass 2 (one warp per (key token, KV head)): over the queries t in s ..= s+W of the
// group's heads, 32 (query, head) pairs a round, p = e^(q.k * SCALE - lse), ds = p (do.v - delta) SCALE:
// dk_rot = sum ds q, dv = sum p do (both overwritten: deterministic, no atomics).
extern "C" __global__ void {p}_win_dkv(const float* __restrict__ q_rot, const float* __restrict__ k_rot,
        const float* __restrict__ v, const float* __restrict__ dy, const float* __restrict__ stats,
        float* __restrict__ dk_rot, float* __restrict__ dv, int seq) {{
    __shared__ float ks[WARPS][D];
    __shared__ float vs[WARPS][D];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int s = blockIdx.x * WARPS + warp, j = blockIdx.y, b = blockIdx.z;
    if (s >= seq) return;  // warp-uniform
    const long long at = ((long long)b * seq + s) * (HKV * D) + j * D;
    for (int i = lane; i < D; i += 32) {{
        ks[warp][i] = k_rot[at + i];
        vs[warp][i] = v[at + i];
    }}
    __syncwarp();
    const int pairs = (min(seq - 1, s + W) - s + 1) * G;
    float dk[DPL], dvv[DPL];
    for (int r = 0; r < DPL; ++r) dk[r] = dvv[r] = 0.0f;
    for (int p0 = 0; p0 < pairs; p0 += 32) {{
        const int pair = p0 + lane;
        float ds = 0.0f, pr = 0.0f;
        if (pair < pairs) {{
            const long long qrow = ((long long)b * seq + s + pair / G) * H + j * G + pair % G;
            pr = expf(row_dot(ks[warp], q_rot + qrow * D) * SCALE - stats[qrow * 2]);
            const float dp = MIX_WIN * row_dot(vs[warp], dy + qrow * D);
            ds = pr * (dp - stats[qrow * 2 + 1]) * SCALE;
        }}
        const int n = min(32, pairs - p0);
        for (int kk = 0; kk < n; ++kk) {{
            const float dsk = __shfl_sync(0xffffffffu, ds, kk), pk = __shfl_sync(0xffffffffu, pr, kk);
            const long long qrow = ((long long)b * seq + s + (p0 + kk) / G) * H + j * G + (p0 + kk) % G;
            for (int r = 0; r < DPL; ++r) {{
                const int i = lane + 32 * r;
                if (i < D) {{
                    dk[r] += dsk * q_rot[qrow * D + i];
                    dvv[r] += pk * MIX_WIN * dy[qrow * D + i];
                }}
            }}
        }}
    }}
    for (int r = 0; r < DPL; ++r) {{
        const int i = lane + 32 * r;
        if (i < D) {{
            dk_rot[at + i] = dk[r];
            dv[at + i] = dvv[r];
        }}
    }}
}}
"#
    )
}

/// The chunked recurrence: forward (output and/or per-chunk states), the
/// value-gradient and query/key-gradient sweeps, the gate's reverse cumsum.
fn recurrence_kernels(p: &str) -> String {
    format!(
        r#"
// Chunked forward of S_t = diag(e^g_t) S_(t-1) + k~_t^T v_t, o_t = q~_t S_t from S = 0, per
// (value tile, KV head, row). Chunk [c0, c0+L), b = in-chunk inclusive cumsum of the log-gates:
//   o_t = (q~_t * e^b_t) . S + sum_(s<=t) (sum_i q~_ti k~_si e^(b_ti - b_si)) v_s
//   S  <- diag(e^b_L) S + sum_s (k~_s * e^(b_L - b_s))^T v_s
// OUT: y += MIX_LIN * o.  SAVE: the state entering chunk n into states[b][j][n] ([D][D]).
// Shared: kf, bc, qf [C][D], vs [C][TILE], S [D][TILE], A [C][C].
template <bool OUT, bool SAVE>
__device__ void recurrence_forward(const float* q, const float* k, const float* v, const float* gate,
                                   float* y, float* states, int seq, float* smem) {{
    float* kf = smem;
    float* bc = kf + C * D;
    [[maybe_unused]] float* qf = bc + C * D;
    float* vs = qf + C * D;
    float* S = vs + C * TILE;
    [[maybe_unused]] float* A = S + D * TILE;
    const int col0 = blockIdx.x * TILE, j = blockIdx.y, b = blockIdx.z;
    const int nch = (seq + C - 1) / C;
    for (int e = threadIdx.x; e < D * TILE; e += NT) S[e] = 0.0f;
    for (int n = 0; n < nch; ++n) {{
        const int L = min(C, seq - n * C);
        const long long row0 = (long long)b * seq + n * C;
        __syncthreads();
        if constexpr (SAVE) {{
            float* dst = states + ((long long)(b * HKV + j) * nch + n) * D * D;
            for (int e = threadIdx.x; e < D * TILE; e += NT) dst[(e / TILE) * D + col0 + e % TILE] = S[e];
        }}
        for (int e = threadIdx.x; e < C * TILE; e += NT) {{
            const int t = e / TILE;
            vs[e] = t < L ? v[(row0 + t) * (HKV * D) + j * D + col0 + e % TILE] : 0.0f;
        }}
        load_keys_gates(kf, bc, k, gate, row0, j, L);
        if constexpr (OUT) {{
            for (int g = 0; g < G; ++g) {{
                const int h = j * G + g;
                load_queries(qf, q, row0, h, L);
                gated_scores(A, qf, kf, bc, L);
                for (int e = threadIdx.x; e < L * TILE; e += NT) {{
                    const int t = e / TILE, c = e % TILE;
                    float o = 0.0f;
                    for (int i = 0; i < D; ++i) o += qf[t * D + i] * expf(bc[t * D + i]) * S[i * TILE + c];
                    for (int s = 0; s <= t; ++s) o += A[t * C + s] * vs[s * TILE + c];
                    y[(row0 + t) * (H * D) + h * D + col0 + c] += MIX_LIN * o;
                }}
                __syncthreads();
            }}
        }}
        for (int e = threadIdx.x; e < D * TILE; e += NT) {{
            const int i = e / TILE, c = e % TILE;
            const float bl = bc[(L - 1) * D + i];
            float acc = expf(bl) * S[e];
            for (int s = 0; s < L; ++s) acc += kf[s * D + i] * expf(bl - bc[s * D + i]) * vs[s * TILE + c];
            S[e] = acc;
        }}
    }}
}}

// Forward: y += MIX_LIN * o (y holds the window part). Grid (D/TILE, HKV, batch).
extern "C" __global__ void {p}_fwd(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ v, const float* __restrict__ gate, float* __restrict__ y, int seq) {{
    extern __shared__ float smem[];
    recurrence_forward<true, false>(q, k, v, gate, y, nullptr, seq, smem);
}}

// Backward sweep 0: the state entering every chunk into `states` [batch][HKV][nch][D][D].
extern "C" __global__ void {p}_states(const float* __restrict__ k, const float* __restrict__ v,
        const float* __restrict__ gate, float* __restrict__ states, int seq) {{
    extern __shared__ float smem[];
    recurrence_forward<false, true>(nullptr, k, v, gate, nullptr, states, seq, smem);
}}

// Backward sweep 1, per (value tile, KV head, row), chunks in reverse, carrying dS = dL/dS (columns
// of the tile) at the end of the chunk; do = MIX_LIN * dy:
//   dv_s += sum_i k~_si e^(b_Li - b_si) dS_ic + sum_h sum_(t>=s) A^h_ts do^h_t      (dv += : the window wrote it)
//   dS   <- diag(e^b_L) dS + sum_h sum_t (q~^h_t * e^b_t)^T do^h_t
// Shared: kf, bc, qf [C][D], dO [C][TILE], dS [D][TILE], A [C][C], dvs [C][TILE].
extern "C" __global__ void {p}_bwd_dv(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ gate, const float* __restrict__ dy, float* __restrict__ dv, int seq) {{
    extern __shared__ float smem[];
    float* kf = smem;
    float* bc = kf + C * D;
    float* qf = bc + C * D;
    float* dO = qf + C * D;
    float* dS = dO + C * TILE;
    float* A = dS + D * TILE;
    float* dvs = A + C * C;
    const int col0 = blockIdx.x * TILE, j = blockIdx.y, b = blockIdx.z;
    for (int e = threadIdx.x; e < D * TILE; e += NT) dS[e] = 0.0f;
    for (int n = (seq + C - 1) / C - 1; n >= 0; --n) {{
        const int L = min(C, seq - n * C);
        const long long row0 = (long long)b * seq + n * C;
        __syncthreads();
        load_keys_gates(kf, bc, k, gate, row0, j, L);
        for (int e = threadIdx.x; e < L * TILE; e += NT) {{
            const int s = e / TILE, c = e % TILE;
            float acc = 0.0f;
            for (int i = 0; i < D; ++i) acc += kf[s * D + i] * expf(bc[(L - 1) * D + i] - bc[s * D + i]) * dS[i * TILE + c];
            dvs[e] = acc;
        }}
        __syncthreads();
        for (int e = threadIdx.x; e < D * TILE; e += NT) dS[e] *= expf(bc[(L - 1) * D + e / TILE]);
        for (int g = 0; g < G; ++g) {{
            const int h = j * G + g;
            load_queries(qf, q, row0, h, L);
            for (int e = threadIdx.x; e < C * TILE; e += NT) {{
                const int t = e / TILE;
                dO[e] = t < L ? MIX_LIN * dy[(row0 + t) * (H * D) + h * D + col0 + e % TILE] : 0.0f;
            }}
            gated_scores(A, qf, kf, bc, L);
            for (int e = threadIdx.x; e < L * TILE; e += NT) {{
                const int s = e / TILE, c = e % TILE;
                float acc = 0.0f;
                for (int t = s; t < L; ++t) acc += A[t * C + s] * dO[t * TILE + c];
                dvs[e] += acc;
            }}
            for (int e = threadIdx.x; e < D * TILE; e += NT) {{
                const int i = e / TILE, c = e % TILE;
                float acc = 0.0f;
                for (int t = 0; t < L; ++t) acc += qf[t * D + i] * expf(bc[t * D + i]) * dO[t * TILE + c];
                dS[e] += acc;
            }}
            __syncthreads();
        }}
        for (int e = threadIdx.x; e < L * TILE; e += NT)
            dv[(row0 + e / TILE) * (HKV * D) + j * D + col0 + e % TILE] += dvs[e];
    }}
}}

// Backward sweep 2, per (key-row tile, KV head, row), chunks in reverse, carrying the tile's rows of dS;
// S = the state entering the chunk (from `states`), P[t][s] = do_t . v_s:
//   dq~_ti = e^b_ti (S do_t)_i + sum_(s<=t) e^(b_ti - b_si) k~_si P_ts       -> dq (temporary: dq~)
//   dk~_si = e^(b_Li - b_si) (dS v_s)_i + sum_h sum_(t>=s) q~_ti e^(b_ti - b_si) P_ts   -> dk (dk~)
//   db_ti  = sum_h q~_ti dq~_ti - k~_ti dk~_ti                                 -> db (gate identity)
// Shared: kf, bc, vs, qf, dO [C][D], S, dS [TILE][D], P [C][C], dks, dbs [C][TILE].
extern "C" __global__ void {p}_bwd_dqk(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ v, const float* __restrict__ gate, const float* __restrict__ dy,
        const float* __restrict__ states, float* __restrict__ dq, float* __restrict__ dk,
        float* __restrict__ db, int seq) {{
    extern __shared__ float smem[];
    float* kf = smem;
    float* bc = kf + C * D;
    float* vs = bc + C * D;
    float* qf = vs + C * D;
    float* dO = qf + C * D;
    float* S = dO + C * D;
    float* dS = S + TILE * D;
    float* P = dS + TILE * D;
    float* dks = P + C * C;
    float* dbs = dks + C * TILE;
    const int i0 = blockIdx.x * TILE, j = blockIdx.y, b = blockIdx.z;
    const int nch = (seq + C - 1) / C;
    for (int e = threadIdx.x; e < TILE * D; e += NT) dS[e] = 0.0f;
    for (int n = nch - 1; n >= 0; --n) {{
        const int L = min(C, seq - n * C);
        const long long row0 = (long long)b * seq + n * C;
        __syncthreads();
        const float* src = states + ((long long)(b * HKV + j) * nch + n) * D * D;
        for (int e = threadIdx.x; e < TILE * D; e += NT) S[e] = src[(long long)(i0 + e / D) * D + e % D];
        for (int e = threadIdx.x; e < C * D; e += NT) {{
            const int t = e / D;
            vs[e] = t < L ? v[(row0 + t) * (HKV * D) + j * D + e % D] : 0.0f;
        }}
        load_keys_gates(kf, bc, k, gate, row0, j, L);
        for (int e = threadIdx.x; e < L * TILE; e += NT) {{
            const int s = e / TILE, r = e % TILE, i = i0 + r;
            float acc = 0.0f;
            for (int c = 0; c < D; ++c) acc += dS[r * D + c] * vs[s * D + c];
            dks[e] = expf(bc[(L - 1) * D + i] - bc[s * D + i]) * acc;
            dbs[e] = 0.0f;
        }}
        __syncthreads();
        for (int e = threadIdx.x; e < TILE * D; e += NT) dS[e] *= expf(bc[(L - 1) * D + i0 + e / D]);
        for (int g = 0; g < G; ++g) {{
            const int h = j * G + g;
            load_queries(qf, q, row0, h, L);
            for (int e = threadIdx.x; e < C * D; e += NT) {{
                const int t = e / D;
                dO[e] = t < L ? MIX_LIN * dy[(row0 + t) * (H * D) + h * D + e % D] : 0.0f;
            }}
            __syncthreads();
            causal_dots(P, dO, vs, L);
            for (int e = threadIdx.x; e < L * TILE; e += NT) {{
                const int x = e / TILE, r = e % TILE, i = i0 + r;
                float inter = 0.0f;
                for (int c = 0; c < D; ++c) inter += S[r * D + c] * dO[x * D + c];
                float dqv = expf(bc[x * D + i]) * inter;
                for (int s = 0; s <= x; ++s) dqv += expf(bc[x * D + i] - bc[s * D + i]) * kf[s * D + i] * P[x * C + s];
                dq[(row0 + x) * (H * D) + h * D + i] = dqv;
                dbs[e] += qf[x * D + i] * dqv;
                float dkv = 0.0f;
                for (int t = x; t < L; ++t) dkv += qf[t * D + i] * expf(bc[t * D + i] - bc[x * D + i]) * P[t * C + x];
                dks[e] += dkv;
            }}
            for (int e = threadIdx.x; e < TILE * D; e += NT) {{
                const int r = e / D, c = e % D, i = i0 + r;
                float acc = 0.0f;
                for (int t = 0; t < L; ++t) acc += qf[t * D + i] * expf(bc[t * D + i]) * dO[t * D + c];
                dS[e] += acc;
            }}
            __syncthreads();
        }}
        for (int e = threadIdx.x; e < L * TILE; e += NT) {{
            const int t = e / TILE, i = i0 + e % TILE;
            const long long at = (row0 + t) * (HKV * D) + j * D + i;
            dk[at] = dks[e];
            db[at] = dbs[e] - kf[t * D + i] * dks[e];
        }}
    }}
}}

// dg_t = sum_(u>=t) db_u per (row, KV head, channel), in place, accumulated in double.
// One thread per (row, KV head, channel): grid ceil(batch*HKV*D / NT).
extern "C" __global__ void {p}_revcumsum(float* __restrict__ db, int batch, int seq) {{
    const long long id = (long long)blockIdx.x * NT + threadIdx.x;
    if (id >= (long long)batch * HKV * D) return;
    const long long b = id / (HKV * D), col = id % (HKV * D);
    double acc = 0.0;
    for (int t = seq - 1; t >= 0; --t) {{
        const long long at = (b * seq + t) * (HKV * D) + col;
        acc += (double)db[at];
        db[at] = (float)acc;
    }}
}}
"#
    )
}
