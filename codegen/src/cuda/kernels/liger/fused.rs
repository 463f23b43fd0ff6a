//! Step 3 of the prefill recurrence with the window branch inside, on bf16 tensor cores
//! (`mma.sync` m16n8k16, f32 accumulation, fragments in registers): the layer's whole
//! output in one kernel, where the window kernel used to write `mix_window · y` as bf16
//! scratch for step 3 to read back (two passes over an output-sized buffer).
//!
//! One block per (chunk, KV head, row) stages, shared by the KV head's `G` query heads:
//! the rotated keys and the values of positions `p0 − W .. p0 + C` (the chunk and the
//! `W` before it; ring slots before `pos0`, zero rows before position 0 and past the
//! chunk), the key pass's `k̃ ⊙ e^{−b}` and the state pass's bf16 state entering the chunk,
//! all by 16-byte `cp.async` in two groups (the window's tiles first). The tiles' rows are
//! unpadded with their 16-byte pieces XOR-swizzled by the row, so that every shared read
//! is conflict-free and the block fits 112 KiB at D 128: two blocks an SM. Each of the 8
//! warps then takes one (query head, 16-row tile) at a time and keeps everything else in
//! registers:
//! - its rotated queries, loaded straight into `mma` A fragments by 16-byte loads: the
//!   head-dim channels of each 32 are taken in a permuted order (lane `tig` holds
//!   channels `8 tig .. 8 tig + 8` of its rows), the same for the keys (16-byte shared
//!   reads) and for the state's rows (`ldmatrix` row addresses), so the products over the
//!   head dim are unchanged; the window scores
//!   `q_rot · k_rotᵀ` over the row tile's band, masked (keys `p − W ..= p` at positions
//!   ≥ 0), an exact one-pass softmax in base 2, the weights scaled by `mix_window / l` in
//!   f32;
//! - its raw queries, the same way, mapped (softmax over the head dim, four lanes a row),
//!   scaled by the key pass's `e^{b}` (16-byte loads, the same order) and `mix_linear`; their scores against `k̃ e^{−b}` up
//!   to the diagonal are added to the window weights of the same keys (the chunk's key
//!   tiles lie inside the band when `W ≥ C − 16`; earlier ones are added as tiles of their
//!   own), so one product `P · V` over the band serves both branches;
//! - `out = P V + (q̃ e^{b} mix_linear) S`, 64 columns at a time, stored from the
//!   accumulators (bf16 pairs).
//!
//! Chunks the key pass flags *slow* (some channel decays by more than `e^{−40}`; SmolLM2's
//! real keys make some) get the window part alone here, and the sub-chunk kernel
//! ([`super::chunk_tc::prefill`]) then adds `mix_linear · o` to the output in place.
//!
//! Precision: the window weights and the scores are rounded to bf16 once, after their
//! sum, before `P V` (2⁻⁹ relative); the state term rounds `S` to bf16 (as fla's
//! `chunk_gla`); one rounding of the output to bf16.

use ligerc_ir::{LigerSpec, LigerVariant};

use super::super::{CP_ASYNC, KernelSrc, float_lit};
use super::chunk::CHUNK_FORM;
use super::window::{KV_ROW, window_inputs};
use super::{MMA_PRELUDE, Recurrence, dims, quad_softmax_src, vname};

/// Warps per block (or the block's tasks, if fewer): 128 registers a thread, two blocks
/// an SM where the shared memory allows.
const WARPS: usize = 8;

/// Shared memory one block may take and still share its SM with a second (228 KiB an
/// sm_90 SM, 1 KiB of it reserved per block).
const TWO_BLOCKS: usize = 113 * 1024;

/// The tiling of the fused kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tile {
    /// Warps per block.
    nw: usize,
    /// Output columns per pass (16 f32 accumulators per lane at 64).
    cg: usize,
    /// Shared memory in bytes.
    smem: usize,
}

