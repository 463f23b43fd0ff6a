//! The sliding-window softmax branch of a LigerAttention prefill.

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
