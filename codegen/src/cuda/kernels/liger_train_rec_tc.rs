//! The keyed recurrence kernels of the LigerAttention training source on bf16
//! tensor cores (`TrainMath::Bf16`): `mma.sync` m16n8k16 with f32
//! accumulation, the operands rounded to bf16 when they are staged; gates,
//! their cumsums, decays, scans, accumulators and the chunks' own state sums
//! stay f32, and the scans write the states and state gradients the kernels
//! read as bf16 copies (the rounding their staging would do).
//! [`super::source`] emits them in place of the f32 SIMT kernels of the same
//! names and argument lists; [`super`]'s launch lists take their geometry
//! from here.
//!
//! Every kernel takes one (chunk, KV head) per block — or a part of its warp
//! tasks: grid `(chunks, KV · parts, batch)`, `parts` chosen at launch so a
//! small batch still spreads over the GPU ([`parts`]). The in-chunk products
//! use *secondary chunking* (fla's `chunk_gla`, the GLA paper): the chunk is
//! cut into 16-row sub-chunks; for a query sub-chunk `ii` and an earlier key
//! row `s < r = 16 ii`, `q̃_t e^(b_t − b_r)` and `k̃_s e^(b_r − b_s)` both have
//! exponents ≤ 0, so those scores are one plain product; the 16 × 16 diagonal
//! blocks are products too where the chunk decays slowly (`tc_fast`: every
//! sub-chunk keeps at least `e^-40` in every channel, as real gates do):
//! `(q̃_t e^(b_t − b_r)) · (k̃_s e^(b_r − b_s))`, masked to `s ≤ t`, both
//! factors within `e^(±40)`; elsewhere they are summed per element with
//! `e^(b_t − b_s)`. The inter-chunk terms `(q̃_t e^(b_t)) S` and
//! `Σ_s (k̃_s e^(b_L − b_s))ᵀ v_s` are safe as they stand. Nothing divides by
//! a decay.
//!
//! Head dims that are not a multiple of 16, or above 128, keep the f32
//! kernels ([`eligible`]). With all five kernels here ([`TENSOR`]) the chunk
//! is 64 at every eligible D (`plan` in [`super`]; the kernels work at any
//! chunk that is a multiple of 16): the in-chunk products are mma, so a
//! longer chunk only cuts the states (`∝ D²/C`). At D 128, C 64 `bwd_dqk`
//! takes the most shared memory, 220.5 KiB.
//!
//! Per kernel (8 warps a block, 16 for `fwd`, `bwd_dv`, `bwd_dqk`, whose
//! shared memory leaves one block an SM; `TC_CG` = 64 output columns where D
//! allows):
//! - `chunk_state`, `chunk_dstate`: a warp per 16 state rows × 64 columns,
//!   `Xᵀ Y` over the chunk's rows with `Xᵀ` by `ldmatrix.trans`;
//!   `chunk_dstate` stages one query head at a time (`q̃ e^b`, `do`) and
//!   keeps its accumulators over the heads;
//! - `fwd`: a warp per (query head, sub-chunk); the queries' softmax in
//!   registers (a row on a lane quad), scores of earlier sub-chunks by mma,
//!   the diagonal block by mma (fast chunks) or per element, then
//!   `(q̃ e^b) S + A V`;
//! - `bwd_dv`: a warp per (key sub-chunk, `TC_VG` value columns) over the heads:
//!   `kd dG`, then per head the transposed scores (later sub-chunks by mma,
//!   the diagonal block too in fast chunks, else per element) times `do`;
//! - `bwd_dqk`: one block per (chunk, KV head), a warp per (sub-chunk,
//!   `TC_QG` channels); per query head `P = do vᵀ`'s causal 16 × 16 blocks
//!   by mma into a bf16 tile (the diagonal ones masked), then, in slow
//!   chunks only, a pass of a thread per (sub-chunk, channel) over the
//!   diagonal blocks (each `e^(b_t − b_s)` once for `dq̃` and `dk̃`), then
//!   the warps' `e^(b_t − b_r)[e^(b_r) do Sᵀ + P kx]` for
//!   `dq̃` and `Pᵀ (q̃ e^(b_t − b_r))` scaled by `e^(b_r − b_s)` for `dk̃`;
//!   `dk̃`, `Σ_h q̃ ⊙ dq̃` stay in registers over the heads; each head's
//!   `dq = q̃ ⊙ (dq̃ − Σ_i q̃_i dq̃_i)` (the softmax backward, which the
//!   `finish` kernel does for the f32 kernels) is written once, its row sums
//!   joined over the column-group tasks through shared memory.

use ligerc_ir::{LigerSpec, LigerVariant};

use super::TrainMath;
use crate::cuda::kernels::liger::MMA_PRELUDE;

/// The recurrence kernels in `smem_floats` order.
const KERNELS: [&str; 5] = ["chunk_state", "fwd", "bwd_dv", "bwd_dqk", "chunk_dstate"];

/// Which of [`KERNELS`] run on tensor cores (the others would keep their f32
/// form, at the same chunk): all of them.
pub(super) const TENSOR: [bool; 5] = [true; 5];

/// Threads per block of the tensor-core kernels (the source's `NT`): 8 warps.
const THREADS: usize = 256;

/// Threads per block of the [`wide`] kernels `fwd`, `bwd_dv` and `bwd_dqk`
/// (the source's `TC_NTB`): 16 warps. Their shared memory leaves one block an
/// SM, so twice the warps hide twice the latency of their loads and barriers.
const THREADS_BWD: usize = 2 * THREADS;

/// Whether [`KERNELS`]`[k]` runs [`THREADS_BWD`] threads.
fn wide(k: usize) -> bool {
    matches!(KERNELS[k], "fwd" | "bwd_dv" | "bwd_dqk")
}

/// Blocks a launch aims for: two a streaming multiprocessor of an H100.
const TARGET_BLOCKS: usize = 2 * 132;

/// Whether `spec` under `math` runs the tensor-core recurrence: bf16 math, a
/// keyed variant, a head dim that is a multiple of 16 (the mma tiles) and at
/// most 128 (a state and the chunk's tiles in shared memory).
pub(super) fn eligible(spec: &LigerSpec, math: TrainMath) -> bool {
    let d = spec.head_dim;
    math == TrainMath::Bf16
        && matches!(
            spec.variant,
            LigerVariant::Gla
                | LigerVariant::Hgrn2
                | LigerVariant::Retention
                | LigerVariant::Linear
        )
        && d.is_multiple_of(16)
        && (16..=128).contains(&d)
}

/// Dynamic shared memory in bytes of the tensor-core kernels at head dim `d`
/// and chunk `c`, in `smem_floats` order (0 for a kernel that stays f32).
pub(super) fn smem_bytes(d: usize, c: usize) -> [usize; 5] {
    let (fs, bs) = (d + 4, d + 8);
    let f32_tile = c * fs * 4;
    let bf_tile = c * bs * 2;
    let ns = c / 16;
    let kx = 8 * ns * ns.saturating_sub(1) * bs * 2;
    let state = d * bs * 2;
    let all = [
        2 * f32_tile + 2 * bf_tile,
        2 * f32_tile + bf_tile + kx + state,
        2 * f32_tile + 4 * bf_tile + kx + state,
        3 * f32_tile + 3 * bf_tile + kx + state + c * (c + 8) * 2 + c * (d / 16) * 4,
        f32_tile + 2 * bf_tile,
    ];
    let mut out = [0; 5];
    for k in 0..5 {
        if TENSOR[k] {
            out[k] = all[k];
        }
    }
    out
}

/// The most parts a (chunk, KV head) of each kernel splits into (its warp
/// tasks), in `smem_floats` order: `chunk_state`, `chunk_dstate` take 16
/// state rows × `TC_SG` columns a task, `fwd` a (query head, sub-chunk),
/// `bwd_dv` a (key sub-chunk, `TC_CG` columns); `bwd_dqk` does not split
/// (its diagonal pass and score tiles serve all its tasks).
pub(super) fn max_parts(spec: &LigerSpec, c: usize) -> [usize; 5] {
    let d = spec.head_dim;
    let g = spec.heads / spec.kv_heads.max(1);
    let sg = if d.is_multiple_of(64) { 64 } else { d };
    let state_tasks = (d / 16) * (d / sg);
    // bwd_dv's columns a task (the source's TC_VG): the widest that gives each of its warps a task
    let ns = c / 16;
    let warps = THREADS_BWD / 32;
    let vg = if d.is_multiple_of(64) && ns * (d / 64) >= warps {
        64
    } else if d.is_multiple_of(32) && ns * (d / 32) >= warps {
        32
    } else {
        16
    };
    [state_tasks, g * ns, ns * (d / vg), 1, state_tasks]
}

/// Parts a block of `base` (chunk, KV head, row) blocks splits into: enough
/// for [`TARGET_BLOCKS`] blocks, at most `max`.
pub(super) fn parts(base: usize, max: usize) -> usize {
    TARGET_BLOCKS.div_ceil(base.max(1)).clamp(1, max.max(1))
}

/// Threads per block of the tensor-core kernel `k` (in `smem_floats` order).
pub(super) fn threads(k: usize) -> usize {
    if wide(k) { THREADS_BWD } else { THREADS }
}

/// The recurrence of the training source for `prefix`: `f32_rec` (the f32
/// kernels, scans and `revcumsum`) without the definitions of the kernels
/// that run on tensor cores and of the scans (their header comments stay),
/// then the tensor-core kernels under the original names, and scans that
/// write their results as the bf16 copies those kernels read (one more
/// argument: the copy's scratch region). `has_mma` says whether the
/// source already holds the `mma.sync` wrappers.
pub(super) fn source(prefix: &str, f32_rec: &str, has_mma: bool) -> String {
    let mut s = String::new();
    if !has_mma {
        s.push_str(MMA_PRELUDE);
    }
    let mut rec = f32_rec.to_string();
    let replaced = KERNELS
        .iter()
        .enumerate()
        .filter(|&(k, _)| TENSOR[k])
        .map(|(_, name)| *name)
        .chain(["scan_fwd", "scan_bwd"]);
    for name in replaced {
        let entry = format!("extern \"C\" __global__ void {prefix}_{name}(");
        rec = without_definition(&rec, &entry);
    }
    s.push_str(&rec);
    s.push_str(TC_HELPERS);
    s.push_str(&with_bounds(&TC_KERNELS.replace("@P@", prefix)));
    s
}

