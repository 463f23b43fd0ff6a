//! The window branch of LigerAttention training on bf16 tensor cores
//! (`TrainMath::Bf16`): `win_fwd`, `win_dq`, `win_dkv` with the f32 kernels'
//! names and outputs (their statistics live in the saved buffer, which
//! `win_fwd` also takes), flash-attention-2 style on `mma.sync`
//! m16n8k16 (bf16 operands, f32 accumulation).
//!
//! The inputs are f32; every tile is converted to bf16 as it is staged in
//! shared memory (q, k, v, and `MIX_WIN · dy` — the output gradient `do` of
//! the unmixed window output `o`), rows of `D + 8` elements so `ldmatrix` rows
//! hit distinct banks. Softmax statistics, the running max and sums, `δ` and
//! every accumulator are f32; the probabilities `P` and `dS` are rounded to
//! bf16 only as the A operands of the next product, straight from the
//! registers of the product that made them.
//!
//! - `win_fwd`: a block per (`rt` 16-token row tiles, KV head, batch row)
//!   stages the keys and values its rows see once for all `G` query heads; a
//!   warp per (query head, row tile) stages its 16 queries and walks only the
//!   key tiles of its rows' band with an online softmax (base 2). It keeps
//!   each row's `lse` (base 2) and its unmixed output `o` (bf16) in the saved
//!   buffer for the backward.
//! - `win_dq`: the same blocks; a warp per (query head, row tile) takes its
//!   rows' `lse` and `δ = do·o` from the saved buffer (no pass for the
//!   statistics, as flash attention 2), then walks its band once: `P = 2^(s −
//!   lse)`, `dP = do·vᵀ`, `dS = P ⊙ (dP − δ)` and `DQRot = SCALE · dS·K`.
//!   Keeps `δ` next to `lse` for `win_dkv`.
//! - `win_dkv`: a block per (`kt` key tiles, KV head, batch row) stages its
//!   keys and values once and walks the (16 tokens, query head) tiles that
//!   see them, four a step: the step's `Pᵀ = 2^(K·Qᵀ − lse)` and `dSᵀ` (one
//!   warp per (key tile, query tile) pair of the band) go to shared memory as
//!   bf16, then each warp accumulates `DV += Pᵀ·do`, `DKRot += dSᵀ·Q` for its
//!   (key tile, column group). Deterministic: each key's sums over the query
//!   heads stay in one warp's registers (no atomics).
//!
//! Tile counts `rt`, `kt` are 4, 2 or 1, picked per launch (the largest that
//! still gives every SM a block: [`SMS`]); the kernels read them back from
//! their grid, `ceil(ceil(seq / 16) / gridDim.x)`.
//!
//! Head dims must be multiples of 16 up to 128 (the f32 kernels run the
//! others; GSA's source takes these too).

use std::fmt::Write as _;

use ligerc_ir::LigerSpec;

use super::TrainMath;
use super::grid_dim;
use super::source::{Shape, window_kernels};
use crate::cuda::CudaError;
use crate::cuda::kernels::liger::MMA_PRELUDE;
use crate::cuda::kernels::{CP_ASYNC, float_lit};

/// Streaming multiprocessors of the target GPU (H100 SXM): a launch takes the
/// largest tiles that still give each one a block.
const SMS: usize = 132;
/// Dynamic shared memory a window block aims to stay under: two blocks an SM
/// (227 KiB).
const SMEM_BUDGET: usize = 113 * 1024;
/// Most warps of a query-side block (`win_fwd`, `win_dq`).
const QUERY_WARPS: usize = 8;
/// Most row tiles of a query-side block and key tiles of a `win_dkv` block.
const MAX_TILES: usize = 4;
/// Query tiles (16 tokens of one head) a `win_dkv` step stages.
const NQ: usize = 4;
/// Largest head dim of the tensor-core kernels (the output or `DQRot`
/// accumulators of 16 rows take `D / 2` registers a lane).
const MAX_D: usize = 128;

/// Tiling of the tensor-core window kernels of one spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct WinTc {
    /// Query heads per KV head.
    g: usize,
    /// Head dim (a multiple of 16, at most [`MAX_D`]).
    d: usize,
    /// Key tiles a row tile's band reaches back: `ceil(W / 16)`.
    reach: usize,
    /// `win_fwd`: most warps, key tiles a shared-memory stage, key tiles a softmax step.
    fwd: QuerySide,
    /// `win_dq`: the same.
    dq: QuerySide,
    /// `win_dkv`: column groups of `D / ncg` (a multiple of 16) a key tile's warps split.
    ncg: usize,
    /// `win_dkv`: most key tiles a block (`ncg` warps each).
    ktm: usize,
}

/// The tiling of a query-side kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct QuerySide {
    /// Most warps a block (fewer when a block has fewer (head, row tile) tasks).
    nw: usize,
    /// Key tiles (keys and values) a shared-memory stage.
    kct: usize,
    /// Key tiles a softmax step.
    nkc: usize,
}

/// Grid, threads and dynamic shared memory of one window launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct WinLaunch {
    /// Blocks in x, y, z.
    pub(super) grid: (u32, u32, u32),
    /// Threads a block.
    pub(super) block: usize,
    /// Dynamic shared memory, bytes.
    pub(super) smem: u32,
}

