//! The window prefill kernel (`liger_window_prefill_*`) alone, under the CPU emulation of
//! CUDA (`ligerc::codegen::cuda::emulate::SHIM`, g++: `mma.sync` m16n8k16 and `ldmatrix`
//! emulated per the PTX ISA's fragment layouts), against a float64 sliding-window softmax.
//!
//! Shapes: the target H 32 / KV 8 / D 128 / W 64 (G 4) and G 1 at D 128; D 64 at G 4 and
//! G 1; a band of 8 key tiles (W 112, the longest one-pass softmax); windows of 200 (an
//! online softmax over several steps and several shared-memory stages) at D 128 and 64;
//! D 256 (two groups of 128 output columns); D 48 (an odd number of 16-wide feature tiles)
//! with W 3 and 7; D 16 and 32 (G 8); W 0; the scalar body at D 24. Calls: odd `seq`, `seq`
//! below the window, `seq` not a multiple of the 64-query tile, batch > 1, and second calls
//! of a split prompt (`pos0 > 0`) reading keys and values from the ring, whose slots outside
//! the window hold NaN (a read of one shows); f32 and bf16 outputs.
//!
//! Tolerance: `max|err| ≤ 1e-2 · max|ref|`. Queries, keys and values are bf16 in both
//! (the reference reads the same bf16 values, in float64); the scores are exact products
//! summed in f32; the probabilities are rounded to bf16 (relative error ≤ 2⁻⁹ each) before
//! `P·V`, and the sum `l` adds the rounded values, so `y = Σ p̃ v / Σ p̃` stays a convex
//! combination of the values, off by at most `2 · 2⁻⁹ · max|v|` ≈ 4e-3 of `max|v|` (the
//! bf16 output adds 2⁻⁹ relative). Every output must be written (the buffer starts NaN)
//! and nothing past it (a NaN guard after it must stay NaN). The kernels also compile with
//! NVRTC for sm_90 with an empty log; with `LIGERC_KEEP_TEST_DIRS=1` their sources stay in
//! the test's directory (`kernels/*.cu`, for `ptxas -v`).

mod common;
use common::*;

use std::collections::BTreeMap;

