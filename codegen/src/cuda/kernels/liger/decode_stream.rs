//! The decode step of a keyed Liger layer as a stream of (KV head, row) items: a few
//! resident blocks an SM, each walking its share of the items with the next item's state
//! already in flight while the current one computes.
//!
//! [`decode_keyed`](super::decode_keyed) gives every (KV head, row) a block of its own,
//! which runs a serial window phase and then streams the state two passes at a time. At
//! batch 64 on an H100 (512 items on 132 SMs) the last quarter of the blocks run nearly
//! alone on their SMs, and the step lands at 69 % of its bytes floor. Here a block
//! copies whole items into shared memory by `cp.async` — the window's keys, values and
//! queries (one buffer) and the fp32 state (two buffers) — and the copies of item `t + 1`
//! (window) and `t + 2` (state) are issued as soon as item `t` no longer needs the
//! buffer, so an SM always has one item's bytes in flight while it computes another.
//! The grid is at most the SMs' resident blocks ([`STREAM_BLOCKS_PER_SM`] of them an SM:
//! the plan says so and the runtime clamps); block `x` takes items `x, x + gridDim.x, …`
//! and is correct for any grid.

use ligerc_ir::{LigerSpec, LigerVariant};

use super::super::basic::gate_expr;
use super::super::{CP_ASYNC, KernelSrc, float_lit};
use super::{dims, vname};

/// Row lanes of a column quad: the lanes of a half-warp that share four state columns and
/// split the rows, their sums met by a butterfly over 16 lanes.
const ROW_LANES: usize = 16;

/// Shared memory an sm_90 SM has for its blocks (bytes; 1 KiB of it reserved a block).
const SM_SMEM: usize = 228 * 1024;

/// The most blocks an SM runs of [`decode_stream`] (fewer when the shared memory says so):
/// the plan's grid is clamped to this many per SM.
pub const STREAM_BLOCKS_PER_SM: usize = 3;

/// The shared-memory layout of [`decode_stream`]: byte offsets of each region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StreamLayout {
    /// Key rows (the window's `W + 1` rounded up to the 16-row tile).
    nkr: usize,
    /// Query rows (`G` rounded up to the 16-column tile of the scores).
    qr: usize,
    /// Threads per block: 16 row lanes for each of the `D / 4` column quads.
    nt: usize,
    /// Blocks an SM (shared memory and [`STREAM_BLOCKS_PER_SM`]).
    per_sm: usize,
    /// Total dynamic shared memory (bytes).
    smem: usize,
}

impl StreamLayout {
    fn new(g: usize, d: usize, w: usize) -> Self {
        let nkr = (w + 1).next_multiple_of(16);
        let qr = g.next_multiple_of(16);
        let nt = d / 4 * ROW_LANES;
        let dp = d + 8;
        let smem = 2 * d * d * 4 // the state, two buffers
            + nkr * dp * 2 // keys
            + (w + 1) * d * 2 // values
            + qr * dp * 2 // rotated queries
            + (g + 1) * d * 2 // raw queries and key (bf16)
            + nkr * qr * 4 // scores
            + (g + 1) * d * 4 // feature maps
            + 3 * d * 4 // raw key, decay, value
            + g * d * 4 // window output
            + 4 * (32 + g); // scratch, per-head weights
        let per_sm = (SM_SMEM / (smem + 1024)).min(STREAM_BLOCKS_PER_SM);
        StreamLayout {
            nkr,
            qr,
            nt,
            per_sm,
            smem,
        }
    }
}

/// Whether [`decode_stream`] serves a layer within `smem_limit` bytes of shared memory a
/// block: a keyed variant (GLA, HGRN2, retention, linear) with a window branch, a head
/// dim that is a multiple of 32 up to 128 (the state's swizzle works on 8 column quads;
/// 16 row lanes a quad), at most 8 query heads a KV head (the registers of the sums).
/// `LIGERC_CUDA_DECODE=blocks` at code generation keeps [`decode_keyed`](super::decode_keyed)
/// everywhere (a measuring knob).
pub fn stream_eligible(spec: &LigerSpec, smem_limit: usize) -> bool {
    let forced = std::env::var("LIGERC_CUDA_DECODE").is_ok_and(|v| v == "blocks");
    let (_, _, g, d) = dims(spec);
    let keyed = !matches!(spec.variant, LigerVariant::SwaOnly | LigerVariant::Gsa);
    let lay = StreamLayout::new(g, d, spec.window);
    !forced
        && keyed
        && spec.mix_window != 0.0
        && d.is_multiple_of(32)
        && d <= 128
        && g <= 8
        && lay.per_sm >= 1
        && lay.smem <= smem_limit
}

