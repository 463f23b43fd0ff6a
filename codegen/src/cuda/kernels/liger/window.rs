//! The sliding-window softmax branch of a LigerAttention prefill.
//!
//! For head dims that are multiples of 16 the kernel runs on bf16 tensor cores
//! (`mma.sync` m16n8k16, f32 accumulation, fragments in registers), flash-attention style.
//! One block per (tile of `TQ` query tokens, KV head, row) stages the keys and values the
//! tile sees — positions `[p0 − W, p0 + TQ)`, ring slots for those before `pos0`, zero rows
//! before position 0 and past the tile — in shared memory once as bf16 (16-byte `cp.async`
//! loads, rows padded by 16 bytes so `ldmatrix` is conflict-free), shared by the `G` query
//! heads of the KV head. Each warp then takes a (query head, 16-row tile, output column
//! group) at a time and keeps everything else in registers:
//! - its queries come in through a per-warp staging tile (16-byte loads) and go out of it
//!   as `mma` A fragments (`ldmatrix`);
//! - the scores `S = Q·Kᵀ` cover only the key tiles inside the 16 rows' band (keys
//!   `p − W ..= p`: `⌊(W + 15)/16⌋ + 1` tiles, the same for every row tile since the stage
//!   starts at `p0 − W`), are masked in registers and reduced per row across the four
//!   lanes that hold it (shuffles), then become, in registers, the bf16 A fragments of
//!   `O += P·V` (values by `ldmatrix.trans`);
//! - `mix_window · O / l` leaves through the staging tile in 16-byte stores, bf16 (the
//!   scratch the recurrence's step 3 adds to, or the output). The kernel source still
//!   carries an f32 variant of that store, which nothing emits since 2026-11-28; its
//!   `OCF` also sizes the staging tile, so both go together with the next window change.
//!
//! When the band fits one softmax step (at most 8 key tiles) and the block's keys one
//! shared-memory stage (`W ≤ 64` at D 128, `≤ 112` at D 64), the softmax is exact in one
//! pass and the accumulators only live after the scores. Longer windows go in steps of a
//! few key tiles with an online softmax (base 2, running max and sum per row), and keys
//! beyond one stage in several stages. Other head dims keep the scalar kernel (one warp
//! per token, f32 in registers).
//!
//! Precision: queries, keys and values are bf16 already; the probabilities are rounded
//! to bf16 once before `P·V` (2⁻⁹ relative), and the sum `l` adds the rounded values.

use ligerc_ir::LigerSpec;

use super::super::CP_ASYNC;
use super::super::{KernelSrc, float_lit};
use super::{MMA_PRELUDE, dims};

/// What the window kernel produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowOut {
    /// `mix_window · y` as bf16 scratch, finished by the recurrent kernel.
    Partial,
    /// The layer's bf16 output (no recurrent branch).
    Final,
}

/// Most warps per block of the tensor-core window kernel.
const TC_WARPS: usize = 8;
/// Dynamic shared memory the tensor-core window kernel aims to stay under: two blocks
/// fit an sm_90 SM (227 KB).
const TC_SMEM_BUDGET: usize = 110 * 1024;
/// Most key tiles of a one-pass softmax: the probabilities of that many tiles (4
/// registers each) and 128 output columns (64) stay within 128 registers a thread.
const ONE_PASS_TILES: usize = 8;
/// Registers a lane may give to the accumulators (`cg / 2`) and the scores (8 a key tile)
/// of one online-softmax step: 2 key tiles a step at 128 output columns, 6 at 64 (no
/// spills per ptxas; 88 spilled).
const STEP_REGS: usize = 80;

/// Whether [`window_prefill`] runs on tensor cores: the head dim a multiple of the 16-wide
/// `mma` tile.
fn tensor_cores(spec: &LigerSpec) -> bool {
    spec.head_dim >= 16 && spec.head_dim.is_multiple_of(16)
}