fn tile(spec: &LigerSpec, c: usize) -> Tile {
    let (_, _, g, d) = dims(spec);
    Tile {
        nw: WARPS.min(g.max(1) * (c / 16)),
        cg: 64,
        // the keys and values of C + W positions, k~ e^-b (C rows), the state (D rows), bf16
        smem: (2 * (c + spec.window) + c + d) * d * 2,
    }
}

/// Whether [`fused_prefill`] serves a layer at chunk `chunk` within `smem_limit` bytes of
/// shared memory a block: a keyed variant with a window branch whose recurrence runs on
/// the tensor-core kernels (chunk a multiple of 16), head dim 64 or 128 (the swizzle and
/// the channel order work on pieces of 64; the registers of a task), chunk at most 64, a
/// window that is a multiple of 16 of at most 64 tokens (the band on whole key tiles, at
/// most 5 of them).
/// `LIGERC_CUDA_WINDOW=separate` at code generation keeps the two kernels everywhere (a
/// testing knob: the separate window kernel and step 3 still serve the other shapes).
pub fn fused_eligible(spec: &LigerSpec, chunk: usize, smem_limit: usize) -> bool {
    let forced_apart = std::env::var("LIGERC_CUDA_WINDOW").is_ok_and(|v| v == "separate");
    let windowed = spec.mix_window != 0.0
        && !matches!(spec.variant, LigerVariant::SwaOnly | LigerVariant::Gsa);
    !forced_apart
        && windowed
        && super::chunk_tc::eligible(spec, Recurrence::Keyed, chunk)
        && matches!(spec.head_dim, 64 | 128)
        && chunk <= 64
        && spec.window.is_multiple_of(16)
        && spec.window <= 64
        && tile(spec, chunk).smem <= smem_limit
}

