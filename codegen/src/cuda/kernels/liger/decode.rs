//! The single-token decode step of LigerAttention: one kernel per layer.

use ligerc_ir::{LigerSpec, LigerVariant};

use super::super::CP_ASYNC;
use super::super::basic::gate_expr;
use super::super::{KernelSrc, float_lit, value_tile};
use super::decode_bulk::decode_keyed_bulk;
use super::{dims, vname};

const DECODE_THREADS: usize = 256;

/// Static shared memory the keyed decode step may use (bytes; the hardware's static
/// limit is 48 KiB).
const DECODE_SMEM: usize = 46 * 1024;

/// Shared memory (static and dynamic) the keyed decode step may use when the window does
/// not fit [`DECODE_SMEM`]: three blocks still share an SM (228 KiB).
const DECODE_SMEM_BLOCK: usize = 72 * 1024;

/// The window branch of the GSA decode step for `G` heads over all `D` columns, one
/// warp per head (online softmax, each lane's keys read from global memory), writing
/// `wout[g·D + c]`; then the ring push.
fn decode_window_gsa() -> String {
    r#"    {
        // window branch: keys pos-W .. pos-1 from the ring, pos itself from this step's k_rot/v
        const bf16* k_cur = k_rot + (long long)b * HKV * D + j * D;
        const bf16* v_cur = v + (long long)b * HKV * D + j * D;
        const bf16* ring_kh = ring_k + (long long)(b * HKV + j) * NRING * D;
        const bf16* ring_vh = ring_v + (long long)(b * HKV + j) * NRING * D;
        const int lo = max(0, pos - W);
        for (int g = warp; g < G; g += NW) {
            const float* qg = qrot + g * D;
            float m = neg_inf(), l = 0.0f;
            float a[DPL];
            for (int r = 0; r < DPL; ++r) a[r] = 0.0f;
            for (int c0 = lo; c0 <= pos; c0 += 32) {
                const int key = c0 + lane;
                const bool valid = key <= pos;
                float s = neg_inf();
                if (valid) {
                    const bf16* kp = key == pos ? k_cur : ring_kh + (key % NRING) * D;
                    float dot = 0.0f;
                    for (int i = 0; i < D; ++i) dot += qg[i] * ld(kp, i);
                    s = dot * SCALE;
                }
                const float m_new = fmaxf(m, warp_max(s));
                const float corr = m == m_new ? 1.0f : expf(m - m_new);
                const float e = valid ? expf(s - m_new) : 0.0f;
                l = l * corr + warp_sum(e);
                for (int r = 0; r < DPL; ++r) a[r] *= corr;
                const int nk = min(32, pos - c0 + 1);
                for (int kk = 0; kk < nk; ++kk) {
                    const float pk = __shfl_sync(0xffffffffu, e, kk);
                    const int key_k = c0 + kk;
                    const bf16* vp = key_k == pos ? v_cur : ring_vh + (key_k % NRING) * D;
                    for (int r = 0; r < DPL; ++r) {
                        const int i = lane + 32 * r;
                        if (i < D) a[r] += pk * ld(vp, i);
                    }
                }
                m = m_new;
            }
            for (int r = 0; r < DPL; ++r) {
                const int i = lane + 32 * r;
                if (i < D) wout[g * D + i] = a[r] / l;
            }
        }
        // push this token into slot pos % NRING (all columns); that slot held position pos-W-1, which no query reads
        const long long slot = (long long)(pos % NRING) * D;
        for (int c = tid; c < D; c += NT) {
            ring_kh_w[slot + c] = k_cur[c];
            ring_vh_w[slot + c] = v_cur[c];
        }
    }
"#
    .to_string()
}

/// The launch shape and shared-memory layout of [`decode_keyed_threads`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeyedLayout {
    /// State (and output) columns per pass: the value tile of `D`.
    cs: usize,
    /// Adjacent state columns per thread (one 16-, 8- or 4-byte load).
    vec: usize,
    /// Threads per block.
    nt: usize,
    /// Window keys per staged chunk (a multiple of 16; the whole window when it fits).
    kc: usize,
    /// bf16 per staging load.
    bv: usize,
    /// Whether the scores use tensor cores (`wmma` bf16 16×16×16; `D` a multiple of 16).
    tc: bool,
    /// Staged rotated-query rows (`G`, padded to the wmma tile).
    qr: usize,
    /// Row pitch (floats) of a chunk's scores.
    gs: usize,
    /// Whether the per-warp output sums reuse the staged keys' shared memory.
    part_in_keys: bool,
    /// Staged value rows: the window's `W + 1` when it is staged at once (the key rows
    /// are padded to the 16-row tile, the values need not be), else `kc`.
    vr: usize,
    /// Static shared memory (bytes).
    fixed: usize,
    /// Dynamic shared memory (bytes): the window's scores, keys, rotated queries and
    /// values; above 48 KiB whenever static and dynamic together are (the runtime then
    /// raises the kernel's limit).
    smem: usize,
}

