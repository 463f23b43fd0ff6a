//! Row-wise and element-wise kernels: embedding gather, (residual add +)
//! RMSNorm, residual add, RoPE, SwiGLU, bias add, padding-mask row scaling,
//! f32 → bf16 cast, and the standalone Liger gate.

use ligerc_ir::{DType, GateSpec, LigerVariant, RopeSpec};

use super::{KernelSrc, c_type, float_lit, tag};
use crate::cuda::CudaError;

const ROW_BLOCK: u32 = 256;
const ELEM_BLOCK: u32 = 256;

/// `x[n, :] = f32(table[ids[n], :])`; an id outside `0..vocab` gives a zero row.
pub fn embedding(dim: usize, vocab: usize, ids: DType) -> Result<KernelSrc, CudaError> {
    let it = c_type(ids, "Embedding ids")?;
    let name = format!("embedding_v{vocab}_d{dim}_{}", tag(ids));
    let body = format!(
        r#"constexpr int D = {dim};
constexpr long long VOCAB = {vocab};

extern "C" __global__ void {name}(const {it}* __restrict__ ids, const bf16* __restrict__ table,
                                   float* __restrict__ x, int tokens) {{
    const int n = blockIdx.x;
    if (n >= tokens) return;
    const long long id = (long long)ids[n];
    float* row = x + (long long)n * D;
    if (id < 0 || id >= VOCAB) {{
        for (int i = threadIdx.x; i < D; i += blockDim.x) row[i] = 0.0f;
        return;
    }}
    const bf16* src = table + id * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) row[i] = ld(src, i);
}}
"#
    );
    Ok(KernelSrc {
        name,
        summary: format!(
            "embedding gather: x[n] = table[ids[n]] ({vocab}×{dim} bf16 table → f32 rows)"
        ),
        body,
        block: [ROW_BLOCK, 1, 1],
        smem: 0,
        grid: "(tokens, 1, 1): one block per token".into(),
        params: vec![
            format!("ids [tokens] {}", tag(ids)),
            format!("table [{vocab}, {dim}] bf16"),
            format!("x [tokens, {dim}] f32 (out)"),
            "tokens".into(),
        ],
    })
}

/// RMSNorm of each row, optionally after a residual add whose sum is kept:
/// `s = residual + delta` (f32, may alias `residual`), `y = bf16(w · s / √(mean(s²) + eps))`.
pub fn rmsnorm(
    dim: usize,
    eps: f64,
    x: DType,
    delta: Option<DType>,
) -> Result<KernelSrc, CudaError> {
    let xt = c_type(x, "RmsNorm input")?;
    let (name, params, load, head, summary) = match delta {
        Some(dt) => {
            let dtc = c_type(dt, "residual Add operand")?;
            (
                format!("add_rmsnorm_d{dim}_{}_{}", tag(x), tag(dt)),
                format!(
                    "const {xt}* residual, const {dtc}* __restrict__ delta, float* sum_out,\n        \
                     const float* __restrict__ w, bf16* __restrict__ y, int tokens"
                ),
                "const float v = ld(residual, row + i) + ld(delta, row + i);\n        sum_out[row + i] = v;",
                "sum_out[row + i]",
                format!(
                    "residual add + RMSNorm over {dim} features: s = residual + delta (kept, f32), y = bf16(w·s·rsqrt(mean(s²)+eps))"
                ),
            )
        }
        None => (
            format!("rmsnorm_d{dim}_{}", tag(x)),
            format!(
                "const {xt}* __restrict__ x, const float* __restrict__ w, bf16* __restrict__ y, int tokens"
            ),
            "const float v = ld(x, row + i);",
            "ld(x, row + i)",
            format!("RMSNorm over {dim} features: y = bf16(w·x·rsqrt(mean(x²)+eps))"),
        ),
    };
    let body = format!(
        r#"constexpr int D = {dim};
constexpr float EPS = {eps};

// `residual` and `sum_out` may be the same buffer: each element is read, then written, by one thread.
extern "C" __global__ void {name}({params}) {{
    __shared__ float scratch[32];
    const int n = blockIdx.x;
    if (n >= tokens) return;
    const long long row = (long long)n * D;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {{
        {load}
        ss += v * v;
    }}
    const float inv = 1.0f / sqrtf(block_sum(ss, scratch) / (float)D + EPS);
    for (int i = threadIdx.x; i < D; i += blockDim.x) st(y, row + i, w[i] * ({head} * inv));
}}
"#,
        eps = float_lit(eps)
    );
    let mut p = match delta {
        Some(dt) => vec![
            format!("residual [tokens, {dim}] {}", tag(x)),
            format!("delta [tokens, {dim}] {}", tag(dt)),
            format!("sum_out [tokens, {dim}] f32 (out; may alias residual)"),
        ],
        None => vec![format!("x [tokens, {dim}] {}", tag(x))],
    };
    p.extend([
        format!("w [{dim}] f32"),
        format!("y [tokens, {dim}] bf16 (out)"),
        "tokens".into(),
    ]);
    Ok(KernelSrc {
        name,
        summary,
        body,
        block: [ROW_BLOCK, 1, 1],
        smem: 0,
        grid: "(tokens, 1, 1): one block per row".into(),
        params: p,
    })
}