/// The tiling of the tensor-core kernel (all counts per block unless said).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TcTile {
    /// Query tokens per block: `tq / 16` row tiles.
    tq: usize,
    /// Warps per block.
    nw: usize,
    /// Output columns per warp task (a multiple of 16 dividing the head dim, at most 128).
    cg: usize,
    /// Key tiles (16 keys) in one row tile's band.
    nb: usize,
    /// Key tiles of the block: `tq/16 + nb − 1`.
    nkt: usize,
    /// Key tiles per shared-memory stage.
    kct: usize,
    /// Key tiles per softmax step.
    nkc: usize,
    /// f32 output columns per pass through the staging tile (the unused f32 store; it also
    /// sizes the staging tile).
    ocf: usize,
}

impl TcTile {
    /// Shared-memory stages of the block's key tiles.
    fn stages(&self) -> usize {
        self.nkt.div_ceil(self.kct)
    }

    /// Whether the softmax takes one pass: one stage, one step.
    fn one_pass(&self) -> bool {
        self.stages() == 1 && self.nkc >= self.nb
    }
}

/// `16 ×` the largest divisor of `n / 16` that is at most `most`.
fn tile_divisor(n: usize, most: usize) -> usize {
    16 * (1..=most.min(n / 16))
        .rev()
        .find(|x| (n / 16).is_multiple_of(*x))
        .unwrap_or(1)
}

/// Bytes of one warp's staging tile: 16 bf16 query rows of stride `d + 8`, or 16 f32
/// output rows of stride `ocf + 8` (either keeps the fragment stores conflict-free).
fn staging_bytes(d: usize, ocf: usize) -> usize {
    16 * ((d + 8) / 2).max(ocf + 8) * 4
}

/// Bytes of one staged key tile: 16 key rows and 16 value rows, bf16, stride `d + 8`.
fn key_tile_bytes(d: usize) -> usize {
    2 * 16 * (d + 8) * 2
}

/// The tiling of the tensor-core kernel: 64 queries a block (32 past D 128), up to
/// [`TC_WARPS`] warps over the `G · tq/16 · D/cg` tasks, the block's key tiles in as few
/// even stages as [`TC_SMEM_BUDGET`] allows, a one-pass softmax when the band fits
/// [`ONE_PASS_TILES`] and one stage, else steps of as many tiles as [`STEP_REGS`] allows.
fn tc_tile(spec: &LigerSpec) -> TcTile {
    let (_, _, g, d) = dims(spec);
    let tq = if d <= 128 { 64 } else { 32 };
    let cg = tile_divisor(d, 8);
    let ocf = tile_divisor(cg, 4);
    let nw = (g.max(1) * (tq / 16) * (d / cg)).min(TC_WARPS);
    let nb = spec.window.div_ceil(16) + 1;
    let nkt = tq / 16 + nb - 1;
    let room = TC_SMEM_BUDGET.saturating_sub(nw * staging_bytes(d, ocf));
    let fit = (room / key_tile_bytes(d)).clamp(1, nkt);
    let kct = nkt.div_ceil(nkt.div_ceil(fit));
    let nkc = if kct == nkt && nb <= ONE_PASS_TILES {
        nb
    } else {
        (STEP_REGS.saturating_sub(cg / 2) / 8).clamp(1, nb)
    };
    TcTile {
        tq,
        nw,
        cg,
        nb,
        nkt,
        kct,
        nkc,
        ocf,
    }
}

/// Dynamic shared memory of the tensor-core kernel in bytes: one stage of keys and values,
/// a staging tile per warp.
fn tc_smem(t: &TcTile, d: usize) -> usize {
    t.kct * key_tile_bytes(d) + t.nw * staging_bytes(d, t.ocf)
}