/// The tensor-core tiling of `spec`'s window kernels, or `None` where they do
/// not apply: `math` is `F32`, or the head dim is not a multiple of 16 up to
/// [`MAX_D`] (those specs keep the f32 window kernels).
pub(super) fn tiling(spec: &LigerSpec, math: TrainMath) -> Option<WinTc> {
    let (h, kv, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    if math != TrainMath::Bf16
        || d == 0
        || !d.is_multiple_of(16)
        || d > MAX_D
        || kv == 0
        || !h.is_multiple_of(kv)
    {
        return None;
    }
    let g = h / kv;
    let tile = tile_bytes(d);
    let reach = spec.window.div_ceil(16);
    // The key tiles of a block of MAX_TILES row tiles (the band of its first row tile
    // reaches `reach` tiles back).
    let nkt = (MAX_TILES + reach).min(1 << 20);
    // win_fwd: a staging tile a warp, then as many key tiles (keys and values) a stage as fit.
    let nw = (MAX_TILES * g).min(QUERY_WARPS);
    let fit = |staging: usize| SMEM_BUDGET.saturating_sub(staging) / (2 * tile);
    let fwd = QuerySide {
        nw,
        kct: fit(nw * tile).clamp(1, nkt),
        nkc: if d <= 64 { 4 } else { 2 },
    };
    // win_dq: two staging tiles a warp (q, do); fewer warps where that keeps the block's
    // keys in one stage (every round of tasks then reads them from there).
    let nw_dq = [nw, 4, 2]
        .into_iter()
        .filter(|&n| n <= nw)
        .find(|&n| fit(2 * n * tile) >= nkt)
        .unwrap_or(nw.min(4));
    let dq = QuerySide {
        nw: nw_dq,
        kct: fit(2 * nw_dq * tile).clamp(1, nkt),
        nkc: if d <= 64 { 2 } else { 1 },
    };
    // win_dkv: the column groups of a key tile's warps, each at most 64 columns (dk and dv
    // accumulators: CG / 2 registers a lane), two or more from D 32 on.
    let c16 = d / 16;
    let per = (1..=4)
        .rev()
        .find(|&x| c16.is_multiple_of(x) && (c16 / x >= 2 || c16 == 1))
        .unwrap_or(1);
    let ncg = c16 / per;
    Some(WinTc {
        g,
        d,
        reach,
        fwd,
        dq,
        ncg,
        ktm: (8 / ncg).clamp(1, MAX_TILES),
    })
}

/// Bytes of one `[16][D + 8]` bf16 tile.
fn tile_bytes(d: usize) -> usize {
    16 * (d + 8) * 2
}

/// The window kernels of `spec` for `shape`: the tensor-core ones where
/// [`tiling`] gives a tiling, else the f32 kernels.
pub(super) fn window_source(spec: &LigerSpec, prefix: &str, shape: Shape) -> String {
    match tiling(spec, shape.math) {
        Some(t) => t.source(prefix),
        None => window_kernels(prefix, shape.win),
    }
}

impl WinTc {
    /// Shared memory of `win_dkv` with `kt` key tiles, bytes: keys, values
    /// `[16 kt][D + 8]`, the step's queries and `do` `[16 NQ][D + 8]`, `Pᵀ`,
    /// `dSᵀ` `[16 kt][16 NQ + 8]` (bf16), `lse`, `δ` `[16 NQ]` (f32).
    fn dkv_smem(&self, kt: usize) -> usize {
        let tile = tile_bytes(self.d);
        2 * kt * tile + 2 * NQ * tile + 2 * 16 * kt * (16 * NQ + 8) * 2 + 2 * 16 * NQ * 4
    }

    /// The launches of `win_fwd`, `win_dq`, `win_dkv` for `kv` KV heads,
    /// `batch` rows of `seq` tokens (`seq > 0`, `batch > 0`).
    pub(super) fn launches(
        &self,
        kv: usize,
        batch: usize,
        seq: usize,
        node: &str,
    ) -> Result<[WinLaunch; 3], CudaError> {
        let n16 = seq.div_ceil(16);
        // The largest tile count up to `most` that gives every SM a block (1 if none does),
        // then the count each block takes, as the kernels compute it.
        let tiles = |most: usize| {
            let t = [4, 2, 1]
                .into_iter()
                .filter(|&t| t <= most)
                .find(|&t| n16.div_ceil(t) * kv * batch >= SMS)
                .unwrap_or(1);
            let gx = n16.div_ceil(t);
            (gx, n16.div_ceil(gx))
        };
        let tile = tile_bytes(self.d);
        let (gx, rt) = tiles(MAX_TILES);
        let grid = (
            grid_dim(gx, node)?,
            grid_dim(kv, node)?,
            grid_dim(batch, node)?,
        );
        let keys = |kct: usize| kct.min(rt + self.reach) * 2 * tile;
        let nw_f = self.fwd.nw.min(rt * self.g);
        let nw_q = self.dq.nw.min(rt * self.g);
        let (gk, kt) = tiles(self.ktm);
        Ok([
            WinLaunch {
                grid,
                block: 32 * nw_f,
                smem: (nw_f * tile + keys(self.fwd.kct)) as u32,
            },
            WinLaunch {
                grid,
                block: 32 * nw_q,
                smem: (2 * nw_q * tile + keys(self.dq.kct)) as u32,
            },
            WinLaunch {
                grid: (grid_dim(gk, node)?, grid.1, grid.2),
                block: 32 * kt * self.ncg,
                smem: self.dkv_smem(kt) as u32,
            },
        ])
    }

    /// The kernels' source (after the spec's constants: `H`, `HKV`, `G`, `D`,
    /// `W`, `SCALE`, `MIX_WIN`), kernel names starting `prefix`. It carries
    /// `CP_ASYNC` (as the f32 window source does, for the recurrence) and
    /// `MMA_PRELUDE` (a recurrence on tensor cores finds it there).
    fn source(&self, prefix: &str) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            r#"
// ---- Window branch on bf16 tensor cores: tiling
constexpr int WT_LD = D + 8;         // row stride (bf16) of the staged tiles: ldmatrix rows hit distinct banks
constexpr int WT_NW_F = {nw_f};         // win_fwd: most warps a block (a [16][WT_LD] query tile each)
constexpr int WT_KCT_F = {kct_f};        // win_fwd: key tiles (keys and values) a shared-memory stage
constexpr int WT_NKC_F = {nkc_f};        // win_fwd: key tiles a softmax step
constexpr int WT_NW_Q = {nw_q};         // win_dq: most warps a block (query and do tiles each)
constexpr int WT_KCT_Q = {kct_q};        // win_dq: key tiles a stage
constexpr int WT_NKC_Q = {nkc_q};        // win_dq: key tiles a step
constexpr int WT_NCG = {ncg};          // win_dkv: column groups of a key tile (a warp each)
constexpr int WT_KTM = {ktm};          // win_dkv: most key tiles a block
constexpr int WT_CG = D / WT_NCG;    // win_dkv: columns of a group
constexpr int WT_NQ = {nq};           // win_dkv: query tiles (16 tokens of one head) a step
constexpr int WT_PLD = 16 * WT_NQ + 8;  // win_dkv: row stride (bf16) of the [16 kt][16 NQ] P^T and dS^T tiles
constexpr float WT_SCALE_LOG2 = {scale_log2};  // SCALE * log2(e): scores in base 2
static_assert(D % 16 == 0 && WT_CG % 16 == 0, "bf16 mma tiles");
"#,
            nw_f = self.fwd.nw,
            kct_f = self.fwd.kct,
            nkc_f = self.fwd.nkc,
            nw_q = self.dq.nw,
            kct_q = self.dq.kct,
            nkc_q = self.dq.nkc,
            ncg = self.ncg,
            ktm = self.ktm,
            nq = NQ,
            scale_log2 = float_lit(std::f64::consts::LOG2_E / (self.d as f64).sqrt()),
        );
        let mut kernels = KERNELS.replace("@P@", prefix);
        for (name, warps, threads) in [
            ("win_fwd", "WT_NW_F", 32 * self.fwd.nw),
            ("win_dq", "WT_NW_Q", 32 * self.dq.nw),
            ("win_dkv", "WT_KTM * WT_NCG", 32 * self.ktm * self.ncg),
        ] {
            kernels = with_bounds(&kernels, &format!("{prefix}_{name}"), warps, threads);
        }
        format!("{CP_ASYNC}{MMA_PRELUDE}{s}{DEVICE}{kernels}")
    }
}

