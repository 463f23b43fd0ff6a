//! Sampling the next token from the last position's logits of each row.

use super::KernelSrc;

const THREADS: u32 = 1024;
/// The largest `top_k` the top-k kernel accepts.
pub const TOP_K_MAX: usize = 64;

const BEST: &str = r#"// (value, index) order: larger value first, smaller index first on ties.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
    return v > bv || (v == bv && i < bi);
}

// Block-wide best (value, index); `sv`, `si` are 32 entries of shared memory each.
__device__ __forceinline__ void block_best(float& v, int& i, float* sv, int* si) {
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (better(ov, oi, v, i)) { v = ov; i = oi; }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) { sv[warp] = v; si[warp] = i; }
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? sv[lane] : neg_inf();
        i = lane < warps ? si[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, v, o);
            const int oi = __shfl_xor_sync(0xffffffffu, i, o);
            if (better(ov, oi, v, i)) { v = ov; i = oi; }
        }
        if (lane == 0) { sv[0] = v; si[0] = i; }
    }
    __syncthreads();
    v = sv[0];
    i = si[0];
}
"#;

/// Greedy: `next_ids[b] = argmax(logits[b, seq−1, :])`, first index on ties.
pub fn argmax(vocab: usize) -> KernelSrc {
    let name = format!("argmax_v{vocab}");
    let body = format!(
        r#"constexpr int V = {vocab};

{BEST}
extern "C" __global__ void {name}(const float* __restrict__ logits, long long* __restrict__ next_ids, int seq) {{
    __shared__ float sv[32];
    __shared__ int si[32];
    const int b = blockIdx.x;
    const float* row = logits + ((long long)b * seq + seq - 1) * V;
    float v = neg_inf();
    int i = 0x7fffffff;
    for (int x = threadIdx.x; x < V; x += blockDim.x) {{
        const float y = row[x];
        if (better(y, x, v, i)) {{ v = y; i = x; }}
    }}
    block_best(v, i, sv, si);
    if (threadIdx.x == 0) next_ids[b] = i == 0x7fffffff ? 0 : i;
}}
"#
    );
    KernelSrc {
        name,
        summary: format!("greedy sampling: argmax over {vocab} logits of each row's last position"),
        body,
        block: [THREADS, 1, 1],
        smem: 0,
        grid: "(batch, 1, 1)".into(),
        params: vec![
            format!("logits [tokens, {vocab}] f32"),
            "next_ids [batch] i64 (out)".into(),
            "seq".into(),
        ],
    }
}

/// Top-k sampling with temperature; `k` is clamped to `1..=TOP_K_MAX`, a
/// temperature ≤ 0 picks the best. The uniform draw is a hash of (seed, step, row).
pub fn top_k(vocab: usize) -> KernelSrc {
    let name = format!("top_k_v{vocab}_k{TOP_K_MAX}");
    let body = format!(
        r#"constexpr int V = {vocab};
constexpr int KMAX = {TOP_K_MAX};

{BEST}
__device__ __forceinline__ unsigned long long splitmix64(unsigned long long z) {{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}}

extern "C" __global__ void {name}(const float* __restrict__ logits, long long* __restrict__ next_ids, int seq,
        int top_k, float temperature, unsigned long long seed, const unsigned long long* __restrict__ step_ptr) {{
    const unsigned long long step = *step_ptr;  // device memory (advanced by the runtime)
    __shared__ float sv[32];
    __shared__ int si[32];
    __shared__ float top_v[KMAX];
    __shared__ int top_i[KMAX];
    const int b = blockIdx.x;
    const int k = min(max(top_k, 1), KMAX);
    const float* row = logits + ((long long)b * seq + seq - 1) * V;
    // k rounds of block argmax, each below the previous pick in (value, index) order.
    float pv = 0.0f;
    int pi = -1;
    for (int r = 0; r < k; ++r) {{
        float v = neg_inf();
        int i = 0x7fffffff;
        for (int x = threadIdx.x; x < V; x += blockDim.x) {{
            const float y = row[x];
            const bool below = pi < 0 || better(pv, pi, y, x);
            if (below && better(y, x, v, i)) {{ v = y; i = x; }}
        }}
        block_best(v, i, sv, si);
        if (threadIdx.x == 0) {{ top_v[r] = v; top_i[r] = i; }}
        pv = v;
        pi = i;
    }}
    if (threadIdx.x != 0) return;
    int pick = top_i[0];
    if (temperature > 0.0f) {{
        float total = 0.0f;
        for (int r = 0; r < k; ++r) if (top_i[r] != 0x7fffffff) total += expf((top_v[r] - top_v[0]) / temperature);
        const unsigned long long h = splitmix64(seed ^ splitmix64(step ^ splitmix64((unsigned long long)b)));
        float u = (float)(h >> 40) * (1.0f / 16777216.0f) * total;
        for (int r = 0; r < k; ++r) {{
            if (top_i[r] == 0x7fffffff) break;
            pick = top_i[r];
            u -= expf((top_v[r] - top_v[0]) / temperature);
            if (u < 0.0f) break;
        }}
    }}
    next_ids[b] = pick == 0x7fffffff ? 0 : pick;
}}
"#
    );
    KernelSrc {
        name,
        summary: format!(
            "top-k (≤ {TOP_K_MAX}) sampling with temperature over {vocab} logits of each row's last position"
        ),
        body,
        block: [THREADS, 1, 1],
        smem: 0,
        grid: "(batch, 1, 1)".into(),
        params: vec![
            format!("logits [tokens, {vocab}] f32"),
            "next_ids [batch] i64 (out)".into(),
            "seq".into(),
            format!("top_k (clamped to 1..={TOP_K_MAX})"),
            "temperature (≤ 0: greedy)".into(),
            "seed".into(),
            "step (const unsigned long long*: device memory)".into(),
        ],
    }
}
