//! GSA's chunked slot pass of a prefill.

use ligerc_ir::{LigerSpec, LigerVariant};

use super::super::basic::gate_expr;
use super::super::{KernelSrc, float_lit, value_tile};
use super::{CHUNK_THREADS, dims};

/// Shared memory of [`gsa_slots_prefill`] in floats.
fn slots_smem_floats(c: usize, d: usize, mt: usize) -> usize {
    2 * c * d + 2 * c * mt + d * mt + c * c
}

/// Chunk and shared memory bytes of [`gsa_slots_prefill`].
pub fn slots_chunk(spec: &LigerSpec, chunk: usize, limit: usize) -> (usize, usize) {
    let (d, mt) = (spec.head_dim, value_tile(spec.slots));
    let mut c = chunk.clamp(1, CHUNK_THREADS);
    while c > 16 && slots_smem_floats(c, d, mt) * 4 > limit {
        c /= 2;
    }
    (c, slots_smem_floats(c, d, mt) * 4)
}

/// GSA's slot pass, chunked: `logits_t = (q_t·Hk) ⊙ e^{b_t} + Σ_{s≤t} (q_t·k_s)(s_s ⊙ e^{b_t−b_s})`,
/// `Hk ← Hk·diag(e^{b_L}) + Σ_s k_sᵀ (s_s ⊙ e^{b_L−b_s})`.
pub fn gsa_slots_prefill(spec: &LigerSpec, chunk: usize, normalizer: f64) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let m = spec.slots;
    let mt = value_tile(m);
    let c = chunk;
    let smem = slots_smem_floats(c, d, mt) * 4;
    let name = format!("liger_gsa_slots_prefill_h{h}_kv{kv}_d{d}_m{m}_c{c}_mt{mt}");
    let gate = gate_expr(LigerVariant::Gsa, d, m, "slot", "(kr + t * D)", "0.0f");
    let body = format!(
        r#"constexpr int H = {h};
constexpr int HKV = {kv};
constexpr int G = {g};
constexpr int D = {d};
constexpr int M = {m};        // slots
constexpr int MT = {mt};       // slot columns per block
constexpr int C = {c};
constexpr int NT = {nt};
constexpr float NORM = {norm};

extern "C" __global__ void {name}(const bf16* __restrict__ q, const bf16* __restrict__ k,
        float* __restrict__ state_k, float* __restrict__ logits, int seq) {{
    extern __shared__ float smem[];
    float* kr = smem;            // [C][D] raw keys
    float* qr = kr + C * D;      // [C][D] raw queries of one head
    float* bc = qr + C * D;      // [C][MT] log-gates, then their cumsum
    float* sv = bc + C * MT;     // [C][MT] slot writes 1 - alpha
    float* Hk = sv + C * MT;     // [D][MT] key memory tile
    float* QK = Hk + D * MT;     // [C][C] q.k
    const int mt = blockIdx.x, j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    const int m0 = mt * MT;
    float* hk_ptr = state_k + (long long)(b * HKV + j) * D * M;
    for (int e = tid; e < D * MT; e += NT) Hk[e] = hk_ptr[(long long)(e / MT) * M + m0 + e % MT];
    for (int c0 = 0; c0 < seq; c0 += C) {{
        const int L = min(C, seq - c0);
        const long long row0 = (long long)b * seq + c0;
        __syncthreads();
        for (int e = tid; e < C * D; e += NT) {{
            const int t = e / D;
            kr[e] = t < L ? ld(k, (row0 + t) * (HKV * D) + j * D + e % D) : 0.0f;
        }}
        __syncthreads();
        for (int e = tid; e < C * MT; e += NT) {{
            const int t = e / MT, slot = m0 + e % MT;
            const float gamma = t < L ? {gate} : 0.0f;
            bc[e] = gamma;
            sv[e] = t < L ? -expm1f(gamma) : 0.0f;
        }}
        __syncthreads();
        cumsum_rows(bc, L, MT, MT);
        __syncthreads();
        for (int g = 0; g < G; ++g) {{
            const int h = j * G + g;
            for (int e = tid; e < C * D; e += NT) {{
                const int t = e / D;
                qr[e] = t < L ? ld(q, (row0 + t) * (H * D) + h * D + e % D) : 0.0f;
            }}
            __syncthreads();
            for (int e = tid; e < C * C; e += NT) {{
                const int t = e / C, s = e % C;
                float a = 0.0f;
                if (t < L && s <= t) {{
                    for (int i = 0; i < D; ++i) a += qr[t * D + i] * kr[s * D + i];
                }}
                QK[e] = a;
            }}
            __syncthreads();
            for (int e = tid; e < L * MT; e += NT) {{
                const int t = e / MT, c = e % MT;
                float inter = 0.0f;
                for (int i = 0; i < D; ++i) inter += qr[t * D + i] * Hk[i * MT + c];
                float o = inter * expf(bc[t * MT + c]);
                for (int s = 0; s <= t; ++s) o += QK[t * C + s] * sv[s * MT + c] * expf(bc[t * MT + c] - bc[s * MT + c]);
                logits[(row0 + t) * (H * M) + h * M + m0 + c] = o;
            }}
            __syncthreads();
        }}
        for (int e = tid; e < D * MT; e += NT) {{
            const int i = e / MT, c = e % MT;
            const float bl = bc[(L - 1) * MT + c];
            float acc = Hk[e] * expf(bl);
            for (int s = 0; s < L; ++s) acc += kr[s * D + i] * sv[s * MT + c] * expf(bl - bc[s * MT + c]);
            Hk[e] = acc;
        }}
    }}
    __syncthreads();
    for (int e = tid; e < D * MT; e += NT) hk_ptr[(long long)(e / MT) * M + m0 + e % MT] = Hk[e];
}}
"#,
        nt = CHUNK_THREADS,
        norm = float_lit(normalizer),
    );
    KernelSrc {
        name,
        summary: format!(
            "Liger GSA slot pass, prefill, chunk {c}: slot logits q·Hk over {m} slots, Hk carried"
        ),
        body,
        block: [CHUNK_THREADS as u32, 1, 1],
        smem: smem as u32,
        grid: format!(
            "({}, {kv}, batch): one block per (slot tile of {mt}, KV head, row)",
            m / mt
        ),
        params: vec![
            format!("q [tokens, {}] bf16 (raw)", h * d),
            format!("k [tokens, {}] bf16 (raw)", kv * d),
            format!("state_k [batch, {kv}, {d}, {m}] f32 (in/out: Hk)"),
            format!("logits [tokens, {}] f32 (out)", h * m),
            "seq".into(),
        ],
    }
}
