//! The simple kernels of GPU training (`runtime/src/cuda/train/`): f32
//! element-wise and row-wise forward and backward ops, the loss, and the
//! optimizer. Shapes are run-time arguments, so the whole family is one
//! source ([`train_basic_source`]) compiled once per process; the GEMMs of
//! Linear / LmHead / Lora and their backward are cuBLAS calls, not kernels.
//!
//! Every reduction whose CPU counterpart sums in f64 (RMSNorm backward, the
//! loss, the gradient norm, the AdamW update) sums in `double` here too, in a
//! fixed order per launch shape, so results do not depend on scheduling.
//!
//! Launch conventions (the `launch` line above each kernel is the contract the
//! runtime follows): `ROWS` kernels take one block of [`ROW_BLOCK`] threads per
//! row; element-wise kernels take `⌈n / ELEM_BLOCK⌉` blocks of [`ELEM_BLOCK`]
//! threads; the reductions over a whole buffer take [`REDUCE_BLOCKS`] blocks of
//! [`ROW_BLOCK`] threads writing one partial each, then one block of
//! [`ROW_BLOCK`] summing the partials in index order.

/// Threads per block of the row kernels and reductions.
pub const ROW_BLOCK: u32 = 256;
/// Threads per block of the element-wise kernels.
pub const ELEM_BLOCK: u32 = 256;
/// Blocks of the first pass of a whole-buffer reduction (fixed, so the
/// summation order is too).
pub const REDUCE_BLOCKS: u32 = 120;

/// Every kernel of the family, in source order: `(name, what it computes)`.
pub const KERNELS: &[(&str, &str)] = &[
    (
        "tr_embedding",
        "y[r] = table[ids[r]] (f32 table; an out-of-range id gives zeros)",
    ),
    (
        "tr_rmsnorm",
        "y = w · x / sqrt(mean(x²) + eps), one block per row",
    ),
    (
        "tr_rmsnorm_dx",
        "dx = r·w·dy − x·r³/D·Σ dy·w·x (r in double)",
    ),
    (
        "tr_row_inv_rms",
        "r = 1/sqrt(mean(x²) + eps) per row (double)",
    ),
    (
        "tr_rmsnorm_dw",
        "dw = Σ_rows dy·x·r, one thread per feature",
    ),
    ("tr_swiglu", "y = silu(g)·u"),
    ("tr_swiglu_dg", "dg = dy·u·σ(g)·(1 + g·(1 − σ(g)))"),
    ("tr_swiglu_du", "du = dy·g·σ(g)"),
    (
        "tr_rope",
        "rotate-half RoPE by ±θ from cos/sin tables [seq, D/2]",
    ),
    ("tr_add", "y = a + b"),
    (
        "tr_to_bf16",
        "y = bf16(x), round to nearest even, NaN kept (bits as unsigned short)",
    ),
    ("tr_accumulate", "acc += x"),
    ("tr_bias_add", "y[r, j] += bias[j]"),
    (
        "tr_column_sums",
        "out[j] = Σ_r dy[r, j] (double), one thread per column",
    ),
    (
        "tr_xent_rows",
        "per row: lse = log Σ exp(x) and loss = lse − x[target] (double)",
    ),
    (
        "tr_xent_sum",
        "loss_sum and counted rows over the per-row losses (double)",
    ),
    (
        "tr_xent_grad",
        "dx = dy·(softmax(x) − onehot(target)); ignored rows 0",
    ),
    (
        "tr_sumsq_partial",
        "partial sums of x² (double), one per block",
    ),
    ("tr_sum_partials", "the partial sums added in index order"),
    (
        "tr_adamw",
        "AdamW with decoupled weight decay, gradient pre-scaled by the clip factor",
    ),
];

const SOURCE: &str = r#"// ligerc GPU training: simple f32 kernels (codegen/src/cuda/kernels/train_basic.rs).

__device__ __forceinline__ float tr_block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? scratch[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) scratch[0] = v;
    }
    __syncthreads();
    return scratch[0];
}

__device__ __forceinline__ double tr_block_sum_d(double v, double* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? scratch[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) scratch[0] = v;
    }
    __syncthreads();
    return scratch[0];
}

__device__ __forceinline__ float tr_block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? scratch[lane] : -__int_as_float(0x7f800000);
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
        if (lane == 0) scratch[0] = v;
    }
    __syncthreads();
    return scratch[0];
}

// launch: (rows) x 256
extern "C" __global__ void tr_embedding(const long long* __restrict__ ids, const float* __restrict__ table,
                                        float* __restrict__ y, int rows, int dim, long long vocab) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    const long long id = ids[r];
    float* out = y + (long long)r * dim;
    const bool ok = id >= 0 && id < vocab;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[i] = ok ? table[id * dim + i] : 0.0f;
}

