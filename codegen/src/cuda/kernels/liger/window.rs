//! The sliding-window softmax branch of a LigerAttention prefill.
//!
//! For head dims that are multiples of 16 the kernel runs on tensor cores (bf16 `wmma`
//! 16×16×16 tiles, f32 accumulation), flash-attention style: one block of 8 warps per
//! (tile of 64 query tokens, KV head, row) stages the keys and values the tile sees —
//! positions `[p0 − W, p0 + 64)`, ring slots for those before `pos0` — in shared memory
//! once as bf16 and serves the `G` query heads of the KV head one after another. Per head:
//! the query tile goes registers → shared memory → A fragments; the scores `S = Q·Kᵀ`
//! (16×16 tiles, tiles outside every row's window skipped) land in an f32 tile in shared
//! memory; one warp per row masks them (keys `p − W ..= p`), keeps the row's running max
//! and sum and writes `P = e^(s − m)` as bf16 over the row's own scores; `O += P·V` stays
//! in accumulator fragments; `mix_window · O / l` is written out through shared memory
//! with coalesced stores. Keys beyond one stage (long windows, large `D`) go in stages
//! with an online softmax across them. Other head dims keep the scalar kernel (one warp
//! per token, f32 in registers).

use ligerc_ir::LigerSpec;

use super::super::{KernelSrc, float_lit};
use super::dims;

/// What the window kernel produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowOut {
    /// `mix_window · y` as f32 scratch, finished by the recurrent kernel.
    Partial,
    /// The layer's bf16 output (no recurrent branch).
    Final,
}

/// Warps per block of the tensor-core window kernel.
const TC_WARPS: usize = 8;
/// Most key rows per shared-memory stage of the tensor-core window kernel.
const TC_MAX_KEYS: usize = 256;
/// Dynamic shared memory the tensor-core window kernel aims to stay under: two blocks
/// fit an sm_90 SM (227 KB).
const TC_SMEM_BUDGET: usize = 110 * 1024;

/// Whether [`window_prefill`] runs on tensor cores: the head dim a multiple of the 16-wide
/// wmma tile.
fn tensor_cores(spec: &LigerSpec) -> bool {
    spec.head_dim >= 16 && spec.head_dim.is_multiple_of(16)
}

/// Shared memory of the tensor-core kernel in bytes for `tq` query tokens, `kc` key rows
/// per stage, head dim `d`: keys and values (bf16, rows padded by 8), the query / score /
/// output tile (f32, rows padded by 4), three per-row floats, a 16×16 row-index table.
fn tc_smem(tq: usize, kc: usize, d: usize) -> usize {
    let kv = 2 * kc * (d + 8) * 2;
    let tile = tq * (kc.max(d) + 4) * 4;
    kv + tile + 3 * tq * 4 + 256 * 4
}

/// The tiling of the tensor-core kernel: `(tq, kc)`, query tokens per block and key rows
/// per shared-memory stage. `kc` covers the whole tile's keys (`tq + W`, rounded up to 16)
/// when that fits [`TC_SMEM_BUDGET`], else the most that does (several stages).
fn tc_tile(spec: &LigerSpec) -> (usize, usize) {
    let d = spec.head_dim;
    let tq = if d <= 128 { 64 } else { 32 };
    let mut kc = (tq + spec.window).next_multiple_of(16).min(TC_MAX_KEYS);
    while kc > 16 && tc_smem(tq, kc, d) > TC_SMEM_BUDGET {
        kc -= 16;
    }
    (tq, kc)
}

/// The launch shape of [`window_prefill`]: `(tq, threads)`, query tokens per block (the
/// grid is `(⌈seq/tq⌉, KV, batch)`) and threads per block.
pub fn window_tile(spec: &LigerSpec) -> (usize, usize) {
    if tensor_cores(spec) {
        (tc_tile(spec).0, 32 * TC_WARPS)
    } else {
        let (tq, gw) = scalar_tile(spec);
        (
            tq,
            32 * tq * (spec.heads / spec.kv_heads.max(1)).max(1) / gw,
        )
    }
}

