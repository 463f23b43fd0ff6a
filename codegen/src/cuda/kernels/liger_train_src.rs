//! CUDA C++ text of the LigerAttention training kernels (one source per
//! spec; [`super::liger_train`] owns the launch lists and the checks).
//!
//! The source is the shared prelude, the spec's constants, a few device
//! helpers ([`HELPERS`], shared with GSA's source), the block-tiled window
//! kernels ([`window_kernels`], shared too), and the recurrence
//! ([`recurrence_kernels`]: its own tile loaders and register-tiled products,
//! [`REC_HELPERS`]) with the entry points. Every exponent of a
//! decay is a difference `b_t − b_s ≤ 0` of in-chunk cumulative log-gates, or
//! `b_t ≤ 0` itself; nothing divides by a decay.

use std::fmt::Write as _;

use ligerc_ir::{LigerSpec, LigerVariant};

use crate::cuda::kernels::{CP_ASYNC, PRELUDE, float_lit};

/// Threads per block of the chunked kernels.
pub(super) const NT: usize = 256;
/// Threads per block of the window kernels: a 32 × 8 grid, `tr = tid / 8`
/// (rows), `tc = tid % 8` (columns).
pub(super) const WIN_NT: usize = 256;

/// Sizes the source is generated for.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    /// Chunk length.
    pub(super) chunk: usize,
    /// Tiling of the window kernels.
    pub(super) win: WinTiles,
    /// f32 or bf16 tensor-core products.
    pub(super) math: super::TrainMath,
}

/// Tiling of the window kernels. `win_fwd` and `win_dq` (query side) take a
/// block of `32 · rpt` (token, query head) rows — `tq` tokens × `gb` heads of
/// one KV head, token-major — and walk its keys in tiles of `tk`; `win_dkv`
/// (key side) takes `32 · kpt` keys of one KV head and walks the queries that
/// see them in tiles of `rk` (token, head) rows — `tqk` tokens × `gk` heads.
#[derive(Clone, Copy, Debug)]
pub(super) struct WinTiles {
    /// Query-side rows per thread (`1` or `2`).
    rpt: usize,
    /// Query-side keys per key tile (`16` or `32`; `tk / 8` a thread).
    tk: usize,
    /// Key-side keys per thread (`1` or `2`).
    kpt: usize,
    /// Key-side (token, head) rows per query tile (`16` or `32`; `rk / 8` a thread).
    rk: usize,
    /// Buffers of the tiles staged in the loops (`2`: the next is copied in
    /// while one is used).
    nb: usize,
    /// Query heads per KV head.
    g: usize,
    /// Head dim.
    d: usize,
}

impl WinTiles {
    /// `(rpt, tk, kpt, rk, nb)` from the largest tiles down.
    const LEVELS: [(usize, usize, usize, usize, usize); 4] = [
        (2, 32, 2, 32, 2),
        (1, 32, 1, 32, 2),
        (1, 16, 1, 16, 2),
        (1, 16, 1, 16, 1),
    ];

    /// The largest tiling for `g` query heads per KV head and head dim `d`
    /// whose three kernels fit in `limit` bytes of shared memory, or the
    /// bytes the smallest would need.
    pub(super) fn new(g: usize, d: usize, limit: usize) -> Result<WinTiles, usize> {
        let tiles = Self::LEVELS.map(|(rpt, tk, kpt, rk, nb)| WinTiles {
            rpt,
            tk,
            kpt,
            rk,
            nb,
            g,
            d,
        });
        tiles
            .iter()
            .find(|t| t.smem_bytes().iter().all(|&b| b <= limit))
            .copied()
            .ok_or_else(|| tiles[3].smem_bytes().into_iter().max().unwrap_or(0))
    }

    /// Head dim rounded up to a multiple of 4 (float4 columns, zero padded).
    fn dp(&self) -> usize {
        self.d.div_ceil(4) * 4
    }

    /// Row stride of the `[rows][D]` shared tiles: a multiple of 4 with an
    /// odd quotient, so float4 reads of up to 8 consecutive rows (or 4 rows
    /// two apart) hit distinct banks.
    fn ld(&self) -> usize {
        let dp = self.dp();
        if dp.is_multiple_of(8) { dp + 4 } else { dp }
    }

    /// Query-side rows of a block.
    fn rows(&self) -> usize {
        32 * self.rpt
    }

    /// Query-side heads of a block.
    fn gb(&self) -> usize {
        self.g.min(self.rows())
    }

    /// Query-side head groups of a KV head (grid y is `KV · ng`).
    pub(super) fn ng(&self) -> usize {
        self.g.div_ceil(self.gb())
    }

    /// Query-side tokens of a block (grid x is `ceil(seq / tq)`).
    pub(super) fn tq(&self) -> usize {
        self.rows() / self.gb()
    }

    /// Key-side keys of a block (grid x is `ceil(seq / tkv)`).
    pub(super) fn tkv(&self) -> usize {
        32 * self.kpt
    }

    /// Key-side heads of a query tile.
    fn gk(&self) -> usize {
        self.g.min(self.rk)
    }

    /// Floats of one buffer of `win_dq`'s value tile, which then holds
    /// `e·dp` and `e` (`[R][TK + 4]` each).
    fn vb(&self) -> usize {
        (self.tk * self.ld()).max(2 * self.rows() * (self.tk + 4))
    }

    /// Dynamic shared memory of `win_fwd`, `win_dq`, `win_dkv`, bytes.
    pub(super) fn smem_bytes(&self) -> [usize; 3] {
        let (ld, r, tk, nb) = (self.ld(), self.rows(), self.tk, self.nb);
        let (tkv, rk) = (self.tkv(), self.rk);
        [
            (r + 2 * nb * tk) * ld + r * (tk + 4),
            (2 * r + nb * tk) * ld + nb * self.vb(),
            (2 * tkv + 2 * nb * rk) * ld + 2 * tkv * (rk + 4) + 2 * nb * rk,
        ]
        .map(|f| f * 4)
    }

    /// The tiling's `constexpr`s for the window kernels' source.
    fn constants(&self) -> String {
        let dp = self.dp();
        format!(
            r#"constexpr int WIN_NT = {nt};          // threads: a 32 x 8 grid, tr = tid / 8 (rows), tc = tid % 8 (columns)
constexpr int WIN_DP = {dp};          // D rounded up to a multiple of 4 (zero-padded float4 columns)
constexpr int WIN_LD = {ld};          // row stride of [rows][D] tiles (LD / 4 odd: float4 reads of 8 rows, or 4 rows 2 apart, hit distinct banks)
constexpr int WIN_C4 = {c4};           // float4 column groups of a thread: tc + 8 c < WIN_DP / 4
constexpr bool WIN_FULL = {full};   // every thread's WIN_C4 groups exist
constexpr int WIN_RPT = {rpt};          // win_fwd / win_dq: rows of a thread, RPT * tr + i
constexpr int WIN_R = 32 * WIN_RPT;  // rows of a block: WIN_TQ tokens x WIN_GB heads, token-major
constexpr int WIN_GB = {gb};
constexpr int WIN_NG = {ng};           // head groups of a KV head: grid y = HKV * WIN_NG
constexpr int WIN_TQ = {tq};
constexpr int WIN_TK = {tk};          // keys of a key tile; a thread's keys tc + 8 c
constexpr int WIN_KC = WIN_TK / 8;
constexpr int WIN_PS = WIN_TK + 4;   // row stride of the [R][TK] probability tiles
constexpr int WIN_KPT = {kpt};          // win_dkv: keys of a thread, KPT * tr + i
constexpr int WIN_TKV = 32 * WIN_KPT;  // keys of a block
constexpr int WIN_RK = {rk};          // rows of a query tile: WIN_TQK tokens x WIN_GK heads, token-major
constexpr int WIN_QC = WIN_RK / 8;   // a thread's query rows tc + 8 c
constexpr int WIN_GK = {gk};
constexpr int WIN_NGK = {ngk};
constexpr int WIN_TQK = {tqk};
constexpr int WIN_QS = WIN_RK + 4;   // row stride of the [TKV][RK] probability tiles
constexpr int WIN_NB = {nb};           // buffers of the tiles staged in the loops (2: the next is copied in while one is used)
constexpr int WIN_VB = {vb};        // floats of a buffer of win_dq's v tile (then e*dp and e [R][PS])
"#,
            nt = WIN_NT,
            ld = self.ld(),
            c4 = (dp / 4).div_ceil(8),
            full = (dp / 4).is_multiple_of(8),
            rpt = self.rpt,
            gb = self.gb(),
            ng = self.ng(),
            tq = self.tq(),
            tk = self.tk,
            kpt = self.kpt,
            rk = self.rk,
            gk = self.gk(),
            ngk = self.g.div_ceil(self.gk()),
            tqk = self.rk / self.gk(),
            nb = self.nb,
            vb = self.vb(),
        )
    }
}

/// Per-variant pieces: the log-decay of channel `i`, the key operand before
/// its map, whether the key map is a softmax, and the finish of the key row.
fn variant_code(v: LigerVariant) -> (&'static str, &'static str, bool, &'static str) {
    let gate = match v {
        LigerVariant::Gla | LigerVariant::Hgrn2 => "return gate[row * (HKV * D) + j * D + i];",
        LigerVariant::Retention => "(void)i;\n    return gate[row * HKV + j];",
        _ => "(void)gate; (void)row; (void)j; (void)i;\n    return 0.0f;",
    };
    let key = match v {
        LigerVariant::Hgrn2 => "(void)k;\n    return -expm1f(gate_at(gate, row, j, i));",
        _ => "(void)gate;\n    return k[row * (HKV * D) + j * D + i];",
    };
    let finish = match v {
        LigerVariant::Gla => {
            "softmax_backward_row(k + kat, dk + kat);\n            \
             for (int i = lane; i < D; i += 32) dgate[kat + i] = rsum[kat + i];"
        }
        LigerVariant::Hgrn2 => {
            "(void)k;\n            \
             for (int i = lane; i < D; i += 32) {\n                \
             dgate[kat + i] = rsum[kat + i] - expf(gate[kat + i]) * dk[kat + i];\n                \
             dk[kat + i] = 0.0f;  // k~ = 1 - e^g: the key reaches k only through the gate\n            }"
        }
        LigerVariant::Retention => {
            "softmax_backward_row(k + kat, dk + kat);\n            \
             float part = 0.0f;\n            \
             for (int i = lane; i < D; i += 32) part += rsum[kat + i];\n            \
             part = warp_sum(part);\n            \
             if (lane == 0) dgate[row * HKV + j] = part;"
        }
        _ => {
            "(void)gate; (void)dgate; (void)rsum;\n            softmax_backward_row(k + kat, dk + kat);"
        }
    };
    (gate, key, v != LigerVariant::Hgrn2, finish)
}