/// The launch shape of [`window_prefill`]: `(tq, threads)`, query tokens per block (the
/// grid is `(⌈seq/tq⌉, KV, batch)`) and threads per block.
pub fn window_tile(spec: &LigerSpec) -> (usize, usize) {
    if tensor_cores(spec) {
        let t = tc_tile(spec);
        (t.tq, 32 * t.nw)
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
        tc_smem(&tc_tile(spec), spec.head_dim)
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

/// The window branch's inputs, in order: the rotated queries and keys, the values, the ring
/// (this kernel's first parameters, and the fused step 3's after `q`).
pub(super) fn window_inputs(spec: &LigerSpec) -> Vec<String> {
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
    ]
}

/// The kernel's parameters, in order (both bodies).
fn window_params(spec: &LigerSpec, out: WindowOut) -> Vec<String> {
    let h = spec.heads;
    let d = spec.head_dim;
    let mut p = window_inputs(spec);
    p.extend([
        format!(
            "out [tokens, {}] bf16 (out: {})",
            h * d,
            if out == WindowOut::Partial {
                "mix_window · y, for the recurrent kernel to add to"
            } else {
                "the layer's output"
            }
        ),
        "seq".into(),
        "pos0 (const int*: device memory, read once)".into(),
    ]);
    p
}

/// Key/value row of absolute position `p` (shared by both bodies; needs `HKV`, `D`, `NRING`).
pub(super) const KV_ROW: &str = r#"// Key/value row of absolute position `p` for KV head j of row b: this call's rotated keys
// (positions pos0 ..) or, for earlier positions, the ring slot p % NRING.
__device__ __forceinline__ const bf16* kv_row(const bf16* cur, const bf16* ring, int b, int j, int seq, int pos0, int p) {
    if (p >= pos0) return cur + ((long long)b * seq + (p - pos0)) * (HKV * D) + j * D;
    return ring + ((long long)(b * HKV + j) * NRING + p % NRING) * D;
}
"#;

/// The tensor-core body's device functions (after its constants, [`KV_ROW`] and
/// [`MMA_PRELUDE`], [`CP_ASYNC`]): staging, one softmax step, the output.
const TC_DEVICE: &str = r#"
// The 16 KCT key and value rows of a stage, positions first, first + 1, .., into ks / vs
// (stride KLD), asynchronously; rows of positions below 0 or from `kend` on are zero.
__device__ __forceinline__ void stage_kv(bf16* ks, bf16* vs, const bf16* k_rot, const bf16* v, const bf16* ring_k,
        const bf16* ring_v, int b, int j, int seq, int pos0, int first, int kend) {
    constexpr int V = D / 8;
    for (int e = threadIdx.x; e < 16 * KCT * V; e += NT) {
        const int r = e / V, c = e % V, p = first + r;
        const bool ok = p >= 0 && p < kend;
        cp_async16(ks + r * KLD + 8 * c, ok ? kv_row(k_rot, ring_k, b, j, seq, pos0, p) + 8 * c : k_rot, ok);
        cp_async16(vs + r * KLD + 8 * c, ok ? kv_row(v, ring_v, b, j, seq, pos0, p) + 8 * c : v, ok);
    }
}

// Query rows [t, t + 16) of head h, all features, into the warp's staging tile (stride KLD),
// asynchronously; rows from tn on are zero.
__device__ __forceinline__ void load_q(bf16* stg, const bf16* q_rot, long long row0, int t, int tn, int h) {
    constexpr int V = D / 8;
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int i = 0; i < V / 2; ++i) {
        const int u = lane + 32 * i, r = u / V, c = u % V;
        const bool ok = t + r < tn;
        cp_async16(stg + r * KLD + 8 * c, ok ? q_rot + (row0 + t + r) * (H * D) + h * D + 8 * c : q_rot, ok);
    }
}

