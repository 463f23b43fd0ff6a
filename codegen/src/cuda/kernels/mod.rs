//! CUDA C++ source generators, one file per kernel family.
//!
//! Every generator returns a [`KernelSrc`]: the kernel's body (constants
//! baked in: shapes, eps, gate normalizer, RoPE frequencies, mixing weights),
//! its launch shape and a description of its parameters. [`super::lower`]
//! registers each distinct source once and writes it as
//! `kernels/NAME.cu` = header comment + [`PRELUDE`] + body.
//!
//! Conventions shared by all kernels: activations are row-major
//! `[tokens, features]` (`tokens = batch · seq`, row `b·seq + t`), heads packed
//! in the feature axis as in the IR; bf16 in memory, f32 arithmetic; names of
//! parameters match the plan's argument order.

pub mod attention;
pub mod basic;
pub mod liger;
pub mod liger_train;
pub mod sample;
pub mod train_basic;

use ligerc_ir::DType;

use super::CudaError;

/// A generated kernel before registration.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelSrc {
    /// The `extern "C"` entry point (a C identifier).
    pub name: String,
    /// What it computes, one line.
    pub summary: String,
    /// Source after the prelude.
    pub body: String,
    /// Threads per block.
    pub block: [u32; 3],
    /// Dynamic shared memory in bytes.
    pub smem: u32,
    /// The grid, in words (the plan holds the numbers).
    pub grid: String,
    /// One line per parameter, in order.
    pub params: Vec<String>,
}

/// Asynchronous copies from global to shared memory (`cp.async`, sm_80 and later):
/// `cp_async16(dst, src, fill)` copies 16 bytes, `cp_async4` one float, both writing zeros
/// when `!fill` (`src` must still be a valid address); `cp_async_wait_all()`: the thread's
/// copies have landed (a barrier then publishes them); `cp_async_commit()` closes a group of
/// copies, `cp_async_wait<N>()` waits for all but the N most recent groups. The CPU
/// emulation copies at once.
pub(crate) const CP_ASYNC: &str = r#"__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool fill) {
#ifdef LIGERC_EMULATION
    *reinterpret_cast<uint4*>(dst) = fill ? *reinterpret_cast<const uint4*>(src) : uint4{0u, 0u, 0u, 0u};
#else
    const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(fill ? 16 : 0) : "memory");