/// The whole training source of `spec` with kernel names starting `prefix`.
pub(super) fn source(spec: &LigerSpec, prefix: &str, shape: Shape) -> String {
    let (h, kv, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    let (gate, key, softmax_key, finish) = variant_code(spec.variant);
    let mut s = String::from("#include <cuda_bf16.h>\n");
    s.push_str(PRELUDE);
    let _ = write!(
        s,
        r#"
// ---- LigerAttention training ({variant}): constants of this spec
constexpr int H = {h};             // query heads
constexpr int HKV = {kv};           // KV heads
constexpr int G = H / HKV;       // query heads per KV head
constexpr int D = {d};             // head dim (= key channels = value channels)
constexpr int W = {w};             // a query sees itself and the W previous tokens
constexpr int C = {c};             // chunk length
constexpr int RS = D + 1;          // row stride of the [C][D] shared tiles (padded: column walks hit distinct banks)
constexpr int NT = {nt};           // threads of the chunked kernels
constexpr float SCALE = {scale};     // 1/sqrt(D)
constexpr float MIX_WIN = {mix_win};
constexpr float MIX_LIN = {mix_lin};
constexpr bool KEY_SOFTMAX = {softmax_key};
constexpr bool DQ_DONE = {dq_done};     // bwd_dqk writes dq itself (the tensor-core recurrence); finish skips the query heads
[[maybe_unused]] constexpr bool Y_SAVED = {y_saved};     // win_fwd leaves y to the tensor-core fwd, which adds MIX_WIN o_win from the saved buffer

// Log-decay of channel i of KV head j at token row `row` (<= 0).
__device__ __forceinline__ float gate_at(const float* gate, long long row, int j, int i) {{
    {gate}
}}

// The key operand of channel i before its feature map.
__device__ __forceinline__ float key_raw(const float* k, const float* gate, long long row, int j, int i) {{
    {key}
}}
{helpers}"#,
        variant = spec.variant,
        w = spec.window,
        c = shape.chunk,
        nt = NT,
        scale = float_lit(1.0 / (d as f64).sqrt()),
        mix_win = float_lit(spec.mix_window),
        mix_lin = float_lit(spec.mix_linear),
        helpers = HELPERS,
        dq_done = super::rec_tc::eligible(spec, shape.math),
        y_saved = super::y_saved(spec, shape.math),
    );
    s.push_str(&super::win_tc::window_source(spec, prefix, shape));
    let rec = recurrence_kernels(prefix);
    if super::rec_tc::eligible(spec, shape.math) {
        let has_mma = s.contains("void mma_bf16(");
        s.push_str(&super::rec_tc::source(prefix, &rec, has_mma));
    } else {
        s.push_str(&rec);
    }
    let _ = write!(
        s,
        r#"
// dS-free tail of the backward: softmax backward of q~ and k~ (DQ, DK hold dq~, dk~; with DQ_DONE, DQ
// holds dq already), gate gradient from the reverse cumsum `rsum` of db. One block per (token, row); a
// warp per query head, then per KV head.
extern "C" __global__ void {prefix}_finish(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ gate, const float* __restrict__ rsum, float* __restrict__ dq,
        float* __restrict__ dk, float* __restrict__ dgate, int seq) {{
    const long long row = (long long)blockIdx.y * seq + blockIdx.x;
    [[maybe_unused]] const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int u = (DQ_DONE ? H : 0) + warp; u < H + HKV; u += NT / 32) {{
        if (u < H) {{
            softmax_backward_row(q + row * (H * D) + u * D, dq + row * (H * D) + u * D);
        }} else {{
            const int j = u - H;
            const long long kat = row * (HKV * D) + j * D;
            {finish}
        }}
    }}
}}

// Zeroes the `F` floats of each of batch*seq rows (swa-only: DQ and DK get no gradient).
template <int F>
__device__ __forceinline__ void zero_rows(float* x, int batch, int seq) {{
    const long long n = (long long)batch * seq * F;
    for (long long e = (long long)blockIdx.x * NT + threadIdx.x; e < n; e += (long long)gridDim.x * NT) x[e] = 0.0f;
}}
extern "C" __global__ void {prefix}_zero_q(float* __restrict__ x, int batch, int seq) {{ zero_rows<H * D>(x, batch, seq); }}
extern "C" __global__ void {prefix}_zero_k(float* __restrict__ x, int batch, int seq) {{ zero_rows<HKV * D>(x, batch, seq); }}
"#
    );
    s
}

/// Device helpers shared with GSA's source: `[C][RS]` row loads, causal dot
/// blocks, the softmax backward of one row.
pub(super) const HELPERS: &str = r#"
// scale * the D features at `off` of each row of a [rows][stride] tensor into x [C][RS] (rows >= L
// zero). No barrier.
__device__ void load_rows(float* x, const float* src, long long row0, int stride, int off, int L, float scale) {
    for (int e = threadIdx.x; e < C * D; e += NT) {
        const int t = e / D, i = e % D;
        x[t * RS + i] = t < L ? scale * src[(row0 + t) * stride + off + i] : 0.0f;
    }
}

// P[t][s] = <X_t, Y_s> over D for s <= t < L, else 0 (X, Y [C][RS]). Ends with a barrier.
__device__ void causal_dots(float* P, const float* X, const float* Y, int L) {
    for (int e = threadIdx.x; e < C * C; e += NT) {
        const int t = e / C, s = e % C;
        float a = 0.0f;
        if (t < L && s <= t)
            for (int i = 0; i < D; ++i) a += X[t * RS + i] * Y[s * RS + i];
        P[e] = a;
    }
    __syncthreads();
}

// row <- softmax(row) over its D elements, in place. Warp-collective.
__device__ void softmax_row(float* row) {
    const int lane = threadIdx.x & 31;
    float m = neg_inf();
    for (int i = lane; i < D; i += 32) m = fmaxf(m, row[i]);
    m = warp_max(m);
    float z = 0.0f;
    for (int i = lane; i < D; i += 32) {
        const float e = expf(row[i] - m);
        row[i] = e;
        z += e;
    }
    z = warp_sum(z);
    for (int i = lane; i < D; i += 32) row[i] /= z;
}

// g <- y * (g - <y, g>) with y = softmax(x), for one D-long row (x read-only). Warp-collective.
__device__ void softmax_backward_row(const float* x, float* g) {
    const int lane = threadIdx.x & 31;
    float m = neg_inf();
    for (int i = lane; i < D; i += 32) m = fmaxf(m, x[i]);
    m = warp_max(m);
    float z = 0.0f;
    for (int i = lane; i < D; i += 32) z += expf(x[i] - m);
    z = warp_sum(z);
    float inner = 0.0f;
    for (int i = lane; i < D; i += 32) inner += expf(x[i] - m) / z * g[i];
    inner = warp_sum(inner);
    for (int i = lane; i < D; i += 32) g[i] = expf(x[i] - m) / z * (g[i] - inner);
}
"#;

/// The window branch: forward, and the deterministic two-kernel backward,
/// block-tiled for `tiles` (see [`WinTiles`]).
pub(super) fn window_kernels(p: &str, tiles: WinTiles) -> String {
    let window = WINDOW
        .replace("@CONSTANTS@", &tiles.constants())
        .replace("@P@", p);
    format!("{CP_ASYNC}{window}")
}

/// The window kernels' source: `@P@` is the kernel name prefix,
/// `@CONSTANTS@` the tiling's `constexpr`s.
const WINDOW: &str = r#"
// ---- Window branch: y = MIX_WIN * softmax(q k^T * SCALE) v over keys max(0, t-W) ..= t; query head h
// reads KV head h / G. Block-tiled f32 SIMT, flash-attention style; every global read is coalesced
// (consecutive threads, consecutive floats) into shared tiles of row stride WIN_LD, read back as float4.
//
// Query side (win_fwd, win_dq): a block takes WIN_R (token, query head) rows — WIN_TQ tokens from t0
// times WIN_GB heads of KV head j, token-major — and walks their keys max(0, t0-W) ..= t0+TQ-1 in
// tiles of WIN_TK keys, each staged once for all the block's heads. Thread (tr, tc) owns rows
// RPT*tr + i (a warp: 4*RPT consecutive rows), keys tc + 8c of a tile and float4 output columns
// tc + 8c: its [RPT][KC] scores are a register micro-tile over float4 reads of the shared rows, a
// row's max and sum are reduced over its 8 lanes (online softmax), and the probabilities go through
// a warp-private [R][PS] shared tile into P.V, a [RPT][4*C4] register micro-tile. A warp skips a key
// tile none of its (row, key) pairs sees; a partial last tile skips its empty key columns.
//
// Key side (win_dkv): a block takes WIN_TKV keys of KV head j and walks the (token, head) rows that
// see them — tokens s0 ..= s0+TKV-1+W, all G heads — in tiles of WIN_RK rows (WIN_TQK tokens x
// WIN_GK heads). Thread (tr, tc) owns keys KPT*tr + i (a warp: 4*KPT consecutive keys) and rows
// tc + 8c of a tile for the transposed scores, and float4 columns tc + 8c of dk, dv. No atomics.

@CONSTANTS@
__device__ __forceinline__ float4 win_ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float win_dot4(float4 a, float4 b, float acc) {
    return fmaf(a.w, b.w, fmaf(a.z, b.z, fmaf(a.y, b.y, fmaf(a.x, b.x, acc))));
}
// Component k of v (k a constant after unrolling).
__device__ __forceinline__ float win_el(float4 v, int k) { return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w; }

// Offset in floats of row r of a tile of TQX tokens x GBX heads (token-major) from token t0 and head
// j*G + g0, in a [B*T][H][D] tensor; -1 past the sequence, the tile or the KV head's G heads.
template <int GBX, int TQX>
__device__ __forceinline__ long long win_qrow(int r, int b, int t0, int j, int g0, int seq) {
    const int tt = r / GBX, g = g0 + r % GBX, t = t0 + tt;
    if (tt >= TQX || t >= seq || g >= G) return -1;
    return (((long long)b * seq + t) * H + j * G + g) * D;
}

// ROWS rows into dst [ROWS][WIN_LD]: row r = scale * src[at(r) ..+ D] (zeros where at(r) < 0), columns
// D .. WIN_DP zero. Consecutive threads read consecutive floats. No barrier.
template <int ROWS, typename At>
__device__ __forceinline__ void win_stage(float* dst, const float* src, At at, float scale) {
    for (int e = threadIdx.x; e < ROWS * WIN_DP; e += WIN_NT) {
        const int r = e / WIN_DP, c = e % WIN_DP;
        const long long o = at(r);
        dst[r * WIN_LD + c] = c < D && o >= 0 ? scale * src[o + c] : 0.0f;
    }
}

