//! LigerAttention kernels (LIGER.md §2.4–§2.7; the CPU reference is
//! `runtime/src/ops/liger/`, whose algorithms these mirror).
//!
//! Prefill of one layer runs, in stream order:
//!
//! 1. [`window_prefill`] — the sliding-window softmax branch over the rotated
//!    q, k (the IR's `Rope` nodes ran before), keys older than this call read
//!    from the ring; one block per (tile of tokens, KV head, row) stages the
//!    tile's keys and values in shared memory for all its query heads; writes
//!    `mix_window · y` (f32 scratch, or the final bf16 output for `swa-only`);
//! 2. GSA only: [`gsa_slots_prefill`] — the chunked slot pass, writing the
//!    slot logits `q·Hk` (f32 scratch) and updating `Hk`;
//! 3. the chunked gated recurrence, chunk-parallel, gate and feature maps computed
//!    from the raw `q`/`k` as chunks are loaded: [`gla_chunk_states`] (one block
//!    per (chunk, KV head, row): the chunk's own state contribution and decay into
//!    scratch), [`gla_state_scan`] (one thread per state element walks the chunks
//!    from the stored state `S` per KV head: the state entering each chunk, the
//!    final state written back), [`gla_prefill`] (one block per (chunk, query
//!    head, row): adds `mix_linear · o` to the window part and writes the bf16
//!    output). For GSA it is the value pass (queries = softmax of the slot
//!    logits, keys `s = 1 − α`, state `Hv`);
//! 4. [`ring_store`] — the last `window + 1` rotated keys and values into the
//!    ring the decode step reads.
//!
//! A decode step is one kernel: [`decode_keyed`] (GLA, HGRN2, retention,
//! linear, swa-only) or [`decode_gsa`].

use ligerc_ir::{LigerSpec, LigerVariant};

use super::basic::gate_expr;
use super::{KernelSrc, float_lit, value_tile};

/// Threads per block of the chunked kernels.
const CHUNK_THREADS: usize = 256;

fn vname(v: LigerVariant) -> String {
    v.name().replace('-', "_")
}

/// What the window kernel produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowOut {
    /// `mix_window · y` as f32 scratch, finished by the recurrent kernel.
    Partial,
    /// The layer's bf16 output (no recurrent branch).
    Final,
}

/// Sizes shared by the Liger kernels of one layer.
fn dims(spec: &LigerSpec) -> (usize, usize, usize, usize) {
    (
        spec.heads,
        spec.kv_heads,
        spec.heads / spec.kv_heads.max(1),
        spec.head_dim,
    )
}

/// Most warps per block of the window kernel.
const WINDOW_WARPS: usize = 16;
/// Key rows per shared-memory stage of the window kernel (one per lane while scoring).
const WINDOW_KEYS: usize = 32;
/// Most floats per lane a window warp keeps per query-head group, for its queries and
/// again for its accumulators (`heads per warp · ⌈D/32⌉`).
const WINDOW_LANE_FLOATS: usize = 16;

/// The tiling of [`window_prefill`]: `(tq, gw)`, tokens per block and query heads per
/// warp. A block serves `tq` consecutive tokens × the `G` query heads of one KV head,
/// one warp per (token, group of `gw` heads), `tq · G/gw ≤ 16` warps (512 threads: up to
/// 128 registers a thread); `gw` is the largest divisor of `G` whose queries and
/// accumulators fit the per-lane budget, or more heads a warp where `G/gw` would pass 16.
pub fn window_tile(spec: &LigerSpec) -> (usize, usize) {
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

/// Dynamic shared memory of [`window_prefill`] in bytes: one stage of keys and values, f32.
pub fn window_smem(spec: &LigerSpec) -> usize {
    2 * WINDOW_KEYS * spec.head_dim * 4
}

/// The window branch of a prefill: one block per (tile of `tq` tokens, KV head, row)
/// ([`window_tile`]) serving all `G` query heads of the KV head. The keys and values the
/// tile sees — positions `[pos0 + t0 − W, pos0 + t0 + tq)`, ring slots for those before
/// `pos0` — go through shared memory in stages of 32 rows, loaded coalesced and converted
/// to f32 once per block; each warp keeps its token's queries and an online softmax per
/// head in registers and reads keys and values only from shared memory.
pub fn window_prefill(spec: &LigerSpec, out: WindowOut) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let w = spec.window;
    let (tq, gw) = window_tile(spec);
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

// Key/value row of absolute position `p` for KV head j of row b: this call's rotated keys
// (positions pos0 ..) or, for earlier positions, the ring slot p % NRING.
__device__ __forceinline__ const bf16* kv_row(const bf16* cur, const bf16* ring, int b, int j, int seq, int pos0, int p) {{
    if (p >= pos0) return cur + ((long long)b * seq + (p - pos0)) * (HKV * D) + j * D;
    return ring + ((long long)(b * HKV + j) * NRING + p % NRING) * D;
}}

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
        scale = float_lit(1.0 / (d as f64).sqrt()),
        mix = float_lit(spec.mix_window),
    );
    let warps = tq * (g.max(1) / gw);
    KernelSrc {
        name,
        summary: format!(
            "Liger window branch, prefill: causal softmax over the last {} keys (GQA {h}/{kv}, D {d}, scale 1/√D), × mix_window {}; keys and values staged in shared memory per tile of {tq} tokens",
            w + 1,
            spec.mix_window
        ),
        body,
        block: [(32 * warps) as u32, 1, 1],
        smem: smem as u32,
        grid: format!(
            "(ceil(seq/{tq}), {kv}, batch): one block per ({tq} tokens, KV head, row), one warp per (token, {gw} of its {g} query heads)"
        ),
        params: vec![
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
        ],
    }
}

/// The recurrence the [`gla_prefill`] kernels / [`decode_keyed`] run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recurrence {
    /// GLA, HGRN2, retention, linear: queries/keys are raw bf16 `[tokens, heads·D]`.
    Keyed,
    /// GSA's value pass: queries are f32 slot logits `[tokens, heads·M]`, keys `1 − α` over `M` slots.
    GsaValues,
}

/// Shared memory of [`gla_chunk_states`] in floats for chunk `c`: raw keys, mapped keys,
/// gate cumsum, values, per-row scalars.
fn states_smem_floats(c: usize, d: usize, dk: usize) -> usize {
    c * d + 2 * c * (dk + 1) + c * d + c
}

/// Shared memory of [`gla_prefill`] in floats for chunk `c`: the state-kernel tiles (the
/// raw-key tile is reused for the mapped queries), the entering state, the scores.
fn gla_smem_floats(c: usize, d: usize, dk: usize) -> usize {
    states_smem_floats(c, d, dk) + dk * d + c * c
}

