//! The TF32 (`wmma`, f32 accumulation) sub-chunk kernel of the chunk-parallel prefill
//! recurrence's step 3, for the keyed variants at head dims and chunks that are multiples
//! of 16 ([`eligible`]), and what it shares with the bf16 kernels of `chunk_mma.rs`
//! (which run step 1, and step 3 on every other chunk).
//!
//! It takes the chunks that decay by more than `e^{−FAST}` in some channel ([`fast_range`],
//! [`chunk_owner`]), where the one-product scores `(q̃ ⊙ e^{b})(k̃ ⊙ e^{−b})ᵀ` would overflow:
//! the in-chunk scores `A_ts = Σ_i q̃_ti k̃_si e^{b_ti − b_si}` (`s ≤ t`, `b` the in-chunk
//! cumsum of the log-gates, ≤ 0 and falling) are formed per sub-chunk of 16 rows: diagonal
//! 16 × 16 blocks element-wise (one warp per `(t, s)`); off the diagonal (key sub-chunk
//! ending at row `r`, `s ≤ r < t`) the product of `q̃_t ⊙ e^{b_t − b_r}` and
//! `k̃_s ⊙ e^{b_r − b_s}`, both factors ≤ 1. Then `o = (q̃ ⊙ e^{b}) S + A V` is two TF32
//! products per 16 × 16 tile of the output, `S` (the state entering the chunk) read as
//! fragments straight from the scan's scratch.
//! The exponents are ≤ 0, so the fast `__expf` serves: its error, 2 + 1.16·|x| ulp, stays
//! below 1e-5 relative. TF32 keeps 10 bits of mantissa: the products carry ~5e-4 relative
//! error, under the bf16 rounding (2⁻⁸) of the kernels' inputs and outputs.

use ligerc_ir::LigerSpec;

use super::super::{KernelSrc, float_lit};
use super::chunk::{
    CHUNK_FORM, StatesIn, Tiles, chunk_consts, chunk_prologue, prefill_params, step3_src,
};
use super::{Recurrence, dims, vname};

/// Whether the tensor-core kernels (these and `chunk_mma.rs`'s) serve `rec` at chunk
/// `chunk`: the keyed recurrence, head dim and chunk multiples of 16 (the mma tiles).
pub(super) fn eligible(spec: &LigerSpec, rec: Recurrence, chunk: usize) -> bool {
    rec == Recurrence::Keyed
        && spec.head_dim >= 16
        && spec.head_dim.is_multiple_of(16)
        && chunk >= 16
        && chunk.is_multiple_of(16)
}

/// Threads per block of the sub-chunk kernel: 16 warps. Its tiles take 202 KB of shared
/// memory, one block per SM, so the warps of one block must hide every latency.
pub(super) const TC_THREADS: usize = 512;

/// Row stride padding of the key and gate tiles (wmma: a multiple of 4 floats).
pub(super) const PAD: usize = 4;

/// Shared memory of the [`Tiles::InPlace`] chunk prologue in floats: keys (raw, then
/// mapped), gate cumsum, values, per-row scalars.
fn states_smem_floats(c: usize, d: usize) -> usize {
    let ks = d + PAD;
    2 * c * ks + c * d + c
}

/// Shared memory of the sub-chunk kernel in floats: the prologue's tiles, the mapped queries,
/// the scores, the queries and the keys scaled for one key sub-chunk, a 16 × 16 staging
/// tile per warp.
pub(super) fn prefill_smem_floats(c: usize, d: usize) -> usize {
    let ks = d + PAD;
    states_smem_floats(c, d)
        + c * ks
        + c * (c + 4)
        + (c - 16) * ks
        + 16 * ks
        + (TC_THREADS / 32) * 256
}

/// The wmma types and helpers both kernels share.
const TC_PRELUDE: &str = r#"#include <mma.h>
using namespace nvcuda;
// TF32 tensor-core tiles: A 16x8, B 8x16, accumulator 16x16 (f32).
typedef wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> FragA;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> FragAt;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> FragB;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> FragBt;
typedef wmma::fragment<wmma::accumulator, 16, 16, 8, float> FragC;
template <typename F> __device__ __forceinline__ void to_tf32(F& f) {
    for (int i = 0; i < f.num_elements; ++i) f.x[i] = wmma::__float_to_tf32(f.x[i]);
}
"#;