/// `src` without the function definition that starts at `entry` (its
/// signature, then a brace-balanced body); `src` as is where `entry` is absent.
fn without_definition(src: &str, entry: &str) -> String {
    let Some(at) = src.find(entry) else {
        return src.to_string();
    };
    let Some(open) = src[at..].find(") {").map(|o| at + o + 2) else {
        return src.to_string();
    };
    let mut depth = 0usize;
    for (o, ch) in src[open..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    let end = open + o + 1;
                    return format!("{}{}", &src[..at], src[end..].trim_start_matches('\n'));
                }
            }
            _ => {}
        }
    }
    src.to_string()
}

/// `src` with each entry point `extern "C" __global__ void name(…) {` preceded
/// by its declaration with `__launch_bounds__` of its block: `TC_NTB` for the
/// [`wide`] kernels (up to 128 registers a thread), else `NT` (up to 255).
fn with_bounds(src: &str) -> String {
    const ENTRY: &str = "extern \"C\" __global__ void ";
    let mut out = String::with_capacity(src.len() + 1024);
    let mut rest = src;
    while let Some(at) = rest.find(ENTRY) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let sig_end = rest.find(") {").map_or(rest.len(), |e| e + 1);
        let sig = &rest[ENTRY.len()..sig_end];
        let is_wide =
            (0..KERNELS.len()).any(|k| wide(k) && sig.contains(&format!("_{}(", KERNELS[k])));
        let bound = if is_wide { "TC_NTB" } else { "NT" };
        out.push_str(&format!("{ENTRY}__launch_bounds__({bound}) {sig};\n"));
        out.push_str(&rest[..sig_end]);
        rest = &rest[sig_end..];
    }
    out.push_str(rest);
    out
}

/// Constants and device helpers of the tensor-core kernels (after the f32
/// recurrence: uses the source's `gate_at`, `key_raw`, `KEY_SOFTMAX`, `NT`).
const TC_HELPERS: &str = r#"
// ---- recurrence on bf16 tensor cores (mma.sync m16n8k16, f32 accumulation)
// Fragments (gid = lane / 4, tig = lane % 4): A holds rows gid, gid + 8 at columns 2 tig (+1) and
// 2 tig + 8 (+1) (registers: (gid, lo), (gid + 8, lo), (gid, hi), (gid + 8, hi)); B columns gid at
// rows 2 tig (+1), 2 tig + 8 (+1); C rows gid, gid + 8 at columns 2 tig (+1).
constexpr int TC_NS = C / 16;                 // 16-row sub-chunks of a chunk
constexpr int TC_KK = D / 16;                 // 16-channel mma k steps over the head dim
constexpr int TC_FS = D + 4;                  // row stride of f32 [rows][D] tiles
constexpr int TC_BS = D + 8;                  // row stride of bf16 [rows][D] tiles (ldmatrix rows on distinct banks)
constexpr int TC_NW = NT / 32;                // warps of a block
constexpr int TC_CG = D % 64 == 0 ? 64 : (D % 32 == 0 ? 32 : 16);  // output columns of a pass
constexpr int TC_KX = 8 * TC_NS * (TC_NS - 1); // rows of fwd's off-diagonal key tiles (16 ii for sub-chunk ii)
constexpr int TC_SG = D % 64 == 0 ? 64 : D;   // state columns of a warp task
constexpr int TC_ST = (D / 16) * (D / TC_SG); // state tasks (16 rows x TC_SG columns)
constexpr int TC_SPW = (TC_ST + TC_NW - 1) / TC_NW;  // state tasks of a warp at most
// fwd, bwd_dv and bwd_dqk run TC_NTB threads, twice NT: their shared memory leaves one block an SM, so
// twice the warps hide twice the latency.
constexpr int TC_NTB = 2 * NT;
constexpr int TC_NWB = TC_NTB / 32;
// bwd_dv: value columns of a warp task (the widest that still gives every warp a task), its tasks
// (key sub-chunk, TC_VG columns), tasks of a warp at most
constexpr int TC_VG = D % 64 == 0 && TC_NS * (D / 64) >= TC_NWB ? 64 : (D % 32 == 0 && TC_NS * (D / 32) >= TC_NWB ? 32 : 16);
constexpr int TC_VT = TC_NS * (D / TC_VG);
constexpr int TC_VPW = (TC_VT + TC_NWB - 1) / TC_NWB;
constexpr int TC_RV = (D + 31) / 32;          // features of a lane in a warp-per-row pass
// bwd_dqk: columns of a warp task (the widest that still gives every warp a task), its tasks
// (sub-chunk, TC_QG columns), tasks of a warp at most, the row stride of its bf16 [C][C] score tile,
// and the (sub-chunk, channel) items of a thread in its diagonal pass.
constexpr int TC_QG = D % 64 == 0 && TC_NS * (D / 64) >= TC_NWB ? 64 : (D % 32 == 0 && TC_NS * (D / 32) >= TC_NWB ? 32 : 16);
constexpr int TC_QT = TC_NS * (D / TC_QG);
constexpr int TC_QPW = (TC_QT + TC_NWB - 1) / TC_NWB;
constexpr int TC_PS = C + 8;
constexpr int TC_RQ = D / TC_QG;              // bwd_dqk: column groups of a row (its partial sums in rq)
constexpr int TC_DI = (TC_NS * D + TC_NTB - 1) / TC_NTB;
// The most a sub-chunk may decay (b_r - b_(r+15), any channel) for its diagonal block to be one
// product (tc_fast): both factors then lie within e^(+-TC_FAST), far inside f32 and bf16 range.
constexpr float TC_FAST = 40.0f;
static_assert(D % 16 == 0 && D <= 128 && C % 16 == 0, "the tensor-core recurrence takes D, C multiples of 16, D <= 128");
// The tensor-core window source (emitted before, for the same specs) lends its wt_acc: same tile stride.
static_assert(WT_LD == TC_BS, "the window's bf16 tiles and these share a row stride");

__device__ __forceinline__ float2 tc_ld2(const float* p) { return *reinterpret_cast<const float2*>(p); }

// A block's (chunk, KV head) and part: grid (nch, HKV * parts, batch).
struct TcBlock {
    int n, j, b, part, parts, L, nch;
    long long row0, at;  // first token row, scratch slot
};
__device__ __forceinline__ TcBlock tc_block(int seq) {
    TcBlock k;
    k.parts = (int)gridDim.y / HKV;
    k.j = (int)blockIdx.y / k.parts;
    k.part = (int)blockIdx.y % k.parts;
    k.n = blockIdx.x;
    k.b = blockIdx.z;
    k.nch = (seq + C - 1) / C;
    k.L = min(C, seq - k.n * C);
    k.row0 = (long long)k.b * seq + (long long)k.n * C;
    k.at = (long long)(k.b * HKV + k.j) * k.nch + k.n;
    return k;
}

// In-chunk inclusive cumsum of the log-gates of KV head j into bc [C][TC_FS] (f32; rows >= L keep
// the last row's value). Ends with a barrier.
template <int BT = NT>
__device__ void tc_gates(float* bc, const float* gate, long long row0, int j, int L) {
#pragma unroll 4
    for (int e = threadIdx.x; e < C * D; e += BT) {
        const int t = e / D, i = e % D;
        bc[t * TC_FS + i] = t < L ? gate_at(gate, row0 + t, j, i) : 0.0f;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < D; i += BT) {
        float acc = 0.0f;
        for (int t = 0; t < C; ++t) {
            acc += bc[t * TC_FS + i];
            bc[t * TC_FS + i] = acc;
        }
    }
    __syncthreads();
}

// Whether the chunk's diagonal 16 x 16 blocks take the one-product path: every 16-row sub-chunk
// decays by at most e^(-TC_FAST) in every channel (b_r - b_(r+15) <= TC_FAST with r = 16 ii; bc's
// rows past L repeat row L - 1). Then, for t, s in sub-chunk ii with s <= t,
//   e^(b_t - b_s) = e^(b_t - b_r) e^(b_r - b_s),   e^(b_t - b_r) in [e^-TC_FAST, 1], e^(b_r - b_s) in [1, e^TC_FAST],
// so a diagonal block's scores are the product of q~ e^(b_t - b_r) (the kernels' qr) and
// k~ e^(b_r - b_s) (tc_diag_keys), masked to s <= t, on tensor cores like the blocks off the
// diagonal; each pair's score keeps a bf16 product's relative error (the factors are positive, so
// the channel sum does not cancel). Real gates (logsigmoid / 16) decay by far less; chunks that decay
// faster keep the per-element tc_diag. Block-uniform; a barrier.
template <int BT = NT>
__device__ __forceinline__ bool tc_fast(const float* bc) {
    int slow = 0;
    for (int e = threadIdx.x; e < TC_NS * D; e += BT) {
        const int r = 16 * (e / D), i = e % D;
        slow |= bc[r * TC_FS + i] - bc[(r + 15) * TC_FS + i] > TC_FAST;
    }
    return !__syncthreads_or(slow);
}

