//! CUDA kernels for training `LigerGate` and `LigerAttention` (f32, from a
//! zero state): launch lists for the GPU training engine, which runs them in
//! order on one stream over device buffers it owns.
//!
//! The recurrence is chunk-parallel: every chunk's own state contribution
//! is computed at once (one block per chunk and KV head), a scan over the
//! chunks — the only sequential part, one thread per state element — turns
//! them into the state entering each chunk, and the outputs and gradients of
//! all chunks are again computed at once.
//!
//! Forward (`Q, K, V, QRot, KRot [, Gate] → Y`): `win_fwd` (the window
//! branch, overwriting `Y`: one block per (tile of query tokens, KV head —
//! all its query heads, or a group of them —, batch) stages the tile's
//! queries and, tile by tile, the keys and values they see in shared
//! memory; register micro-tiles give the scores, an online row softmax,
//! and `P·V`), `chunk_state` (each chunk's `ΔS` and decay
//! into scratch), `scan_fwd` (the state entering each chunk, in place), `fwd`
//! (one block per (chunk, KV head), its query heads in passes: `Y +=
//! mix_linear · o`).
//!
//! The keyed recurrence kernels (`chunk_state`, `fwd`, `chunk_dstate`,
//! `bwd_dv`, `bwd_dqk`) are f32 SIMT, one 256-thread block per (chunk, KV
//! head): a `[D][D]` state is staged in shared memory once a block (by
//! `cp.async` where it is used as is), the KV head's query heads go in passes
//! of 64 (head, token) rows, and the products are register-tiled from float4
//! shared-memory reads — `[D][D]` sums of outer products 8 × 8 outputs a
//! thread at D 128, 64-row × state products 4 × 8, C-row × state products
//! split over their inner dimension across slices of threads (partials
//! summed in shared memory). The gated in-chunk terms compute each
//! `e^(b_t − b_s)` once for all the heads of a pass (and, in `bwd_dqk`, for
//! both `dq̃` and `dk̃`).
//!
//! Under `TrainMath::Bf16` (keyed variants, D a multiple of 16 up to 128)
//! all five run on bf16 tensor cores instead (`liger_train_rec_tc.rs`:
//! `mma.sync` with f32 accumulation, secondary chunking into 16-row
//! sub-chunks, grid `(chunks, KV · parts, batch)` with `parts` picked at
//! launch so a small batch still fills the GPU; `bwd_dqk` one block per
//! (chunk, KV head)), at chunk 64 for every such D (the f32 kernels keep 16
//! from D = 64, 32 below). Their scans write the states and state gradients
//! as the bf16 copies those kernels stage (half the bytes, same rounding).
//!
//! Backward (`+ DY → DQ, DK, DV, DQRot, DKRot [, DGate]`), deterministic (no
//! atomics):
//! 1. `win_dq` — per (query tile, KV head) as `win_fwd`, one pass over the
//!    keys: with the running max, `l = Σ e`, `u = Σ e·dp`, `A = Σ e·dp·k`,
//!    `B = Σ e·k` give `δ = do·o = u/l` and `DQRot = SCALE·(A − δB)/l`;
//!    keeps (log-sum-exp, `δ`) per (token, head);
//! 2. `win_dkv` — per (key tile, KV head), over the tiles of (token, head)
//!    rows that see those keys: `p`, `ds` from the kept statistics, `DV = Σ
//!    pᵀ·do`, `DKRot = Σ dsᵀ·q`;
//! 3. `chunk_state`, `scan_fwd` — the state entering each chunk, as forward;
//! 4. `chunk_dstate`, `scan_bwd` — each chunk's contribution to the state
//!    gradient, then the gradient of the state leaving each chunk;
//! 5. `bwd_dv` — per (chunk, KV head): `DV +=`;
//! 6. `bwd_dqk` — per (chunk, KV head): `dq̃`, `dk̃` (into `DQ`, `DK` as
//!    temporaries; the tensor-core kernel writes `DQ` = the softmax backward
//!    of `dq̃` itself) and `∂L/∂b = Σ_h q̃⊙dq̃ − k̃⊙dk̃` (scratch);
//! 7. `revcumsum` — `dg_t = Σ_{u≥t} ∂L/∂b_u` in place (gated variants);
//! 8. `finish` — softmax backward `dx = y⊙(dy − ⟨y,dy⟩)` of `q̃` (f32 kernels
//!    only), `k̃`, and the
//!    gate gradient (HGRN2: `− e^g ⊙ dk̃`, `DK = 0`; retention: summed over D).
//!
//! swa-only runs 1, 2 and zeroes `DQ`, `DK`.
//!
//! With `TrainMath::Bf16` the window kernels are flash-attention-2 style on
//! bf16 `mma.sync` (`liger_train_win_tc.rs`: the same entry points and
//! outputs). Like flash attention they keep the forward's output and `lse`
//! for the backward, in a *saved buffer* ([`TrainArg::Saved`],
//! [`liger_saved_floats`]) that the caller hands from a forward to the
//! backward of the same operands: `win_fwd` writes the window output `o`
//! (bf16) and `lse` (base 2) there, `win_dq` forms `δ = do·o` from it and
//! walks its band once, and with the keyed recurrence also on tensor cores
//! `fwd` writes `Y` whole from `o` (`win_fwd` leaves `Y` alone).
//!
//! GSA (`liger_train_gsa_src.rs`; two gated passes over `M` slots on raw q,
//! k, slot writes `s = 1 − e^γ`) keeps both states as `[M][D]` (`Hkᵀ`, `Hv`,
//! decaying per slot row) with one shared chunk decay. Forward: `win_fwd`,
//! `gsa_chunk_state` (both states' chunk contributions), `gsa_scan_fwd`,
//! `gsa_fwd` (per (chunk, query head): slot logits, softmax over `M`, value
//! pass, `Y += mix_linear · o`). Backward: `win_dq`, `win_dkv`, the states
//! again, `gsa_probs` (per (chunk, query head): `p`, `∂L/∂logits`, the heads'
//! gate-identity part `p⊙dp + logits⊙dlogits` to scratch, and `DQ`),
//! `gsa_chunk_dstate`, `gsa_scan_bwd`, `gsa_bwd_kv` (per (chunk, KV head):
//! `DK`, `DV +=`, `ds` of both passes into `DGate` as a temporary, `∂L/∂b`),
//! `gsa_finish` (`dγ = revcumsum(∂L/∂b) − e^γ ⊙ ds`). The in-chunk cumsum of
//! the log-gates is kept as two floats (summed in double), so a gate near
//! −30 does not cost the small gates after it their precision.
//!
//! Kernels with more than 48 KiB of `dynamic_smem` need
//! `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` raised before launch.

