//! The decode step with its window and state moved by the TMA engine: sm_90 bulk copies
//! (`cp.async.bulk`), one instruction per contiguous block of memory, in and out.
//!
//! Why: in [`super::decode_keyed_threads`]'s layout every thread loads its share of the
//! state and the window, and a block of threads can only have so many loads outstanding.
//! At batch 64 (three blocks an SM, 512 blocks in 1.3 waves) its threads sit ~9 µs in
//! their loads' issue; then the window's serial phase runs ~6 µs with nothing in flight;
//! then a second, partial wave runs alone (docs/CUDA.md, "where the decode step's time
//! goes, and the bulk-copy decode").
//!
//! Here one thread hands the engine the item's ring keys and values (contiguous, `W+1`
//! rows each) and its fp32 state (contiguous, four chunks of rows, each on its own
//! `mbarrier`) before anything else. The window is computed while the state lands, the
//! state is updated in shared memory chunk by chunk, and each chunk goes back to global
//! memory by one bulk store while the next is updated.

use ligerc_ir::{LigerSpec, LigerVariant};

use super::super::{KernelSrc, float_lit};
use super::decode::{gate_and_maps, key_stores, keyed_params};
use super::{dims, vname};

/// Threads per block.
const NT: usize = 256;
/// Blocks an SM: two fit sm_90's 228 KiB of shared memory (1 KiB reserved a block).
const BLOCKS_PER_SM: usize = 2;
/// Score tile rows (keys): `wmma` m32n8k16.
const KT: usize = 32;
/// Query rows of the score tile / `p` rows of the `p·V` tile (`G`, padded).
const QR: usize = 8;
/// Chunks of state rows, each its own bulk copy in and out.
const SCH: usize = 4;
/// Alignment of the dynamic shared memory (where the bulk copies land), in bytes. Measured
/// on an H200 (docs/CUDA.md, fifth session): the kernel's skeleton with its copies landing
/// 16 bytes off a 32-byte boundary took 33.2 µs at batch 64, 25.7 aligned; the full kernel at
/// the bench shape (which happened to land on one) is unchanged by it, 29.3 against 29.1.
const SMEM_ALIGN: usize = 1024;