/// `kernels` with a prototype of entry point `name` carrying its
/// `__launch_bounds__` before its definition: the most threads of a block (`32
/// · warps`, `threads` of them), and the blocks an SM that keep a thread at
/// 128 registers or fewer (the definition keeps the plain `extern "C"
/// __global__ void name(` form the launch checks look for).
fn with_bounds(kernels: &str, name: &str, warps: &str, threads: usize) -> String {
    let head = format!("extern \"C\" __global__ void {name}(");
    let Some(at) = kernels.find(&head) else {
        return kernels.to_string();
    };
    let sig_end = kernels[at..]
        .find(") {")
        .map_or(kernels.len(), |e| at + e + 1);
    let sig = &kernels[at + head.len()..sig_end];
    let blocks = (65_536 / (threads * 128)).max(1);
    format!(
        "{}extern \"C\" __global__ void __launch_bounds__(32 * ({warps}), {blocks}) {name}({sig};\n{}",
        &kernels[..at],
        &kernels[at..]
    )
}

/// Device helpers of the tensor-core window kernels: staging, the two
/// products, masks, the online softmax.
const DEVICE: &str = r#"
// Fragments of mma.sync m16n8k16 (gid = lane / 4, tig = lane % 4): a C fragment holds rows gid, gid + 8 at
// columns 2 tig, 2 tig + 1 of an 8-column tile; the A fragment of a 16x16 tile is the C fragments of its two
// 8-column halves, packed to bf16 (P and dS go from one product into the next in registers).
__device__ __forceinline__ int wt_lane() { return threadIdx.x & 31; }
// ldmatrix lane offsets in a tile of stride ld: A fragments of a 16x16 tile (.trans: the B fragments of its two
// 8-column halves, k along the rows); B fragments of two 8-row tiles (k along the row).
__device__ __forceinline__ int wt_a_at(int ld) {
    const int l = wt_lane();
    return ((l & 7) + 8 * ((l >> 3) & 1)) * ld + 8 * (l >> 4);
}
__device__ __forceinline__ int wt_b_at(int ld) {
    const int l = wt_lane();
    return ((l & 7) + 8 * (l >> 4)) * ld + 8 * ((l >> 3) & 1);
}

// Eight floats at src (16-byte aligned; zeros when !ok) times scale into dst as bf16, one 16-byte store.
__device__ __forceinline__ void wt_cvt8(bf16* dst, const float* src, bool ok, float scale) {
    float4 a = {0.0f, 0.0f, 0.0f, 0.0f}, c = a;
    if (ok) {
        a = *reinterpret_cast<const float4*>(src);
        c = *reinterpret_cast<const float4*>(src + 4);
    }
    *reinterpret_cast<uint4*>(dst) = uint4{pack_bf16(scale * a.x, scale * a.y), pack_bf16(scale * a.z, scale * a.w),
                                          pack_bf16(scale * c.x, scale * c.y), pack_bf16(scale * c.z, scale * c.w)};
}

// n rows into dst [n][WT_LD] as bf16 times scale: row r is the D floats at src + at(r) (zeros where at(r) < 0).
// All threads of the block, consecutive threads on consecutive 32-byte pieces; no barrier.
template <typename At>
__device__ __forceinline__ void wt_stage(bf16* dst, const float* src, int n, At at, float scale) {
    constexpr int V = D / 8;
#pragma unroll 4
    for (int e = threadIdx.x; e < n * V; e += blockDim.x) {
        const int r = e / V, c = 8 * (e % V);
        const long long o = at(r);
        wt_cvt8(dst + r * WT_LD + c, o >= 0 ? src + o + c : src, o >= 0, scale);
    }
}

// The warp's 16 query rows: tokens r0 .. r0 + 15 (from token row row0) of head h of src [.][H * D] into its tile
// dst [16][WT_LD] as bf16 times scale, rows at or past seq zero. Warp-collective, no barrier.
__device__ __forceinline__ void wt_stage_q(bf16* dst, const float* src, long long row0, int r0, int h, int seq, float scale) {
    constexpr int V = D / 8;
#pragma unroll 4
    for (int i = 0; i < V / 2; ++i) {  // 16 V pieces, 32 lanes
        const int e = wt_lane() + 32 * i, r = e / V, c = 8 * (e % V);
        const bool ok = r0 + r < seq;
        wt_cvt8(dst + r * WT_LD + c, ok ? src + (row0 + r0 + r) * (H * D) + h * D + c : src, ok, scale);
    }
}