// For a tc_fast chunk: the mapped keys scaled to their sub-chunk's first row r,
// k~_s e^(b_r - b_s), as bf16 [C][TC_BS] in place of kf (f32 [C][TC_FS]; the bf16 rows are
// shorter, so every value is read before the barrier and written after it). Ends with a barrier.
template <int BT = NT>
__device__ void tc_diag_keys(float* kf, const float* bc) {
    constexpr int KE = (C * D / 2 + BT - 1) / BT;  // channel pairs of a thread
    unsigned w[KE];
#pragma unroll
    for (int u = 0; u < KE; ++u) {
        const int e = threadIdx.x + BT * u, t = e / (D / 2), i = 2 * (e % (D / 2)), r = t & ~15;
        if (e >= C * D / 2) break;
        const float2 kv = tc_ld2(kf + t * TC_FS + i), bt = tc_ld2(bc + t * TC_FS + i), br = tc_ld2(bc + r * TC_FS + i);
        w[u] = pack_bf16(kv.x * __expf(br.x - bt.x), kv.y * __expf(br.y - bt.y));
    }
    __syncthreads();
    bf16* ke = reinterpret_cast<bf16*>(kf);
#pragma unroll
    for (int u = 0; u < KE; ++u) {
        const int e = threadIdx.x + BT * u, t = e / (D / 2), i = 2 * (e % (D / 2));
        if (e >= C * D / 2) break;
        *reinterpret_cast<unsigned*>(ke + t * TC_BS + i) = w[u];
    }
    __syncthreads();
}

// Zero the entries of a 16 x 16 diagonal score block in mma C layout (sc[nt][x]: row gid + 8 (x >> 1),
// column 8 nt + 2 tig + (x & 1)) above its diagonal (column > row) when ROWQ — rows are queries —
// or below it (column < row) otherwise.
template <bool ROWQ>
__device__ __forceinline__ void tc_causal(float (&sc)[2][4]) {
    const int lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int x = 0; x < 4; ++x) {
            const int row = gid + 8 * (x >> 1), col = 8 * nt + 2 * tig + (x & 1);
            if (ROWQ ? col > row : col < row) sc[nt][x] = 0.0f;
        }
}

// Mapped keys of KV head j into kf [C][TC_FS] (f32: softmax over D, or 1 - e^g for HGRN2; rows >= L
// zero). Ends with a barrier.
template <int BT = NT>
__device__ void tc_keys(float* kf, const float* k, const float* gate, long long row0, int j, int L) {
#pragma unroll 4
    for (int e = threadIdx.x; e < C * D; e += BT) {
        const int t = e / D, i = e % D;
        kf[t * TC_FS + i] = t < L ? key_raw(k, gate, row0 + t, j, i) : 0.0f;
    }
    __syncthreads();
    if constexpr (KEY_SOFTMAX) {
        for (int t = threadIdx.x >> 5; t < L; t += (BT / 32)) softmax_row(kf + t * TC_FS);
        __syncthreads();
    }
}

// scale * ROWS rows of D features (token row row0 + t at src + (row0 + t) * stride + off; rows >= L
// zero) as bf16 into dst [ROWS][TC_BS]. No barrier.
template <int ROWS, int BT = NT>
__device__ void tc_rows(bf16* dst, const float* src, long long row0, int stride, int off, int L, float scale) {
#pragma unroll 4
    for (int e = threadIdx.x; e < ROWS * (D / 4); e += BT) {
        const int t = e / (D / 4), c = 4 * (e % (D / 4));
        const float4 x = t < L ? *reinterpret_cast<const float4*>(src + (row0 + t) * stride + off + c) : float4{0.0f, 0.0f, 0.0f, 0.0f};
        unsigned* o = reinterpret_cast<unsigned*>(dst + t * TC_BS + c);
        o[0] = pack_bf16(scale * x.x, scale * x.y);
        o[1] = pack_bf16(scale * x.z, scale * x.w);
    }
}

// The [D][D] state of slot `at` from the tensor-core scans' bf16 copy at src into dst [D][TC_BS], 16 bytes a
// thread at a time (the f32 state rounded as tc_rows would round it). No barrier.
template <int BT = NT>
__device__ void tc_state(bf16* dst, const float* src, long long at) {
    const bf16* s = reinterpret_cast<const bf16*>(src) + at * D * D;
    constexpr int V = D / 8;
#pragma unroll 4
    for (int e = threadIdx.x; e < D * V; e += BT) {
        const int r = e / V, c = 8 * (e % V);
        *reinterpret_cast<uint4*>(dst + r * TC_BS + c) = *reinterpret_cast<const uint4*>(s + r * D + c);
    }
}

// q~ = softmax over D of C token rows (features at src + (row0 + t) * stride + off) as bf16 tiles
// [C][TC_BS] (rows >= L zero), each where given: qq = q~, qr = q~ e^(b_t - b_(16 floor(t / 16))) (to
// the first row of its sub-chunk), qe = q~ e^(b_t); and qf = q~ as f32 [C][TC_FS]. A warp per row,
// TC_QR rows of a warp at a time (their loads in flight together). No barrier.
constexpr int TC_QR = 4;
template <int BT = NT>
__device__ void tc_query_tiles(bf16* qq, bf16* qr, bf16* qe, const float* src, long long row0, int stride, int off, int L,
                               const float* bc, float* qf = nullptr) {
    constexpr int NW = BT / 32;
    const int lane = threadIdx.x & 31;
    for (int t0 = threadIdx.x >> 5; t0 < C; t0 += TC_QR * NW) {
        float x[TC_QR][TC_RV], m[TC_QR], z[TC_QR];
#pragma unroll
        for (int a = 0; a < TC_QR; ++a) {
            const int t = t0 + a * NW;
            m[a] = neg_inf();
#pragma unroll
            for (int u = 0; u < TC_RV; ++u) {
                const int i = lane + 32 * u;
                x[a][u] = i < D && t < L ? src[(row0 + t) * stride + off + i] : neg_inf();
                m[a] = fmaxf(m[a], x[a][u]);
            }
        }
#pragma unroll
        for (int a = 0; a < TC_QR; ++a) {
            m[a] = warp_max(m[a]);
            z[a] = 0.0f;
#pragma unroll
            for (int u = 0; u < TC_RV; ++u) {
                x[a][u] = lane + 32 * u < D && t0 + a * NW < L ? expf(x[a][u] - m[a]) : 0.0f;
                z[a] += x[a][u];
            }
            z[a] = warp_sum(z[a]);
            z[a] = z[a] > 0.0f ? 1.0f / z[a] : 0.0f;  // rows >= L: all zero
        }
#pragma unroll
        for (int a = 0; a < TC_QR; ++a) {
            const int t = t0 + a * NW, r = t & ~15;
            if (t >= C) break;
#pragma unroll
            for (int u = 0; u < TC_RV; ++u) {
                const int i = lane + 32 * u;
                if (i >= D) continue;
                const float v = x[a][u] * z[a], bt = bc[t * TC_FS + i];
                if (qq) qq[t * TC_BS + i] = __float2bfloat16(v);
                if (qr) qr[t * TC_BS + i] = __float2bfloat16(v * __expf(bt - bc[r * TC_FS + i]));
                if (qe) qe[t * TC_BS + i] = __float2bfloat16(v * __expf(bt));
                if (qf) qf[t * TC_FS + i] = v;
            }
        }
    }
}

// This lane's bf16 A fragments of rows t0 + gid, t0 + gid + 8 of the f32 tile X [C][TC_FS].
__device__ __forceinline__ void tc_frags_f32(unsigned (&xa)[TC_KK][4], const float* X, int t0) {
    const int lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
#pragma unroll
    for (int kk = 0; kk < TC_KK; ++kk)
#pragma unroll
        for (int x = 0; x < 4; ++x) {
            const float2 v = tc_ld2(X + (t0 + gid + 8 * (x & 1)) * TC_FS + 16 * kk + 2 * tig + 8 * (x >> 1));
            xa[kk][x] = pack_bf16(v.x, v.y);
        }
}

// Two adjacent elements of an f32 or bf16 tile row as floats.
__device__ __forceinline__ float2 tc_y2(const float* p) { return tc_ld2(p); }
__device__ __forceinline__ float2 tc_y2(const bf16* p) {
    const unsigned u = *reinterpret_cast<const unsigned*>(p);
    return float2{bf_lo(u), bf_hi(u)};
}

// The chunk's key tiles in bf16 from kf, bc [C][TC_FS]: kd [C][TC_BS] = k~_s e^(b_L - b_s) (decayed to
// the chunk's end; rows >= L zero) where given, and kx: sub-chunk ii's tile (rows 8 ii (ii - 1) ..)
// holds k~_s e^(b_(16 ii) - b_s) for s < 16 ii. No barrier.
template <int BT = NT>
__device__ void tc_key_tiles(bf16* kd, bf16* kx, const float* kf, const float* bc, int L) {
    if (kd)
        for (int e = threadIdx.x; e < C * D; e += BT) {
            const int t = e / D, i = e % D;
            kd[t * TC_BS + i] = __float2bfloat16(t < L ? kf[t * TC_FS + i] * __expf(bc[(L - 1) * TC_FS + i] - bc[t * TC_FS + i]) : 0.0f);
        }
    if (kx)
    for (int e = threadIdx.x; e < TC_KX * D; e += BT) {
        const int rr = e / D, i = e % D;
        int ii = 1;
        while (8 * ii * (ii + 1) <= rr) ++ii;
        const int s = rr - 8 * ii * (ii - 1);
        kx[rr * TC_BS + i] = __float2bfloat16(kf[s * TC_FS + i] * __expf(bc[16 * ii * TC_FS + i] - bc[s * TC_FS + i]));
    }
}

// The keyed kernels' shared staging (fwd, bwd_dv, bwd_dqk): the gate cumsum into bc, the mapped keys
// into kf, their bf16 key tiles (kd where given, kx), then whether the chunk is tc_fast, in which case
// kf then holds the diagonal keys ke (tc_diag_keys). Ends with a barrier.
template <int BT>
__device__ __forceinline__ bool tc_key_stage(float* bc, float* kf, bf16* kd, bf16* kx, const float* k, const float* gate,
                                             const TcBlock& blk) {
    tc_gates<BT>(bc, gate, blk.row0, blk.j, blk.L);
    tc_keys<BT>(kf, k, gate, blk.row0, blk.j, blk.L);
    tc_key_tiles<BT>(kd, kx, kf, bc, blk.L);
    __syncthreads();
    const bool fast = tc_fast<BT>(bc);
    if (fast) tc_diag_keys<BT>(kf, bc);
    return fast;
}

