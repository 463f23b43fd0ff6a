//! Step 3 of the chunk-parallel prefill recurrence on bf16 tensor cores (`mma.sync`
//! m16n8k16, f32 accumulation, fragments in registers), for the keyed variants at head dims
//! and chunks that are multiples of 16 (steps 1 and 2: `chunk_pass.rs`). It takes every
//! chunk whose decay over the chunk stays within `e^{−FAST}` in every channel (most of a
//! real model's; [`super::chunk_tc::prefill`] takes the rest).
//!
//! Step 3 ([`prefill`]): one block per (chunk, KV head, row) copies three bf16 tiles into
//! shared memory, shared by the KV head's `G` query heads: the key pass's `k̃ ⊙ e^{−b}`, the
//! values, and the state pass's state entering the chunk (`e^{b}`, the key pass's, bf16, is
//! read from global memory as the queries are scaled). Each warp then takes one (query
//! head, 16-row tile) at a time and keeps everything else in registers:
//! - its queries, in through a per-warp staging tile (16-byte loads) as `mma` A fragments
//!   (`ldmatrix`), mapped (softmax over the head dim, four lanes per row) and scaled by
//!   `e^{b}`;
//! - the scores `(q̃ e^{b})(k̃ e^{−b})ᵀ` of the key tiles up to the diagonal, masked on the
//!   diagonal, converted in registers into the A fragments of the next product;
//! - `o = (q̃ e^{b}) S + A V`, 64 output columns at a time, then `window + mix_linear · o`
//!   (the window part bf16) out through the staging tile in 16-byte stores.
//!
//! Precision: the score factors are within `e^{±40}` and every term is non-negative, so
//! bf16 operands (2⁻⁹ relative each) keep the scores to ~2⁻⁸ relative; the scores are then
//! rounded to bf16 once more before `A V`. The state term rounds `S` to bf16, as fla's
//! `chunk_gla` does. The outputs are bf16; on a GPU the kernels' error against float64
//! equals the TF32 kernels' within 1 % (docs/CUDA.md).

use ligerc_ir::LigerSpec;

use super::super::{CP_ASYNC, KernelSrc, float_lit};
use super::chunk::{CHUNK_FORM, StatesIn, prefill_params, step3_src};
use super::chunk_tc::chunk_owner;
use super::{MMA_PRELUDE, dims, quad_softmax_src, vname};

/// Row padding of the bf16 tiles in elements: rows of `D + 8` bf16 put `ldmatrix`'s eight
/// row addresses on distinct banks.
const BPAD: usize = 8;

/// Threads per block of step 3: 8 warps, two (query head, 16-row tile) tasks each at
/// `G` = 4, at most 128 registers a thread; two blocks an SM.
const PREFILL_THREADS: usize = 256;

/// Shared memory of step 3 in bytes: the bf16 tiles of the keys `k̃ e^{−b}`, the values
/// and the state entering the chunk, and a 16-row bf16 staging tile per warp (the queries
/// in, the outputs out, both with 16-byte coalesced accesses). 102 KiB at D = 128, C = 64:
/// two blocks fit an sm_90 SM.
pub(super) fn smem_bytes(c: usize, d: usize) -> usize {
    (2 * c + d + (PREFILL_THREADS / 32) * 16) * (d + BPAD) * 2
}