// s[u] = A B_u^T over D: the scores of the 16 rows of a against the 16 rows of each b + 16 u WT_LD (u < nu,
// warp-uniform; the others stay 0), as the C fragments of two 8-column halves.
template <int N>
__device__ __forceinline__ void wt_dots(float (&s)[N][2][4], const bf16* a, const bf16* b, int nu) {
    const bf16* ap = a + wt_a_at(WT_LD);
    const bf16* bp = b + wt_b_at(WT_LD);
#pragma unroll
    for (int u = 0; u < N; ++u)
#pragma unroll
        for (int e = 0; e < 8; ++e) s[u][e / 4][e % 4] = 0.0f;
#pragma unroll 2  // (fully unrolled, the fragments of every step are hoisted: spills)
    for (int kk = 0; kk < D / 16; ++kk) {
        unsigned x[4];
        ldsm_x4(x, ap + 16 * kk);
#pragma unroll
        for (int u = 0; u < N; ++u) {
            if (u >= nu) break;
            unsigned y[4];
            ldsm_x4(y, bp + 16 * u * WT_LD + 16 * kk);
            mma_bf16(s[u][0], x, y[0], y[1]);
            mma_bf16(s[u][1], x, y[2], y[3]);
        }
    }
}

// acc[n] += A B[:, 8n ..+ 8] for the CW columns of b (16 rows of stride ld from its first column): a the A fragment
// of a 16x16 tile, B's fragments by ldmatrix.trans.
template <int CW>
__device__ __forceinline__ void wt_acc(float (&acc)[CW / 8][4], const unsigned (&a)[4], const bf16* b) {
    const bf16* bp = b + wt_a_at(WT_LD);
#pragma unroll
    for (int np = 0; np < CW / 16; ++np) {
        unsigned r[4];
        ldsm_x4_t(r, bp + 16 * np);
        mma_bf16(acc[2 * np], a, r[0], r[1]);
        mma_bf16(acc[2 * np + 1], a, r[2], r[3]);
    }
}

// The A fragment of a 16x16 tile from the C fragments of its two 8-column halves, rounded to bf16.
__device__ __forceinline__ void wt_pack(unsigned (&a)[4], const float (&s)[2][4]) {
    a[0] = pack_bf16(s[0][0], s[0][1]);
    a[1] = pack_bf16(s[0][2], s[0][3]);
    a[2] = pack_bf16(s[1][0], s[1][1]);
    a[3] = pack_bf16(s[1][2], s[1][3]);
}

__device__ __forceinline__ float wt_quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float wt_quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Base-2 scores of the warp's rows (tokens r0 + gid, r0 + gid + 8) against the keys of tiles u < nu from position
// k0 + 16 u: s * WT_SCALE_LOG2 inside the row's window (keys t - W ..= t of a token t < seq), else -inf.
template <int N>
__device__ __forceinline__ void wt_mask(float (&s)[N][2][4], int nu, int k0, int r0, int seq) {
    const int gid = wt_lane() >> 2, tig = wt_lane() & 3;
#pragma unroll
    for (int u = 0; u < N; ++u)
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            const int n = e / 4, x = e % 4;
            const int kp = k0 + 16 * u + 8 * n + 2 * tig + (x & 1), tp = r0 + gid + 8 * (x >> 1);
            const bool ok = u < nu && tp < seq && kp <= tp && tp - kp <= W;
            s[u][n][x] = ok ? s[u][n][x] * WT_SCALE_LOG2 : neg_inf();
        }
}

// The online softmax's new running max m of the warp's rows (x = 0: row gid, 1: gid + 8; the quad agrees) over
// the masked scores s; ms the exponent base (0 for a row without keys yet), corr = 2^(m_old - ms) the rescale of
// what was summed before.
template <int N>
__device__ __forceinline__ void wt_online(float (&m)[2], float (&ms)[2], float (&corr)[2], const float (&s)[N][2][4]) {
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int u = 0; u < N; ++u)
#pragma unroll
        for (int e = 0; e < 8; ++e) mx[(e % 4) >> 1] = fmaxf(mx[(e % 4) >> 1], s[u][e / 4][e % 4]);
#pragma unroll
    for (int x = 0; x < 2; ++x) {
        mx[x] = wt_quad_max(mx[x]);
        ms[x] = mx[x] == neg_inf() ? 0.0f : mx[x];
        corr[x] = exp2f(m[x] - ms[x]);
        m[x] = mx[x];
    }
}

// A query-side block: rt row tiles of 16 tokens from t0 (rt = ceil(ceil(seq / 16) / gridDim.x)) of KV head j,
// batch row b; its keys max(0, t0 - W) .. tend - 1 in nkt tiles of 16 from kbase, in nstage stages of kct.
struct WtRows {
    int rt, t0, tend, kbase, nkt, kcs, nstage, j, b;
    __device__ WtRows(int seq, int kct) {
        const int n16 = (seq + 15) / 16;
        rt = (n16 + gridDim.x - 1) / gridDim.x;
        t0 = 16 * rt * blockIdx.x;
        tend = min(seq, t0 + 16 * rt);
        kbase = max(0, t0 - W);
        nkt = (tend - kbase + 15) / 16;
        kcs = min(kct, nkt);
        nstage = (nkt + kct - 1) / kct;
        j = blockIdx.y;
        b = blockIdx.z;
    }
    // Stage s: the block's key tiles from s * kct, keys into ks and values into vs ([16 kcs][WT_LD] each).
    __device__ void stage(bf16* ks, bf16* vs, const float* k_rot, const float* v, int s, int kct, int seq) const {
        const int p0 = kbase + 16 * s * kct, n = 16 * min(kct, nkt - s * kct);
        const long long kv0 = (long long)b * seq * (HKV * D) + j * D;
        auto at = [&](int r) { return p0 + r < seq ? kv0 + (long long)(p0 + r) * (HKV * D) : -1LL; };
        wt_stage(ks, k_rot, n, at, 1.0f);
        wt_stage(vs, v, n, at, 1.0f);
    }
    // Before stage s of a round of warp tasks: stage it (after a barrier, unless nothing is staged yet), or,
    // where the block's keys fit one stage staged in round 0, only order the warp. Block-uniform.
    __device__ void restage(bf16* ks, bf16* vs, const float* k_rot, const float* v, int s, int round, int kct,
                            int seq) const {
        if (nstage > 1 || round == 0) {
            if (s > 0 || round > 0) __syncthreads();  // the previous stage is consumed
            stage(ks, vs, k_rot, v, s, kct, seq);
            __syncthreads();
        } else {
            __syncwarp();
        }
    }
    // The band of row tile r0 .. r0 + 15: block key tiles [lo, hi).
    __device__ int lo(int r0) const { return (max(0, r0 - W) - kbase) / 16; }
    __device__ int hi(int r0, int seq) const { return (min(r0 + 15, seq - 1) - kbase) / 16 + 1; }
};
"#;