// win_stage (scale 1) by asynchronous copies: 16 bytes each when D % 4 == 0 (rows 16-byte aligned,
// WIN_DP = D), else one float each. Complete after cp_async_wait_all and a barrier.
template <int ROWS, typename At>
__device__ __forceinline__ void win_stage_async(float* dst, const float* src, At at) {
    if constexpr (D % 4 == 0) {
        for (int e = threadIdx.x; e < ROWS * (D / 4); e += WIN_NT) {
            const int r = e / (D / 4), c = 4 * (e % (D / 4));
            const long long o = at(r);
            cp_async16(dst + r * WIN_LD + c, o >= 0 ? src + o + c : src, o >= 0);
        }
    } else {
        for (int e = threadIdx.x; e < ROWS * WIN_DP; e += WIN_NT) {
            const int r = e / WIN_DP, c = e % WIN_DP;
            const long long o = at(r);
            cp_async4(dst + r * WIN_LD + c, o >= 0 && c < D ? src + o + c : src, o >= 0 && c < D);
        }
    }
}

// s[i][c] = <a + i*LD, b + 8c*LD> over WIN_DP for 8c < n (0 otherwise): a thread's register micro-tile
// of a row block times the transpose of a column block, float4 reads from shared memory.
template <int NI, int NC>
__device__ __forceinline__ void win_dots(float (&s)[NI][NC], const float* a, const float* b, int n) {
#pragma unroll
    for (int i = 0; i < NI; ++i)
#pragma unroll
        for (int c = 0; c < NC; ++c) s[i][c] = 0.0f;
#pragma unroll 2
    for (int d = 0; d < WIN_DP; d += 4) {
        float4 x[NI];
#pragma unroll
        for (int i = 0; i < NI; ++i) x[i] = win_ld4(a + i * WIN_LD + d);
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            if (8 * c < n) {
                const float4 y = win_ld4(b + 8 * c * WIN_LD + d);
#pragma unroll
                for (int i = 0; i < NI; ++i) s[i][c] = win_dot4(x[i], y, s[i][c]);
            }
        }
    }
}

// acc[i][c] += sum_k p[i][k] x[k][4(tc + 8c) ..+ 4] over k < 4*n4, for the NI rows p + i*PS of a
// warp-private probability tile and the [k][WIN_LD] rows x (column base x + 4*tc).
template <int NI, int PS>
__device__ __forceinline__ void win_pv(float (&acc)[NI][WIN_C4][4], const float* p, const float* x, int n4) {
    const int tc = threadIdx.x & 7;
    for (int k4 = 0; k4 < n4; ++k4) {
        float4 pr[NI];
#pragma unroll
        for (int i = 0; i < NI; ++i) pr[i] = win_ld4(p + i * PS + 4 * k4);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
            const float* xr = x + (4 * k4 + kk) * WIN_LD;
#pragma unroll
            for (int c = 0; c < WIN_C4; ++c) {
                if (WIN_FULL || tc + 8 * c < WIN_DP / 4) {
                    const float4 v = win_ld4(xr + 32 * c);
#pragma unroll
                    for (int i = 0; i < NI; ++i) {
                        const float w = win_el(pr[i], kk);
                        acc[i][c][0] = fmaf(w, v.x, acc[i][c][0]);
                        acc[i][c][1] = fmaf(w, v.y, acc[i][c][1]);
                        acc[i][c][2] = fmaf(w, v.z, acc[i][c][2]);
                        acc[i][c][3] = fmaf(w, v.w, acc[i][c][3]);
                    }
                }
            }
        }
    }
}

// row[4(tc + 8c) ..+ 4] = scale * x[c] for a thread's float4 columns (vector stores when D % 4 == 0).
__device__ __forceinline__ void win_store(float* row, const float (&x)[WIN_C4][4], float scale) {
    const int tc = threadIdx.x & 7;
#pragma unroll
    for (int c = 0; c < WIN_C4; ++c) {
        const int c4 = tc + 8 * c;
        if (!(WIN_FULL || c4 < WIN_DP / 4)) continue;
        if constexpr (D % 4 == 0) {
            *reinterpret_cast<float4*>(row + 4 * c4) =
                float4{scale * x[c][0], scale * x[c][1], scale * x[c][2], scale * x[c][3]};
        } else {
#pragma unroll
            for (int e = 0; e < 4; ++e)
                if (4 * c4 + e < D) row[4 * c4 + e] = scale * x[c][e];
        }
    }
}

