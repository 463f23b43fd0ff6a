//! The single-token decode step of LigerAttention: one kernel per layer.

use ligerc_ir::{LigerSpec, LigerVariant};

use super::super::basic::gate_expr;
use super::super::{KernelSrc, float_lit, value_tile};
use super::{dims, vname};

const DECODE_THREADS: usize = 256;

/// The window branch of a decode step for `G` heads, `VT` output columns per lane
/// block (`VT ≤ 32`) starting at `col0`, writing `wout[g·VT + c]`; then the ring push.
/// The window branch of the keyed decode step with the window's keys and values staged in
/// shared memory by the whole block (coalesced 2-byte loads), one thread per (head, key)
/// score, one warp per head softmax, one thread per (head, column) weighted sum.
fn decode_window_staged() -> String {
    r#"    {
        // window branch: keys pos-W .. pos (ring + this step's k_rot/v) staged in shared memory
        constexpr int DP = D + 2;  // bf16 row pitch: row-per-thread reads hit distinct banks
        __shared__ bf16 wk[NRING * DP];
        __shared__ bf16 wv[NRING * DP];
        __shared__ float wp[G * NRING];
        const bf16* k_cur = k_rot + (long long)b * HKV * D + j * D;
        const bf16* v_cur = v + (long long)b * HKV * D + j * D;
        const int lo = max(0, pos - W), nk = pos - lo + 1;
        for (int e = tid; e < nk * D; e += NT) {
            const int r = e / D, i = e % D, key = lo + r;
            const long long at = (long long)(key % NRING) * D + i;
            wk[r * DP + i] = key == pos ? k_cur[i] : ring_kh_w[at];
            wv[r * DP + i] = key == pos ? v_cur[i] : ring_vh_w[at];
        }
        __syncthreads();
        for (int e = tid; e < G * nk; e += NT) {
            const int g = e / nk, r = e % nk;
            const float* qg = qrot + g * D;
            const bf16* kr_s = wk + r * DP;
            float dot = 0.0f;
            for (int i = 0; i < D; ++i) dot += qg[i] * __bfloat162float(kr_s[i]);
            wp[g * NRING + r] = dot * SCALE;
        }
        __syncthreads();
        for (int g = warp; g < G; g += NW) {
            float m = neg_inf();
            for (int r = lane; r < nk; r += 32) m = fmaxf(m, wp[g * NRING + r]);
            m = warp_max(m);
            float l = 0.0f;
            for (int r = lane; r < nk; r += 32) {
                const float e = expf(wp[g * NRING + r] - m);
                wp[g * NRING + r] = e;
                l += e;
            }
            l = warp_sum(l);
            const float inv = 1.0f / l;
            for (int r = lane; r < nk; r += 32) wp[g * NRING + r] *= inv;
        }
        __syncthreads();
        for (int e = tid; e < G * VT; e += NT) {
            const int g = e / VT, c = e % VT;
            float a = 0.0f;
            for (int r = 0; r < nk; ++r) a += wp[g * NRING + r] * __bfloat162float(wv[r * DP + col0 + c]);
            wout[g * VT + c] = a;
        }
        // push this token into slot pos % NRING (this block's columns); that slot held
        // position pos-W-1, which no query reads
        const long long slot = (long long)(pos % NRING) * D;
        for (int c = tid; c < VT; c += NT) {
            ring_kh_w[slot + col0 + c] = k_cur[col0 + c];
            ring_vh_w[slot + col0 + c] = v_cur[col0 + c];
        }
    }
"#
    .to_string()
}

