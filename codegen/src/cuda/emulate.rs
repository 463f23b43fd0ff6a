//! Running an emitted plan on the CPU: a C++ program that executes the plan's
//! steps with the generated kernels compiled as plain C++ (g++ with
//! `-std=c++20`), for testing without a GPU.
//!
//! [`SHIM`] maps the CUDA subset the kernels use onto C++: a block's threads
//! are fibers (`ucontext`) on one OS thread, resumed round-robin (blocks run
//! one after another, so `__shared__` becomes a function-level `static`);
//! `__syncthreads` is a barrier over the block's fibers, warp shuffles
//! exchange through a per-warp slot array between two warp barriers (so do the bf16
//! `mma.sync` / `ldmatrix` primitives `mma_bf16` and `ldsm_*`), `nvcuda::wmma` fragments hold
//! the whole tile in every lane, `__nv_bfloat16` is a 16-bit struct with
//! round-to-nearest-even conversion. The schedule is deterministic. GEMM steps run a reference
//! `cublasGemmEx` (column-major, f32 accumulation, bf16 rounding of bf16
//! outputs).
//!
//! [`emulation`] reads an `--emit cuda` folder and returns the program's
//! source and its weights blob. The program's command line:
//!
//! ```text
//! prog WEIGHTS.bin IDS.bin BATCH PREFILL TOTAL OUT_LOGITS.bin OUT_IDS.bin [SPLIT]
//! ```
//!
//! It prefills `IDS[:, :PREFILL]` (i64 `[BATCH, TOTAL]`, position 0; with
//! `SPLIT`, as two calls `[0, SPLIT)` and `[SPLIT, PREFILL)`, the second at
//! `pos0 = SPLIT`), then
//! decodes `IDS[:, t]` for `t = PREFILL .. TOTAL` at position `t`, writing the
//! logits of every position (f32 `[BATCH, TOTAL, vocab]`) and the greedy
//! sample after each call (i64 `[BATCH, TOTAL − PREFILL + 1]`). A padding mask
//! input, if any, is fed all ones; `max_seq = TOTAL`.
//!
//! This checks the plan (buffers, argument order and types — the C++
//! compiler checks every call against the kernel's signature), the kernels'
//! arithmetic and their use of shared memory, barriers and shuffles. It says
//! nothing about speed, and it cannot see races that a real GPU's scheduling
//! would expose but this one's does not.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::CudaError;
use super::kernels::float_lit;
use super::plan::{Arg, Extent, Phase, Plan, Scalar, Step, Sym, TensorDecl};

/// The CUDA-on-threads header every emulated program starts with.
pub const SHIM: &str = r#"// ligerc CUDA emulation shim: the CUDA subset of the generated kernels, on CPU threads.
#include <functional>
#include <math.h>
#include <ucontext.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
struct __nv_bfloat16 { unsigned short x; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
#define LIGERC_EMULATION 1

inline float __bfloat162float(__nv_bfloat16 b) { uint32_t u = (uint32_t)b.x << 16; float f; std::memcpy(&f, &u, 4); return f; }
inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u; std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return {(unsigned short)0x7fc0};
    u += 0x7fffu + ((u >> 16) & 1u);
    return {(unsigned short)(u >> 16)};
}
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.x; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

#define __global__
#define __launch_bounds__(...)
#define __device__
#define __forceinline__ inline
#define __constant__
#define __shared__ static
#define __restrict__ __restrict

// Every CUDA thread of a block is a fiber (ucontext) on the one OS thread; blocks run one after
// another. A barrier counts arrivals and yields to the scheduler until its phase advances.
struct EmuBar {
    unsigned expected = 0, arrived = 0;
    unsigned long phase = 0;
};
struct EmuFiber {
    ucontext_t ctx;
    dim3 idx;
    bool done = false;
};
dim3 threadIdx, blockIdx, blockDim, gridDim;
ucontext_t emu_main_ctx;
std::vector<EmuFiber> emu_fibers;
std::vector<std::vector<char>> emu_stacks;
std::vector<EmuBar> emu_warp_bars;
std::vector<uint64_t> emu_slots;
EmuBar emu_block_bar;
unsigned emu_cur = 0;
std::function<void()> emu_body;
std::vector<float> emu_dyn_smem;
inline float* ligerc_emu_dyn_smem() { return emu_dyn_smem.data(); }