// Sum, max of v over the 8 lanes of a row (tc = lane & 7).
__device__ __forceinline__ float win_sum8(float v) {
    for (int o = 1; o < 8; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float win_max8(float v) {
    for (int o = 1; o < 8; o <<= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Masks a thread's scores of one row in place (scaled by SCALE; -inf outside the window, past the key
// tile's kn keys from k0, or on an invalid row tok < 0) and returns the row's max over its 8 lanes.
__device__ __forceinline__ float win_mask_row(float (&s)[WIN_KC], int tok, int k0, int kn) {
    const int tc = threadIdx.x & 7;
    float mx = neg_inf();
#pragma unroll
    for (int c = 0; c < WIN_KC; ++c) {
        const int key = k0 + tc + 8 * c;
        const bool in = tok >= 0 && tc + 8 * c < kn && key <= tok && tok - key <= W;
        s[c] = in ? s[c] * SCALE : neg_inf();
        mx = fmaxf(mx, s[c]);
    }
    return win_max8(mx);
}

// Window forward (overwrites y). Grid (ceil(seq / WIN_TQ), HKV * WIN_NG, batch), WIN_NT threads.
// Shared: q [R][LD], WIN_NB buffers of k, v [TK][LD] (the next key tile is copied in while this one is
// used), p [R][PS].
extern "C" __global__ void @P@_win_fwd(const float* __restrict__ q_rot, const float* __restrict__ k_rot,
        const float* __restrict__ v, float* __restrict__ y, int seq) {
    extern __shared__ float smem[];
    float* qs = smem;
    float* ks = qs + WIN_R * WIN_LD;
    float* vs = ks + WIN_NB * WIN_TK * WIN_LD;
    float* ps = vs + WIN_NB * WIN_TK * WIN_LD;
    const int tr = threadIdx.x >> 3, tc = threadIdx.x & 7, warp = threadIdx.x >> 5;
    const int t0 = blockIdx.x * WIN_TQ, j = blockIdx.y / WIN_NG, g0 = (blockIdx.y % WIN_NG) * WIN_GB;
    const int b = blockIdx.z;
    const long long kv0 = (long long)b * seq * (HKV * D) + j * D;  // key s at kv0 + s * HKV * D
    const int tlast = min(seq - 1, t0 + WIN_TQ - 1);
    // Copies the key tile from k0 into buffer buf.
    auto stage = [&](int k0, int buf) {
        const int kn = min(WIN_TK, tlast - k0 + 1);
        auto key = [&](int k) { return k < kn ? kv0 + (long long)(k0 + k) * (HKV * D) : -1LL; };
        win_stage_async<WIN_TK>(ks + buf * WIN_TK * WIN_LD, k_rot, key);
        win_stage_async<WIN_TK>(vs + buf * WIN_TK * WIN_LD, v, key);
    };
    const int kfirst = max(0, t0 - W);
    stage(kfirst, 0);
    auto qrow = [&](int r) { return win_qrow<WIN_GB, WIN_TQ>(r, b, t0, j, g0, seq); };
    win_stage<WIN_R>(qs, q_rot, qrow, 1.0f);
    long long at[WIN_RPT];
    int tok[WIN_RPT];
    float m[WIN_RPT], l[WIN_RPT], o[WIN_RPT][WIN_C4][4];
#pragma unroll
    for (int i = 0; i < WIN_RPT; ++i) {
        const int r = WIN_RPT * tr + i;
        at[i] = qrow(r);
        tok[i] = at[i] >= 0 ? t0 + r / WIN_GB : -1;
        m[i] = neg_inf();
        l[i] = 0.0f;
#pragma unroll
        for (int c = 0; c < WIN_C4; ++c)
#pragma unroll
            for (int e = 0; e < 4; ++e) o[i][c][e] = 0.0f;
    }
    // This warp's tokens (wlo > whi: none).
    const int wr = 4 * WIN_RPT * warp;
    const int wlo = t0 + wr / WIN_GB, whi = min(seq - 1, t0 + (min(wr + 4 * WIN_RPT, WIN_GB * WIN_TQ) - 1) / WIN_GB);
    int buf = 0;
    for (int k0 = kfirst; k0 <= tlast; k0 += WIN_TK, buf = (buf + 1) % WIN_NB) {
        const int kn = min(WIN_TK, tlast - k0 + 1);
        const bool more = tlast - k0 >= WIN_TK;
        cp_async_wait_all();
        __syncthreads();  // this tile has landed; the previous one is consumed
        if (WIN_NB == 2 && more) stage(k0 + WIN_TK, buf ^ 1);
        const float* kb = ks + buf * WIN_TK * WIN_LD;
        const float* vb = vs + buf * WIN_TK * WIN_LD;
        if (!(wlo > whi || k0 > whi || wlo - (k0 + kn - 1) > W)) {  // warp-uniform: a pair to see
            float s[WIN_RPT][WIN_KC];
            win_dots(s, qs + WIN_RPT * tr * WIN_LD, kb + tc * WIN_LD, kn);
#pragma unroll
            for (int i = 0; i < WIN_RPT; ++i) {
                const float mn = fmaxf(m[i], win_mask_row(s[i], tok[i], k0, kn));
                const float mu = mn == neg_inf() ? 0.0f : mn;
                const float corr = expf(m[i] - mu);
                float sum = 0.0f;
#pragma unroll
                for (int c = 0; c < WIN_KC; ++c) {
                    const float e = expf(s[i][c] - mu);
                    sum += e;
                    ps[(WIN_RPT * tr + i) * WIN_PS + tc + 8 * c] = e;
                }
                l[i] = l[i] * corr + win_sum8(sum);
                m[i] = mn;
#pragma unroll
                for (int c = 0; c < WIN_C4; ++c)
#pragma unroll
                    for (int e = 0; e < 4; ++e) o[i][c][e] *= corr;
            }
            __syncwarp();
            win_pv<WIN_RPT, WIN_PS>(o, ps + WIN_RPT * tr * WIN_PS, vb + 4 * tc, (kn + 3) >> 2);
        }
        if (WIN_NB == 1 && more) {
            __syncthreads();
            stage(k0 + WIN_TK, 0);
        }
    }
#pragma unroll
    for (int i = 0; i < WIN_RPT; ++i)
        if (at[i] >= 0) win_store(y + at[i], o[i], MIX_WIN / l[i]);
}

// Window backward, query side: with do = MIX_WIN * dy, p_s the probabilities and dp_s = do.v_s,
// dq_rot = SCALE * sum_s p_s (dp_s - delta) k_s, delta = do.o = sum_s p_s dp_s. One pass: with
// e_s = e^(score_s - m) under the running max m (rescaled as m grows), l = sum e_s, u = sum e_s dp_s,
// A = sum e_s dp_s k_s, B = sum e_s k_s give delta = u / l and dq_rot = SCALE (A - delta B) / l.
// Keeps (log-sum-exp, delta) per (token, head) in `stats` for win_dkv. Grid and rows as win_fwd.
// Shared: q, do [R][LD], WIN_NB buffers of k [TK][LD] and of v [TK][LD] (WIN_VB floats: after the
// scores, e*dp and e [R][PS] over the tile's v).
extern "C" __global__ void @P@_win_dq(const float* __restrict__ q_rot, const float* __restrict__ k_rot,
        const float* __restrict__ v, const float* __restrict__ dy, float* __restrict__ dq_rot,
        float* __restrict__ stats, int seq) {
    extern __shared__ float smem[];
    float* qs = smem;
    float* dos = qs + WIN_R * WIN_LD;
    float* ks = dos + WIN_R * WIN_LD;
    float* vs = ks + WIN_NB * WIN_TK * WIN_LD;
    const int tr = threadIdx.x >> 3, tc = threadIdx.x & 7, warp = threadIdx.x >> 5;
    const int t0 = blockIdx.x * WIN_TQ, j = blockIdx.y / WIN_NG, g0 = (blockIdx.y % WIN_NG) * WIN_GB;
    const int b = blockIdx.z;
    const long long kv0 = (long long)b * seq * (HKV * D) + j * D;
    const int tlast = min(seq - 1, t0 + WIN_TQ - 1);
    auto stage = [&](int k0, int buf) {
        const int kn = min(WIN_TK, tlast - k0 + 1);
        auto key = [&](int k) { return k < kn ? kv0 + (long long)(k0 + k) * (HKV * D) : -1LL; };
        win_stage_async<WIN_TK>(ks + buf * WIN_TK * WIN_LD, k_rot, key);
        win_stage_async<WIN_TK>(vs + buf * WIN_VB, v, key);
    };
    const int kfirst = max(0, t0 - W);
    stage(kfirst, 0);
    auto qrow = [&](int r) { return win_qrow<WIN_GB, WIN_TQ>(r, b, t0, j, g0, seq); };
    win_stage<WIN_R>(qs, q_rot, qrow, 1.0f);
    win_stage<WIN_R>(dos, dy, qrow, MIX_WIN);
    long long at[WIN_RPT];
    int tok[WIN_RPT];
    float m[WIN_RPT], l[WIN_RPT], u[WIN_RPT], A[WIN_RPT][WIN_C4][4], B[WIN_RPT][WIN_C4][4];
#pragma unroll
    for (int i = 0; i < WIN_RPT; ++i) {
        const int r = WIN_RPT * tr + i;
        at[i] = qrow(r);
        tok[i] = at[i] >= 0 ? t0 + r / WIN_GB : -1;
        m[i] = neg_inf();
        l[i] = u[i] = 0.0f;
#pragma unroll
        for (int c = 0; c < WIN_C4; ++c)
#pragma unroll
            for (int e = 0; e < 4; ++e) A[i][c][e] = B[i][c][e] = 0.0f;
    }
    const int wr = 4 * WIN_RPT * warp;
    const int wlo = t0 + wr / WIN_GB, whi = min(seq - 1, t0 + (min(wr + 4 * WIN_RPT, WIN_GB * WIN_TQ) - 1) / WIN_GB);
    int buf = 0;
    for (int k0 = kfirst; k0 <= tlast; k0 += WIN_TK, buf = (buf + 1) % WIN_NB) {
        const int kn = min(WIN_TK, tlast - k0 + 1);
        const bool more = tlast - k0 >= WIN_TK;
        cp_async_wait_all();
        __syncthreads();  // this tile has landed; the previous one is consumed
        if (WIN_NB == 2 && more) stage(k0 + WIN_TK, buf ^ 1);
        const float* kb = ks + buf * WIN_TK * WIN_LD;
        float* vb = vs + buf * WIN_VB;
        float* es = vb;
        float* fs = vb + WIN_R * WIN_PS;
        const bool see = !(wlo > whi || k0 > whi || wlo - (k0 + kn - 1) > W);  // warp-uniform
        float s[WIN_RPT][WIN_KC], dp[WIN_RPT][WIN_KC];
        if (see) {
            win_dots(s, qs + WIN_RPT * tr * WIN_LD, kb + tc * WIN_LD, kn);
            win_dots(dp, dos + WIN_RPT * tr * WIN_LD, vb + tc * WIN_LD, kn);
        }
        __syncthreads();  // v is consumed: es, fs overwrite it
        if (see) {
#pragma unroll
            for (int i = 0; i < WIN_RPT; ++i) {
                const float mn = fmaxf(m[i], win_mask_row(s[i], tok[i], k0, kn));
                const float mu = mn == neg_inf() ? 0.0f : mn;
                const float corr = expf(m[i] - mu);
                float sum = 0.0f, sdp = 0.0f;
#pragma unroll
                for (int c = 0; c < WIN_KC; ++c) {
                    const float e = expf(s[i][c] - mu), ed = e * dp[i][c];
                    sum += e;
                    sdp += ed;
                    es[(WIN_RPT * tr + i) * WIN_PS + tc + 8 * c] = ed;
                    fs[(WIN_RPT * tr + i) * WIN_PS + tc + 8 * c] = e;
                }
                l[i] = l[i] * corr + win_sum8(sum);
                u[i] = u[i] * corr + win_sum8(sdp);
                m[i] = mn;
#pragma unroll
                for (int c = 0; c < WIN_C4; ++c)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        A[i][c][e] *= corr;
                        B[i][c][e] *= corr;
                    }
            }
            __syncwarp();
            win_pv<WIN_RPT, WIN_PS>(A, es + WIN_RPT * tr * WIN_PS, kb + 4 * tc, (kn + 3) >> 2);
            win_pv<WIN_RPT, WIN_PS>(B, fs + WIN_RPT * tr * WIN_PS, kb + 4 * tc, (kn + 3) >> 2);
        }
        if (WIN_NB == 1 && more) {
            __syncthreads();
            stage(k0 + WIN_TK, 0);
        }
    }
#pragma unroll
    for (int i = 0; i < WIN_RPT; ++i) {
        if (at[i] < 0) continue;
        const float inv = 1.0f / l[i], delta = u[i] * inv;
#pragma unroll
        for (int c = 0; c < WIN_C4; ++c)
#pragma unroll
            for (int e = 0; e < 4; ++e) A[i][c][e] -= delta * B[i][c][e];
        win_store(dq_rot + at[i], A[i], SCALE * inv);
        if (tc == 0) {
            const long long sr = at[i] / D * 2;
            stats[sr] = m[i] + logf(l[i]);
            stats[sr + 1] = delta;
        }
    }
}

// Window backward, key side: for the keys s of the block, over the (token, head) rows t that see them
// (s <= t <= s + W), p = e^(q.k * SCALE - lse_t), ds = p (do.v - delta_t) SCALE with do = MIX_WIN * dy:
// dk_rot = sum ds q, dv = sum p do (both overwritten). Grid (ceil(seq / WIN_TKV), HKV, batch), WIN_NT
// threads. Shared: k, v [TKV][LD], p^T, ds^T [TKV][QS], WIN_NB buffers of q, dy [RK][LD] and lse,
// delta [RK] (the next query tile is copied in while this one is used).
extern "C" __global__ void @P@_win_dkv(const float* __restrict__ q_rot, const float* __restrict__ k_rot,
        const float* __restrict__ v, const float* __restrict__ dy, const float* __restrict__ stats,
        float* __restrict__ dk_rot, float* __restrict__ dv, int seq) {
    extern __shared__ float smem[];
    float* ks = smem;
    float* vs = ks + WIN_TKV * WIN_LD;
    float* pt = vs + WIN_TKV * WIN_LD;
    float* dst = pt + WIN_TKV * WIN_QS;
    float* qs = dst + WIN_TKV * WIN_QS;
    float* dys = qs + WIN_NB * WIN_RK * WIN_LD;
    float* lse = dys + WIN_NB * WIN_RK * WIN_LD;
    float* dlt = lse + WIN_NB * WIN_RK;
    const int tr = threadIdx.x >> 3, tc = threadIdx.x & 7, warp = threadIdx.x >> 5;
    const int s0 = blockIdx.x * WIN_TKV, j = blockIdx.y, b = blockIdx.z;
    const long long kv0 = (long long)b * seq * (HKV * D) + j * D;
    const int klast = min(seq - 1, s0 + WIN_TKV - 1);
    // The last token that sees a key of the block; query tiles n: head group n / nt, tokens from
    // s0 + (n % nt) * TQK.
    const int qlast = seq - 1 - klast <= W ? seq - 1 : klast + W;
    const int nt = (qlast - s0) / WIN_TQK + 1, ntiles = WIN_NGK * nt;
    auto stage = [&](int n, int buf) {
        const int g0 = n / nt * WIN_GK, t0 = s0 + n % nt * WIN_TQK;
        auto qrow = [&](int r) { return win_qrow<WIN_GK, WIN_TQK>(r, b, t0, j, g0, seq); };
        win_stage_async<WIN_RK>(qs + buf * WIN_RK * WIN_LD, q_rot, qrow);
        win_stage_async<WIN_RK>(dys + buf * WIN_RK * WIN_LD, dy, qrow);
        for (int r = threadIdx.x; r < WIN_RK; r += WIN_NT) {
            const long long o = qrow(r);
            cp_async4(lse + buf * WIN_RK + r, o >= 0 ? stats + o / D * 2 : stats, o >= 0);
            cp_async4(dlt + buf * WIN_RK + r, o >= 0 ? stats + o / D * 2 + 1 : stats, o >= 0);
        }
    };
    stage(0, 0);
    auto key = [&](int k) { return s0 + k <= klast ? kv0 + (long long)(s0 + k) * (HKV * D) : -1LL; };
    win_stage<WIN_TKV>(ks, k_rot, key, 1.0f);
    win_stage<WIN_TKV>(vs, v, key, 1.0f);
    float dk[WIN_KPT][WIN_C4][4], dvv[WIN_KPT][WIN_C4][4];
#pragma unroll
    for (int i = 0; i < WIN_KPT; ++i)
#pragma unroll
        for (int c = 0; c < WIN_C4; ++c)
#pragma unroll
            for (int e = 0; e < 4; ++e) dk[i][c][e] = dvv[i][c][e] = 0.0f;
    // This warp's keys (wlo > whi: none).
    const int wlo = s0 + 4 * WIN_KPT * warp, whi = min(klast, wlo + 4 * WIN_KPT - 1);
    int buf = 0;
    for (int n = 0; n < ntiles; ++n, buf = (buf + 1) % WIN_NB) {
        const int g0 = n / nt * WIN_GK, t0 = s0 + n % nt * WIN_TQK;
        const int tl = min(qlast, t0 + WIN_TQK - 1), nr = (tl - t0 + 1) * WIN_GK;
        cp_async_wait_all();
        __syncthreads();  // this tile has landed; the previous one is consumed
        if (WIN_NB == 2 && n + 1 < ntiles) stage(n + 1, buf ^ 1);
        const float* qb = qs + buf * WIN_RK * WIN_LD;
        const float* db = dys + buf * WIN_RK * WIN_LD;
        const float* lb = lse + buf * WIN_RK;
        const float* eb = dlt + buf * WIN_RK;
        if (!(wlo > whi || tl < wlo || t0 - whi > W)) {  // warp-uniform: a pair to see
            float s[WIN_KPT][WIN_QC], dp[WIN_KPT][WIN_QC];
            win_dots(s, ks + WIN_KPT * tr * WIN_LD, qb + tc * WIN_LD, nr);
            win_dots(dp, vs + WIN_KPT * tr * WIN_LD, db + tc * WIN_LD, nr);
#pragma unroll
            for (int i = 0; i < WIN_KPT; ++i) {
                const int kr = WIN_KPT * tr + i, sk = s0 + kr;
#pragma unroll
                for (int c = 0; c < WIN_QC; ++c) {
                    const int qr = tc + 8 * c, t = t0 + qr / WIN_GK;
                    const bool in = qr < nr && sk <= klast && g0 + qr % WIN_GK < G && sk <= t && t - sk <= W;
                    const float pr = in ? expf(s[i][c] * SCALE - lb[qr]) : 0.0f;
                    pt[kr * WIN_QS + qr] = pr;
                    dst[kr * WIN_QS + qr] = in ? pr * (MIX_WIN * dp[i][c] - eb[qr]) * SCALE : 0.0f;
                }
            }
            __syncwarp();
            win_pv<WIN_KPT, WIN_QS>(dvv, pt + WIN_KPT * tr * WIN_QS, db + 4 * tc, (nr + 3) >> 2);
            win_pv<WIN_KPT, WIN_QS>(dk, dst + WIN_KPT * tr * WIN_QS, qb + 4 * tc, (nr + 3) >> 2);
        }
        if (WIN_NB == 1 && n + 1 < ntiles) {
            __syncthreads();
            stage(n + 1, 0);
        }
    }
#pragma unroll
    for (int i = 0; i < WIN_KPT; ++i) {
        const int sk = s0 + WIN_KPT * tr + i;
        if (sk > klast) continue;
        const long long o = kv0 + (long long)sk * (HKV * D);
        win_store(dk_rot + o, dk[i], 1.0f);
        win_store(dv + o, dvv[i], MIX_WIN);
    }
}
"#;

/// Device helpers of the recurrence kernels ([`recurrence_kernels`]): tiles
/// of `[rows][RC_TS]` floats (16-byte rows, columns `D..RC_DP` zero), states
/// of `[RC_DP][RC_DP]`, and the register-tiled products over them. The block
/// is a 16 × 16 thread grid, `tr = tid / 16`, `tc = tid % 16`; a thread's
/// float4 column groups are `tc + 16 m` (`m < RC_MG`).
const REC_HELPERS: &str = r#"
// ---- recurrence: tiles, register-tiled products
constexpr int RC_DP = (D + 3) / 4 * 4;    // D rounded up to 4: columns D..RC_DP of tiles and states are zero
constexpr int RC_TS = RC_DP + 4;          // row stride of [rows][RC_DP] tiles (16-byte rows, 4 banks apart)
constexpr int RC_G4 = RC_DP / 4;          // float4 column groups
constexpr int RC_MG = (RC_G4 + 15) / 16;  // column groups of a thread: tc + 16 m
constexpr bool RC_FULL = RC_G4 % 16 == 0; // every thread's RC_MG groups exist
constexpr int RC_RQ = C > 64 ? C : 64;    // rows of a query pass: RC_GB heads x C tokens, head-major
constexpr int RC_GB = G < RC_RQ / C ? G : RC_RQ / C; // query heads of a pass
// (RC_CS, RC_QS, RC_HPT go unused where the tensor-core kernels replace the f32 ones.)
[[maybe_unused]] constexpr int RC_CS = C + 4;              // row stride of [rows][C] score tiles
[[maybe_unused]] constexpr int RC_QS = RC_RQ + 4;          // row stride of [C][RC_RQ] transposed score tiles
constexpr int RC_NS = RC_GB < NT / RC_DP ? RC_GB : (NT / RC_DP > 0 ? NT / RC_DP : 1); // bwd_dqk: head splits
[[maybe_unused]] constexpr int RC_HPT = (RC_GB + RC_NS - 1) / RC_NS; // bwd_dqk: heads of a thread, z + RC_NS u
static_assert(C % 16 == 0, "the recurrence tiles take C a multiple of 16");
static_assert(RC_DP <= NT, "bwd_dqk takes a column a thread");
static_assert(RC_RQ * C % NT == 0, "bwd_dqk's P tiling");

__device__ __forceinline__ float rc_at(const float4& v, int k) { return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w; }
__device__ __forceinline__ void rc_fma(float4& a, float x, const float4& y) {
    a.x = fmaf(x, y.x, a.x); a.y = fmaf(x, y.y, a.y); a.z = fmaf(x, y.z, a.z); a.w = fmaf(x, y.w, a.w);
}
__device__ __forceinline__ float4 rc_ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// acc[a][m] += xr[a ldx][k0..k1) . M[k0..k1)[4 g .. 4 g + 4), g = tc + 16 m: a thread's RT rows (from xr)
// times the matrix. xr, M 16-byte aligned; ldx, ldm, k0, k1 multiples of 4. No barrier.
template <int RT>
__device__ __forceinline__ void rc_rows_range(float4 (&acc)[RT][RC_MG], const float* xr, int ldx, const float* M, int ldm,
                                              int k0, int k1, int tc) {
    for (int i = k0; i < k1; i += 4) {
        float4 x[RT];
#pragma unroll
        for (int a = 0; a < RT; ++a) x[a] = rc_ld4(xr + a * ldx + i);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
#pragma unroll
            for (int m = 0; m < RC_MG; ++m) {
                const int g = tc + 16 * m;
                if (!RC_FULL && g >= RC_G4) continue;
                const float4 y = rc_ld4(M + (i + k) * ldm + 4 * g);
#pragma unroll
                for (int a = 0; a < RT; ++a) rc_fma(acc[a][m], rc_at(x[a], k), y);
            }
        }
    }
}

// acc[a][m] += X[RT tr + a][0..K) . M[0..K)[4 g .. 4 g + 4), g = tc + 16 m: rows x matrix, register-tiled
// (16 RT rows of a block). X [rows][ldx], M [K][ldm]: ldx, ldm, K multiples of 4, no barrier.
template <int RT>
__device__ __forceinline__ void rc_rows_mat(float4 (&acc)[RT][RC_MG], const float* X, int ldx, const float* M, int ldm, int K) {
    rc_rows_range<RT>(acc, X + RT * (threadIdx.x >> 4) * ldx, ldx, M, ldm, 0, K, threadIdx.x & 15);
}

// out (+)= X M for the C rows of X [C][ldx] (M [K][ldm]; ldx, ldm, K multiples of 4) into the tile out
// [C][RC_TS], split over K: RC_RQ / C slices of threads (4 rows x 4 RC_MG columns a thread) each take a
// K range, their partials meet in red [RC_RQ][RC_TS] (aliasing neither X nor M). A C-row product read
// by every warp costs more shared-memory traffic than FMAs; split, each M row is read by one slice.
// Ends with a barrier.
template <bool ADD>
__device__ void rc_rows_split(float* out, const float* X, int ldx, const float* M, int ldm, int K, float* red) {
    constexpr int NK = RC_RQ / C, TPS = NT / NK, RT = C / (TPS / 16);
    static_assert(NK * TPS == NT && RT * (TPS / 16) == C, "rc_rows_split tiling");
    const int ks = threadIdx.x / TPS, tr = (threadIdx.x % TPS) >> 4, tc = threadIdx.x & 15;
    const int kper = (K / NK + 3) / 4 * 4, k0 = min(K, ks * kper), k1 = min(K, k0 + kper);
    float4 acc[RT][RC_MG] = {};
    rc_rows_range<RT>(acc, X + RT * tr * ldx, ldx, M, ldm, k0, k1, tc);
#pragma unroll
    for (int a = 0; a < RT; ++a)
#pragma unroll
        for (int m = 0; m < RC_MG; ++m) {
            const int g = tc + 16 * m;
            if (RC_FULL || g < RC_G4) *reinterpret_cast<float4*>(red + (ks * C + RT * tr + a) * RC_TS + 4 * g) = acc[a][m];
        }
    __syncthreads();
    for (int e = threadIdx.x; e < C * RC_G4; e += NT) {
        const int r = e / RC_G4, g = e % RC_G4;
        float4 v = ADD ? rc_ld4(out + r * RC_TS + 4 * g) : float4{0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int k = 0; k < NK; ++k) {
            const float4 p = rc_ld4(red + (k * C + r) * RC_TS + 4 * g);
            v.x += p.x; v.y += p.y; v.z += p.z; v.w += p.w;
        }
        *reinterpret_cast<float4*>(out + r * RC_TS + 4 * g) = v;
    }
    __syncthreads();
}

// acc[a][m].k (row 4 (tr + 16 a) + k, columns of group tc + 16 m) += sum_(t<n) X[t][row] Y[t][cols]: a
// [D][D] sum of outer products, register-tiled (X, Y [n][RC_TS]). No barrier.
__device__ __forceinline__ void rc_outer(float4 (&acc)[RC_MG][RC_MG][4], const float* X, const float* Y, int n) {
    const int tr = threadIdx.x >> 4, tc = threadIdx.x & 15;
    for (int t = 0; t < n; ++t) {
        float4 x[RC_MG], y[RC_MG];
#pragma unroll
        for (int a = 0; a < RC_MG; ++a) {
            x[a] = (RC_FULL || tr + 16 * a < RC_G4) ? rc_ld4(X + t * RC_TS + 4 * (tr + 16 * a)) : float4{0.f, 0.f, 0.f, 0.f};
            y[a] = (RC_FULL || tc + 16 * a < RC_G4) ? rc_ld4(Y + t * RC_TS + 4 * (tc + 16 * a)) : float4{0.f, 0.f, 0.f, 0.f};
        }
#pragma unroll
        for (int a = 0; a < RC_MG; ++a)
#pragma unroll
            for (int m = 0; m < RC_MG; ++m)
#pragma unroll
                for (int k = 0; k < 4; ++k) rc_fma(acc[a][m][k], rc_at(x[a], k), y[m]);
    }
}

// rc_outer's accumulators into the [D][D] state at dst (row-major). No barrier.
__device__ __forceinline__ void rc_store_state(float* dst, const float4 (&acc)[RC_MG][RC_MG][4]) {
    const int tr = threadIdx.x >> 4, tc = threadIdx.x & 15;
#pragma unroll
    for (int a = 0; a < RC_MG; ++a)
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const int i = 4 * (tr + 16 * a) + k;
            if (i >= D) continue;
#pragma unroll
            for (int m = 0; m < RC_MG; ++m) {
                const int c = 4 * (tc + 16 * m);
                if (D % 4 == 0) {
                    if (RC_FULL || c < D) *reinterpret_cast<float4*>(dst + i * D + c) = acc[a][m][k];
                } else {
                    for (int u = 0; u < 4; ++u)
                        if (c + u < D) dst[i * D + c + u] = rc_at(acc[a][m][k], u);
                }
            }
        }
}

// dst[c .. c + 4) (+)= scale * v for the columns c + u < D of one global row. No barrier.
template <bool ADD>
__device__ __forceinline__ void rc_put(float* dst, int c, float4 v, float scale) {
    if (D % 4 == 0) {
        float4* p = reinterpret_cast<float4*>(dst + c);
        float4 o = ADD ? *p : float4{0.f, 0.f, 0.f, 0.f};
        o.x += scale * v.x; o.y += scale * v.y; o.z += scale * v.z; o.w += scale * v.w;
        *p = o;
    } else {
        for (int u = 0; u < 4; ++u)
            if (c + u < D) dst[c + u] = (ADD ? dst[c + u] : 0.0f) + scale * rc_at(v, u);
    }
}

// The [D][D] state at src into dst [RC_DP][RC_DP] (pad rows and columns zero), transposed or not, by
// asynchronous copies (not transposed) or plain loads (transposed; D % 4 == 0 takes rc_state_fetch and
// rc_state_put_t). Complete after cp_async_wait_all and a barrier.
template <bool TRANSPOSE>
__device__ void rc_stage_state(float* dst, const float* src) {
    if constexpr (!TRANSPOSE && D % 4 == 0) {
        for (int e = threadIdx.x; e < D * D / 4; e += NT) cp_async16(dst + 4 * e, src + 4 * e, true);
    } else if constexpr (!TRANSPOSE) {
        for (int e = threadIdx.x; e < RC_DP * RC_DP; e += NT) {
            const int i = e / RC_DP, c = e % RC_DP;
            const bool in = i < D && c < D;
            cp_async4(dst + e, in ? src + i * D + c : src, in);
        }
    } else {
        for (int e = threadIdx.x; e < RC_DP * RC_DP; e += NT) {
            const int c = e / RC_DP, i = e % RC_DP;
            dst[c * RC_DP + i] = i < D && c < D ? src[i * D + c] : 0.0f;
        }
    }
}

// D % 4 == 0: a thread's RC_SPT float4 of a [D][D] state in registers (element e = tid + NT k: row
// e % D, column group e / D), fetched early so the loads fly while the block works, then stored
// transposed into dst [RC_DP][RC_DP] (a warp's 32 rows of one column group: conflict-free stores).
constexpr int RC_SPT = (D * RC_G4 + NT - 1) / NT;
__device__ __forceinline__ void rc_state_fetch(float4 (&r)[RC_SPT], const float* src) {
#pragma unroll
    for (int k = 0; k < RC_SPT; ++k) {
        const int e = threadIdx.x + NT * k;
        if (D * RC_G4 % NT == 0 || e < D * RC_G4) r[k] = rc_ld4(src + (e % D) * D + 4 * (e / D));
    }
}
__device__ __forceinline__ void rc_state_put_t(float* dst, const float4 (&r)[RC_SPT]) {
#pragma unroll
    for (int k = 0; k < RC_SPT; ++k) {
        const int e = threadIdx.x + NT * k;
        if (D * RC_G4 % NT == 0 || e < D * RC_G4)
#pragma unroll
            for (int u = 0; u < 4; ++u) dst[(4 * (e / D) + u) * RC_DP + e % D] = rc_at(r[k], u);
    }
}

// scale * the D features at `off` of token rows row0 + t (t < L; other rows zero) into x [C][RC_TS].
// No barrier.
__device__ void rc_load_rows(float* x, const float* src, long long row0, int stride, int off, int L, float scale) {
    for (int e = threadIdx.x; e < C * RC_DP; e += NT) {
        const int t = e / RC_DP, i = e % RC_DP;
        x[t * RC_TS + i] = t < L && i < D ? scale * src[(row0 + t) * stride + off + i] : 0.0f;
    }
}

// Softmax over D of the rows r < nrows of x [.][RC_TS] with r % C < L, in place; one warp per row. Ends
// with a barrier.
__device__ void rc_softmax(float* x, int nrows, int L) {
    for (int r = threadIdx.x >> 5; r < nrows; r += NT / 32)
        if (r % C < L) softmax_row(x + r * RC_TS);
    __syncthreads();
}

// In-chunk inclusive cumsum of the log-gates of KV head j into bc [C][RC_TS] (rows >= L and pad columns
// zero). Ends with a barrier.
__device__ void rc_load_gates(float* bc, const float* gate, long long row0, int j, int L) {
    for (int i = threadIdx.x; i < RC_DP; i += NT) {
        float acc = 0.0f;
        for (int t = 0; t < C; ++t) {
            if (t < L && i < D) acc += gate_at(gate, row0 + t, j, i);
            bc[t * RC_TS + i] = t < L ? acc : 0.0f;
        }
    }
    __syncthreads();
}

// Mapped keys of KV head j into kf [C][RC_TS] (softmax over D, or 1 - e^g for HGRN2; rows >= L zero).
// Ends with a barrier.
__device__ void rc_load_keys(float* kf, const float* k, const float* gate, long long row0, int j, int L) {
    for (int e = threadIdx.x; e < C * RC_DP; e += NT) {
        const int t = e / RC_DP, i = e % RC_DP;
        kf[t * RC_TS + i] = t < L && i < D ? key_raw(k, gate, row0 + t, j, i) : 0.0f;
    }
    __syncthreads();
    if constexpr (KEY_SOFTMAX) rc_softmax(kf, C, L);
}

// q~ (softmax over D) of query heads h0 .. h0 + nh into qf [RC_RQ][RC_TS], row g * C + t (other rows
// zero). Ends with a barrier.
__device__ void rc_load_queries(float* qf, const float* q, long long row0, int h0, int nh, int L) {
    for (int e = threadIdx.x; e < RC_RQ * RC_DP; e += NT) {
        const int r = e / RC_DP, i = e % RC_DP, g = r / C, t = r % C;
        qf[r * RC_TS + i] = g < nh && t < L && i < D ? q[(row0 + t) * (H * D) + (h0 + g) * D + i] : 0.0f;
    }
    __syncthreads();
    rc_softmax(qf, nh * C, L);
}

// MIX_LIN * dy of query heads h0 .. h0 + nh into dO [RC_RQ][RC_TS] as rc_load_queries. No barrier.
__device__ void rc_load_dout(float* dO, const float* dy, long long row0, int h0, int nh, int L) {
    for (int e = threadIdx.x; e < RC_RQ * RC_DP; e += NT) {
        const int r = e / RC_DP, i = e % RC_DP, g = r / C, t = r % C;
        dO[r * RC_TS + i] = g < nh && t < L && i < D ? MIX_LIN * dy[(row0 + t) * (H * D) + (h0 + g) * D + i] : 0.0f;
    }
}

// A^g[t][s] = sum_i qf[g C + t, i] kf[s, i] e^(bc[t, i] - bc[s, i]) for s <= t < L, g < nh, else 0, for
// the heads of a pass at once (each e^(b_t - b_s) k~_s once). Into A [RC_RQ][RC_CS] at row g C + t,
// column s, or (TRANSPOSE) [C][RC_QS] at row s, column g C + t. Ends with a barrier.
template <bool TRANSPOSE>
__device__ void rc_gated_scores(float* A, const float* qf, const float* kf, const float* bc, int nh, int L) {
    for (int e = threadIdx.x; e < C * C; e += NT) {
        const int t = e / C, s = e % C;
        float a[RC_GB];
#pragma unroll
        for (int g = 0; g < RC_GB; ++g) a[g] = 0.0f;
        if (t < L && s <= t) {
            for (int i = 0; i < RC_DP; i += 4) {
                const float4 bt = rc_ld4(bc + t * RC_TS + i), bs = rc_ld4(bc + s * RC_TS + i), ks = rc_ld4(kf + s * RC_TS + i);
                const float4 w = float4{ks.x * expf(bt.x - bs.x), ks.y * expf(bt.y - bs.y), ks.z * expf(bt.z - bs.z),
                                             ks.w * expf(bt.w - bs.w)};
#pragma unroll
                for (int g = 0; g < RC_GB; ++g) {
                    const float4 x = rc_ld4(qf + (g * C + t) * RC_TS + i);
                    a[g] += x.x * w.x + x.y * w.y + x.z * w.z + x.w * w.w;
                }
            }
        }
#pragma unroll
        for (int g = 0; g < RC_GB; ++g) {
            const float v = g < nh ? a[g] : 0.0f;
            if (TRANSPOSE) A[s * RC_QS + g * C + t] = v;
            else A[(g * C + t) * RC_CS + s] = v;
        }
    }
    constexpr int Z = RC_RQ - RC_GB * C, ZD = Z > 0 ? Z : 1;  // rows past the pass's heads
    if (TRANSPOSE)
        for (int e = threadIdx.x; e < C * Z; e += NT) A[(e / ZD) * RC_QS + RC_GB * C + e % ZD] = 0.0f;
    else
        for (int e = threadIdx.x; e < Z * C; e += NT) A[(RC_GB * C + e / C) * RC_CS + e % C] = 0.0f;
    __syncthreads();
}
"#;

/// The chunk-parallel recurrence: per-chunk state contributions, the scans
/// over chunks (the only sequential part, one thread per state element), and
/// the per-chunk output and gradients.
fn recurrence_kernels(p: &str) -> String {
    let scans = scan_kernels(&format!("{p}_scan"), "D * D", "e / D", "D");
    let mut s = String::from(REC_HELPERS);
    let _ = write!(
        s,
        r#"
// The recurrence S_t = diag(e^g_t) S_(t-1) + k~_t^T v_t, o_t = q~_t S_t from S = 0, in chunks of C tokens.
// Chunk n (L valid rows from token row row0, b = in-chunk inclusive cumsum of the log-gates) of KV head j:
//   o_t     = (q~_t * e^b_t) . S_n + sum_(s<=t) (sum_i q~_ti k~_si e^(b_ti - b_si)) v_s
//   S_(n+1) = diag(e^b_L) S_n + dS_n,   dS_n = sum_s (k~_s * e^(b_L - b_s))^T v_s
// Every exponent is b_t - b_s <= 0 or b_t <= 0. Scratch per (row, KV head, chunk): a [D][D] state and
// the decay e^b_L [D]; the slot of chunk n is (b * HKV + j) * nch + n.

// 1. dS_n into states[slot] and e^b_L into dec[slot]. Grid (nch, HKV, batch). The [D][D] sum of C
// outer products is register-tiled (rc_outer: 4 RC_MG x 4 RC_MG per thread from float4 row reads).
// Shared: kf, bc, vs [C][RC_TS].
extern "C" __global__ void {p}_chunk_state(const float* __restrict__ k, const float* __restrict__ v,
        const float* __restrict__ gate, float* __restrict__ states, float* __restrict__ dec, int seq) {{
    extern __shared__ float smem[];
    float* kf = smem;
    float* bc = kf + C * RC_TS;
    float* vs = bc + C * RC_TS;
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + n * C, at = (long long)(b * HKV + j) * nch + n;
    rc_load_rows(vs, v, row0, HKV * D, j * D, L, 1.0f);
    rc_load_gates(bc, gate, row0, j, L);
    rc_load_keys(kf, k, gate, row0, j, L);
    for (int e = threadIdx.x; e < L * D; e += NT) {{
        const int t = e / D, i = e % D;
        kf[t * RC_TS + i] *= expf(bc[(L - 1) * RC_TS + i] - bc[t * RC_TS + i]);
    }}
    __syncthreads();
    float4 acc[RC_MG][RC_MG][4] = {{}};
    rc_outer(acc, kf, vs, L);
    rc_store_state(states + at * D * D, acc);
    for (int i = threadIdx.x; i < D; i += NT) dec[at * D + i] = expf(bc[(L - 1) * RC_TS + i]);
}}

{scan_fwd}
// 3. Output of chunk n for the G query heads of KV head j: y += MIX_LIN * o (y holds the window part).
// Grid (nch, HKV, batch). S_n is staged once by cp.async while the chunk's keys, gates and first queries
// load. The heads go in passes of RC_GB (RC_GB C <= RC_RQ rows, head-major): their q~, the gated scores
// of all of them (each e^(b_t - b_s) k~_s once), q~ * e^b, then o = (q~ * e^b) S + A v as an RC_RQ x D
// register-tiled product (rc_rows_mat: 4 rows x 4 RC_MG columns a thread).
// Shared: S [RC_DP][RC_DP], kf, bc, vs [C][RC_TS], qf [RC_RQ][RC_TS], A [RC_RQ][RC_CS].
extern "C" __global__ void {p}_fwd(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ v, const float* __restrict__ gate, const float* __restrict__ states,
        float* __restrict__ y, int seq) {{
    extern __shared__ float smem[];
    float* S = smem;
    float* kf = S + RC_DP * RC_DP;
    float* bc = kf + C * RC_TS;
    float* vs = bc + C * RC_TS;
    float* qf = vs + C * RC_TS;
    float* A = qf + RC_RQ * RC_TS;
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + n * C, at = (long long)(b * HKV + j) * nch + n;
    const int tr = threadIdx.x >> 4, tc = threadIdx.x & 15;
    rc_stage_state<false>(S, states + at * D * D);
    rc_load_rows(vs, v, row0, HKV * D, j * D, L, 1.0f);
    rc_load_gates(bc, gate, row0, j, L);
    rc_load_keys(kf, k, gate, row0, j, L);
    for (int g0 = 0; g0 < G; g0 += RC_GB) {{
        const int nh = min(RC_GB, G - g0);
        rc_load_queries(qf, q, row0, j * G + g0, nh, L);
        rc_gated_scores<false>(A, qf, kf, bc, nh, L);
        for (int e = threadIdx.x; e < nh * C * D; e += NT) {{
            const int r = e / D, i = e % D;
            qf[r * RC_TS + i] *= expf(bc[(r % C) * RC_TS + i]);
        }}
        if (g0 == 0) cp_async_wait_all();
        __syncthreads();
        float4 acc[4][RC_MG] = {{}};
        rc_rows_mat<4>(acc, qf, RC_TS, S, RC_DP, RC_DP);
        rc_rows_mat<4>(acc, A, RC_CS, vs, RC_TS, C);
#pragma unroll
        for (int a = 0; a < 4; ++a) {{
            const int r = 4 * tr + a, g = r / C, t = r % C;
            if (g >= nh || t >= L) continue;
            float* dst = y + (row0 + t) * (H * D) + (j * G + g0 + g) * D;
#pragma unroll
            for (int m = 0; m < RC_MG; ++m)
                if (RC_FULL || tc + 16 * m < RC_G4) rc_put<true>(dst, 4 * (tc + 16 * m), acc[a][m], MIX_LIN);
        }}
        __syncthreads();
    }}
}}

// Backward, with do = MIX_LIN * dy and dG_n = dL/dS_(n+1), the gradient of the state leaving chunk n:
//   dG_(n-1) = diag(e^b_L) dG_n + sum_h sum_t (q~^h_t * e^b_t)^T do^h_t       (over chunk n)
// 4. Per chunk: sum_h sum_t (q~^h_t * e^b_t)^T do^h_t into dstates[slot]. Grid (nch, HKV, batch). The
// heads go in passes of RC_GB; each pass adds its RC_GB C outer products (rc_outer, register-tiled).
// Shared: bc [C][RC_TS], qf, dO [RC_RQ][RC_TS].
extern "C" __global__ void {p}_chunk_dstate(const float* __restrict__ q, const float* __restrict__ gate,
        const float* __restrict__ dy, float* __restrict__ dstates, int seq) {{
    extern __shared__ float smem[];
    float* bc = smem;
    float* qf = bc + C * RC_TS;
    float* dO = qf + RC_RQ * RC_TS;
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + n * C, at = (long long)(b * HKV + j) * nch + n;
    float4 acc[RC_MG][RC_MG][4] = {{}};
    rc_load_gates(bc, gate, row0, j, L);
    for (int g0 = 0; g0 < G; g0 += RC_GB) {{
        const int nh = min(RC_GB, G - g0);
        rc_load_dout(dO, dy, row0, j * G + g0, nh, L);
        rc_load_queries(qf, q, row0, j * G + g0, nh, L);
        for (int e = threadIdx.x; e < nh * C * D; e += NT) {{
            const int r = e / D, i = e % D;
            qf[r * RC_TS + i] *= expf(bc[(r % C) * RC_TS + i]);
        }}
        __syncthreads();
        rc_outer(acc, qf, dO, nh * C);
        __syncthreads();
    }}
    rc_store_state(dstates + at * D * D, acc);
}}

{scan_bwd}
// 6. dv_s += sum_i k~_si e^(b_Li - b_si) dG_ic + sum_h sum_(t>=s) A^h_ts do^h_tc (dv += : the window
// wrote it). Grid (nch, HKV, batch). dG is staged by cp.async while the keys and gates load; both sums
// are C x D products split over their inner dimension (rc_rows_split) into the tile dvs, over the
// passes of RC_GB heads, whose scores come transposed (At[s][g C + t]).
// Shared: dG [RC_DP][RC_DP], kf, bc [C][RC_TS], qf, dO [RC_RQ][RC_TS], At [C][RC_QS], dvs [C][RC_TS].
extern "C" __global__ void {p}_bwd_dv(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ gate, const float* __restrict__ dy, const float* __restrict__ dstates,
        float* __restrict__ dv, int seq) {{
    extern __shared__ float smem[];
    float* dG = smem;
    float* kf = dG + RC_DP * RC_DP;
    float* bc = kf + C * RC_TS;
    float* qf = bc + C * RC_TS;
    float* dO = qf + RC_RQ * RC_TS;
    float* At = dO + RC_RQ * RC_TS;
    float* dvs = At + C * RC_QS;
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + n * C, at = (long long)(b * HKV + j) * nch + n;
    rc_stage_state<false>(dG, dstates + at * D * D);
    rc_load_gates(bc, gate, row0, j, L);
    rc_load_keys(kf, k, gate, row0, j, L);
    // qf holds k~ * e^(b_L - b) while the inter-chunk part is summed.
    for (int e = threadIdx.x; e < C * RC_DP; e += NT) {{
        const int t = e / RC_DP, i = e % RC_DP;
        qf[t * RC_TS + i] = t < L && i < D ? kf[t * RC_TS + i] * expf(bc[(L - 1) * RC_TS + i] - bc[t * RC_TS + i]) : 0.0f;
    }}
    cp_async_wait_all();
    __syncthreads();
    rc_rows_split<false>(dvs, qf, RC_TS, dG, RC_DP, RC_DP, dO);
    for (int g0 = 0; g0 < G; g0 += RC_GB) {{
        const int nh = min(RC_GB, G - g0);
        rc_load_dout(dO, dy, row0, j * G + g0, nh, L);
        rc_load_queries(qf, q, row0, j * G + g0, nh, L);
        rc_gated_scores<true>(At, qf, kf, bc, nh, L);
        rc_rows_split<true>(dvs, At, RC_QS, dO, RC_TS, RC_RQ, qf);
    }}
    for (int e = threadIdx.x; e < L * D; e += NT)
        dv[(row0 + e / D) * (HKV * D) + j * D + e % D] += dvs[(e / D) * RC_TS + e % D];
}}

// 7. With S = S_n (entering chunk n) and dG = dG_n (leaving it), P^h_ts = do^h_t . v_s:
//   dq~^h_ti = e^b_ti (S do^h_t)_i + sum_(s<=t) e^(b_ti - b_si) k~_si P^h_ts          -> dq (temporary: dq~)
//   dk~_si   = e^(b_Li - b_si) (dG v_s)_i + sum_h sum_(t>=s) q~^h_ti e^(b_ti - b_si) P^h_ts  -> dk (dk~)
//   db_ti    = sum_h q~^h_ti dq~^h_ti - k~_ti dk~_ti                                  -> db (gate identity)
// Grid (nch, HKV, batch). First dk~'s inter-chunk part v dG^T (rc_rows_split) with dG^T staged; then S^T
// is staged in the same buffer and the heads go in passes of RC_GB: P^g = do^g v^T (causal), the
// inter-chunk part of dq~ for all the pass's rows as one RC_RQ x D register-tiled product do S^T (4 rows
// x 4 RC_MG columns a thread, times e^b into the dO tile), then the in-chunk parts per (column i, head
// split z): a thread walks its column's (t, s <= t) pairs with each e^(b_t - b_s) computed once for dq~
// and dk~ of its heads z + RC_NS u, keeping dk~ and db partials in registers; the splits add them to the
// dks, dbs tiles in turns (no atomics).
// Shared: Mt [RC_DP][RC_DP] (dG^T, then S^T), kf, bc, vs, dks, dbs [C][RC_TS], qf, dO [RC_RQ][RC_TS],
// P [RC_RQ][RC_CS].
extern "C" __global__ void {p}_bwd_dqk(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ v, const float* __restrict__ gate, const float* __restrict__ dy,
        const float* __restrict__ states, const float* __restrict__ dstates, float* __restrict__ dq,
        float* __restrict__ dk, float* __restrict__ db, int seq) {{
    extern __shared__ float smem[];
    float* Mt = smem;
    float* kf = Mt + RC_DP * RC_DP;
    float* bc = kf + C * RC_TS;
    float* vs = bc + C * RC_TS;
    float* dks = vs + C * RC_TS;
    float* dbs = dks + C * RC_TS;
    float* qf = dbs + C * RC_TS;
    float* dO = qf + RC_RQ * RC_TS;
    float* P = dO + RC_RQ * RC_TS;
    const int n = blockIdx.x, j = blockIdx.y, b = blockIdx.z, nch = (seq + C - 1) / C;
    const int L = min(C, seq - n * C);
    const long long row0 = (long long)b * seq + n * C, at = (long long)(b * HKV + j) * nch + n;
    const int tr = threadIdx.x >> 4, tc = threadIdx.x & 15;
    // D % 4 == 0: dG's loads fly while the chunk's rows load, S's while v dG^T is summed.
    [[maybe_unused]] float4 pre[RC_SPT];
    if constexpr (D % 4 == 0) rc_state_fetch(pre, dstates + at * D * D);
    else rc_stage_state<true>(Mt, dstates + at * D * D);
    rc_load_rows(vs, v, row0, HKV * D, j * D, L, 1.0f);
    for (int e = threadIdx.x; e < C * RC_TS; e += NT) dbs[e] = 0.0f;
    rc_load_gates(bc, gate, row0, j, L);
    rc_load_keys(kf, k, gate, row0, j, L);
    if constexpr (D % 4 == 0) {{
        rc_state_put_t(Mt, pre);
        __syncthreads();
        rc_state_fetch(pre, states + at * D * D);
    }}
    rc_rows_split<false>(dks, vs, RC_TS, Mt, RC_DP, RC_DP, qf);
    for (int e = threadIdx.x; e < C * RC_DP; e += NT) {{
        const int s = e / RC_DP, i = e % RC_DP;
        dks[s * RC_TS + i] *= s < L && i < D ? expf(bc[(L - 1) * RC_TS + i] - bc[s * RC_TS + i]) : 0.0f;
    }}
    if constexpr (D % 4 == 0) rc_state_put_t(Mt, pre);
    else rc_stage_state<true>(Mt, states + at * D * D);
    for (int g0 = 0; g0 < G; g0 += RC_GB) {{
        const int nh = min(RC_GB, G - g0);
        rc_load_dout(dO, dy, row0, j * G + g0, nh, L);
        rc_load_queries(qf, q, row0, j * G + g0, nh, L);
        // P: thread (row group, key) takes rows RC_PR * (tid / C) + a of key tid % C (register-tiled).
        {{
            constexpr int RC_PR = RC_RQ * C / NT;
            const int r0 = RC_PR * (threadIdx.x / C), s = threadIdx.x % C;
            float a[RC_PR] = {{}};
            for (int i = 0; i < RC_DP; i += 4) {{
                const float4 y = rc_ld4(vs + s * RC_TS + i);
#pragma unroll
                for (int u = 0; u < RC_PR; ++u) {{
                    const float4 x = rc_ld4(dO + (r0 + u) * RC_TS + i);
                    a[u] += x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
                }}
            }}
#pragma unroll
            for (int u = 0; u < RC_PR; ++u) {{
                const int r = r0 + u, t = r % C;
                P[r * RC_CS + s] = r < nh * C && s <= t && t < L ? a[u] : 0.0f;
            }}
        }}
        float4 acc[4][RC_MG] = {{}};
        rc_rows_mat<4>(acc, dO, RC_TS, Mt, RC_DP, RC_DP);
        __syncthreads();
#pragma unroll
        for (int a = 0; a < 4; ++a) {{
            const int r = 4 * tr + a, t = r % C;
#pragma unroll
            for (int m = 0; m < RC_MG; ++m) {{
                const int g = tc + 16 * m;
                if (!RC_FULL && g >= RC_G4) continue;
#pragma unroll
                for (int u = 0; u < 4; ++u) {{
                    const int i = 4 * g + u;
                    dO[r * RC_TS + i] = i < D ? expf(bc[t * RC_TS + i]) * rc_at(acc[a][m], u) : 0.0f;
                }}
            }}
        }}
        __syncthreads();
        // In-chunk parts: thread (i, z) takes column i and the pass's heads z + RC_NS u; each e^(b_t - b_s)
        // once per (t, s) and thread; its dk~ and db partials stay in registers, summed over z in turns.
        const int i = threadIdx.x % RC_DP, z = threadIdx.x / RC_DP;
        const bool live = z < RC_NS && i < D;
        float dkr[C], dbr[C];
#pragma unroll
        for (int t = 0; t < C; ++t) dkr[t] = dbr[t] = 0.0f;
        if (live) {{
#pragma unroll
            for (int t = 0; t < C; ++t) {{
                if (t >= L) break;
                const float bt = bc[t * RC_TS + i];
                float qv[RC_HPT], d[RC_HPT];
#pragma unroll
                for (int u = 0; u < RC_HPT; ++u) {{
                    const int r = (z + RC_NS * u) * C + t;
                    const bool in = z + RC_NS * u < RC_GB;
                    qv[u] = in ? qf[r * RC_TS + i] : 0.0f;
                    d[u] = in ? dO[r * RC_TS + i] : 0.0f;
                }}
#pragma unroll
                for (int s = 0; s <= t; ++s) {{
                    const float E = expf(bt - bc[s * RC_TS + i]);
                    const float w = E * kf[s * RC_TS + i];
                    float x = 0.0f;
#pragma unroll
                    for (int u = 0; u < RC_HPT; ++u) {{
                        const bool in = z + RC_NS * u < RC_GB;
                        const float pv = in ? P[((z + RC_NS * u) * C + t) * RC_CS + s] : 0.0f;
                        d[u] += w * pv;
                        x += qv[u] * pv;
                    }}
                    dkr[s] += E * x;
                }}
                float part = 0.0f;
#pragma unroll
                for (int u = 0; u < RC_HPT; ++u) {{
                    const int g = z + RC_NS * u;
                    if (g >= nh) continue;
                    dq[(row0 + t) * (H * D) + (j * G + g0 + g) * D + i] = d[u];
                    part += qv[u] * d[u];
                }}
                dbr[t] = part;
            }}
        }}
        for (int zz = 0; zz < RC_NS; ++zz) {{
            if (live && z == zz)
#pragma unroll
                for (int t = 0; t < C; ++t) {{
                    dks[t * RC_TS + i] += dkr[t];
                    dbs[t * RC_TS + i] += dbr[t];
                }}
            __syncthreads();
        }}
    }}
    for (int e = threadIdx.x; e < L * D; e += NT) {{
        const int t = e / D, i = e % D;
        const long long o = (row0 + t) * (HKV * D) + j * D + i;
        dk[o] = dks[t * RC_TS + i];
        db[o] = dbs[t * RC_TS + i] - kf[t * RC_TS + i] * dks[t * RC_TS + i];
    }}
}}

// dg_t = sum_(u>=t) db_u per (row, KV head, channel), in place, accumulated in double. A block takes
// 32 such columns, a lane each, and cuts the sequence into NT / 32 segments, a warp each: every
// thread sums its segment, adds the later segments' sums, then walks its segment backwards.
// Grid ceil(batch*HKV*D / 32).
extern "C" __global__ void {p}_revcumsum(float* __restrict__ db, int batch, int seq) {{
    constexpr int NSEG = NT / 32;
    __shared__ double part[NSEG][32];
    const int lane = threadIdx.x & 31, seg = threadIdx.x >> 5;
    const long long id = (long long)blockIdx.x * 32 + lane;
    const bool live = id < (long long)batch * HKV * D;
    const long long b = id / (HKV * D), col = id % (HKV * D);
    const int len = (seq + NSEG - 1) / NSEG, t0 = seg * len, t1 = min(seq, t0 + len);
    double acc = 0.0;
    if (live)
        for (int t = t0; t < t1; ++t) acc += (double)db[(b * seq + t) * (HKV * D) + col];
    part[seg][lane] = acc;
    __syncthreads();
    acc = 0.0;
    for (int z = seg + 1; z < NSEG; ++z) acc += part[z][lane];
    if (live)
        for (int t = t1 - 1; t >= t0; --t) {{
            const long long at = (b * seq + t) * (HKV * D) + col;
            acc += (double)db[at];
            db[at] = (float)acc;
        }}
}}
"#,
        scan_fwd = scans[0],
        scan_bwd = scans[1],
    );
    s
}

/// The two scans over chunks, `{name}_fwd` and `{name}_bwd`, for chunk slots of
/// `floats` state floats whose element `e` decays by row `row` of the slot's
/// `rows` decays (C expressions over the source's constants). One thread per
/// (row, KV head, state element) walks the chunks:
/// - forward: slot `n` ← the state entering chunk `n` (`S_0 = 0`,
///   `S_(n+1) = e^(b_L) ⊙ S_n + ΔS_n`, slot `n` holding `ΔS_n` before);
/// - reverse: slot `n` ← the gradient of the state leaving chunk `n` (zero
///   for the last; `dG_(n-1) = e^(b_L) ⊙ dG_n + ΔdG_n`).
pub(super) fn scan_kernels(name: &str, floats: &str, row: &str, rows: &str) -> [String; 2] {
    let walk = |kernel: &str, what: &str, order: &str, var: &str| {
        format!(
            r#"// {what}. One thread per (row, KV head, state element).
extern "C" __global__ void {name}_{kernel}(float* __restrict__ states, const float* __restrict__ dec, int batch, int seq) {{
    constexpr int F = {floats};
    const long long id = (long long)blockIdx.x * NT + threadIdx.x;
    if (id >= (long long)batch * HKV * F) return;
    const long long bj = id / F;
    const int e = (int)(id % F), r = {row}, nch = (seq + C - 1) / C;
    float {var} = 0.0f;
    for ({order}) {{
        const long long at = bj * nch + n;
        const float add = states[at * F + e];
        states[at * F + e] = {var};
        {var} = dec[at * ({rows}) + r] * {var} + add;
    }}
}}
"#
        )
    };
    [
        walk(
            "fwd",
            "slot n <- the state entering chunk n",
            "int n = 0; n < nch; ++n",
            "S",
        ),
        walk(
            "bwd",
            "slot n <- the gradient of the state leaving chunk n (zero for the last)",
            "int n = nch - 1; n >= 0; --n",
            "dG",
        ),
    ]
}
