//! Softmax attention for the layers a hybrid keeps: the KV cache (rotated keys
//! and values per KV head, `[batch, kv_heads, max_seq, D]` bf16), an optional
//! key mask `[batch, max_seq]` fed from the padding-mask input, and one kernel
//! serving both prefill and decode (a decode step is a prefill of one token).

use ligerc_ir::{AttentionSpec, DType};

use super::{KernelSrc, c_type, float_lit, tag};
use crate::cuda::CudaError;

const WARPS: usize = 4;

/// Writes this call's rotated keys and values at positions `pos0 ..` of the cache.
pub fn kv_store(spec: &AttentionSpec) -> KernelSrc {
    let (kv, d) = (spec.kv_heads, spec.head_dim);
    let name = format!("kv_store_kv{kv}_d{d}");
    let body = format!(
        r#"constexpr int HKV = {kv};
constexpr int D = {d};

// Positions at or past max_seq are dropped (the runtime checks pos0 + seq <= max_seq first).
extern "C" __global__ void {name}(const bf16* __restrict__ k_rot, const bf16* __restrict__ v,
        bf16* __restrict__ cache_k, bf16* __restrict__ cache_v, int seq, const int* __restrict__ pos0_ptr, int max_seq) {{
    const int pos0 = *pos0_ptr;  // device memory: one captured graph serves every step
    const int t = blockIdx.x, j = blockIdx.y, b = blockIdx.z;
    const int p = pos0 + t;
    if (t >= seq || p >= max_seq) return;
    const long long src = ((long long)b * seq + t) * (HKV * D) + j * D;
    const long long dst = ((long long)(b * HKV + j) * max_seq + p) * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {{
        cache_k[dst + i] = k_rot[src + i];
        cache_v[dst + i] = v[src + i];
    }}
}}
"#
    );
    KernelSrc {
        name,
        summary: format!("KV cache append: {kv} KV heads × {d} at positions pos0 + t"),
        body,
        block: [d.clamp(32, 128) as u32, 1, 1],
        smem: 0,
        grid: format!("(seq, {kv}, batch)"),
        params: vec![
            format!("k_rot [tokens, {}] bf16", kv * d),
            format!("v [tokens, {}] bf16", kv * d),
            format!("cache_k [batch, {kv}, max_seq, {d}] bf16 (out)"),
            format!("cache_v [batch, {kv}, max_seq, {d}] bf16 (out)"),
            "seq".into(),
            "pos0 (const int*: device memory, read once)".into(),
            "max_seq".into(),
        ],
    }
}

/// Copies the padding mask of this call into the persistent key mask.
pub fn mask_store(mask: DType) -> Result<KernelSrc, CudaError> {
    let mt = c_type(mask, "attention mask")?;
    let name = format!("key_mask_store_{}", tag(mask));
    let body = format!(
        r#"extern "C" __global__ void {name}(const {mt}* __restrict__ mask, unsigned char* __restrict__ key_mask,
        int tokens, int seq, const int* __restrict__ pos0_ptr, int max_seq) {{
    const int pos0 = *pos0_ptr;  // device memory: one captured graph serves every step
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= tokens) return;
    const int b = n / seq, p = pos0 + n % seq;
    if (p < max_seq) key_mask[(long long)b * max_seq + p] = mask[n] != ({mt})0 ? 1 : 0;
}}
"#
    );
    Ok(KernelSrc {
        name,
        summary: "padding mask → persistent key mask (1 = attend) at positions pos0 + t".into(),
        body,
        block: [256, 1, 1],
        smem: 0,
        grid: "(ceil(tokens/256), 1, 1)".into(),
        params: vec![
            format!("mask [tokens] {}", tag(mask)),
            "key_mask [batch, max_seq] u8 (out)".into(),
            "tokens".into(),
            "seq".into(),
            "pos0 (const int*: device memory, read once)".into(),
            "max_seq".into(),
        ],
    })
}