/// Key channels (rows of the state) of a recurrence.
fn key_channels(spec: &LigerSpec, rec: Recurrence) -> usize {
    match rec {
        Recurrence::Keyed => spec.head_dim,
        Recurrence::GsaValues => spec.slots,
    }
}

/// Chunk length and shared memory bytes of the prefill recurrence ([`gla_prefill`], the
/// larger of its two chunk kernels): the largest of `chunk`, 32, 16 that fits in `limit`
/// bytes. [`gla_chunk_states`], [`gla_state_scan`] and [`gla_prefill`] must share it.
pub fn gla_chunk(spec: &LigerSpec, rec: Recurrence, chunk: usize, limit: usize) -> (usize, usize) {
    let d = spec.head_dim;
    let dk = key_channels(spec, rec);
    let mut c = chunk.clamp(1, CHUNK_THREADS);
    while c > 16 && gla_smem_floats(c, d, dk) * 4 > limit {
        c /= 2;
    }
    (c, gla_smem_floats(c, d, dk) * 4)
}

/// The CUDA constants and chunk prologue shared by [`gla_chunk_states`] and
/// [`gla_prefill`]: loads chunk `n`'s raw keys and values of KV head `j`, row `b`, computes
/// the gate and key map from the raw keys and the in-chunk inclusive cumsum of the gates.
/// Expects `smem`, `n`, `j`, `b`, `tid`, `warp`, `lane`, `seq` in scope; declares `kr`,
/// `kf`, `bc`, `vs`, `rowg`, `nch`, `L`, `row0`, `bl` (the slot of chunk `n`). Ends with a barrier.
fn chunk_prologue(variant: LigerVariant, d: usize, dk: usize) -> String {
    let mean = if variant == LigerVariant::Retention {
        r#"
    // retention: one gate per head from the mean of its key channels
    for (int t = warp; t < C; t += NT / 32) {
        float s = 0.0f;
        for (int i = lane; i < D; i += 32) s += kr[t * D + i];
        s = warp_sum(s);
        if (lane == 0) rowg[t] = s / (float)D;
    }
    __syncthreads();"#
    } else {
        ""
    };
    let gate = gate_expr(variant, d, dk, "i", "(kr + t * D)", "rowg[t]");
    let key_map = match variant {
        LigerVariant::Gla | LigerVariant::Retention | LigerVariant::Linear => {
            "    // k~ = softmax over the head dim (in place in the raw tile: the gate is done with it)\n    \
             softmax_rows(kr, L, D);\n    \
             __syncthreads();\n    \
             for (int e = tid; e < C * DK; e += NT) kf[(e / DK) * KS + e % DK] = kr[e];"
        }
        _ => {
            "    // the key is 1 - alpha = -expm1(gamma)\n    \
             for (int e = tid; e < C * DK; e += NT) kf[(e / DK) * KS + e % DK] = -expm1f(bc[(e / DK) * KS + e % DK]);"
        }
    };
    format!(
        r#"    float* kr = smem;              // [C][D]  raw keys
    float* kf = kr + C * D;        // [C][KS] mapped keys
    float* bc = kf + C * KS;       // [C][KS] log-gates, then their cumsum
    float* vs = bc + C * KS;       // [C][DV] values
    float* rowg = vs + C * DV;     // [C] per-row scalars
    const int nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + (long long)n * C;
    const long long bl = (long long)(b * HKV + j) * nch + n;  // scratch slot of chunk n
    for (int e = tid; e < C * D; e += NT) {{
        const int t = e / D;
        kr[e] = t < L ? ld(k, (row0 + t) * (HKV * D) + j * D + e % D) : 0.0f;
    }}
    for (int e = tid; e < C * DV; e += NT) {{
        const int t = e / DV;
        vs[e] = t < L ? ld(v, (row0 + t) * (HKV * DV) + j * DV + e % DV) : 0.0f;
    }}
    if (tid < C) rowg[tid] = 0.0f;  // NT >= C
    __syncthreads();{mean}
    for (int e = tid; e < C * DK; e += NT) {{
        const int t = e / DK;
        [[maybe_unused]] const int i = e % DK;
        bc[t * KS + i] = t < L ? {gate} : 0.0f;
    }}
    __syncthreads();
{key_map}
    __syncthreads();
    cumsum_rows(bc, L, DK, KS);
    __syncthreads();
"#
    )
}

/// Constants of the chunk kernels.
fn chunk_consts(spec: &LigerSpec, dk: usize, c: usize, normalizer: f64) -> String {
    let (_, kv, _, d) = dims(spec);
    format!(
        r#"constexpr int HKV = {kv};
constexpr int D = {d};        // head dim of q, k, v
constexpr int DK = {dk};       // key channels = rows of the state
constexpr int KS = DK + 1;     // row stride of the key and gate tiles (padded: walks over their rows hit distinct banks)
constexpr int DV = {d};       // value channels = columns of the state
constexpr int C = {c};        // chunk length
constexpr int NT = {nt};
[[maybe_unused]] constexpr float NORM = {norm};  // gate normalizer
"#,
        nt = CHUNK_THREADS,
        norm = float_lit(normalizer),
    )
}

const CHUNK_FORM: &str = r#"// Chunk-parallel form (chunk n = [nC, nC+L), b = in-chunk inclusive cumsum of the log-gates,
// S_n = the state entering chunk n, S_0 = the stored state):
//   dS_n    = sum_s (k~_s * exp(b_L - b_s))^T v_s,   S_(n+1) = diag(exp(b_L)) S_n + dS_n
//   o_t     = (q~_t * exp(b_t)) . S_n  +  sum_(s<=t) (sum_i q~_ti k~_si exp(b_ti - b_si)) v_s
// 1. chunk states: dS_n, exp(b_L) per chunk;  2. scan: S_n per chunk, final state back;
// 3. prefill: outputs per (chunk, query head). Every exponent is <= 0; nothing divides by a decay.
// Scratch slot of chunk n of KV head j, row b: (b * HKV + j) * nch + n, nch = ceil(seq / C).
"#;

fn rec_what(variant: LigerVariant, rec: Recurrence, dk: usize) -> String {
    match rec {
        Recurrence::Keyed => format!("{variant} recurrence"),
        Recurrence::GsaValues => format!("GSA value pass over {dk} slots"),
    }
}