/// The fused step 3 (see the module doc). Parameters: `q` (raw), `q_rot`, `k_rot`, `v`,
/// `ring_k`, `ring_v`, the key pass's `kmap` and `ebuf`, the state pass's bf16 `states`,
/// the key pass's `slow` flags, `out`, `seq`, `pos0`. Call only where [`fused_eligible`].
pub fn fused_prefill(spec: &LigerSpec, chunk: usize) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let (c, w) = (chunk, spec.window);
    let t = tile(spec, c);
    let name = format!(
        "liger_{}_prefill_fused_h{h}_kv{kv}_d{d}_w{w}_c{c}",
        vname(spec.variant)
    );
    let sig = "const bf16* __restrict__ q, const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot,
        const bf16* __restrict__ v, const bf16* __restrict__ ring_k, const bf16* __restrict__ ring_v,
        const bf16* __restrict__ kmap, const bf16* __restrict__ ebuf, const bf16* __restrict__ states,
        const int* __restrict__ slow, bf16* __restrict__ out, int seq, const int* __restrict__ pos0_ptr";
    let body = format!(
        r#"{mma}constexpr int H = {h};
constexpr int G = {g};
constexpr int HKV = {kv};
constexpr int D = {d};        // head dim of q, k, v
constexpr int DK = D;          // key channels = rows of the state
constexpr int DV = D;          // value channels = columns of the state
constexpr int C = {c};        // chunk length = query tokens of a block
constexpr int W = {w};         // a query sees itself and the W previous tokens
constexpr int NRING = W + 1;
constexpr int NS = C / 16;     // 16-row tiles of the chunk
constexpr int WT = W / 16;     // the stage's tile of the chunk's first key
constexpr int NB = WT + 1;     // key tiles in a row tile's window band
constexpr int NKT = NS + WT;   // key tiles of the stage: positions p0 - W .. p0 + C
constexpr int NP = NB > NS ? NB : NS;  // most key tiles a row tile's weights span
constexpr int NW = {nw};
constexpr int NT = 32 * NW;
constexpr int NTASK = G * NS;  // warp tasks: (query head, 16-row tile)
constexpr int NROUND = (NTASK + NW - 1) / NW;
constexpr int CG = {cg};       // output columns per pass
constexpr float SCALE_LOG2 = {scale_log2};  // 1/sqrt(D) log2(e): window scores in base 2
constexpr float MIXW = {mixw};  // mix_window
constexpr float MIXL = {mixl};  // mix_linear
{cp}{kv_row}
// Element (r, c) of the bf16 tiles, rows of D, 16-byte pieces XOR-swizzled by the row so that
// each shared read below meets 8 distinct bank groups: the keys' (16-byte reads of rows r,
// r + 1 at pieces 4m + tig) by bit 0 of the row; the values' (ldmatrix of 8 consecutive rows)
// by the row's low 3 bits; the state's (ldmatrix of rows c + {{0, 1, 8, 9, .., 24, 25}}, the
// permuted channels) by bits 3-4 and 0.
__device__ __forceinline__ int koff(int r, int c) {{ return r * D + (((c >> 3) ^ ((r & 1) << 2)) << 3) + (c & 7); }}
__device__ __forceinline__ int voff(int r, int c) {{ return r * D + (((c >> 3) ^ (r & 7)) << 3) + (c & 7); }}
__device__ __forceinline__ int soff(int r, int c) {{ return r * D + (((c >> 3) ^ (((r >> 2) & 6) | (r & 1))) << 3) + (c & 7); }}
// The head-dim channels in mma order: logical channel 16 h + 8 s + 2 t + e of each 32 (h: which
// 16-wide k step, s: which register pair of the fragment, t = tig, e: low or high half) is
// physical channel 8 t + 4 h + 2 s + e, so a lane's A (or B) fragments of two k steps are 8
// adjacent channels: one 16-byte load.
// This lane's A fragments of 16 bf16 rows (rows gid, gid + 8 at p0, p1; zero where not ok).
__device__ __forceinline__ void load_a(unsigned (&a)[D / 16][4], const bf16* p0, const bf16* p1, bool ok0, bool ok1) {{
    const int tig = threadIdx.x & 3;
    const uint4 z = {{0u, 0u, 0u, 0u}};
#pragma unroll
    for (int m = 0; m < D / 32; ++m) {{
        const uint4 x0 = ok0 ? *reinterpret_cast<const uint4*>(p0 + 32 * m + 8 * tig) : z;
        const uint4 x1 = ok1 ? *reinterpret_cast<const uint4*>(p1 + 32 * m + 8 * tig) : z;
        a[2 * m][0] = x0.x; a[2 * m][2] = x0.y; a[2 * m + 1][0] = x0.z; a[2 * m + 1][2] = x0.w;
        a[2 * m][1] = x1.x; a[2 * m][3] = x1.y; a[2 * m + 1][1] = x1.z; a[2 * m + 1][3] = x1.w;
    }}
}}
// S (16 rows, in c) += A B^T over the head dim for the 16 keys of tile rows kr.. of a key tile
// (k_rot or k~ e^-b): B fragments by 16-byte shared reads in the same channel order.
__device__ __forceinline__ void key_scores(float (&c)[2][4], const unsigned (&a)[D / 16][4], const bf16* kt, int kr) {{
    const int lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int m = 0; m < D / 32; ++m) {{
            const uint4 y = *reinterpret_cast<const uint4*>(kt + koff(kr + 8 * half + gid, 32 * m + 8 * tig));
            mma_bf16(c[half], a[2 * m], y.x, y.y);
            mma_bf16(c[half], a[2 * m + 1], y.z, y.w);
        }}
}}
{form}
extern "C" __global__ void __launch_bounds__(NT, {minb}) {name}({sig});