impl KeyedLayout {
    fn new(g: usize, d: usize, w: usize, window: bool, grm: bool, retention: bool) -> Self {
        let cs = value_tile(d);
        let vec = cs.min(4);
        let tpr = cs / vec;
        let nt = (d * tpr).next_multiple_of(32).clamp(32, DECODE_THREADS);
        let bv = cs.min(8);
        let dp = d + bv;
        let tc = d.is_multiple_of(16);
        let qr = if tc { g.next_multiple_of(16) } else { g };
        let gs = qr;
        // Two buffers of per-warp sums (the passes alternate).
        let part = 4 * 2 * (nt / 32) * g * cs;
        let mut fixed = 0;
        if grm {
            fixed += 4 * ((g + 1) * d + 3 * d) + if retention { 4 * 32 } else { 0 };
        }
        if !window {
            return KeyedLayout {
                cs,
                vec,
                nt,
                kc: 0,
                bv,
                tc,
                qr,
                gs,
                part_in_keys: false,
                vr: 0,
                fixed,
                smem: 0,
            };
        }
        fixed += if grm { 4 * g * d } else { 0 } + 4 * 4 * g;
        // The dynamic part: per staged key its row of keys, values and scores.
        let per_key = 2 * dp + 2 * d + 4 * gs;
        let qbytes = 2 * qr * dp;
        let cap = DECODE_SMEM_BLOCK.saturating_sub(fixed + part);
        let whole = (w + 1).next_multiple_of(16);
        let (kc, vr) = if qbytes + whole * (per_key - 2 * d) + (w + 1) * 2 * d <= cap {
            (whole, w + 1)
        } else {
            let kc = (cap.saturating_sub(qbytes) / per_key / 16 * 16).max(16);
            (kc, kc)
        };
        let part_in_keys = 2 * kc * dp >= part;
        if !part_in_keys {
            fixed += part;
        }
        let mut smem = qbytes + kc * (per_key - 2 * d) + vr * 2 * d;
        if fixed + smem > DECODE_SMEM && smem <= 48 * 1024 {
            smem = 48 * 1024 + 16;
        }
        KeyedLayout {
            cs,
            vec,
            nt,
            kc,
            bv,
            tc,
            qr,
            gs,
            part_in_keys,
            vr,
            fixed,
            smem,
        }
    }

    /// Blocks of this layout an sm_90 SM holds by shared memory (228 KiB, 1 KiB reserved a
    /// block).
    #[cfg(test)]
    fn blocks_by_smem(&self) -> usize {
        228 * 1024 / (self.fixed + self.smem + 1024)
    }
}

/// The decode step of a key-gated (or swa-only) Liger layer: [`decode_keyed_bulk`] (the
/// window and the state moved by sm_90 bulk copies) where it applies (a window, `D` 128,
/// `G` ≤ 8 with `16·G ≤ W+1`), else [`decode_keyed_threads`]. `LIGERC_CUDA_DECODE=threads`
/// at code generation keeps the latter everywhere (GPUs before sm_90 need it: the bulk
/// kernel does not compile for them).
pub fn decode_keyed(spec: &LigerSpec, normalizer: f64) -> KernelSrc {
    let threads = std::env::var("LIGERC_CUDA_DECODE").is_ok_and(|v| v == "threads");
    match (threads, decode_keyed_bulk(spec, normalizer)) {
        (false, Some(k)) => k,
        _ => decode_keyed_threads(spec, normalizer),
    }
}