/// Step 1 of the chunk-parallel prefill recurrence: one block per (chunk, KV head, row)
/// writes the chunk's own state contribution `ΔS_n = Σ_s (k̃_s ⊙ e^{b_L−b_s})ᵀ v_s` and
/// its decay `e^{b_L}` to scratch.
pub fn gla_chunk_states(
    spec: &LigerSpec,
    rec: Recurrence,
    chunk: usize,
    normalizer: f64,
) -> KernelSrc {
    let (_, kv, _, d) = dims(spec);
    let variant = spec.variant;
    let dk = key_channels(spec, rec);
    let c = chunk;
    let name = format!(
        "liger_{}_chunk_states_kv{kv}_d{d}_k{dk}_c{c}",
        vname(variant)
    );
    let body = format!(
        r#"{consts}
{form}
extern "C" __global__ void {name}(const bf16* __restrict__ k, const bf16* __restrict__ v,
        float* __restrict__ states, float* __restrict__ dec, int seq) {{
    extern __shared__ float smem[];
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    [[maybe_unused]] const int warp = tid >> 5, lane = tid & 31;
{prologue}    // k~_s * exp(b_L - b_s), in place
    for (int e = tid; e < L * DK; e += NT) {{
        const int t = e / DK, i = e % DK;
        kf[t * KS + i] *= expf(bc[(L - 1) * KS + i] - bc[t * KS + i]);
    }}
    __syncthreads();
    float* dst = states + bl * (DK * DV);
    for (int e = tid; e < DK * DV; e += NT) {{
        const int i = e / DV, c = e % DV;
        float acc = 0.0f;
        for (int s = 0; s < L; ++s) acc += kf[s * KS + i] * vs[s * DV + c];
        dst[e] = acc;
    }}
    for (int i = tid; i < DK; i += NT) dec[bl * DK + i] = expf(bc[(L - 1) * KS + i]);
}}
"#,
        consts = chunk_consts(spec, dk, c, normalizer),
        form = CHUNK_FORM,
        prologue = chunk_prologue(variant, d, dk),
    );
    KernelSrc {
        name,
        summary: format!(
            "Liger {}, prefill step 1/3, chunk {c}: each chunk's state contribution ΔS = Σ_s (k̃_s e^(b_L−b_s))ᵀ v_s and decay e^(b_L) to scratch",
            rec_what(variant, rec, dk)
        ),
        body,
        block: [CHUNK_THREADS as u32, 1, 1],
        smem: (states_smem_floats(c, d, dk) * 4) as u32,
        grid: format!("(ceil(seq/{c}), {kv}, batch): one block per (chunk, KV head, row)"),
        params: vec![
            format!(
                "k [tokens, {}] bf16 (raw; gate and key map computed here)",
                kv * d
            ),
            format!("v [tokens, {}] bf16", kv * d),
            format!("states [batch, {kv}, ceil(seq/{c}), {dk}, {d}] f32 (out: ΔS per chunk)"),
            format!("dec [batch, {kv}, ceil(seq/{c}), {dk}] f32 (out: e^(b_L) per chunk)"),
            "seq".into(),
        ],
    }
}

/// Step 2 of the chunk-parallel prefill recurrence: one thread per (row, KV head, state
/// element) walks the chunks from the stored state, replacing each chunk's `ΔS_n` by the
/// state entering it, and writes the state leaving the last chunk back.
pub fn gla_state_scan(spec: &LigerSpec, rec: Recurrence, chunk: usize) -> KernelSrc {
    let (kv, d) = (spec.kv_heads, spec.head_dim);
    let dk = key_channels(spec, rec);
    let c = chunk;
    let name = format!("liger_state_scan_kv{kv}_k{dk}_d{d}_c{c}");
    let body = format!(
        r#"constexpr int HKV = {kv};
constexpr int DK = {dk};       // rows of the state
constexpr int DV = {d};       // columns of the state
constexpr int C = {c};        // chunk length
constexpr int NT = {nt};

// S <- state; per chunk n in order: states[n] <- S, S <- exp(b_L) S + dS_n; state <- S.
// The only sequential part of the prefill recurrence: nch = ceil(seq / C) steps, coalesced.
extern "C" __global__ void {name}(float* __restrict__ state, float* __restrict__ states,
        const float* __restrict__ dec, int batch, int seq) {{
    const long long id = (long long)blockIdx.x * NT + threadIdx.x;
    if (id >= (long long)batch * HKV * DK * DV) return;
    const long long bj = id / (DK * DV);
    const int e = (int)(id % (DK * DV)), i = e / DV, nch = (seq + C - 1) / C;
    float S = state[id];
    for (int n = 0; n < nch; ++n) {{
        const long long at = bj * nch + n;
        const float add = states[at * (DK * DV) + e];
        states[at * (DK * DV) + e] = S;
        S = dec[at * DK + i] * S + add;
    }}
    state[id] = S;
}}
"#,
        nt = CHUNK_THREADS,
    );
    KernelSrc {
        name,
        summary: format!(
            "Liger prefill step 2/3, chunk {c}: scan over chunks from the stored state ({dk} × {d} per KV head): the state entering each chunk, final state written back"
        ),
        body,
        block: [CHUNK_THREADS as u32, 1, 1],
        smem: 0,
        grid: format!(
            "(ceil({}*batch/{CHUNK_THREADS}), 1, 1): one thread per (row, KV head, state element)",
            kv * dk * d
        ),
        params: vec![
            format!("state [batch, {kv}, {dk}, {d}] f32 (in/out: initial and final state)"),
            format!(
                "states [batch, {kv}, ceil(seq/{c}), {dk}, {d}] f32 (in/out: ΔS per chunk → state entering it)"
            ),
            format!("dec [batch, {kv}, ceil(seq/{c}), {dk}] f32"),
            "batch".into(),
            "seq".into(),
        ],
    }
}