extern "C" __global__ void {name}({sig}) {{
    extern __shared__ float smem[];
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    const int warp = tid >> 5, lane = tid & 31;
    const int pos0 = *pos0_ptr;  // device memory: one captured graph serves every step
    const int nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);   // query tokens of this chunk
    const int p0 = pos0 + n * C;         // position of its first; stage row c is position p0 - W + c
    const int kmin = W - p0;             // the first stage row at a position >= 0
    const int klo = max(kmin, 0) / 16;   // the first key tile not wholly before position 0
    const long long row0 = (long long)b * seq + (long long)n * C;
    const long long bl = (long long)(b * HKV + j) * nch + n;  // scratch slot of chunk n
    // the key pass's flag: slow chunks get the window part alone (the sub-chunk kernel adds the rest)
    const bool fast = !slow[bl];  // block-uniform
    bf16* ks = reinterpret_cast<bf16*>(smem);  // [16 NKT][D] rotated keys of the stage
    bf16* vs = ks + 16 * NKT * D;              // [16 NKT][D] values of the stage
    bf16* kb = vs + 16 * NKT * D;              // [C][D] k~ e^(-b), the key pass's
    bf16* sb = kb + C * D;                     // [DK][DV] the state entering the chunk, the state pass's
    // group 0: the window's keys and values (rows of positions below 0 or from p0 + L on zero);
    // group 1: the recurrence's tiles
    for (int e = tid; e < 16 * NKT * (D / 8); e += NT) {{
        const int r = e / (D / 8), c8 = 8 * (e % (D / 8)), p = p0 - W + r;
        const bool ok = p >= 0 && p < p0 + L;
        cp_async16(ks + koff(r, c8), ok ? kv_row(k_rot, ring_k, b, j, seq, pos0, p) + c8 : k_rot, ok);
        cp_async16(vs + voff(r, c8), ok ? kv_row(v, ring_v, b, j, seq, pos0, p) + c8 : v, ok);
    }}
    cp_async_commit();
    if (fast) {{
        const bf16* kg = kmap + bl * (C * DK);
        for (int e = tid; e < C * DK / 8; e += NT) {{
            const int r = e / (DK / 8), c8 = 8 * (e % (DK / 8));
            cp_async16(kb + koff(r, c8), kg + r * DK + c8, true);
        }}
        const bf16* sg = states + bl * (DK * DV);
        for (int e = tid; e < DK * DV / 8; e += NT) {{
            const int r = e / (DV / 8), c8 = 8 * (e % (DV / 8));
            cp_async16(sb + soff(r, c8), sg + r * DV + c8, true);
        }}
    }}
    cp_async_commit();
    const bf16* eb = ebuf + bl * (C * DK);  // [C][DK] e^(b), the key pass's
    // Fragment layouts (m16n8k16, gid = lane / 4, tig = lane % 4): A holds rows gid, gid + 8 at
    // columns 2 tig (+1) and 2 tig + 8 (+1); C holds rows gid, gid + 8 at columns 2 tig (+1).
    const int gid = lane >> 2, tig = lane & 3;
    // ldmatrix.trans lane addresses of a 16x16 tile as the B fragments of two 8-column tiles:
    // row arow (of the values; of the state: channel arow of the k step, physical row
    // 32 (kk / 2) + 4 (kk % 2) + srow), column acol
    const int arow = (lane & 7) + 8 * ((lane >> 3) & 1), acol = 8 * (lane >> 4);
    const int srow = 8 * ((arow & 7) >> 1) + 2 * (arow >> 3) + (arow & 1);
    for (int round = 0; round < NROUND; ++round) {{  // block-uniform
        const int task = round * NW + warp;
        // (query head, 16-row tile): long rows first in even rounds, last in odd ones
        const int g = task / NS, ii = round % 2 ? task % NS : NS - 1 - task % NS;
        const bool active = task < NTASK && 16 * ii < L;  // warp-uniform
        const int h = j * G + g;
        const int ta = 16 * ii + gid, tb = ta + 8;  // this lane's two rows
        const long long qoff = (row0 + ta) * (H * D) + h * D;
        // the row tile's key tiles [lo, hi): its window band, and the chunk's tiles up to
        // the diagonal (stage tiles WT .. WT + ii)
        const int hi = ii + NB, lo = min(max(ii, klo), WT);
        unsigned qa[D / 16][4];  // the rotated queries, then q~ e^b mix_linear, as A fragments
        if (active) load_a(qa, q_rot + qoff, q_rot + qoff + 8 * (H * D), ta < L, tb < L);
        if (round == 0) {{
            cp_async_wait<1>();
            __syncthreads();  // the window's keys and values
        }}
        // window scores S = q_rot k_rot^T over [lo, hi), f32
        float p[NP][2][4];
    #pragma unroll
        for (int u = 0; u < NP; ++u)
    #pragma unroll
            for (int e = 0; e < 8; ++e) p[u][e / 4][e % 4] = 0.0f;
        if (active) {{
    #pragma unroll
            for (int u = 0; u < NP; ++u) {{
                if (lo + u >= hi) break;
                key_scores(p[u], qa, ks, 16 * (lo + u));
            }}
            // mask (keys p - W ..= p at positions >= 0), base 2, the rows' max over the quad
            float mx[2] = {{neg_inf(), neg_inf()}};
    #pragma unroll
            for (int u = 0; u < NP; ++u)
    #pragma unroll
                for (int e = 0; e < 8; ++e) {{
                    const int half = e / 4, r = e % 4;
                    const int kc = 16 * (lo + u) + 8 * half + 2 * tig + (r & 1), qr = 16 * ii + gid + 8 * (r >> 1);
                    const bool ok = lo + u < hi && kc >= kmin && (unsigned)(kc - qr) <= (unsigned)W;
                    p[u][half][r] = ok ? p[u][half][r] * SCALE_LOG2 : neg_inf();
                    mx[r >> 1] = fmaxf(mx[r >> 1], p[u][half][r]);
                }}
            float sum[2] = {{0.0f, 0.0f}};
    #pragma unroll
            for (int x = 0; x < 2; ++x) {{
                mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffffu, mx[x], 1));
                mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffffu, mx[x], 2));
                if (mx[x] == neg_inf()) mx[x] = 0.0f;  // no key: every weight 0
            }}
    #pragma unroll
            for (int u = 0; u < NP; ++u)
    #pragma unroll
                for (int e = 0; e < 8; ++e) {{
                    const int x = (e % 4) >> 1;
                    p[u][e / 4][e % 4] = exp2f(p[u][e / 4][e % 4] - mx[x]);
                    sum[x] += p[u][e / 4][e % 4];
                }}
    #pragma unroll
            for (int x = 0; x < 2; ++x) {{
                sum[x] += __shfl_xor_sync(0xffffffffu, sum[x], 1);
                sum[x] += __shfl_xor_sync(0xffffffffu, sum[x], 2);
                sum[x] = sum[x] > 0.0f ? MIXW / sum[x] : 0.0f;  // sum >= 1 on rows below L
            }}
    #pragma unroll
            for (int u = 0; u < NP; ++u)
    #pragma unroll
                for (int e = 0; e < 8; ++e) p[u][e / 4][e % 4] *= sum[(e % 4) >> 1];
            // the raw queries (in flight across the barrier below)
            if (fast) load_a(qa, q + qoff, q + qoff + 8 * (H * D), ta < L, tb < L);
        }}
        if (round == 0) {{
            cp_async_wait<0>();
            __syncthreads();  // the recurrence's tiles
        }}
        if (!active) continue;  // warp-uniform; no barrier follows
        if (fast) {{
{qmap}            // ... times e^(b) (the same channel order) and mix_linear, rounded to bf16
    #pragma unroll
            for (int mm = 0; mm < D / 32; ++mm) {{
                const uint4 e0 = *reinterpret_cast<const uint4*>(eb + ta * DK + 32 * mm + 8 * tig);
                const uint4 e1 = *reinterpret_cast<const uint4*>(eb + tb * DK + 32 * mm + 8 * tig);
                const unsigned ev[2][4] = {{{{e0.x, e1.x, e0.y, e1.y}}, {{e0.z, e1.z, e0.w, e1.w}}}};
    #pragma unroll
                for (int hh = 0; hh < 2; ++hh)
    #pragma unroll
                    for (int r = 0; r < 4; ++r) {{
                        const int x = r & 1, kk = 2 * mm + hh;
                        qa[kk][r] = pack_bf16(__expf(bf_lo(qa[kk][r]) - m[x]) * s[x] * bf_lo(ev[hh][r]),
                                              __expf(bf_hi(qa[kk][r]) - m[x]) * s[x] * bf_hi(ev[hh][r]));
                    }}
            }}
            // the chunk's scores (q~ e^b)(k~ e^-b)^T up to the diagonal, added to the window
            // weights of the same keys (stage tile WT + kt)
    #pragma unroll
            for (int u = 0; u < NP; ++u) {{
                const int kt = lo + u - WT;  // warp-uniform
                if (kt < 0 || kt > ii) continue;
                float sc[2][4] = {{{{0.0f, 0.0f, 0.0f, 0.0f}}, {{0.0f, 0.0f, 0.0f, 0.0f}}}};
                key_scores(sc, qa, kb, 16 * kt);
    #pragma unroll
                for (int e = 0; e < 8; ++e) {{
                    const int half = e / 4, r = e % 4;
                    // the diagonal tile: keys after the query row score zero
                    const bool after = kt == ii && 8 * half + 2 * tig + (r & 1) > gid + 8 * (r >> 1);
                    p[u][half][r] += after ? 0.0f : sc[half][r];
                }}
            }}
        }}
        // the weights as bf16 A fragments over the keys
        unsigned pa[NP][4];
    #pragma unroll
        for (int u = 0; u < NP; ++u)
    #pragma unroll
            for (int e = 0; e < 4; ++e) pa[u][e] = pack_bf16(p[u][e >> 1][2 * (e & 1)], p[u][e >> 1][2 * (e & 1) + 1]);
        // out = P V + (q~ e^b mix_linear) S, CG columns at a time, stored from the accumulators
        bf16* oa = out + qoff;
    #pragma unroll 1
        for (int cg = 0; cg < DV; cg += CG) {{
            float o[CG / 8][4];
    #pragma unroll
            for (int nt = 0; nt < CG / 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
            if (fast) {{
    #pragma unroll
                for (int kk = 0; kk < DK / 16; ++kk)
    #pragma unroll
                    for (int np = 0; np < CG / 16; ++np) {{
                        unsigned r[4];
                        ldsm_x4_t(r, sb + soff(32 * (kk >> 1) + 4 * (kk & 1) + srow, cg + 16 * np + acol));
                        mma_bf16(o[2 * np], qa[kk], r[0], r[1]);
                        mma_bf16(o[2 * np + 1], qa[kk], r[2], r[3]);
                    }}
            }}
    #pragma unroll
            for (int u = 0; u < NP; ++u) {{
                if (lo + u >= hi) break;
    #pragma unroll
                for (int np = 0; np < CG / 16; ++np) {{
                    unsigned r[4];
                    ldsm_x4_t(r, vs + voff(16 * (lo + u) + arow, cg + 16 * np + acol));
                    mma_bf16(o[2 * np], pa[u], r[0], r[1]);
                    mma_bf16(o[2 * np + 1], pa[u], r[2], r[3]);
                }}
            }}
    #pragma unroll
            for (int nt = 0; nt < CG / 8; ++nt) {{
                const int cc = cg + 8 * nt + 2 * tig;
                if (ta < L) *reinterpret_cast<unsigned*>(oa + cc) = pack_bf16(o[nt][0], o[nt][1]);
                if (tb < L) *reinterpret_cast<unsigned*>(oa + 8 * (H * DV) + cc) = pack_bf16(o[nt][2], o[nt][3]);
            }}
        }}
    }}
}}
"#,
        mma = MMA_PRELUDE,
        qmap = quad_softmax_src("s", "MIXL", "            "),
        nw = t.nw,
        cg = t.cg,
        scale_log2 = float_lit(std::f64::consts::LOG2_E / (d as f64).sqrt()),
        mixw = float_lit(spec.mix_window),
        mixl = float_lit(spec.mix_linear),
        cp = CP_ASYNC,
        kv_row = KV_ROW,
        form = CHUNK_FORM,
        minb = if t.smem <= TWO_BLOCKS { 2 } else { 1 },
    );
    KernelSrc {
        name,
        summary: format!(
            "Liger {} recurrence + window branch, prefill step 3/3, chunk {c}, bf16 tensor cores (mma.sync, fragments in registers, a warp per (query head, 16-row tile)): the layer's output per (chunk, KV head) — mix_window {} · causal softmax over the last {} keys (scale 1/√D) + mix_linear {} · (q̃ e^b S + intra-chunk scores · V), the window weights and the chunk's scores summed before one product with the values",
            spec.variant,
            spec.mix_window,
            w + 1,
            spec.mix_linear
        ),
        body,
        block: [(32 * t.nw) as u32, 1, 1],
        smem: t.smem as u32,
        grid: format!(
            "(ceil(seq/{c}), {kv}, batch): one block per (chunk, KV head, row), {nw} warps taking the {tasks} (query head, 16-row tile) tasks in turn; chunks the key pass flags slow get the window part alone (the sub-chunk kernel adds the rest in place)",
            nw = t.nw,
            tasks = g.max(1) * (c / 16),
        ),
        params: params(spec, c),
    }
}