#[path = "liger_train_gate.rs"]
mod gate;
#[path = "liger_train_gsa_src.rs"]
mod gsa;
#[path = "liger_train_rec_tc.rs"]
mod rec_tc;
#[path = "liger_train_src.rs"]
mod source;
#[path = "liger_train_win_tc.rs"]
mod win_tc;

use ligerc_ir::{LigerSpec, LigerVariant};

use crate::cuda::CudaError;
pub use gate::{gate_backward_launches, gate_forward_launches, gate_train_source};
use source::{NT, Shape, WIN_NT, WinTiles};

/// Shared memory one block may use on sm_90 (227 KiB, opt-in).
const SMEM_LIMIT: usize = 227 * 1024;

/// How the attention training kernels multiply.
///
/// The inputs, outputs, scratch and accumulators are f32 either way; the
/// choice is whether the operands of the big products may be rounded to bf16
/// and multiplied on tensor cores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TrainMath {
    /// f32 on CUDA cores throughout: the reference, within float rounding of
    /// the CPU runtime (`--frozen-dtype f32`).
    #[default]
    F32,
    /// The products' operands rounded to bf16 (8 significant bits) and
    /// multiplied by `mma.sync` with f32 accumulation, as flash attention and
    /// fla train in bf16; softmax statistics, decays, gates and states stay
    /// f32. Used with bf16 frozen weights, whose projections already round
    /// their inputs to bf16. Kernels without a tensor-core form run as `F32`.
    ///
    /// The window kernels (`win_fwd`, `win_dq`, `win_dkv`, every variant
    /// including GSA) take tensor cores at head dims that are multiples of 16
    /// up to 128 (`liger_train_win_tc.rs`); other head dims keep the f32
    /// window kernels.
    Bf16,
}

impl TrainMath {
    /// The kernel-name tag (`""` or `"_tc"`).
    fn tag(self) -> &'static str {
        match self {
            TrainMath::F32 => "",
            TrainMath::Bf16 => "_tc",
        }
    }
}

/// One kernel launch of a training op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainLaunch {
    /// The `extern "C"` entry point in the op's source.
    pub kernel: String,
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per block (x only).
    pub block: u32,
    /// Dynamic shared memory in bytes (above 48 KiB the attribute must be raised).
    pub dynamic_smem: u32,
    /// What each kernel parameter is bound to, in order.
    pub args: Vec<TrainArg>,
}