/// The tile loaders of the tensor-core kernels (after the constants: needs `C`, `NT`):
/// `fetch_rows_bf16` (a thread's 16-byte pieces of a bf16 tile into registers), and
/// `load_rows_bf16` on it (the tile into f32 shared memory); `chunk_mma.rs` adds a bf16 copier.
pub(super) const LOADER: &str = r#"
// 16-byte pieces of a bf16 tile of WIDTH columns per row.
template <int WIDTH> constexpr int row_pieces() { return WIDTH / 8; }
// This thread's pieces (piece e = threadIdx.x + u * NT, row e / V) of rows [0, C) of a bf16
// tile (row r at src + r * stride) into `buf`, rows >= L zero: all loads in flight at once
// (a block's few warps would otherwise wait out each load in turn).
template <int WIDTH, int PER>
__device__ __forceinline__ void fetch_rows_bf16(uint4 (&buf)[PER], const bf16* src, long long stride, int L) {
    constexpr int V = row_pieces<WIDTH>();
    const uint4 zero = {0u, 0u, 0u, 0u};
#pragma unroll
    for (int u = 0; u < PER; ++u) {
        const int e = (int)threadIdx.x + u * NT, r = e / V;
        buf[u] = e < C * V && r < L ? *reinterpret_cast<const uint4*>(src + r * stride + (e % V) * 8) : zero;
    }
}
// Rows [0, C) of a bf16 tile of WIDTH columns into f32 `dst` (row stride ds), rows >= L zero:
// every load issued before the first conversion.
template <int WIDTH>
__device__ __forceinline__ void load_rows_bf16(float* dst, int ds, const bf16* src, long long stride, int L) {
    constexpr int V = row_pieces<WIDTH>(), PER = (C * V + NT - 1) / NT;
    uint4 buf[PER];
    fetch_rows_bf16<WIDTH>(buf, src, stride, L);
#pragma unroll
    for (int u = 0; u < PER; ++u) {
        const int e = (int)threadIdx.x + u * NT, r = e / V;
        if (e < C * V) {
            const bf16* x = reinterpret_cast<const bf16*>(&buf[u]);
            float* o = dst + r * ds + (e % V) * 8;
            const float4 lo = {__bfloat162float(x[0]), __bfloat162float(x[1]), __bfloat162float(x[2]), __bfloat162float(x[3])};
            const float4 hi = {__bfloat162float(x[4]), __bfloat162float(x[5]), __bfloat162float(x[6]), __bfloat162float(x[7])};
            *reinterpret_cast<float4*>(o) = lo;
            *reinterpret_cast<float4*>(o + 4) = hi;
        }
    }
}
"#;

/// The largest in-chunk decay exponent `−b` for which step 3 forms the scores as one
/// product `(q̃ e^{b})(k̃ e^{−b})ᵀ` ([`super::chunk_mma`]): the factors stay within `e^{±40}`
/// (f32 and bf16 hold up to `e^{88}`) and every term is non-negative, so nothing cancels.
/// Chunks that decay faster take the sub-chunk kernel ([`prefill`]).
/// `LIGERC_CUDA_SUBCHUNK_SCORES=1` at code generation sends every chunk to the sub-chunk
/// kernel, `=alternate` every odd-numbered chunk of a call (testing knobs: both kernels
/// compute the same outputs).
pub(super) fn fast_range() -> f64 {
    match std::env::var("LIGERC_CUDA_SUBCHUNK_SCORES") {
        Ok(v) if v != "alternate" => -1.0,
        _ => 40.0,
    }
}

/// Whether the key pass marks every odd-numbered chunk slow (`LIGERC_CUDA_SUBCHUNK_SCORES=alternate`,
/// see [`fast_range`]).
pub(super) fn alternate_slow() -> bool {
    std::env::var("LIGERC_CUDA_SUBCHUNK_SCORES").is_ok_and(|v| v == "alternate")
}

/// The opening of both step-3 kernels of the tensor-core variants: reads the key pass's
/// flag of chunk `n` and returns unless the chunk is this kernel's — the one-product kernel
/// takes the chunks whose every channel keeps at least `e^{−FAST}`, the sub-chunk kernel
/// the others (`slow`). Block-uniform; needs `slow`, `b`, `j`, `n`, `seq` in scope.
pub(super) fn chunk_owner(one_product: bool) -> String {
    format!(
        r#"    // which step-3 kernel takes this chunk (block-uniform): {this}
    if ({not}slow[(long long)(b * HKV + j) * ((seq + C - 1) / C) + n]) return;
"#,
        this = if one_product {
            "the one-product kernel the chunks that keep e^-FAST in every channel"
        } else {
            "the sub-chunk kernel the chunks some channel of which decays faster"
        },
        not = if one_product { "" } else { "!" },
    )
}