/// Dynamic shared memory of [`window_prefill`] in bytes.
pub fn window_smem(spec: &LigerSpec) -> usize {
    if tensor_cores(spec) {
        let (tq, kc) = tc_tile(spec);
        tc_smem(tq, kc, spec.head_dim)
    } else {
        2 * WINDOW_KEYS * spec.head_dim * 4
    }
}

/// The window branch of a prefill: one block per (tile of `tq` tokens, KV head, row)
/// ([`window_tile`]) serving all `G` query heads of the KV head; the tensor-core kernel
/// when the head dim is a multiple of 16 (see the module doc), else the scalar one.
/// Output row `t` of query head `h` (position `p = pos0 + t`) is `mix_window ·` the
/// softmax (scale `1/√D`) over the keys of positions `max(0, p − W) ..= p` of KV head
/// `h / G` applied to their values; keys and values before `pos0` come from the ring
/// (slot `p % (W + 1)`).
pub fn window_prefill(spec: &LigerSpec, out: WindowOut) -> KernelSrc {
    if tensor_cores(spec) {
        window_prefill_tc(spec, out)
    } else {
        window_prefill_scalar(spec, out)
    }
}

/// The kernel's parameters, in order (both bodies).
fn window_params(spec: &LigerSpec, out: WindowOut) -> Vec<String> {
    let (h, kv, _, d) = dims(spec);
    let w = spec.window;
    vec![
        format!("q_rot [tokens, {}] bf16", h * d),
        format!("k_rot [tokens, {}] bf16", kv * d),
        format!("v [tokens, {}] bf16", kv * d),
        format!(
            "ring_k [batch, {kv}, {}, {d}] bf16 (keys of positions < pos0)",
            w + 1
        ),
        format!("ring_v [batch, {kv}, {}, {d}] bf16", w + 1),
        format!(
            "out [tokens, {}] {} (out)",
            h * d,
            if out == WindowOut::Partial {
                "f32"
            } else {
                "bf16"
            }
        ),
        "seq".into(),
        "pos0 (const int*: device memory, read once)".into(),
    ]
}

/// Key/value row of absolute position `p` (shared by both bodies; needs `HKV`, `D`, `NRING`).
const KV_ROW: &str = r#"// Key/value row of absolute position `p` for KV head j of row b: this call's rotated keys
// (positions pos0 ..) or, for earlier positions, the ring slot p % NRING.
__device__ __forceinline__ const bf16* kv_row(const bf16* cur, const bf16* ring, int b, int j, int seq, int pos0, int p) {
    if (p >= pos0) return cur + ((long long)b * seq + (p - pos0)) * (HKV * D) + j * D;
    return ring + ((long long)(b * HKV + j) * NRING + p % NRING) * D;
}
"#;