// launch: (rows) x 256
extern "C" __global__ void tr_rmsnorm(const float* __restrict__ x, const float* __restrict__ w,
                                      float* __restrict__ y, int rows, int dim, float eps) {
    __shared__ float scratch[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float* xr = x + (long long)r * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    const float inv = 1.0f / sqrtf(tr_block_sum(ss, scratch) / (float)dim + eps);
    float* yr = y + (long long)r * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = w[i] * (xr[i] * inv);
}

// launch: (rows) x 256; eps is the forward's f32 eps widened to double.
extern "C" __global__ void tr_rmsnorm_dx(const float* __restrict__ x, const float* __restrict__ w,
                                         const float* __restrict__ dy, float* __restrict__ dx,
                                         int rows, int dim, double eps) {
    __shared__ double scratch[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const long long base = (long long)r * dim;
    double ss = 0.0, proj = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const double xi = x[base + i];
        ss += xi * xi;
        proj += xi * (double)dy[base + i] * (double)w[i];
    }
    ss = tr_block_sum_d(ss, scratch);
    proj = tr_block_sum_d(proj, scratch);
    const double inv = 1.0 / sqrt(ss / (double)dim + eps);
    const double k = inv * inv * inv * proj / (double)dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        dx[base + i] = (float)(inv * (double)w[i] * (double)dy[base + i] - (double)x[base + i] * k);
}

// launch: (rows) x 256. inv[r] = 1/sqrt(mean(x_r²) + eps), in double.
extern "C" __global__ void tr_row_inv_rms(const float* __restrict__ x, double* __restrict__ inv,
                                          int rows, int dim, double eps) {
    __shared__ double scratch[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    double ss = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const double xi = x[(long long)r * dim + i];
        ss += xi * xi;
    }
    ss = tr_block_sum_d(ss, scratch);
    if (threadIdx.x == 0) inv[r] = 1.0 / sqrt(ss / (double)dim + eps);
}

// launch: (ceil(dim/256)) x 256; inv from tr_row_inv_rms.
extern "C" __global__ void tr_rmsnorm_dw(const float* __restrict__ x, const float* __restrict__ dy,
                                         const double* __restrict__ inv, float* __restrict__ dw,
                                         int rows, int dim) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= dim) return;
    double acc = 0.0;
    for (int r = 0; r < rows; ++r) {
        const long long o = (long long)r * dim + j;
        acc += (double)dy[o] * (double)x[o] * inv[r];
    }
    dw[j] = (float)acc;
}

// launch: (ceil(n/256)) x 256
extern "C" __global__ void tr_swiglu(const float* __restrict__ g, const float* __restrict__ u,
                                     float* __restrict__ y, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float s = 1.0f / (1.0f + expf(-g[i]));
    y[i] = g[i] * s * u[i];
}

// launch: (ceil(n/256)) x 256
extern "C" __global__ void tr_swiglu_dg(const float* __restrict__ g, const float* __restrict__ u,
                                        const float* __restrict__ dy, float* __restrict__ dg, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float s = 1.0f / (1.0f + expf(-g[i]));
    dg[i] = dy[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
}

// launch: (ceil(n/256)) x 256
extern "C" __global__ void tr_swiglu_du(const float* __restrict__ g, const float* __restrict__ dy,
                                        float* __restrict__ du, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float s = 1.0f / (1.0f + expf(-g[i]));
    du[i] = dy[i] * g[i] * s;
}

// launch: (ceil(rows*features/2/256)) x 256. x, y [rows, features] with row = b*seq + t;
// cos, sin [seq, half]; sign = +1 forward, -1 backward (the transposed rotation).
extern "C" __global__ void tr_rope(const float* __restrict__ x, const float* __restrict__ cos_t,
                                   const float* __restrict__ sin_t, float* __restrict__ y,
                                   int rows, int seq, int features, int half, int sign) {
    const long long pairs = (long long)features / 2;
    const long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (long long)rows * pairs) return;
    const int r = (int)(k / pairs);
    const int p = (int)(k % pairs);
    const int head = p / half, i = p % half;
    const int t = r % seq;
    const long long o = (long long)r * features + (long long)head * 2 * half;
    const float c = cos_t[(long long)t * half + i], s = sin_t[(long long)t * half + i];
    const float x1 = x[o + i], x2 = x[o + half + i];
    if (sign > 0) {
        y[o + i] = x1 * c - x2 * s;
        y[o + half + i] = x2 * c + x1 * s;
    } else {
        y[o + i] = x1 * c + x2 * s;
        y[o + half + i] = x2 * c - x1 * s;
    }
}

// launch: (ceil(n/256)) x 256
extern "C" __global__ void tr_add(const float* __restrict__ a, const float* __restrict__ b,
                                  float* __restrict__ y, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a[i] + b[i];
}

// launch: (ceil(n/256)) x 256
extern "C" __global__ void tr_to_bf16(const float* __restrict__ x, unsigned short* __restrict__ y, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const unsigned int u = (unsigned int)__float_as_int(x[i]);
        y[i] = (u & 0x7fffffffu) > 0x7f800000u ? (unsigned short)((u >> 16) | 0x40u)
                                               : (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
}

// launch: (ceil(n/256)) x 256
extern "C" __global__ void tr_accumulate(float* __restrict__ acc, const float* __restrict__ x, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) acc[i] += x[i];
}

