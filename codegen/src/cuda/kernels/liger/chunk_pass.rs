//! Steps 1 and 2 of the chunk-parallel prefill recurrence for the tensor-core variants, as
//! a key pass and one sequential state pass (instead of per-chunk `ΔS` in f32 scratch and a
//! scan that reads and writes it again):
//!
//! 1. [`chunk_prep`]: one block per (chunk, KV head, row) runs the chunk prologue (gate,
//!    key map, in-chunk cumsum `b`) once for both later steps and writes, per chunk: its
//!    decay `e^{b_L}`; whether it is *slow* (some channel decays faster than `e^{−FAST}`:
//!    the sub-chunk kernel's); `k̃ ⊙ e^{−b}` and `e^{b}` as bf16, which step 3
//!    (`chunk_mma.rs`) and the state pass read instead of redoing the prologue; and, for
//!    slow chunks only, `k̃ ⊙ e^{b_L − b} ≤ 1` as high and low bf16 halves (exact to ~2⁻¹⁷).
//! 2. [`state_pass`]: one block per (`CG` state columns, KV head, row) walks the chunks in
//!    order with its slice of the state in registers (`mma` C fragments, f32). Per chunk it
//!    writes the state entering the chunk (bf16 for step 3; f32 too where the chunk is slow),
//!    then updates the state from tiles that `cp.async` brought in while the previous chunk
//!    was computed: `S ← e^{b_L} ⊙ (S + (k̃ e^{−b})ᵀ V)` (one bf16 product; `e^{−b} ≤ e^{FAST}`),
//!    or on slow chunks `S ← e^{b_L} S + (k̃ e^{b_L − b})ᵀ V` with the two halves (there
//!    `e^{−b}` may overflow). The final state goes back to the stored state.
//!
//! Precision: on the one-product path each term of `ΔS` carries the bf16 rounding of
//! `k̃ e^{−b}` (2⁻⁹ relative), as step 3's in-chunk scores do and as fla's `chunk_gla`
//! state recurrence does; the sums and the state stay f32. The state entering a chunk is
//! rounded to bf16 for step 3's state term, as before.

use ligerc_ir::LigerSpec;

use super::super::{CP_ASYNC, KernelSrc, float_lit};
use super::chunk::{CHUNK_FORM, Tiles, chunk_consts, chunk_prologue, rec_what};
use super::chunk_tc::{LOADER, PAD, alternate_slow, fast_range};
use super::{MMA_PRELUDE, Recurrence, dims, vname};

/// Threads per block of [`chunk_prep`]: 8 warps.
const PREP_THREADS: usize = 256;

/// Row padding of the bf16 tiles of [`state_pass`] in elements (16 bytes: `ldmatrix`'s
/// eight row addresses on distinct banks).
const BPAD: usize = 8;

/// Shared memory of [`chunk_prep`] in floats: keys (raw, then mapped), gate cumsum,
/// per-row scalars.
fn prep_smem_floats(c: usize, d: usize) -> usize {
    2 * c * (d + PAD) + c
}

/// State columns per block of [`state_pass`]: 32 (16 where the head dim is an odd multiple
/// of 16). At B 8, KV 8, D 128 that is 256 blocks, two an SM.
fn pass_columns(d: usize) -> usize {
    if d.is_multiple_of(32) { 32 } else { 16 }
}

/// Threads per block of [`state_pass`]: a warp per 16 state rows.
fn pass_threads(d: usize) -> usize {
    32 * (d / 16)
}

/// Stages of [`state_pass`]: the next chunk's tiles (keys, values, decays) come in while one
/// is computed. Four stages measured slower at B 8 (one block an SM) and no faster at B 2.
const PASS_STAGES: usize = 2;

