//! LigerAttention kernels (LIGER.md §2.4–§2.7; the CPU reference is
//! `runtime/src/ops/liger/`, whose algorithms these mirror).
//!
//! Prefill of one layer runs, in stream order:
//!
//! 1. [`window_prefill`] — the sliding-window softmax branch over the rotated
//!    q, k (the IR's `Rope` nodes ran before), keys older than this call read
//!    from the ring; one block per (tile of tokens, KV head, row) stages the
//!    tile's keys and values in shared memory for all its query heads; writes
//!    `mix_window · y` (bf16 scratch, or the final output for `swa-only`) — not
//!    launched where step 3 takes the window branch ([`fused_prefill`], see 3);
//! 2. GSA only: [`gsa_slots_prefill`] — the chunked slot pass, writing the
//!    slot logits `q·Hk` (f32 scratch) and updating `Hk`;
//! 3. the chunked gated recurrence, chunk-parallel, gate and feature maps computed
//!    from the raw `q`/`k` as chunks are loaded: [`gla_chunk_states`] (one block
//!    per (chunk, KV head, row): the chunk's own state contribution and decay into
//!    scratch), [`gla_state_scan`] (one thread per state element walks the chunks
//!    from the stored state `S` per KV head: the state entering each chunk, the
//!    final state written back), [`gla_prefill`] (one block per (chunk, query
//!    head, row), or per (chunk, KV head, row) serving its query heads in turn on
//!    tensor cores ([`gla_prefill_heads`]): adds `mix_linear · o` to the window part
//!    and writes the bf16 output). The keyed variants at head dims and chunks that
//!    are multiples of 16 run step 1 on TF32 tensor cores (`chunk_tc.rs`) and step 3
//!    as two launches: the bf16 `mma.sync` kernel (`chunk_mma.rs`) on every chunk
//!    that decays by at most `e^{−40}`, the TF32 sub-chunk kernel
//!    ([`gla_prefill_subchunk`]) on the others. Where [`fused_eligible`] holds (head dim
//!    64 or 128, a window of at most 64 that is a multiple of 16), the first of the two is
//!    [`fused_prefill`]: step 3 with the window branch inside, the layer's whole output.
//!    For GSA it is the value pass (queries = softmax of the slot logits, keys
//!    `s = 1 − α`, state `Hv`);
//! 4. [`ring_store`] — the last `window + 1` rotated keys and values into the
//!    ring the decode step reads.
//!
//! A decode step is one kernel: [`decode_keyed`] (GLA, HGRN2, retention,
//! linear, swa-only: [`decode_keyed_bulk`] where it applies, else
//! [`decode_keyed_threads`]) or [`decode_gsa`].

mod chunk;
mod chunk_mma;
mod chunk_pass;
mod chunk_tc;
mod decode;
mod decode_bulk;
mod fused;
mod gsa;
mod ring;
mod window;

pub use chunk::{
    gla_chunk, gla_chunk_states, gla_prefill, gla_prefill_heads, gla_prefill_subchunk,
    gla_state_scan,
};
pub use chunk_pass::{chunk_prep, key_and_state_pass, state_pass, state_pass_slices};
pub use decode::{decode_gsa, decode_keyed, decode_keyed_threads};
pub use decode_bulk::decode_keyed_bulk;
pub use fused::{fused_eligible, fused_prefill};
pub use gsa::{gsa_slots_prefill, slots_chunk};
pub use ring::ring_store;
pub use window::{WindowOut, window_prefill, window_smem, window_tile};

use ligerc_ir::{LigerSpec, LigerVariant};

/// Threads per block of the chunked kernels.
pub(super) const CHUNK_THREADS: usize = 256;

pub(super) fn vname(v: LigerVariant) -> String {
    v.name().replace('-', "_")
}

/// Sizes shared by the Liger kernels of one layer.
pub(super) fn dims(spec: &LigerSpec) -> (usize, usize, usize, usize) {
    (
        spec.heads,
        spec.kv_heads,
        spec.heads / spec.kv_heads.max(1),
        spec.head_dim,
    )
}

/// The recurrence the [`gla_prefill`] kernels / [`decode_keyed`] run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recurrence {
    /// GLA, HGRN2, retention, linear: queries/keys are raw bf16 `[tokens, heads·D]`.
    Keyed,
    /// GSA's value pass: queries are f32 slot logits `[tokens, heads·M]`, keys `1 − α` over `M` slots.
    GsaValues,
}

