//! Steps 1 and 2 of the chunk-parallel prefill recurrence for the tensor-core variants, as
//! a key pass and one sequential state pass (instead of per-chunk `ΔS` in f32 scratch and a
//! scan that reads and writes it again):
//!
//! 1. [`chunk_prep`]: one block per (chunk, KV head, row) runs the chunk prologue (gate,
//!    key map, in-chunk cumsum `b`) and writes the chunk's keys scaled to its end,
//!    `k̃_s ⊙ e^{b_L − b_s} ≤ 1`, as high and low bf16 halves (exact to ~2⁻¹⁷), the chunk's
//!    decay `e^{b_L}`, and what step 3 (`chunk_mma.rs`) takes instead of redoing the
//!    prologue: `k̃ ⊙ e^{−b}` (bf16) and `e^{b}` (f32);
//! 2. [`state_pass`]: one block per (`CG` state columns, KV head, row) walks the chunks in
//!    order with its slice of the state in registers (`mma` C fragments, f32): it writes the
//!    state entering each chunk to the scratch that step 3 reads, forms
//!    `ΔS = (k̃ e^{b_L − b})ᵀ V` on bf16 tensor cores from tiles that `cp.async` brought in
//!    while the previous chunk was computed, and updates `S ← e^{b_L} S + ΔS`. The final
//!    state goes back to the stored state.
//!
//! The arithmetic is the two-kernel path's, term for term: the same bf16 halves, the same
//! `mma` order per accumulator, then `dec · S + ΔS` per element. What goes is the f32
//! `ΔS` written and read back, and a launch.

use ligerc_ir::LigerSpec;

use super::super::{CP_ASYNC, KernelSrc, float_lit};
use super::chunk::{CHUNK_FORM, Tiles, chunk_consts, chunk_prologue, rec_what};
use super::chunk_tc::{LOADER, PAD, fast_range};
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

/// Shared memory of [`state_pass`] in bytes: two stages of the key halves and the value
/// slice, bf16.
fn pass_smem_bytes(c: usize, d: usize) -> usize {
    2 * (2 * c * (d + BPAD) + c * (pass_columns(d) + BPAD)) * 2
}

/// Blocks along the grid's x axis of [`state_pass`]: one per `CG` state columns.
pub fn state_pass_slices(spec: &LigerSpec) -> usize {
    spec.head_dim / pass_columns(spec.head_dim)
}