/// The tensor-core body (see the module doc).
fn window_prefill_tc(spec: &LigerSpec, out: WindowOut) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let w = spec.window;
    let (tq, kc) = tc_tile(spec);
    let smem = tc_smem(tq, kc, d);
    let (ot, otag) = match out {
        WindowOut::Partial => ("float", "part"),
        WindowOut::Final => ("bf16", "out"),
    };
    let name = format!("liger_window_prefill_h{h}_kv{kv}_d{d}_w{w}_{otag}");
    let body = format!(
        r#"#include <mma.h>
using namespace nvcuda;

constexpr int H = {h};
constexpr int HKV = {kv};
constexpr int G = {g};
constexpr int D = {d};
constexpr int W = {w};              // a query sees itself and the W previous tokens
constexpr int NRING = W + 1;
constexpr int TQ = {tq};             // query tokens per block: TQ/16 row blocks of 16
constexpr int KC = {kc};            // key rows per shared-memory stage: KC/16 column tiles
constexpr int NW = {nw};              // warps per block
constexpr int NT = 32 * NW;         // threads per block
constexpr int RB = TQ / 16;         // row blocks of the tile
constexpr int WPR = NW / RB;        // warps per row block: warp = (row block, share of the column tiles)
constexpr int DT = D / 16;          // 16-wide feature tiles
constexpr int OTW = (DT + WPR - 1) / WPR;  // output tiles per warp
constexpr int CPL = (KC + 31) / 32; // score columns per lane in the softmax
constexpr int KLD = D + 8;          // row stride (bf16) of staged keys, values, queries: 16 bytes of padding
constexpr int SLD = (KC > D ? KC : D) + 4;  // row stride (f32) of the score / output tile
constexpr int PLD = 2 * SLD;        // row stride (bf16) of the probabilities, written over the scores
constexpr int QV = TQ * D / 8;      // 16-byte vectors of a query tile
constexpr int QPT = (QV + NT - 1) / NT;  // ... per thread
constexpr int KVV = KC * D / 8;     // 16-byte vectors of a key (or value) stage
constexpr float SCALE = {scale};    // 1/sqrt(D)
constexpr float SCALE_LOG2 = SCALE * 1.44269504f;  // scores in base 2: e^x = 2^(x log2 e)
constexpr float MIX = {mix};        // mix_window
static_assert(NW % RB == 0, "warps split evenly over the row blocks");

{kv_row}
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> FragA;   // queries, probabilities
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> FragKt;  // keys, read as K^T
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> FragV;   // values
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> FragC;

// The query tile of head h into registers, 16-byte vectors (consecutive threads, consecutive
// features); rows past the sequence are zero.
__device__ __forceinline__ void fetch_q(uint4 (&qn)[QPT], const bf16* q_rot, long long row0, int tn, int h) {{
#pragma unroll
    for (int i = 0; i < QPT; ++i) {{
        const int e = threadIdx.x + i * NT, r = e / (D / 8), c = e % (D / 8);
        const uint4 zero = {{0u, 0u, 0u, 0u}};
        qn[i] = e < QV && r < tn ? *reinterpret_cast<const uint4*>(q_rot + (row0 + r) * (H * D) + h * D + c * 8) : zero;
    }}
}}

// Keys and values of positions [c0, c0 + KC) of KV head j into shared memory as bf16 rows of
// stride KLD; rows at or past `kend` (no such key) are zero, so masked products stay finite.
// 16-byte vectors, consecutive threads on consecutive features, KB of each per thread in
// flight before they are stored.
template <int KB>
__device__ __forceinline__ void stage_kv(bf16* ks, bf16* vs, const bf16* k_rot, const bf16* v, const bf16* ring_k,
        const bf16* ring_v, int b, int j, int seq, int pos0, int c0, int kend) {{
    for (int e0 = threadIdx.x; e0 < KVV; e0 += KB * NT) {{
        uint4 kx[KB], vx[KB];
#pragma unroll
        for (int i = 0; i < KB; ++i) {{
            const int e = e0 + i * NT, r = e / (D / 8), c = e % (D / 8);
            const uint4 zero = {{0u, 0u, 0u, 0u}};
            kx[i] = zero;
            vx[i] = zero;
            if (e < KVV && c0 + r < kend) {{
                kx[i] = *reinterpret_cast<const uint4*>(kv_row(k_rot, ring_k, b, j, seq, pos0, c0 + r) + c * 8);
                vx[i] = *reinterpret_cast<const uint4*>(kv_row(v, ring_v, b, j, seq, pos0, c0 + r) + c * 8);
            }}
        }}
#pragma unroll
        for (int i = 0; i < KB; ++i) {{
            const int e = e0 + i * NT, r = e / (D / 8), c = e % (D / 8);
            if (e < KVV) {{
                *reinterpret_cast<uint4*>(ks + r * KLD + c * 8) = kx[i];
                *reinterpret_cast<uint4*>(vs + r * KLD + c * 8) = vx[i];
            }}
        }}
    }}
}}

// Whether the 16x16 score tile (row block rb, stage column tile ct) holds a key inside some
// row's window [p - W, p]: queries at positions p0 + 16 rb .., keys at c0 + 16 ct ... Other
// tiles are skipped by both products (their probabilities are all 0).
__device__ __forceinline__ bool live(int rb, int ct, int p0, int c0, int tn) {{
    const int q_lo = p0 + 16 * rb, k_lo = c0 + 16 * ct;
    return 16 * rb < tn && k_lo <= q_lo + 15 && k_lo + 15 >= q_lo - W;
}}

// Four consecutive outputs.
__device__ __forceinline__ void st4(float* p, float4 x) {{ *reinterpret_cast<float4*>(p) = x; }}
__device__ __forceinline__ void st4(bf16* p, float4 x) {{
    p[0] = __float2bfloat16(x.x);
    p[1] = __float2bfloat16(x.y);
    p[2] = __float2bfloat16(x.z);
    p[3] = __float2bfloat16(x.w);
}}

// At most 128 registers a thread: two blocks share an SM.
extern "C" __global__ void __launch_bounds__(NT, 2) {name}(const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot,
        const bf16* __restrict__ v, const bf16* __restrict__ ring_k, const bf16* __restrict__ ring_v,
        {ot}* __restrict__ out, int seq, const int* __restrict__ pos0_ptr);

extern "C" __global__ void {name}(const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot,
        const bf16* __restrict__ v, const bf16* __restrict__ ring_k, const bf16* __restrict__ ring_v,
        {ot}* __restrict__ out, int seq, const int* __restrict__ pos0_ptr) {{
    extern __shared__ float smem[];
    bf16* ks = reinterpret_cast<bf16*>(smem);  // [KC][KLD] keys of the stage
    bf16* vs = ks + KC * KLD;                  // [KC][KLD] values of the stage
    float* sc = reinterpret_cast<float*>(vs + KC * KLD);  // [TQ][SLD]: the query tile (bf16, stride KLD),
                                               // then the scores, the probabilities (bf16, stride PLD), the output
    bf16* qs = reinterpret_cast<bf16*>(sc);
    bf16* ps = reinterpret_cast<bf16*>(sc);
    float* m_s = sc + TQ * SLD;                // [TQ] running max of the row's base-2 scores
    float* l_s = m_s + TQ;                     // [TQ] running sum of its weights
    float* c_s = l_s + TQ;                     // [TQ] the stage's rescaling of the row's accumulators
    float* ridx_s = c_s + TQ;                  // [16][16] row numbers: fragment element -> row
    const int pos0 = *pos0_ptr;  // device memory: one captured graph serves every step
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int t0 = blockIdx.x * TQ, j = blockIdx.y, b = blockIdx.z;
    const int tn = min(TQ, seq - t0);          // query tokens of this tile
    const int p0 = pos0 + t0;                  // position of the tile's first query
    const int kfirst = max(0, p0 - W), kend = p0 + tn;  // the tile's keys: positions [kfirst, kend)
    const int nstage = (kend - kfirst + KC - 1) / KC;
    const int rb = warp / WPR, sub = warp % WPR;  // the warp's row block, its share of the column tiles
    const long long row0 = (long long)b * seq + t0;  // token row of the tile's first query

    // Accumulator layouts are opaque: a fragment loaded from this table holds each element's row.
    for (int e = tid; e < 256; e += NT) ridx_s[e] = (float)(e / 16);
    uint4 qn[QPT];
    fetch_q(qn, q_rot, row0, tn, j * G);
    // One stage serves all G heads: staged once, 4 key and 4 value vectors a thread in flight.
    if (nstage == 1) stage_kv<4>(ks, vs, k_rot, v, ring_k, ring_v, b, j, seq, pos0, kfirst, kend);

    for (int g = 0; g < G; ++g) {{
        const int h = j * G + g;
        __syncthreads();  // the tile region is free (the previous head's output is written out)
        for (int i = 0; i < QPT; ++i) {{
            const int e = tid + i * NT;
            if (e < QV) *reinterpret_cast<uint4*>(qs + (e / (D / 8)) * KLD + (e % (D / 8)) * 8) = qn[i];
        }}
        if (tid < TQ) {{
            m_s[tid] = neg_inf();
            l_s[tid] = 0.0f;
        }}
        __syncthreads();
        FragA qf[DT];  // the warp's 16 query rows, all features
        for (int kk = 0; kk < DT; ++kk) wmma::load_matrix_sync(qf[kk], qs + rb * 16 * KLD + kk * 16, KLD);
        if (g + 1 < G) fetch_q(qn, q_rot, row0, tn, h + 1);  // the next head's queries, in flight meanwhile
        FragC o[OTW];  // the warp's output tiles: row block rb, feature tiles sub, sub + WPR, ..
        for (int n = 0; n < OTW; ++n) wmma::fill_fragment(o[n], 0.0f);

        for (int s = 0; s < nstage; ++s) {{
            const int c0 = kfirst + s * KC;  // position of the stage's first key
            if (nstage > 1) {{
                __syncthreads();  // the previous stage's keys, values and probabilities are consumed
                stage_kv<1>(ks, vs, k_rot, v, ring_k, ring_v, b, j, seq, pos0, c0, kend);  // registers are short here
            }}
            __syncthreads();  // the stage is in; every warp holds its query fragments (the scores overwrite them)

            // Scores S = Q K^T, one 16x16 tile at a time.
            for (int ct = sub; ct < KC / 16; ct += WPR) {{
                if (!live(rb, ct, p0, c0, tn)) continue;
                FragC acc;
                wmma::fill_fragment(acc, 0.0f);
                for (int kk = 0; kk < DT; ++kk) {{
                    FragKt kf;
                    wmma::load_matrix_sync(kf, ks + ct * 16 * KLD + kk * 16, KLD);
                    wmma::mma_sync(acc, qf[kk], kf, acc);
                }}
                wmma::store_matrix_sync(sc + rb * 16 * SLD + ct * 16, acc, SLD, wmma::mem_row_major);
            }}
            __syncthreads();

            // Online softmax, one warp per row: keys outside [p - W, p] (and rows past the
            // sequence) are masked; P = 2^(s - m) goes as bf16 over the row's own scores.
            for (int r = warp; r < TQ; r += NW) {{
                const int lo = p0 + r - W - c0;  // the row's keys: stage columns [lo, lo + W]
                float x[CPL];
                float mx = neg_inf();
                for (int i = 0; i < CPL; ++i) {{
                    const int c = lane + 32 * i;
                    const bool valid = r < tn && c < KC && (unsigned)(c - lo) <= (unsigned)W;
                    x[i] = valid ? sc[r * SLD + c] * SCALE_LOG2 : neg_inf();
                    mx = fmaxf(mx, x[i]);
                }}
                const float m_old = m_s[r], m_new = fmaxf(m_old, warp_max(mx));
                float sum = 0.0f;
                for (int i = 0; i < CPL; ++i) {{
                    x[i] = x[i] == neg_inf() ? 0.0f : exp2f(x[i] - m_new);  // valid scores are finite
                    sum += x[i];
                }}
                sum = warp_sum(sum);
                const float corr = m_old == m_new ? 1.0f : exp2f(m_old - m_new);
                __syncwarp();  // the row's scores are read before its probabilities overwrite them
                for (int i = 0; i < CPL; ++i) {{
                    const int c = lane + 32 * i;
                    if (c < KC) ps[r * PLD + c] = __float2bfloat16(x[i]);
                }}
                if (lane == 0) {{
                    m_s[r] = m_new;
                    l_s[r] = l_s[r] * corr + sum;
                    c_s[r] = corr;
                }}
            }}
            __syncthreads();

            // O = diag(corr) O + P V.
            if (s > 0) {{
                FragC ridx;
                wmma::load_matrix_sync(ridx, ridx_s, 16, wmma::mem_row_major);
                for (int n = 0; n < OTW; ++n)
                    for (int i = 0; i < ridx.num_elements; ++i) o[n].x[i] *= c_s[rb * 16 + (int)ridx.x[i]];
            }}
            for (int kt = 0; kt < KC / 16; ++kt) {{
                if (!live(rb, kt, p0, c0, tn)) continue;
                FragA pf;
                wmma::load_matrix_sync(pf, ps + rb * 16 * PLD + kt * 16, PLD);
                for (int n = 0; n < OTW; ++n) {{
                    const int dt = sub + n * WPR;
                    if (dt >= DT) continue;
                    FragV vf;
                    wmma::load_matrix_sync(vf, vs + kt * 16 * KLD + dt * 16, KLD);
                    wmma::mma_sync(o[n], pf, vf, o[n]);
                }}
            }}
        }}

        // Output: mix_window O / l through the tile region, 4 features a thread, coalesced.
        __syncthreads();  // every warp is done with the probabilities
        for (int n = 0; n < OTW; ++n) {{
            const int dt = sub + n * WPR;
            if (dt < DT) wmma::store_matrix_sync(sc + rb * 16 * SLD + dt * 16, o[n], SLD, wmma::mem_row_major);
        }}
        __syncthreads();
        for (int e = tid; e < TQ * (D / 4); e += NT) {{
            const int r = e / (D / 4), c = (e % (D / 4)) * 4;
            if (r >= tn) continue;
            const float f = MIX / l_s[r];  // l >= 1: the row's largest score has weight 2^0
            float4 x = *reinterpret_cast<const float4*>(sc + r * SLD + c);
            x.x *= f;
            x.y *= f;
            x.z *= f;
            x.w *= f;
            st4(out + (row0 + r) * (H * D) + h * D + c, x);
        }}
    }}
}}
"#,
        nw = TC_WARPS,
        kv_row = KV_ROW,
        scale = float_lit(1.0 / (d as f64).sqrt()),
        mix = float_lit(spec.mix_window),
    );
    KernelSrc {
        name,
        summary: format!(
            "Liger window branch, prefill, tensor cores: causal softmax over the last {} keys (GQA {h}/{kv}, D {d}, scale 1/√D), × mix_window {}; a tile of {tq} queries × its keys and values staged once in shared memory (bf16, stages of {kc} rows) for all {g} query heads, S = QKᵀ and O = PV on bf16 wmma tiles",
            w + 1,
            spec.mix_window
        ),
        body,
        block: [(32 * TC_WARPS) as u32, 1, 1],
        smem: smem as u32,
        grid: format!(
            "(ceil(seq/{tq}), {kv}, batch): one block per ({tq} tokens, KV head, row), {TC_WARPS} warps = {} row blocks of 16 queries × {} warps sharing the column tiles; the {g} query heads one after another",
            tq / 16,
            TC_WARPS / (tq / 16)
        ),
        params: window_params(spec, out),
    }
}