inline void emu_yield() { swapcontext(&emu_fibers[emu_cur].ctx, &emu_main_ctx); }
inline void emu_wait(EmuBar& b) {
    const unsigned long ph = b.phase;
    if (++b.arrived == b.expected) { b.arrived = 0; ++b.phase; return; }
    while (b.phase == ph) emu_yield();
}
inline void emu_drop(EmuBar& b) {
    --b.expected;
    if (b.arrived > 0 && b.arrived == b.expected) { b.arrived = 0; ++b.phase; }
}
inline EmuBar& emu_warp_bar() { return emu_warp_bars[emu_cur / 32]; }
inline void __syncthreads() { emu_wait(emu_block_bar); }
std::vector<int> emu_or_slots;
inline int __syncthreads_or(int p) {  // every thread's predicate in, the block's OR out
    emu_or_slots[emu_cur] = p;
    __syncthreads();
    int r = 0;
    for (int v : emu_or_slots) r |= v != 0;
    __syncthreads();
    return r;
}
inline void __syncwarp(unsigned = 0xffffffffu) { emu_wait(emu_warp_bar()); }
template <typename T> T emu_exchange(T v, int src) {
    const unsigned base = emu_cur & ~31u;
    uint64_t bits = 0; std::memcpy(&bits, &v, sizeof(T));
    emu_slots[emu_cur] = bits;
    emu_wait(emu_warp_bar());
    T out; std::memcpy(&out, &emu_slots[base + (src & 31)], sizeof(T));
    emu_wait(emu_warp_bar());
    return out;
}
template <typename T> T __shfl_xor_sync(unsigned, T v, int o) { return emu_exchange(v, (int)(threadIdx.x & 31) ^ o); }
template <typename T> T __shfl_sync(unsigned, T v, int src) { return emu_exchange(v, src); }

// bf16 tensor-core primitives (the kernels' ldsm_* and mma_bf16), warp-collective: every lane
// deposits its operands in its own slots of `emu_frag`, a warp barrier, every lane gathers
// what it needs, a second barrier before the slots are reused.
std::vector<uint64_t> emu_frag;  // 8 per thread
// ldmatrix .xNM (.trans): lane l gives the address of row l % 8 of matrix l / 8; each lane gets
// per matrix the two 16-bit elements at row l / 4, columns 2(l % 4) and 2(l % 4) + 1
// (transposed: rows 2(l % 4) and 2(l % 4) + 1, column l / 4), the first in the low half.
template <int NM> void emu_ldsm(unsigned* r, const void* p, bool trans) {
    const unsigned base = emu_cur & ~31u, l = emu_cur & 31u;
    emu_frag[emu_cur * 8] = (uint64_t)(uintptr_t)p;
    emu_wait(emu_warp_bar());
    for (int m = 0; m < NM; ++m) {
        unsigned v = 0;
        for (unsigned h = 0; h < 2; ++h) {
            const unsigned row = trans ? 2 * (l % 4) + h : l / 4, col = trans ? l / 4 : 2 * (l % 4) + h;
            const unsigned short* rp = (const unsigned short*)(uintptr_t)emu_frag[(base + 8 * m + row) * 8];
            v |= (unsigned)rp[col] << (16 * h);
        }
        r[m] = v;
    }
    emu_wait(emu_warp_bar());
}
inline void ldsm_x4(unsigned (&r)[4], const __nv_bfloat16* p) { emu_ldsm<4>(r, p, false); }
inline void ldsm_x4_t(unsigned (&r)[4], const __nv_bfloat16* p) { emu_ldsm<4>(r, p, true); }
inline void ldsm_x2(unsigned (&r)[2], const __nv_bfloat16* p) { emu_ldsm<2>(r, p, false); }
inline float emu_bf(uint64_t u, unsigned h) { return __int_as_float((int)(((u >> (16 * h)) & 0xffffu) << 16)); }
// mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32: C (16x8) += A (16x16) B (16x8). Lane l (g = l / 4,
// t = 2(l % 4)) holds A at rows g, g + 8 and columns t, t + 1, t + 8, t + 9 (registers: (g, t..),
// (g + 8, t..), (g, t + 8..), (g + 8, t + 8..)), B at rows t, t + 1, t + 8, t + 9 of column g, and
// C at rows g, g + 8 of columns t, t + 1.
inline void mma_bf16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    const unsigned base = emu_cur & ~31u, l = emu_cur & 31u;
    uint64_t* s = &emu_frag[emu_cur * 8];
    for (int i = 0; i < 4; ++i) s[i] = a[i];
    s[4] = b0;
    s[5] = b1;
    emu_wait(emu_warp_bar());
    float A[16][16], B[16][8];
    for (unsigned ln = 0; ln < 32; ++ln) {
        const uint64_t* f = &emu_frag[(base + ln) * 8];
        const unsigned g = ln / 4, t = 2 * (ln % 4);
        for (unsigned h = 0; h < 2; ++h) {
            A[g][t + h] = emu_bf(f[0], h);
            A[g + 8][t + h] = emu_bf(f[1], h);
            A[g][t + 8 + h] = emu_bf(f[2], h);
            A[g + 8][t + 8 + h] = emu_bf(f[3], h);
            B[t + h][g] = emu_bf(f[4], h);
            B[t + 8 + h][g] = emu_bf(f[5], h);
        }
    }
    emu_wait(emu_warp_bar());
    const unsigned g = l / 4, t = 2 * (l % 4);
    for (unsigned e = 0; e < 4; ++e) {
        const unsigned row = g + 8 * (e / 2), col = t + e % 2;
        float acc = c[e];
        for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
        c[e] = acc;
    }
}