/// Causal (or full) softmax attention of this call's queries over the cache.
pub fn attention(spec: &AttentionSpec, masked: bool) -> KernelSrc {
    let (h, kv, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    let g = h / kv.max(1);
    let name = format!(
        "attention_h{h}_kv{kv}_d{d}{}{}",
        if spec.causal { "_causal" } else { "_full" },
        if masked { "_masked" } else { "" }
    );
    let mask_param = if masked {
        "const unsigned char* __restrict__ key_mask, "
    } else {
        ""
    };
    let mask_test = if masked {
        " && key_mask[(long long)b * max_seq + key] != 0"
    } else {
        ""
    };
    let last = if spec.causal {
        "p"
    } else {
        "min(pos0 + seq, max_seq) - 1"
    };
    let body = format!(
        r#"constexpr int H = {h};
constexpr int HKV = {kv};
constexpr int G = {g};
constexpr int D = {d};
constexpr int WARPS = {warps};
constexpr int DPL = (D + 31) / 32;
constexpr float SCALE = {scale};

// Query t of row b sits at position p = pos0 + t and sees cached keys 0 ..= {last_doc}.
// A query that sees no key (all masked) gets zeros, as on the CPU.
extern "C" __global__ void {name}(const bf16* __restrict__ q_rot, const bf16* __restrict__ cache_k,
        const bf16* __restrict__ cache_v, {mask_param}bf16* __restrict__ out, int seq, const int* __restrict__ pos0_ptr, int max_seq) {{
    const int pos0 = *pos0_ptr;  // device memory: one captured graph serves every step
    __shared__ float qs[WARPS][D];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int t = blockIdx.x * WARPS + warp, h = blockIdx.y, b = blockIdx.z, j = h / G;
    if (t >= seq) return;  // warp-uniform; no block-wide barrier below
    const long long row = (long long)b * seq + t;
    for (int i = lane; i < D; i += 32) qs[warp][i] = ld(q_rot, row * (H * D) + h * D + i);
    __syncwarp();
    const int p = pos0 + t;
    const int hi = min({last}, max_seq - 1);
    const bf16* keys = cache_k + (long long)(b * HKV + j) * max_seq * D;
    const bf16* vals = cache_v + (long long)(b * HKV + j) * max_seq * D;
    float m = neg_inf(), l = 0.0f, acc[DPL];
    for (int r = 0; r < DPL; ++r) acc[r] = 0.0f;
    for (int c0 = 0; c0 <= hi; c0 += 32) {{
        const int key = c0 + lane;
        const bool valid = key <= hi{mask_test};
        float s = neg_inf();
        if (valid) {{
            float dot = 0.0f;
            for (int i = 0; i < D; ++i) dot += qs[warp][i] * ld(keys, (long long)key * D + i);
            s = dot * SCALE;
        }}
        const float m_new = fmaxf(m, warp_max(s));
        if (m_new == neg_inf()) continue;  // every key of this block is masked
        const float corr = m == m_new ? 1.0f : expf(m - m_new);
        const float e = valid ? expf(s - m_new) : 0.0f;
        l = l * corr + warp_sum(e);
        for (int r = 0; r < DPL; ++r) acc[r] *= corr;
        const int nk = min(32, hi - c0 + 1);
        for (int kk = 0; kk < nk; ++kk) {{
            const float pk = __shfl_sync(0xffffffffu, e, kk);
            if (pk == 0.0f) continue;
            for (int r = 0; r < DPL; ++r) {{
                const int i = lane + 32 * r;
                if (i < D) acc[r] += pk * ld(vals, (long long)(c0 + kk) * D + i);
            }}
        }}
        m = m_new;
    }}
    for (int r = 0; r < DPL; ++r) {{
        const int i = lane + 32 * r;
        if (i < D) st(out, row * (H * D) + h * D + i, l > 0.0f ? acc[r] / l : 0.0f);
    }}
    (void)p;
}}
"#,
        warps = WARPS,
        scale = float_lit(spec.scale),
        last_doc = if spec.causal { "p" } else { "pos0 + seq - 1" },
    );
    KernelSrc {
        name,
        summary: format!(
            "softmax attention ({}, GQA {h}/{kv}, D {d}, scale {}) over the KV cache{}",
            if spec.causal { "causal" } else { "full" },
            spec.scale,
            if masked { ", key mask" } else { "" }
        ),
        body,
        block: [(32 * WARPS) as u32, 1, 1],
        smem: 0,
        grid: format!("(ceil(seq/{WARPS}), {h}, batch): one warp per (token, head)"),
        params: {
            let mut p = vec![
                format!("q_rot [tokens, {}] bf16", h * d),
                format!("cache_k [batch, {kv}, max_seq, {d}] bf16"),
                format!("cache_v [batch, {kv}, max_seq, {d}] bf16"),
            ];
            if masked {
                p.push("key_mask [batch, max_seq] u8".into());
            }
            p.extend([
                format!("out [tokens, {}] bf16 (out)", h * d),
                "seq".into(),
                "pos0 (const int*: device memory, read once)".into(),
                "max_seq".into(),
            ]);
            p
        },
    }
}
