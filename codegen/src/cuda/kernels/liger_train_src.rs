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
constexpr int RS = D + 1;          // row stride of the [C][D] shared tiles (padded: column walks hit distinct banks)
constexpr int NT = {nt};           // threads of the chunked kernels
constexpr int PER = (D * D + NT - 1) / NT; // state elements per thread
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
pub(super) const HELPERS: &str = r#"
// Softmax over D of the first L rows of x [C][RS], in place; one warp per row. Ends with a barrier.
__device__ void softmax_tile(float* x, int L) {
    const int lane = threadIdx.x & 31;
    for (int r = threadIdx.x >> 5; r < L; r += NT / 32) {
        float* row = x + r * RS;
        float m = neg_inf();
        for (int i = lane; i < D; i += 32) m = fmaxf(m, row[i]);
        m = warp_max(m);
        float z = 0.0f;
        for (int i = lane; i < D; i += 32) {
            const float e = expf(row[i] - m);
            row[i] = e;
            z += e;
        }
        z = warp_sum(z);
        for (int i = lane; i < D; i += 32) row[i] /= z;
    }
    __syncthreads();
}

// In-chunk inclusive cumsum of the log-gates of KV head j into bc [C][RS] for the chunk of L valid rows
// from token row row0 (rows >= L zero). Ends with a barrier.
__device__ void load_gates(float* bc, const float* gate, long long row0, int j, int L) {
    for (int i = threadIdx.x; i < D; i += NT) {
        float acc = 0.0f;
        for (int t = 0; t < C; ++t) {
            if (t < L) acc += gate_at(gate, row0 + t, j, i);
            bc[t * RS + i] = t < L ? acc : 0.0f;
        }
    }
    __syncthreads();
}

// Mapped keys of KV head j into kf [C][RS] (softmax over D, or 1 - e^g for HGRN2; rows >= L zero).
// Ends with a barrier.
__device__ void load_keys(float* kf, const float* k, const float* gate, long long row0, int j, int L) {
    for (int e = threadIdx.x; e < C * D; e += NT) {
        const int t = e / D, i = e % D;
        kf[t * RS + i] = t < L ? key_raw(k, gate, row0 + t, j, i) : 0.0f;
    }
    __syncthreads();
    if constexpr (KEY_SOFTMAX) softmax_tile(kf, L);
}

// q~ = softmax over D of query head h's rows into qf [C][RS]. Ends with a barrier.
__device__ void load_queries(float* qf, const float* q, long long row0, int h, int L) {
    for (int e = threadIdx.x; e < C * D; e += NT) {
        const int t = e / D, i = e % D;
        qf[t * RS + i] = t < L ? q[(row0 + t) * (H * D) + h * D + i] : 0.0f;
    }
    __syncthreads();
    softmax_tile(qf, L);
}

// scale * the D features at `off` of each row of a [rows][stride] tensor into x [C][RS] (rows >= L
// zero). No barrier.
__device__ void load_rows(float* x, const float* src, long long row0, int stride, int off, int L, float scale) {
    for (int e = threadIdx.x; e < C * D; e += NT) {
        const int t = e / D, i = e % D;
        x[t * RS + i] = t < L ? scale * src[(row0 + t) * stride + off + i] : 0.0f;
    }
}

// A [D][D] state from global into shared memory, as is or transposed. No barrier.
template <bool TRANSPOSE>
__device__ void load_state(float* dst, const float* src) {
    for (int e = threadIdx.x; e < D * D; e += NT) dst[TRANSPOSE ? (e % D) * D + e / D : e] = src[e];
}

// A[t][s] = sum_i qf[t,i] kf[s,i] e^(bc[t,i] - bc[s,i]) for s <= t < L, else 0. Ends with a barrier.
__device__ void gated_scores(float* A, const float* qf, const float* kf, const float* bc, int L) {
    for (int e = threadIdx.x; e < C * C; e += NT) {
        const int t = e / C, s = e % C;
        float a = 0.0f;
        if (t < L && s <= t)
            for (int i = 0; i < D; ++i) a += qf[t * RS + i] * kf[s * RS + i] * expf(bc[t * RS + i] - bc[s * RS + i]);
        A[e] = a;
    }
    __syncthreads();
}