/// Key channels (rows of the state) of a recurrence: the head dim, or GSA's slots.
pub fn key_channels(spec: &LigerSpec, rec: Recurrence) -> usize {
    match rec {
        Recurrence::Keyed => spec.head_dim,
        Recurrence::GsaValues => spec.slots,
    }
}

/// The `ldmatrix` / `mma.sync` wrappers (sm_80 and later). The CPU emulation
/// (`LIGERC_EMULATION`) defines the same functions on its fibers.
pub(super) const MMA_PRELUDE: &str = r#"#ifndef LIGERC_EMULATION
// Four 8x8 b16 matrices from shared memory, lane l giving row l % 8 of matrix l / 8.
__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const bf16* p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
}
// The same, each matrix transposed.
__device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], const bf16* p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
}
// Two matrices (lanes 0..15 give the rows).
__device__ __forceinline__ void ldsm_x2(unsigned (&r)[2], const bf16* p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(a) : "memory");
}
// C (16x8, f32) += A (16x16, bf16, row) B (16x8, bf16, col).
__device__ __forceinline__ void mma_bf16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif
// Two floats as bf16, the first in the low half (an mma operand register).
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    return (unsigned)__bfloat16_as_ushort(__float2bfloat16(lo)) | ((unsigned)__bfloat16_as_ushort(__float2bfloat16(hi)) << 16);
}
__device__ __forceinline__ float bf_lo(unsigned u) { return __int_as_float((int)(u << 16)); }
__device__ __forceinline__ float bf_hi(unsigned u) { return __int_as_float((int)(u & 0xffff0000u)); }
"#;

/// CUDA source: the softmax over the head dim of the 16 query rows in the A fragments `qa`
/// (a row's channels on the four lanes of a quad) — the row max `m[x]` and `num / Σ e^(q−m)`
/// into `sum[x]` for this lane's rows `x` = 0, 1 — with each line indented by `ind`.
pub(super) fn quad_softmax_src(sum: &str, num: &str, ind: &str) -> String {
    format!(
        r#"{ind}// q~ = softmax over the head dim: a row's channels lie on the four lanes of a quad
{ind}float m[2] = {{neg_inf(), neg_inf()}}, {sum}[2] = {{0.0f, 0.0f}};
    #pragma unroll
{ind}for (int kk = 0; kk < D / 16; ++kk)
    #pragma unroll
{ind}    for (int r = 0; r < 4; ++r) m[r & 1] = fmaxf(m[r & 1], fmaxf(bf_lo(qa[kk][r]), bf_hi(qa[kk][r])));
    #pragma unroll
{ind}for (int x = 0; x < 2; ++x) {{
{ind}    m[x] = fmaxf(m[x], __shfl_xor_sync(0xffffffffu, m[x], 1));
{ind}    m[x] = fmaxf(m[x], __shfl_xor_sync(0xffffffffu, m[x], 2));
{ind}}}
    #pragma unroll
{ind}for (int kk = 0; kk < D / 16; ++kk)
    #pragma unroll
{ind}    for (int r = 0; r < 4; ++r) {sum}[r & 1] += __expf(bf_lo(qa[kk][r]) - m[r & 1]) + __expf(bf_hi(qa[kk][r]) - m[r & 1]);
    #pragma unroll
{ind}for (int x = 0; x < 2; ++x) {{
{ind}    {sum}[x] += __shfl_xor_sync(0xffffffffu, {sum}[x], 1);
{ind}    {sum}[x] += __shfl_xor_sync(0xffffffffu, {sum}[x], 2);
{ind}    {sum}[x] = {num} / {sum}[x];
{ind}}}
"#
    )
}

/// A GLA layer of `h` query heads, `kv` KV heads, head dim `d` and window `window`, mix
/// 0.5 / 0.5, 64 GSA slots: the shape the kernels' unit tests tile.
#[cfg(test)]
pub(crate) fn test_spec(h: usize, kv: usize, d: usize, window: usize) -> LigerSpec {
    LigerSpec {
        variant: LigerVariant::Gla,
        heads: h,
        kv_heads: kv,
        head_dim: d,
        window,
        mix_window: 0.5,
        mix_linear: 0.5,
        slots: 64,
    }
}