/// Step 3 on bf16 tensor cores (see [`super::gla_prefill`] for the contract; queries are
/// raw bf16, `dec` is step 1's per-chunk decay).
pub(super) fn prefill(spec: &LigerSpec, chunk: usize, window: bool) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let variant = spec.variant;
    let c = chunk;
    let name = format!(
        "liger_{}_prefill_mma_h{h}_kv{kv}_d{d}_c{c}{}",
        vname(variant),
        if window { "" } else { "_nowin" }
    );
    // the window part (bf16 scratch) comes into the staging tile through 16-byte loads of the
    // rows the pass stores, and each lane adds its fragment's part from there
    let (window_param, window_stage, window_part) = if window {
        (
            "const bf16* __restrict__ window, ",
            "
    #pragma unroll
            for (int it = 0; it < VC / 2; ++it) {{
                const int u = lane + 32 * it, r = u / VC, c8 = u % VC, t = 16 * ii + r;
                if (t < L) *reinterpret_cast<uint4*>(stg + r * BS + 8 * c8) = *reinterpret_cast<const uint4*>(window + (row0 + t) * (H * DV) + h * DV + cg + 8 * c8);
            }}
            __syncwarp();",
            "const float2 w = {bf_lo(*p), bf_hi(*p)};  // the window part",
        )
    } else {
        ("", "", "const float2 w = {0.0f, 0.0f};")
    };
    let cg = if d.is_multiple_of(64) { 64 } else { 16 };
    let sig = format!(
        "const bf16* __restrict__ q, const bf16* __restrict__ kmap, const bf16* __restrict__ ebuf,
        const bf16* __restrict__ v, const bf16* __restrict__ states, const int* __restrict__ slow,
        {window_param}bf16* __restrict__ out, int seq"
    );
    let body = format!(
        r#"{mma}constexpr int H = {h};
constexpr int G = {g};
constexpr int HKV = {kv};
constexpr int D = {d};        // head dim of q, k, v
constexpr int DK = D;          // key channels = rows of the state
constexpr int DV = D;          // value channels = columns of the state
constexpr int C = {c};        // chunk length
constexpr int NT = {nt};
constexpr int NW = NT / 32;
constexpr int NS = C / 16;     // 16-row tiles of the chunk
constexpr int BS = D + {bpad};     // row stride of the bf16 tiles
constexpr int CG = {cg};       // output columns per pass (CG / 2 f32 accumulators per lane)
constexpr float MIX = {mix};   // mix_linear
{cp}
{form}
// At most 128 registers a thread: two blocks an SM.
extern "C" __global__ void __launch_bounds__(NT, 2) {name}({sig});

extern "C" __global__ void {name}({sig}) {{
    extern __shared__ float smem[];
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    [[maybe_unused]] const int warp = tid >> 5, lane = tid & 31;
{owner}    const int nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + (long long)n * C;
    const long long bl = (long long)(b * HKV + j) * nch + n;  // scratch slot of chunk n
    bf16* kb = reinterpret_cast<bf16*>(smem);  // [C][BS] k~ e^(-b), the key pass's
    bf16* vb = kb + C * BS;                    // [C][BS] values (rows past L zero)
    bf16* sb = vb + C * BS;                    // [DK][BS] the state entering the chunk, the state pass's
    {{  // the three tiles through 16-byte cp.async, all in flight
        const bf16* kg = kmap + bl * (C * DK);
        for (int e = tid; e < C * DK / 8; e += NT) {{
            const int r = e / (DK / 8), p = 8 * (e % (DK / 8));
            cp_async16(kb + r * BS + p, kg + r * DK + p, true);
            cp_async16(vb + r * BS + p, v + (r < L ? (row0 + r) * (HKV * DV) + j * DV + p : 0), r < L);
        }}
        const bf16* sg = states + bl * (DK * DV);
        for (int e = tid; e < DK * DV / 8; e += NT) {{
            const int r = e / (DV / 8), p = 8 * (e % (DV / 8));
            cp_async16(sb + r * BS + p, sg + r * DV + p, true);
        }}
        cp_async_wait_all();
    }}
    __syncthreads();
    const bf16* eb = ebuf + bl * (C * DK);  // [C][DK] e^(b), the key pass's
    // Fragment layouts (m16n8k16, gid = lane / 4, tig = lane % 4): A holds rows gid, gid + 8 at
    // columns 2 tig (+1) and 2 tig + 8 (+1); C holds rows gid, gid + 8 at columns 2 tig (+1).
    const int gid = lane >> 2, tig = lane & 3;
    // ldmatrix lane addresses of a 16x16 tile: row, column (as A fragments: ldsm_x4; as B
    // fragments of two 8-column tiles: ldsm_x4_t)
    const int lrow = (lane & 7) + 8 * ((lane >> 3) & 1), lcol = 8 * (lane >> 4);
    bf16* stg = sb + DK * BS + warp * (16 * BS);  // [16][BS] this warp's staging tile
    const uint4 zero4 = {{0u, 0u, 0u, 0u}};
    for (int task = warp; task < G * NS; task += NW) {{
        // (query head, 16-row tile): long rows first in even rounds, last in odd ones, so that
        // a warp's tasks even out
        const int g = task / NS, ii = (task / NW) % 2 ? task % NS : NS - 1 - task % NS;
        if (16 * ii >= L) continue;  // warp-uniform
        const int h = j * G + g;
        const int ta = 16 * ii + gid, tb = ta + 8;  // this lane's two rows
        // the tile's query rows (rows past L zero): 16-byte loads into the staging tile, then
        // A fragments over the head dim
        __syncwarp();  // the previous task's outputs have left the staging tile
    #pragma unroll
        for (int it = 0; it < D / 16; ++it) {{
            const int u = lane + 32 * it, r = u / (D / 8), c8 = u % (D / 8), t = 16 * ii + r;
            const uint4 x = t < L ? *reinterpret_cast<const uint4*>(q + (row0 + t) * (H * D) + h * D + 8 * c8) : zero4;
            *reinterpret_cast<uint4*>(stg + r * BS + 8 * c8) = x;
        }}
        __syncwarp();
        unsigned qa[D / 16][4];
    #pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) ldsm_x4(qa[kk], stg + lrow * BS + 16 * kk + lcol);
{qmap}        // ... times e^(b), rounded to bf16: the A operand of the scores and of the state term
    #pragma unroll
        for (int kk = 0; kk < D / 16; ++kk)
    #pragma unroll
            for (int r = 0; r < 4; ++r) {{
                const int x = r & 1, t = x ? tb : ta, c = 16 * kk + 2 * tig + 8 * (r >> 1);
                const unsigned eu = *reinterpret_cast<const unsigned*>(eb + t * DK + c);
                const float2 e = {{bf_lo(eu), bf_hi(eu)}};
                qa[kk][r] = pack_bf16(__expf(bf_lo(qa[kk][r]) - m[x]) * sum[x] * e.x,
                                      __expf(bf_hi(qa[kk][r]) - m[x]) * sum[x] * e.y);
            }}
        // scores of the key tiles up to the diagonal, 8 keys per mma tile
        unsigned pa[NS][4];  // the masked scores as A fragments over the keys
    #pragma unroll
        for (int kt = 0; kt < NS; ++kt) {{
            if (kt > ii) break;
            float sc[2][4] = {{{{0.0f, 0.0f, 0.0f, 0.0f}}, {{0.0f, 0.0f, 0.0f, 0.0f}}}};
    #pragma unroll
            for (int half = 0; half < 2; ++half) {{
                const bf16* kp = kb + (16 * kt + 8 * half + (lane & 7)) * BS + 8 * (lane >> 3);
    #pragma unroll
                for (int kk = 0; kk + 1 < D / 16; kk += 2) {{
                    unsigned r[4];
                    ldsm_x4(r, kp + 16 * kk);
                    mma_bf16(sc[half], qa[kk], r[0], r[1]);
                    mma_bf16(sc[half], qa[kk + 1], r[2], r[3]);
                }}
                if constexpr ((D / 16) % 2 == 1) {{
                    unsigned r[2];
                    ldsm_x2(r, kp + D - 16);
                    mma_bf16(sc[half], qa[D / 16 - 1], r[0], r[1]);
                }}
            }}
            if (kt == ii) {{  // the diagonal tile: keys after the query row score zero
    #pragma unroll
                for (int half = 0; half < 2; ++half)
    #pragma unroll
                    for (int r = 0; r < 4; ++r)
                        if (8 * half + 2 * tig + (r & 1) > gid + 8 * (r >> 1)) sc[half][r] = 0.0f;
            }}
            pa[kt][0] = pack_bf16(sc[0][0], sc[0][1]);
            pa[kt][1] = pack_bf16(sc[0][2], sc[0][3]);
            pa[kt][2] = pack_bf16(sc[1][0], sc[1][1]);
            pa[kt][3] = pack_bf16(sc[1][2], sc[1][3]);
        }}
        // o = (q~ e^b) S + A V, CG columns at a time
    #pragma unroll 1
        for (int cg = 0; cg < DV; cg += CG) {{
            float o[CG / 8][4];
    #pragma unroll
            for (int nt = 0; nt < CG / 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
            const bf16* sp = sb + lrow * BS + cg + lcol;
    #pragma unroll
            for (int kk = 0; kk < DK / 16; ++kk)
    #pragma unroll
                for (int np = 0; np < CG / 16; ++np) {{
                    unsigned r[4];
                    ldsm_x4_t(r, sp + 16 * kk * BS + 16 * np);
                    mma_bf16(o[2 * np], qa[kk], r[0], r[1]);
                    mma_bf16(o[2 * np + 1], qa[kk], r[2], r[3]);
                }}
            const bf16* vp = vb + lrow * BS + cg + lcol;
    #pragma unroll
            for (int kt = 0; kt < NS; ++kt) {{
                if (kt > ii) break;
    #pragma unroll
                for (int np = 0; np < CG / 16; ++np) {{
                    unsigned r[4];
                    ldsm_x4_t(r, vp + 16 * kt * BS + 16 * np);
                    mma_bf16(o[2 * np], pa[kt], r[0], r[1]);
                    mma_bf16(o[2 * np + 1], pa[kt], r[2], r[3]);
                }}
            }}
            // out = window + MIX o, through the staging tile: 16-byte stores of the tile's rows
            constexpr int VC = CG / 8;  // 16-byte pieces of a staged row
            __syncwarp();  // the staging tile's previous contents are consumed{window_stage}
    #pragma unroll
            for (int nt = 0; nt < CG / 8; ++nt)
    #pragma unroll
                for (int x = 0; x < 2; ++x) {{
                    unsigned* p = reinterpret_cast<unsigned*>(stg + (gid + 8 * x) * BS + 8 * nt + 2 * tig);
                    {window_part}
                    *p = pack_bf16(w.x + MIX * o[nt][2 * x], w.y + MIX * o[nt][2 * x + 1]);
                }}
            __syncwarp();
    #pragma unroll
            for (int it = 0; it < VC / 2; ++it) {{
                const int u = lane + 32 * it, r = u / VC, c8 = u % VC, t = 16 * ii + r;
                if (t < L) *reinterpret_cast<uint4*>(out + (row0 + t) * (H * DV) + h * DV + cg + 8 * c8) = *reinterpret_cast<const uint4*>(stg + r * BS + 8 * c8);
            }}
        }}
    }}
}}
"#,
        mma = MMA_PRELUDE,
        qmap = quad_softmax_src("sum", "1.0f", "        "),
        nt = PREFILL_THREADS,
        bpad = BPAD,
        mix = float_lit(spec.mix_linear),
        cp = CP_ASYNC,
        form = CHUNK_FORM,
        owner = chunk_owner(true),
    );
    let mut params = prefill_params(
        spec,
        format!("q [tokens, {}] bf16 (raw, un-rotated)", h * d),
        (d, c),
        StatesIn::Bf16,
        window,
        true,
    );
    params.splice(
        1..2,
        [
            format!("kmap [batch, {kv}, ceil(seq/{c}), {c}, {d}] bf16 (the key pass's k̃ e^(−b))"),
            format!("ebuf [batch, {kv}, ceil(seq/{c}), {c}, {d}] bf16 (the key pass's e^(b))"),
        ],
    );
    step3_src(
        spec,
        (c, window),
        name,
        body,
        "bf16 tensor cores (mma.sync, fragments in registers, a warp per (query head, 16-row tile))",
        (PREFILL_THREADS, smem_bytes(c, d)),
        (
            format!(
                "(ceil(seq/{c}), {kv}, batch): one block per (chunk, KV head, row), a warp per (query head, 16-row tile) in turn; returns at once on chunks that decay faster than e^-40 (the sub-chunk kernel's)"
            ),
            params,
        ),
    )
}