/// The three entry points (`@P@` the name prefix, `@BF@`, `@BQ@`, `@BK@`
/// their launch bounds).
const KERNELS: &str = r#"
// Window forward: y = MIX_WIN * softmax(q k^T SCALE) v over each query's window (overwrites y; with Y_SAVED
// the recurrence's fwd writes y from the saved o instead, and y is not touched here). Keeps, for the backward,
// each (token, head)'s lse (base 2) at stats[b][h][t] and o = softmax(..) v as bf16 [B seq][H D] just before
// stats (the saved buffer's start, 16-byte aligned: copied out of the warp's tile in 16-byte rows; win_dq's
// delta = do.o). Grid (ceil(ceil(seq / 16) / rt), HKV, batch) for rt = 1, 2 or 4 row tiles a block; min(WT_NW_F, rt G) warps take
// the block's (query head, row tile) tasks in turn. Shared: a [16][WT_LD] query tile a warp, then the stage's keys
// and values [16 kcs][WT_LD] (bf16), staged once for all G heads when the block's keys fit one stage.
extern "C" __global__ void @P@_win_fwd(const float* __restrict__ q_rot,
        const float* __restrict__ k_rot, const float* __restrict__ v, float* __restrict__ y,
        float* __restrict__ stats, int seq) {
    extern __shared__ float smem[];
    const WtRows blk(seq, WT_KCT_F);
    if (blk.t0 >= seq) return;  // block-uniform
    const int warp = threadIdx.x >> 5, nw = blockDim.x >> 5, gid = wt_lane() >> 2, tig = wt_lane() & 3;
    bf16* qs = reinterpret_cast<bf16*>(smem) + warp * 16 * WT_LD;
    bf16* ks = reinterpret_cast<bf16*>(smem) + nw * 16 * WT_LD;
    bf16* vs = ks + 16 * blk.kcs * WT_LD;
    const long long row0 = (long long)blk.b * seq;
    const int ntask = blk.rt * G;
    for (int round = 0; round * nw < ntask; ++round) {  // block-uniform
        const int task = round * nw + warp, h = blk.j * G + task / blk.rt, r0 = blk.t0 + 16 * (task % blk.rt);
        const bool active = task < ntask && r0 < seq;  // warp-uniform
        __syncwarp();  // the previous task's queries are consumed
        if (active) wt_stage_q(qs, q_rot, row0, r0, h, seq, 1.0f);
        const int lo = blk.lo(r0), hi = blk.hi(r0, seq);
        float o[D / 8][4], m[2] = {neg_inf(), neg_inf()}, l[2] = {0.0f, 0.0f};
#pragma unroll
        for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
        for (int s = 0; s < blk.nstage; ++s) {
            const int sb = s * WT_KCT_F;
            blk.restage(ks, vs, k_rot, v, s, round, WT_KCT_F, seq);
            if (!active) continue;
            for (int kt = max(lo, sb); kt < min(hi, sb + WT_KCT_F); kt += WT_NKC_F) {
                // One online-softmax step over key tiles kt .. kt + nu - 1: S = Q K^T, P = 2^(S - m), O = O corr + P V.
                const int nu = min(WT_NKC_F, min(hi, sb + WT_KCT_F) - kt);
                float sc[WT_NKC_F][2][4], ms[2], corr[2];
                wt_dots<WT_NKC_F>(sc, qs, ks + 16 * (kt - sb) * WT_LD, nu);
                wt_mask<WT_NKC_F>(sc, nu, blk.kbase + 16 * kt, r0, seq);
                wt_online<WT_NKC_F>(m, ms, corr, sc);
                unsigned pa[WT_NKC_F][4];
                float ls[2] = {0.0f, 0.0f};
#pragma unroll
                for (int u = 0; u < WT_NKC_F; ++u) {
#pragma unroll
                    for (int e = 0; e < 8; ++e) sc[u][e / 4][e % 4] = exp2f(sc[u][e / 4][e % 4] - ms[(e % 4) >> 1]);
                    wt_pack(pa[u], sc[u]);
#pragma unroll
                    for (int e = 0; e < 4; ++e) ls[e & 1] += bf_lo(pa[u][e]) + bf_hi(pa[u][e]);  // the rounded weights
                }
#pragma unroll
                for (int x = 0; x < 2; ++x) l[x] = l[x] * corr[x] + ls[x];
#pragma unroll
                for (int n = 0; n < D / 8; ++n)
#pragma unroll
                    for (int e = 0; e < 4; ++e) o[n][e] *= corr[e >> 1];
#pragma unroll
                for (int u = 0; u < WT_NKC_F; ++u)
                    if (u < nu) wt_acc<D>(o, pa[u], vs + 16 * (kt - sb + u) * WT_LD);
            }
        }
        if (!active) continue;
        __syncwarp();  // the queries are consumed: the tile takes o (bf16)
#pragma unroll
        for (int x = 0; x < 2; ++x) {
            const float sum = wt_quad_sum(l[x]);
            const int tp = r0 + gid + 8 * x;
            const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
            for (int n = 0; n < D / 8; ++n) {
                const float a = o[n][2 * x] * inv, c = o[n][2 * x + 1] * inv;
                if (!Y_SAVED && tp < seq)
                    *reinterpret_cast<float2*>(y + (row0 + tp) * (H * D) + h * D + 8 * n + 2 * tig) =
                        float2{MIX_WIN * a, MIX_WIN * c};
                *reinterpret_cast<unsigned*>(qs + (gid + 8 * x) * WT_LD + 8 * n + 2 * tig) = pack_bf16(a, c);
            }
            if (tig == 0 && tp < seq) stats[((long long)blk.b * H + h) * seq + tp] = sum > 0.0f ? m[x] + log2f(sum) : 0.0f;
        }
        __syncwarp();
        bf16* os = reinterpret_cast<bf16*>(stats) - (long long)gridDim.z * H * seq * D;
        constexpr int V = D / 8;  // 16-byte pieces a row
#pragma unroll 4
        for (int e = wt_lane(); e < 16 * V; e += 32) {
            const int r = e / V, c = 8 * (e % V);
            if (r0 + r < seq)
                *reinterpret_cast<uint4*>(os + (row0 + r0 + r) * (H * D) + h * D + c) =
                    *reinterpret_cast<const uint4*>(qs + r * WT_LD + c);
        }
    }
}