/// The fused kernel's parameters, in order.
fn params(spec: &LigerSpec, c: usize) -> Vec<String> {
    let (h, kv, _, d) = dims(spec);
    let per_chunk = |what: &str| format!("{what} [batch, {kv}, ceil(seq/{c}), {c}, {d}] bf16");
    let mut p = vec![format!("q [tokens, {}] bf16 (raw, un-rotated)", h * d)];
    p.extend(window_inputs(spec));
    p.extend([
        per_chunk("kmap (the key pass's k̃ e^(−b))"),
        per_chunk("ebuf (the key pass's e^(b))"),
        format!(
            "states [batch, {kv}, ceil(seq/{c}), {d}, {d}] bf16 (the state pass's, entering each chunk)"
        ),
        format!("slow [batch, {kv}, ceil(seq/{c})] i32 (the key pass's flags)"),
        format!("out [tokens, {}] bf16 (out)", h * d),
        "seq".into(),
        "pos0 (const int*: device memory, read once)".into(),
    ]);
    p
}

#[cfg(test)]
mod tests {
    use super::super::test_spec as spec;
    use super::*;

    /// The benchmark shape (H 32, KV 8, D 128, W 64, C 64) and SmolLM2's (H 9, KV 3, D 64)
    /// take 8 warps, two blocks an SM (112 KiB and 48 KiB).
    #[test]
    fn tilings() {
        let t = tile(&spec(32, 8, 128, 64), 64);
        assert_eq!((t.nw, t.cg, t.smem), (8, 64, 114_688));
        assert!(t.smem <= TWO_BLOCKS);
        let t = tile(&spec(9, 3, 64, 64), 64);
        assert_eq!((t.nw, t.cg, t.smem), (8, 64, 49_152));
    }