#endif
}
__device__ __forceinline__ void cp_async4(float* dst, const float* src, bool fill) {
#ifdef LIGERC_EMULATION
    *dst = fill ? *src : 0.0f;
#else
    const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(fill ? 4 : 0) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_wait_all() {
#ifndef LIGERC_EMULATION
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}
// The thread's copies issued since the last commit form one group.
__device__ __forceinline__ void cp_async_commit() {
#ifndef LIGERC_EMULATION
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// All but the thread's N most recent groups have landed.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifndef LIGERC_EMULATION
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

"#;

/// Helpers every kernel file starts with (after `#include <cuda_bf16.h>`).
pub const PRELUDE: &str = r#"typedef __nv_bfloat16 bf16;

// Loads as f32 and stores from f32, whatever the element type.
__device__ __forceinline__ float ld(const bf16* p, long long i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ float ld(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ void st(bf16* p, long long i, float v) { p[i] = __float2bfloat16(v); }
__device__ __forceinline__ void st(float* p, long long i, float v) { p[i] = v; }

__device__ __forceinline__ float neg_inf() { return -__int_as_float(0x7f800000); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum of `v` over the block; `scratch` is 32 floats of shared memory. Every thread gets the sum.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = (int)threadIdx.x < warps ? scratch[threadIdx.x] : 0.0f;
    if (warp == 0) v = warp_sum(v);
    if (threadIdx.x == 0) scratch[0] = v;
    __syncthreads();
    return scratch[0];
}

// log(sigmoid(x)), stable for any x.
__device__ __forceinline__ float logsigmoid(float x) { return fminf(x, 0.0f) - log1pf(expf(-fabsf(x))); }
// The same from the fast intrinsics (absolute error ~4e-7: below a gate cumsum's f32 rounding over
// a chunk), for the prefill's per-element gates.
__device__ __forceinline__ float logsigmoid_fast(float x) { return fminf(x, 0.0f) - __logf(1.0f + __expf(-fabsf(x))); }

// Inclusive running sum down the first `rows` rows of each of `cols` columns of `x` (row
// stride `stride`), in place; one thread per column. The in-chunk gate cumsum.
__device__ __forceinline__ void cumsum_rows(float* x, int rows, int cols, int stride) {
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float acc = 0.0f;
        for (int t = 0; t < rows; ++t) {
            acc += x[t * stride + i];
            x[t * stride + i] = acc;
        }
    }
}

// cumsum_rows with the rows in up to 8 segments walked at once (blockDim.x / cols of them),
// each segment then adding the totals of those before it. Every thread of the block calls it
// (two barriers inside); the sums' order differs from one walk by f32 rounding only.
__device__ __forceinline__ void cumsum_rows_par(float* x, int rows, int cols, int stride) {
    const int parts = min(8, (int)blockDim.x / cols);
    if (parts < 2) {  // block-uniform
        cumsum_rows(x, rows, cols, stride);
        return;
    }
    const int seg = (rows + parts - 1) / parts, i = threadIdx.x % cols, part = threadIdx.x / cols;
    const bool on = part < parts;
    const int r0 = part * seg, r1 = min(rows, r0 + seg);
    if (on) {
        float acc = 0.0f;
        for (int t = r0; t < r1; ++t) {
            acc += x[t * stride + i];
            x[t * stride + i] = acc;
        }
    }
    __syncthreads();
    float add = 0.0f;  // the totals of the segments before this one
    if (on)
        for (int q = 0; q < part; ++q) {
            const int last = min(rows, (q + 1) * seg) - 1;
            if (last >= q * seg) add += x[last * stride + i];
        }
    __syncthreads();
    if (on && part > 0)
        for (int t = r0; t < r1; ++t) x[t * stride + i] += add;
}

// Softmax of each of `rows` rows of `width` floats at `x` (row stride `stride`), in place; one warp per row.
__device__ __forceinline__ void softmax_rows_strided(float* x, int rows, int width, int stride) {
    const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    for (int r = threadIdx.x >> 5; r < rows; r += warps) {
        float* row = x + r * stride;
        float m = neg_inf();
        for (int i = lane; i < width; i += 32) m = fmaxf(m, row[i]);
        m = warp_max(m);
        float s = 0.0f;
        for (int i = lane; i < width; i += 32) {
            const float e = __expf(row[i] - m);  // exponent <= 0: the fast exp is exact to a few ulp
            row[i] = e;
            s += e;
        }
        const float inv = 1.0f / warp_sum(s);
        for (int i = lane; i < width; i += 32) row[i] *= inv;
    }
}

// Softmax of each of `rows` rows of `width` floats at `x` (row stride `width`), in place; one warp per row.
__device__ __forceinline__ void softmax_rows(float* x, int rows, int width) { softmax_rows_strided(x, rows, width, width); }
"#;

/// A C float literal that reads back as `x` rounded to f32.
pub fn float_lit(x: f64) -> String {
    let v = x as f32;
    let s = format!("{v:e}");
    format!("{s}f")
}

/// The C element type of a device tensor of `dtype`.
pub fn c_type(dtype: DType, what: &str) -> Result<&'static str, CudaError> {
    Ok(match dtype {
        DType::BF16 => "bf16",
        DType::F32 => "float",
        DType::I64 => "long long",
        DType::I32 => "int",
        DType::U8 | DType::Bool => "unsigned char",
        other => {
            return Err(CudaError::Unsupported {
                node: what.to_string(),
                reason: format!("no CUDA element type for {other} tensors"),
            });
        }
    })
}

/// A short tag of an element type for kernel names (`bf16`, `f32`, `i64`, …).
pub fn tag(dtype: DType) -> &'static str {
    dtype.name()
}

/// Largest power of two ≤ 32 dividing `n` (the value tile of the recurrent kernels).
pub fn value_tile(n: usize) -> usize {
    let mut t = 32;
    while t > 1 && !n.is_multiple_of(t) {
        t /= 2;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_tiles() {
        assert_eq!(float_lit(0.5), "5e-1f");
        assert_eq!(float_lit(1e-5), "1e-5f");
        assert_eq!(value_tile(128), 32);
        assert_eq!(value_tile(16), 16);
        assert_eq!(value_tile(80), 16);
        assert_eq!(value_tile(7), 1);
    }
}