// P[t][s] = <X_t, Y_s> over D for s <= t < L, else 0 (X, Y [C][RS]). Ends with a barrier.
__device__ void causal_dots(float* P, const float* X, const float* Y, int L) {
    for (int e = threadIdx.x; e < C * C; e += NT) {
        const int t = e / C, s = e % C;
        float a = 0.0f;
        if (t < L && s <= t)
            for (int i = 0; i < D; ++i) a += X[t * RS + i] * Y[s * RS + i];
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
pub(super) fn window_kernels(p: &str) -> String {
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

/// The chunk-parallel recurrence: per-chunk state contributions, the scans
/// over chunks (the only sequential part, one thread per state element), and
/// the per-chunk output and gradients.
fn recurrence_kernels(p: &str) -> String {
    let scans = scan_kernels(&format!("{p}_scan"), "D * D", "e / D", "D");
    format!(
        r#"
// The recurrence S_t = diag(e^g_t) S_(t-1) + k~_t^T v_t, o_t = q~_t S_t from S = 0, in chunks of C tokens.
// Chunk n (L valid rows from token row row0, b = in-chunk inclusive cumsum of the log-gates) of KV head j:
//   o_t     = (q~_t * e^b_t) . S_n + sum_(s<=t) (sum_i q~_ti k~_si e^(b_ti - b_si)) v_s
//   S_(n+1) = diag(e^b_L) S_n + dS_n,   dS_n = sum_s (k~_s * e^(b_L - b_s))^T v_s
// Every exponent is b_t - b_s <= 0 or b_t <= 0. Scratch per (row, KV head, chunk): a [D][D] state and
// the decay e^b_L [D]; the slot of chunk n is (b * HKV + j) * nch + n.

// 1. dS_n into states[slot] and e^b_L into dec[slot]. Grid (nch, HKV, batch). Shared: kf, bc, vs [C][RS].
extern "C" __global__ void {p}_chunk_state(const float* __restrict__ k, const float* __restrict__ v,
        const float* __restrict__ gate, float* __restrict__ states, float* __restrict__ dec, int seq) {{
    extern __shared__ float smem[];
    float* kf = smem;
    float* bc = kf + C * RS;
    float* vs = bc + C * RS;
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + n * C, at = (long long)(b * HKV + j) * nch + n;
    load_rows(vs, v, row0, HKV * D, j * D, L, 1.0f);
    load_gates(bc, gate, row0, j, L);
    load_keys(kf, k, gate, row0, j, L);
    for (int e = threadIdx.x; e < L * D; e += NT) {{
        const int t = e / D, i = e % D;
        kf[t * RS + i] *= expf(bc[(L - 1) * RS + i] - bc[t * RS + i]);
    }}
    __syncthreads();
    float* dst = states + at * D * D;
    for (int e = threadIdx.x; e < D * D; e += NT) {{
        const int i = e / D, c = e % D;
        float acc = 0.0f;
        for (int s = 0; s < L; ++s) acc += kf[s * RS + i] * vs[s * RS + c];
        dst[e] = acc;
    }}
    for (int i = threadIdx.x; i < D; i += NT) dec[at * D + i] = expf(bc[(L - 1) * RS + i]);
}}

{scan_fwd}
// 3. Output of chunk n, query head h: y += MIX_LIN * o (y holds the window part). Grid (nch, H, batch).
// Shared: kf, bc, qf, vs [C][RS], S [D][D], A [C][C].
extern "C" __global__ void {p}_fwd(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ v, const float* __restrict__ gate, const float* __restrict__ states,
        float* __restrict__ y, int seq) {{
    extern __shared__ float smem[];
    float* kf = smem;
    float* bc = kf + C * RS;
    float* qf = bc + C * RS;
    float* vs = qf + C * RS;
    float* S = vs + C * RS;
    float* A = S + D * D;
    const int n = blockIdx.x, h = blockIdx.y, b = blockIdx.z, j = h / G, nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + n * C, at = (long long)(b * HKV + j) * nch + n;
    load_state<false>(S, states + at * D * D);
    load_rows(vs, v, row0, HKV * D, j * D, L, 1.0f);
    load_gates(bc, gate, row0, j, L);
    load_keys(kf, k, gate, row0, j, L);
    load_queries(qf, q, row0, h, L);
    gated_scores(A, qf, kf, bc, L);
    for (int e = threadIdx.x; e < L * D; e += NT) qf[(e / D) * RS + e % D] *= expf(bc[(e / D) * RS + e % D]);
    __syncthreads();
    for (int e = threadIdx.x; e < L * D; e += NT) {{
        const int t = e / D, c = e % D;
        float o = 0.0f;
        for (int i = 0; i < D; ++i) o += qf[t * RS + i] * S[i * D + c];
        for (int s = 0; s <= t; ++s) o += A[t * C + s] * vs[s * RS + c];
        y[(row0 + t) * (H * D) + h * D + c] += MIX_LIN * o;
    }}
}}

// Backward, with do = MIX_LIN * dy and dG_n = dL/dS_(n+1), the gradient of the state leaving chunk n:
//   dG_(n-1) = diag(e^b_L) dG_n + sum_h sum_t (q~^h_t * e^b_t)^T do^h_t       (over chunk n)
// 4. Per chunk: sum_h sum_t (q~^h_t * e^b_t)^T do^h_t into dstates[slot]. Grid (nch, HKV, batch).
// Shared: bc, qf, dO [C][RS].
extern "C" __global__ void {p}_chunk_dstate(const float* __restrict__ q, const float* __restrict__ gate,
        const float* __restrict__ dy, float* __restrict__ dstates, int seq) {{
    extern __shared__ float smem[];
    float* bc = smem;
    float* qf = bc + C * RS;
    float* dO = qf + C * RS;
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + n * C, at = (long long)(b * HKV + j) * nch + n;
    float acc[PER];
    for (int r = 0; r < PER; ++r) acc[r] = 0.0f;
    load_gates(bc, gate, row0, j, L);
    for (int g = 0; g < G; ++g) {{
        const int h = j * G + g;
        load_rows(dO, dy, row0, H * D, h * D, L, MIX_LIN);
        load_queries(qf, q, row0, h, L);
        for (int e = threadIdx.x; e < L * D; e += NT) qf[(e / D) * RS + e % D] *= expf(bc[(e / D) * RS + e % D]);
        __syncthreads();
        for (int r = 0; r < PER; ++r) {{
            const int e = threadIdx.x + r * NT, i = e / D, c = e % D;
            if (e < D * D)
                for (int t = 0; t < L; ++t) acc[r] += qf[t * RS + i] * dO[t * RS + c];
        }}
        __syncthreads();
    }}
    float* dst = dstates + at * D * D;
    for (int r = 0; r < PER; ++r) {{
        const int e = threadIdx.x + r * NT;
        if (e < D * D) dst[e] = acc[r];
    }}
}}

{scan_bwd}
// 6. dv_s += sum_i k~_si e^(b_Li - b_si) dG_ic + sum_h sum_(t>=s) A^h_ts do^h_tc (dv += : the window
// wrote it). Grid (nch, HKV, batch). Shared: kf, bc, qf, dO [C][RS], dG [D][D], A [C][C], dvs [C][RS].
extern "C" __global__ void {p}_bwd_dv(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ gate, const float* __restrict__ dy, const float* __restrict__ dstates,
        float* __restrict__ dv, int seq) {{
    extern __shared__ float smem[];
    float* kf = smem;
    float* bc = kf + C * RS;
    float* qf = bc + C * RS;
    float* dO = qf + C * RS;
    float* dG = dO + C * RS;
    float* A = dG + D * D;
    float* dvs = A + C * C;
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + n * C, at = (long long)(b * HKV + j) * nch + n;
    load_state<false>(dG, dstates + at * D * D);
    load_gates(bc, gate, row0, j, L);
    load_keys(kf, k, gate, row0, j, L);
    // dO holds k~ * e^(b_L - b) while the inter-chunk part is summed.
    for (int e = threadIdx.x; e < L * D; e += NT) {{
        const int t = e / D, i = e % D;
        dO[t * RS + i] = kf[t * RS + i] * expf(bc[(L - 1) * RS + i] - bc[t * RS + i]);
    }}
    __syncthreads();
    for (int e = threadIdx.x; e < L * D; e += NT) {{
        const int s = e / D, c = e % D;
        float acc = 0.0f;
        for (int i = 0; i < D; ++i) acc += dO[s * RS + i] * dG[i * D + c];
        dvs[s * RS + c] = acc;
    }}
    __syncthreads();
    for (int g = 0; g < G; ++g) {{
        const int h = j * G + g;
        load_queries(qf, q, row0, h, L);
        load_rows(dO, dy, row0, H * D, h * D, L, MIX_LIN);
        gated_scores(A, qf, kf, bc, L);
        for (int e = threadIdx.x; e < L * D; e += NT) {{
            const int s = e / D, c = e % D;
            float acc = 0.0f;
            for (int t = s; t < L; ++t) acc += A[t * C + s] * dO[t * RS + c];
            dvs[s * RS + c] += acc;
        }}
        __syncthreads();
    }}
    for (int e = threadIdx.x; e < L * D; e += NT)
        dv[(row0 + e / D) * (HKV * D) + j * D + e % D] += dvs[(e / D) * RS + e % D];
}}

// 7. With S = S_n (entering chunk n) and dG = dG_n (leaving it), P^h_ts = do^h_t . v_s:
//   dq~^h_ti = e^b_ti (S do^h_t)_i + sum_(s<=t) e^(b_ti - b_si) k~_si P^h_ts          -> dq (temporary: dq~)
//   dk~_si   = e^(b_Li - b_si) (dG v_s)_i + sum_h sum_(t>=s) q~^h_ti e^(b_ti - b_si) P^h_ts  -> dk (dk~)
//   db_ti    = sum_h q~^h_ti dq~^h_ti - k~_ti dk~_ti                                  -> db (gate identity)
// Grid (nch, HKV, batch). Shared: kf, bc, vs, qf, dO [C][RS], S^T, dG^T [D][D], P [C][C], dks, dbs [C][RS].
extern "C" __global__ void {p}_bwd_dqk(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ v, const float* __restrict__ gate, const float* __restrict__ dy,
        const float* __restrict__ states, const float* __restrict__ dstates, float* __restrict__ dq,
        float* __restrict__ dk, float* __restrict__ db, int seq) {{
    extern __shared__ float smem[];
    float* kf = smem;
    float* bc = kf + C * RS;
    float* vs = bc + C * RS;
    float* qf = vs + C * RS;
    float* dO = qf + C * RS;
    float* St = dO + C * RS;
    float* dGt = St + D * D;
    float* P = dGt + D * D;
    float* dks = P + C * C;
    float* dbs = dks + C * RS;
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + n * C, at = (long long)(b * HKV + j) * nch + n;
    load_state<true>(St, states + at * D * D);
    load_state<true>(dGt, dstates + at * D * D);
    load_rows(vs, v, row0, HKV * D, j * D, L, 1.0f);
    load_gates(bc, gate, row0, j, L);
    load_keys(kf, k, gate, row0, j, L);
    for (int e = threadIdx.x; e < L * D; e += NT) {{
        const int s = e / D, i = e % D;
        float acc = 0.0f;
        for (int c = 0; c < D; ++c) acc += dGt[c * D + i] * vs[s * RS + c];
        dks[s * RS + i] = expf(bc[(L - 1) * RS + i] - bc[s * RS + i]) * acc;
        dbs[s * RS + i] = 0.0f;
    }}
    for (int g = 0; g < G; ++g) {{
        const int h = j * G + g;
        load_rows(dO, dy, row0, H * D, h * D, L, MIX_LIN);
        load_queries(qf, q, row0, h, L);
        causal_dots(P, dO, vs, L);
        for (int e = threadIdx.x; e < L * D; e += NT) {{
            const int x = e / D, i = e % D;
            float inter = 0.0f;
            for (int c = 0; c < D; ++c) inter += St[c * D + i] * dO[x * RS + c];
            const float bx = bc[x * RS + i];
            float dqv = expf(bx) * inter;
            for (int s = 0; s <= x; ++s) dqv += expf(bx - bc[s * RS + i]) * kf[s * RS + i] * P[x * C + s];
            dq[(row0 + x) * (H * D) + h * D + i] = dqv;
            dbs[x * RS + i] += qf[x * RS + i] * dqv;
            float dkv = 0.0f;
            for (int t = x; t < L; ++t) dkv += qf[t * RS + i] * expf(bc[t * RS + i] - bx) * P[t * C + x];
            dks[x * RS + i] += dkv;
        }}
        __syncthreads();
    }}
    for (int e = threadIdx.x; e < L * D; e += NT) {{
        const int t = e / D, i = e % D;
        const long long o = (row0 + t) * (HKV * D) + j * D + i;
        dk[o] = dks[t * RS + i];
        db[o] = dbs[t * RS + i] - kf[t * RS + i] * dks[t * RS + i];
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
"#,
        scan_fwd = scans[0],
        scan_bwd = scans[1],
    )
}

/// The two scans over chunks, `{name}_fwd` and `{name}_bwd`, for chunk slots of
/// `floats` state floats whose element `e` decays by row `row` of the slot's
/// `rows` decays (C expressions over the source's constants). One thread per
/// (row, KV head, state element) walks the chunks:
/// - forward: slot `n` ← the state entering chunk `n` (`S_0 = 0`,
///   `S_(n+1) = e^(b_L) ⊙ S_n + ΔS_n`, slot `n` holding `ΔS_n` before);
/// - reverse: slot `n` ← the gradient of the state leaving chunk `n` (zero
///   for the last; `dG_(n-1) = e^(b_L) ⊙ dG_n + ΔdG_n`).
pub(super) fn scan_kernels(name: &str, floats: &str, row: &str, rows: &str) -> [String; 2] {
    let walk = |kernel: &str, what: &str, order: &str, var: &str| {
        format!(
            r#"// {what}. One thread per (row, KV head, state element).
extern "C" __global__ void {name}_{kernel}(float* __restrict__ states, const float* __restrict__ dec, int batch, int seq) {{
    constexpr int F = {floats};
    const long long id = (long long)blockIdx.x * NT + threadIdx.x;
    if (id >= (long long)batch * HKV * F) return;
    const long long bj = id / F;
    const int e = (int)(id % F), r = {row}, nch = (seq + C - 1) / C;
    float {var} = 0.0f;
    for ({order}) {{
        const long long at = bj * nch + n;
        const float add = states[at * F + e];
        states[at * F + e] = {var};
        {var} = dec[at * ({rows}) + r] * {var} + add;
    }}
}}
"#
        )
    };
    [
        walk(
            "fwd",
            "slot n <- the state entering chunk n",
            "int n = 0; n < nch; ++n",
            "S",
        ),
        walk(
            "bwd",
            "slot n <- the gradient of the state leaving chunk n (zero for the last)",
            "int n = nch - 1; n >= 0; --n",
            "dG",
        ),
    ]
}