// One softmax step of the warp's 16 query rows (row tile ii, in the staging tile) over the
// block's key tiles kt0 .. kt0 + NKC - 1 below `hi` (the stage holds tiles from sb on).
// Fragment layouts (m16n8k16, gid = lane / 4, tig = lane % 4): A holds rows gid, gid + 8 at
// columns 2 tig (+1) and 2 tig + 8 (+1); C holds rows gid, gid + 8 at columns 2 tig (+1).
// The row state is this lane's: m the running max of its rows' base-2 scores (the quad
// agrees), l its share of their weights. FIRST: o, m, l start here (no rescaling).
template <bool FIRST>
__device__ __forceinline__ void softmax_step(float (&o)[CG / 8][4], float (&m)[2], float (&l)[2], const bf16* stg,
        const bf16* ks, const bf16* vs, int ii, int kt0, int hi, int sb, int kmin, int cgo) {
    const int lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    // ldmatrix lane addresses: a 16x16 tile as A fragments (or, .trans, as the B fragments
    // of two 8-column tiles); 16 key rows as the B fragments of two 8-key tiles
    const int arow = (lane & 7) + 8 * ((lane >> 3) & 1), acol = 8 * (lane >> 4);
    const int brow = (lane & 7) + 8 * (lane >> 4), bcol = 8 * ((lane >> 3) & 1);
    float sc[NKC][2][4];
#pragma unroll
    for (int u = 0; u < NKC; ++u)
#pragma unroll
        for (int e = 0; e < 8; ++e) sc[u][e / 4][e % 4] = 0.0f;
    // S = Q K^T over the step's tiles (warp-uniform bounds)
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        unsigned qa[4];
        ldsm_x4(qa, stg + arow * KLD + 16 * kk + acol);
#pragma unroll
        for (int u = 0; u < NKC; ++u) {
            if (kt0 + u >= hi) break;
            unsigned r[4];
            ldsm_x4(r, ks + (16 * (kt0 + u - sb) + brow) * KLD + 16 * kk + bcol);
            mma_bf16(sc[u][0], qa, r[0], r[1]);
            mma_bf16(sc[u][1], qa, r[2], r[3]);
        }
    }
    // mask (keys p - W ..= p at positions >= 0), base-2 scores, the rows' max over the quad
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int u = 0; u < NKC; ++u)
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            const int half = e / 4, r = e % 4;
            const int kc = 16 * (kt0 + u) + 8 * half + 2 * tig + (r & 1), qr = 16 * ii + gid + 8 * (r >> 1);
            const bool ok = kt0 + u < hi && kc >= kmin && (unsigned)(kc - qr) <= (unsigned)W;
            sc[u][half][r] = ok ? sc[u][half][r] * SCALE_LOG2 : neg_inf();
            mx[r >> 1] = fmaxf(mx[r >> 1], sc[u][half][r]);
        }
    float ms[2], corr[2];
#pragma unroll
    for (int x = 0; x < 2; ++x) {
        mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffffu, mx[x], 1));
        mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffffu, mx[x], 2));
        ms[x] = mx[x] == neg_inf() ? 0.0f : mx[x];  // no key yet: every weight 0
        corr[x] = exp2f(m[x] - ms[x]);
        m[x] = mx[x];
    }
    // P = 2^(s - m) as bf16 A fragments over the keys; l adds the rounded weights
    unsigned pa[NKC][4];
    float ls[2] = {0.0f, 0.0f};
#pragma unroll
    for (int u = 0; u < NKC; ++u)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int half = e >> 1, x = e & 1;
            pa[u][e] = pack_bf16(exp2f(sc[u][half][2 * x] - ms[x]), exp2f(sc[u][half][2 * x + 1] - ms[x]));
            ls[x] += bf_lo(pa[u][e]) + bf_hi(pa[u][e]);
        }
#pragma unroll
    for (int x = 0; x < 2; ++x) l[x] = FIRST ? ls[x] : l[x] * corr[x] + ls[x];
#pragma unroll
    for (int nt = 0; nt < CG / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[nt][e] = FIRST ? 0.0f : o[nt][e] * corr[e >> 1];
    // O += P V, the values' B fragments by ldmatrix.trans
#pragma unroll
    for (int u = 0; u < NKC; ++u) {
        if (kt0 + u >= hi) break;
        const bf16* vp = vs + (16 * (kt0 + u - sb) + arow) * KLD + cgo + acol;
#pragma unroll
        for (int np = 0; np < CG / 16; ++np) {
            unsigned r[4];
            ldsm_x4_t(r, vp + 16 * np);
            mma_bf16(o[2 * np], pa[u], r[0], r[1]);
            mma_bf16(o[2 * np + 1], pa[u], r[2], r[3]);
        }
    }
}