/// Step 3's sub-chunk kernel, on tensor cores (see [`super::gla_prefill`] for the contract;
/// queries are raw bf16): the chunks that decay by more than `e^{−FAST}` in some channel
/// (SmolLM2's real keys make some; the bf16 kernels take the others), one block
/// per (chunk, KV head, row) serving the KV head's query heads in turn: the keys' gate,
/// feature map and scaling, the values and the state are shared by the `G` heads.
pub(super) fn prefill(spec: &LigerSpec, chunk: usize, normalizer: f64, window: bool) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let variant = spec.variant;
    let c = chunk;
    let name = format!(
        "liger_{}_prefill_tc_h{h}_kv{kv}_d{d}_c{c}{}",
        vname(variant),
        if window { "" } else { "_nowin" }
    );
    let mix_in = if window { "ld(window, at) + " } else { "" };
    let window_param = if window {
        "const bf16* __restrict__ window, "
    } else {
        ""
    };
    let body = format!(
        r#"{tc}constexpr int H = {h};
constexpr int G = {g};
{consts}constexpr int NW = NT / 32;
constexpr int NS = C / 16;     // sub-chunks of 16 rows
constexpr int CA = C + 4;      // row stride of the score tile
constexpr float MIX = {mix};   // mix_linear
{loader}
{form}
// 16 warps, one block an SM: at most 128 registers a thread.
extern "C" __global__ void __launch_bounds__(NT, 1) {name}(const bf16* __restrict__ q, const bf16* __restrict__ k,
        const bf16* __restrict__ v, const float* __restrict__ states, const int* __restrict__ slow,
        {window_param}bf16* __restrict__ out, int seq);

extern "C" __global__ void {name}(const bf16* __restrict__ q, const bf16* __restrict__ k,
        const bf16* __restrict__ v, const float* __restrict__ states, const int* __restrict__ slow,
        {window_param}bf16* __restrict__ out, int seq) {{
    extern __shared__ float smem[];
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    [[maybe_unused]] const int warp = tid >> 5, lane = tid & 31;
{owner}{prologue}    float* qf = rowg + C;          // [C][KS] q~, then q~ * exp(b)
    float* A = qf + C * KS;        // [C][CA] intra-chunk scores (zero above the diagonal)
    float* qp = A + C * CA;        // [C-16][KS] queries scaled for one key sub-chunk
    float* kp = qp + (C - 16) * KS;  // [16][KS] that key sub-chunk, scaled to its last row
    float* stg = kp + 16 * KS + warp * 256;  // this warp's 16x16 output staging tile
    const float* S = states + bl * (DK * DV);  // the state entering this chunk
    for (int g = 0; g < G; ++g) {{
        const int h = j * G + g;  // the query head (the KV head's keys, values and state serve all G)
        __syncthreads();  // the previous head's tiles are consumed
        load_rows_bf16<DK>(qf, KS, q + row0 * (H * DK) + h * DK, H * DK, L);
        for (int e = tid; e < C * CA; e += NT) A[e] = 0.0f;
        __syncthreads();
        softmax_rows_strided(qf, L, DK, KS);
        __syncthreads();
        // 1. diagonal 16x16 blocks, element-wise: one warp per (t, s), s <= t, lanes over channels.
        for (int p = warp; p < NS * 136; p += NW) {{  // 136 = 16 * 17 / 2 pairs per block
            const int blk = p / 136, r = p % 136;
            int tt = (int)((sqrtf(8.0f * (float)r + 1.0f) - 1.0f) * 0.5f);
            while (tt * (tt + 1) / 2 > r) --tt;
            while ((tt + 1) * (tt + 2) / 2 <= r) ++tt;
            const int t = 16 * blk + tt, s = 16 * blk + (r - tt * (tt + 1) / 2);
            if (t >= L) continue;  // warp-uniform
            float a = 0.0f;
            for (int i = lane; i < DK; i += 32) a += qf[t * KS + i] * kf[s * KS + i] * __expf(bc[t * KS + i] - bc[s * KS + i]);
            a = warp_sum(a);
            if (lane == 0) A[t * CA + s] = a;
        }}
        // 2. off-diagonal blocks, per key sub-chunk J (rows up to r): its keys scaled by
        //    exp(b_r - b_s) <= 1 (kf itself stays as it is for the next head), the later
        //    queries by exp(b_t - b_r) <= 1, multiplied on tensor cores.
        for (int jj = 0; jj + 1 < NS; ++jj) {{
            const int r = 16 * jj + 15, t0 = r + 1;
            if (t0 >= L) break;  // block-uniform: no later query rows
            __syncthreads();     // the diagonal is done; the previous J's tiles consumed
            for (int e = tid; e < 16 * DK; e += NT) {{
                const int s = 16 * jj + e / DK, i = e % DK;
                kp[(e / DK) * KS + i] = kf[s * KS + i] * __expf(bc[r * KS + i] - bc[s * KS + i]);
            }}
            for (int e = tid; e < (C - t0) * DK; e += NT) {{
                const int tq = e / DK, i = e % DK, t = t0 + tq;
                qp[tq * KS + i] = t < L ? qf[t * KS + i] * __expf(bc[t * KS + i] - bc[r * KS + i]) : 0.0f;
            }}
            __syncthreads();
            for (int w = warp; w < (C - t0) / 16; w += NW) {{
                FragC acc;
                wmma::fill_fragment(acc, 0.0f);
                for (int k0 = 0; k0 < DK; k0 += 8) {{
                    FragA a;
                    FragBt bm;
                    wmma::load_matrix_sync(a, qp + 16 * w * KS + k0, KS);
                    wmma::load_matrix_sync(bm, kp + k0, KS);
                    to_tf32(a);
                    to_tf32(bm);
                    wmma::mma_sync(acc, a, bm, acc);
                }}
                wmma::store_matrix_sync(A + (t0 + 16 * w) * CA + 16 * jj, acc, CA, wmma::mem_row_major);
            }}
        }}
        __syncthreads();
        // 3. q~_t * exp(b_t) for the state term
        for (int e = tid; e < L * DK; e += NT) {{
            const int t = e / DK, i = e % DK;
            qf[t * KS + i] *= __expf(bc[t * KS + i]);
        }}
        __syncthreads();
        // 4. o = (q~ * exp(b)) S + A V: a warp per 16-column tile of the output, every row tile;
        //    S (the state entering the chunk) read as fragments from the scratch; RG warps share
        //    a column tile, each its own row tiles.
        constexpr int NTJ = DV / 16;                   // 16-column tiles of the output
        constexpr int RG = NW >= 2 * NTJ ? NW / NTJ : 1;  // row groups: warps per column tile
        for (int item = warp; item < NTJ * RG; item += NW) {{
            const int cj = item % NTJ, rg = item / NTJ;  // row tiles ii = rg, rg + RG, ...
            FragC acc[NS];
    #pragma unroll
            for (int ii = 0; ii < NS; ++ii) wmma::fill_fragment(acc[ii], 0.0f);
    #pragma unroll 4
            for (int k0 = 0; k0 < DK; k0 += 8) {{
                FragB sb;
                wmma::load_matrix_sync(sb, S + k0 * DV + 16 * cj, DV);
                to_tf32(sb);
    #pragma unroll
                for (int ii = 0; ii < NS; ++ii) {{
                    if (16 * ii >= L) break;
                    if (ii % RG != rg) continue;
                    FragA a;
                    wmma::load_matrix_sync(a, qf + 16 * ii * KS + k0, KS);
                    to_tf32(a);
                    wmma::mma_sync(acc[ii], a, sb, acc[ii]);
                }}
            }}
            for (int k0 = 0; k0 < L; k0 += 8) {{
                FragB vb;
                wmma::load_matrix_sync(vb, vs + k0 * DV + 16 * cj, DV);  // bf16 values: exact in tf32
    #pragma unroll
                for (int ii = 0; ii < NS; ++ii) {{
                    if (ii < k0 / 16 || ii % RG != rg) continue;  // score tiles right of the diagonal are zero
                    if (16 * ii >= L) break;
                    FragA a;
                    wmma::load_matrix_sync(a, A + 16 * ii * CA + k0, CA);
                    to_tf32(a);
                    wmma::mma_sync(acc[ii], a, vb, acc[ii]);
                }}
            }}
    #pragma unroll
            for (int ii = 0; ii < NS; ++ii) {{
                if (16 * ii >= L) break;
                if (ii % RG != rg) continue;
                wmma::store_matrix_sync(stg, acc[ii], 16, wmma::mem_row_major);
                __syncwarp();
    #pragma unroll
                for (int e = lane; e < 256; e += 32) {{
                    const int t = 16 * ii + e / 16, c = 16 * cj + e % 16;
                    if (t < L) {{
                        const long long at = (row0 + t) * (H * DV) + h * DV + c;
                        out[at] = __float2bfloat16({mix_in}MIX * stg[e]);
                    }}
                }}
                __syncwarp();
            }}
        }}
    }}  // query heads
}}
"#,
        tc = TC_PRELUDE,
        consts = chunk_consts(spec, d, c, normalizer, PAD, TC_THREADS),
        loader = LOADER,
        mix = float_lit(spec.mix_linear),
        form = CHUNK_FORM,
        owner = chunk_owner(false),
        prologue = chunk_prologue(variant, d, d, Tiles::InPlace),
    );
    let params = prefill_params(
        spec,
        format!("q [tokens, {}] bf16 (raw, un-rotated)", h * d),
        (d, c),
        StatesIn::F32Slow,
        window,
        true,
    );
    step3_src(
        spec,
        (c, window),
        name,
        body,
        "TF32 tensor cores, for fast-decaying chunks (sub-chunk scores), the query heads in turn",
        (TC_THREADS, prefill_smem_floats(c, d) * 4),
        (
            format!(
                "(ceil(seq/{c}), {kv}, batch): one block per (chunk, KV head, row), its {g} query heads in turn; returns at once on chunks the one-product kernel takes"
            ),
            params,
        ),
    )
}