/// `out = a + b` element-wise over `[tokens, features]`, out f32.
pub fn add(features: usize, a: DType, b: DType) -> Result<KernelSrc, CudaError> {
    let (at, bt) = (c_type(a, "Add operand")?, c_type(b, "Add operand")?);
    let name = format!("add_f{features}_{}_{}", tag(a), tag(b));
    let body = format!(
        r#"constexpr long long F = {features};

extern "C" __global__ void {name}(const {at}* a, const {bt}* b, float* out, int tokens) {{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)tokens * F) return;
    out[i] = ld(a, i) + ld(b, i);
}}
"#
    );
    Ok(KernelSrc {
        name,
        summary: format!("residual add over {features} features: out = a + b (f32)"),
        body,
        block: [ELEM_BLOCK, 1, 1],
        smem: 0,
        grid: format!("(ceil(tokens·{features}/{ELEM_BLOCK}), 1, 1): one thread per element"),
        params: vec![
            format!("a [tokens, {features}] {}", tag(a)),
            format!("b [tokens, {features}] {}", tag(b)),
            format!("out [tokens, {features}] f32 (out; may alias a)"),
            "tokens".into(),
        ],
    })
}

/// RoPE, rotate-half convention, positions `pos0 + t`; the inverse frequencies are baked in.
pub fn rope(spec: &RopeSpec, x: DType) -> Result<KernelSrc, CudaError> {
    let xt = c_type(x, "Rope input")?;
    let (h, d) = (spec.heads, spec.head_dim);
    let name = format!("rope_h{h}_d{d}_{}", tag(x));
    let body = format!(
        r#"constexpr int HEADS = {h};
{freqs}
// y[i] = x[i]·cos θ − x[i+D/2]·sin θ, y[i+D/2] = x[i+D/2]·cos θ + x[i]·sin θ, θ = f32(pos)·inv_freq[i].
extern "C" __global__ void {name}(const {xt}* __restrict__ x, bf16* __restrict__ y, int tokens, int seq, const int* __restrict__ pos0_ptr) {{
    const int pos0 = *pos0_ptr;  // device memory: one captured graph serves every step
    const int n = blockIdx.x;
    if (n >= tokens) return;
    const float pos = (float)(pos0 + n % seq);
    const long long base = (long long)n * HEADS * D;
    for (int e = threadIdx.x; e < HEADS * HALF; e += blockDim.x) {{
        const int head = e / HALF, i = e % HALF;
        float s, c;
        sincosf(pos * INV_FREQ[i], &s, &c);
        const long long at = base + head * D + i;
        const float x1 = ld(x, at), x2 = ld(x, at + HALF);
        st(y, at, x1 * c - x2 * s);
        st(y, at + HALF, x2 * c + x1 * s);
    }}
}}
"#,
        freqs = rope_freqs(spec),
    );
    Ok(KernelSrc {
        name,
        summary: format!("rotary embedding (rotate-half) of {h} heads × {d}, positions pos0 + t"),
        body,
        block: [128, 1, 1],
        smem: 0,
        grid: "(tokens, 1, 1): one block per token".into(),
        params: vec![
            format!("x [tokens, {}] {}", h * d, tag(x)),
            format!("y [tokens, {}] bf16 (out)", h * d),
            "tokens".into(),
            "seq (token n is at position pos0 + n % seq)".into(),
            "pos0 (const int*: device memory, read once)".into(),
        ],
    })
}