/// Shared memory of [`state_pass`] in bytes: [`PASS_STAGES`] stages of the key halves and the
/// value slice (bf16) and the chunk's decays (f32). 79 KiB at D 128, C 64.
fn pass_smem_bytes(c: usize, d: usize) -> usize {
    PASS_STAGES * ((2 * c * (d + BPAD) + c * (pass_columns(d) + BPAD)) * 2 + 4 * d)
}

/// Blocks along the grid's x axis of [`state_pass`]: one per `CG` state columns.
pub fn state_pass_slices(spec: &LigerSpec) -> usize {
    spec.head_dim / pass_columns(spec.head_dim)
}

/// The key pass (see the module docs): the chunk prologue, then per chunk its decay
/// `e^{b_L}`, whether it is the sub-chunk kernel's (`slow`), the keys `k̃ e^{−b}` and
/// `e^{b}` (bf16), and for the sub-chunk kernel's chunks the keys scaled to the chunk's end
/// as bf16 halves.
pub fn chunk_prep(spec: &LigerSpec, chunk: usize, normalizer: f64) -> KernelSrc {
    let (_, kv, _, d) = dims(spec);
    let variant = spec.variant;
    let c = chunk;
    let name = format!("liger_{}_chunk_prep_kv{kv}_d{d}_c{c}", vname(variant));
    let body = format!(
        r#"{consts}constexpr float FAST_DEC = {fast_dec};  // e^(-FAST): slower chunks are the sub-chunk kernel's
constexpr bool ALTERNATE = {alternate};  // testing knob: every odd-numbered chunk slow as well
{loader}
{form}
// Two floats as bf16, the first in the low half.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {{
    return (unsigned)__bfloat16_as_ushort(__float2bfloat16(lo)) | ((unsigned)__bfloat16_as_ushort(__float2bfloat16(hi)) << 16);
}}
// Eight floats as bf16, 16 bytes.
__device__ __forceinline__ uint4 pack8_bf16(const float (&x)[8]) {{
    unsigned w[4];
    #pragma unroll
    for (int u = 0; u < 4; ++u) w[u] = pack_bf16x2(x[2 * u], x[2 * u + 1]);
    return uint4{{w[0], w[1], w[2], w[3]}};
}}