inline void emu_fiber_entry() {
    emu_body();
    emu_fibers[emu_cur].done = true;
    emu_drop(emu_warp_bar());
    emu_drop(emu_block_bar);
}

// Runs `k` over the grid: blocks one after another (x fastest), a block's threads as fibers.
template <typename... P, typename... A>
void emu_launch(void (*k)(P...), dim3 grid, dim3 block, size_t smem, A... args) {
    gridDim = grid; blockDim = block;
    emu_dyn_smem.assign(smem / 4 + 1, 0.0f);
    const unsigned n = block.x * block.y * block.z, nb = grid.x * grid.y * grid.z, nw = (n + 31) / 32;
    if (n == 0 || nb == 0) return;
    emu_body = [&]() { k(args...); };
    emu_fibers.assign(n, EmuFiber{});
    while (emu_stacks.size() < n) emu_stacks.emplace_back(256 * 1024);
    emu_slots.assign(n + 32, 0);
    emu_or_slots.assign(n, 0);
    emu_frag.assign(8 * (n + 32), 0);
    for (unsigned b = 0; b < nb; ++b) {
        blockIdx = dim3{b % grid.x, (b / grid.x) % grid.y, b / (grid.x * grid.y)};
        emu_block_bar = EmuBar{n, 0, 0};
        emu_warp_bars.assign(nw, EmuBar{});
        for (unsigned w = 0; w < nw; ++w) emu_warp_bars[w].expected = std::min(32u, n - 32 * w);
        for (unsigned t = 0; t < n; ++t) {
            EmuFiber& f = emu_fibers[t];
            f.done = false;
            f.idx = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = emu_stacks[t].data();
            f.ctx.uc_stack.ss_size = emu_stacks[t].size();
            f.ctx.uc_link = &emu_main_ctx;
            makecontext(&f.ctx, emu_fiber_entry, 0);
        }
        unsigned long rounds = 0;
        for (bool any = true; any;) {
            if (++rounds > 50000000ul) { std::fprintf(stderr, "emulation: a block never finished (barrier deadlock?)\n"); std::abort(); }
            any = false;
            for (unsigned t = 0; t < n; ++t) {
                if (emu_fibers[t].done) continue;
                any = true;
                emu_cur = t;
                threadIdx = emu_fibers[t].idx;
                swapcontext(&emu_main_ctx, &emu_fibers[t].ctx);
            }
        }
    }
}

// cublasGemmEx, column-major: C = alpha op(A) op(B) + beta C, A/B bf16, f32 accumulation.
template <typename TC>
void emu_gemm(bool ta, bool tb, long m, long n, long k, float alpha, const __nv_bfloat16* A, long lda,
              const __nv_bfloat16* B, long ldb, float beta, TC* C, long ldc) {
    for (long j = 0; j < n; ++j)
        for (long i = 0; i < m; ++i) {
            float acc = 0.0f;
            for (long p = 0; p < k; ++p) {
                const float a = __bfloat162float(ta ? A[p + i * lda] : A[i + p * lda]);
                const float b = __bfloat162float(tb ? B[j + p * ldb] : B[p + j * ldb]);
                acc += a * b;
            }
            float c;
            if constexpr (sizeof(TC) == 2) c = __bfloat162float(C[i + j * ldc]); else c = (float)C[i + j * ldc];
            const float r = alpha * acc + (beta != 0.0f ? beta * c : 0.0f);
            if constexpr (sizeof(TC) == 2) C[i + j * ldc] = __float2bfloat16(r); else C[i + j * ldc] = r;
        }
}