/// Blocks an SM of [`decode_stream`]'s launch (the runtime clamps the grid to this many
/// times the SMs).
pub fn stream_blocks_per_sm(spec: &LigerSpec) -> u32 {
    let (_, _, g, d) = dims(spec);
    StreamLayout::new(g, d, spec.window).per_sm.max(1) as u32
}

/// One decode step of a key-gated Liger layer with its window branch, as a stream of
/// (KV head, row) items (see the module doc). Parameters: those of
/// [`decode_keyed`](super::decode_keyed), then `batch`. Call only where
/// [`stream_eligible`].
pub fn decode_stream(spec: &LigerSpec, normalizer: f64) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let variant = spec.variant;
    let w = spec.window;
    let lay = StreamLayout::new(g, d, w);
    let StreamLayout {
        nkr,
        qr,
        nt,
        per_sm,
        smem,
    } = lay;
    let hgrn2 = variant == LigerVariant::Hgrn2;
    let retention = variant == LigerVariant::Retention;
    let nvp = (4 * g).next_multiple_of(ROW_LANES);
    let name = format!(
        "liger_{}_decode_stream_h{h}_kv{kv}_d{d}_w{w}",
        vname(variant)
    );
    let gexpr = gate_expr(variant, d, d, "i", "kr", "mean");
    let mean = if retention {
        "        float part_sum = 0.0f;\n        for (int i = tid; i < D; i += NT) part_sum += kr[i];\n        const float mean = block_sum(part_sum, scratch) / (float)D;\n"
    } else {
        ""
    };
    let key_map = if hgrn2 {
        "\n            qk[G * D + i] = -expm1f(gm);  // HGRN2's key map: 1 - alpha"
    } else {
        ""
    };
    let (fm_rows, key_row) = if hgrn2 {
        ("G", "")
    } else {
        (
            "G + 1",
            "\n            else if (e < (G + 1) * D) qk[e] = __bfloat162float(kraw[e - G * D]);  // the key map is its softmax",
        )
    };
    let butterfly = butterfly(nvp);
    let body = format!(
        r#"#include <mma.h>
using namespace nvcuda;

{CP_ASYNC}
constexpr int H = {h};
constexpr int HKV = {kv};
constexpr int G = {g};
constexpr int D = {d};
constexpr int W = {w};
constexpr int NRING = W + 1;
constexpr int NKR = {nkr};  // staged key rows (the window's W+1 rounded up to the 16-row tile; rows past it zero)
constexpr int QR = {qr};  // staged rotated-query rows (G padded to the wmma tile; rows G.. zero)
constexpr int DP = D + 8;  // row pitch (bf16) of the staged keys and rotated queries
constexpr int CQ = D / 4;  // column quads of the state (16 bytes of fp32 each)
constexpr int NT = {nt};  // 16 row lanes for each column quad
constexpr int NW = NT / 32;
constexpr int RPT = D / 16;  // state rows per thread
constexpr int NVP = {nvp};  // a thread's G x 4 output sums, padded to the 16 row lanes
constexpr int PER_SM = {per_sm};  // resident blocks an SM (the grid is at most this many per SM)
[[maybe_unused]] constexpr float SCALE = {scale};
[[maybe_unused]] constexpr float NORM = {norm};
constexpr float MIX_WIN = {mix_win};
constexpr float MIX_LIN = {mix_lin};
static_assert(D % 32 == 0 && CQ % 8 == 0 && NVP % 16 == 0, "decode stream layout");

// One token per row. Item (j, b) = KV head j of row b, all G query heads of j: item b*HKV + j.
// Block x takes items x, x + gridDim.x, ... Per item t of the block:
//   wait for its window (keys, values, queries: one buffer) and its state (buffer t % 2)
//   A. bf16 -> f32 of the queries and key, the ring push, the window's scores q.k on tensor cores
//   B. gate, feature maps, softmax of the window's scores (one warp a head)
//   C. p V for the G x D outputs -> wo (times MIX_WIN / sum); the window buffer is free: the
//      copies of item t+1's window are issued
//   D. S <- diag(alpha) S + kf^T v (stored to global in place), o = qf S: thread (quad cq, row
//      lane rl) holds rows rl + 16p, columns 4cq .. 4cq+3; its sums met over the 16 row lanes
//      by a butterfly (15 shuffles), each lane ending with one output; mixed with wo. The state
//      buffer is free: the copies of item t+2's state are issued
// The state sits in shared memory with its column quads XOR-swizzled by row (quad q of row i at
// q ^ (i & 7)), so a quarter-warp's 8 rows of one quad hit 8 different banks.
extern "C" __global__ void __launch_bounds__(NT, PER_SM) {name}(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
        const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot, float* __restrict__ state,
        bf16* __restrict__ ring_k, bf16* __restrict__ ring_v, bf16* __restrict__ out, const int* __restrict__ pos_ptr,
        const int batch);

extern "C" __global__ void {name}(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
        const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot, float* __restrict__ state,
        bf16* __restrict__ ring_k, bf16* __restrict__ ring_v, bf16* __restrict__ out, const int* __restrict__ pos_ptr,
        const int batch) {{
    extern __shared__ float smem[];
    float* const st0 = smem;  // [2][D][D] the state of two items (swizzled)
    bf16* const wk = reinterpret_cast<bf16*>(st0 + 2 * D * D);  // [NKR][DP] the window's keys
    bf16* const wv = wk + NKR * DP;  // [NRING][D] its values
    bf16* const qb = wv + NRING * D;  // [QR][DP] rotated queries
    bf16* const qraw = qb + QR * DP;  // [G][D] raw queries
    bf16* const kraw = qraw + G * D;  // [D] raw key
    float* const wsc = reinterpret_cast<float*>(kraw + D);  // [NKR][QR] scores, then exp(score - max)
    float* const qk = wsc + NKR * QR;  // [G + 1][D] feature-mapped queries, then the mapped key
    float* const kr = qk + (G + 1) * D;  // [D] raw key (f32)
    float* const alpha = kr + D;  // [D] decay e^gate
    float* const vc = alpha + D;  // [D] this token's value (f32)
    float* const wo = vc + D;  // [G][D] the window branch's output, times MIX_WIN / sum
    float* const scratch = wo + G * D;  // [32] block sums
    float* const winv = scratch + 32;  // [G] MIX_WIN / sum of the window's weights
    (void)scratch;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int cq = tid / 16, rl = tid % 16;  // this thread's column quad and row lane
    const int items = HKV * batch;
    const int pos = *pos_ptr;  // device memory: one captured graph serves every step
    const int nk = min(pos, W) + 1, cur = pos % NRING;  // keys in the window; this step's slot
    // The window is the ring's slots with this step's key and value in slot cur (it held
    // pos-W-1, which no query reads): slots 0 ..= pos while pos < W, all of them after. The
    // softmax does not care about the order: staged row r is slot r.
    auto issue_window = [&](int it) {{
        const bf16* ring_kh = ring_k + (long long)it * NRING * D;
        const bf16* ring_vh = ring_v + (long long)it * NRING * D;
        const bf16* k_cur = k_rot + (long long)it * D;
        const bf16* v_cur = v + (long long)it * D;
        constexpr int KQ = D / 8;  // 16-byte copies a row
#pragma unroll
        for (int u = 0; u < (NKR * KQ + NT - 1) / NT; ++u) {{
            const int e = tid + u * NT, r = e / KQ, i = e % KQ * 8;
            if ((NKR * KQ) % NT == 0 || e < NKR * KQ) {{
                const bool live = r < nk;
                const bf16* src = !live ? ring_kh : r == cur ? k_cur + i : ring_kh + (long long)r * D + i;
                cp_async16(wk + r * DP + i, src, live);
            }}
        }}
#pragma unroll
        for (int u = 0; u < (NRING * KQ + NT - 1) / NT; ++u) {{
            const int e = tid + u * NT, r = e / KQ, i = e % KQ * 8;
            if ((NRING * KQ) % NT == 0 || e < NRING * KQ) {{
                const bool live = r < nk;
                const bf16* src = !live ? ring_vh : r == cur ? v_cur + i : ring_vh + (long long)r * D + i;
                cp_async16(wv + r * D + i, src, live);
            }}
        }}
        const long long qoff = (long long)it * G * D;  // (b H + j G) D
        for (int e = tid; e < G * KQ; e += NT) {{
            cp_async16(qb + e / KQ * DP + e % KQ * 8, q_rot + qoff + e * 8, true);
            cp_async16(qraw + e * 8, q + qoff + e * 8, true);
        }}
        for (int e = tid; e < KQ; e += NT) cp_async16(kraw + e * 8, k + (long long)it * D + e * 8, true);
    }};
    auto issue_state = [&](int it, float* dst) {{
        const float* src = state + (long long)it * D * D;
#pragma unroll
        for (int u = 0; u < D * CQ / NT; ++u) {{
            const int e = tid + u * NT, i = e / CQ, qd = e % CQ;
            cp_async16(dst + i * D + 4 * (qd ^ (i & 7)), src + 4 * e, true);
        }}
    }};

    for (int e = tid; e < (QR - G) * DP / 8; e += NT) reinterpret_cast<uint4*>(qb + G * DP)[e] = uint4{{0u, 0u, 0u, 0u}};  // rows G.. zero
    int it = blockIdx.x;
    if (it < items) {{
        issue_window(it);
        cp_async_commit();
        issue_state(it, st0);
        cp_async_commit();
        if (it + (int)gridDim.x < items) issue_state(it + gridDim.x, st0 + D * D);
        cp_async_commit();
    }}
    for (int t = 0; it < items; ++t, it += gridDim.x) {{
        const int j = it % HKV, b = it / HKV;
        float* const st = st0 + (t & 1) * D * D;
        cp_async_wait<1>();  // this item's window and state (the next item's state may still fly)
        __syncthreads();

        // A. bf16 -> f32; the ring push (the staged row cur is this step's key and value); scores
        for (int e = tid; e < (G + 1) * D; e += NT) {{
            if (e < G * D) qk[e] = __bfloat162float(qraw[e]);{key_row}
        }}
        for (int i = tid; i < D; i += NT) {{
            kr[i] = __bfloat162float(kraw[i]);
            vc[i] = __bfloat162float(wv[cur * D + i]);
        }}
        for (int e = tid; e < D / 8; e += NT) {{
            const long long slot = ((long long)it * NRING + cur) * D + e * 8;
            *reinterpret_cast<uint4*>(ring_k + slot) = *reinterpret_cast<const uint4*>(wk + cur * DP + e * 8);
            *reinterpret_cast<uint4*>(ring_v + slot) = *reinterpret_cast<const uint4*>(wv + cur * D + e * 8);
        }}
        // scores on tensor cores (bf16 in, f32 accumulation): one warp per tile of 16 keys (A,
        // row-major) x 16 query heads (B = the rotated queries, column-major)
        for (int tt = warp; tt < NKR / 16 * (QR / 16); tt += NW) {{
            const int kt = tt % (NKR / 16), n = tt / (NKR / 16);
            if (16 * kt >= nk) continue;
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> sc;
            wmma::fill_fragment(sc, 0.0f);
#pragma unroll
            for (int k0 = 0; k0 < D; k0 += 16) {{
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> ka;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> qm;
                wmma::load_matrix_sync(ka, wk + 16 * kt * DP + k0, DP);
                wmma::load_matrix_sync(qm, qb + 16 * n * DP + k0, DP);
                wmma::mma_sync(sc, ka, qm, sc);
            }}
            wmma::store_matrix_sync(wsc + 16 * kt * QR + 16 * n, sc, QR, wmma::mem_row_major);
        }}
        __syncthreads();

        // B. gate and feature maps; the window's softmax, one warp a head
        {{
{mean}        for (int i = tid; i < D; i += NT) {{
            const float gm = {gexpr};
            alpha[i] = expf(gm);{key_map}
        }}
        }}
        softmax_rows(qk, {fm_rows}, D);
        for (int g = warp; g < G; g += NW) {{
            float mx = neg_inf();
            for (int r = lane; r < nk; r += 32) mx = fmaxf(mx, wsc[r * QR + g] * SCALE);
            mx = warp_max(mx);
            float sum = 0.0f;
            for (int r = lane; r < nk; r += 32) {{
                const float e = __expf(wsc[r * QR + g] * SCALE - mx);  // exponent <= 0: the fast exp is exact to a few ulp
                wsc[r * QR + g] = e;
                sum += e;
            }}
            sum = warp_sum(sum);
            if (lane == 0) winv[g] = MIX_WIN / sum;
        }}
        __syncthreads();

        // C. p V for the G x D window outputs
        for (int e = tid; e < G * D; e += NT) {{
            const int g = e / D, c = e % D;
            float a = 0.0f;
            for (int r = 0; r < nk; ++r) a += wsc[r * QR + g] * __bfloat162float(wv[r * D + c]);
            wo[e] = a * winv[g];
        }}
        __syncthreads();  // the window buffer is read: the next item's copies go
        if (it + (int)gridDim.x < items) issue_window(it + gridDim.x);
        cp_async_commit();

        // D. the state: S <- diag(alpha) S + kf^T v in place, o_lin = qf S
        float acc[NVP];
#pragma unroll
        for (int x = 0; x < NVP; ++x) acc[x] = 0.0f;
        float vf[4];
#pragma unroll
        for (int c = 0; c < 4; ++c) vf[c] = vc[4 * cq + c];
        float* const sg = state + (long long)it * D * D + 4 * cq;
#pragma unroll
        for (int p = 0; p < RPT; ++p) {{
            const int i = rl + 16 * p;
            float4 x = *reinterpret_cast<const float4*>(st + i * D + 4 * (cq ^ (i & 7)));
            const float a = alpha[i], kk = qk[G * D + i];
            x.x = a * x.x + kk * vf[0];
            x.y = a * x.y + kk * vf[1];
            x.z = a * x.z + kk * vf[2];
            x.w = a * x.w + kk * vf[3];
            *reinterpret_cast<float4*>(sg + (long long)i * D) = x;
#pragma unroll
            for (int g = 0; g < G; ++g) {{
                const float qg = qk[g * D + i];
                acc[4 * g] += qg * x.x;
                acc[4 * g + 1] += qg * x.y;
                acc[4 * g + 2] += qg * x.z;
                acc[4 * g + 3] += qg * x.w;
            }}
        }}
{butterfly}#pragma unroll
        for (int x = 0; x < NVP / 16; ++x) {{
            const int vi = rl * (NVP / 16) + x, g = vi / 4, c = 4 * cq + vi % 4;  // this lane's sum
            if (g < G) out[(long long)b * H * D + (j * G + g) * D + c] = __float2bfloat16(MIX_LIN * acc[x] + wo[g * D + c]);
        }}
        __syncthreads();  // the state buffer and the maps are read: the state two items ahead goes
        if (it + 2 * (int)gridDim.x < items) issue_state(it + 2 * gridDim.x, st);
        cp_async_commit();
    }}
    cp_async_wait<0>();
}}
"#,
        scale = float_lit(1.0 / (d as f64).sqrt()),
        norm = float_lit(normalizer),
        mix_win = float_lit(spec.mix_window),
        mix_lin = float_lit(spec.mix_linear),
    );
    KernelSrc {
        name,
        summary: format!(
            "Liger {variant} decode step as a stream of (KV head, row) items, at most {per_sm} \
             blocks an SM: window ({} keys) and fp32 state copied into shared memory by cp.async, \
             the next item's in flight; scores on tensor cores (bf16 wmma), softmax, pV; the state \
             updated in place; mix",
            w + 1
        ),
        body,
        block: [nt as u32, 1, 1],
        smem: smem as u32,
        grid: format!(
            "(min({kv}·batch, {per_sm}·SMs), 1, 1): block x takes items x, x + gridDim.x, … of the {kv}·batch (KV head, row) items"
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
            "batch (int: rows)".into(),
        ],
    }
}