const DRIVER: &str = r#"
static uint64_t rng_state = 88172645463325252ull;
static float urand() {  // uniform in [-1, 1)
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static double val(float x) { return x; }
static double val(__nv_bfloat16 x) { return __bfloat162float(x); }
static __nv_bfloat16 bf(float x) { return __float2bfloat16(x); }
template <typename OT> OT nan_of();
template <> float nan_of<float>() { return NAN; }
template <> __nv_bfloat16 nan_of<__nv_bfloat16>() { return {(unsigned short)0x7fc0}; }
static bool is_nan(double x) { return !(x == x); }

constexpr size_t GUARD = 64;  // NaN elements after the output, which the kernel must not touch

// One call of the window kernel at (B, seq, pos0) vs float64; prints
// `case ID err E ref R unwritten N guard N`.
template <typename OT, typename K>
void run_case(int id, K kernel, int H, int KV, int D, int W, double mix, int tq, int threads, size_t smem,
              int B, int seq, int pos0) {
    const int G = H / KV, NR = W + 1, total = pos0 + seq;
    // Every position's rotated key and value; this call's go to k_rot / v, earlier ones to the ring.
    std::vector<__nv_bfloat16> kall((size_t)B * total * KV * D), vall(kall.size()), q((size_t)B * seq * H * D);
    for (auto& x : kall) x = bf(2.0f * urand());
    for (auto& x : vall) x = bf(urand());
    for (auto& x : q) x = bf(2.0f * urand());
    auto aix = [&](int b, int p, int j, int i) { return (((size_t)b * total + p) * KV + j) * D + i; };
    std::vector<__nv_bfloat16> kc((size_t)B * seq * KV * D), vc(kc.size());
    std::vector<__nv_bfloat16> rk((size_t)B * KV * NR * D, nan_of<__nv_bfloat16>()), rv(rk.size(), rk[0]);
    for (int b = 0; b < B; ++b)
        for (int p = 0; p < total; ++p)
            for (int j = 0; j < KV; ++j)
                for (int i = 0; i < D; ++i) {
                    if (p >= pos0) {
                        const size_t c = (((size_t)b * seq + p - pos0) * KV + j) * D + i;
                        kc[c] = kall[aix(b, p, j, i)];
                        vc[c] = vall[aix(b, p, j, i)];
                    } else if (p >= pos0 - W) {  // the ring's slot of pos0 - W - 1 stays NaN
                        const size_t r = (((size_t)b * KV + j) * NR + p % NR) * D + i;
                        rk[r] = kall[aix(b, p, j, i)];
                        rv[r] = vall[aix(b, p, j, i)];
                    }
                }
    const size_t n = (size_t)B * seq * H * D;
    std::vector<OT> out(n + GUARD, nan_of<OT>());
    int pos0v = pos0;
    emu_launch(kernel, dim3{(unsigned)((seq + tq - 1) / tq), (unsigned)KV, (unsigned)B}, dim3{(unsigned)threads, 1, 1},
               smem, (const __nv_bfloat16*)q.data(), (const __nv_bfloat16*)kc.data(), (const __nv_bfloat16*)vc.data(),
               (const __nv_bfloat16*)rk.data(), (const __nv_bfloat16*)rv.data(), out.data(), seq, (const int*)&pos0v);
    double err = 0, ref = 0;
    long unwritten = 0, guard = 0;
    std::vector<double> s;
    for (int b = 0; b < B; ++b)
        for (int t = 0; t < seq; ++t)
            for (int h = 0; h < H; ++h) {
                const int p = pos0 + t, j = h / G, lo = p - W > 0 ? p - W : 0;
                const size_t qb = (((size_t)b * seq + t) * H + h) * D;
                s.assign(p - lo + 1, 0.0);
                double m = -1e300, l = 0;
                for (int k = lo; k <= p; ++k) {
                    double d = 0;
                    for (int i = 0; i < D; ++i) d += val(q[qb + i]) * val(kall[aix(b, k, j, i)]);
                    s[k - lo] = d / sqrt((double)D);
                    m = s[k - lo] > m ? s[k - lo] : m;
                }
                for (auto& x : s) { x = exp(x - m); l += x; }
                for (int i = 0; i < D; ++i) {
                    double y = 0;
                    for (int k = lo; k <= p; ++k) y += s[k - lo] * val(vall[aix(b, k, j, i)]);
                    y = mix * y / l;
                    const double o = val(out[qb + i]);
                    if (is_nan(o)) { ++unwritten; continue; }
                    err = fabs(o - y) > err ? fabs(o - y) : err;
                    ref = fabs(y) > ref ? fabs(y) : ref;
                }
            }
    for (size_t i = n; i < n + GUARD; ++i) guard += !is_nan(val(out[i]));
    std::printf("case %d err %.6e ref %.6e unwritten %ld guard %ld\n", id, err, ref, unwritten, guard);
}

int main() {
"#;

/// The window kernel at several shapes and calls vs float64 (see the file's doc).
#[test]
fn window_kernel_mma_emulated_matches_float64() {
    use ligerc::codegen::cuda::emulate::SHIM;
    use ligerc::codegen::cuda::kernels::PRELUDE;
    use ligerc::codegen::cuda::kernels::liger::{self, WindowOut};
    use ligerc::codegen::cuda::lower::KernelEntry;
    use ligerc::ir::{LigerSpec, LigerVariant};
    type Shape = (usize, usize, usize, usize); // (H, KV, D, window)
    type Case = (usize, usize, usize); // (batch, seq, pos0)
    let configs: Vec<(Shape, WindowOut, Vec<Case>)> = vec![
        // the target shape: G 4, D 128, W 64 (one pass)
        (
            (32, 8, 128, 64),
            WindowOut::Partial,
            vec![(2, 67, 0), (1, 130, 0), (2, 37, 100), (1, 1, 0)],
        ),
        // G 1 at D 128, bf16 output; seq below the window, then a second call
        (
            (4, 4, 128, 64),
            WindowOut::Final,
            vec![(2, 45, 0), (1, 77, 30)],
        ),
        // D 64, G 4 and G 1
        (
            (16, 4, 64, 64),
            WindowOut::Partial,
            vec![(3, 101, 0), (2, 19, 50)],
        ),
        (
            (4, 4, 64, 7),
            WindowOut::Final,
            vec![(1, 5, 0), (2, 29, 13)],
        ),
        // a band of 8 key tiles: the longest one-pass softmax (D 64), two stages at D 128
        (
            (8, 2, 64, 112),
            WindowOut::Partial,
            vec![(1, 150, 0), (1, 33, 200)],
        ),
        (
            (8, 2, 128, 112),
            WindowOut::Partial,
            vec![(1, 150, 0), (1, 33, 200)],
        ),
        // long windows: online softmax over steps and shared-memory stages
        (
            (8, 2, 128, 200),
            WindowOut::Partial,
            vec![(1, 150, 0), (2, 40, 180)],
        ),
        ((4, 1, 64, 200), WindowOut::Final, vec![(1, 99, 250)]),
        // D 256: two 128-column groups a row tile, three stages
        ((4, 2, 256, 64), WindowOut::Partial, vec![(1, 40, 30)]),
        // an odd number of feature tiles; window 0
        (
            (4, 2, 48, 3),
            WindowOut::Partial,
            vec![(2, 21, 0), (1, 9, 5)],
        ),
        ((2, 1, 16, 0), WindowOut::Final, vec![(2, 70, 0), (1, 3, 2)]),
        // D 16 at W 3: tiles cut by seq, seq below the tile, second calls, one token
        (
            (4, 2, 16, 3),
            WindowOut::Partial,
            vec![(2, 6, 0), (2, 5, 6), (1, 70, 0), (1, 67, 30), (1, 1, 0)],
        ),
        // G 8 at D 32
        (
            (8, 1, 32, 64),
            WindowOut::Final,
            vec![(1, 130, 0), (2, 37, 100), (1, 3, 0), (1, 1, 64)],
        ),
        // G 1 at D 64, W 0; G 3 at D 128
        (
            (3, 3, 64, 0),
            WindowOut::Partial,
            vec![(2, 70, 0), (1, 10, 5)],
        ),
        (
            (6, 2, 128, 64),
            WindowOut::Partial,
            vec![(1, 70, 10), (1, 129, 0)],
        ),
        // W 200 at D 64 over three calls' worth of positions; bf16 at D 128
        (
            (4, 2, 64, 200),
            WindowOut::Partial,
            vec![(1, 150, 0), (1, 40, 180), (2, 70, 300)],
        ),
        ((4, 2, 128, 200), WindowOut::Final, vec![(1, 100, 150)]),
        ((4, 2, 48, 7), WindowOut::Final, vec![(2, 50, 21)]),
        // D 24: the scalar body (not a multiple of 16)
        (
            (2, 1, 24, 5),
            WindowOut::Final,
            vec![(2, 20, 0), (1, 9, 13)],
        ),
    ];
    let mut kernels = BTreeMap::new();
    let mut body = String::new();
    let mut driver = String::from(DRIVER);
    let mut labels = Vec::new();
    let mix = 0.7;
    for (i, ((h, kv, d, w), out, cases)) in configs.iter().enumerate() {
        let spec = LigerSpec {
            variant: LigerVariant::Gla,
            heads: *h,
            kv_heads: *kv,
            head_dim: *d,
            window: *w,
            mix_window: mix,
            mix_linear: 1.0 - mix,
            slots: 64,
        };
        let k = liger::window_prefill(&spec, *out);
        let (tq, threads) = liger::window_tile(&spec);
        assert_eq!(k.block[0] as usize, threads, "{}: block", k.name);
        assert_eq!(
            k.smem as usize,
            liger::window_smem(&spec),
            "{}: smem",
            k.name
        );
        assert!(k.smem <= 113 * 1024, "{}: two blocks an SM", k.name);
        let code = ligerc::codegen::cuda::emulate::emulation_body(&k.body);
        body.push_str(&format!("namespace k{i} {{\n{PRELUDE}\n{code}\n}}\n"));
        let ot = "__nv_bfloat16";
        for (b, seq, pos0) in cases {
            let id = labels.len();
            labels.push(format!("{} (B {b}, seq {seq}, pos0 {pos0})", k.name));
            driver.push_str(&format!(
                "    run_case<{ot}>({id}, k{i}::{}, {h}, {kv}, {d}, {w}, {mix}, {tq}, {threads}, {}, {b}, {seq}, {pos0});\n",
                k.name, k.smem
            ));
        }
        kernels.insert(
            k.name.clone(),
            KernelEntry {
                src: k,
                instances: vec!["window kernel test".into()],
            }
            .source(),
        );
    }
    driver.push_str("    return 0;\n}\n");
    let dir = tempdir("cuda-window-mma");
    std::fs::create_dir_all(dir.join("kernels")).unwrap();
    for (name, src) in &kernels {
        std::fs::write(dir.join("kernels").join(format!("{name}.cu")), src).unwrap();
    }
    if let Some(inc) = nvrtc_env() {
        compile_all(&kernels, &inc);
    }
    let Some(cxx) = gxx() else { return };
    let prog = gxx_build(
        &cxx,
        &dir,
        &format!("{SHIM}\n{body}{driver}"),
        "window kernel",
    );
    let text = run_emulation(&prog, &[] as &[&str], "window kernel");
    let mut seen = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (id, err, reference, unwritten, guard): (usize, f64, f64, u64, u64) = (
            f[1].parse().unwrap(),
            f[3].parse().unwrap(),
            f[5].parse().unwrap(),
            f[7].parse().unwrap(),
            f[9].parse().unwrap(),
        );
        eprintln!(
            "{}: max|err| {err:.2e} = {:.2e} of max|ref| {reference:.3}; {unwritten} unwritten, {guard} written past the end",
            labels[id],
            err / reference
        );
        assert!(
            unwritten == 0 && guard == 0 && err <= 1e-2 * reference,
            "{}: max|err| {err} > 1e-2 × max|ref| {reference}, or {unwritten} outputs unwritten / {guard} written past the end",
            labels[id]
        );
        seen += 1;
    }
    assert_eq!(seen, labels.len(), "cases run:\n{text}");
}