fn decode_window(cols: &str, lanes_per_col: bool) -> String {
    let acc_decl = if lanes_per_col {
        "float a = 0.0f;"
    } else {
        "float a[DPL];\n            for (int r = 0; r < DPL; ++r) a[r] = 0.0f;"
    };
    let scale_acc = if lanes_per_col {
        "a *= corr;"
    } else {
        "for (int r = 0; r < DPL; ++r) a[r] *= corr;"
    };
    let accumulate = if lanes_per_col {
        "if (lane < VT) a += pk * ld(vp, col0 + lane);".to_string()
    } else {
        "for (int r = 0; r < DPL; ++r) {\n                        const int i = lane + 32 * r;\n                        if (i < D) a[r] += pk * ld(vp, i);\n                    }".to_string()
    };
    let finish = if lanes_per_col {
        "if (lane < VT) wout[g * VT + lane] = a / l;".to_string()
    } else {
        "for (int r = 0; r < DPL; ++r) {\n                const int i = lane + 32 * r;\n                if (i < D) wout[g * D + i] = a[r] / l;\n            }".to_string()
    };
    format!(
        r#"    {{
        // window branch: keys pos-W .. pos-1 from the ring, pos itself from this step's k_rot/v
        const bf16* k_cur = k_rot + (long long)b * HKV * D + j * D;
        const bf16* v_cur = v + (long long)b * HKV * D + j * D;
        const bf16* ring_kh = ring_k + (long long)(b * HKV + j) * NRING * D;
        const bf16* ring_vh = ring_v + (long long)(b * HKV + j) * NRING * D;
        const int lo = max(0, pos - W);
        for (int g = warp; g < G; g += NW) {{
            const float* qg = qrot + g * D;
            float m = neg_inf(), l = 0.0f;
            {acc_decl}
            for (int c0 = lo; c0 <= pos; c0 += 32) {{
                const int key = c0 + lane;
                const bool valid = key <= pos;
                float s = neg_inf();
                if (valid) {{
                    const bf16* kp = key == pos ? k_cur : ring_kh + (key % NRING) * D;
                    float dot = 0.0f;
                    for (int i = 0; i < D; ++i) dot += qg[i] * ld(kp, i);
                    s = dot * SCALE;
                }}
                const float m_new = fmaxf(m, warp_max(s));
                const float corr = m == m_new ? 1.0f : expf(m - m_new);
                const float e = valid ? expf(s - m_new) : 0.0f;
                l = l * corr + warp_sum(e);
                {scale_acc}
                const int nk = min(32, pos - c0 + 1);
                for (int kk = 0; kk < nk; ++kk) {{
                    const float pk = __shfl_sync(0xffffffffu, e, kk);
                    const int key_k = c0 + kk;
                    const bf16* vp = key_k == pos ? v_cur : ring_vh + (key_k % NRING) * D;
                    {accumulate}
                }}
                m = m_new;
            }}
            {finish}
        }}
        // push this token into slot pos % NRING ({cols}); that slot held position pos-W-1, which no query reads
        const long long slot = (long long)(pos % NRING) * D;
        for (int c = tid; c < {ncols}; c += NT) {{
            ring_kh_w[slot + {c_off}c] = k_cur[{c_off}c];
            ring_vh_w[slot + {c_off}c] = v_cur[{c_off}c];
        }}
    }}
"#,
        ncols = if lanes_per_col { "VT" } else { "D" },
        c_off = if lanes_per_col { "col0 + " } else { "" },
    )
}