// MIX O / l of rows [t, t + 16) (those below tn), columns cgo .. cgo + CG of head h, through
// the staging tile (its queries are consumed): 16-byte stores of whole row pieces.
__device__ __forceinline__ float row_scale(const float (&l)[2], int x) {
    float s = l[x] + __shfl_xor_sync(0xffffffffu, l[x], 1);
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    return s > 0.0f ? MIX / s : 0.0f;  // s >= 1 on rows below tn: a row's largest weight is 1
}
__device__ __forceinline__ void write_out(float* out, float (&o)[CG / 8][4], float (&l)[2], bf16* stg, long long row0,
        int t, int tn, int h, int cgo) {
    const int lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const float f[2] = {row_scale(l, 0), row_scale(l, 1)};
    float* sf = reinterpret_cast<float*>(stg);
    constexpr int SF = OCF + 8, VC = OCF / 4;  // row stride (floats), 16-byte pieces of a row
#pragma unroll
    for (int pass = 0; pass < CG / OCF; ++pass) {
        __syncwarp();  // the staging tile's previous contents are consumed
#pragma unroll
        for (int nt = 0; nt < OCF / 8; ++nt)
#pragma unroll
            for (int x = 0; x < 2; ++x) {
                const float* a = o[pass * (OCF / 8) + nt];
                *reinterpret_cast<float2*>(sf + (gid + 8 * x) * SF + 8 * nt + 2 * tig) = {a[2 * x] * f[x], a[2 * x + 1] * f[x]};
            }
        __syncwarp();
#pragma unroll
        for (int i = 0; i < VC / 2; ++i) {
            const int u = lane + 32 * i, r = u / VC, c = u % VC;
            if (t + r < tn)
                *reinterpret_cast<float4*>(out + (row0 + t + r) * (H * D) + h * D + cgo + pass * OCF + 4 * c) =
                    *reinterpret_cast<const float4*>(sf + r * SF + 4 * c);
        }
    }
    __syncwarp();
}
__device__ __forceinline__ void write_out(bf16* out, float (&o)[CG / 8][4], float (&l)[2], bf16* stg, long long row0,
        int t, int tn, int h, int cgo) {
    const int lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const float f[2] = {row_scale(l, 0), row_scale(l, 1)};
    constexpr int VC = CG / 8;  // 16-byte pieces of a row
    __syncwarp();
#pragma unroll
    for (int nt = 0; nt < CG / 8; ++nt)
#pragma unroll
        for (int x = 0; x < 2; ++x)
            *reinterpret_cast<unsigned*>(stg + (gid + 8 * x) * KLD + 8 * nt + 2 * tig) =
                pack_bf16(o[nt][2 * x] * f[x], o[nt][2 * x + 1] * f[x]);
    __syncwarp();
#pragma unroll
    for (int i = 0; i < VC / 2; ++i) {
        const int u = lane + 32 * i, r = u / VC, c = u % VC;
        if (t + r < tn)
            *reinterpret_cast<uint4*>(out + (row0 + t + r) * (H * D) + h * D + cgo + 8 * c) =
                *reinterpret_cast<const uint4*>(stg + r * KLD + 8 * c);
    }
    __syncwarp();
}
"#;

/// The tensor-core body's compile-time constants.
fn tc_consts(spec: &LigerSpec, t: &TcTile) -> String {
    let (h, kv, g, d) = dims(spec);
    format!(
        r#"constexpr int H = {h};
constexpr int HKV = {kv};
constexpr int G = {g};
constexpr int D = {d};
constexpr int W = {w};              // a query sees itself and the W previous tokens
constexpr int NRING = W + 1;
constexpr int TQ = {tq};             // query tokens per block
constexpr int RT = TQ / 16;         // 16-row tiles of the block
constexpr int CG = {cg};            // output columns per warp task
constexpr int NTASK = G * RT * (D / CG);  // warp tasks: (row tile, query head, column group)
constexpr int NW = {nw};              // warps per block
constexpr int NT = 32 * NW;         // threads per block
constexpr int NROUND = (NTASK + NW - 1) / NW;  // tasks per warp
constexpr int NB = {nb};              // key tiles in a row tile's band (keys p - W ..= p)
constexpr int KCT = {kct};             // key tiles per shared-memory stage
constexpr int NSTAGE = {nstage};          // stages of the block's {nkt} key tiles
constexpr int NKC = {nkc};             // key tiles per softmax step
constexpr bool ONE_PASS = {one_pass};  // one stage, one step: the softmax in one pass
constexpr int OCF = {ocf};            // f32 output columns per pass through the staging tile
constexpr int KLD = D + 8;          // row stride (bf16) of the staged keys, values and queries
constexpr int SWF = 16 * (KLD / 2 > OCF + 8 ? KLD / 2 : OCF + 8);  // floats of a warp's staging tile
constexpr float SCALE_LOG2 = {scale_log2};  // 1/sqrt(D) log2(e): scores in base 2
constexpr float MIX = {mix};        // mix_window
"#,
        w = spec.window,
        tq = t.tq,
        cg = t.cg,
        nw = t.nw,
        nb = t.nb,
        kct = t.kct,
        nkt = t.nkt,
        nkc = t.nkc,
        nstage = t.stages(),
        one_pass = t.one_pass(),
        ocf = t.ocf,
        scale_log2 = float_lit(std::f64::consts::LOG2_E / (d as f64).sqrt()),
        mix = float_lit(spec.mix_window),
    )
}