/// The frequency constants of a RoPE kernel: `D`, `HALF`, `INV_FREQ`.
fn rope_freqs(spec: &RopeSpec) -> String {
    let inv: Vec<String> = spec.inv_freq().iter().map(|&f| float_lit(f)).collect();
    format!(
        r#"constexpr int D = {d};
constexpr int HALF = D / 2;
// inv_freq[i] (theta {theta}{scaling}), as transformers computes it, rounded to f32.
__constant__ float INV_FREQ[HALF] = {{{inv}}};
"#,
        d = spec.head_dim,
        theta = spec.theta,
        scaling = match spec.scaling {
            ligerc_ir::RopeScaling::None => "",
            ligerc_ir::RopeScaling::Linear { .. } => ", linear scaling",
            ligerc_ir::RopeScaling::Llama3 { .. } => ", llama3 scaling",
        },
        inv = inv.join(", ")
    )
}

/// Two rotary embeddings of the same frequencies in one launch (a layer's queries, `a`,
/// and keys, `b`): one block per token rotates the `a` heads, then the `b` heads. The
/// caller ([`crate::cuda::fuse`]'s `RopePair`) checks that the frequencies agree.
pub fn rope_pair(a: &RopeSpec, xa: DType, b: &RopeSpec, xb: DType) -> Result<KernelSrc, CudaError> {
    let (at, bt) = (c_type(xa, "Rope input")?, c_type(xb, "Rope input")?);
    let (ha, hb, d) = (a.heads, b.heads, a.head_dim);
    let name = format!("rope2_h{ha}_h{hb}_d{d}_{}_{}", tag(xa), tag(xb));
    let body = format!(
        r#"constexpr int HA = {ha};  // heads of the first input
constexpr int HB = {hb};  // heads of the second
{freqs}
template <typename T>
__device__ __forceinline__ void rotate(const T* x, bf16* y, long long at, float c, float s) {{
    const float x1 = ld(x, at), x2 = ld(x, at + HALF);
    st(y, at, x1 * c - x2 * s);
    st(y, at + HALF, x2 * c + x1 * s);
}}

// As rope_*: y[i] = x[i]·cos θ − x[i+D/2]·sin θ, y[i+D/2] = x[i+D/2]·cos θ + x[i]·sin θ,
// θ = f32(pos)·inv_freq[i], for HA heads of xa then HB heads of xb.
extern "C" __global__ void {name}(const {at}* __restrict__ xa, bf16* __restrict__ ya,
        const {bt}* __restrict__ xb, bf16* __restrict__ yb, int tokens, int seq, const int* __restrict__ pos0_ptr) {{
    const int pos0 = *pos0_ptr;  // device memory: one captured graph serves every step
    const int n = blockIdx.x;
    if (n >= tokens) return;
    const float pos = (float)(pos0 + n % seq);
    for (int e = threadIdx.x; e < (HA + HB) * HALF; e += blockDim.x) {{
        const int head = e / HALF, i = e % HALF;
        float s, c;
        sincosf(pos * INV_FREQ[i], &s, &c);
        if (head < HA) rotate(xa, ya, (long long)n * HA * D + head * D + i, c, s);
        else rotate(xb, yb, (long long)n * HB * D + (head - HA) * D + i, c, s);
    }}
}}
"#,
        freqs = rope_freqs(a),
    );
    Ok(KernelSrc {
        name,
        summary: format!(
            "rotary embedding (rotate-half) of {ha} + {hb} heads × {d} (two tensors, one launch), positions pos0 + t"
        ),
        body,
        block: [128, 1, 1],
        smem: 0,
        grid: "(tokens, 1, 1): one block per token".into(),
        params: vec![
            format!("xa [tokens, {}] {}", ha * d, tag(xa)),
            format!("ya [tokens, {}] bf16 (out)", ha * d),
            format!("xb [tokens, {}] {}", hb * d, tag(xb)),
            format!("yb [tokens, {}] bf16 (out)", hb * d),
            "tokens".into(),
            "seq (token n is at position pos0 + n % seq)".into(),
            "pos0 (const int*: device memory, read once)".into(),
        ],
    })
}