/// One decode step of a key-gated (or swa-only) Liger layer: gate and feature
/// maps, window branch over the ring plus the token, ring push, state update in
/// place `S ← diag(α)S + k̃ᵀv`, `o = q̃S`, mix.
pub fn decode_keyed(spec: &LigerSpec, normalizer: f64) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let variant = spec.variant;
    let w = spec.window;
    let vt = value_tile(d);
    let window = spec.mix_window != 0.0 || variant == LigerVariant::SwaOnly;
    let grm = variant != LigerVariant::SwaOnly;
    let name = format!(
        "liger_{}_decode_h{h}_kv{kv}_d{d}_w{w}_vt{vt}{}",
        vname(variant),
        if window { "" } else { "_nowin" }
    );
    let gate_code = if grm {
        let mean = if variant == LigerVariant::Retention {
            "    __shared__ float scratch[32];\n    float part_sum = 0.0f;\n    for (int i = tid; i < D; i += NT) part_sum += kr[i];\n    const float mean = block_sum(part_sum, scratch) / (float)D;\n"
        } else {
            ""
        };
        let gexpr = gate_expr(variant, d, d, "i", "kr", "mean");
        let kmap = match variant {
            LigerVariant::Hgrn2 => {
                "    for (int i = tid; i < D; i += NT) kf[i] = -expm1f(gam[i]);\n"
            }
            _ => {
                "    for (int i = tid; i < D; i += NT) kf[i] = kr[i];\n    __syncthreads();\n    softmax_rows(kf, 1, D);\n"
            }
        };
        format!(
            "{mean}    for (int i = tid; i < D; i += NT) gam[i] = {gexpr};\n    __syncthreads();\n{kmap}    softmax_rows(qf, G, D);\n    __syncthreads();\n"
        )
    } else {
        String::new()
    };
    // Static shared memory of the kernel without / with the staged window (bytes).
    let nw = DECODE_THREADS / 32;
    let base_smem = 4 * (2 * g * d + 3 * d + nw * g * vt + g * vt);
    let staged_smem = 2 * 2 * (w + 1) * (d + 2) + 4 * g * (w + 1);
    let window_code = if window && base_smem + staged_smem <= 46 * 1024 {
        decode_window_staged()
    } else if window {
        decode_window("this block's columns", true)
    } else {
        String::new()
    };
    let grm_code = if grm {
        r#"    // recurrent branch: lane = column of the tile, warps split the state's rows
    float acc[G];
    for (int g = 0; g < G; ++g) acc[g] = 0.0f;
    if (lane < VT) {
        const float vc = ld(v, (long long)b * HKV * D + j * D + col0 + lane);
        float* srow = state + (long long)(b * HKV + j) * D * D + col0 + lane;
        for (int i = warp; i < D; i += NW) {
            const float s = expf(gam[i]) * srow[(long long)i * D] + kf[i] * vc;
            srow[(long long)i * D] = s;
            for (int g = 0; g < G; ++g) acc[g] += qf[g * D + i] * s;
        }
        for (int g = 0; g < G; ++g) part[(warp * G + g) * VT + lane] = acc[g];
    }
"#
    } else {
        ""
    };
    let out_expr = match (window, grm) {
        (true, true) => "MIX_WIN * wout[e] + MIX_LIN * o",
        (false, true) => "MIX_LIN * o",
        _ => "MIX_WIN * wout[e]",
    };
    let o_sum = if grm {
        "        float o = 0.0f;\n        for (int w = 0; w < NW; ++w) o += part[(w * G + g) * VT + c];\n"
    } else {
        ""
    };
    let gates = if grm {
        "    __shared__ float qf[G * D];      // feature-mapped queries\n    __shared__ float kr[D];          // raw key\n    __shared__ float kf[D];          // mapped key\n    __shared__ float gam[D];         // log-gate\n    __shared__ float part[NW * G * VT];\n"
    } else {
        ""
    };
    let wdecl = if window {
        "    __shared__ float qrot[G * D];    // rotated queries\n    __shared__ float wout[G * VT];   // window branch\n    bf16* ring_kh_w = ring_k + (long long)(b * HKV + j) * NRING * D;\n    bf16* ring_vh_w = ring_v + (long long)(b * HKV + j) * NRING * D;\n"
    } else {
        ""
    };
    let loads = format!(
        "    for (int e = tid; e < G * D; e += NT) {{\n        const long long at = (long long)b * H * D + (j * G + e / D) * D + e % D;\n{}{}    }}\n{}",
        if grm {
            "        qf[e] = ld(q, at);\n"
        } else {
            ""
        },
        if window {
            "        qrot[e] = ld(q_rot, at);\n"
        } else {
            ""
        },
        if grm {
            "    for (int i = tid; i < D; i += NT) kr[i] = ld(k, (long long)b * HKV * D + j * D + i);\n"
        } else {
            ""
        },
    );
    let unused_q = if grm {
        ""
    } else {
        "    (void)q; (void)k; (void)state;\n"
    };
    let unused_w = if window {
        ""
    } else {
        "    (void)q_rot; (void)k_rot; (void)ring_k; (void)ring_v; (void)pos;\n"
    };
    let body = format!(
        r#"constexpr int H = {h};
constexpr int HKV = {kv};
constexpr int G = {g};
constexpr int D = {d};
constexpr int VT = {vt};
[[maybe_unused]] constexpr int W = {w};
[[maybe_unused]] constexpr int NRING = W + 1;
constexpr int NT = {nt};
constexpr int NW = NT / 32;
[[maybe_unused]] constexpr float SCALE = {scale};
[[maybe_unused]] constexpr float NORM = {norm};
[[maybe_unused]] constexpr float MIX_WIN = {mix_win};
[[maybe_unused]] constexpr float MIX_LIN = {mix_lin};

// One token per row (tokens = batch). The state is updated in place; the ring gets this token.
extern "C" __global__ void {name}(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
        const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot, float* __restrict__ state,
        bf16* __restrict__ ring_k, bf16* __restrict__ ring_v, bf16* __restrict__ out, const int* __restrict__ pos_ptr) {{
    const int pos = *pos_ptr;  // device memory: one captured graph serves every step
{gates}    const int vt = blockIdx.x, j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    [[maybe_unused]] const int warp = tid >> 5, lane = tid & 31;
    const int col0 = vt * VT;
{wdecl}{unused_q}{unused_w}{loads}    __syncthreads();
{gate_code}{window_code}{grm_code}    __syncthreads();
    for (int e = tid; e < G * VT; e += NT) {{
        const int g = e / VT, c = e % VT;
{o_sum}        out[(long long)b * H * D + (j * G + g) * D + col0 + c] = __float2bfloat16({out_expr});
    }}
}}
"#,
        nt = DECODE_THREADS,
        scale = float_lit(1.0 / (d as f64).sqrt()),
        norm = float_lit(normalizer),
        mix_win = float_lit(spec.mix_window),
        mix_lin = float_lit(spec.mix_linear),
    );
    KernelSrc {
        name,
        summary: format!(
            "Liger {variant} decode step: gate + feature maps, window over the ring ({} keys), state update in place, mix",
            w + 1
        ),
        body,
        block: [DECODE_THREADS as u32, 1, 1],
        smem: 0,
        grid: format!(
            "({}, {kv}, batch): one block per (value tile of {vt} columns, KV head, row)",
            d / vt
        ),
        params: vec![
            format!("q [batch, {}] bf16 (raw)", h * d),
            format!("k [batch, {}] bf16 (raw)", kv * d),
            format!("v [batch, {}] bf16", kv * d),
            format!("q_rot [batch, {}] bf16", h * d),
            format!("k_rot [batch, {}] bf16", kv * d),
            format!("state [batch, {kv}, {d}, {d}] f32 (in/out)"),
            format!("ring_k [batch, {kv}, {}, {d}] bf16 (in/out)", w + 1),
            format!("ring_v [batch, {kv}, {}, {d}] bf16 (in/out)", w + 1),
            format!("out [batch, {}] bf16 (out)", h * d),
            "pos (const int*: device memory, the position of this token)".into(),
        ],
    }
}