inline long ceil_div(long a, long b) { return (a + b - 1) / b; }

// nvcuda::wmma on fibers: a fragment's layout across a warp's lanes is opaque in CUDA, so
// every lane (fiber) here holds the whole tile, row-major; loads read it all, `mma_sync`
// multiplies it all (f32 accumulation), stores write it all (each lane the same values).
// Element-wise loops over `x[0 .. num_elements)` apply to the whole tile, as on the GPU.
namespace nvcuda { namespace wmma {
struct matrix_a {}; struct matrix_b {}; struct accumulator {};
struct row_major {}; struct col_major {};
namespace precision { struct tf32 {}; }
enum layout_t { mem_row_major, mem_col_major };
template <typename Use, int M, int N, int K> struct emu_dims;
template <int M, int N, int K> struct emu_dims<matrix_a, M, N, K> { static constexpr int R = M, C = K; };
template <int M, int N, int K> struct emu_dims<matrix_b, M, N, K> { static constexpr int R = K, C = N; };
template <int M, int N, int K> struct emu_dims<accumulator, M, N, K> { static constexpr int R = M, C = N; };
template <typename T> struct emu_elem { using type = T; };
template <> struct emu_elem<precision::tf32> { using type = float; };
inline float emu_f(float v) { return v; }
inline float emu_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static constexpr int R = emu_dims<Use, M, N, K>::R, C = emu_dims<Use, M, N, K>::C;
    static constexpr int num_elements = R * C;
    using element_type = typename emu_elem<T>::type;
    element_type x[R * C];
};
inline float __float_to_tf32(float f) {  // round to nearest (ties away) at 10 mantissa bits
    uint32_t u; std::memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) { u += 0x1000u; u &= 0xffffe000u; }
    std::memcpy(&f, &u, 4);
    return f;
}
template <typename Use, int M, int N, int K, typename T, typename L, typename P>
void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm) {
    using F = fragment<Use, M, N, K, T, L>;
    for (int r = 0; r < F::R; ++r)
        for (int c = 0; c < F::C; ++c)
            f.x[r * F::C + c] = std::is_same_v<L, col_major> ? p[(long)c * ldm + r] : p[(long)r * ldm + c];
}
template <int M, int N, int K, typename T>
void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm, layout_t l) {
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c) f.x[r * N + c] = l == mem_col_major ? p[(long)c * ldm + r] : p[(long)r * ldm + c];
}
template <int M, int N, int K, typename T>
void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t l) {
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c) (l == mem_col_major ? p[(long)c * ldm + r] : p[(long)r * ldm + c]) = f.x[r * N + c];
}
template <typename Use, int M, int N, int K, typename T, typename L, typename V>
void fill_fragment(fragment<Use, M, N, K, T, L>& f, V v) {
    for (auto& e : f.x) e = v;
}
template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
    float out[M * N];
    for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
            float acc = c.x[m * N + n];
            for (int k = 0; k < K; ++k) acc += emu_f(a.x[m * K + k]) * emu_f(b.x[k * N + n]);
            out[m * N + n] = acc;
        }
    std::memcpy(d.x, out, sizeof out);
}
}}  // namespace nvcuda::wmma
"#;

/// An emulation program and its weights.
#[derive(Clone, Debug)]
pub struct Emulation {
    /// `main.cpp`: the shim, every kernel in its own namespace, the plan's steps.
    pub source: String,
    /// The weights in plan order, as stored in `weights.safetensors`.
    pub weights: Vec<u8>,
}

fn c_type(dtype: &str) -> &'static str {
    match dtype {
        "bf16" => "__nv_bfloat16",
        "f32" => "float",
        "i64" => "long long",
        "i32" => "int",
        _ => "unsigned char",
    }
}

fn elem_size(dtype: &str) -> usize {
    match dtype {
        "bf16" => 2,
        "f32" | "i32" => 4,
        "i64" => 8,
        _ => 1,
    }
}