// Window backward, query side: with do = MIX_WIN * dy, dp = do v^T, delta = do.o = sum_s p_s dp_s,
// dq_rot = SCALE * sum_s p_s (dp_s - delta) k_s. A warp per (query head, row tile) as win_fwd: its rows' lse (base 2)
// from `stats` and delta = do.o from the forward's o (bf16, saved just before stats; do as staged, the bf16 that
// dp uses), then one walk of its band: P = 2^(s - lse), dS = P (dp - delta) (bf16 A fragments) and dq += dS K.
// Writes delta at stats + B H seq + [b][h][t] for win_dkv. Grid as win_fwd, min(WT_NW_Q, rt G) warps.
// Shared: a query and a do tile [16][WT_LD] a warp, then the stage's keys and values [16 kcs][WT_LD] (bf16).
extern "C" __global__ void @P@_win_dq(const float* __restrict__ q_rot,
        const float* __restrict__ k_rot, const float* __restrict__ v, const float* __restrict__ dy,
        float* __restrict__ dq_rot, float* __restrict__ stats, int seq) {
    extern __shared__ float smem[];
    const WtRows blk(seq, WT_KCT_Q);
    if (blk.t0 >= seq) return;  // block-uniform
    const int warp = threadIdx.x >> 5, nw = blockDim.x >> 5, gid = wt_lane() >> 2, tig = wt_lane() & 3;
    bf16* qs = reinterpret_cast<bf16*>(smem) + 2 * warp * 16 * WT_LD;
    bf16* dos = qs + 16 * WT_LD;
    bf16* ks = reinterpret_cast<bf16*>(smem) + 2 * nw * 16 * WT_LD;
    bf16* vs = ks + 16 * blk.kcs * WT_LD;
    const long long row0 = (long long)blk.b * seq, nst = (long long)gridDim.z * H * seq;
    const bf16* os = reinterpret_cast<const bf16*>(stats) - nst * D;
    const int ntask = blk.rt * G;
    for (int round = 0; round * nw < ntask; ++round) {  // block-uniform
        const int task = round * nw + warp, h = blk.j * G + task / blk.rt, r0 = blk.t0 + 16 * (task % blk.rt);
        const bool active = task < ntask && r0 < seq;  // warp-uniform
        const long long st = ((long long)blk.b * H + h) * seq;
        float lse[2] = {0.0f, 0.0f}, dl[2] = {0.0f, 0.0f}, dq[D / 8][4];
#pragma unroll
        for (int n = 0; n < D / 8; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
        __syncwarp();  // the previous task's tiles are consumed
        if (active) {
            wt_stage_q(qs, q_rot, row0, r0, h, seq, 1.0f);
            wt_stage_q(dos, dy, row0, r0, h, seq, MIX_WIN);
            __syncwarp();
            // lse and delta of rows gid (x = 0), gid + 8 (x = 1): the quad's lanes take D / 4 columns each
#pragma unroll
            for (int x = 0; x < 2; ++x) {
                const int tp = r0 + gid + 8 * x;
                float acc = 0.0f;
                if (tp < seq) {
                    const bf16* orow = os + (row0 + tp) * (H * D) + h * D + tig * (D / 4);
                    const bf16* drow = dos + (gid + 8 * x) * WT_LD + tig * (D / 4);
#pragma unroll
                    for (int c = 0; c < D / 4; c += 4) {
                        const uint2 o4 = *reinterpret_cast<const uint2*>(orow + c);
                        const uint2 d4 = *reinterpret_cast<const uint2*>(drow + c);
                        acc += bf_lo(o4.x) * bf_lo(d4.x) + bf_hi(o4.x) * bf_hi(d4.x) + bf_lo(o4.y) * bf_lo(d4.y) +
                               bf_hi(o4.y) * bf_hi(d4.y);
                    }
                    lse[x] = stats[st + tp];
                }
                dl[x] = wt_quad_sum(acc);
            }
        }
        const int lo = blk.lo(r0), hi = blk.hi(r0, seq);
        for (int s = 0; s < blk.nstage; ++s) {
            const int sb = s * WT_KCT_Q;
            blk.restage(ks, vs, k_rot, v, s, round, WT_KCT_Q, seq);
            if (!active) continue;
            for (int kt = max(lo, sb); kt < min(hi, sb + WT_KCT_Q); kt += WT_NKC_Q) {
                const int nu = min(WT_NKC_Q, min(hi, sb + WT_KCT_Q) - kt);
                float sc[WT_NKC_Q][2][4], dp[WT_NKC_Q][2][4];
                wt_dots<WT_NKC_Q>(sc, qs, ks + 16 * (kt - sb) * WT_LD, nu);
                wt_dots<WT_NKC_Q>(dp, dos, vs + 16 * (kt - sb) * WT_LD, nu);
                wt_mask<WT_NKC_Q>(sc, nu, blk.kbase + 16 * kt, r0, seq);
#pragma unroll
                for (int w = 0; w < WT_NKC_Q; ++w) {  // dS = P (dp - delta), dq += dS K
#pragma unroll
                    for (int e = 0; e < 8; ++e) {
                        const int x = (e % 4) >> 1;
                        const float p = exp2f(sc[w][e / 4][e % 4] - lse[x]);
                        sc[w][e / 4][e % 4] = p * (dp[w][e / 4][e % 4] - dl[x]);
                    }
                    unsigned a[4];
                    wt_pack(a, sc[w]);
                    if (w < nu) wt_acc<D>(dq, a, ks + 16 * (kt - sb + w) * WT_LD);
                }
            }
        }
        if (!active) continue;
#pragma unroll
        for (int x = 0; x < 2; ++x) {
            const int tp = r0 + gid + 8 * x;
            if (tp >= seq) continue;
#pragma unroll
            for (int n = 0; n < D / 8; ++n)
                *reinterpret_cast<float2*>(dq_rot + (row0 + tp) * (H * D) + h * D + 8 * n + 2 * tig) =
                    float2{SCALE * dq[n][2 * x], SCALE * dq[n][2 * x + 1]};
            if (tig == 0) stats[nst + st + tp] = dl[x];
        }
    }
}

// Window backward, key side: for the keys s of the block, over the (token, head) rows t that see them
// (s <= t <= s + W): p = 2^(q.k SCALE log2(e) - lse_t), ds = p (do.v - delta_t) with do = MIX_WIN dy;
// dk_rot = SCALE sum ds q, dv = sum p do (both overwritten). Grid (ceil(ceil(seq / 16) / kt), HKV, batch) for
// kt = 1, 2 or 4 key tiles a block, 32 kt WT_NCG threads. The query tiles (16 tokens of one head, token-major:
// tile i = tokens s0 + 16 (i / G) .., head i % G) go WT_NQ a step: stage q, do, lse, delta; a warp per
// (key tile, query tile) pair of the band writes P^T and dS^T (bf16) to shared memory; warp w accumulates dv, dk
// of key tile w / WT_NCG, columns (w % WT_NCG) WT_CG .. in registers. Shared: keys, values [16 kt][WT_LD], q, do
// [16 NQ][WT_LD], P^T, dS^T [16 kt][WT_PLD] (bf16), lse, delta [16 NQ] (f32).
extern "C" __global__ void @P@_win_dkv(const float* __restrict__ q_rot,
        const float* __restrict__ k_rot, const float* __restrict__ v, const float* __restrict__ dy,
        const float* __restrict__ stats, float* __restrict__ dk_rot, float* __restrict__ dv, int seq) {
    extern __shared__ float smem[];
    const int n16 = (seq + 15) / 16, kt = (n16 + gridDim.x - 1) / gridDim.x;
    const int s0 = 16 * kt * blockIdx.x, j = blockIdx.y, b = blockIdx.z;
    if (s0 >= seq) return;  // block-uniform
    const int warp = threadIdx.x >> 5, nw = blockDim.x >> 5, gid = wt_lane() >> 2, tig = wt_lane() & 3;
    bf16* ks = reinterpret_cast<bf16*>(smem);
    bf16* vs = ks + 16 * kt * WT_LD;
    bf16* qs = vs + 16 * kt * WT_LD;
    bf16* dos = qs + 16 * WT_NQ * WT_LD;
    bf16* pt = dos + 16 * WT_NQ * WT_LD;
    bf16* dst = pt + 16 * kt * WT_PLD;
    float* lse = reinterpret_cast<float*>(dst + 16 * kt * WT_PLD);
    float* dlt = lse + 16 * WT_NQ;
    const int klast = min(seq - 1, s0 + 16 * kt - 1), nkt = (klast - s0) / 16 + 1;
    const int qlast = seq - 1 - klast <= W ? seq - 1 : klast + W;  // the last token that sees a key of the block
    const int ntile = ((qlast - s0) / 16 + 1) * G;
    const long long row0 = (long long)b * seq, kv0 = row0 * (HKV * D) + j * D;
    const long long st = (long long)b * H * seq, nst = (long long)gridDim.z * H * seq;
    {
        auto at = [&](int r) { return s0 + r < seq ? kv0 + (long long)(s0 + r) * (HKV * D) : -1LL; };
        wt_stage(ks, k_rot, 16 * kt, at, 1.0f);
        wt_stage(vs, v, 16 * kt, at, 1.0f);
    }
    // Whether key tile k (keys s0 + 16 k ..) and token tile u (tokens s0 + 16 u ..) hold a (key, token) pair in
    // the window.
    auto sees = [&](int k, int u) { return k < nkt && u >= k && 16 * (u - k) <= W + 15; };
    const int kw = warp / WT_NCG, cw = (warp % WT_NCG) * WT_CG;
    float dk[WT_CG / 8][4], dvv[WT_CG / 8][4];
#pragma unroll
    for (int n = 0; n < WT_CG / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) dk[n][e] = dvv[n][e] = 0.0f;
    for (int i0 = 0; i0 < ntile; i0 += WT_NQ) {  // block-uniform
        if (i0 > 0) __syncthreads();  // the previous step's tiles are consumed
        auto qrow = [&](int r) {
            const int i = i0 + r / 16, t = s0 + 16 * (i / G) + r % 16;
            return i < ntile && t < seq ? (row0 + t) * (H * D) + (j * G + i % G) * D : -1LL;
        };
        wt_stage(qs, q_rot, 16 * WT_NQ, qrow, 1.0f);
        wt_stage(dos, dy, 16 * WT_NQ, qrow, MIX_WIN);
        for (int r = threadIdx.x; r < 16 * WT_NQ; r += blockDim.x) {
            const int i = i0 + r / 16, t = s0 + 16 * (i / G) + r % 16;
            const bool ok = i < ntile && t < seq;
            const long long o = st + (long long)(j * G + i % G) * seq + t;
            lse[r] = ok ? stats[o] : 0.0f;
            dlt[r] = ok ? stats[nst + o] : 0.0f;
        }
        __syncthreads();
        // P^T and dS^T of the step's (key tile, query tile) pairs in the band, the c-th such pair on warp c % nw.
        int c = 0;
        for (int k = 0; k < kt; ++k)
            for (int qi = 0; qi < WT_NQ; ++qi) {
                const int i = i0 + qi;
                if (i >= ntile || !sees(k, i / G)) continue;
                if (c++ % nw != warp) continue;
                float sc[1][2][4], dp[1][2][4];
                wt_dots<1>(sc, ks + 16 * k * WT_LD, qs + 16 * qi * WT_LD, 1);
                wt_dots<1>(dp, vs + 16 * k * WT_LD, dos + 16 * qi * WT_LD, 1);
                const int t0 = s0 + 16 * (i / G);
#pragma unroll
                for (int n = 0; n < 2; ++n)
#pragma unroll
                    for (int x = 0; x < 2; ++x) {
                        float p[2], ds[2];
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            const int qr = 16 * qi + 8 * n + 2 * tig + e, tp = t0 + 8 * n + 2 * tig + e;
                            const int kp = s0 + 16 * k + gid + 8 * x;
                            const bool ok = tp < seq && kp <= tp && tp - kp <= W;
                            p[e] = ok ? exp2f(sc[0][n][2 * x + e] * WT_SCALE_LOG2 - lse[qr]) : 0.0f;
                            ds[e] = p[e] * (dp[0][n][2 * x + e] - dlt[qr]);
                        }
                        const int at = (16 * k + gid + 8 * x) * WT_PLD + 16 * qi + 8 * n + 2 * tig;
                        *reinterpret_cast<unsigned*>(pt + at) = pack_bf16(p[0], p[1]);
                        *reinterpret_cast<unsigned*>(dst + at) = pack_bf16(ds[0], ds[1]);
                    }
            }
        __syncthreads();
        // dv += P^T do, dk += dS^T q over the step's query tiles that see this warp's key tile.
        if (kw < nkt)
            for (int qi = 0; qi < WT_NQ; ++qi) {
                const int i = i0 + qi;
                if (i >= ntile || !sees(kw, i / G)) continue;
                unsigned a[4];
                const int at = 16 * kw * WT_PLD + 16 * qi + wt_a_at(WT_PLD);
                ldsm_x4(a, pt + at);
                wt_acc<WT_CG>(dvv, a, dos + 16 * qi * WT_LD + cw);
                ldsm_x4(a, dst + at);
                wt_acc<WT_CG>(dk, a, qs + 16 * qi * WT_LD + cw);
            }
    }
    if (kw >= nkt) return;
#pragma unroll
    for (int x = 0; x < 2; ++x) {
        const int kp = s0 + 16 * kw + gid + 8 * x;
        if (kp >= seq) continue;
        const long long o = kv0 + (long long)kp * (HKV * D) + cw + 2 * tig;
#pragma unroll
        for (int n = 0; n < WT_CG / 8; ++n) {
            *reinterpret_cast<float2*>(dk_rot + o + 8 * n) = float2{SCALE * dk[n][2 * x], SCALE * dk[n][2 * x + 1]};
            *reinterpret_cast<float2*>(dv + o + 8 * n) = float2{dvv[n][2 * x], dvv[n][2 * x + 1]};
        }
    }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::kernels::liger::test_spec as spec;

    /// The target shape (H 32, KV 8, D 128, W 64): every kernel in one stage
    /// of its 8 key tiles, two blocks an SM, 4 row / key tiles a block at
    /// batch 8 × 1024 tokens; SmolLM2 at batch 1 gets a block per row tile.
    #[test]
    fn target_tilings() {
        let t = tiling(&spec(32, 8, 128, 64), TrainMath::Bf16).unwrap();
        assert_eq!((t.fwd.nw, t.fwd.kct, t.fwd.nkc), (8, 8, 2));
        assert_eq!((t.dq.nw, t.dq.kct), (4, 8));
        assert_eq!((t.ncg, t.ktm), (2, 4));
        let l = t.launches(8, 8, 1024, "n").unwrap();
        assert_eq!(l[0].grid, (16, 8, 8));
        assert_eq!((l[0].block, l[1].block, l[2].block), (256, 128, 256));
        assert!(l.iter().all(|x| x.smem as usize <= SMEM_BUDGET));
        let s = tiling(&spec(9, 3, 64, 64), TrainMath::Bf16).unwrap();
        let l = s.launches(3, 1, 1024, "n").unwrap();
        assert_eq!((l[0].grid.0, l[2].grid.0), (64, 64));
        assert!(tiling(&spec(32, 8, 128, 64), TrainMath::F32).is_none());
        assert!(tiling(&spec(4, 2, 20, 64), TrainMath::Bf16).is_none());
        assert!(tiling(&spec(4, 2, 256, 64), TrainMath::Bf16).is_none());
    }

    /// Every tiling stays within the budget and the 1024-thread limit at any
    /// window, GQA and length.
    #[test]
    fn tilings_fit() {
        for d in (16..=MAX_D).step_by(16) {
            for w in [0, 3, 16, 64, 70, 200, 1 << 29] {
                for (h, kv) in [(1, 1), (4, 1), (8, 1), (32, 8), (9, 3)] {
                    let t = tiling(&spec(h, kv, d, w), TrainMath::Bf16).unwrap();
                    for (b, seq) in [(1, 1), (1, 37), (8, 1024), (1, 4096)] {
                        for l in t.launches(kv, b, seq, "n").unwrap() {
                            assert!(l.smem as usize <= SMEM_BUDGET, "{d} {w} {h}: {l:?}");
                            assert!(l.block >= 32 && l.block <= 1024, "{l:?}");
                        }
                    }
                }
            }
        }
    }
}