// q~ (softmax over D) of this lane's rows ta, tb (zero at rows >= L) as bf16 A fragments over the head
// dim, from src = the query head's features at token row 0 of the chunk (row stride H * D). Three
// passes over the (cached) rows — max, sum, values — keep few registers live.
__device__ __forceinline__ void tc_query_frags(unsigned (&qa)[TC_KK][4], const float* src, int ta, int tb, int L) {
    const int tig = threadIdx.x & 3;
    const float* ra = src + (long long)min(ta, L - 1) * (H * D) + 2 * tig;
    const float* rb = src + (long long)min(tb, L - 1) * (H * D) + 2 * tig;
    float m[2] = {neg_inf(), neg_inf()}, z[2] = {0.0f, 0.0f};
#pragma unroll
    for (int kk = 0; kk < TC_KK; ++kk)
#pragma unroll
        for (int x = 0; x < 4; ++x) {
            const float2 v = tc_ld2((x & 1 ? rb : ra) + 16 * kk + 8 * (x >> 1));
            m[x & 1] = fmaxf(m[x & 1], fmaxf(v.x, v.y));
        }
#pragma unroll
    for (int a = 0; a < 2; ++a) {  // a row's channels lie on the four lanes of a quad
        m[a] = fmaxf(m[a], __shfl_xor_sync(0xffffffffu, m[a], 1));
        m[a] = fmaxf(m[a], __shfl_xor_sync(0xffffffffu, m[a], 2));
    }
#pragma unroll
    for (int kk = 0; kk < TC_KK; ++kk)
#pragma unroll
        for (int x = 0; x < 4; ++x) {
            const float2 v = tc_ld2((x & 1 ? rb : ra) + 16 * kk + 8 * (x >> 1));
            z[x & 1] += __expf(v.x - m[x & 1]) + __expf(v.y - m[x & 1]);
        }
#pragma unroll
    for (int a = 0; a < 2; ++a) {
        z[a] += __shfl_xor_sync(0xffffffffu, z[a], 1);
        z[a] += __shfl_xor_sync(0xffffffffu, z[a], 2);
        z[a] = ((a ? tb : ta) < L) ? 1.0f / z[a] : 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < TC_KK; ++kk)
#pragma unroll
        for (int x = 0; x < 4; ++x) {
            const float2 v = tc_ld2((x & 1 ? rb : ra) + 16 * kk + 8 * (x >> 1));
            qa[kk][x] = pack_bf16(__expf(v.x - m[x & 1]) * z[x & 1], __expf(v.y - m[x & 1]) * z[x & 1]);
        }
}

// Two m16n8 C tiles (columns 0-7 and 8-15 of 16 rows) as a bf16 m16k16 A fragment.
__device__ __forceinline__ void tc_pack_a(unsigned (&p)[4], const float (&c0)[4], const float (&c1)[4]) {
    p[0] = pack_bf16(c0[0], c0[1]);
    p[1] = pack_bf16(c0[2], c0[3]);
    p[2] = pack_bf16(c1[0], c1[1]);
    p[3] = pack_bf16(c1[2], c1[3]);
}

// a[s] for s a lane's fragment column (s known only at run time) without indexing registers.
__device__ __forceinline__ float tc_pick(const float (&a)[16], int s) {
    float r = a[0];
#pragma unroll
    for (int u = 1; u < 16; ++u) r = s == u ? a[u] : r;
    return r;
}

// e^(b_t - b_s), the in-chunk decay from key row s to query row t, given the lane's row's b (bx) and
// the other row's (by): XQ when the lane's rows are queries. The exponent is clamped at 0 for the
// pairs the caller masks (s > t), so no e^(x > 0) is formed.
template <bool XQ>
__device__ __forceinline__ float tc_decay(float bx, float by) {
    return __expf(fminf(XQ ? bx - by : by - bx, 0.0f));
}

// The diagonal 16 x 16 block of the gated scores, summed per element, as this lane's bf16 A fragment
// pd: rows t0 + gid, t0 + gid + 8 of X (the lane's A fragments xa) against rows t0 .. t0 + 16 of Y
// (f32 or bf16, row stride ys), gated by e^(b_t - b_s) (bc [C][TC_FS]): XQ — X queries, Y keys: A[x][u] = scores
// of (t = x, s = u), s <= t; !XQ — X keys, Y queries: A[x][u] of (s = x, t = u), t >= s. Pairs
// outside the causal half are zero (and not computed where a whole half-row is).
template <bool XQ, typename YT>
__device__ __forceinline__ void tc_diag(unsigned (&pd)[4], const unsigned (&xa)[TC_KK][4], const YT* Y, int ys, const float* bc, int t0) {
    const int lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const int ta = t0 + gid, tb = ta + 8;
    // XQ: row ta (gid <= 7) sees u <= gid < 8 only; !XQ: row tb (gid + 8) sees u >= gid + 8 only.
    constexpr int A0 = 0, A1 = XQ ? 8 : 16, B0 = XQ ? 0 : 8, B1 = 16;
    float da[16], db[16];
#pragma unroll
    for (int u = 0; u < 16; ++u) da[u] = db[u] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < TC_KK; ++kk)
#pragma unroll (D <= 32 ? 2 : 1)
        for (int hf = 0; hf < 2; ++hf) {  // D >= 64: one half's loads at a time; below, unrolled (else ptxas spills)
            const int c = 16 * kk + 2 * tig + 8 * hf;
            const float2 ba = tc_ld2(bc + ta * TC_FS + c), bb = tc_ld2(bc + tb * TC_FS + c);
            const unsigned pa = hf ? xa[kk][2] : xa[kk][0], pb = hf ? xa[kk][3] : xa[kk][1];
            const float xa0 = bf_lo(pa), xa1 = bf_hi(pa), xb0 = bf_lo(pb), xb1 = bf_hi(pb);
#pragma unroll
            for (int u = 0; u < 16; ++u) {
                const float2 yv = tc_y2(Y + (t0 + u) * ys + c), by = tc_ld2(bc + (t0 + u) * TC_FS + c);
                if (u >= A0 && u < A1)
                    da[u] += xa0 * yv.x * tc_decay<XQ>(ba.x, by.x) + xa1 * yv.y * tc_decay<XQ>(ba.y, by.y);
                if (u >= B0 && u < B1)
                    db[u] += xb0 * yv.x * tc_decay<XQ>(bb.x, by.x) + xb1 * yv.y * tc_decay<XQ>(bb.y, by.y);
            }
        }
#pragma unroll
    for (int u = 0; u < 16; ++u) {
        if (u >= A0 && u < A1) {
            da[u] += __shfl_xor_sync(0xffffffffu, da[u], 1);
            da[u] += __shfl_xor_sync(0xffffffffu, da[u], 2);
            if (XQ ? u > gid : u < gid) da[u] = 0.0f;
        }
        if (u >= B0 && u < B1) {
            db[u] += __shfl_xor_sync(0xffffffffu, db[u], 1);
            db[u] += __shfl_xor_sync(0xffffffffu, db[u], 2);
            if (XQ ? u > gid + 8 : u < gid + 8) db[u] = 0.0f;
        }
    }
    pd[0] = pack_bf16(tc_pick(da, 2 * tig), tc_pick(da, 2 * tig + 1));
    pd[1] = pack_bf16(tc_pick(db, 2 * tig), tc_pick(db, 2 * tig + 1));
    pd[2] = pack_bf16(tc_pick(da, 2 * tig + 8), tc_pick(da, 2 * tig + 9));
    pd[3] = pack_bf16(tc_pick(db, 2 * tig + 8), tc_pick(db, 2 * tig + 9));
}

// acc[w] += X^T Y over the first `rows` rows (rounded up to 16; the rest zero) of X, Y [C][TC_BS]
// (bf16), for the warp's state tasks task = part + parts * (warp + TC_NW * w): state rows
// 16 (task % (D / 16)) .., columns TC_SG (task / (D / 16)) ... No barrier.
__device__ __forceinline__ void tc_state_mma(float (&acc)[TC_SPW][TC_SG / 8][4], const bf16* X, const bf16* Y, int part, int parts, int rows) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int arow = (lane & 7) + 8 * (lane >> 4), acol = 8 * ((lane >> 3) & 1);  // X^T as A (ldmatrix.trans)
    const int lrow = (lane & 7) + 8 * ((lane >> 3) & 1), lcol = 8 * (lane >> 4);  // Y as B (ldmatrix.trans)
#pragma unroll
    for (int w = 0; w < TC_SPW; ++w) {
        const int task = part + parts * (warp + TC_NW * w);
        if (task >= TC_ST) break;
        const int it = task % (D / 16), cg = (task / (D / 16)) * TC_SG;
        for (int kt = 0; 16 * kt < rows; ++kt) {
            unsigned a[4];
            ldsm_x4_t(a, X + (16 * kt + arow) * TC_BS + 16 * it + acol);
#pragma unroll
            for (int np = 0; np < TC_SG / 16; ++np) {
                unsigned r[4];
                ldsm_x4_t(r, Y + (16 * kt + lrow) * TC_BS + cg + 16 * np + lcol);
                mma_bf16(acc[w][2 * np], a, r[0], r[1]);
                mma_bf16(acc[w][2 * np + 1], a, r[2], r[3]);
            }
        }
    }
}