extern "C" __global__ void {name}(const bf16* __restrict__ k, bf16* __restrict__ kmap,
        bf16* __restrict__ ebuf, bf16* __restrict__ khat, float* __restrict__ dec,
        int* __restrict__ slow, int seq) {{
    extern __shared__ float smem[];
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    [[maybe_unused]] const int warp = tid >> 5, lane = tid & 31;
{prologue}    const float* bl_row = bc + (L - 1) * KS;  // b_L per channel
    int fast = 1;
    for (int i = tid; i < DK; i += NT) {{
        const float e = __expf(bl_row[i]);
        dec[bl * DK + i] = e;
        fast &= e >= FAST_DEC;
    }}
    const int is_slow = __syncthreads_or(!fast) || (ALTERNATE && (n & 1));  // block-uniform
    if (tid == 0) slow[bl] = is_slow;
    // k~_s e^(-b_s) (<= e^FAST where the chunk is not slow) and e^(b_t), bf16: the state pass
    // and step 3 take these. Four channels a thread: 16-byte shared reads (a warp's eight-thread
    // phases read 128 adjacent bytes: no bank conflicts), 8-byte stores (a warp: 256 adjacent
    // bytes).
    for (int e = tid; e < C * DK / 4; e += NT) {{
        const int t = e / (DK / 4), i = 4 * (e % (DK / 4));
        const float4 lb = *reinterpret_cast<const float4*>(bc + t * KS + i);
        const float4 kv = *reinterpret_cast<const float4*>(kf + t * KS + i);
        const uint2 m = {{pack_bf16x2(kv.x * __expf(-lb.x), kv.y * __expf(-lb.y)), pack_bf16x2(kv.z * __expf(-lb.z), kv.w * __expf(-lb.w))}};
        const uint2 x = {{pack_bf16x2(__expf(lb.x), __expf(lb.y)), pack_bf16x2(__expf(lb.z), __expf(lb.w))}};
        *reinterpret_cast<uint2*>(kmap + bl * (C * DK) + t * DK + i) = m;
        *reinterpret_cast<uint2*>(ebuf + bl * (C * DK) + t * DK + i) = x;
    }}
    if (!is_slow) return;
    // the sub-chunk kernel's chunks: k~_s e^(b_L - b_s) <= 1 (rows past L are zero) as high and
    // low bf16 halves (exact to ~2^-17), for the state pass
    for (int e = tid; e < C * DK / 8; e += NT) {{
        const int t = e / (DK / 8), i = 8 * (e % (DK / 8));
        float h[8], l[8];
    #pragma unroll
        for (int u = 0; u < 8; ++u) {{
            const float y = kf[t * KS + i + u] * __expf(bl_row[i + u] - bc[t * KS + i + u]);
            h[u] = __bfloat162float(__float2bfloat16(y));
            l[u] = y - h[u];
        }}
        *reinterpret_cast<uint4*>(khat + bl * (2 * C * DK) + t * DK + i) = pack8_bf16(h);
        *reinterpret_cast<uint4*>(khat + bl * (2 * C * DK) + C * DK + t * DK + i) = pack8_bf16(l);
    }}
}}
"#,
        consts = chunk_consts(spec, d, c, normalizer, PAD, PREP_THREADS),
        fast_dec = float_lit((-fast_range()).exp()),
        alternate = alternate_slow(),
        loader = LOADER,
        form = CHUNK_FORM,
        prologue = chunk_prologue(variant, d, d, Tiles::KeysOnly),
    );
    let chunk_tile =
        |what: &str| format!("[batch, {kv}, ceil(seq/{c}), {c}, {d}] bf16 (out: {what})");
    KernelSrc {
        name,
        summary: format!(
            "Liger {}, prefill step 1/3 (key pass), chunk {c}: per chunk k̃ e^(−b), e^(b), the decay e^(b_L), whether it decays faster than e^-FAST, and for those chunks k̃ e^(b_L−b) as bf16 high/low halves",
            rec_what(variant, Recurrence::Keyed, d)
        ),
        body,
        block: [PREP_THREADS as u32, 1, 1],
        smem: (prep_smem_floats(c, d) * 4) as u32,
        grid: format!("(ceil(seq/{c}), {kv}, batch): one block per (chunk, KV head, row)"),
        params: vec![
            format!(
                "k [tokens, {}] bf16 (raw; gate and key map computed here)",
                kv * d
            ),
            format!("kmap {}", chunk_tile("k̃ e^(−b)")),
            format!("ebuf {}", chunk_tile("e^(b)")),
            format!(
                "khat [batch, {kv}, ceil(seq/{c}), 2, {c}, {d}] bf16 (out, slow chunks only: k̃ e^(b_L−b), high then low halves)"
            ),
            format!("dec [batch, {kv}, ceil(seq/{c}), {d}] f32 (out: e^(b_L) per chunk)"),
            format!(
                "slow [batch, {kv}, ceil(seq/{c})] i32 (out: 1 where some channel decays faster than e^-FAST)"
            ),
            "seq".into(),
        ],
    }
}