/// Step 3 of the chunk-parallel prefill recurrence: one block per (chunk, query head,
/// row) computes the chunk's outputs from the state entering it (scratch of
/// [`gla_state_scan`]) and its in-chunk scores; adds `mix_linear · o` to the window part
/// and writes the bf16 output.
pub fn gla_prefill(
    spec: &LigerSpec,
    rec: Recurrence,
    chunk: usize,
    normalizer: f64,
    window: bool,
) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let variant = spec.variant;
    let dk = key_channels(spec, rec);
    let c = chunk;
    let smem = gla_smem_floats(c, d, dk) * 4;
    let vn = vname(variant);
    let name = format!(
        "liger_{}_prefill_h{h}_kv{kv}_d{d}_k{dk}_c{c}{}",
        vn,
        if window { "" } else { "_nowin" }
    );
    let (q_type, q_stride, q_doc) = match rec {
        Recurrence::Keyed => (
            "bf16",
            "H * D",
            format!("q [tokens, {}] bf16 (raw, un-rotated)", h * d),
        ),
        Recurrence::GsaValues => (
            "float",
            "H * DK",
            format!("logits [tokens, {}] f32 (slot logits q·Hk)", h * dk),
        ),
    };
    let mix_in = if window { "window[at] + " } else { "" };
    let window_param = if window {
        "const float* __restrict__ window, "
    } else {
        ""
    };
    let body = format!(
        r#"constexpr int H = {h};
constexpr int G = {g};
{consts}constexpr float MIX = {mix};   // mix_linear

{form}
extern "C" __global__ void {name}(const {q_type}* __restrict__ q, const bf16* __restrict__ k,
        const bf16* __restrict__ v, const float* __restrict__ states, {window_param}bf16* __restrict__ out, int seq) {{
    extern __shared__ float smem[];
    const int n = blockIdx.x, h = blockIdx.y, b = blockIdx.z, j = h / G, tid = threadIdx.x;
    [[maybe_unused]] const int warp = tid >> 5, lane = tid & 31;
{prologue}    float* S = rowg + C;           // [DK][DV] the state entering this chunk
    float* A = S + DK * DV;        // [C][C] intra-chunk scores
    float* qf = kr;                // [C][DK] mapped queries (the raw keys are done with)
    const float* src = states + bl * (DK * DV);
    for (int e = tid; e < DK * DV; e += NT) S[e] = src[e];
    for (int e = tid; e < C * DK; e += NT) {{
        const int t = e / DK;
        qf[e] = t < L ? ld(q, (row0 + t) * ({q_stride}) + h * DK + e % DK) : 0.0f;
    }}
    __syncthreads();
    softmax_rows(qf, L, DK);
    __syncthreads();
    for (int e = tid; e < C * C; e += NT) {{
        const int t = e / C, s = e % C;
        float a = 0.0f;
        if (t < L && s <= t) {{
            for (int i = 0; i < DK; ++i) a += qf[t * DK + i] * kf[s * KS + i] * expf(bc[t * KS + i] - bc[s * KS + i]);
        }}
        A[e] = a;
    }}
    __syncthreads();
    for (int e = tid; e < L * DK; e += NT) qf[e] *= expf(bc[(e / DK) * KS + e % DK]);  // q~_t * exp(b_t)
    __syncthreads();
    for (int e = tid; e < L * DV; e += NT) {{
        const int t = e / DV, c = e % DV;
        float o = 0.0f;
        for (int i = 0; i < DK; ++i) o += qf[t * DK + i] * S[i * DV + c];
        for (int s = 0; s <= t; ++s) o += A[t * C + s] * vs[s * DV + c];
        const long long at = (row0 + t) * (H * DV) + h * DV + c;
        out[at] = __float2bfloat16({mix_in}MIX * o);
    }}
}}
"#,
        consts = chunk_consts(spec, dk, c, normalizer),
        mix = float_lit(spec.mix_linear),
        form = CHUNK_FORM,
        prologue = chunk_prologue(variant, d, dk),
    );
    let mut params = vec![
        q_doc,
        format!(
            "k [tokens, {}] bf16 (raw; gate and key map computed here)",
            kv * d
        ),
        format!("v [tokens, {}] bf16", kv * d),
        format!(
            "states [batch, {kv}, ceil(seq/{c}), {dk}, {d}] f32 (the state entering each chunk)"
        ),
    ];
    if window {
        params.push(format!(
            "window [tokens, {}] f32 (mix_window · window branch)",
            h * d
        ));
    }
    params.extend([format!("out [tokens, {}] bf16 (out)", h * d), "seq".into()]);
    KernelSrc {
        name,
        summary: format!(
            "Liger {}, prefill step 3/3, chunk {c}: outputs per (chunk, query head) from the state entering the chunk, output {}mix_linear {} · o",
            rec_what(variant, rec, dk),
            if window { "window part + " } else { "" },
            spec.mix_linear
        ),
        body,
        block: [CHUNK_THREADS as u32, 1, 1],
        smem: smem as u32,
        grid: format!("(ceil(seq/{c}), {h}, batch): one block per (chunk, query head, row)"),
        params,
    }
}

/// Shared memory of [`gsa_slots_prefill`] in floats.
fn slots_smem_floats(c: usize, d: usize, mt: usize) -> usize {
    2 * c * d + 2 * c * mt + d * mt + c * c
}

/// Chunk and shared memory bytes of [`gsa_slots_prefill`].
pub fn slots_chunk(spec: &LigerSpec, chunk: usize, limit: usize) -> (usize, usize) {
    let (d, mt) = (spec.head_dim, value_tile(spec.slots));
    let mut c = chunk.clamp(1, CHUNK_THREADS);
    while c > 16 && slots_smem_floats(c, d, mt) * 4 > limit {
        c /= 2;
    }
    (c, slots_smem_floats(c, d, mt) * 4)
}