// tc_state_mma's accumulators into the f32 [D][D] state at dst. No barrier.
__device__ __forceinline__ void tc_state_store(float* dst, const float (&acc)[TC_SPW][TC_SG / 8][4], int part, int parts) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
#pragma unroll
    for (int w = 0; w < TC_SPW; ++w) {
        const int task = part + parts * (warp + TC_NW * w);
        if (task >= TC_ST) break;
        const int it = task % (D / 16), cg = (task / (D / 16)) * TC_SG;
#pragma unroll
        for (int nt = 0; nt < TC_SG / 8; ++nt)
#pragma unroll
            for (int x = 0; x < 2; ++x)
                *reinterpret_cast<float2*>(dst + (16 * it + gid + 8 * x) * D + cg + 8 * nt + 2 * tig) =
                    float2{acc[w][nt][2 * x], acc[w][nt][2 * x + 1]};
    }
}
"#;

/// The tensor-core entry points; `@P@` is the kernel name prefix.
const TC_KERNELS: &str = r#"
// Scans of the tensor-core recurrence: as the f32 scans (one thread per (row, KV head, state element), chunk
// slots in order), but slot n's result goes to `out` as bf16 — the only form the tensor-core kernels read
// (tc_state), rounded as their staging of an f32 state would round it — so it moves half the bytes, and
// `states` keeps the chunks' own sums. scan_fwd: out slot n <- the state entering chunk n; scan_bwd: out slot
// n <- the gradient of the state leaving chunk n (zero for the last).
template <bool FWD>
__device__ __forceinline__ void tc_scan(const float* states, const float* dec, float* out, int batch, int seq) {
    const long long id = (long long)blockIdx.x * NT + threadIdx.x;
    if (id >= (long long)batch * HKV * D * D) return;
    const long long bj = id / (D * D);
    const int e = (int)(id % (D * D)), r = e / D, nch = (seq + C - 1) / C;
    bf16* o = reinterpret_cast<bf16*>(out);
    float acc = 0.0f;
    for (int i = 0; i < nch; ++i) {
        const long long at = bj * nch + (FWD ? i : nch - 1 - i);
        const float add = states[at * D * D + e];
        o[at * D * D + e] = __float2bfloat16(acc);
        acc = dec[at * D + r] * acc + add;
    }
}
extern "C" __global__ void @P@_scan_fwd(const float* __restrict__ states, const float* __restrict__ dec,
        float* __restrict__ out, int batch, int seq) {
    tc_scan<true>(states, dec, out, batch, seq);
}
extern "C" __global__ void @P@_scan_bwd(const float* __restrict__ states, const float* __restrict__ dec,
        float* __restrict__ out, int batch, int seq) {
    tc_scan<false>(states, dec, out, batch, seq);
}

// 1. (tensor cores) dS_n = sum_s (k~_s e^(b_L - b_s))^T v_s into states[slot], e^b_L into dec[slot].
// Grid (nch, HKV * parts, batch), NT threads: the TC_ST state tasks (16 rows x TC_SG columns, a warp
// each) split over the parts. The keys times their decay to the chunk's end (<= 1) and the values are
// staged as bf16; dS = kd^T vb by mma (kd^T's fragments by ldmatrix.trans).
// Shared: bc, kf f32 [C][TC_FS]; kd, vb bf16 [C][TC_BS].
extern "C" __global__ void @P@_chunk_state(const float* __restrict__ k, const float* __restrict__ v,
        const float* __restrict__ gate, float* __restrict__ states, float* __restrict__ dec, int seq) {
    extern __shared__ float smem[];
    const TcBlock blk = tc_block(seq);
    float* bc = smem;
    float* kf = bc + C * TC_FS;
    bf16* kd = reinterpret_cast<bf16*>(kf + C * TC_FS);
    bf16* vb = kd + C * TC_BS;
    const int L = blk.L;
    tc_rows<C>(vb, v, blk.row0, HKV * D, blk.j * D, L, 1.0f);
    tc_gates(bc, gate, blk.row0, blk.j, L);
    tc_keys(kf, k, gate, blk.row0, blk.j, L);
    tc_key_tiles(kd, nullptr, kf, bc, L);
    if (blk.part == 0)
        for (int i = threadIdx.x; i < D; i += NT) dec[blk.at * D + i] = expf(bc[(L - 1) * TC_FS + i]);
    __syncthreads();
    float acc[TC_SPW][TC_SG / 8][4] = {};
    tc_state_mma(acc, kd, vb, blk.part, blk.parts, L);
    tc_state_store(states + blk.at * D * D, acc, blk.part, blk.parts);
}

// 3. (tensor cores) Output of chunk n for the G query heads of KV head j: y += MIX_LIN * o (y holds
// the window part), or with Y_SAVED y = MIX_WIN * o_win + MIX_LIN * o, o_win the window output win_fwd
// saved (bf16 [B seq][H D] just before `stats`; win_fwd then leaves y alone: y is written once).
// Grid (nch, HKV * parts, batch), TC_NTB threads; the (chunk, KV head)'s G * TC_NS warp tasks (sub-chunk
// ii of 16 query rows, query head; the longest rows first) split over the parts.
// The block stages S_n, v as bf16, the gate cumsum and the mapped keys as f32, and per sub-chunk ii > 0
// the keys before it scaled to its first row r = 16 ii, k~_s e^(b_r - b_s) (bf16, kx). A task holds its
// q~ rows as A fragments and forms
//   o_t = (q~_t e^b_t) S_n + sum_(s<r) [(q~_t e^(b_t - b_r)) . (k~_s e^(b_r - b_s))] v_s
//         + sum_(r<=s<=t) [sum_i q~_ti k~_si e^(b_ti - b_si)] v_s
// (every exponent <= 0): the first two scores by mma; the diagonal block by mma too in a tc_fast chunk,
// (q~_t e^(b_t - b_r)) . (k~_s e^(b_r - b_s)) masked to s <= t (ke over kf), else per element (tc_diag);
// the scores rounded to bf16 as the A operand of the product with v, TC_CG output columns at a time.
// Shared: bc, kf f32 [C][TC_FS]; vb [C][TC_BS], kx [TC_KX][TC_BS], sb [D][TC_BS] bf16.
extern "C" __global__ void @P@_fwd(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ v, const float* __restrict__ gate, const float* __restrict__ states,
        const float* __restrict__ stats, float* __restrict__ y, int seq) {
    extern __shared__ float smem[];
    const TcBlock blk = tc_block(seq);
    float* bc = smem;
    float* kf = bc + C * TC_FS;
    bf16* vb = reinterpret_cast<bf16*>(kf + C * TC_FS);
    bf16* kx = vb + C * TC_BS;
    bf16* sb = kx + TC_KX * TC_BS;
    const int L = blk.L, j = blk.j;
    const long long row0 = blk.row0;
    tc_state<TC_NTB>(sb, states, blk.at);
    tc_rows<C, TC_NTB>(vb, v, row0, HKV * D, j * D, L, 1.0f);
    const bool fast = tc_key_stage<TC_NTB>(bc, kf, nullptr, kx, k, gate, blk);
    const bf16* ke = reinterpret_cast<const bf16*>(kf);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const int lrow = (lane & 7) + 8 * ((lane >> 3) & 1), lcol = 8 * (lane >> 4);  // ldmatrix.trans of [k][n] tiles as B
    for (int task = blk.part + blk.parts * warp; task < G * TC_NS; task += blk.parts * TC_NWB) {
        const int ii = TC_NS - 1 - task / G, h = j * G + task % G;
        if (16 * ii >= L) continue;  // warp-uniform
        const int ta = 16 * ii + gid, tb = ta + 8;
        unsigned qa[TC_KK][4];
        tc_query_frags(qa, q + row0 * (H * D) + h * D, ta, tb, L);
        unsigned pd[4];
        if (!fast) tc_diag<true>(pd, qa, kf, TC_FS, bc, 16 * ii);
        // scores (q~_t e^(b_t - b_r)) . kx_s off the diagonal (and, fast, . ke_s on it), 8 keys an
        // mma tile, as A fragments pa[kt] (pd)
        unsigned pa[TC_NS][4];
        {
            float sc[2 * TC_NS][4], sd[2][4] = {};
#pragma unroll
            for (int u = 0; u < 2 * TC_NS; ++u) sc[u][0] = sc[u][1] = sc[u][2] = sc[u][3] = 0.0f;
            const bf16* kt0 = kx + 8 * ii * (ii - 1) * TC_BS;
            const int r = 16 * ii;
            const int brow = (lane & 7) + 8 * (lane >> 4), bcol = 8 * ((lane >> 3) & 1);  // B of [n][k] tiles
#pragma unroll
            for (int kk = 0; kk < TC_KK; ++kk) {
                if (ii == 0 && !fast) break;
                unsigned a[4];
#pragma unroll
                for (int x = 0; x < 4; ++x) {
                    const int t = x & 1 ? tb : ta, c = 16 * kk + 2 * tig + 8 * (x >> 1);
                    const float2 bt = tc_ld2(bc + t * TC_FS + c), br = tc_ld2(bc + r * TC_FS + c);
                    a[x] = pack_bf16(bf_lo(qa[kk][x]) * __expf(bt.x - br.x), bf_hi(qa[kk][x]) * __expf(bt.y - br.y));
                }
#pragma unroll
                for (int kt = 0; kt + 1 < TC_NS; ++kt) {
                    if (kt >= ii) break;
                    unsigned r4[4];
                    ldsm_x4(r4, kt0 + (16 * kt + brow) * TC_BS + 16 * kk + bcol);
                    mma_bf16(sc[2 * kt], a, r4[0], r4[1]);
                    mma_bf16(sc[2 * kt + 1], a, r4[2], r4[3]);
                }
                if (fast) {
                    unsigned r4[4];
                    ldsm_x4(r4, ke + (r + brow) * TC_BS + 16 * kk + bcol);
                    mma_bf16(sd[0], a, r4[0], r4[1]);
                    mma_bf16(sd[1], a, r4[2], r4[3]);
                }
            }
#pragma unroll
            for (int kt = 0; kt < TC_NS; ++kt) tc_pack_a(pa[kt], sc[2 * kt], sc[2 * kt + 1]);
            if (fast) {
                tc_causal<true>(sd);
                tc_pack_a(pd, sd[0], sd[1]);
            }
        }
        // q~ e^b_t for the state term
#pragma unroll
        for (int kk = 0; kk < TC_KK; ++kk)
#pragma unroll
            for (int x = 0; x < 4; ++x) {
                const int t = x & 1 ? tb : ta, c = 16 * kk + 2 * tig + 8 * (x >> 1);
                const float2 bt = tc_ld2(bc + t * TC_FS + c);
                qa[kk][x] = pack_bf16(bf_lo(qa[kk][x]) * __expf(bt.x), bf_hi(qa[kk][x]) * __expf(bt.y));
            }
        const long long yo = row0 * (H * D) + h * D;  // y's and the saved o_win's offset of the head's row 0
#pragma unroll 1
        for (int cg = 0; cg < D; cg += TC_CG) {
            float o[TC_CG / 8][4];
#pragma unroll
            for (int nt = 0; nt < TC_CG / 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < TC_KK; ++kk)
#pragma unroll
                for (int np = 0; np < TC_CG / 16; ++np) {
                    unsigned r4[4];
                    ldsm_x4_t(r4, sb + (16 * kk + lrow) * TC_BS + cg + 16 * np + lcol);
                    mma_bf16(o[2 * np], qa[kk], r4[0], r4[1]);
                    mma_bf16(o[2 * np + 1], qa[kk], r4[2], r4[3]);
                }
#pragma unroll
            for (int kt = 0; kt < TC_NS; ++kt) {
                if (kt > ii) break;
#pragma unroll
                for (int np = 0; np < TC_CG / 16; ++np) {
                    unsigned r4[4];
                    ldsm_x4_t(r4, vb + (16 * kt + lrow) * TC_BS + cg + 16 * np + lcol);
                    if (kt == ii) {
                        mma_bf16(o[2 * np], pd, r4[0], r4[1]);
                        mma_bf16(o[2 * np + 1], pd, r4[2], r4[3]);
                    } else {
                        mma_bf16(o[2 * np], pa[kt], r4[0], r4[1]);
                        mma_bf16(o[2 * np + 1], pa[kt], r4[2], r4[3]);
                    }
                }
            }
#pragma unroll
            for (int nt = 0; nt < TC_CG / 8; ++nt)
#pragma unroll
                for (int x = 0; x < 2; ++x) {
                    const int t = x ? tb : ta;
                    if (t >= L) continue;
                    const long long at = yo + (long long)t * (H * D) + cg + 8 * nt + 2 * tig;
                    float2* p = reinterpret_cast<float2*>(y + at);
                    float2 w;
                    if (Y_SAVED) {
                        const bf16* ow_at = reinterpret_cast<const bf16*>(stats) - (long long)gridDim.z * H * seq * D + at;
                        const unsigned ow = *reinterpret_cast<const unsigned*>(ow_at);
                        w = float2{MIX_WIN * bf_lo(ow), MIX_WIN * bf_hi(ow)};
                    } else {
                        w = *p;
                    }
                    w.x += MIX_LIN * o[nt][2 * x];
                    w.y += MIX_LIN * o[nt][2 * x + 1];
                    *p = w;
                }
        }
    }
}