/// Bulk copies (sm_90 TMA) and their `mbarrier`s. `bulk_init(bar)`: a barrier for one
/// arrival (thread 0 arms it); `bulk_expect(bar, bytes)`: that arrival, with the bytes the
/// copies counted on it will bring; `bulk_load(dst, src, bytes, bar)`: global to shared
/// (`bytes` a multiple of 16, both ends 16-byte aligned); `bulk_wait(bar)`: the bytes
/// landed (phase 0: each barrier is used once); `bulk_store_fence()`: this thread's
/// writes to shared memory are seen by later bulk stores (then a barrier); `bulk_store(dst,
/// src, bytes)`: shared to global, in this thread's bulk group; `bulk_store_drain()`: this
/// thread's bulk stores have read their shared memory (the block may exit). The CPU
/// emulation copies at once.
const BULK: &str = r#"#if !defined(LIGERC_EMULATION) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#error "this decode kernel moves memory by sm_90 bulk copies (TMA); for an older GPU emit with LIGERC_CUDA_DECODE=threads"
#endif
#ifndef LIGERC_EMULATION
__device__ __forceinline__ unsigned smem_u32(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
#endif
__device__ __forceinline__ void bulk_init(unsigned long long* bar) {
#ifdef LIGERC_EMULATION
    *bar = 0;
#else
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(smem_u32(bar)) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void bulk_expect(unsigned long long* bar, unsigned bytes) {
#ifdef LIGERC_EMULATION
    *bar = bytes;
#else
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void bulk_load(void* dst, const void* src, unsigned bytes, unsigned long long* bar) {
#ifdef LIGERC_EMULATION
    std::memcpy(dst, src, bytes);
    *bar -= bytes;
#else
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
                 ::"r"(smem_u32(dst)), "l"(src), "r"(bytes), "r"(smem_u32(bar)) : "memory");
#endif
}
__device__ __forceinline__ void bulk_wait(unsigned long long* bar) {
#ifdef LIGERC_EMULATION
    if (*bar != 0) {  // a copy the barrier was armed for is missing
        std::fprintf(stderr, "emulation: bulk_wait on a barrier still owed %llu bytes\n", *bar);
        std::abort();
    }
#else
    asm volatile("{\n .reg .pred p;\n BULK_WAIT_%=:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], 0;\n @!p bra BULK_WAIT_%=;\n}\n"
                 ::"r"(smem_u32(bar)) : "memory");
#endif
}
__device__ __forceinline__ void bulk_store_fence() {
#ifndef LIGERC_EMULATION
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void bulk_store(void* dst, const void* src, unsigned bytes) {
#ifdef LIGERC_EMULATION
    std::memcpy(dst, src, bytes);
#else
    asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n" ::"l"(dst), "r"(smem_u32(src)), "r"(bytes) : "memory");
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void bulk_store_drain() {
#ifndef LIGERC_EMULATION
    asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
#endif
}
"#;

/// The shared memory of [`decode_keyed_bulk`], in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BulkLayout {
    /// Keys the score tiles cover (`W+1` rounded up to [`KT`]; the rows past the ring read
    /// on into the values and what follows: finite, never used).
    kc: usize,
    /// Keys the `p·V` tiles cover (`W+1` rounded down to 16); the rest in f32.
    kw: usize,
    /// Static shared memory, padded to [`SMEM_ALIGN`] (the dynamic part follows it).
    fixed: usize,
    /// Dynamic shared memory: the state, the ring's keys and values, the scores, the query
    /// tile (and padding so that the last score tile's rows stay inside).
    smem: usize,
}

impl BulkLayout {
    /// The layout for `G` heads of dimension `D` and window `W`, or `None` where this
    /// kernel does not apply: `D` other than 128 (one warp a state row, four columns a
    /// lane), `G` above [`QR`], a window whose keys' memory cannot hold the per-warp sums
    /// (`16·G > W+1`) or shorter than one `p·V` tile, or shared memory for fewer than
    /// [`BLOCKS_PER_SM`] blocks an SM.
    fn new(g: usize, d: usize, w: usize, raw_key: bool, retention: bool) -> Option<Self> {
        let nring = w + 1;
        let (kc, kw) = (nring.next_multiple_of(KT), nring / 16 * 16);
        let dp = d + 8;
        let part = 4 * (NT / 32) * g * d;
        let ok = d == 128 && g <= QR && kw >= 16 && kw <= dp && part <= 2 * nring * d;
        if !ok {
            return None;
        }
        let fixed = (4 * ((g + 1) * d + 2 * d + g * d + g)
            + if raw_key { 4 * d } else { 0 }
            + if retention { 4 * 32 } else { 0 }
            + 8 * (1 + SCH))
            .next_multiple_of(SMEM_ALIGN);
        let tail = 4 * kc * QR + 2 * QR * dp;
        let smem = 4 * d * d + (4 * nring * d + tail).max(2 * kc * d);
        let per_block = fixed + smem + 1024;
        (BLOCKS_PER_SM * per_block <= 228 * 1024).then_some(BulkLayout {
            kc,
            kw,
            fixed,
            smem,
        })
    }
}

/// [`super::decode_keyed_threads`]'s step (same arguments, launch grid and results) with the
/// window and the state moved by bulk copies, where it applies: a key-gated variant with a
/// window, `D` 128, `G` ≤ 8 with `16·G ≤ W+1`, `W+1` ≥ 16, and shared memory for two blocks
/// an SM. `None` otherwise.
///
/// One block of 256 threads per (KV head, row), two blocks an SM. Thread 0 first hands
/// the TMA engine the ring's `W+1` keys and values (one barrier) and the state's four
/// chunks of rows (a barrier each). Meanwhile the block stores the token's vectors,
/// computes the gate and the feature maps, then, once the window is in: the token's key
/// and value into its slot (shared memory and the ring), the scores on tensor cores
/// (`wmma` m32n8k16: keys × 8 query rows), one warp a head's softmax, `p·V` on tensor
/// cores (m8n32k16: bf16 `p` over the first `KW` keys) plus the last keys in f32. Then
/// each chunk of the state, as it lands: `S ← diag(α)S + k̃ᵀv` in place (one warp a row,
/// four columns a lane), `q̃S` summed per thread, and the chunk stored back by one bulk
/// copy. The per-warp sums meet in shared memory (the keys' memory) and are mixed with the
/// window's output.
pub fn decode_keyed_bulk(spec: &LigerSpec, normalizer: f64) -> Option<KernelSrc> {
    let (h, kv, g, d) = dims(spec);
    let variant = spec.variant;
    let w = spec.window;
    if spec.mix_window == 0.0 || matches!(variant, LigerVariant::SwaOnly | LigerVariant::Gsa) {
        return None;
    }
    let retention = variant == LigerVariant::Retention;
    let raw_key = variant != LigerVariant::Linear;
    let lay = BulkLayout::new(g, d, w, raw_key, retention)?;
    let BulkLayout {
        kc,
        kw,
        smem,
        fixed,
        ..
    } = lay;
    let name = format!("liger_{}_decode_bulk_h{h}_kv{kv}_d{d}_w{w}", vname(variant));
    let kstores = key_stores(variant, "                ");
    let gate_maps = gate_and_maps(variant, d);
    let kr_decl = if raw_key {
        "    __shared__ float kr[D];  // raw key\n"
    } else {
        ""
    };
    let mut body = String::from("#include <mma.h>\nusing namespace nvcuda;\n\n");
    body.push_str(BULK);
    body.push_str(&format!(
        r#"
constexpr int H = {h};
constexpr int HKV = {kv};
constexpr int G = {g};
constexpr int D = {d};
constexpr int W = {w};
constexpr int NRING = W + 1;
constexpr int NT = {NT};
constexpr int NW = NT / 32;
constexpr int KT = {KT};  // keys per score tile (wmma m32n8k16)
constexpr int KC = {kc};  // keys the score tiles cover
constexpr int KW = {kw};  // keys the p V tiles cover (wmma m8n32k16); the rest in f32
constexpr int BV = 8;  // bf16 per load
constexpr int DP = D + BV;  // row pitch (bf16) of the query / p tile
constexpr int QR = {QR};  // its rows (G, padded)
constexpr int GS = QR;  // row pitch (floats) of the scores
constexpr int OW = (G * D + NT - 1) / NT;  // window outputs per thread
constexpr int SCH = {SCH};  // chunks of state rows (a bulk copy in and out each)
constexpr int CR = D / SCH;  // rows of a chunk
constexpr float SCALE = {scale};
[[maybe_unused]] constexpr float NORM = {norm};
constexpr float MIX_WIN = {mix_win};
constexpr float MIX_LIN = {mix_lin};
static_assert(D == 4 * 32 && CR % NW == 0 && G <= QR && KW % 16 == 0 && KW <= DP, "bulk decode layout");

struct alignas(16) VecF {{ float x[4]; }};  // four adjacent state columns (one lane's)
struct alignas(2 * BV) LoadB {{ bf16 x[BV]; }};  // one load of the token's vectors

// One token per row (tokens = batch). Grid (1, HKV, batch): block (j, b) owns KV head j of row b
// for all G query heads of that KV head.
//   1. the token's vectors (registers) and pos; thread 0 arms the barriers and hands the TMA
//      engine the ring's keys and values (bars[0]) and the state's SCH chunks (bars[1..])
//   2. the token's vectors into shared memory; gate and feature maps
//   3. once the window is in: the token's key and value into its slot (shared memory and the
//      ring); scores q.k on tensor cores; softmax, one warp a head; p V on tensor cores (the
//      first KW keys, p in bf16) and in f32 (the rest)
//   4. each chunk of the state as it lands: S <- diag(alpha) S + kf^T v in place (one warp a
//      row, four columns a lane), q S per thread; the chunk back by one bulk store
//   5. the per-warp sums of q S (in the keys' memory), mixed with the window's output
extern "C" __global__ void __launch_bounds__(NT, {BLOCKS_PER_SM}) {name}(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
        const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot, float* __restrict__ state,
        bf16* __restrict__ ring_k, bf16* __restrict__ ring_v, bf16* __restrict__ out, const int* __restrict__ pos_ptr) {{
    __shared__ float qk[(G + 1) * D];  // feature-mapped queries (G rows), then the mapped key
{kr_decl}    __shared__ float alpha[D];  // decay e^gate
    __shared__ float vcur[D];  // this token's value
    __shared__ float wo[G * D];  // the window's output, times MIX_WIN
    __shared__ float wi[G];  // MIX_WIN / the softmax's sum, per head
    __shared__ unsigned long long bars[1 + SCH];  // the window's copies; the state's chunks
    extern __shared__ __align__({SMEM_ALIGN}) float smem[];  // the bulk copies land here: aligned (see decode_bulk.rs)
    float* ss = smem;  // [D][D] the state
    bf16* wk = reinterpret_cast<bf16*>(smem + D * D);  // [NRING][D] the ring's keys
    bf16* wv = wk + NRING * D;  // [NRING][D] the ring's values
    float* wsc = reinterpret_cast<float*>(wv + NRING * D);  // [KC][GS] scores, then exp(score - max)
    bf16* qb = reinterpret_cast<bf16*>(wsc + KC * GS);  // [QR][DP] rotated queries, then p (rows G.. zero)
    float* acc_t = reinterpret_cast<float*>(wk);  // [QR][D + 4] p V tiles (the keys are dead by then)
    float* part = reinterpret_cast<float*>(wk);  // [NW][G][D] per-warp q S (so are the p V tiles)
    const int j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const long long bj = (long long)b * HKV + j;
    const long long qoff = (long long)b * H * D + (long long)j * G * D;
    bf16* ring_kh = ring_k + bj * NRING * D;
    bf16* ring_vh = ring_v + bj * NRING * D;
    float* sg = state + bj * D * D;

    // 1. the token's vectors: q, q_rot (G*D/BV loads each), k, k_rot, v (D/BV each) ...
    constexpr int E1 = G * D / BV, E2 = 2 * E1, E3 = E2 + D / BV, E4 = E3 + D / BV, E5 = E4 + D / BV;
    constexpr int UL = (E5 + NT - 1) / NT;  // per thread
    LoadB ux[UL];
#pragma unroll
    for (int u = 0; u < UL; ++u) {{
        const int e = tid + u * NT;
        ux[u] = LoadB{{}};
        if (E5 % NT == 0 || e < E5)
            ux[u] = *reinterpret_cast<const LoadB*>(e < E1 ? q + qoff + e * BV : e < E2 ? q_rot + qoff + (e - E1) * BV
                    : e < E3 ? k + bj * D + (e - E2) * BV : e < E4 ? k_rot + bj * D + (e - E3) * BV : v + bj * D + (e - E4) * BV);
    }}
    const int pos = *pos_ptr;  // device memory: one captured graph serves every step
    const int nk = min(pos, W) + 1, cur = pos % NRING;  // keys in the window; this step's slot
    // ... then (after them: the engine's copies queue behind) the window and the state
    if (tid == 0) {{
        for (int c = 0; c <= SCH; ++c) bulk_init(&bars[c]);
        bulk_expect(&bars[0], 2 * NRING * D * 2);
        bulk_load(wk, ring_kh, NRING * D * 2, &bars[0]);
        bulk_load(wv, ring_vh, NRING * D * 2, &bars[0]);
        for (int c = 0; c < SCH; ++c) {{
            bulk_expect(&bars[1 + c], CR * D * 4);
            bulk_load(ss + c * CR * D, sg + c * CR * D, CR * D * 4, &bars[1 + c]);
        }}
    }}

    // 2. the token's vectors into shared memory; gate and feature maps
#pragma unroll
    for (int u = 0; u < UL; ++u) {{
        const int e = tid + u * NT;
        const LoadB x = ux[u];
        if (e < E1) {{
            for (int c = 0; c < BV; ++c) qk[e * BV + c] = __bfloat162float(x.x[c]);
        }} else if (e < E2) {{
            const int f = (e - E1) * BV;
            *reinterpret_cast<LoadB*>(qb + f / D * DP + f % D) = x;
        }} else if (e < E3) {{
            const int f = (e - E2) * BV;
            for (int c = 0; c < BV; ++c) {{
                const float y = __bfloat162float(x.x[c]);{kstores}
            }}
        }} else if (e >= E4 && e < E5) {{
            const int f = (e - E4) * BV;
            for (int c = 0; c < BV; ++c) vcur[f + c] = __bfloat162float(x.x[c]);
        }}
    }}
    for (int e = tid; e < (QR - G) * DP / 8; e += NT) reinterpret_cast<uint4*>(qb + G * DP)[e] = uint4{{0u, 0u, 0u, 0u}};  // rows G.. zero
    __syncthreads();  // (also: the barriers are armed)
{gate_maps}
    // 3. the window, once it is in
    bulk_wait(&bars[0]);
#pragma unroll
    for (int u = 0; u < UL; ++u) {{  // this step's key and value: their staged rows and the ring's slot pos % NRING
        const int e = tid + u * NT;
        if (e >= E3 && e < E4) {{
            const int f = (e - E3) * BV;
            *reinterpret_cast<LoadB*>(wk + cur * D + f) = ux[u];
            *reinterpret_cast<LoadB*>(ring_kh + (long long)cur * D + f) = ux[u];
        }} else if (e >= E4 && e < E5) {{
            const int f = (e - E4) * BV;
            *reinterpret_cast<LoadB*>(wv + cur * D + f) = ux[u];
            *reinterpret_cast<LoadB*>(ring_vh + (long long)cur * D + f) = ux[u];
        }}
    }}
    if (nk < KW)  // early steps: the ring's rows past the window are stale; the p V tiles read them (times 0)
        for (int e = tid; e < (KW - nk) * D / 8; e += NT) {{
            const int r = nk + e / (D / 8), i = e % (D / 8) * 8;
            *reinterpret_cast<uint4*>(wv + r * D + i) = uint4{{0u, 0u, 0u, 0u}};
        }}
    __syncthreads();
    for (int t = warp; t < KC / KT; t += NW) {{  // scores: tile t = KT keys x QR query rows
        if (KT * t >= nk) continue;
        wmma::fragment<wmma::accumulator, 32, 8, 16, float> sc;
        wmma::fill_fragment(sc, 0.0f);
#pragma unroll
        for (int k0 = 0; k0 < D; k0 += 16) {{
            wmma::fragment<wmma::matrix_a, 32, 8, 16, bf16, wmma::row_major> ka;
            wmma::fragment<wmma::matrix_b, 32, 8, 16, bf16, wmma::col_major> qm;
            wmma::load_matrix_sync(ka, wk + KT * t * D + k0, D);
            wmma::load_matrix_sync(qm, qb + k0, DP);
            wmma::mma_sync(sc, ka, qm, sc);
        }}
        wmma::store_matrix_sync(wsc + KT * t * GS, sc, GS, wmma::mem_row_major);
    }}
    __syncthreads();
    for (int g = warp; g < G; g += NW) {{  // softmax, one warp a head; wsc <- exp(score - max)
        float mx = neg_inf();
#pragma unroll
        for (int u = 0; u < (NRING + 31) / 32; ++u) {{
            const int r = lane + 32 * u;
            if (r < nk) mx = fmaxf(mx, wsc[r * GS + g] * SCALE);
        }}
        const float m = warp_max(mx);
        float sum = 0.0f;
#pragma unroll
        for (int u = 0; u < (NRING + 31) / 32; ++u) {{
            const int r = lane + 32 * u;
            if (r >= nk) break;
            const float e = __expf(wsc[r * GS + g] * SCALE - m);  // exponent <= 0: the fast exp is exact to a few ulp
            wsc[r * GS + g] = e;
            sum += e;
        }}
        sum = warp_sum(sum);
        if (lane == 0) wi[g] = MIX_WIN / sum;
    }}
    __syncthreads();
    for (int e = tid; e < G * KW; e += NT) {{  // p (bf16) over the query rows (dead since the scores)
        const int g = e / KW, r = e % KW;
        qb[g * DP + r] = __float2bfloat16(r < nk ? wsc[r * GS + g] : 0.0f);
    }}
    __syncthreads();
    for (int n = warp; n < D / 32; n += NW) {{  // p V: warp n owns output columns 32n ..
        wmma::fragment<wmma::accumulator, 8, 32, 16, float> oc;
        wmma::fill_fragment(oc, 0.0f);
#pragma unroll
        for (int k0 = 0; k0 < KW; k0 += 16) {{
            wmma::fragment<wmma::matrix_a, 8, 32, 16, bf16, wmma::row_major> pa;
            wmma::fragment<wmma::matrix_b, 8, 32, 16, bf16, wmma::row_major> vb;
            wmma::load_matrix_sync(pa, qb + k0, DP);
            wmma::load_matrix_sync(vb, wv + k0 * D + 32 * n, D);
            wmma::mma_sync(oc, pa, vb, oc);
        }}
        wmma::store_matrix_sync(acc_t + 32 * n, oc, D + 4, wmma::mem_row_major);
    }}
    __syncthreads();
#pragma unroll
    for (int u = 0; u < OW; ++u) {{  // the window's output: the tiles plus the keys past KW
        const int e = tid + NT * u;
        if ((G * D) % NT != 0 && e >= G * D) break;
        const int g = e / D, c = e % D;
        float a = acc_t[g * (D + 4) + c];
        for (int r = KW; r < nk; ++r) a += wsc[r * GS + g] * __bfloat162float(wv[r * D + c]);
        wo[e] = a * wi[g];
    }}

    // 4. the state, chunk by chunk as it lands: S <- diag(alpha) S + kf^T v in place; q S
    float vf[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) vf[c] = vcur[4 * lane + c];
    float acc[G][4] = {{}};
    for (int ch = 0; ch < SCH; ++ch) {{
        bulk_wait(&bars[1 + ch]);
#pragma unroll
        for (int p = 0; p < CR / NW; ++p) {{
            const int i = ch * CR + warp + NW * p;
            const float a = alpha[i], kk = qk[G * D + i];
            VecF s4 = *reinterpret_cast<const VecF*>(ss + i * D + 4 * lane);
#pragma unroll
            for (int c = 0; c < 4; ++c) s4.x[c] = a * s4.x[c] + kk * vf[c];
            *reinterpret_cast<VecF*>(ss + i * D + 4 * lane) = s4;
#pragma unroll
            for (int g = 0; g < G; ++g) {{
                const float qg = qk[g * D + i];
#pragma unroll
                for (int c = 0; c < 4; ++c) acc[g][c] += qg * s4.x[c];
            }}
        }}
        bulk_store_fence();  // the chunk's new values, for its bulk store
        __syncthreads();
        if (tid == 0) bulk_store(sg + ch * CR * D, ss + ch * CR * D, CR * D * 4);
    }}

    // 5. the per-warp sums (the p V tiles were read before the barriers above), mixed
#pragma unroll
    for (int g = 0; g < G; ++g) {{
        VecF y;
#pragma unroll
        for (int c = 0; c < 4; ++c) y.x[c] = acc[g][c];
        *reinterpret_cast<VecF*>(part + (warp * G + g) * D + 4 * lane) = y;
    }}
    __syncthreads();
#pragma unroll
    for (int u = 0; u < OW; ++u) {{
        const int e = tid + NT * u;
        if ((G * D) % NT != 0 && e >= G * D) break;
        const int g = e / D, c = e % D;
        float y = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; ++w) y += part[(w * G + g) * D + c];
        out[(long long)b * H * D + (j * G + g) * D + c] = __float2bfloat16(MIX_LIN * y + wo[e]);
    }}
    if (tid == 0) bulk_store_drain();  // the state's shared memory is read before the block exits
}}
"#,
        scale = float_lit(1.0 / (d as f64).sqrt()),
        norm = float_lit(normalizer),
        mix_win = float_lit(spec.mix_window),
        mix_lin = float_lit(spec.mix_linear),
    ));
    let summary = format!(
        "Liger {variant} decode step, bulk copies: one block per (KV head, row) for all {g} query heads, two blocks an SM; the ring's {} keys and values and the fp32 state ({SCH} chunks of rows) moved by the TMA engine; scores (wmma m32n8k16) and p·V (m8n32k16, the first {kw} keys; the rest in f32) on tensor cores; the state updated in shared memory and stored back chunk by chunk; mix ({} B of shared memory a block)",
        w + 1,
        smem + fixed
    );
    Some(KernelSrc {
        name,
        summary,
        body,
        block: [NT as u32, 1, 1],
        smem: smem as u32,
        grid: format!("(1, {kv}, batch): one block per (KV head, row)"),
        params: keyed_params(h, kv, d, w),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_where_measured_and_fits_two_blocks() {
        // The bench shape: H 32, KV 8, D 128, W 64 (G 4).
        let l = BulkLayout::new(4, 128, 64, true, false).expect("applies");
        assert_eq!((l.kc, l.kw), (96, 64));
        assert!(2 * (l.fixed + l.smem + 1024) <= 228 * 1024);
        // The score tiles' last rows stay inside the dynamic shared memory.
        assert!(4 * 128 * 128 + 2 * l.kc * 128 <= l.smem);
        // The static part is counted padded, so that the dynamic part (the bulk copies'
        // destination) starts aligned: 7168 bytes here (6208 unpadded).
        assert_eq!(l.fixed, 7168);
        // Not: other head dims, G past the query tile or the keys' memory, windows too
        // long for two blocks an SM, too short for a p V tile.
        assert!(BulkLayout::new(4, 64, 64, true, false).is_none());
        assert!(BulkLayout::new(8, 128, 64, true, false).is_none());
        assert!(BulkLayout::new(2, 128, 200, true, false).is_none());
        assert!(BulkLayout::new(1, 128, 8, true, false).is_none());
    }

    #[test]
    fn bulk_copies_land_in_aligned_shared_memory() {
        let spec = LigerSpec {
            variant: LigerVariant::Gla,
            heads: 16,
            kv_heads: 8,
            head_dim: 128,
            window: 64,
            mix_window: 0.5,
            mix_linear: 0.5,
            slots: 64,
        };
        let k = decode_keyed_bulk(&spec, 16.0).expect("applies");
        assert!(
            k.body
                .contains("extern __shared__ __align__(1024) float smem[];"),
            "{}",
            k.body
        );
    }
}