/// `out = silu(gate) · up`, bf16 out.
pub fn swiglu(features: usize, gate: DType, up: DType) -> Result<KernelSrc, CudaError> {
    let (gt, ut) = (c_type(gate, "SwiGlu gate")?, c_type(up, "SwiGlu up")?);
    let name = format!("swiglu_f{features}_{}_{}", tag(gate), tag(up));
    let body = format!(
        r#"constexpr long long F = {features};

extern "C" __global__ void {name}(const {gt}* __restrict__ gate, const {ut}* __restrict__ up,
                                   bf16* __restrict__ out, int tokens) {{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)tokens * F) return;
    const float g = ld(gate, i);
    const float sigmoid = 1.0f / (1.0f + expf(-g));
    st(out, i, g * sigmoid * ld(up, i));
}}
"#
    );
    Ok(KernelSrc {
        name,
        summary: format!("SwiGLU over {features} features: out = bf16(silu(gate)·up)"),
        body,
        block: [ELEM_BLOCK, 1, 1],
        smem: 0,
        grid: format!("(ceil(tokens·{features}/{ELEM_BLOCK}), 1, 1)"),
        params: vec![
            format!("gate [tokens, {features}] {}", tag(gate)),
            format!("up [tokens, {features}] {}", tag(up)),
            format!("out [tokens, {features}] bf16 (out)"),
            "tokens".into(),
        ],
    })
}

/// `y[n, f] += bias[f]` in place.
pub fn bias_add(features: usize, y: DType) -> Result<KernelSrc, CudaError> {
    let yt = c_type(y, "Linear output")?;
    let name = format!("bias_add_f{features}_{}", tag(y));
    let body = format!(
        r#"constexpr long long F = {features};

extern "C" __global__ void {name}({yt}* __restrict__ y, const float* __restrict__ bias, int tokens) {{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)tokens * F) return;
    st(y, i, ld(y, i) + bias[i % F]);
}}
"#
    );
    Ok(KernelSrc {
        name,
        summary: format!("bias add over {features} features, in place"),
        body,
        block: [ELEM_BLOCK, 1, 1],
        smem: 0,
        grid: format!("(ceil(tokens·{features}/{ELEM_BLOCK}), 1, 1)"),
        params: vec![
            format!("y [tokens, {features}] {} (in/out)", tag(y)),
            format!("bias [{features}] f32"),
            "tokens".into(),
        ],
    })
}

/// `y[n, :] = x[n, :] · mask[n]` (the exporters' `v ⊙ attention_mask[..., None]`).
pub fn mask_rows(features: usize, x: DType, mask: DType) -> Result<KernelSrc, CudaError> {
    let (xt, mt) = (
        c_type(x, "masked operand")?,
        c_type(mask, "attention mask")?,
    );
    let name = format!("mask_rows_f{features}_{}_{}", tag(x), tag(mask));
    let body = format!(
        r#"constexpr long long F = {features};

extern "C" __global__ void {name}(const {xt}* x, const {mt}* __restrict__ mask, {xt}* y, int tokens) {{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)tokens * F) return;
    st(y, i, ld(x, i) * (float)mask[i / F]);
}}
"#
    );
    Ok(KernelSrc {
        name,
        summary: format!("padding mask: y[n] = x[n]·mask[n] over {features} features"),
        body,
        block: [ELEM_BLOCK, 1, 1],
        smem: 0,
        grid: format!("(ceil(tokens·{features}/{ELEM_BLOCK}), 1, 1)"),
        params: vec![
            format!("x [tokens, {features}] {}", tag(x)),
            format!("mask [tokens] {}", tag(mask)),
            format!("y [tokens, {features}] {} (out; may alias x)", tag(x)),
            "tokens".into(),
        ],
    })
}

/// `y = bf16(x)` over `[tokens, features]`.
pub fn cast_bf16(features: usize) -> KernelSrc {
    let name = format!("cast_bf16_f{features}");
    let body = format!(
        r#"constexpr long long F = {features};

extern "C" __global__ void {name}(const float* __restrict__ x, bf16* __restrict__ y, int tokens) {{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)tokens * F) return;
    st(y, i, x[i]);
}}
"#
    );
    KernelSrc {
        name,
        summary: format!("f32 → bf16 over {features} features (a GEMM operand)"),
        body,
        block: [ELEM_BLOCK, 1, 1],
        smem: 0,
        grid: format!("(ceil(tokens·{features}/{ELEM_BLOCK}), 1, 1)"),
        params: vec![
            format!("x [tokens, {features}] f32"),
            format!("y [tokens, {features}] bf16 (out)"),
            "tokens".into(),
        ],
    }
}