// 4. (tensor cores) sum_h sum_t (q~^h_t e^b_t)^T do^h_t (do = MIX_LIN dy) into dstates[slot]. Grid
// (nch, HKV * parts, batch), NT threads, the state tasks split over the parts as chunk_state's; the
// heads go one at a time: q~ e^b (softmax, a warp per row) and do staged as bf16, then the warps'
// state tiles accumulate qe^T ob by mma.
// Shared: bc f32 [C][TC_FS]; qe, ob bf16 [C][TC_BS].
extern "C" __global__ void @P@_chunk_dstate(const float* __restrict__ q, const float* __restrict__ gate,
        const float* __restrict__ dy, float* __restrict__ dstates, int seq) {
    extern __shared__ float smem[];
    const TcBlock blk = tc_block(seq);
    float* bc = smem;
    bf16* qe = reinterpret_cast<bf16*>(bc + C * TC_FS);
    bf16* ob = qe + C * TC_BS;
    const int L = blk.L;
    tc_gates(bc, gate, blk.row0, blk.j, L);
    float acc[TC_SPW][TC_SG / 8][4] = {};
    for (int g = 0; g < G; ++g) {
        const int h = blk.j * G + g;
        tc_query_tiles(nullptr, nullptr, qe, q, blk.row0, H * D, h * D, L, bc);
        tc_rows<C>(ob, dy, blk.row0, H * D, h * D, L, MIX_LIN);
        __syncthreads();
        tc_state_mma(acc, qe, ob, blk.part, blk.parts, L);
        __syncthreads();
    }
    tc_state_store(dstates + blk.at * D * D, acc, blk.part, blk.parts);
}

// 6. (tensor cores) dv_s += sum_i k~_si e^(b_Li - b_si) dG_ic + sum_h sum_(t>=s) A^h_ts do^h_tc (dv +=: the
// window wrote it). Grid (nch, HKV * parts, batch), TC_NTB threads; the TC_VT warp tasks (key sub-chunk kt,
// TC_VG value columns) split over the parts, their accumulators kept over the heads. First kd dG by mma
// (dG staged as bf16); then per query head (q~, q~ e^(b_t - b_r) and do staged as bf16) the transposed
// scores of the task's keys: the diagonal block per element (tc_diag, keys as the lane's rows; in a
// tc_fast chunk by mma as ke . qr^T masked to t >= s, q~ not staged), the later sub-chunks ii as
// kx_ii . (q~ e^(b_t - b_r))^T by mma (r = 16 ii, both exponents <= 0), each rounded to bf16 as the A
// operand of the product with do.
// Shared: bc, kf f32 [C][TC_FS]; kd [C][TC_BS], kx [TC_KX][TC_BS], gb [D][TC_BS], qq, qr, ob [C][TC_BS]
// bf16.
extern "C" __global__ void @P@_bwd_dv(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ gate, const float* __restrict__ dy, const float* __restrict__ dstates,
        float* __restrict__ dv, int seq) {
    extern __shared__ float smem[];
    const TcBlock blk = tc_block(seq);
    float* bc = smem;
    float* kf = bc + C * TC_FS;
    bf16* kd = reinterpret_cast<bf16*>(kf + C * TC_FS);
    bf16* kx = kd + C * TC_BS;
    bf16* gb = kx + TC_KX * TC_BS;
    bf16* qq = gb + D * TC_BS;
    bf16* qr = qq + C * TC_BS;
    bf16* ob = qr + C * TC_BS;
    const int L = blk.L, j = blk.j;
    const long long row0 = blk.row0;
    tc_state<TC_NTB>(gb, dstates, blk.at);
    const bool fast = tc_key_stage<TC_NTB>(bc, kf, kd, kx, k, gate, blk);
    const bf16* ke = reinterpret_cast<const bf16*>(kf);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const int lrow = (lane & 7) + 8 * ((lane >> 3) & 1), lcol = 8 * (lane >> 4);  // A of [m][k], B of [k][n] tiles
    const int nrow = (lane & 7) + 8 * (lane >> 4), ncol = 8 * ((lane >> 3) & 1);  // B of [n][k] tiles
    float o[TC_VPW][TC_VG / 8][4];
    // the inter-chunk part kd dG
#pragma unroll
    for (int w = 0; w < TC_VPW; ++w) {
#pragma unroll
        for (int nt = 0; nt < TC_VG / 8; ++nt) o[w][nt][0] = o[w][nt][1] = o[w][nt][2] = o[w][nt][3] = 0.0f;
        const int task = blk.part + blk.parts * (warp + TC_NWB * w);
        if (task >= TC_VT) break;
        const int kt = task % TC_NS, cg = (task / TC_NS) * TC_VG;
        if (16 * kt >= L) continue;
#pragma unroll
        for (int kk = 0; kk < TC_KK; ++kk) {
            unsigned a[4];
            ldsm_x4(a, kd + (16 * kt + lrow) * TC_BS + 16 * kk + lcol);
#pragma unroll
            for (int np = 0; np < TC_VG / 16; ++np) {
                unsigned r4[4];
                ldsm_x4_t(r4, gb + (16 * kk + lrow) * TC_BS + cg + 16 * np + lcol);
                mma_bf16(o[w][2 * np], a, r4[0], r4[1]);
                mma_bf16(o[w][2 * np + 1], a, r4[2], r4[3]);
            }
        }
    }
    for (int g = 0; g < G; ++g) {
        const int h = j * G + g;
        __syncthreads();  // the previous head's tiles are consumed
        tc_query_tiles<TC_NTB>(fast ? nullptr : qq, qr, nullptr, q, row0, H * D, h * D, L, bc);
        tc_rows<C, TC_NTB>(ob, dy, row0, H * D, h * D, L, MIX_LIN);
        __syncthreads();
#pragma unroll
        for (int w = 0; w < TC_VPW; ++w) {
            const int task = blk.part + blk.parts * (warp + TC_NWB * w);
            if (task >= TC_VT) break;
            const int kt = task % TC_NS, cg = (task / TC_NS) * TC_VG;
            if (16 * kt >= L) continue;
            if (!fast) {  // the diagonal block per element
                unsigned ka[TC_KK][4], pd[4];
                tc_frags_f32(ka, kf, 16 * kt);
                tc_diag<false>(pd, ka, qq, TC_BS, bc, 16 * kt);
#pragma unroll
                for (int np = 0; np < TC_VG / 16; ++np) {
                    unsigned r4[4];
                    ldsm_x4_t(r4, ob + (16 * kt + lrow) * TC_BS + cg + 16 * np + lcol);
                    mma_bf16(o[w][2 * np], pd, r4[0], r4[1]);
                    mma_bf16(o[w][2 * np + 1], pd, r4[2], r4[3]);
                }
            }
            // the later query sub-chunks (and, fast, the diagonal block, masked to t >= s)
            for (int ii = fast ? kt : kt + 1; ii < TC_NS && 16 * ii < L; ++ii) {
                float sc[2][4] = {};
                const bf16* kxi = ii == kt ? ke + 16 * kt * TC_BS : kx + (8 * ii * (ii - 1) + 16 * kt) * TC_BS;
#pragma unroll
                for (int kk = 0; kk < TC_KK; ++kk) {
                    unsigned a[4], r4[4];
                    ldsm_x4(a, kxi + lrow * TC_BS + 16 * kk + lcol);
                    ldsm_x4(r4, qr + (16 * ii + nrow) * TC_BS + 16 * kk + ncol);
                    mma_bf16(sc[0], a, r4[0], r4[1]);
                    mma_bf16(sc[1], a, r4[2], r4[3]);
                }
                if (ii == kt) tc_causal<false>(sc);
                unsigned pt[4];
                tc_pack_a(pt, sc[0], sc[1]);
#pragma unroll
                for (int np = 0; np < TC_VG / 16; ++np) {
                    unsigned r4[4];
                    ldsm_x4_t(r4, ob + (16 * ii + lrow) * TC_BS + cg + 16 * np + lcol);
                    mma_bf16(o[w][2 * np], pt, r4[0], r4[1]);
                    mma_bf16(o[w][2 * np + 1], pt, r4[2], r4[3]);
                }
            }
        }
    }
#pragma unroll
    for (int w = 0; w < TC_VPW; ++w) {
        const int task = blk.part + blk.parts * (warp + TC_NWB * w);
        if (task >= TC_VT) break;
        const int kt = task % TC_NS, cg = (task / TC_NS) * TC_VG;
#pragma unroll
        for (int nt = 0; nt < TC_VG / 8; ++nt)
#pragma unroll
            for (int x = 0; x < 2; ++x) {
                const int s = 16 * kt + gid + 8 * x;
                if (s >= L) continue;
                float2* p = reinterpret_cast<float2*>(dv + (row0 + s) * (HKV * D) + j * D + cg + 8 * nt + 2 * tig);
                float2 a = *p;
                a.x += o[w][nt][2 * x];
                a.y += o[w][nt][2 * x + 1];
                *p = a;
            }
    }
}

