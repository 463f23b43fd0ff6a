//! `LigerGate` training kernels (f32): the gate `logsigmoid(pool(k))/n` and
//! its backward `dk = Σ_bins dgate · σ(−mean)/n/|bin|` (the CPU reference is
//! `runtime/src/ops/liger/gate.rs` and `runtime/src/ops/grad/liger/mod.rs`).
//! One warp per (token, KV head); both kernels overwrite their output.

use ligerc_ir::{GateSpec, LigerVariant};

use super::{TrainArg, TrainLaunch, grid_dim};
use crate::cuda::CudaError;
use crate::cuda::kernels::basic::gate_expr;
use crate::cuda::kernels::{PRELUDE, float_lit};

/// Warps (units of (token, KV head)) per block.
const UNITS: usize = 8;

fn check(spec: &GateSpec) -> Result<(), CudaError> {
    let node = format!("LigerGate({})", spec.variant);
    let shape = |problem: String| {
        Err(CudaError::Shape {
            node: node.clone(),
            problem,
        })
    };
    if !spec.variant.has_gate() {
        return Err(CudaError::Unsupported {
            node,
            reason: format!("variant {} has no gate", spec.variant),
        });
    }
    if spec.kv_heads == 0 || spec.head_dim == 0 {
        return shape(format!(
            "kv_heads ({}) and head_dim ({}) must be > 0",
            spec.kv_heads, spec.head_dim
        ));
    }
    if spec.variant == LigerVariant::Gsa && !(1..=spec.head_dim).contains(&spec.slots) {
        return shape(format!(
            "GSA needs 1..={} slots, has {}",
            spec.head_dim, spec.slots
        ));
    }
    if !(spec.normalizer.is_finite() && spec.normalizer > 0.0) {
        return shape(format!(
            "the normalizer must be finite and positive, is {}",
            spec.normalizer
        ));
    }
    Ok(())
}

fn prefix(spec: &GateSpec) -> String {
    format!(
        "liger_train_gate_{}_kv{}_d{}_w{}",
        spec.variant.name().replace('-', "_"),
        spec.kv_heads,
        spec.head_dim,
        spec.width()
    )
}

/// The channel gradient of one lane's channel `c` from the bins holding it.
fn backward_expr(variant: LigerVariant) -> &'static str {
    match variant {
        LigerVariant::Gsa => {
            r#"// bins i with floor(i D/M) <= c < ceil((i+1) D/M): i = floor(c M/D) and maybe the next
            const int first = c * WIDTH / D;
            for (int i = first; i <= first + 1 && i < WIDTH; ++i) {
                const int lo = i * D / WIDTH, hi = ((i + 1) * D + WIDTH - 1) / WIDTH;
                if (c < lo || c >= hi) continue;
                float s = 0.0f;
                for (int x = lo; x < hi; ++x) s += kr[x];
                acc += dg[i] * sigmoidf(-s / (float)(hi - lo)) / NORM / (float)(hi - lo);
            }"#
        }
        LigerVariant::Retention => "acc = dg[0] * sigmoidf(-mean) / NORM / (float)D;",
        _ => "acc = dg[c] * sigmoidf(-kr[c]) / NORM;",
    }
}