/// The key pass (see the module docs): the chunk prologue, then the keys scaled to the
/// chunk's end as bf16 halves `[batch, KV, ⌈seq/C⌉, 2, C, D]` and the decay `e^{b_L}`.
pub fn chunk_prep(spec: &LigerSpec, chunk: usize, normalizer: f64) -> KernelSrc {
    let (_, kv, _, d) = dims(spec);
    let variant = spec.variant;
    let c = chunk;
    let name = format!("liger_{}_chunk_prep_kv{kv}_d{d}_c{c}", vname(variant));
    let body = format!(
        r#"{consts}{loader}
{form}
extern "C" __global__ void {name}(const bf16* __restrict__ k, bf16* __restrict__ khat,
        bf16* __restrict__ kmap, float* __restrict__ ebuf, float* __restrict__ dec, int seq) {{
    extern __shared__ float smem[];
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    [[maybe_unused]] const int warp = tid >> 5, lane = tid & 31;
{prologue}    const float* bl_row = bc + (L - 1) * KS;  // b_L per channel
    for (int i = tid; i < DK; i += NT) dec[bl * DK + i] = __expf(bl_row[i]);
    // k~_s e^(b_L - b_s) <= 1 (rows past L are zero), as high and low bf16 halves: the
    // state contributions accumulate over the whole sequence. 16-byte stores.
    // For step 3: k~_s e^(-b_s) <= e^FAST as bf16 and e^(b_t) as f32 (its one-product scores and
    // state term). 16-byte stores throughout.
    bf16* hi = khat + bl * (2 * C * DK);
    bf16* lo = hi + C * DK;
    bf16* km = kmap + bl * (C * DK);
    float* eb = ebuf + bl * (C * DK);
    for (int e = tid; e < C * DK / 8; e += NT) {{
        const int t = e / (DK / 8), i = 8 * (e % (DK / 8));
        unsigned h[4], l[4], m[4];
        float x[8];
    #pragma unroll
        for (int u = 0; u < 8; ++u) {{
            const float kv = kf[t * KS + i + u], lb = bc[t * KS + i + u];
            const float y = kv * __expf(bl_row[i + u] - lb);
            const bf16 hy = __float2bfloat16(y);
            const unsigned hs = __bfloat16_as_ushort(hy), ls = __bfloat16_as_ushort(__float2bfloat16(y - __bfloat162float(hy)));
            const unsigned ms = __bfloat16_as_ushort(__float2bfloat16(kv * __expf(-lb)));
            if (u % 2 == 0) {{
                h[u / 2] = hs;
                l[u / 2] = ls;
                m[u / 2] = ms;
            }} else {{
                h[u / 2] |= hs << 16;
                l[u / 2] |= ls << 16;
                m[u / 2] |= ms << 16;
            }}
            x[u] = __expf(lb);
        }}
        *reinterpret_cast<uint4*>(hi + t * DK + i) = uint4{{h[0], h[1], h[2], h[3]}};
        *reinterpret_cast<uint4*>(lo + t * DK + i) = uint4{{l[0], l[1], l[2], l[3]}};
        *reinterpret_cast<uint4*>(km + t * DK + i) = uint4{{m[0], m[1], m[2], m[3]}};
        *reinterpret_cast<float4*>(eb + t * DK + i) = float4{{x[0], x[1], x[2], x[3]}};
        *reinterpret_cast<float4*>(eb + t * DK + i + 4) = float4{{x[4], x[5], x[6], x[7]}};
    }}
}}
"#,
        consts = chunk_consts(spec, d, c, normalizer, PAD, PREP_THREADS),
        loader = LOADER,
        form = CHUNK_FORM,
        prologue = chunk_prologue(variant, d, d, Tiles::KeysOnly),
    );
    KernelSrc {
        name,
        summary: format!(
            "Liger {}, prefill step 1/3 (key pass), chunk {c}: the keys scaled to the chunk's end k̃_s e^(b_L−b_s) as bf16 high/low halves and the decay e^(b_L) per chunk",
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
            format!(
                "khat [batch, {kv}, ceil(seq/{c}), 2, {c}, {d}] bf16 (out: k̃ e^(b_L−b), high then low halves)"
            ),
            format!("dec [batch, {kv}, ceil(seq/{c}), {d}] f32 (out: e^(b_L) per chunk)"),
            "seq".into(),
        ],
    }
}

/// The state pass (see the module docs): per chunk in order, the state entering it out to
/// `states`, then `S ← e^{b_L} S + (k̃ e^{b_L − b})ᵀ V` for the block's `CG` columns.
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
constexpr int STAGE = 2 * C * BS + C * VS;  // bf16 elements of one stage
constexpr int KP = 2 * C * DK / 8;  // 16-byte pieces of a chunk's key halves
constexpr int VP = C * CG / 8;      // ... of its value slice
constexpr float FAST_DEC = {fast_dec};  // e^(-FAST): slower chunks are the sub-chunk kernel's

{form}
// Chunk n's key halves and value slice into stage `st` (cp.async; value rows past seq zero).
__device__ __forceinline__ void fetch_chunk(bf16* st, const bf16* khat, const bf16* v, long long slot,
                                            long long row0, int L, int j, int c0) {{
    const bf16* src = khat + slot * (2 * C * DK);
    for (int e = threadIdx.x; e < KP; e += NT) {{
        const int r = e / (DK / 8), p = e % (DK / 8);  // r: half * C + row
        cp_async16(st + r * BS + 8 * p, src + r * DK + 8 * p, true);
    }}
    bf16* vs = st + 2 * C * BS;
    for (int e = threadIdx.x; e < VP; e += NT) {{
        const int t = e / (CG / 8), p = e % (CG / 8);
        const bool in = t < L;
        cp_async16(vs + t * VS + 8 * p, v + (in ? (row0 + t) * (HKV * DV) + j * DV + c0 + 8 * p : 0), in);
    }}
}}

extern "C" __global__ void __launch_bounds__(NT) {name}({sig});