/// One decode step of a key-gated (or swa-only) Liger layer: gate and feature maps,
/// window branch over the ring plus the token, ring push, state update in place
/// `S ← diag(α)S + k̃ᵀv`, `o = q̃S`, mix.
///
/// One block per (KV head, row) for all `G` query heads of that KV head: the window
/// work (loads of q/k, feature maps, gate, staging the `W+1` keys and values, scores,
/// softmax, `pV` over all `D` columns) is done once per head, then the state is
/// streamed in `D/CS` column passes of `CS` columns (the value tile). Each thread holds
/// `RPT` rows × `VEC` columns of a pass (16-byte loads and stores); the first pass's
/// state is loaded with the window's inputs, the second's once the window is staged,
/// and each pass issues the loads of the pass two ahead as soon as its own registers are
/// free, so two passes (32 KB at `D` 128) are in flight per block while the window is
/// computed and the passes run. The window's keys and values are staged in shared
/// memory (dynamic) in ring-slot order, so the first chunk's loads do not wait for
/// `pos`; the scores take tensor cores when `D` is a multiple of 16 (the keys are the
/// `A` tiles, the rotated queries the `B` tile); a window too long for the shared
/// memory is walked in chunks of `KC` keys with an online softmax. The ring push
/// happens after a barrier that follows the block's only reads of that slot. Each
/// pass's partial sums of its `G × CS` outputs are added over the warp's lanes by
/// shuffles and over the warps through shared memory (two buffers: one barrier a pass).
pub fn decode_keyed_threads(spec: &LigerSpec, normalizer: f64) -> KernelSrc {
    let (h, kv, g, d) = dims(spec);
    let variant = spec.variant;
    let w = spec.window;
    let window = spec.mix_window != 0.0 || variant == LigerVariant::SwaOnly;
    let grm = variant != LigerVariant::SwaOnly;
    let retention = variant == LigerVariant::Retention;
    // The gate reads the raw key (linear has none).
    let raw_key = grm && variant != LigerVariant::Linear;
    let lay = KeyedLayout::new(g, d, w, window, grm, retention);
    let KeyedLayout {
        cs,
        vec,
        nt,
        kc,
        bv,
        tc,
        qr,
        gs,
        part_in_keys,
        vr,
        fixed: _,
        smem,
    } = lay;
    // Three blocks of 256 threads an SM (80 registers a thread); two (128) when the
    // per-thread sums of G heads would not fit beside two passes of state. (Four blocks of
    // 64 registers, passes of 16 columns at D 128, one wave at batch 64: slower on an H100,
    // 47.7 against 43.3 µs at batch 64 and 156 against 132 at batch 256 — docs/CUDA.md.)
    let min_blocks = if g * vec > 16 { 2 } else { 3 };
    // The state's first two passes are loaded with the window's inputs, unless the
    // window is staged in several chunks (their loads would not fit the registers too).
    let early = !window || kc > w;
    let name = format!(
        "liger_{}_decode_h{h}_kv{kv}_d{d}_w{w}_vt{cs}{}",
        vname(variant),
        if window { "" } else { "_nowin" }
    );
    let mut src = String::new();
    let mut put = |s: &str| src.push_str(s);
    if window && tc {
        put("#include <mma.h>\nusing namespace nvcuda;\n\n");
        put(CP_ASYNC);
    }
    put(&format!(
        r#"constexpr int H = {h};
constexpr int HKV = {kv};
constexpr int G = {g};
constexpr int D = {d};
constexpr int CS = {cs};  // state and output columns of a pass (the value tile)
[[maybe_unused]] constexpr int NP = D / CS;  // column passes over the state
constexpr int VEC = {vec};  // adjacent state columns per thread: one {vbytes}-byte load
constexpr int TPR = CS / VEC;  // threads per state row
constexpr int NT = {nt};
constexpr int NW = NT / 32;
constexpr int MIN_BLOCKS = {min_blocks} * 256 / NT;  // resident blocks per SM the registers must allow ({min_warps} warps)
constexpr int RP = NT / TPR;  // state rows per pass of the block
[[maybe_unused]] constexpr int RPT = (D + RP - 1) / RP;  // state rows per thread and pass
[[maybe_unused]] constexpr int W = {w};
[[maybe_unused]] constexpr int NRING = W + 1;
[[maybe_unused]] constexpr int KC = {kc};  // window keys per staged chunk (a multiple of 16)
[[maybe_unused]] constexpr int VR = {vr};  // staged value rows (the window's keys when it is one chunk)
[[maybe_unused]] constexpr int BV = {bv};  // bf16 per staging load
[[maybe_unused]] constexpr int DP = D + BV;  // row pitch (bf16) of the staged keys and rotated queries
[[maybe_unused]] constexpr int QR = {qr};  // staged rotated-query rows (G{qr_pad})
[[maybe_unused]] constexpr int GS = {gs};  // row pitch (floats) of a chunk's scores
[[maybe_unused]] constexpr int OW = (G * D + NT - 1) / NT;  // window outputs per thread
[[maybe_unused]] constexpr float SCALE = {scale};
[[maybe_unused]] constexpr float NORM = {norm};
[[maybe_unused]] constexpr float MIX_WIN = {mix_win};
[[maybe_unused]] constexpr float MIX_LIN = {mix_lin};
static_assert(D % CS == 0 && CS % VEC == 0 && 32 % TPR == 0 && NT % 32 == 0 && D % BV == 0, "decode layout");

struct alignas(4 * VEC) VecF {{ float x[VEC]; }};  // VEC adjacent state columns (one vector access)
struct alignas(2 * BV) LoadB {{ bf16 x[BV]; }};  // one staging load

// One token per row (tokens = batch). Grid (1, HKV, batch): block (j, b) owns KV head j of row b
// for all G query heads of that KV head. Thread t holds, in pass cb, state rows t/TPR + RP*p
// (p < RPT), columns cb*CS + VEC*(t%TPR) ..
//   1. loads, none waiting for another: pass 0 of the state, q/q_rot/k/k_rot/v (BV-wide,
//      registers), the window's first chunk of ring slots (keys and values, all features), in
//      slot order (no wait for pos); their stores to shared memory (this token's key and value
//      into its slot's row); then pass 1 of the state (both passes after step 3 instead when the
//      window is staged in several chunks)
//   2. gate, feature maps and the chunk's scores; the ring push (after a barrier: the block's
//      reads of that slot are done)
//   3. window branch (in chunks of KC keys when they do not fit at once): online softmax, one
//      warp per head; p V for all G x D outputs, into shared memory
//   4. the state passes: S <- diag(alpha) S + kf^T v in place, partial q S (then the loads of
//      the pass two ahead), summed over the lanes (shuffles) and warps (shared memory), mixed
//      with the window's output
// At most {max_regs} registers a thread at NT 256: {min_blocks} blocks share an SM.
extern "C" __global__ void __launch_bounds__(NT, MIN_BLOCKS) {name}(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
        const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot, float* __restrict__ state,
        bf16* __restrict__ ring_k, bf16* __restrict__ ring_v, bf16* __restrict__ out, const int* __restrict__ pos_ptr);

extern "C" __global__ void {name}(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
        const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot, float* __restrict__ state,
        bf16* __restrict__ ring_k, bf16* __restrict__ ring_v, bf16* __restrict__ out, const int* __restrict__ pos_ptr) {{
"#,
        vbytes = 4 * vec,
        min_warps = 8 * min_blocks,
        max_regs = 65536 / (256 * min_blocks) / 8 * 8,
        qr_pad = if tc { ", padded to the wmma tile" } else { "" },
        scale = float_lit(1.0 / (d as f64).sqrt()),
        norm = float_lit(normalizer),
        mix_win = float_lit(spec.mix_window),
        mix_lin = float_lit(spec.mix_linear),
    ));
    // Shared memory.
    if grm {
        put(
            "    __shared__ float qk[(G + 1) * D];  // feature-mapped queries (G rows), then the mapped key\n",
        );
        if raw_key {
            put("    __shared__ float kr[D];  // raw key\n");
        }
        put("    __shared__ float alpha[D];  // decay e^gate\n");
        put("    __shared__ float vcur[D];  // this token's value\n");
    }
    if window {
        if grm {
            put("    __shared__ float wo[G * D];  // the window branch's output, times MIX_WIN\n");
        }
        put(
            "    __shared__ float wm[G], wl[G], wc[G], wi[G];  // per head: running max, running sum, this chunk's rescale, MIX_WIN / sum\n",
        );
        put(r#"    extern __shared__ float smem[];
    float* wsc = smem;  // [KC][GS] the chunk's scores q.k, then exp(score - max)
    bf16* wk = reinterpret_cast<bf16*>(smem + KC * GS);  // [KC][DP] the chunk's keys, all D features
    bf16* qb = wk + KC * DP;  // [QR][DP] rotated queries (rows G.. zero)
    bf16* wv = qb + QR * DP;  // [VR][D] the chunk's values, all D columns
"#);
    }
    if grm {
        if part_in_keys {
            put(
                "    float* part = reinterpret_cast<float*>(wk);  // [2][NW][G][CS] per-warp sums (the keys are dead by then)\n",
            );
        } else {
            put(
                "    alignas(16) __shared__ float part[2 * NW * G * CS];  // per-warp sums, two buffers\n",
            );
        }
    }
    put(
        r#"    const int j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    [[maybe_unused]] const int warp = tid >> 5, lane = tid & 31;
    [[maybe_unused]] const int rr0 = tid / TPR, cv = tid % TPR;  // rows rr0 + RP*p, columns cb*CS + VEC*cv ..
    const long long bj = (long long)b * HKV + j;
    const bf16* v_cur = v + bj * D;
"#,
    );
    if !grm {
        put("    (void)q; (void)k; (void)state;\n");
    }
    if !window {
        put("    (void)q_rot; (void)k_rot; (void)ring_k; (void)ring_v; (void)pos_ptr;\n");
    }
    if grm {
        put(r#"
    // 1. loads: the state, one pass of CS columns at a time (16-byte loads, into registers) ...
    float* const sp = state + bj * D * D + VEC * cv;
    VecF s[NP][RPT];
    auto load_pass = [&](int cb) {
#pragma unroll
        for (int p = 0; p < RPT; ++p) {
            const int i = rr0 + RP * p;
            s[cb][p] = VecF{};
            if (D % RP == 0 || i < D) s[cb][p] = *reinterpret_cast<const VecF*>(sp + (long long)i * D + cb * CS);
        }
    };
"#);
        if early {
            put("    load_pass(0);\n");
        }
    } else {
        put("\n    // 1. loads: ...\n");
    }
    if window {
        put(
            "    const int pos = *pos_ptr;  // device memory: one captured graph serves every step\n",
        );
    }
    // The queries, keys and this token's value, BV bf16 a load: segments (source, loads,
    // store of `x` at `f`).
    let mut segs: Vec<(&str, &str, String)> = Vec::new();
    if grm {
        segs.push((
            "q + qoff",
            "G * D / BV",
            "for (int c = 0; c < BV; ++c) qk[f + c] = __bfloat162float(x.x[c]);".into(),
        ));
    }
    if window {
        segs.push((
            "q_rot + qoff",
            "G * D / BV",
            "*reinterpret_cast<LoadB*>(qb + f / D * DP + f % D) = x;".into(),
        ));
    }
    if grm {
        segs.push((
            "k + bj * D",
            "D / BV",
            format!(
                "for (int c = 0; c < BV; ++c) {{\n                    const float y = __bfloat162float(x.x[c]);{}\n                }}",
                key_stores(variant, "                    ")
            ),
        ));
    }
    // Segment indices of this token's key and value (the ring push).
    let (mut kseg, mut vseg) = (None, None);
    if window {
        kseg = Some(segs.len());
        segs.push((
            "k_cur",
            "D / BV",
            "if (cur < KC) *reinterpret_cast<LoadB*>(wk + cur * DP + f) = x;  // its staged row"
                .into(),
        ));
    }
    if grm || window {
        vseg = Some(segs.len());
        let mut st = String::new();
        if grm {
            st.push_str("for (int c = 0; c < BV; ++c) vcur[f + c] = __bfloat162float(x.x[c]);");
        }
        if window {
            if grm {
                st.push_str("\n                ");
            }
            st.push_str(
                "if (cur < KC) *reinterpret_cast<LoadB*>(wv + cur * D + f) = x;  // its staged row",
            );
        }
        segs.push(("v_cur", "D / BV", st));
    }
    let ends = (0..=segs.len())
        .map(|i| {
            format!(
                "UE{i} = {}",
                if i == 0 {
                    "0".to_string()
                } else {
                    format!("UE{} + {}", i - 1, segs[i - 1].1)
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let n = segs.len();
    let mut select = String::new();
    let mut stores = String::new();
    for (i, (src, _, st)) in segs.iter().enumerate() {
        if i + 1 < n {
            select.push_str(&format!("e < UE{} ? {src} + (e - UE{i}) * BV : ", i + 1));
        } else {
            select.push_str(&format!("{src} + (e - UE{i}) * BV"));
        }
        stores.push_str(&format!(
            "{}if (e < UE{}) {{\n                const int f = (e - UE{i}) * BV;\n                {st}\n            }}",
            if i == 0 { "            " } else { " else " },
            i + 1
        ));
    }
    put(&format!(
        r#"    // ... the queries, the keys and this token's value (BV bf16 a load) ...
    const long long qoff = (long long)b * H * D + (long long)j * G * D;
{kcur}    constexpr int {ends};  // ends of the segments of loads
    constexpr int UL = (UE{n} + NT - 1) / NT;  // per thread
    LoadB ux[UL];
#pragma unroll
    for (int u = 0; u < UL; ++u) {{
        const int e = tid + u * NT;
        ux[u] = LoadB{{}};
        if (UE{n} % NT == 0 || e < UE{n}) ux[u] = *reinterpret_cast<const LoadB*>({select});
    }}
"#,
        kcur = if window {
            "    const bf16* k_cur = k_rot + bj * D;\n"
        } else {
            ""
        },
    ));
    if window {
        put(&window_prologue(tc));
    }
    if grm && early && d > cs {
        put("    load_pass(1);  // ... then pass 1 of the state\n");
    }
    if window && tc {
        put(
            "    cp_async_wait_all();  // the staged window (row cur is stored over below)\n    __syncthreads();\n",
        );
    }
    put(&format!(
        r#"    // ... and their stores{ring}
#pragma unroll
    for (int u = 0; u < UL; ++u) {{
        const int e = tid + u * NT;
        if (UE{n} % NT == 0 || e < UE{n}) {{
            const LoadB x = ux[u];
{stores}
        }}
    }}
"#,
        ring = if window {
            " (this step's key and value: their staged rows)"
        } else {
            ""
        },
    ));
    if window && qr > g {
        put(
            "    for (int e = tid; e < (QR - G) * DP / 8; e += NT) reinterpret_cast<uint4*>(qb + G * DP)[e] = uint4{0u, 0u, 0u, 0u};  // rows G.. zero\n",
        );
    }
    put("    __syncthreads();\n");
    // 2. Gate, feature maps, first scores, ring push.
    put("\n    // 2. gate and feature maps");
    put(if window {
        "; the first chunk's scores; the ring push\n"
    } else {
        "\n"
    });
    if let (true, Some(ks), Some(vs)) = (window, kseg, vseg) {
        put(&format!(
            r#"#pragma unroll
    for (int u = 0; u < UL; ++u) {{  // this step's key and value into slot pos % NRING (all of the block's reads of it are done)
        const int e = tid + u * NT;
        if (e >= UE{ks} && e < UE{ke}) *reinterpret_cast<LoadB*>(ring_kh + slot + (e - UE{ks}) * BV) = ux[u];
        else if (e >= UE{vs} && e < UE{ve}) *reinterpret_cast<LoadB*>(ring_vh + slot + (e - UE{vs}) * BV) = ux[u];
    }}
"#,
            ke = ks + 1,
            ve = vs + 1,
        ));
    }
    if grm {
        put(&gate_and_maps(variant, d));
    }
    if window {
        put("    score(0);\n");
    }
    put("    __syncthreads();\n");
    // 3. Window branch.
    if window {
        let one_chunk = kc > w;
        put(if one_chunk {
            "\n    // 3. window branch: the whole window is the chunk staged and scored above\n    float ao[OW] = {};\n    {\n        const int kn = nk;\n"
        } else {
            "\n    // 3. window branch, chunk by chunk (chunk 0 is staged and scored)\n    float ao[OW] = {};\n    for (int c0 = 0;;) {\n        const int kn = min(KC, nk - c0);  // keys in this chunk\n"
        });
        put(
            r#"        // online softmax of the chunk's scores, one warp per head; wsc <- exp(score - running max)
        for (int g = warp; g < G; g += NW) {
            const float m_old = wm[g];
            float mx = neg_inf();
#pragma unroll
            for (int u = 0; u < (KC + 31) / 32; ++u) {
                const int r = lane + 32 * u;
                if (r < kn) mx = fmaxf(mx, wsc[r * GS + g] * SCALE);
            }
            const float m = fmaxf(m_old, warp_max(mx));
            float sum = 0.0f;
#pragma unroll
            for (int u = 0; u < (KC + 31) / 32; ++u) {
                const int r = lane + 32 * u;
                if (r >= kn) break;
                const float e = __expf(wsc[r * GS + g] * SCALE - m);  // exponent <= 0: the fast exp is exact to a few ulp
                wsc[r * GS + g] = e;
                sum += e;
            }
            sum = warp_sum(sum);
            if (lane == 0) {
                const float corr = expf(m_old - m);  // 0 on the first chunk (m_old = -inf)
                wc[g] = corr;
                const float l = wl[g] * corr + sum;
                wl[g] = l;
                wi[g] = MIX_WIN / l;  // the last chunk's is the one the output takes
                wm[g] = m;
            }
        }
        __syncthreads();
        // p V: this thread's outputs (head e / D, column e % D) over the chunk's keys
#pragma unroll
        for (int u = 0; u < OW; ++u) {
            const int e = tid + NT * u;
            if ((G * D) % NT != 0 && e >= G * D) break;
            const int g = e / D, c = e % D;
            float a = ao[u] * wc[g];
            for (int r = 0; r < kn; ++r) a += wsc[r * GS + g] * __bfloat162float(wv[r * D + c]);
            ao[u] = a;
        }
"#,
        );
        put(if one_chunk {
            "    }\n"
        } else {
            r#"        c0 += KC;
        if (c0 >= nk) break;
        __syncthreads();  // the chunk's keys, values and weights are read
        stage(c0);
        __syncthreads();
        score(c0);
        __syncthreads();
    }
"#
        });
        if grm {
            put(r#"#pragma unroll
    for (int u = 0; u < OW; ++u) {
        const int e = tid + NT * u;
        if ((G * D) % NT == 0 || e < G * D) wo[e] = ao[u] * wi[e / D];
    }
    __syncthreads();  // wo is written; the keys (the per-warp sums' memory) are dead
"#);
        } else {
            put(r#"#pragma unroll
    for (int u = 0; u < OW; ++u) {
        const int e = tid + NT * u;
        if ((G * D) % NT == 0 || e < G * D) out[(long long)b * H * D + (long long)j * G * D + e] = __float2bfloat16(ao[u] * wi[e / D]);
    }
"#);
        }
    }
    // 4. The state passes.
    if grm {
        let win_term = if window {
            " + wo[g * D + col0 + c]"
        } else {
            ""
        };
        if !early {
            put(if d > cs {
                "    load_pass(0);  // the first two passes of the state\n    load_pass(1);\n"
            } else {
                "    load_pass(0);  // the state\n"
            });
        }
        put(&format!(
            r#"
    // 4. the state passes: S <- diag(alpha) S + kf^T v in place; o_lin = qf S over this thread's rows
#pragma unroll
    for (int cb = 0; cb < NP; ++cb) {{
        const int col0 = cb * CS;
        float acc[G][VEC] = {{}};
        float vf[VEC];
#pragma unroll
        for (int c = 0; c < VEC; ++c) vf[c] = vcur[col0 + VEC * cv + c];
#pragma unroll
        for (int p = 0; p < RPT; ++p) {{
            const int i = rr0 + RP * p;
            if (D % RP != 0 && i >= D) continue;
            const float a = alpha[i], kk = qk[G * D + i];
            VecF x = s[cb][p];
#pragma unroll
            for (int c = 0; c < VEC; ++c) x.x[c] = a * x.x[c] + kk * vf[c];
            *reinterpret_cast<VecF*>(sp + (long long)i * D + col0) = x;
#pragma unroll
            for (int g = 0; g < G; ++g) {{
                const float qg = qk[g * D + i];
#pragma unroll
                for (int c = 0; c < VEC; ++c) acc[g][c] += qg * x.x[c];
            }}
        }}
        if (cb + 2 < NP) load_pass(cb + 2);  // this pass's registers are free: the pass two ahead
        // sum over the warp's row groups (lanes with the same columns), then over the warps
        float* pt = part + (cb & 1) * NW * G * CS;
#pragma unroll
        for (int g = 0; g < G; ++g) {{
#pragma unroll
            for (int c = 0; c < VEC; ++c) {{
                float x = acc[g][c];
                for (int off = TPR; off < 32; off <<= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
                acc[g][c] = x;
            }}
        }}
        if (lane < TPR) {{
#pragma unroll
            for (int g = 0; g < G; ++g) {{
                VecF x;
#pragma unroll
                for (int c = 0; c < VEC; ++c) x.x[c] = acc[g][c];
                *reinterpret_cast<VecF*>(pt + (warp * G + g) * CS + VEC * cv) = x;
            }}
        }}
        __syncthreads();  // (the other buffer's readers are past the previous pass's barrier)
        for (int e = tid; e < G * CS; e += NT) {{
            const int g = e / CS, c = e % CS;
            float x = 0.0f;
            for (int w = 0; w < NW; ++w) x += pt[(w * G + g) * CS + c];
            out[(long long)b * H * D + (j * G + g) * D + col0 + c] = __float2bfloat16(MIX_LIN * x{win_term});
        }}
    }}
"#
        ));
    }
    put("}\n");
    let body = src;
    let mut summary = format!(
        "Liger {variant} decode step: one block per (KV head, row) for all {g} query heads"
    );
    if window {
        summary.push_str(&format!(
            "; window over the ring ({} keys, all {d} columns) staged in shared memory {}, scores {}, softmax, pV, once",
            w + 1,
            if kc > w {
                "at once".to_string()
            } else {
                format!("in chunks of {kc} (online softmax)")
            },
            if tc {
                "on tensor cores (bf16 wmma)"
            } else {
                "in f32"
            }
        ));
    }
    if grm {
        summary.push_str(&format!(
            "; the state streamed in {} passes of {cs} columns ({} rows × {vec} columns per thread, {}-byte loads, two passes in flight) and updated in place",
            d / cs,
            d.div_ceil(nt / (cs / vec)),
            4 * vec
        ));
    }
    summary.push_str("; mix");
    KernelSrc {
        name,
        summary,
        body,
        block: [nt as u32, 1, 1],
        smem: smem as u32,
        grid: format!("(1, {kv}, batch): one block per (KV head, row)"),
        params: keyed_params(h, kv, d, w),
    }
}

/// CUDA source, in a keyed decode step's loop over the raw key's `BV` channels at `f`
/// (`y` the channel `c`): its stores to `kr` (where the gate reads it) and to the key map's
/// row of `qk` (softmax-mapped later; HGRN2's map comes from the gate instead). Each line
/// starts with a newline and `ind`.
pub(super) fn key_stores(variant: LigerVariant, ind: &str) -> String {
    let mut s = String::new();
    if variant != LigerVariant::Linear {
        s.push_str(&format!("\n{ind}kr[f + c] = y;"));
    }
    if variant != LigerVariant::Hgrn2 {
        s.push_str(&format!(
            "\n{ind}qk[G * D + f + c] = y;  // the key map is its softmax"
        ));
    }
    s
}

/// CUDA source of a keyed decode step's gate and feature maps, once the raw key is in `kr`
/// and the token's queries and key in `qk` (every thread of the block runs it): retention's
/// row mean, `alpha = e^gate`, HGRN2's key map `1 − α`, and the softmax of the `qk` rows.
pub(super) fn gate_and_maps(variant: LigerVariant, d: usize) -> String {
    let mut s = String::new();
    if variant == LigerVariant::Retention {
        s.push_str(
            "    __shared__ float scratch[32];\n    float part_sum = 0.0f;\n    for (int i = tid; i < D; i += NT) part_sum += kr[i];\n    const float mean = block_sum(part_sum, scratch) / (float)D;\n",
        );
    }
    let gexpr = gate_expr(variant, d, d, "i", "kr", "mean");
    let hgrn2 = variant == LigerVariant::Hgrn2;
    s.push_str(&format!(
        "    for (int i = tid; i < D; i += NT) {{\n        const float gm = {gexpr};\n        alpha[i] = expf(gm);{}\n    }}\n",
        if hgrn2 {
            "\n        qk[G * D + i] = -expm1f(gm);  // HGRN2's key map: 1 - alpha"
        } else {
            ""
        }
    ));
    s.push_str(if hgrn2 {
        "    softmax_rows(qk, G, D);\n"
    } else {
        "    softmax_rows(qk, G + 1, D);\n"
    });
    s
}

/// The parameters of a keyed decode step ([`decode_keyed_threads`], [`decode_keyed_bulk`]),
/// one line each.
pub(super) fn keyed_params(h: usize, kv: usize, d: usize, w: usize) -> Vec<String> {
    vec![
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
    ]
}

/// The window part of step 1 of [`decode_keyed_threads`]: the helpers staging and scoring a chunk
/// of keys and values and the first chunk.
fn window_prologue(tc: bool) -> String {
    let score = if tc {
        r#"    // Scores q.k of chunk c0 on tensor cores (bf16 in, f32 accumulation): one warp per tile of
    // 16 keys (A, row-major) x 16 query heads (B = the rotated queries, column-major).
    auto score = [&](int c0) {
        for (int t = warp; t < KC / 16; t += NW) {
            if (c0 + 16 * t >= nk) continue;
            for (int n = 0; n < QR / 16; ++n) {
                wmma::fragment<wmma::accumulator, 16, 16, 16, float> sc;
                wmma::fill_fragment(sc, 0.0f);
                for (int k0 = 0; k0 < D; k0 += 16) {
                    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> ka;
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> qm;
                    wmma::load_matrix_sync(ka, wk + 16 * t * DP + k0, DP);
                    wmma::load_matrix_sync(qm, qb + 16 * n * DP + k0, DP);
                    wmma::mma_sync(sc, ka, qm, sc);
                }
                wmma::store_matrix_sync(wsc + 16 * t * GS + 16 * n, sc, GS, wmma::mem_row_major);
            }
        }
    };
"#
    } else {
        r#"    // Scores q.k of chunk c0 in f32: one thread per (key, head).
    auto score = [&](int c0) {
        for (int e = tid; e < KC * G; e += NT) {
            const int r = e / G, g = e % G;
            if (c0 + r >= nk) continue;
            float dot = 0.0f;
            for (int i = 0; i < D; ++i) dot += __bfloat162float(qb[g * DP + i]) * __bfloat162float(wk[r * DP + i]);
            wsc[r * GS + g] = dot;
        }
    };
"#
    };
    format!(
        r#"    for (int g = tid; g < G; g += NT) {{
        wm[g] = neg_inf();
        wl[g] = 0.0f;
    }}
    // ... and the window's first chunk. The window is the ring's slots with this step's key and
    // value in slot pos % NRING (it held pos-W-1, which no query reads): slots 0 ..= pos while
    // pos < W, all of them after. The softmax does not care about the keys' order, so the staged
    // row r of chunk c0 is slot c0 + r, and chunk 0's loads need not wait for pos: its rows past
    // the window (pos < W) are read and never used, and its row of slot pos % NRING is stored
    // from this step's k_rot / v (the segments above); later chunks read that row from them.
    const int nk = min(pos, W) + 1, cur = pos % NRING;  // keys in the window; this step's slot
    const long long slot = (long long)cur * D;
    bf16* ring_kh = ring_k + bj * NRING * D;
    bf16* ring_vh = ring_v + bj * NRING * D;
{stage}{score}    stage(0);
"#,
        stage = if tc { STAGE_ASYNC } else { STAGE_REGS },
    )
}

/// The window's staging helper of [`window_prologue`] when `BV` is 8: `cp.async` copies
/// global memory to shared memory without registers (16 bytes each, zero-filled past the
/// ring), so the staged window costs the block no registers while it is in flight.
const STAGE_ASYNC: &str = r#"    // Stages chunk c0: slots c0 .. c0+KC-1 into wk and wv (all D features / columns; values only
    // rows < VR), zeros past the ring, by cp.async (no registers). Chunk 0 copies every row,
    // row cur too (stale): its row from this step's key and value is stored over it once the
    // copies are waited for. Later chunks take row cur from k_cur / v_cur and wait here.
    auto stage = [&](int c0) {
        constexpr int KN = KC * D / BV;  // copies of the chunk's keys (and of its values)
        constexpr int KL = (KN + NT - 1) / NT;  // per thread
        const int hi = c0 == 0 ? NRING : nk;  // slots to read (chunk 0: before pos is known)
#pragma unroll
        for (int u = 0; u < KL; ++u) {
            const int e = tid + u * NT, r = e / (D / BV), sl = c0 + r, i = e % (D / BV) * BV;
            if (KN % NT == 0 || e < KN) {
                const bool live = sl < hi, mine = c0 > 0 && sl == cur;
                const bf16* ks = live ? (mine ? k_cur : ring_kh + (long long)sl * D) + i : ring_kh;
                const bf16* vs = live ? (mine ? v_cur : ring_vh + (long long)sl * D) + i : ring_vh;
                cp_async16(wk + r * DP + i, ks, live);
                if (r < VR) cp_async16(wv + r * D + i, vs, live);
            }
        }
        if (c0 > 0) cp_async_wait_all();
    };
"#;

/// The register-staged variant of [`STAGE_ASYNC`] (any `BV`).
const STAGE_REGS: &str = r#"    // Stages chunk c0: slots c0 .. c0+KC-1 into wk and wv (all D features / columns; values only
    // rows < VR), zeros past the ring; every load of the chunk is issued before the first store.
    auto stage = [&](int c0) {
        constexpr int KN = KC * D / BV;  // loads of the chunk's keys (and of its values)
        constexpr int KL = (KN + NT - 1) / NT;  // per thread
        const int hi = c0 == 0 ? NRING : nk;  // slots to read (chunk 0: before pos is known)
        LoadB kx[KL], vx[KL];
#pragma unroll
        for (int u = 0; u < KL; ++u) {
            const int e = tid + u * NT, sl = c0 + e / (D / BV), i = e % (D / BV) * BV;
            kx[u] = LoadB{};
            vx[u] = LoadB{};
            if ((KN % NT == 0 || e < KN) && sl < hi) {
                const bool mine = c0 > 0 && sl == cur;
                kx[u] = *reinterpret_cast<const LoadB*>((mine ? k_cur : ring_kh + (long long)sl * D) + i);
                vx[u] = *reinterpret_cast<const LoadB*>((mine ? v_cur : ring_vh + (long long)sl * D) + i);
            }
        }
#pragma unroll
        for (int u = 0; u < KL; ++u) {
            const int e = tid + u * NT, r = e / (D / BV), i = e % (D / BV) * BV;
            if ((KN % NT == 0 || e < KN) && (c0 > 0 || r != cur)) {
                *reinterpret_cast<LoadB*>(wk + r * DP + i) = kx[u];
                if (r < VR) *reinterpret_cast<LoadB*>(wv + r * D + i) = vx[u];
            }
        }
    };
"#;

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
        decode_window_gsa()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts tests/cuda_decode_kernel.rs relies on covering every code path.
    #[test]
    fn keyed_layouts() {
        // Llama-3-8B: passes of 32 columns, 16-byte state loads, 4 rows a thread, the
        // whole window one chunk of 80 keys (65 value rows; dynamic shared memory raised
        // above 48 KiB), tensor-core scores; three blocks an SM.
        let l = KeyedLayout::new(4, 128, 64, true, true, false);
        assert_eq!(
            (l.cs, l.vec, l.nt, l.kc, l.vr, l.bv, l.qr),
            (32, 4, 256, 80, 65, 8, 16)
        );
        assert!(l.tc && l.part_in_keys);
        // 47,872 bytes of keys, scores, queries and 65 value rows, raised to just above 48 KiB.
        assert_eq!(l.smem, 48 * 1024 + 16);
        assert!(l.blocks_by_smem() >= 3);
        // Small layouts stay within the 48 KiB of static + dynamic.
        assert!(KeyedLayout::new(2, 64, 64, true, true, false).smem < 40 * 1024);
        // A 201-key window at D 128 is staged in chunks of 96.
        assert_eq!(KeyedLayout::new(2, 128, 200, true, true, false).kc, 96);
        // G 8 at W 0: the per-warp sums outgrow the 16 staged keys.
        let l = KeyedLayout::new(8, 16, 0, true, true, false);
        assert_eq!((l.nt, l.kc), (64, 16));
        assert!(!l.part_in_keys);
        // D not a multiple of 16: f32 scores, narrower slices and loads.
        let l = KeyedLayout::new(4, 24, 5, true, true, true);
        assert_eq!((l.cs, l.vec, l.nt, l.bv, l.qr, l.gs), (8, 4, 64, 8, 4, 4));
        assert!(!l.tc);
        let l = KeyedLayout::new(2, 7, 4, true, true, false);
        assert_eq!((l.cs, l.vec, l.nt, l.bv), (1, 1, 32, 1));
    }
}