/// CUDA C++ source of the gate's forward and backward kernels for `spec`.
pub fn gate_train_source(spec: &GateSpec) -> Result<String, CudaError> {
    check(spec)?;
    let p = prefix(spec);
    let mean = if spec.variant == LigerVariant::Retention {
        "float part = 0.0f;\n    for (int c = lane; c < D; c += 32) part += kr[c];\n    mean = warp_sum(part) / (float)D;"
    } else {
        ""
    };
    Ok(format!(
        r#"#include <cuda_bf16.h>
{PRELUDE}
// ---- LigerGate training ({variant})
constexpr int HKV = {kv};
constexpr int D = {d};
constexpr int WIDTH = {width};     // gates per KV head
constexpr int UNITS = {units};      // warps per block: one (token, KV head) each
constexpr float NORM = {norm};

__device__ __forceinline__ float sigmoidf(float x) {{
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}}

// The (token row, KV head) of this warp, or false past the end.
__device__ __forceinline__ bool gate_unit(int batch, int seq, long long& row, int& j) {{
    const long long unit = (long long)blockIdx.x * UNITS + (threadIdx.x >> 5);
    if (unit >= (long long)batch * seq * HKV) return false;
    row = unit / HKV;
    j = (int)(unit % HKV);
    return true;
}}

// gate[row, j*WIDTH + i] = logsigmoid(pooled k)/NORM. Grid ceil(batch*seq*HKV / UNITS).
extern "C" __global__ void {p}_fwd(const float* __restrict__ k, float* __restrict__ gate, int batch, int seq) {{
    long long row;
    int j;
    if (!gate_unit(batch, seq, row, j)) return;  // warp-uniform
    const int lane = threadIdx.x & 31;
    const float* kr = k + row * (HKV * D) + j * D;
    [[maybe_unused]] float mean = 0.0f;
    {mean}
    for (int i = lane; i < WIDTH; i += 32) gate[row * (HKV * WIDTH) + j * WIDTH + i] = {fwd};
}}

// dk = d gate/d k applied to dgate (d logsigmoid(x)/dx = sigmoid(-x); pooled bins spread evenly).
extern "C" __global__ void {p}_bwd(const float* __restrict__ k, const float* __restrict__ dgate,
        float* __restrict__ dk, int batch, int seq) {{
    long long row;
    int j;
    if (!gate_unit(batch, seq, row, j)) return;  // warp-uniform
    const int lane = threadIdx.x & 31;
    const float* kr = k + row * (HKV * D) + j * D;
    const float* dg = dgate + row * (HKV * WIDTH) + j * WIDTH;
    [[maybe_unused]] float mean = 0.0f;
    {mean}
    for (int c = lane; c < D; c += 32) {{
        float acc = 0.0f;
        {bwd}
        dk[row * (HKV * D) + j * D + c] = acc;
    }}
}}
"#,
        variant = spec.variant,
        kv = spec.kv_heads,
        d = spec.head_dim,
        width = spec.width(),
        units = UNITS,
        norm = float_lit(spec.normalizer),
        fwd = gate_expr(spec.variant, spec.head_dim, spec.width(), "i", "kr", "mean"),
        bwd = backward_expr(spec.variant),
    ))
}

fn gate_launch(
    spec: &GateSpec,
    batch: usize,
    seq: usize,
    kind: &str,
    args: Vec<TrainArg>,
) -> Result<Vec<TrainLaunch>, CudaError> {
    check(spec)?;
    let units = batch
        .checked_mul(seq)
        .and_then(|n| n.checked_mul(spec.kv_heads));
    let Some(units) = units.filter(|&u| u > 0) else {
        return Ok(Vec::new());
    };
    let node = format!("LigerGate({})", spec.variant);
    Ok(vec![TrainLaunch {
        kernel: format!("{}_{kind}", prefix(spec)),
        grid: (grid_dim(units.div_ceil(UNITS), &node)?, 1, 1),
        block: (32 * UNITS) as u32,
        dynamic_smem: 0,
        args,
    }])
}

/// The gate forward: `K → Gate` (empty for an empty batch or sequence).
pub fn gate_forward_launches(
    spec: &GateSpec,
    batch: usize,
    seq: usize,
) -> Result<Vec<TrainLaunch>, CudaError> {
    use TrainArg::*;
    gate_launch(spec, batch, seq, "fwd", vec![K, Gate, Batch, Seq])
}

/// The gate backward: `K, DGate → DK` (DK overwritten).
pub fn gate_backward_launches(
    spec: &GateSpec,
    batch: usize,
    seq: usize,
) -> Result<Vec<TrainLaunch>, CudaError> {
    use TrainArg::*;
    gate_launch(spec, batch, seq, "bwd", vec![K, DGate, DK, Batch, Seq])
}