extern "C" __global__ void {name}({sig}) {{
    extern __shared__ float smem[];
    bf16* stages = reinterpret_cast<bf16*>(smem);  // [2][STAGE]
    const int j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    const int warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    const int c0 = blockIdx.x * CG;  // this block's state columns
    const int nch = (seq + C - 1) / C;
    const long long bj = (long long)b * HKV + j;
    // Fragment layouts (m16n8k16): C holds rows gid, gid + 8 at columns 2 tig (+1).
    // ldmatrix lane addresses: the keys as A = khat^T (ldsm_x4_t of [s][i]), the values as B.
    const int arow = (lane & 7) + 8 * (lane >> 4), acol = 8 * ((lane >> 3) & 1);
    const int lrow = (lane & 7) + 8 * ((lane >> 3) & 1), lcol = 8 * (lane >> 4);
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
    // Whether chunk `slot` is the sub-chunk kernel's (some channel decays faster than
    // e^-FAST; its test, negated): block-uniform, with a barrier.
    const auto slow_chunk = [&](bool valid, long long slot) {{
        return __syncthreads_or(valid && tid < DK && !(dec[slot * DK + tid] >= FAST_DEC));
    }};
    if (nch > 0) fetch_chunk(stages, khat, v, bj * nch, (long long)b * seq, min(C, seq), j, c0);
    cp_async_wait_all();
    int slow = slow_chunk(nch > 0, bj * nch);
    for (int n = 0; n < nch; ++n) {{
        const long long slot = bj * nch + n;
        const int L = min(C, seq - n * C);
        const bf16* kh = stages + (n & 1) * STAGE;  // this chunk's tiles
        const bf16* kl = kh + C * BS;
        const bf16* vs = kh + 2 * C * BS;
        if (n + 1 < nch)  // the next chunk's tiles come in while this one is computed
            fetch_chunk(stages + ((n + 1) & 1) * STAGE, khat, v, slot + 1, (long long)b * seq + (long long)(n + 1) * C,
                        min(C, seq - (n + 1) * C), j, c0);
        const float d0 = dec[slot * DK + r0], d1 = dec[slot * DK + r0 + 8];
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
        // dS = khat^T v: the high halves, then the low halves, per key tile (rows past L are zero)
        float acc[CG / 8][4];
    #pragma unroll
        for (int nt = 0; nt < CG / 8; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
        for (int kt = 0; 16 * kt < L; ++kt) {{
            unsigned a[4], al[4];
            ldsm_x4_t(a, kh + (16 * kt + arow) * BS + 16 * warp + acol);
            ldsm_x4_t(al, kl + (16 * kt + arow) * BS + 16 * warp + acol);
    #pragma unroll
            for (int np = 0; np < CG / 16; ++np) {{
                unsigned r[4];
                ldsm_x4_t(r, vs + (16 * kt + lrow) * VS + 16 * np + lcol);
                mma_bf16(acc[2 * np], a, r[0], r[1]);
                mma_bf16(acc[2 * np + 1], a, r[2], r[3]);
                mma_bf16(acc[2 * np], al, r[0], r[1]);
                mma_bf16(acc[2 * np + 1], al, r[2], r[3]);
            }}
        }}
    #pragma unroll
        for (int nt = 0; nt < CG / 8; ++nt) {{
            s[nt][0] = d0 * s[nt][0] + acc[nt][0];
            s[nt][1] = d0 * s[nt][1] + acc[nt][1];
            s[nt][2] = d1 * s[nt][2] + acc[nt][2];
            s[nt][3] = d1 * s[nt][3] + acc[nt][3];
        }}
        cp_async_wait_all();
        // the next chunk's tiles have landed, this chunk's are consumed (a barrier)
        slow = slow_chunk(n + 1 < nch, slot + 1);
    }}
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
        sig = "const bf16* __restrict__ khat, const bf16* __restrict__ v, const float* __restrict__ dec,
        float* __restrict__ state, bf16* __restrict__ states_bf, float* __restrict__ states, int seq",
        fast_dec = float_lit((-fast_range()).exp()),
        bpad = BPAD,
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
            format!("khat [batch, {kv}, ceil(seq/{c}), 2, {c}, {d}] bf16 (the key pass's halves)"),
            format!("v [tokens, {}] bf16", kv * d),
            format!("dec [batch, {kv}, ceil(seq/{c}), {d}] f32 (e^(b_L) per chunk)"),
            format!("state [batch, {kv}, {d}, {d}] f32 (in/out: initial and final state)"),
            format!(
                "states_bf [batch, {kv}, ceil(seq/{c}), {d}, {d}] bf16 (out: the state entering each chunk)"
            ),
            format!(
                "states [batch, {kv}, ceil(seq/{c}), {d}, {d}] f32 (out: the same, only for the chunks that decay faster than e^-FAST, the sub-chunk kernel's)"
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