/// One decode step of a GSA layer: one block per (KV head, row).
pub fn decode_gsa(spec: &LigerSpec, normalizer: f64) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let (m, w) = (spec.slots, spec.window);
    let window = spec.mix_window != 0.0;
    let name = format!(
        "liger_gsa_decode_h{h}_kv{kv}_d{d}_m{m}_w{w}{}",
        if window { "" } else { "_nowin" }
    );
    let gate = gate_expr(LigerVariant::Gsa, d, m, "i", "kr", "0.0f");
    let window_code = if window {
        decode_window("all columns", false)
    } else {
        String::new()
    };
    let wdecl = if window {
        "    __shared__ float qrot[G * D];\n    __shared__ float wout[G * D];\n    bf16* ring_kh_w = ring_k + (long long)(b * HKV + j) * NRING * D;\n    bf16* ring_vh_w = ring_v + (long long)(b * HKV + j) * NRING * D;\n    for (int e = tid; e < G * D; e += NT) qrot[e] = ld(q_rot, (long long)b * H * D + j * G * D + e);\n"
    } else {
        "    (void)q_rot; (void)k_rot; (void)ring_k; (void)ring_v; (void)pos;\n"
    };
    let out_expr = if window {
        "MIX_WIN * wout[g * D + c] + MIX_LIN * o[g]"
    } else {
        "MIX_LIN * o[g]"
    };
    let body = format!(
        r#"constexpr int H = {h};
constexpr int HKV = {kv};
constexpr int G = {g};
constexpr int D = {d};
constexpr int M = {m};
[[maybe_unused]] constexpr int W = {w};
[[maybe_unused]] constexpr int NRING = W + 1;
constexpr int NT = {nt};
[[maybe_unused]] constexpr int NW = NT / 32;
[[maybe_unused]] constexpr int DPL = (D + 31) / 32;
[[maybe_unused]] constexpr float SCALE = {scale};
constexpr float NORM = {norm};
[[maybe_unused]] constexpr float MIX_WIN = {mix_win};
constexpr float MIX_LIN = {mix_lin};

// Hk_t = Hk diag(e^g) + k^T s;  p = softmax_M(q Hk);  Hv_t = diag(e^g) Hv + s^T v;  o = p Hv.
extern "C" __global__ void {name}(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
        const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot, float* __restrict__ state_k,
        float* __restrict__ state_v, bf16* __restrict__ ring_k, bf16* __restrict__ ring_v,
        bf16* __restrict__ out, const int* __restrict__ pos_ptr) {{
    const int pos = *pos_ptr;  // device memory: one captured graph serves every step
    __shared__ float qr[G * D];
    __shared__ float kr[D];
    __shared__ float gam[M];
    __shared__ float sv[M];
    __shared__ float lg[G * M];
    const int j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    const int warp = tid >> 5, lane = tid & 31;
    const int col0 = 0;
    (void)warp; (void)lane; (void)col0;
{wdecl}    for (int e = tid; e < G * D; e += NT) qr[e] = ld(q, (long long)b * H * D + j * G * D + e);
    for (int i = tid; i < D; i += NT) kr[i] = ld(k, (long long)b * HKV * D + j * D + i);
    __syncthreads();
    for (int i = tid; i < M; i += NT) {{
        gam[i] = {gate};
        sv[i] = -expm1f(gam[i]);
    }}
    __syncthreads();
{window_code}    float* hk = state_k + (long long)(b * HKV + j) * D * M;
    float* hv = state_v + (long long)(b * HKV + j) * M * D;
    for (int s = tid; s < M; s += NT) {{
        const float decay = expf(gam[s]);
        float acc[G];
        for (int g = 0; g < G; ++g) acc[g] = 0.0f;
        for (int i = 0; i < D; ++i) {{
            const float x = hk[(long long)i * M + s] * decay + kr[i] * sv[s];
            hk[(long long)i * M + s] = x;
            for (int g = 0; g < G; ++g) acc[g] += qr[g * D + i] * x;
        }}
        for (int g = 0; g < G; ++g) lg[g * M + s] = acc[g];
    }}
    __syncthreads();
    softmax_rows(lg, G, M);
    __syncthreads();
    for (int c = tid; c < D; c += NT) {{
        const float vc = ld(v, (long long)b * HKV * D + j * D + c);
        float o[G];
        for (int g = 0; g < G; ++g) o[g] = 0.0f;
        for (int s = 0; s < M; ++s) {{
            const float x = expf(gam[s]) * hv[(long long)s * D + c] + sv[s] * vc;
            hv[(long long)s * D + c] = x;
            for (int g = 0; g < G; ++g) o[g] += lg[g * M + s] * x;
        }}
        for (int g = 0; g < G; ++g) out[(long long)b * H * D + (j * G + g) * D + c] = __float2bfloat16({out_expr});
    }}
}}
"#,
        nt = DECODE_THREADS,
        scale = float_lit(1.0 / (d as f64).sqrt()),
        norm = float_lit(normalizer),
        mix_win = float_lit(spec.mix_window),
        mix_lin = float_lit(spec.mix_linear),
    );
    KernelSrc {
        name,
        summary: format!(
            "Liger GSA decode step ({m} slots): window over the ring, slot and value passes in place, mix"
        ),
        body,
        block: [DECODE_THREADS as u32, 1, 1],
        smem: 0,
        grid: format!("(1, {kv}, batch): one block per (KV head, row)"),
        params: vec![
            format!("q [batch, {}] bf16 (raw)", h * d),
            format!("k [batch, {}] bf16 (raw)", kv * d),
            format!("v [batch, {}] bf16", kv * d),
            format!("q_rot [batch, {}] bf16", h * d),
            format!("k_rot [batch, {}] bf16", kv * d),
            format!("state_k [batch, {kv}, {d}, {m}] f32 (in/out: Hk)"),
            format!("state_v [batch, {kv}, {m}, {d}] f32 (in/out: Hv)"),
            format!("ring_k [batch, {kv}, {}, {d}] bf16 (in/out)", w + 1),
            format!("ring_v [batch, {kv}, {}, {d}] bf16 (in/out)", w + 1),
            format!("out [batch, {}] bf16 (out)", h * d),
            "pos (const int*: device memory)".into(),
        ],
    }
}