/// The tensor-core body (see the module doc).
fn window_prefill_tc(spec: &LigerSpec, out: WindowOut) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let w = spec.window;
    let t = tc_tile(spec);
    let (ot, otag) = match out {
        WindowOut::Partial => ("bf16", "part"),
        WindowOut::Final => ("bf16", "out"),
    };
    let name = format!("liger_window_prefill_h{h}_kv{kv}_d{d}_w{w}_{otag}");
    let sig = format!(
        "const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot,
        const bf16* __restrict__ v, const bf16* __restrict__ ring_k, const bf16* __restrict__ ring_v,
        {ot}* __restrict__ out, int seq, const int* __restrict__ pos0_ptr"
    );
    let body = format!(
        r#"{consts}
{kv_row}
{mma}{cp}{device}
// At most 128 registers a thread: 16 warps an SM.
extern "C" __global__ void __launch_bounds__(NT, {min_blocks}) {name}({sig});

extern "C" __global__ void {name}({sig}) {{
    extern __shared__ float smem[];
    bf16* ks = reinterpret_cast<bf16*>(smem);  // [16 KCT][KLD] keys of the stage
    bf16* vs = ks + 16 * KCT * KLD;            // [16 KCT][KLD] values of the stage
    const int pos0 = *pos0_ptr;  // device memory: one captured graph serves every step
    const int warp = threadIdx.x >> 5;
    bf16* stg = reinterpret_cast<bf16*>(smem + 16 * KCT * KLD + warp * SWF);  // [16][KLD] this warp's staging tile
    const int t0 = blockIdx.x * TQ, j = blockIdx.y, b = blockIdx.z;
    const int tn = min(TQ, seq - t0);  // query tokens of this tile
    const int p0 = pos0 + t0;          // position of the tile's first query; block key column c is position p0 - W + c
    const int kend = p0 + tn;          // the tile's keys are below kend
    const int kmin = W - p0;           // the first column at a position >= 0
    const int klo = max(kmin, 0) / 16; // the first key tile not wholly before position 0
    const long long row0 = (long long)b * seq + t0;  // token row of the tile's first query
    if constexpr (NSTAGE == 1) stage_kv(ks, vs, k_rot, v, ring_k, ring_v, b, j, seq, pos0, p0 - W, kend);
    for (int round = 0; round < NROUND; ++round) {{  // block-uniform
        const int task = round * NW + warp;
        const int ii = task % RT, g = task / RT % G, cgo = task / (RT * G) * CG;
        const int h = j * G + g, lo = max(ii, klo), hi = ii + NB;  // the row tile's band: key tiles [lo, hi)
        const bool active = task < NTASK && 16 * ii < tn;          // warp-uniform
        if (active) load_q(stg, q_rot, row0, 16 * ii, tn, h);
        float o[CG / 8][4], m[2] = {{neg_inf(), neg_inf()}}, l[2] = {{0.0f, 0.0f}};
        if constexpr (ONE_PASS) {{
            cp_async_wait_all();
            if (round == 0) __syncthreads();  // the keys and values, the queries
            else __syncwarp();                // the queries
            if (active) softmax_step<true>(o, m, l, stg, ks, vs, ii, lo, hi, 0, kmin, cgo);
        }} else {{
            for (int nt = 0; nt < CG / 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
            for (int s = 0; s < NSTAGE; ++s) {{
                const int sb = s * KCT, se = min(hi, sb + KCT);  // the stage's key tiles [sb, sb + KCT)
                if (NSTAGE > 1) {{
                    __syncthreads();  // the previous stage is consumed
                    stage_kv(ks, vs, k_rot, v, ring_k, ring_v, b, j, seq, pos0, p0 - W + 16 * sb, kend);
                }}
                cp_async_wait_all();
                __syncthreads();
                if (active)
                    for (int kt0 = max(lo, sb); kt0 < se; kt0 += NKC)
                        softmax_step<false>(o, m, l, stg, ks, vs, ii, kt0, se, sb, kmin, cgo);
            }}
        }}
        if (active) write_out(out, o, l, stg, row0, 16 * ii, tn, h, cgo);
    }}
}}
"#,
        consts = tc_consts(spec, &t),
        kv_row = KV_ROW,
        mma = MMA_PRELUDE,
        cp = CP_ASYNC,
        device = TC_DEVICE,
        min_blocks = (16 / t.nw).max(1),
    );
    let nstage = t.stages();
    KernelSrc {
        name,
        summary: format!(
            "Liger window branch, prefill, tensor cores: causal softmax over the last {} keys (GQA {h}/{kv}, D {d}, scale 1/√D), × mix_window {}; a tile of {} queries × its keys and values staged once in shared memory (bf16, {nstage} stage(s) of {} rows) for all {g} query heads; a warp per (query head, 16-row tile, {} output columns): S = QKᵀ over the band, softmax and O = PV on bf16 mma.sync, fragments in registers",
            w + 1,
            spec.mix_window,
            t.tq,
            16 * t.kct,
            t.cg,
        ),
        body,
        block: [(32 * t.nw) as u32, 1, 1],
        smem: tc_smem(&t, d) as u32,
        grid: format!(
            "(ceil(seq/{tq}), {kv}, batch): one block per ({tq} tokens, KV head, row), {nw} warps taking the {tasks} (query head, 16-row tile, column group) tasks in turn",
            tq = t.tq,
            nw = t.nw,
            tasks = g.max(1) * (t.tq / 16) * (d / t.cg),
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
        WindowOut::Partial => ("bf16", "part"),
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

#[cfg(test)]
mod tests {
    use super::super::test_spec as spec;
    use super::*;

    /// The target shape (H 32, KV 8, D 128, W 64): 64 queries and 8 warps a block, a band
    /// of 5 key tiles, all 8 of the block's key tiles in one stage, a one-pass softmax, and
    /// two blocks an SM.
    #[test]
    fn target_tiling() {
        let t = tc_tile(&spec(32, 8, 128, 64));
        assert_eq!(
            (t.tq, t.nw, t.cg, t.nb, t.nkt, t.kct),
            (64, 8, 128, 5, 8, 8)
        );
        assert!(t.one_pass());
        assert_eq!(window_smem(&spec(32, 8, 128, 64)), 106_496);
    }

    /// Every tensor-core shape stays within the shared-memory budget, its tasks cover the
    /// head dim and its stages cover the block's key tiles.
    #[test]
    fn tilings_fit() {
        for d in (16..=256).step_by(16) {
            for w in [0, 1, 3, 15, 16, 17, 64, 100, 112, 200, 511, 1024] {
                for (h, kv) in [(1, 1), (4, 1), (32, 8), (16, 2)] {
                    let t = tc_tile(&spec(h, kv, d, w));
                    assert!(tc_smem(&t, d) <= TC_SMEM_BUDGET, "D {d} W {w}: {t:?}");
                    assert!(
                        d.is_multiple_of(t.cg) && t.cg.is_multiple_of(t.ocf),
                        "{t:?}"
                    );
                    assert!(t.stages() * t.kct >= t.nkt && t.nkc >= 1, "{t:?}");
                    assert_eq!(t.nb, w.div_ceil(16) + 1);
                }
            }
        }
    }
}