/// The state pass (see the module docs): per chunk in order, the state entering it out,
/// then the update for the block's `CG` columns.
pub fn state_pass(spec: &LigerSpec, chunk: usize) -> KernelSrc {
    let (kv, d) = (spec.kv_heads, spec.head_dim);
    let c = chunk;
    let cg = pass_columns(d);
    let nt = pass_threads(d);
    let name = format!("liger_state_pass_mma_kv{kv}_d{d}_c{c}");
    let body = format!(
        r#"{mma}{cp}constexpr int HKV = {kv};
constexpr int DK = {d};       // rows of the state (key channels)
constexpr int DV = {d};       // columns of the state
constexpr int C = {c};        // chunk length
constexpr int NT = {nt};      // a warp per 16 state rows
constexpr int CG = {cg};       // state columns of this block
constexpr int BS = DK + {bpad};     // row stride of the key tiles (bf16)
constexpr int VS = CG + {bpad};     // row stride of the value tile (bf16)
constexpr int STAGE = 2 * C * BS + C * VS + 2 * DK;  // bf16 elements of one stage (the decays: 2 each)
constexpr int NST = {nst};     // stages in flight

{form}
// Chunk n's keys (k~ e^(-b), or for a slow chunk the two halves of k~ e^(b_L - b)), value
// slice and decays into stage `st` (cp.async; value rows past seq zero).
__device__ __forceinline__ void fetch_chunk(bf16* st, const bf16* kmap, const bf16* khat, const bf16* v,
                                            const float* dec, long long slot, bool slow, long long row0, int L,
                                            int j, int c0) {{
    const bf16* src = slow ? khat + slot * (2 * C * DK) : kmap + slot * (C * DK);
    const int kp = (slow ? 2 : 1) * C * DK / 8;  // 16-byte pieces of the keys
    for (int e = threadIdx.x; e < kp; e += NT) {{
        const int r = e / (DK / 8), p = e % (DK / 8);  // r: half * C + row
        cp_async16(st + r * BS + 8 * p, src + r * DK + 8 * p, true);
    }}
    bf16* vs = st + 2 * C * BS;
    for (int e = threadIdx.x; e < C * CG / 8; e += NT) {{
        const int t = e / (CG / 8), p = e % (CG / 8);
        const bool in = t < L;
        cp_async16(vs + t * VS + 8 * p, v + (in ? (row0 + t) * (HKV * DV) + j * DV + c0 + 8 * p : 0), in);
    }}
    float* ds = reinterpret_cast<float*>(vs + C * VS);
    for (int e = threadIdx.x; e < DK / 4; e += NT) cp_async16(ds + 4 * e, dec + slot * DK + 4 * e, true);
}}

// The state slice's update from one chunk's tiles (`acc` zero on entry). Fast chunks:
// S <- e^(b_L) (S + (k~ e^(-b))^T V), one product, the decay applied per state row. Slow
// chunks: S <- e^(b_L) S + (k~ e^(b_L - b))^T V with the keys as high and low halves (a
// channel's e^(-b) may overflow there). Key rows past L are zero.
template <bool SLOW>
__device__ __forceinline__ void update_state(float (&s)[CG / 8][4], float (&acc)[CG / 8][4], const bf16* kh,
                                             const bf16* vs, int L, float d0, float d1) {{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // ldmatrix lane addresses: the keys as A = K^T (ldsm_x4_t of [s][i]), the values as B.
    const int arow = (lane & 7) + 8 * (lane >> 4), acol = 8 * ((lane >> 3) & 1);
    const int lrow = (lane & 7) + 8 * ((lane >> 3) & 1), lcol = 8 * (lane >> 4);
    for (int kt = 0; 16 * kt < L; ++kt) {{
        unsigned a[4], al[4];
        ldsm_x4_t(a, kh + (16 * kt + arow) * BS + 16 * warp + acol);
        if constexpr (SLOW) ldsm_x4_t(al, kh + C * BS + (16 * kt + arow) * BS + 16 * warp + acol);
    #pragma unroll
        for (int np = 0; np < CG / 16; ++np) {{
            unsigned r[4];
            ldsm_x4_t(r, vs + (16 * kt + lrow) * VS + 16 * np + lcol);
            mma_bf16(acc[2 * np], a, r[0], r[1]);
            mma_bf16(acc[2 * np + 1], a, r[2], r[3]);
            if constexpr (SLOW) {{
                mma_bf16(acc[2 * np], al, r[0], r[1]);
                mma_bf16(acc[2 * np + 1], al, r[2], r[3]);
            }}
        }}
    }}
    #pragma unroll
    for (int nt = 0; nt < CG / 8; ++nt)
    #pragma unroll
        for (int e = 0; e < 4; ++e) {{
            const float dl = e < 2 ? d0 : d1;
            s[nt][e] = SLOW ? dl * s[nt][e] + acc[nt][e] : dl * (s[nt][e] + acc[nt][e]);
        }}
}}

extern "C" __global__ void __launch_bounds__(NT) {name}({sig});

extern "C" __global__ void {name}({sig}) {{
    extern __shared__ float smem[];
    bf16* stages = reinterpret_cast<bf16*>(smem);  // [NST][STAGE]
    const int j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    const int warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    const int c0 = blockIdx.x * CG;  // this block's state columns
    const int nch = (seq + C - 1) / C;
    const long long bj = (long long)b * HKV + j;
    // Fragment layouts (m16n8k16): C holds rows gid, gid + 8 at columns 2 tig (+1).
    const int r0 = 16 * warp + gid;  // this lane's state rows r0, r0 + 8
    float s[CG / 8][4];              // the state slice, f32
    const float* s_in = state + bj * (DK * DV) + c0 + 2 * tig;
    #pragma unroll
    for (int nt = 0; nt < CG / 8; ++nt)
    #pragma unroll
        for (int x = 0; x < 2; ++x) {{
            const float2 p = *reinterpret_cast<const float2*>(s_in + (r0 + 8 * x) * DV + 8 * nt);
            s[nt][2 * x] = p.x;
            s[nt][2 * x + 1] = p.y;
        }}
    // NST stages in flight: chunk n + NST - 1 comes in while chunk n is computed. A stage's
    // slow flag (block-uniform) goes with it in shared memory; the flag of the next chunk to
    // fetch is read an iteration ahead.
    __shared__ int stage_slow[NST];
    const long long row_b = (long long)b * seq;
    for (int n = 0; n < NST - 1; ++n) {{
        if (n < nch) {{
            const int f = flags[bj * nch + n];
            if (tid == 0) stage_slow[n] = f;
            fetch_chunk(stages + n * STAGE, kmap, khat, v, dec, bj * nch + n, f, row_b + (long long)n * C,
                        min(C, seq - n * C), j, c0);
        }}
        cp_async_commit();
    }}
    int flag_ahead = NST - 1 < nch ? flags[bj * nch + NST - 1] : 0;
    for (int n = 0; n < nch; ++n) {{
        const long long slot = bj * nch + n;
        const int L = min(C, seq - n * C);
        cp_async_wait<NST - 2>();  // chunk n's group has landed
        __syncthreads();           // ... for every thread; chunk n - 1's stage is consumed
        {{
            const int m = n + NST - 1;  // the chunk to fetch now, into chunk n - 1's stage
            if (m < nch) {{
                if (tid == 0) stage_slow[m % NST] = flag_ahead;
                fetch_chunk(stages + (m % NST) * STAGE, kmap, khat, v, dec, slot + NST - 1, flag_ahead,
                            row_b + (long long)m * C, min(C, seq - m * C), j, c0);
                flag_ahead = m + 1 < nch ? flags[slot + NST] : 0;
            }}
            cp_async_commit();
        }}
        const int slow = stage_slow[n % NST];
        const bf16* kh = stages + (n % NST) * STAGE;  // this chunk's tiles
        const bf16* vs = kh + 2 * C * BS;
        const float* ds = reinterpret_cast<const float*>(vs + C * VS);  // the chunk's decays
        const float d0 = ds[r0], d1 = ds[r0 + 8];
        // the state entering chunk n, for step 3: bf16 for the one-product kernel, f32 where
        // the sub-chunk kernel takes the chunk
        bf16* sb_out = states_bf + slot * (DK * DV) + c0 + 2 * tig;
        float* s_out = states + slot * (DK * DV) + c0 + 2 * tig;
    #pragma unroll
        for (int nt = 0; nt < CG / 8; ++nt)
    #pragma unroll
            for (int x = 0; x < 2; ++x) {{
                const long long at = (r0 + 8 * x) * DV + 8 * nt;
                *reinterpret_cast<unsigned*>(sb_out + at) = pack_bf16(s[nt][2 * x], s[nt][2 * x + 1]);
                if (slow) *reinterpret_cast<float2*>(s_out + at) = float2{{s[nt][2 * x], s[nt][2 * x + 1]}};
            }}
        float acc[CG / 8][4];
    #pragma unroll
        for (int nt = 0; nt < CG / 8; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
        if (slow) update_state<true>(s, acc, kh, vs, L, d0, d1);
        else update_state<false>(s, acc, kh, vs, L, d0, d1);
    }}
    cp_async_wait_all();
    float* s_fin = state + bj * (DK * DV) + c0 + 2 * tig;
    #pragma unroll
    for (int nt = 0; nt < CG / 8; ++nt)
    #pragma unroll
        for (int x = 0; x < 2; ++x)
            *reinterpret_cast<float2*>(s_fin + (r0 + 8 * x) * DV + 8 * nt) = float2{{s[nt][2 * x], s[nt][2 * x + 1]}};
}}
"#,
        mma = MMA_PRELUDE,
        cp = CP_ASYNC,
        sig = "const bf16* __restrict__ kmap, const bf16* __restrict__ khat, const bf16* __restrict__ v,
        const float* __restrict__ dec, const int* __restrict__ flags, float* __restrict__ state,
        bf16* __restrict__ states_bf, float* __restrict__ states, int seq",
        bpad = BPAD,
        nst = PASS_STAGES,
        form = CHUNK_FORM,
    );
    KernelSrc {
        name,
        summary: format!(
            "Liger prefill step 2/3 (state pass), chunk {c}, bf16 tensor cores (mma.sync): the chunks in order, the state ({d} × {d} per KV head) in registers, {cg} columns a block; the state entering each chunk out, the final state written back"
        ),
        body,
        block: [nt as u32, 1, 1],
        smem: pass_smem_bytes(c, d) as u32,
        grid: format!(
            "({}, {kv}, batch): one block per ({cg} state columns, KV head, row)",
            d / cg
        ),
        params: vec![
            format!("kmap [batch, {kv}, ceil(seq/{c}), {c}, {d}] bf16 (the key pass's k̃ e^(−b))"),
            format!(
                "khat [batch, {kv}, ceil(seq/{c}), 2, {c}, {d}] bf16 (the key pass's halves, slow chunks)"
            ),
            format!("v [tokens, {}] bf16", kv * d),
            format!("dec [batch, {kv}, ceil(seq/{c}), {d}] f32 (e^(b_L) per chunk)"),
            format!("slow [batch, {kv}, ceil(seq/{c})] i32 (the key pass's flags)"),
            format!("state [batch, {kv}, {d}, {d}] f32 (in/out: initial and final state)"),
            format!(
                "states_bf [batch, {kv}, ceil(seq/{c}), {d}, {d}] bf16 (out: the state entering each chunk)"
            ),
            format!(
                "states [batch, {kv}, ceil(seq/{c}), {d}, {d}] f32 (out: the same, only for the slow chunks, the sub-chunk kernel's)"
            ),
            "seq".into(),
        ],
    }
}

/// Steps 1 and 2 of the prefill recurrence as the key pass and the state pass, where the
/// tensor-core kernels serve `rec` at `chunk`; `None` where the scalar kernels
/// ([`super::gla_chunk_states`], [`super::gla_state_scan`]) do.
pub fn key_and_state_pass(
    spec: &LigerSpec,
    rec: Recurrence,
    chunk: usize,
    normalizer: f64,
) -> Option<[KernelSrc; 2]> {
    super::chunk_tc::eligible(spec, rec, chunk)
        .then(|| [chunk_prep(spec, chunk, normalizer), state_pass(spec, chunk)])
}
