//! The window ring: the last `window + 1` rotated keys and values a decode step reads.

use ligerc_ir::LigerSpec;

use super::super::KernelSrc;

/// Copies the rotated keys and values of the last `window + 1` tokens into the ring.
pub fn ring_store(spec: &LigerSpec) -> KernelSrc {
    let (kv, d, w) = (spec.kv_heads, spec.head_dim, spec.window);
    let name = format!("liger_ring_store_kv{kv}_d{d}_w{w}");
    let body = format!(
        r#"constexpr int HKV = {kv};
constexpr int D = {d};
constexpr int NRING = {n};

// Block x stores token seq-1-x (if any) of KV head blockIdx.y, row blockIdx.z, at slot (pos0+t) % NRING.
extern "C" __global__ void {name}(const bf16* __restrict__ k_rot, const bf16* __restrict__ v,
        bf16* __restrict__ ring_k, bf16* __restrict__ ring_v, int seq, const int* __restrict__ pos0_ptr) {{
    const int pos0 = *pos0_ptr;  // device memory: one captured graph serves every step
    const int t = seq - 1 - (int)blockIdx.x, j = blockIdx.y, b = blockIdx.z;
    if (t < 0) return;
    const long long src = ((long long)b * seq + t) * (HKV * D) + j * D;
    const long long dst = ((long long)(b * HKV + j) * NRING + (pos0 + t) % NRING) * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {{
        ring_k[dst + i] = k_rot[src + i];
        ring_v[dst + i] = v[src + i];
    }}
}}
"#,
        n = w + 1
    );
    KernelSrc {
        name,
        summary: format!(
            "Liger window ring: keep the last {} rotated keys/values per KV head",
            w + 1
        ),
        body,
        block: [d.clamp(32, 128) as u32, 1, 1],
        smem: 0,
        grid: format!("({}, {kv}, batch)", w + 1),
        params: vec![
            format!("k_rot [tokens, {}] bf16", kv * d),
            format!("v [tokens, {}] bf16", kv * d),
            format!("ring_k [batch, {kv}, {}, {d}] bf16 (out)", w + 1),
            format!("ring_v [batch, {kv}, {}, {d}] bf16 (out)", w + 1),
            "seq".into(),
            "pos0 (const int*: device memory, read once)".into(),
        ],
    }
}