/// What each kernel parameter is bound to, in order. `Batch` and `Seq` are
/// `int` scalars, everything else an `f32` device pointer (`Gate`/`DGate` null
/// for variants without a gate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainArg {
    /// Raw queries `[B, T, H·D]`.
    Q,
    /// Raw keys `[B, T, KV·D]`.
    K,
    /// Values `[B, T, KV·D]`.
    V,
    /// Rotated queries `[B, T, H·D]`.
    QRot,
    /// Rotated keys `[B, T, KV·D]`.
    KRot,
    /// Log-gates `[B, T, KV·width]`.
    Gate,
    /// Output `[B, T, H·D]`.
    Y,
    /// Output gradient `[B, T, H·D]`.
    DY,
    /// Gradient of `Q`.
    DQ,
    /// Gradient of `K`.
    DK,
    /// Gradient of `V`.
    DV,
    /// Gradient of `QRot`.
    DQRot,
    /// Gradient of `KRot`.
    DKRot,
    /// Gradient of `Gate`.
    DGate,
    /// The scratch buffer (`liger_scratch_floats` floats) plus this offset.
    Scratch {
        /// Offset in floats from the start of the scratch buffer.
        offset_floats: usize,
    },
    /// The saved buffer (`liger_saved_floats` floats) plus this offset: what
    /// the forward keeps for the backward of the same operands (the window
    /// branch's log-sum-exp and output), so the caller must hand the backward
    /// the buffer its forward wrote.
    Saved {
        /// Offset in floats from the start of the saved buffer.
        offset_floats: usize,
    },
    /// The batch size (`int`).
    Batch,
    /// Tokens per row (`int`).
    Seq,
}

/// A grid dimension as `u32`, or a shape error naming `node`.
pub(super) fn grid_dim(n: usize, node: &str) -> Result<u32, CudaError> {
    u32::try_from(n).map_err(|_| CudaError::Shape {
        node: node.to_string(),
        problem: format!("grid dimension {n} does not fit in 32 bits"),
    })
}

fn node(spec: &LigerSpec) -> String {
    format!("LigerAttention({})", spec.variant)
}

/// Shared-memory floats of the chunked kernels for chunk `c`: `chunk_state`,
/// `fwd`, `bwd_dv`, `bwd_dqk`, `chunk_dstate`: `[rows][dp + 4]` tiles (`dp` =
/// `d` rounded up to 4; `c` token rows, or `rq = max(c, 64)` (head, token)
/// rows of a query pass), one `[dp][dp]` state, score tiles `[rq][c + 4]` or
/// `[c][rq + 4]`.
fn smem_floats(d: usize, c: usize) -> [usize; 5] {
    let (dp, rq) = (d.div_ceil(4) * 4, c.max(64));
    let ts = dp + 4;
    [
        3 * c * ts,
        dp * dp + 3 * c * ts + rq * ts + rq * (c + 4),
        dp * dp + 3 * c * ts + 2 * rq * ts + c * (rq + 4),
        dp * dp + 5 * c * ts + 2 * rq * ts + rq * (c + 4),
        c * ts + 2 * rq * ts,
    ]
}

/// Dynamic shared memory in bytes of the keyed recurrence kernels at chunk
/// `c` (`smem_floats` order): the tensor-core kernels' where `math` takes
/// them ([`rec_tc::eligible`], [`rec_tc::TENSOR`]), else the f32 kernels'.
fn rec_smem(spec: &LigerSpec, math: TrainMath, c: usize) -> [u32; 5] {
    let f32_bytes = smem_floats(spec.head_dim, c);
    let tc_bytes = rec_tc::smem_bytes(spec.head_dim, c);
    let tc = rec_tc::eligible(spec, math);
    std::array::from_fn(|k| {
        let bytes = if tc && rec_tc::TENSOR[k] {
            tc_bytes[k]
        } else {
            f32_bytes[k] * 4
        };
        bytes as u32
    })
}