/// The code computing the log-gate of one KV head into `gam[0..width]` from
/// its raw key channels `kr[0..D]` (`D = head_dim`), for one row held in
/// registers/shared memory; `row_mean` must hold the row's mean for retention.
pub(crate) fn gate_expr(
    variant: LigerVariant,
    head_dim: usize,
    width: usize,
    i: &str,
    kr: &str,
    row_mean: &str,
) -> String {
    gate_expr_with(variant, head_dim, width, i, kr, row_mean, "logsigmoid")
}

/// [`gate_expr`] calling the device function `logsig` for `log(sigmoid(·))` (`logsigmoid`,
/// or `logsigmoid_fast` from the fast intrinsics).
pub(crate) fn gate_expr_with(
    variant: LigerVariant,
    head_dim: usize,
    width: usize,
    i: &str,
    kr: &str,
    row_mean: &str,
    logsig: &str,
) -> String {
    match variant {
        LigerVariant::Gsa => format!(
            "[&]() {{ const int lo = {i} * {head_dim} / {width}, hi = (({i} + 1) * {head_dim} + {width} - 1) / {width}; \
             float s = 0.0f; for (int c = lo; c < hi; ++c) s += {kr}[c]; return {logsig}(s / (float)(hi - lo)) / NORM; }}()"
        ),
        LigerVariant::Retention => format!("{logsig}({row_mean}) / NORM"),
        LigerVariant::Linear | LigerVariant::SwaOnly => "0.0f".into(),
        LigerVariant::Gla | LigerVariant::Hgrn2 => format!("{logsig}({kr}[{i}]) / NORM"),
    }
}

/// The standalone `LigerGate`: `gate[n, j·W + m]` from `k [tokens, kv_heads·D]`.
pub fn liger_gate(spec: &GateSpec, k: DType) -> Result<KernelSrc, CudaError> {
    let kt = c_type(k, "LigerGate key")?;
    let (kv, d, w) = (spec.kv_heads, spec.head_dim, spec.width());
    let name = format!(
        "liger_gate_{}_kv{kv}_d{d}_w{w}_{}",
        spec.variant.name().replace('-', "_"),
        tag(k)
    );
    let expr = gate_expr(spec.variant, d, w, "m", "kr", "mean");
    let body = format!(
        r#"constexpr int HKV = {kv};
constexpr int D = {d};
constexpr int W = {w};
constexpr float NORM = {norm};

// One block per token; warp `j` (looping) handles KV head j.
extern "C" __global__ void {name}(const {kt}* __restrict__ k, float* __restrict__ gate, int tokens) {{
    __shared__ float krow[HKV * D];
    const int n = blockIdx.x;
    if (n >= tokens) return;
    for (int e = threadIdx.x; e < HKV * D; e += blockDim.x) krow[e] = ld(k, (long long)n * HKV * D + e);
    __syncthreads();
    const int lane = threadIdx.x & 31;
    for (int j = threadIdx.x >> 5; j < HKV; j += blockDim.x >> 5) {{
        const float* kr = krow + j * D;
{mean}
        for (int m = lane; m < W; m += 32) gate[(long long)n * HKV * W + j * W + m] = {expr};
    }}
}}
"#,
        norm = float_lit(spec.normalizer),
        mean = if spec.variant == LigerVariant::Retention {
            "        float mean = 0.0f;\n        for (int c = lane; c < D; c += 32) mean += kr[c];\n        mean = warp_sum(mean) / (float)D;"
        } else {
            ""
        }
    );
    Ok(KernelSrc {
        name,
        summary: format!(
            "Liger gate ({}) of {kv} KV heads × {d} → {w} log-gates per head",
            spec.variant
        ),
        body,
        block: [128, 1, 1],
        smem: 0,
        grid: "(tokens, 1, 1)".into(),
        params: vec![
            format!("k [tokens, {}] {}", kv * d, tag(k)),
            format!("gate [tokens, {}] f32 (out)", kv * w),
            "tokens".into(),
        ],
    })
}