/// GSA's slot pass, chunked: `logits_t = (q_t·Hk) ⊙ e^{b_t} + Σ_{s≤t} (q_t·k_s)(s_s ⊙ e^{b_t−b_s})`,
/// `Hk ← Hk·diag(e^{b_L}) + Σ_s k_sᵀ (s_s ⊙ e^{b_L−b_s})`.
pub fn gsa_slots_prefill(spec: &LigerSpec, chunk: usize, normalizer: f64) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let m = spec.slots;
    let mt = value_tile(m);
    let c = chunk;
    let smem = slots_smem_floats(c, d, mt) * 4;
    let name = format!("liger_gsa_slots_prefill_h{h}_kv{kv}_d{d}_m{m}_c{c}_mt{mt}");
    let gate = gate_expr(LigerVariant::Gsa, d, m, "slot", "(kr + t * D)", "0.0f");
    let body = format!(
        r#"constexpr int H = {h};
constexpr int HKV = {kv};
constexpr int G = {g};
constexpr int D = {d};
constexpr int M = {m};        // slots
constexpr int MT = {mt};       // slot columns per block
constexpr int C = {c};
constexpr int NT = {nt};
constexpr float NORM = {norm};

extern "C" __global__ void {name}(const bf16* __restrict__ q, const bf16* __restrict__ k,
        float* __restrict__ state_k, float* __restrict__ logits, int seq) {{
    extern __shared__ float smem[];
    float* kr = smem;            // [C][D] raw keys
    float* qr = kr + C * D;      // [C][D] raw queries of one head
    float* bc = qr + C * D;      // [C][MT] log-gates, then their cumsum
    float* sv = bc + C * MT;     // [C][MT] slot writes 1 - alpha
    float* Hk = sv + C * MT;     // [D][MT] key memory tile
    float* QK = Hk + D * MT;     // [C][C] q.k
    const int mt = blockIdx.x, j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    const int m0 = mt * MT;
    float* hk_ptr = state_k + (long long)(b * HKV + j) * D * M;
    for (int e = tid; e < D * MT; e += NT) Hk[e] = hk_ptr[(long long)(e / MT) * M + m0 + e % MT];
    for (int c0 = 0; c0 < seq; c0 += C) {{
        const int L = min(C, seq - c0);
        const long long row0 = (long long)b * seq + c0;
        __syncthreads();
        for (int e = tid; e < C * D; e += NT) {{
            const int t = e / D;
            kr[e] = t < L ? ld(k, (row0 + t) * (HKV * D) + j * D + e % D) : 0.0f;
        }}
        __syncthreads();
        for (int e = tid; e < C * MT; e += NT) {{
            const int t = e / MT, slot = m0 + e % MT;
            const float gamma = t < L ? {gate} : 0.0f;
            bc[e] = gamma;
            sv[e] = t < L ? -expm1f(gamma) : 0.0f;
        }}
        __syncthreads();
        cumsum_rows(bc, L, MT, MT);
        __syncthreads();
        for (int g = 0; g < G; ++g) {{
            const int h = j * G + g;
            for (int e = tid; e < C * D; e += NT) {{
                const int t = e / D;
                qr[e] = t < L ? ld(q, (row0 + t) * (H * D) + h * D + e % D) : 0.0f;
            }}
            __syncthreads();
            for (int e = tid; e < C * C; e += NT) {{
                const int t = e / C, s = e % C;
                float a = 0.0f;
                if (t < L && s <= t) {{
                    for (int i = 0; i < D; ++i) a += qr[t * D + i] * kr[s * D + i];
                }}
                QK[e] = a;
            }}
            __syncthreads();
            for (int e = tid; e < L * MT; e += NT) {{
                const int t = e / MT, c = e % MT;
                float inter = 0.0f;
                for (int i = 0; i < D; ++i) inter += qr[t * D + i] * Hk[i * MT + c];
                float o = inter * expf(bc[t * MT + c]);
                for (int s = 0; s <= t; ++s) o += QK[t * C + s] * sv[s * MT + c] * expf(bc[t * MT + c] - bc[s * MT + c]);
                logits[(row0 + t) * (H * M) + h * M + m0 + c] = o;
            }}
            __syncthreads();
        }}
        for (int e = tid; e < D * MT; e += NT) {{
            const int i = e / MT, c = e % MT;
            const float bl = bc[(L - 1) * MT + c];
            float acc = Hk[e] * expf(bl);
            for (int s = 0; s < L; ++s) acc += kr[s * D + i] * sv[s * MT + c] * expf(bl - bc[s * MT + c]);
            Hk[e] = acc;
        }}
    }}
    __syncthreads();
    for (int e = tid; e < D * MT; e += NT) hk_ptr[(long long)(e / MT) * M + m0 + e % MT] = Hk[e];
}}
"#,
        nt = CHUNK_THREADS,
        norm = float_lit(normalizer),
    );
    KernelSrc {
        name,
        summary: format!(
            "Liger GSA slot pass, prefill, chunk {c}: slot logits q·Hk over {m} slots, Hk carried"
        ),
        body,
        block: [CHUNK_THREADS as u32, 1, 1],
        smem: smem as u32,
        grid: format!(
            "({}, {kv}, batch): one block per (slot tile of {mt}, KV head, row)",
            m / mt
        ),
        params: vec![
            format!("q [tokens, {}] bf16 (raw)", h * d),
            format!("k [tokens, {}] bf16 (raw)", kv * d),
            format!("state_k [batch, {kv}, {d}, {m}] f32 (in/out: Hk)"),
            format!("logits [tokens, {}] f32 (out)", h * m),
            "seq".into(),
        ],
    }
}

/// Copies the rotated keys and values of the last `window + 1` tokens into the ring.
pub fn ring_store(spec: &LigerSpec) -> KernelSrc {
    let (kv, d, w) = (spec.kv_heads, spec.head_dim, spec.window);
    let name = format!("liger_ring_store_kv{kv}_d{d}_w{w}");
    let body = format!(
        r#"constexpr int HKV = {kv};
constexpr int D = {d};
constexpr int NRING = {n};

// Block x stores token seq-1-x (if any) of KV head blockIdx.y, row blockIdx.z, at slot (pos0+t) % NRING.
extern "C" __global__ void {name}(const bf16* __restrict__ k_rot, const bf16* __restrict__ v,
        bf16* __restrict__ ring_k, bf16* __restrict__ ring_v, int seq, const int* __restrict__ pos0_ptr) {{
    const int pos0 = *pos0_ptr;  // device memory: one captured graph serves every step
    const int t = seq - 1 - (int)blockIdx.x, j = blockIdx.y, b = blockIdx.z;
    if (t < 0) return;
    const long long src = ((long long)b * seq + t) * (HKV * D) + j * D;
    const long long dst = ((long long)(b * HKV + j) * NRING + (pos0 + t) % NRING) * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {{
        ring_k[dst + i] = k_rot[src + i];
        ring_v[dst + i] = v[src + i];
    }}
}}
"#,
        n = w + 1
    );
    KernelSrc {
        name,
        summary: format!(
            "Liger window ring: keep the last {} rotated keys/values per KV head",
            w + 1
        ),
        body,
        block: [d.clamp(32, 128) as u32, 1, 1],
        smem: 0,
        grid: format!("({}, {kv}, batch)", w + 1),
        params: vec![
            format!("k_rot [tokens, {}] bf16", kv * d),
            format!("v [tokens, {}] bf16", kv * d),
            format!("ring_k [batch, {kv}, {}, {d}] bf16 (out)", w + 1),
            format!("ring_v [batch, {kv}, {}, {d}] bf16 (out)", w + 1),
            "seq".into(),
            "pos0 (const int*: device memory, read once)".into(),
        ],
    }
}

const DECODE_THREADS: usize = 256;