/// Checks `spec` and picks the chunk: the largest of 64, 32, 16 whose
/// kernels fit in shared memory.
fn plan(spec: &LigerSpec, math: TrainMath) -> Result<Shape, CudaError> {
    let shape_err = |problem: String| {
        Err(CudaError::Shape {
            node: node(spec),
            problem,
        })
    };
    let (h, kv, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    if kv == 0 || d == 0 || h == 0 || !h.is_multiple_of(kv) {
        return shape_err(format!(
            "needs heads ({h}) a positive multiple of kv_heads ({kv}) and head_dim ({d}) > 0"
        ));
    }
    let gsa = spec.variant == LigerVariant::Gsa;
    if gsa && !(1..=d).contains(&spec.slots) {
        return shape_err(format!("GSA needs 1..={d} slots, has {}", spec.slots));
    }
    if !(spec.mix_window.is_finite() && spec.mix_linear.is_finite()) {
        return shape_err("the mixing weights must be finite".into());
    }
    if spec.window > i32::MAX as usize / 2 || h.saturating_mul(d) > i32::MAX as usize / 4 {
        return shape_err(format!(
            "window {} or heads × head_dim {} out of range",
            spec.window,
            h * d
        ));
    }
    let bytes = |c: usize| {
        if gsa {
            gsa::smem_floats(d, spec.slots, c)
                .into_iter()
                .max()
                .unwrap_or(0)
                * 4
        } else {
            rec_smem(spec, math, c).into_iter().max().unwrap_or(0) as usize
        }
    };
    // f32: 32 balances the in-chunk work (∝ C per token) against the states
    // (∝ D²/C). The keyed variants take 16 from D = 64 on: their state
    // products cost D² a token whatever the chunk, while the in-chunk
    // exponentials (∝ C·D a token) double with it. On tensor cores (every
    // keyed recurrence kernel) the in-chunk products are mma and only the
    // 16 × 16 diagonal blocks take per-element exponentials (∝ 16·D a token
    // whatever the chunk), so the chunk only trades the states' traffic and
    // scans (∝ D²/C): 64, where shared memory allows.
    let tc = !gsa && rec_tc::eligible(spec, math) && rec_tc::TENSOR.iter().all(|&t| t);
    let chunks: &[usize] = if tc {
        &[64, 32, 16]
    } else if gsa || d < 64 {
        &[32, 16]
    } else {
        &[16]
    };
    let chunk = chunks
        .iter()
        .copied()
        .find(|&c| bytes(c) <= SMEM_LIMIT)
        .ok_or_else(|| CudaError::SharedMemory {
            kernel: format!(
                "{}_{}",
                prefix(spec, 16, math),
                if gsa { "gsa_bwd_kv" } else { "bwd_dqk" }
            ),
            bytes: bytes(16),
            limit: SMEM_LIMIT,
            arch: "sm_90".into(),
        })?;
    let win = WinTiles::new(h / kv, d, SMEM_LIMIT).map_err(|bytes| CudaError::SharedMemory {
        kernel: format!("{}_win_dkv", prefix(spec, chunk, math)),
        bytes,
        limit: SMEM_LIMIT,
        arch: "sm_90".into(),
    })?;
    Ok(Shape { chunk, win, math })
}

/// The kernel family of `spec`'s recurrence: `"gsa_"` for GSA's kernels,
/// `""` for the keyed ones.
fn family(spec: &LigerSpec) -> &'static str {
    if spec.variant == LigerVariant::Gsa {
        "gsa_"
    } else {
        ""
    }
}

/// Kernel name prefix: variant, shape, chunk, math and a hash of the baked
/// mixes (so specs differing only in their mixes never share a name).
fn prefix(spec: &LigerSpec, chunk: usize, math: TrainMath) -> String {
    let mixes = [spec.mix_window, spec.mix_linear]
        .iter()
        .flat_map(|m| (*m as f32).to_bits().to_le_bytes())
        .fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
    let slots = if spec.variant == LigerVariant::Gsa {
        format!("_s{}", spec.slots)
    } else {
        String::new()
    };
    format!(
        "liger_train_{}_h{}_kv{}_d{}{slots}_w{}_c{chunk}{}_m{mixes:08x}",
        spec.variant.name().replace('-', "_"),
        spec.heads,
        spec.kv_heads,
        spec.head_dim,
        spec.window,
        math.tag()
    )
}

/// CUDA C++ source holding every kernel the `liger_*_launches` functions name
/// for `spec` and `math` (one NVRTC compile; `-std=c++17`, `cuda_bf16.h` on
/// the include path).
pub fn liger_train_source(spec: &LigerSpec, math: TrainMath) -> Result<String, CudaError> {
    let shape = plan(spec, math)?;
    let prefix = prefix(spec, shape.chunk, math);
    Ok(if spec.variant == LigerVariant::Gsa {
        gsa::source(spec, &prefix, shape)
    } else {
        source::source(spec, &prefix, shape)
    })
}