/// Most warps per block of the scalar window kernel.
const WINDOW_WARPS: usize = 16;
/// Key rows per shared-memory stage of the scalar window kernel (one per lane while scoring).
const WINDOW_KEYS: usize = 32;
/// Most floats per lane a scalar window warp keeps per query-head group, for its queries and
/// again for its accumulators (`heads per warp · ⌈D/32⌉`).
const WINDOW_LANE_FLOATS: usize = 16;

/// The tiling of the scalar kernel: `(tq, gw)`, tokens per block and query heads per
/// warp. A block serves `tq` consecutive tokens × the `G` query heads of one KV head,
/// one warp per (token, group of `gw` heads), `tq · G/gw ≤ 16` warps (512 threads: up to
/// 128 registers a thread); `gw` is the largest divisor of `G` whose queries and
/// accumulators fit the per-lane budget, or more heads a warp where `G/gw` would pass 16.
fn scalar_tile(spec: &LigerSpec) -> (usize, usize) {
    let (_, _, g, d) = dims(spec);
    let g = g.max(1);
    let dpl = d.div_ceil(32).max(1);
    let divisors = (1..=g).filter(|x| g % x == 0);
    let mut gw = divisors
        .clone()
        .filter(|x| x * dpl <= WINDOW_LANE_FLOATS)
        .max()
        .unwrap_or(1);
    if g / gw > WINDOW_WARPS {
        gw = divisors
            .filter(|x| g / x <= WINDOW_WARPS)
            .min()
            .unwrap_or(g);
    }
    let split = g / gw;
    ((WINDOW_WARPS / split).max(1), gw)
}