fn extent(e: &Extent) -> String {
    let v = match e.sym {
        None => return e.as_fixed().unwrap_or(0).to_string(),
        Some(Sym::Batch) => "batch",
        Some(Sym::Seq) => "seq",
        Some(Sym::Tokens) => "(batch * seq)",
        Some(Sym::MaxSeq) => "max_seq",
    };
    format!("ceil_div({}L * {v}, {}L)", e.mul, e.div.max(1))
}

fn numel(t: &TensorDecl) -> String {
    let mut s = String::from("1L");
    for d in &t.shape {
        s = format!("{s} * {}", extent(d));
    }
    s
}

fn ident(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn scalar(s: Scalar) -> &'static str {
    match s {
        Scalar::Tokens => "(int)(batch * seq)",
        Scalar::Seq => "(int)seq",
        Scalar::Batch => "(int)batch",
        Scalar::Pos0 => "&emu_pos0",
        Scalar::MaxSeq => "(int)max_seq",
        Scalar::TopK => "(int)1",
        Scalar::Temperature => "0.0f",
        Scalar::Seed => "0ull",
        Scalar::Step => "&emu_step",
    }
}

/// Pointer expressions of each tensor namespace, by name.
struct Names {
    types: BTreeMap<String, String>,
}

impl Names {
    fn arg(&self, a: &Arg) -> Result<String, CudaError> {
        let missing = |n: &str| CudaError::Shape {
            node: "plan".into(),
            problem: format!("argument `{n}` is not declared"),
        };
        Ok(match a {
            Arg::Scalar(s) => scalar(*s).to_string(),
            Arg::Null => "nullptr".into(),
            Arg::Input(n) | Arg::Buffer(n) | Arg::Persistent(n) | Arg::Weight(n) => {
                let prefix = match a {
                    Arg::Input(_) => "in_",
                    Arg::Buffer(_) => "buf_",
                    Arg::Persistent(_) => "pers_",
                    _ => "w_",
                };
                let key = format!("{prefix}{}", ident(n));
                let t = self.types.get(&key).ok_or_else(|| missing(n))?;
                format!("({t}*){key}")
            }
        })
    }
}

fn phase_fn(
    name: &str,
    phase: &Phase,
    names: &mut Names,
    kernel_ns: &BTreeMap<String, usize>,
) -> Result<String, CudaError> {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "static void run_{name}(long batch, long seq, long pos0, long max_seq, long long* ids, unsigned char* emu_ones, float* logits_out, long long* next_out) {{"
    );
    // The per-step scalars live in (emulated) device memory: kernels take pointers.
    let _ = writeln!(
        s,
        "    int emu_pos0 = (int)pos0; unsigned long long emu_step = 0ull; (void)emu_pos0; (void)emu_step;"
    );
    for b in &phase.buffers {
        let key = format!("buf_{}", ident(&b.name));
        names.types.insert(key.clone(), c_type(&b.dtype).into());
        let _ = writeln!(
            s,
            "    std::vector<unsigned char> {key}_mem(({}) * {} + 64, 0); void* {key} = {key}_mem.data();",
            numel(b),
            elem_size(&b.dtype)
        );
    }
    for i in &phase.inputs {
        let key = format!("in_{}", ident(&i.name));
        names.types.insert(key.clone(), c_type(&i.dtype).into());
        if i.name == "input_ids" {
            let _ = writeln!(s, "    void* {key} = ids;");
        } else {
            let _ = writeln!(
                s,
                "    std::vector<{t}> {key}_mem(batch * seq, ({t})1); void* {key} = {key}_mem.data(); (void)emu_ones;",
                t = c_type(&i.dtype)
            );
        }
    }
    for step in &phase.steps {
        match step {
            Step::Launch(l) => {
                let ns = kernel_ns.get(&l.kernel).ok_or_else(|| CudaError::Shape {
                    node: "plan".into(),
                    problem: format!("unknown kernel `{}`", l.kernel),
                })?;
                let args: Vec<String> = l
                    .args
                    .iter()
                    .map(|a| names.arg(a))
                    .collect::<Result<_, _>>()?;
                let _ = writeln!(
                    s,
                    "    emu_launch(k{ns}::{}, dim3{{(unsigned)({}), (unsigned)({}), (unsigned)({})}}, dim3{{{}, {}, {}}}, {}, {});",
                    l.kernel,
                    extent(&l.grid[0]),
                    extent(&l.grid[1]),
                    extent(&l.grid[2]),
                    l.block[0],
                    l.block[1],
                    l.block[2],
                    l.dynamic_smem,
                    args.join(", ")
                );
            }
            Step::Gemm(g) => {
                let c = names.arg(&g.c)?;
                let _ = writeln!(
                    s,
                    "    emu_gemm({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {});",
                    g.transa == "T",
                    g.transb == "T",
                    extent(&g.m),
                    extent(&g.n),
                    extent(&g.k),
                    float_lit(g.alpha),
                    names.arg(&g.a)?,
                    extent(&g.lda),
                    names.arg(&g.b)?,
                    extent(&g.ldb),
                    float_lit(g.beta),
                    c,
                    extent(&g.ldc)
                );
            }
        }
    }
    if let Some(o) = phase.outputs.iter().find(|o| o.name == "logits") {
        let _ = writeln!(
            s,
            "    std::memcpy(logits_out, buf_{}, sizeof(float) * batch * seq * VOCAB);",
            ident(&o.buffer)
        );
    }
    if let Some(sm) = &phase.sampling {
        let l = &sm.argmax;
        let ns = kernel_ns.get(&l.kernel).copied().unwrap_or(0);
        let args: Vec<String> = l
            .args
            .iter()
            .map(|a| names.arg(a))
            .collect::<Result<_, _>>()?;
        let _ = writeln!(
            s,
            "    emu_launch(k{ns}::{}, dim3{{(unsigned)batch, 1, 1}}, dim3{{{}, 1, 1}}, 0, {});\n    std::memcpy(next_out, pers_next_ids, sizeof(long long) * batch);",
            l.kernel,
            l.block[0],
            args.join(", ")
        );
    }
    s.push_str("}\n\n");
    Ok(s)
}