/// The window branch of a decode step for `G` heads, `VT` output columns per lane
/// block (`VT ≤ 32`) starting at `col0`, writing `wout[g·VT + c]`; then the ring push.
/// The window branch of the keyed decode step with the window's keys and values staged in
/// shared memory by the whole block (coalesced 2-byte loads), one thread per (head, key)
/// score, one warp per head softmax, one thread per (head, column) weighted sum.
fn decode_window_staged() -> String {
    r#"    {
        // window branch: keys pos-W .. pos (ring + this step's k_rot/v) staged in shared memory
        constexpr int DP = D + 2;  // bf16 row pitch: row-per-thread reads hit distinct banks
        __shared__ bf16 wk[NRING * DP];
        __shared__ bf16 wv[NRING * DP];
        __shared__ float wp[G * NRING];
        const bf16* k_cur = k_rot + (long long)b * HKV * D + j * D;
        const bf16* v_cur = v + (long long)b * HKV * D + j * D;
        const int lo = max(0, pos - W), nk = pos - lo + 1;
        for (int e = tid; e < nk * D; e += NT) {
            const int r = e / D, i = e % D, key = lo + r;
            const long long at = (long long)(key % NRING) * D + i;
            wk[r * DP + i] = key == pos ? k_cur[i] : ring_kh_w[at];
            wv[r * DP + i] = key == pos ? v_cur[i] : ring_vh_w[at];
        }
        __syncthreads();
        for (int e = tid; e < G * nk; e += NT) {
            const int g = e / nk, r = e % nk;
            const float* qg = qrot + g * D;
            const bf16* kr_s = wk + r * DP;
            float dot = 0.0f;
            for (int i = 0; i < D; ++i) dot += qg[i] * __bfloat162float(kr_s[i]);
            wp[g * NRING + r] = dot * SCALE;
        }
        __syncthreads();
        for (int g = warp; g < G; g += NW) {
            float m = neg_inf();
            for (int r = lane; r < nk; r += 32) m = fmaxf(m, wp[g * NRING + r]);
            m = warp_max(m);
            float l = 0.0f;
            for (int r = lane; r < nk; r += 32) {
                const float e = expf(wp[g * NRING + r] - m);
                wp[g * NRING + r] = e;
                l += e;
            }
            l = warp_sum(l);
            const float inv = 1.0f / l;
            for (int r = lane; r < nk; r += 32) wp[g * NRING + r] *= inv;
        }
        __syncthreads();
        for (int e = tid; e < G * VT; e += NT) {
            const int g = e / VT, c = e % VT;
            float a = 0.0f;
            for (int r = 0; r < nk; ++r) a += wp[g * NRING + r] * __bfloat162float(wv[r * DP + col0 + c]);
            wout[g * VT + c] = a;
        }
        // push this token into slot pos % NRING (this block's columns); that slot held
        // position pos-W-1, which no query reads
        const long long slot = (long long)(pos % NRING) * D;
        for (int c = tid; c < VT; c += NT) {
            ring_kh_w[slot + col0 + c] = k_cur[col0 + c];
            ring_vh_w[slot + col0 + c] = v_cur[col0 + c];
        }
    }
"#
    .to_string()
}

fn decode_window(cols: &str, lanes_per_col: bool) -> String {
    let acc_decl = if lanes_per_col {
        "float a = 0.0f;"
    } else {
        "float a[DPL];\n            for (int r = 0; r < DPL; ++r) a[r] = 0.0f;"
    };
    let scale_acc = if lanes_per_col {
        "a *= corr;"
    } else {
        "for (int r = 0; r < DPL; ++r) a[r] *= corr;"
    };
    let accumulate = if lanes_per_col {
        "if (lane < VT) a += pk * ld(vp, col0 + lane);".to_string()
    } else {
        "for (int r = 0; r < DPL; ++r) {\n                        const int i = lane + 32 * r;\n                        if (i < D) a[r] += pk * ld(vp, i);\n                    }".to_string()
    };
    let finish = if lanes_per_col {
        "if (lane < VT) wout[g * VT + lane] = a / l;".to_string()
    } else {
        "for (int r = 0; r < DPL; ++r) {\n                const int i = lane + 32 * r;\n                if (i < D) wout[g * D + i] = a[r] / l;\n            }".to_string()
    };
    format!(
        r#"    {{
        // window branch: keys pos-W .. pos-1 from the ring, pos itself from this step's k_rot/v
        const bf16* k_cur = k_rot + (long long)b * HKV * D + j * D;
        const bf16* v_cur = v + (long long)b * HKV * D + j * D;
        const bf16* ring_kh = ring_k + (long long)(b * HKV + j) * NRING * D;
        const bf16* ring_vh = ring_v + (long long)(b * HKV + j) * NRING * D;
        const int lo = max(0, pos - W);
        for (int g = warp; g < G; g += NW) {{
            const float* qg = qrot + g * D;
            float m = neg_inf(), l = 0.0f;
            {acc_decl}
            for (int c0 = lo; c0 <= pos; c0 += 32) {{
                const int key = c0 + lane;
                const bool valid = key <= pos;
                float s = neg_inf();
                if (valid) {{
                    const bf16* kp = key == pos ? k_cur : ring_kh + (key % NRING) * D;
                    float dot = 0.0f;
                    for (int i = 0; i < D; ++i) dot += qg[i] * ld(kp, i);
                    s = dot * SCALE;
                }}
                const float m_new = fmaxf(m, warp_max(s));
                const float corr = m == m_new ? 1.0f : expf(m - m_new);
                const float e = valid ? expf(s - m_new) : 0.0f;
                l = l * corr + warp_sum(e);
                {scale_acc}
                const int nk = min(32, pos - c0 + 1);
                for (int kk = 0; kk < nk; ++kk) {{
                    const float pk = __shfl_sync(0xffffffffu, e, kk);
                    const int key_k = c0 + kk;
                    const bf16* vp = key_k == pos ? v_cur : ring_vh + (key_k % NRING) * D;
                    {accumulate}
                }}
                m = m_new;
            }}
            {finish}
        }}
        // push this token into slot pos % NRING ({cols}); that slot held position pos-W-1, which no query reads
        const long long slot = (long long)(pos % NRING) * D;
        for (int c = tid; c < {ncols}; c += NT) {{
            ring_kh_w[slot + {c_off}c] = k_cur[{c_off}c];
            ring_vh_w[slot + {c_off}c] = v_cur[{c_off}c];
        }}
    }}
"#,
        ncols = if lanes_per_col { "VT" } else { "D" },
        c_off = if lanes_per_col { "col0 + " } else { "" },
    )
}