// 7. (tensor cores) With S = S_n (entering chunk n), dG = dG_n (leaving it), do = MIX_LIN dy and
// P^h_ts = do^h_t . v_s:
//   dq~^h_t = e^b_t (S do^h_t) + sum_(s<=t) P^h_ts e^(b_t - b_s) k~_s                  -> dq (dq~)
//   dk~_s   = e^(b_L - b_s) (dG v_s) + sum_h sum_(t>=s) P^h_ts e^(b_t - b_s) q~^h_t    -> dk (dk~)
//   db_t    = sum_h q~^h_t dq~^h_t - k~_t dk~_t                                       -> db
//   dq^h_t  = q~^h_t (dq~^h_t - sum_i q~^h_ti dq~^h_ti)   (q~'s softmax backward)        -> dq
// Grid (nch, HKV, batch), TC_NTB threads (no parts); TC_QT warp tasks (sub-chunk u, TC_QG channels).
// With r = 16 u the sub-chunk's first row, the off-diagonal terms are products whose exponents are
// all <= 0:
//   dq~_t (t in u) = e^(b_t - b_r) [e^b_r (S do_t) + sum_(s<r) P_ts kx_u,s]     kx_u,s = k~_s e^(b_r - b_s)
//   dk~_s (s in u) += sum_(ii>u) e^(b_(16 ii) - b_s) sum_(t in ii) P_ts qr_t      qr_t = q~_t e^(b_t - b_(16 ii))
// by mma. The diagonal 16 x 16 blocks: in a tc_fast chunk by mma too (P's diagonal blocks masked,
// the keys ke over kf, the queries qr, with ii = u and s in u); else per element in a pass of a
// thread per (sub-chunk, channel) that forms each e^(b_t - b_s) once for dq~ and dk~. First dk~'s
// inter-chunk part (dG staged as bf16), then S is staged in its place and the query heads go one at
// a time: do, q~ e^(b_t - b_r) as bf16 and q~ as f32; P's causal 16 x 16 blocks by mma into a bf16
// tile; the diagonal pass (slow chunks) writes its part of dq~ to dq; the task pass completes dq~ in
// registers, folds it into db, puts its rows' partial sums of q~ dq~ in rq, and after a barrier
// writes dq. The diagonal pass keeps its part of dk~ in registers over the heads; it joins the
// tasks' through shared memory at the end (fast chunks recompute k~ as f32 there instead).
// Shared: bc, kf, qf f32 [C][TC_FS]; vb [C][TC_BS], kx [TC_KX][TC_BS], sb [D][TC_BS] (dG, then S),
// ob, qr [C][TC_BS], pb [C][TC_PS] bf16; rq f32 [C][TC_RQ].
extern "C" __global__ void @P@_bwd_dqk(const float* __restrict__ q, const float* __restrict__ k,
        const float* __restrict__ v, const float* __restrict__ gate, const float* __restrict__ dy,
        const float* __restrict__ states, const float* __restrict__ dstates, float* __restrict__ dq,
        float* __restrict__ dk, float* __restrict__ db, int seq) {
    extern __shared__ float smem[];
    const TcBlock blk = tc_block(seq);
    float* bc = smem;
    float* kf = bc + C * TC_FS;
    float* qf = kf + C * TC_FS;
    bf16* vb = reinterpret_cast<bf16*>(qf + C * TC_FS);
    bf16* kx = vb + C * TC_BS;
    bf16* sb = kx + TC_KX * TC_BS;
    bf16* ob = sb + D * TC_BS;
    bf16* qr = ob + C * TC_BS;
    bf16* pb = qr + C * TC_BS;
    float* rq = reinterpret_cast<float*>(pb + C * TC_PS);
    const int L = blk.L, j = blk.j;
    const long long row0 = blk.row0;
    tc_state<TC_NTB>(sb, dstates, blk.at);
    tc_rows<C, TC_NTB>(vb, v, row0, HKV * D, j * D, L, 1.0f);
    const bool fast = tc_key_stage<TC_NTB>(bc, kf, nullptr, kx, k, gate, blk);
    const bf16* ke = reinterpret_cast<const bf16*>(kf);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const int lrow = (lane & 7) + 8 * ((lane >> 3) & 1), lcol = 8 * (lane >> 4);  // A of [m][k], B of [k][n] tiles
    const int nrow = (lane & 7) + 8 * (lane >> 4), ncol = 8 * ((lane >> 3) & 1);  // B of [n][k], A of [k][m] (.trans)
    // the tasks' accumulators over the heads: dk~ (off the diagonal blocks), sum_h q~ dq~
    float dka[TC_QPW][TC_QG / 8][4], dba[TC_QPW][TC_QG / 8][4];
#pragma unroll
    for (int w = 0; w < TC_QPW; ++w) {
#pragma unroll
        for (int nt = 0; nt < TC_QG / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) dka[w][nt][e] = dba[w][nt][e] = 0.0f;
        const int task = warp + TC_NWB * w, u = task % TC_NS, cg = (task / TC_NS) * TC_QG;
        if (task >= TC_QT || 16 * u >= L) continue;
        // the inter-chunk part e^(b_L - b_s) (v_s dG^T)
#pragma unroll
        for (int kk = 0; kk < TC_KK; ++kk) {
            unsigned a[4];
            ldsm_x4(a, vb + (16 * u + lrow) * TC_BS + 16 * kk + lcol);
#pragma unroll
            for (int np = 0; np < TC_QG / 16; ++np) {
                unsigned r4[4];
                ldsm_x4(r4, sb + (cg + 16 * np + nrow) * TC_BS + 16 * kk + ncol);
                mma_bf16(dka[w][2 * np], a, r4[0], r4[1]);
                mma_bf16(dka[w][2 * np + 1], a, r4[2], r4[3]);
            }
        }
#pragma unroll
        for (int nt = 0; nt < TC_QG / 8; ++nt)
#pragma unroll
            for (int x = 0; x < 2; ++x) {
                const int s = 16 * u + gid + 8 * x, i = cg + 8 * nt + 2 * tig;
                const float2 bl = tc_ld2(bc + (L - 1) * TC_FS + i), bs = tc_ld2(bc + s * TC_FS + i);
                dka[w][nt][2 * x] *= __expf(bl.x - bs.x);
                dka[w][nt][2 * x + 1] *= __expf(bl.y - bs.y);
            }
    }
    __syncthreads();
    tc_state<TC_NTB>(sb, states, blk.at);
    float dkd[TC_DI][16];  // the diagonal pass's dk~ of its items' rows
#pragma unroll
    for (int w = 0; w < TC_DI; ++w)
#pragma unroll
        for (int u = 0; u < 16; ++u) dkd[w][u] = 0.0f;
    for (int g = 0; g < G; ++g) {
        const int h = j * G + g;
        float* dqh = dq + row0 * (H * D) + h * D;
        __syncthreads();  // S staged; the previous head's tiles consumed
        tc_query_tiles<TC_NTB>(nullptr, qr, nullptr, q, row0, H * D, h * D, L, bc, qf);
        tc_rows<C, TC_NTB>(ob, dy, row0, H * D, h * D, L, MIX_LIN);
        __syncthreads();
        // P = do v^T: the causal 16 x 16 blocks (u, kt <= u), a warp each, into pb
        for (int pi = warp; pi < TC_NS * (TC_NS + 1) / 2; pi += TC_NWB) {
            int u = 0;
            while ((u + 1) * (u + 2) / 2 <= pi) ++u;
            const int kt = pi - u * (u + 1) / 2;
            if (16 * u >= L) continue;
            float sc[2][4] = {};
#pragma unroll
            for (int kk = 0; kk < TC_KK; ++kk) {
                unsigned a[4], r4[4];
                ldsm_x4(a, ob + (16 * u + lrow) * TC_BS + 16 * kk + lcol);
                ldsm_x4(r4, vb + (16 * kt + nrow) * TC_BS + 16 * kk + ncol);
                mma_bf16(sc[0], a, r4[0], r4[1]);
                mma_bf16(sc[1], a, r4[2], r4[3]);
            }
            if (kt == u) tc_causal<true>(sc);  // the diagonal blocks as the causal mask leaves them
#pragma unroll
            for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                for (int x = 0; x < 2; ++x)
                    *reinterpret_cast<unsigned*>(pb + (16 * u + gid + 8 * x) * TC_PS + 16 * kt + 8 * nt + 2 * tig) =
                        pack_bf16(sc[nt][2 * x], sc[nt][2 * x + 1]);
        }
        __syncthreads();
        // slow: the diagonal blocks per element: item (u, i) walks the pairs s <= t of sub-chunk u at
        // channel i (fast: the tasks take them as products)
#pragma unroll
        for (int w = 0; w < TC_DI; ++w) {
            const int it = threadIdx.x + TC_NTB * w, u = it / D, i = it % D, r = 16 * u;
            if (fast || it >= TC_NS * D || r >= L) continue;
            float bs[16], ks[16];
#pragma unroll
            for (int x = 0; x < 16; ++x) {
                bs[x] = bc[(r + x) * TC_FS + i];
                ks[x] = kf[(r + x) * TC_FS + i];
            }
#pragma unroll
            for (int tl = 0; tl < 16; ++tl) {
                const int t = r + tl;
                if (t >= L) break;
                const float qt = qf[t * TC_FS + i];
                float acc = 0.0f;
#pragma unroll
                for (int sl = 0; sl <= tl; ++sl) {
                    const float p = __bfloat162float(pb[t * TC_PS + r + sl]) * __expf(fminf(bs[tl] - bs[sl], 0.0f));
                    acc += p * ks[sl];
                    dkd[w][sl] += p * qt;
                }
                dqh[(long long)t * (H * D) + i] = acc;
            }
        }
        if (!fast) __syncthreads();  // block-uniform
        // the tasks: dk~ of the later sub-chunks, then dq~ off the diagonal (completing it, folded into
        // db, its row partials of sum_i q~ dq~ to rq); fast, the diagonal blocks too (their P masked,
        // keys ke, queries qr)
        float2 dqv[TC_QPW][TC_QG / 8][2];
#pragma unroll
        for (int w = 0; w < TC_QPW; ++w) {
            const int task = warp + TC_NWB * w, u = task % TC_NS, cg = (task / TC_NS) * TC_QG, r = 16 * u;
            if (task >= TC_QT || r >= L) continue;
            for (int ii = u + !fast; ii < TC_NS && 16 * ii < L; ++ii) {  // later query sub-chunks (fast: and u)
                float sc[TC_QG / 8][4];
#pragma unroll
                for (int nt = 0; nt < TC_QG / 8; ++nt) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
                unsigned a[4];
                ldsm_x4_t(a, pb + (16 * ii + nrow) * TC_PS + r + ncol);  // P^T: rows s of u, k = t of ii
                wt_acc<TC_QG>(sc, a, qr + 16 * ii * TC_BS + cg);
#pragma unroll
                for (int nt = 0; nt < TC_QG / 8; ++nt)
#pragma unroll
                    for (int x = 0; x < 2; ++x) {
                        const int s = r + gid + 8 * x, i = cg + 8 * nt + 2 * tig;
                        const float2 bi = tc_ld2(bc + 16 * ii * TC_FS + i), bs = tc_ld2(bc + s * TC_FS + i);
                        dka[w][nt][2 * x] += sc[nt][2 * x] * __expf(bi.x - bs.x);
                        dka[w][nt][2 * x + 1] += sc[nt][2 * x + 1] * __expf(bi.y - bs.y);
                    }
            }
            {
                float o[TC_QG / 8][4], part[2] = {0.0f, 0.0f};
#pragma unroll
                for (int nt = 0; nt < TC_QG / 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
#pragma unroll
                for (int kk = 0; kk < TC_KK; ++kk) {
                    unsigned a[4];
                    ldsm_x4(a, ob + (r + lrow) * TC_BS + 16 * kk + lcol);
#pragma unroll
                    for (int np = 0; np < TC_QG / 16; ++np) {
                        unsigned r4[4];
                        ldsm_x4(r4, sb + (cg + 16 * np + nrow) * TC_BS + 16 * kk + ncol);
                        mma_bf16(o[2 * np], a, r4[0], r4[1]);
                        mma_bf16(o[2 * np + 1], a, r4[2], r4[3]);
                    }
                }
#pragma unroll
                for (int nt = 0; nt < TC_QG / 8; ++nt) {
                    const float2 br = tc_ld2(bc + r * TC_FS + cg + 8 * nt + 2 * tig);
                    const float ex = __expf(br.x), ey = __expf(br.y);
                    o[nt][0] *= ex;
                    o[nt][1] *= ey;
                    o[nt][2] *= ex;
                    o[nt][3] *= ey;
                }
                const bf16* kxu = kx + 8 * u * (u - 1) * TC_BS;
                for (int kt = 0; kt < u + fast; ++kt) {
                    const bf16* kt0 = kt == u ? ke : kxu;
                    unsigned a[4];
                    ldsm_x4(a, pb + (r + lrow) * TC_PS + 16 * kt + lcol);
                    wt_acc<TC_QG>(o, a, kt0 + 16 * kt * TC_BS + cg);
                }
#pragma unroll
                for (int nt = 0; nt < TC_QG / 8; ++nt)
#pragma unroll
                    for (int x = 0; x < 2; ++x) {
                        const int t = r + gid + 8 * x, i = cg + 8 * nt + 2 * tig;
                        if (t >= L) continue;
                        const float2 bt = tc_ld2(bc + t * TC_FS + i), br = tc_ld2(bc + r * TC_FS + i);
                        const float2 p = fast ? float2{0.0f, 0.0f} : tc_ld2(dqh + (long long)t * (H * D) + i);  // slow: the diagonal pass's part
                        float2& d = dqv[w][nt][x];
                        d.x = p.x + o[nt][2 * x] * __expf(bt.x - br.x);
                        d.y = p.y + o[nt][2 * x + 1] * __expf(bt.y - br.y);
                        const float2 qv = tc_ld2(qf + t * TC_FS + i);
                        dba[w][nt][2 * x] += qv.x * d.x;
                        dba[w][nt][2 * x + 1] += qv.y * d.y;
                        part[x] += qv.x * d.x + qv.y * d.y;
                    }
#pragma unroll
                for (int x = 0; x < 2; ++x) {  // the quad's columns, then the row's partial of this column group
                    part[x] += __shfl_xor_sync(0xffffffffu, part[x], 1);
                    part[x] += __shfl_xor_sync(0xffffffffu, part[x], 2);
                    if (tig == 0) rq[(r + gid + 8 * x) * TC_RQ + cg / TC_QG] = part[x];
                }
            }
        }
        __syncthreads();
        // the softmax backward of q~ (the finish kernel's, for this head): dq = q~ (dq~ - sum_i q~_i dq~_i)
#pragma unroll
        for (int w = 0; w < TC_QPW; ++w) {
            const int task = warp + TC_NWB * w, r = 16 * (task % TC_NS), cg = (task / TC_NS) * TC_QG;
            if (task >= TC_QT || r >= L) continue;
#pragma unroll
            for (int x = 0; x < 2; ++x) {
                const int t = r + gid + 8 * x;
                if (t >= L) continue;
                float sum = 0.0f;
#pragma unroll
                for (int c = 0; c < TC_RQ; ++c) sum += rq[t * TC_RQ + c];
#pragma unroll
                for (int nt = 0; nt < TC_QG / 8; ++nt) {
                    const int i = cg + 8 * nt + 2 * tig;
                    const float2 qv = tc_ld2(qf + t * TC_FS + i), d = dqv[w][nt][x];
                    *reinterpret_cast<float2*>(dqh + (long long)t * (H * D) + i) = float2{qv.x * (d.x - sum), qv.y * (d.y - sum)};
                }
            }
        }
    }
    // join: slow, the diagonal pass's dk~ through qf; fast, k~ again as f32 into qf (kf holds ke);
    // then dk = dk~, db = sum_h q~ dq~ - k~ dk~
    __syncthreads();
    if (fast) {
        tc_keys<TC_NTB>(qf, k, gate, row0, j, L);
    } else {
#pragma unroll
        for (int w = 0; w < TC_DI; ++w) {
            const int it = threadIdx.x + TC_NTB * w, u = it / D, i = it % D;
            if (it >= TC_NS * D) continue;
#pragma unroll
            for (int x = 0; x < 16; ++x) qf[(16 * u + x) * TC_FS + i] = dkd[w][x];
        }
        __syncthreads();
    }
    const float* kfin = fast ? qf : kf;
#pragma unroll
    for (int w = 0; w < TC_QPW; ++w) {
        const int task = warp + TC_NWB * w, u = task % TC_NS, cg = (task / TC_NS) * TC_QG;
        if (task >= TC_QT) continue;
#pragma unroll
        for (int nt = 0; nt < TC_QG / 8; ++nt)
#pragma unroll
            for (int x = 0; x < 2; ++x) {
                const int s = 16 * u + gid + 8 * x, i = cg + 8 * nt + 2 * tig;
                if (s >= L) continue;
                const float2 kd = fast ? float2{0.0f, 0.0f} : tc_ld2(qf + s * TC_FS + i), kv = tc_ld2(kfin + s * TC_FS + i);
                const float2 d = {dka[w][nt][2 * x] + kd.x, dka[w][nt][2 * x + 1] + kd.y};
                const long long o = (row0 + s) * (HKV * D) + j * D + i;
                *reinterpret_cast<float2*>(dk + o) = d;
                *reinterpret_cast<float2*>(db + o) = float2{dba[w][nt][2 * x] - kv.x * d.x, dba[w][nt][2 * x + 1] - kv.y * d.y};
            }
    }
}
"#;