    /// Windows off the 16-key grid or past 64 keys, head dims past 128 and chunks past 64
    /// keep the two kernels.
    #[test]
    fn eligibility() {
        let limit = 227 * 1024;
        assert!(fused_eligible(&spec(32, 8, 128, 64), 64, limit));
        assert!(fused_eligible(&spec(4, 2, 64, 0), 16, limit));
        assert!(!fused_eligible(&spec(4, 2, 16, 64), 64, limit));
        assert!(!fused_eligible(&spec(4, 2, 96, 64), 64, limit));
        assert!(!fused_eligible(&spec(32, 8, 128, 60), 64, limit));
        assert!(!fused_eligible(&spec(32, 8, 128, 80), 64, limit));
        assert!(!fused_eligible(&spec(8, 8, 256, 64), 64, limit));
        assert!(!fused_eligible(&spec(32, 8, 128, 64), 128, limit));
        assert!(!fused_eligible(&spec(32, 8, 128, 64), 64, 100 * 1024));
        let mut swa = spec(32, 8, 128, 64);
        swa.variant = LigerVariant::SwaOnly;
        assert!(!fused_eligible(&swa, 64, limit));
        swa.variant = LigerVariant::Gla;
        swa.mix_window = 0.0;
        assert!(!fused_eligible(&swa, 64, limit));
    }
}