/// One decode step of a key-gated (or swa-only) Liger layer: gate and feature
/// maps, window branch over the ring plus the token, ring push, state update in
/// place `S ← diag(α)S + k̃ᵀv`, `o = q̃S`, mix.
pub fn decode_keyed(spec: &LigerSpec, normalizer: f64) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let variant = spec.variant;
    let w = spec.window;
    let vt = value_tile(d);
    let window = spec.mix_window != 0.0 || variant == LigerVariant::SwaOnly;
    let grm = variant != LigerVariant::SwaOnly;
    let name = format!(
        "liger_{}_decode_h{h}_kv{kv}_d{d}_w{w}_vt{vt}{}",
        vname(variant),
        if window { "" } else { "_nowin" }
    );
    let gate_code = if grm {
        let mean = if variant == LigerVariant::Retention {
            "    __shared__ float scratch[32];\n    float part_sum = 0.0f;\n    for (int i = tid; i < D; i += NT) part_sum += kr[i];\n    const float mean = block_sum(part_sum, scratch) / (float)D;\n"
        } else {
            ""
        };
        let gexpr = gate_expr(variant, d, d, "i", "kr", "mean");
        let kmap = match variant {
            LigerVariant::Hgrn2 => {
                "    for (int i = tid; i < D; i += NT) kf[i] = -expm1f(gam[i]);\n"
            }
            _ => {
                "    for (int i = tid; i < D; i += NT) kf[i] = kr[i];\n    __syncthreads();\n    softmax_rows(kf, 1, D);\n"
            }
        };
        format!(
            "{mean}    for (int i = tid; i < D; i += NT) gam[i] = {gexpr};\n    __syncthreads();\n{kmap}    softmax_rows(qf, G, D);\n    __syncthreads();\n"
        )
    } else {
        String::new()
    };
    // Static shared memory of the kernel without / with the staged window (bytes).
    let nw = DECODE_THREADS / 32;
    let base_smem = 4 * (2 * g * d + 3 * d + nw * g * vt + g * vt);
    let staged_smem = 2 * 2 * (w + 1) * (d + 2) + 4 * g * (w + 1);
    let window_code = if window && base_smem + staged_smem <= 46 * 1024 {
        decode_window_staged()
    } else if window {
        decode_window("this block's columns", true)
    } else {
        String::new()
    };
    let grm_code = if grm {
        r#"    // recurrent branch: lane = column of the tile, warps split the state's rows
    float acc[G];
    for (int g = 0; g < G; ++g) acc[g] = 0.0f;
    if (lane < VT) {
        const float vc = ld(v, (long long)b * HKV * D + j * D + col0 + lane);
        float* srow = state + (long long)(b * HKV + j) * D * D + col0 + lane;
        for (int i = warp; i < D; i += NW) {
            const float s = expf(gam[i]) * srow[(long long)i * D] + kf[i] * vc;
            srow[(long long)i * D] = s;
            for (int g = 0; g < G; ++g) acc[g] += qf[g * D + i] * s;
        }
        for (int g = 0; g < G; ++g) part[(warp * G + g) * VT + lane] = acc[g];
    }
"#
    } else {
        ""
    };
    let out_expr = match (window, grm) {
        (true, true) => "MIX_WIN * wout[e] + MIX_LIN * o",
        (false, true) => "MIX_LIN * o",
        _ => "MIX_WIN * wout[e]",
    };
    let o_sum = if grm {
        "        float o = 0.0f;\n        for (int w = 0; w < NW; ++w) o += part[(w * G + g) * VT + c];\n"
    } else {
        ""
    };
    let gates = if grm {
        "    __shared__ float qf[G * D];      // feature-mapped queries\n    __shared__ float kr[D];          // raw key\n    __shared__ float kf[D];          // mapped key\n    __shared__ float gam[D];         // log-gate\n    __shared__ float part[NW * G * VT];\n"
    } else {
        ""
    };
    let wdecl = if window {
        "    __shared__ float qrot[G * D];    // rotated queries\n    __shared__ float wout[G * VT];   // window branch\n    bf16* ring_kh_w = ring_k + (long long)(b * HKV + j) * NRING * D;\n    bf16* ring_vh_w = ring_v + (long long)(b * HKV + j) * NRING * D;\n"
    } else {
        ""
    };
    let loads = format!(
        "    for (int e = tid; e < G * D; e += NT) {{\n        const long long at = (long long)b * H * D + (j * G + e / D) * D + e % D;\n{}{}    }}\n{}",
        if grm {
            "        qf[e] = ld(q, at);\n"
        } else {
            ""
        },
        if window {
            "        qrot[e] = ld(q_rot, at);\n"
        } else {
            ""
        },
        if grm {
            "    for (int i = tid; i < D; i += NT) kr[i] = ld(k, (long long)b * HKV * D + j * D + i);\n"
        } else {
            ""
        },
    );
    let unused_q = if grm {
        ""
    } else {
        "    (void)q; (void)k; (void)state;\n"
    };
    let unused_w = if window {
        ""
    } else {
        "    (void)q_rot; (void)k_rot; (void)ring_k; (void)ring_v; (void)pos;\n"
    };
    let body = format!(
        r#"constexpr int H = {h};
constexpr int HKV = {kv};
constexpr int G = {g};
constexpr int D = {d};
constexpr int VT = {vt};
[[maybe_unused]] constexpr int W = {w};
[[maybe_unused]] constexpr int NRING = W + 1;
constexpr int NT = {nt};
constexpr int NW = NT / 32;
[[maybe_unused]] constexpr float SCALE = {scale};
[[maybe_unused]] constexpr float NORM = {norm};
[[maybe_unused]] constexpr float MIX_WIN = {mix_win};
[[maybe_unused]] constexpr float MIX_LIN = {mix_lin};

// One token per row (tokens = batch). The state is updated in place; the ring gets this token.
extern "C" __global__ void {name}(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
        const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot, float* __restrict__ state,
        bf16* __restrict__ ring_k, bf16* __restrict__ ring_v, bf16* __restrict__ out, const int* __restrict__ pos_ptr) {{
    const int pos = *pos_ptr;  // device memory: one captured graph serves every step
{gates}    const int vt = blockIdx.x, j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    [[maybe_unused]] const int warp = tid >> 5, lane = tid & 31;
    const int col0 = vt * VT;
{wdecl}{unused_q}{unused_w}{loads}    __syncthreads();
{gate_code}{window_code}{grm_code}    __syncthreads();
    for (int e = tid; e < G * VT; e += NT) {{
        const int g = e / VT, c = e % VT;
{o_sum}        out[(long long)b * H * D + (j * G + g) * D + col0 + c] = __float2bfloat16({out_expr});
    }}
}}
"#,
        nt = DECODE_THREADS,
        scale = float_lit(1.0 / (d as f64).sqrt()),
        norm = float_lit(normalizer),
        mix_win = float_lit(spec.mix_window),
        mix_lin = float_lit(spec.mix_linear),
    );
    KernelSrc {
        name,
        summary: format!(
            "Liger {variant} decode step: gate + feature maps, window over the ring ({} keys), state update in place, mix",
            w + 1
        ),
        body,
        block: [DECODE_THREADS as u32, 1, 1],
        smem: 0,
        grid: format!(
            "({}, {kv}, batch): one block per (value tile of {vt} columns, KV head, row)",
            d / vt
        ),
        params: vec![
            format!("q [batch, {}] bf16 (raw)", h * d),
            format!("k [batch, {}] bf16 (raw)", kv * d),
            format!("v [batch, {}] bf16", kv * d),
            format!("q_rot [batch, {}] bf16", h * d),
            format!("k_rot [batch, {}] bf16", kv * d),
            format!("state [batch, {kv}, {d}, {d}] f32 (in/out)"),
            format!("ring_k [batch, {kv}, {}, {d}] bf16 (in/out)", w + 1),
            format!("ring_v [batch, {kv}, {}, {d}] bf16 (in/out)", w + 1),
            format!("out [batch, {}] bf16 (out)", h * d),
            "pos (const int*: device memory, the position of this token)".into(),
        ],
    }
}