/// An emitted kernel's source as plain C++ for [`SHIM`]: the CUDA headers dropped, and its
/// dynamic shared memory (`extern __shared__ float smem[]`, aligned or not) taken from the
/// shim's per-launch buffer.
pub fn emulation_body(src: &str) -> String {
    let dynamic = "float* smem = ligerc_emu_dyn_smem();";
    src.replace("#include <cuda_bf16.h>", "")
        .replace("#include <mma.h>", "")
        .replace("extern __shared__ float smem[];", dynamic)
        .replace("extern __shared__ __align__(1024) float smem[];", dynamic)
}

/// Reads the `--emit cuda` folder `dir` and builds the emulation program.
pub fn emulation(dir: &Path) -> Result<Emulation, CudaError> {
    let io = |p: &Path, e: std::io::Error| CudaError::Io {
        path: p.display().to_string(),
        source: e,
    };
    let plan_path = dir.join("plan.json");
    let text = std::fs::read_to_string(&plan_path).map_err(|e| io(&plan_path, e))?;
    let plan: Plan = serde_json::from_str(&text).map_err(|e| CudaError::Shape {
        node: plan_path.display().to_string(),
        problem: e.to_string(),
    })?;
    let mut src = String::from(SHIM);
    let mut kernel_ns = BTreeMap::new();
    for (i, k) in plan.kernels.iter().enumerate() {
        let p = dir.join(&k.file);
        let body = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
        let body = emulation_body(&body);
        let _ = writeln!(src, "namespace k{i} {{\n{body}\n}} // namespace k{i}\n");
        kernel_ns.insert(k.name.clone(), i);
    }
    // Weights: one blob in plan order.
    let wpath = dir.join(&plan.weights.file);
    let wbytes = std::fs::read(&wpath).map_err(|e| io(&wpath, e))?;
    let st = safetensors::SafeTensors::deserialize(&wbytes).map_err(|e| CudaError::Shape {
        node: wpath.display().to_string(),
        problem: e.to_string(),
    })?;
    let mut blob = Vec::new();
    let mut names = Names {
        types: BTreeMap::new(),
    };
    let mut decls = String::new();
    for w in &plan.weights.tensors {
        let t = st.tensor(&w.name).map_err(|e| CudaError::Shape {
            node: format!("weight `{}`", w.name),
            problem: e.to_string(),
        })?;
        while blob.len() % 16 != 0 {
            blob.push(0);
        }
        let key = format!("w_{}", ident(&w.name));
        let _ = writeln!(
            decls,
            "static void* {key} = nullptr; static const long {key}_off = {};",
            blob.len()
        );
        names.types.insert(key, c_type(&w.dtype).into());
        blob.extend_from_slice(t.data());
    }
    src.push_str(&decls);
    for p in &plan.persistent {
        let key = format!("pers_{}", ident(&p.tensor.name));
        let _ = writeln!(src, "static void* {key} = nullptr;");
        names.types.insert(key, c_type(&p.tensor.dtype).into());
    }
    let _ = writeln!(
        src,
        "static const long VOCAB = {};\n",
        plan.model_info.vocab
    );
    src.push_str(&phase_fn("prefill", &plan.prefill, &mut names, &kernel_ns)?);
    src.push_str(&phase_fn("decode", &plan.decode, &mut names, &kernel_ns)?);
    let mut main = String::from(
        "int main(int argc, char** argv) {\n    if (argc != 8 && argc != 9) { std::fprintf(stderr, \"usage: prog WEIGHTS IDS BATCH PREFILL TOTAL LOGITS NEXT [SPLIT]\\n\"); return 2; }\n",
    );
    main.push_str(
        "    auto slurp = [](const char* p) { FILE* f = std::fopen(p, \"rb\"); if (!f) { std::perror(p); std::exit(1); } std::vector<unsigned char> v; unsigned char buf[65536]; size_t n; while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) v.insert(v.end(), buf, buf + n); std::fclose(f); return v; };\n\
         static std::vector<unsigned char> weights = slurp(argv[1]);\n\
         std::vector<unsigned char> idsb = slurp(argv[2]);\n\
         const long batch = std::atol(argv[3]), prefill = std::atol(argv[4]), total = std::atol(argv[5]);\n\
         const long max_seq = total;\n\
         long long* ids = (long long*)idsb.data();\n",
    );
    for w in &plan.weights.tensors {
        let key = format!("w_{}", ident(&w.name));
        let _ = writeln!(main, "    {key} = weights.data() + {key}_off;");
    }
    for p in &plan.persistent {
        let key = format!("pers_{}", ident(&p.tensor.name));
        let _ = writeln!(
            main,
            "    {{ long seq = 1; (void)seq; {key} = std::calloc(({}) * {} + 64, 1); }}",
            numel(&p.tensor),
            elem_size(&p.tensor.dtype)
        );
    }
    main.push_str(
        "    std::vector<float> logits(batch * total * VOCAB, 0.0f), step_logits;\n\
         std::vector<long long> next((total - prefill + 1) * batch, 0), nb(batch);\n\
         const long split = argc == 9 ? std::atol(argv[8]) : 0;\n\
         // One prefill call, or two (the second continuing at pos0 = split).\n\
         for (long start : {0L, split}) {\n\
             const long end = (start == 0 && split > 0) ? split : prefill;\n\
             if (start > 0 && start == end) continue;\n\
             const long n = end - start;\n\
             std::vector<long long> row_ids(batch * n);\n\
             for (long b = 0; b < batch; ++b) for (long t = 0; t < n; ++t) row_ids[b * n + t] = ids[b * total + start + t];\n\
             step_logits.assign(batch * n * VOCAB, 0.0f);\n\
             run_prefill(batch, n, start, max_seq, row_ids.data(), nullptr, step_logits.data(), nb.data());\n\
             for (long b = 0; b < batch; ++b) { std::memcpy(&logits[(b * total + start) * VOCAB], &step_logits[b * n * VOCAB], sizeof(float) * n * VOCAB); next[b] = nb[b]; }\n\
             if (split == 0) break;\n\
         }\n\
         for (long t = prefill; t < total; ++t) {\n\
             std::vector<long long> tok(batch);\n\
             for (long b = 0; b < batch; ++b) tok[b] = ids[b * total + t];\n\
             step_logits.assign(batch * VOCAB, 0.0f);\n\
             run_decode(batch, 1, t, max_seq, tok.data(), nullptr, step_logits.data(), nb.data());\n\
             for (long b = 0; b < batch; ++b) { std::memcpy(&logits[(b * total + t) * VOCAB], &step_logits[b * VOCAB], sizeof(float) * VOCAB); next[(t - prefill + 1) * batch + b] = nb[b]; }\n\
         }\n\
         FILE* f = std::fopen(argv[6], \"wb\"); std::fwrite(logits.data(), sizeof(float), logits.size(), f); std::fclose(f);\n\
         f = std::fopen(argv[7], \"wb\"); std::fwrite(next.data(), sizeof(long long), next.size(), f); std::fclose(f);\n\
         return 0;\n}\n",
    );
    src.push_str(&main);
    Ok(Emulation {
        source: src,
        weights: blob,
    })
}