/// The scalar body, for head dims that are not a multiple of 16: one block per (tile of
/// `tq` tokens, KV head, row) ([`scalar_tile`]) serving all `G` query heads of the KV
/// head. The keys and values the tile sees — positions `[pos0 + t0 − W, pos0 + t0 + tq)`,
/// ring slots for those before `pos0` — go through shared memory in stages of 32 rows,
/// loaded coalesced and converted to f32 once per block; each warp keeps its token's
/// queries and an online softmax per head in registers and reads keys and values only
/// from shared memory.
fn window_prefill_scalar(spec: &LigerSpec, out: WindowOut) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let w = spec.window;
    let (tq, gw) = scalar_tile(spec);
    let smem = window_smem(spec);
    let (ot, otag) = match out {
        WindowOut::Partial => ("float", "part"),
        WindowOut::Final => ("bf16", "out"),
    };
    let name = format!("liger_window_prefill_h{h}_kv{kv}_d{d}_w{w}_{otag}");
    let body = format!(
        r#"constexpr int H = {h};
constexpr int HKV = {kv};
constexpr int G = {g};
constexpr int D = {d};
constexpr int W = {w};              // a query sees itself and the W previous tokens
constexpr int NRING = W + 1;
constexpr int DPL = (D + 31) / 32;  // features per lane
constexpr int GW = {gw};              // query heads per warp
constexpr int SPLIT = G / GW;       // warps per token
constexpr int TQ = {tq};             // tokens per block
constexpr int NT = 32 * TQ * SPLIT; // threads per block
constexpr int KC = {kc};             // key rows per shared-memory stage (one per lane while scoring)
constexpr float SCALE = {scale};    // 1/sqrt(D)
constexpr float MIX = {mix};        // mix_window

{kv_row}
extern "C" __global__ void {name}(const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot,
        const bf16* __restrict__ v, const bf16* __restrict__ ring_k, const bf16* __restrict__ ring_v,
        {ot}* __restrict__ out, int seq, const int* __restrict__ pos0_ptr) {{
    extern __shared__ float smem[];
    float* ks = smem;          // [KC][D] keys of the stage, f32
    float* vs = ks + KC * D;   // [KC][D] values of the stage
    const int pos0 = *pos0_ptr;  // device memory: one captured graph serves every step
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int t0 = blockIdx.x * TQ, j = blockIdx.y, b = blockIdx.z;
    const int tn = min(TQ, seq - t0);                // tokens of this tile
    const int tl = warp / SPLIT;                     // the warp's token in the tile
    const int h0 = j * G + (warp % SPLIT) * GW;      // the warp's first query head
    const bool active = tl < tn;  // warp-uniform; idle warps still load stages and meet every barrier
    const int p = pos0 + t0 + tl;                    // the warp's query position
    const int lo = max(0, p - W);
    const long long row = (long long)b * seq + t0 + tl;
    float q[GW][DPL], acc[GW][DPL], m[GW], l[GW];
    for (int g = 0; g < GW; ++g) {{
        m[g] = neg_inf();
        l[g] = 0.0f;
        for (int r = 0; r < DPL; ++r) {{
            const int i = lane + 32 * r;
            q[g][r] = active && i < D ? ld(q_rot, row * (H * D) + (h0 + g) * D + i) : 0.0f;
            acc[g][r] = 0.0f;
        }}
    }}
    // Keys of the tile: positions [first, end), in stages of KC rows (block-uniform bounds).
    const int first = max(0, pos0 + t0 - W), end = pos0 + t0 + tn;
    for (int c0 = first; c0 < end; c0 += KC) {{
        const int nc = min(KC, end - c0);
        __syncthreads();  // the previous stage is consumed
        for (int e = tid; e < nc * D; e += NT) {{  // coalesced: consecutive threads, consecutive features
            const int r = e / D, i = e - r * D;
            ks[e] = ld(kv_row(k_rot, ring_k, b, j, seq, pos0, c0 + r), i);
            vs[e] = ld(kv_row(v, ring_v, b, j, seq, pos0, c0 + r), i);
        }}
        __syncthreads();
        // The stage's keys this warp's query sees: rows [ka, kb].
        const int ka = max(lo - c0, 0), kb = min(p - c0, nc - 1);
        if (active && ka <= kb) {{  // warp-uniform, no barrier inside
            // Scores: lane = feature for the dot products (a key row is one conflict-free
            // shared read for all GW heads), lane kk keeps key kk's score.
            float s[GW];
            for (int g = 0; g < GW; ++g) s[g] = neg_inf();
            for (int kk = ka; kk <= kb; ++kk) {{
                float part[GW];
                for (int g = 0; g < GW; ++g) part[g] = 0.0f;
                for (int r = 0; r < DPL; ++r) {{
                    const int i = lane + 32 * r;
                    if (i < D) {{
                        const float kx = ks[kk * D + i];
                        for (int g = 0; g < GW; ++g) part[g] += q[g][r] * kx;
                    }}
                }}
                for (int g = 0; g < GW; ++g) {{
                    const float dot = warp_sum(part[g]);
                    if (lane == kk) s[g] = dot * SCALE;
                }}
            }}
            // Online softmax over the stage; s becomes the weights e^(s - m).
            const bool valid = lane >= ka && lane <= kb;
            for (int g = 0; g < GW; ++g) {{
                const float m_new = fmaxf(m[g], warp_max(s[g]));
                const float corr = m[g] == m_new ? 1.0f : expf(m[g] - m_new);
                s[g] = valid ? expf(s[g] - m_new) : 0.0f;
                l[g] = l[g] * corr + warp_sum(s[g]);
                for (int r = 0; r < DPL; ++r) acc[g][r] *= corr;
                m[g] = m_new;
            }}
            // Weighted values: lane = feature, one value row read for all GW heads.
            for (int kk = ka; kk <= kb; ++kk) {{
                float pk[GW];
                for (int g = 0; g < GW; ++g) pk[g] = __shfl_sync(0xffffffffu, s[g], kk);
                for (int r = 0; r < DPL; ++r) {{
                    const int i = lane + 32 * r;
                    if (i < D) {{
                        const float vx = vs[kk * D + i];
                        for (int g = 0; g < GW; ++g) acc[g][r] += pk[g] * vx;
                    }}
                }}
            }}
        }}
    }}
    if (active) {{
        for (int g = 0; g < GW; ++g) {{
            for (int r = 0; r < DPL; ++r) {{
                const int i = lane + 32 * r;
                if (i < D) st(out, row * (H * D) + (h0 + g) * D + i, MIX * acc[g][r] / l[g]);
            }}
        }}
    }}
}}
"#,
        kc = WINDOW_KEYS,
        kv_row = KV_ROW,
        scale = float_lit(1.0 / (d as f64).sqrt()),
        mix = float_lit(spec.mix_window),
    );
    let warps = tq * (g.max(1) / gw);
    KernelSrc {
        name,
        summary: format!(
            "Liger window branch, prefill, scalar (head dim not a multiple of 16): causal softmax over the last {} keys (GQA {h}/{kv}, D {d}, scale 1/√D), × mix_window {}; keys and values staged in shared memory (f32) per tile of {tq} tokens",
            w + 1,
            spec.mix_window
        ),
        body,
        block: [(32 * warps) as u32, 1, 1],
        smem: smem as u32,
        grid: format!(
            "(ceil(seq/{tq}), {kv}, batch): one block per ({tq} tokens, KV head, row), one warp per (token, {gw} of its {g} query heads)"
        ),
        params: window_params(spec, out),
    }
}