/// Scratch offsets (floats), then the total. Window statistics come last
/// (none where the tensor-core window kernels keep them in the saved buffer).
/// Other variants: chunk states, state gradients, chunk decays, `∂L/∂b`, and
/// for the tensor-core recurrence the scans' bf16 states and state gradients
/// (half a float each).
/// GSA: chunk states (`Hkᵀ`, `Hv`: `2·M·D` a slot), their gradients, chunk
/// decays (`M`), per query head `p`, `∂L/∂logits` and `hb` (`[B·T][H][M]`
/// each), `∂L/∂b` (`[B·T][KV·M]`).
fn scratch_layout(spec: &LigerSpec, shape: Shape, batch: usize, seq: usize) -> Vec<usize> {
    let (h, kv, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    let recurrent = usize::from(spec.variant != LigerVariant::SwaOnly);
    let slots = recurrent * batch * kv * seq.div_ceil(shape.chunk);
    let stats = if win_tc::tiling(spec, shape.math).is_some() {
        0
    } else {
        batch * seq * h * 2
    };
    let sizes = if spec.variant == LigerVariant::Gsa {
        let m = spec.slots;
        let rows = batch * seq;
        vec![
            slots * 2 * m * d,
            slots * 2 * m * d,
            slots * m,
            rows * h * m,
            rows * h * m,
            rows * h * m,
            rows * kv * m,
            stats,
        ]
    } else {
        let bf16_states = if rec_tc::eligible(spec, shape.math) {
            slots * d * d / 2
        } else {
            0
        };
        vec![
            slots * d * d,
            slots * d * d,
            slots * d,
            recurrent * batch * seq * kv * d,
            bf16_states,
            bf16_states,
            stats,
        ]
    };
    let mut out = vec![0];
    for n in sizes {
        out.push(out[out.len() - 1] + n);
    }
    out
}

/// f32 scratch the launches need (the backward's; the forward uses a part).
/// 0 for a spec the launches refuse.
pub fn liger_scratch_floats(spec: &LigerSpec, math: TrainMath, batch: usize, seq: usize) -> usize {
    plan(spec, math).map_or(0, |shape| {
        scratch_layout(spec, shape, batch, seq)
            .last()
            .copied()
            .unwrap_or(0)
    })
}

/// f32 floats of the saved buffer ([`TrainArg::Saved`]): what the forward
/// writes and the backward of the same operands reads. The tensor-core window
/// kernels keep the unmixed window output as bf16 (`B·T·H·D / 2`), then each
/// (token, head)'s log-sum-exp and `δ` slot (`2·B·T·H`), so the backward
/// walks each band once (`δ = do·o`, as flash attention 2 does); 0 for the f32
/// kernels and for a spec the launches refuse.
pub fn liger_saved_floats(spec: &LigerSpec, math: TrainMath, batch: usize, seq: usize) -> usize {
    if plan(spec, math).is_err() || win_tc::tiling(spec, math).is_none() {
        return 0;
    }
    saved_stats_offset(spec, batch, seq) + 2 * batch * seq * spec.heads
}

/// Where the window statistics start in the saved buffer (floats): after the
/// bf16 window output, a multiple of 8 floats (the head dim is a multiple of
/// 16), so that output's rows keep 16-byte alignment.
fn saved_stats_offset(spec: &LigerSpec, batch: usize, seq: usize) -> usize {
    batch * seq * spec.heads * spec.head_dim / 2
}

/// Whether the window output reaches `Y` through the saved buffer: the
/// tensor-core recurrence's `fwd` writes `Y = MIX_WIN·o_win + MIX_LIN·o` from
/// the bf16 `o_win` that `win_fwd` saved (and `win_fwd` leaves `Y` alone), so
/// `Y` is written once instead of written, read and written again.
fn y_saved(spec: &LigerSpec, math: TrainMath) -> bool {
    win_tc::tiling(spec, math).is_some() && rec_tc::eligible(spec, math)
}

/// Grid, threads a block and dynamic shared memory (bytes) of one kernel.
#[derive(Clone, Copy)]
struct RecLaunch {
    grid: (u32, u32, u32),
    block: usize,
    smem: u32,
}

/// Launch geometry shared by the launch-list builders.
struct Geometry {
    prefix: String,
    /// Dynamic shared memory of the chunked kernels (`smem_floats` or
    /// `gsa::smem_floats` order), bytes.
    smem: Vec<u32>,
    /// The window kernels' grids: query side (`win_fwd`, `win_dq`)
    /// `(ceil(seq/tq), KV·ng, batch)`, key side (`win_dkv`)
    /// `(ceil(seq/tkv), KV, batch)` (see `WinTiles`).
    win: [(u32, u32, u32); 2],
    /// Dynamic shared memory of `win_fwd`, `win_dq`, `win_dkv`, bytes.
    win_smem: [u32; 3],
    /// `win_fwd`, `win_dq`, `win_dkv` on tensor cores (`win_tc`), which then
    /// replace `win`, `win_smem` and `WIN_NT`.
    win_tc: Option<[win_tc::WinLaunch; 3]>,
    /// `(chunks, KV, batch)`, `(chunks, H, batch)`.
    chunked: [(u32, u32, u32); 2],
    /// Grid, threads and dynamic shared memory (bytes) of the keyed
    /// recurrence kernels, `smem_floats` order: the f32 kernels' `(chunks,
    /// KV, batch)` blocks of `NT`, or the tensor-core kernels' `(chunks, KV ·
    /// parts, batch)` ([`rec_tc::parts`]).
    rec: [RecLaunch; 5],
    /// Scratch offsets (`scratch_layout`).
    scratch: Vec<usize>,
    /// Whether the keyed recurrence runs on tensor cores (`rec_tc::eligible`).
    rec_tc: bool,
    /// The window statistics' offset in the saved buffer (`saved_stats_offset`).
    saved_stats: usize,
    batch: usize,
    seq: usize,
    node: String,
}

impl Geometry {
    fn new(spec: &LigerSpec, shape: Shape, batch: usize, seq: usize) -> Result<Self, CudaError> {
        let node = node(spec);
        let g = |n: usize| grid_dim(n, &node);
        if batch > 65_535 || spec.heads > 65_535 || seq > i32::MAX as usize {
            return Err(CudaError::Shape {
                node,
                problem: format!(
                    "batch {batch} and heads {} must be at most 65535 (grid y, z), seq {seq} an int",
                    spec.heads
                ),
            });
        }
        let b = g(batch)?;
        let t = shape.win;
        let floats: Vec<usize> = if spec.variant == LigerVariant::Gsa {
            gsa::smem_floats(spec.head_dim, spec.slots, shape.chunk).to_vec()
        } else {
            smem_floats(spec.head_dim, shape.chunk).to_vec()
        };
        let smem = floats.into_iter().map(|f| (f * 4) as u32).collect();
        let chunks = g(seq.div_ceil(shape.chunk))?;
        let kv = spec.kv_heads;
        let tc = rec_tc::eligible(spec, shape.math);
        let rec_bytes = rec_smem(spec, shape.math, shape.chunk);
        let max_parts = rec_tc::max_parts(spec, shape.chunk);
        let base = seq.div_ceil(shape.chunk) * kv * batch;
        let mut rec = [RecLaunch {
            grid: (chunks, g(kv)?, b),
            block: NT,
            smem: 0,
        }; 5];
        for (k, r) in rec.iter_mut().enumerate() {
            r.smem = rec_bytes[k];
            if tc && rec_tc::TENSOR[k] {
                // grid y stays within 65535
                let parts = rec_tc::parts(base, max_parts[k])
                    .min(65_535 / kv.max(1))
                    .max(1);
                r.grid.1 = g(kv * parts)?;
                r.block = rec_tc::threads(k);
            }
        }
        Ok(Geometry {
            rec,
            prefix: prefix(spec, shape.chunk, shape.math),
            smem,
            win: [
                (g(seq.div_ceil(t.tq()))?, g(spec.kv_heads * t.ng())?, b),
                (g(seq.div_ceil(t.tkv()))?, g(spec.kv_heads)?, b),
            ],
            win_smem: t.smem_bytes().map(|n| n as u32),
            win_tc: win_tc::tiling(spec, shape.math)
                .map(|w| w.launches(spec.kv_heads, batch, seq, &node))
                .transpose()?,
            chunked: [(chunks, g(spec.kv_heads)?, b), (chunks, g(spec.heads)?, b)],
            scratch: scratch_layout(spec, shape, batch, seq),
            rec_tc: tc,
            saved_stats: saved_stats_offset(spec, batch, seq),
            batch,
            seq,
            node,
        })
    }

    fn launch(
        &self,
        kind: &str,
        grid: (u32, u32, u32),
        block: usize,
        smem: u32,
        args: Vec<TrainArg>,
    ) -> TrainLaunch {
        TrainLaunch {
            kernel: format!("{}_{kind}", self.prefix),
            grid,
            block: block as u32,
            dynamic_smem: smem,
            args,
        }
    }

    /// A flat grid of `NT`-thread blocks covering `n` items.
    fn flat(&self, n: usize) -> Result<(u32, u32, u32), CudaError> {
        Ok((grid_dim(n.div_ceil(NT).max(1), &self.node)?, 1, 1))
    }

    /// Scratch region `i` of `scratch_layout`.
    fn scratch(&self, i: usize) -> TrainArg {
        TrainArg::Scratch {
            offset_floats: self.scratch[i],
        }
    }

    /// The window statistics: in the saved buffer after the window output for
    /// the tensor-core window kernels (`win_fwd` writes the log-sum-exp
    /// there, the kernels find the output just before), else the scratch's
    /// last region.
    fn stats(&self) -> TrainArg {
        if self.win_tc.is_some() {
            TrainArg::Saved {
                offset_floats: self.saved_stats,
            }
        } else {
            self.scratch(self.scratch.len() - 2)
        }
    }

    /// Grid, threads and shared memory of window kernel `i` (`win_fwd`,
    /// `win_dq`, `win_dkv`): the tensor-core launch where there is one.
    fn window_shape(&self, i: usize) -> ((u32, u32, u32), usize, u32) {
        match &self.win_tc {
            Some(tc) => (tc[i].grid, tc[i].block, tc[i].smem),
            None => (self.win[i / 2], WIN_NT, self.win_smem[i]),
        }
    }

    /// The window branch's forward: `win_fwd` overwrites `Y` (and, on tensor
    /// cores, the saved buffer: log-sum-exp and output for the backward).
    fn window_forward(&self) -> Vec<TrainLaunch> {
        use TrainArg::*;
        let (grid, block, smem) = self.window_shape(0);
        let args = if self.win_tc.is_some() {
            vec![QRot, KRot, V, Y, self.stats(), Seq]
        } else {
            vec![QRot, KRot, V, Y, Seq]
        };
        vec![self.launch("win_fwd", grid, block, smem, args)]
    }

    /// The window branch's backward: `win_dq` (`DQRot`, and the statistics
    /// `win_dkv` reads: on tensor cores `δ` next to the forward's saved
    /// log-sum-exp), then `win_dkv` (`DKRot`, `DV`, overwritten).
    fn window_backward(&self) -> Vec<TrainLaunch> {
        use TrainArg::*;
        let stats = self.stats();
        let [(gq, bq, sq), (gk, bk, sk)] = [1, 2].map(|i| self.window_shape(i));
        vec![
            self.launch(
                "win_dq",
                gq,
                bq,
                sq,
                vec![QRot, KRot, V, DY, DQRot, stats, Seq],
            ),
            self.launch(
                "win_dkv",
                gk,
                bk,
                sk,
                vec![QRot, KRot, V, DY, stats, DKRot, DV, Seq],
            ),
        ]
    }

    /// GSA's backward after the window kernels.
    fn gsa_backward(&self, spec: &LigerSpec) -> Result<Vec<TrainLaunch>, CudaError> {
        use TrainArg::*;
        let [states, dstates, dec, p, dl, hb, db] = [0, 1, 2, 3, 4, 5, 6].map(|i| self.scratch(i));
        let mut out = self.states(spec)?.to_vec();
        out.extend([
            self.launch(
                "gsa_probs",
                self.chunked[1],
                NT,
                self.smem[2],
                vec![Q, K, V, Gate, DY, states, p, dl, hb, DQ, Seq],
            ),
            self.launch(
                "gsa_chunk_dstate",
                self.chunked[0],
                NT,
                self.smem[3],
                vec![Q, DY, Gate, p, dl, dstates, Seq],
            ),
            self.launch(
                "gsa_scan_bwd",
                self.flat(self.state_floats(spec))?,
                NT,
                0,
                vec![dstates, dec, Batch, Seq],
            ),
            self.launch(
                "gsa_bwd_kv",
                self.chunked[0],
                NT,
                self.smem[4],
                vec![
                    Q, K, V, Gate, DY, p, dl, hb, dstates, DK, DV, db, DGate, Seq,
                ],
            ),
            self.launch(
                "gsa_finish",
                self.flat(self.batch * spec.kv_heads * spec.slots)?,
                NT,
                0,
                vec![Gate, db, DGate, Batch, Seq],
            ),
        ]);
        Ok(out)
    }

    /// State floats of all (row, KV head) pairs for one chunk: `D²` each, or
    /// for GSA `2·M·D` (`Hkᵀ` and `Hv`) — one scan thread per float.
    fn state_floats(&self, spec: &LigerSpec) -> usize {
        let per = if spec.variant == LigerVariant::Gsa {
            2 * spec.slots * spec.head_dim
        } else {
            spec.head_dim * spec.head_dim
        };
        self.batch * spec.kv_heads * per
    }

    /// `chunk_state` then `scan_fwd` (GSA: their `gsa_` twins): the state(s)
    /// entering every chunk.
    fn states(&self, spec: &LigerSpec) -> Result<[TrainLaunch; 2], CudaError> {
        use TrainArg::*;
        let (states, dec) = (self.scratch(0), self.scratch(2));
        let family = family(spec);
        let scan = if self.rec_tc {
            vec![states, dec, self.read_states()[0], Batch, Seq]
        } else {
            vec![states, dec, Batch, Seq]
        };
        let chunk_state = if family.is_empty() {
            self.rec[0]
        } else {
            RecLaunch {
                grid: self.chunked[0],
                block: NT,
                smem: self.smem[0],
            }
        };
        Ok([
            self.launch(
                &format!("{family}chunk_state"),
                chunk_state.grid,
                chunk_state.block,
                chunk_state.smem,
                vec![K, V, Gate, states, dec, Seq],
            ),
            self.launch(
                &format!("{family}scan_fwd"),
                self.flat(self.state_floats(spec))?,
                NT,
                0,
                scan,
            ),
        ])
    }

    /// The states and state gradients the recurrence kernels read: the
    /// scans' bf16 copies for the tensor-core recurrence, else the f32 slots.
    fn read_states(&self) -> [TrainArg; 2] {
        if self.rec_tc {
            [self.scratch(4), self.scratch(5)]
        } else {
            [self.scratch(0), self.scratch(1)]
        }
    }
}

/// The forward: `Q, K, V, QRot, KRot [, Gate] → Y` (`Y` overwritten). Empty
/// for an empty batch or sequence.
pub fn liger_forward_launches(
    spec: &LigerSpec,
    math: TrainMath,
    batch: usize,
    seq: usize,
) -> Result<Vec<TrainLaunch>, CudaError> {
    use TrainArg::*;
    let shape = plan(spec, math)?;
    if batch == 0 || seq == 0 {
        return Ok(Vec::new());
    }
    let geo = Geometry::new(spec, shape, batch, seq)?;
    let mut out = geo.window_forward();
    if spec.variant != LigerVariant::SwaOnly {
        out.extend(geo.states(spec)?);
        let fwd = if spec.variant == LigerVariant::Gsa {
            RecLaunch {
                grid: geo.chunked[1],
                block: NT,
                smem: geo.smem[1],
            }
        } else {
            geo.rec[1]
        };
        // the tensor-core fwd also takes the saved window output (`y_saved`)
        let [states, _] = geo.read_states();
        let args = if geo.rec_tc {
            vec![Q, K, V, Gate, states, geo.stats(), Y, Seq]
        } else {
            vec![Q, K, V, Gate, states, Y, Seq]
        };
        out.push(geo.launch(
            &format!("{}fwd", family(spec)),
            fwd.grid,
            fwd.block,
            fwd.smem,
            args,
        ));
    }
    Ok(out)
}

/// The backward: `Q, K, V, QRot, KRot [, Gate], DY → DQ, DK, DV, DQRot, DKRot
/// [, DGate]`, every output overwritten; uses `liger_scratch_floats` floats of
/// scratch. Empty for an empty batch or sequence.
pub fn liger_backward_launches(
    spec: &LigerSpec,
    math: TrainMath,
    batch: usize,
    seq: usize,
) -> Result<Vec<TrainLaunch>, CudaError> {
    use TrainArg::*;
    let shape = plan(spec, math)?;
    if batch == 0 || seq == 0 {
        return Ok(Vec::new());
    }
    let geo = Geometry::new(spec, shape, batch, seq)?;
    let mut out = geo.window_backward();
    if spec.variant == LigerVariant::Gsa {
        out.extend(geo.gsa_backward(spec)?);
        return Ok(out);
    }
    let [dstates, dec, db] = [1, 2, 3].map(|i| geo.scratch(i));
    let [states_in, dstates_in] = geo.read_states();
    let scan_bwd = if geo.rec_tc {
        vec![dstates, dec, dstates_in, Batch, Seq]
    } else {
        vec![dstates, dec, Batch, Seq]
    };
    let rows = geo.batch * geo.seq;
    if spec.variant == LigerVariant::SwaOnly {
        let (h, kv, d) = (spec.heads, spec.kv_heads, spec.head_dim);
        out.push(geo.launch(
            "zero_q",
            geo.flat(rows * h * d)?,
            NT,
            0,
            vec![DQ, Batch, Seq],
        ));
        out.push(geo.launch(
            "zero_k",
            geo.flat(rows * kv * d)?,
            NT,
            0,
            vec![DK, Batch, Seq],
        ));
        return Ok(out);
    }
    out.extend(geo.states(spec)?);
    out.extend([
        geo.launch(
            "chunk_dstate",
            geo.rec[4].grid,
            geo.rec[4].block,
            geo.rec[4].smem,
            vec![Q, Gate, DY, dstates, Seq],
        ),
        geo.launch(
            "scan_bwd",
            geo.flat(geo.state_floats(spec))?,
            NT,
            0,
            scan_bwd,
        ),
        geo.launch(
            "bwd_dv",
            geo.rec[2].grid,
            geo.rec[2].block,
            geo.rec[2].smem,
            vec![Q, K, Gate, DY, dstates_in, DV, Seq],
        ),
        geo.launch(
            "bwd_dqk",
            geo.rec[3].grid,
            geo.rec[3].block,
            geo.rec[3].smem,
            vec![Q, K, V, Gate, DY, states_in, dstates_in, DQ, DK, db, Seq],
        ),
    ]);
    if spec.variant.has_gate() {
        let n = geo.batch * spec.kv_heads * spec.head_dim;
        // 32 columns a block (a lane each), the sequence in segments over its warps
        let grid = (grid_dim(n.div_ceil(32), &geo.node)?, 1, 1);
        out.push(geo.launch("revcumsum", grid, NT, 0, vec![db, Batch, Seq]));
    }
    let finish_grid = (
        grid_dim(geo.seq, &geo.node)?,
        grid_dim(geo.batch, &geo.node)?,
        1,
    );
    out.push(geo.launch(
        "finish",
        finish_grid,
        NT,
        0,
        vec![Q, K, Gate, db, DQ, DK, DGate, Seq],
    ));
    Ok(out)
}