/// The butterfly over the 16 row lanes, written out (register arrays stay in registers):
/// at each step a lane keeps half of its `n` sums — the upper half where its lane bit is
/// set — and adds its partner's copy of that half; after four steps lane `l` holds the
/// `n / 16` sums `l·n/16 ..`.
fn butterfly(nvp: usize) -> String {
    let mut s = String::from(
        "        // butterfly over the 16 row lanes: each step a lane keeps half of its sums (the upper\n        // half where its lane bit is set) and adds its partner's copy of that half\n",
    );
    let mut n = nvp;
    for o in [8, 4, 2, 1] {
        let half = n / 2;
        s.push_str(&format!(
            "        {{\n            const bool up = (lane & {o}) != 0;\n"
        ));
        for x in 0..half {
            s.push_str(&format!(
                "            acc[{x}] = (up ? acc[{y}] : acc[{x}]) + __shfl_xor_sync(0xffffffffu, up ? acc[{x}] : acc[{y}], {o});\n",
                y = x + half
            ));
        }
        s.push_str("        }\n");
        n = half;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts of the shapes the GPU runs: Llama-3-8B's (one block an SM) and SmolLM2's.
    #[test]
    fn stream_layouts() {
        // D 128, G 4, W 64: two 64 KiB states, 80 key rows; 512 threads; one block an SM.
        let l = StreamLayout::new(4, 128, 64);
        assert_eq!((l.nkr, l.qr, l.nt, l.per_sm), (80, 16, 512, 1));
        assert!(l.smem <= 227 * 1024, "{}", l.smem);
        // SmolLM2: D 64, G 3: 256 threads, three blocks an SM.
        let l = StreamLayout::new(3, 64, 64);
        assert_eq!((l.nt, l.per_sm), (256, 3));
    }
}