/// One decode step of a GSA layer: one block per (KV head, row).
pub fn decode_gsa(spec: &LigerSpec, normalizer: f64) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let (m, w) = (spec.slots, spec.window);
    let window = spec.mix_window != 0.0;
    let name = format!(
        "liger_gsa_decode_h{h}_kv{kv}_d{d}_m{m}_w{w}{}",
        if window { "" } else { "_nowin" }
    );
    let gate = gate_expr(LigerVariant::Gsa, d, m, "i", "kr", "0.0f");
    let window_code = if window {
        decode_window("all columns", false)
    } else {
        String::new()
    };
    let wdecl = if window {
        "    __shared__ float qrot[G * D];\n    __shared__ float wout[G * D];\n    bf16* ring_kh_w = ring_k + (long long)(b * HKV + j) * NRING * D;\n    bf16* ring_vh_w = ring_v + (long long)(b * HKV + j) * NRING * D;\n    for (int e = tid; e < G * D; e += NT) qrot[e] = ld(q_rot, (long long)b * H * D + j * G * D + e);\n"
    } else {
        "    (void)q_rot; (void)k_rot; (void)ring_k; (void)ring_v; (void)pos;\n"
    };
    let out_expr = if window {
        "MIX_WIN * wout[g * D + c] + MIX_LIN * o[g]"
    } else {
        "MIX_LIN * o[g]"
    };
    let body = format!(
        r#"constexpr int H = {h};
constexpr int HKV = {kv};
constexpr int G = {g};
constexpr int D = {d};
constexpr int M = {m};
[[maybe_unused]] constexpr int W = {w};
[[maybe_unused]] constexpr int NRING = W + 1;
constexpr int NT = {nt};
[[maybe_unused]] constexpr int NW = NT / 32;
[[maybe_unused]] constexpr int DPL = (D + 31) / 32;
[[maybe_unused]] constexpr float SCALE = {scale};
constexpr float NORM = {norm};
[[maybe_unused]] constexpr float MIX_WIN = {mix_win};
constexpr float MIX_LIN = {mix_lin};

// Hk_t = Hk diag(e^g) + k^T s;  p = softmax_M(q Hk);  Hv_t = diag(e^g) Hv + s^T v;  o = p Hv.
extern "C" __global__ void {name}(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
        const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot, float* __restrict__ state_k,
        float* __restrict__ state_v, bf16* __restrict__ ring_k, bf16* __restrict__ ring_v,
        bf16* __restrict__ out, const int* __restrict__ pos_ptr) {{
    const int pos = *pos_ptr;  // device memory: one captured graph serves every step
    __shared__ float qr[G * D];
    __shared__ float kr[D];
    __shared__ float gam[M];
    __shared__ float sv[M];
    __shared__ float lg[G * M];
    const int j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    const int warp = tid >> 5, lane = tid & 31;
    const int col0 = 0;
    (void)warp; (void)lane; (void)col0;
{wdecl}    for (int e = tid; e < G * D; e += NT) qr[e] = ld(q, (long long)b * H * D + j * G * D + e);
    for (int i = tid; i < D; i += NT) kr[i] = ld(k, (long long)b * HKV * D + j * D + i);
    __syncthreads();
    for (int i = tid; i < M; i += NT) {{
        gam[i] = {gate};
        sv[i] = -expm1f(gam[i]);
    }}
    __syncthreads();
{window_code}    float* hk = state_k + (long long)(b * HKV + j) * D * M;
    float* hv = state_v + (long long)(b * HKV + j) * M * D;
    for (int s = tid; s < M; s += NT) {{
        const float decay = expf(gam[s]);
        float acc[G];
        for (int g = 0; g < G; ++g) acc[g] = 0.0f;
        for (int i = 0; i < D; ++i) {{
            const float x = hk[(long long)i * M + s] * decay + kr[i] * sv[s];
            hk[(long long)i * M + s] = x;
            for (int g = 0; g < G; ++g) acc[g] += qr[g * D + i] * x;
        }}
        for (int g = 0; g < G; ++g) lg[g * M + s] = acc[g];
    }}
    __syncthreads();
    softmax_rows(lg, G, M);
    __syncthreads();
    for (int c = tid; c < D; c += NT) {{
        const float vc = ld(v, (long long)b * HKV * D + j * D + c);
        float o[G];
        for (int g = 0; g < G; ++g) o[g] = 0.0f;
        for (int s = 0; s < M; ++s) {{
            const float x = expf(gam[s]) * hv[(long long)s * D + c] + sv[s] * vc;
            hv[(long long)s * D + c] = x;
            for (int g = 0; g < G; ++g) o[g] += lg[g * M + s] * x;
        }}
        for (int g = 0; g < G; ++g) out[(long long)b * H * D + (j * G + g) * D + c] = __float2bfloat16({out_expr});
    }}
}}
"#,
        nt = DECODE_THREADS,
        scale = float_lit(1.0 / (d as f64).sqrt()),
        norm = float_lit(normalizer),
        mix_win = float_lit(spec.mix_window),
        mix_lin = float_lit(spec.mix_linear),
    );
    KernelSrc {
        name,
        summary: format!(
            "Liger GSA decode step ({m} slots): window over the ring, slot and value passes in place, mix"
        ),
        body,
        block: [DECODE_THREADS as u32, 1, 1],
        smem: 0,
        grid: format!("(1, {kv}, batch): one block per (KV head, row)"),
        params: vec![
            format!("q [batch, {}] bf16 (raw)", h * d),
            format!("k [batch, {}] bf16 (raw)", kv * d),
            format!("v [batch, {}] bf16", kv * d),
            format!("q_rot [batch, {}] bf16", h * d),
            format!("k_rot [batch, {}] bf16", kv * d),
            format!("state_k [batch, {kv}, {d}, {m}] f32 (in/out: Hk)"),
            format!("state_v [batch, {kv}, {m}, {d}] f32 (in/out: Hv)"),
            format!("ring_k [batch, {kv}, {}, {d}] bf16 (in/out)", w + 1),
            format!("ring_v [batch, {kv}, {}, {d}] bf16 (in/out)", w + 1),
            format!("out [batch, {}] bf16 (out)", h * d),
            "pos (const int*: device memory)".into(),
        ],
    }
}