// launch: (ceil(rows*cols/256)) x 256
extern "C" __global__ void tr_bias_add(float* __restrict__ y, const float* __restrict__ bias, int rows, int cols) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (long long)rows * cols) y[i] += bias[i % cols];
}

// launch: (ceil(cols/256)) x 256
extern "C" __global__ void tr_column_sums(const float* __restrict__ dy, float* __restrict__ out, int rows, int cols) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    double acc = 0.0;
    for (int r = 0; r < rows; ++r) acc += (double)dy[(long long)r * cols + j];
    out[j] = (float)acc;
}

// launch: (rows) x 256. lse[r] = log Σ exp(x_r) and loss[r] = lse − x[target] for counted rows
// (target != ignore), loss[r] = 0 otherwise.
extern "C" __global__ void tr_xent_rows(const float* __restrict__ logits, const long long* __restrict__ targets,
                                        double* __restrict__ lse, double* __restrict__ loss,
                                        int rows, int vocab, long long ignore) {
    __shared__ float fscratch[32];
    __shared__ double dscratch[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float* x = logits + (long long)r * vocab;
    float m = -__int_as_float(0x7f800000);
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) m = fmaxf(m, x[i]);
    m = tr_block_max(m, fscratch);
    double s = 0.0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) s += exp((double)x[i] - (double)m);
    s = tr_block_sum_d(s, dscratch);
    if (threadIdx.x == 0) {
        const double l = (double)m + log(s);
        lse[r] = l;
        const long long t = targets[r];
        loss[r] = (t != ignore && t >= 0 && t < vocab) ? l - (double)x[t] : 0.0;
    }
}

// launch: (1) x 256. out[0] = Σ loss (f32), out[1] = counted rows (f32).
extern "C" __global__ void tr_xent_sum(const double* __restrict__ loss, const long long* __restrict__ targets,
                                       float* __restrict__ out, int rows, int vocab, long long ignore) {
    __shared__ double scratch[32];
    double s = 0.0, n = 0.0;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
        const long long t = targets[r];
        if (t != ignore && t >= 0 && t < vocab) {
            s += loss[r];
            n += 1.0;
        }
    }
    s = tr_block_sum_d(s, scratch);
    n = tr_block_sum_d(n, scratch);
    if (threadIdx.x == 0) {
        out[0] = (float)s;
        out[1] = (float)n;
    }
}

// launch: (rows) x 256. dy is the scalar gradient of loss_sum, in device memory.
extern "C" __global__ void tr_xent_grad(const float* __restrict__ logits, const long long* __restrict__ targets,
                                        const double* __restrict__ lse, const float* __restrict__ dy,
                                        float* __restrict__ dx, int rows, int vocab, long long ignore) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    const long long t = targets[r];
    const bool counted = t != ignore && t >= 0 && t < vocab;
    const double scale = (double)dy[0], l = lse[r];
    const float* x = logits + (long long)r * vocab;
    float* g = dx + (long long)r * vocab;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        if (!counted) { g[i] = 0.0f; continue; }
        const double p = exp((double)x[i] - l);
        g[i] = (float)(scale * (i == t ? p - 1.0 : p));
    }
}

// launch: (120) x 256. partial[blockIdx.x] = Σ x² over a grid-stride slice.
extern "C" __global__ void tr_sumsq_partial(const float* __restrict__ x, long long n, double* __restrict__ partial) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const double v = x[i];
        s += v * v;
    }
    s = tr_block_sum_d(s, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// launch: (1) x 256. out[0] = Σ partial[0..count).
extern "C" __global__ void tr_sum_partials(const double* __restrict__ partial, int count, double* __restrict__ out) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
    s = tr_block_sum_d(s, scratch);
    if (threadIdx.x == 0) out[0] = s;
}

// launch: (ceil(n/256)) x 256. As the CPU's AdamW::update: moments and the step in double,
// stored f32; g is scaled by clip_scale (1 when not clipping) first, in f32.
extern "C" __global__ void tr_adamw(float* __restrict__ p, const float* __restrict__ grad,
                                    float* __restrict__ m, float* __restrict__ v, long long n,
                                    float clip_scale, double lr, double b1, double b2, double eps,
                                    float decay, double c1, double c2) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const double g = (double)(grad[i] * clip_scale);
    const float mi = (float)(b1 * (double)m[i] + (1.0 - b1) * g);
    const float vi = (float)(b2 * (double)v[i] + (1.0 - b2) * g * g);
    m[i] = mi;
    v[i] = vi;
    const double m_hat = (double)mi / c1, v_hat = (double)vi / c2;
    p[i] = __fmul_rn(p[i], decay) - (float)(lr * m_hat / (sqrt(v_hat) + eps));
}
"#;

/// The CUDA C++ source of every kernel in [`KERNELS`]: one module, no
/// include, compiled with the options of `nvrtc::options`.
pub fn train_basic_source() -> &'static str {
    SOURCE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_kernel_is_defined_once() {
        for (name, _) in KERNELS {
            let decl = format!("__global__ void {name}(");
            assert_eq!(train_basic_source().matches(&decl).count(), 1, "{name}");
        }
        assert_eq!(
            train_basic_source().matches("__global__").count(),
            KERNELS.len()
        );
    }
}
