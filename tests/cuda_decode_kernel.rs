//! The keyed Liger decode step (`liger_{variant}_decode_*`) alone, under the CPU
//! emulation of CUDA (`ligerc::codegen::cuda::emulate::SHIM`, g++), against a float64
//! reference: every variant (GLA, HGRN2, retention, linear, swa-only, and a layer
//! without the window branch), the layouts the generator picks — the bulk layout at D 128
//! (window and state by TMA bulk copies, for every key-gated variant, `p·V` all on tensor
//! cores or with keys past the tiles in f32), the thread-loaded one at D 128 (16-byte state
//! loads, 32-column passes, tensor-core scores), D 64 / 16, D 24 and 7 (f32 scores,
//! 8- / 1-column passes), G 1–8, the per-warp sums in their own shared memory (W 0,
//! G 8), a window staged in several chunks (W 200 at D 128) — at positions below and
//! past the window. Checks the outputs (all written), the state written back in place
//! and the ring (this token in slot `pos % (W+1)` for every column, the other slots
//! untouched; slots outside the window hold NaN, so a read of one shows). The kernels
//! also compile with NVRTC for sm_90 with an empty log.

mod common;
use common::*;

use std::collections::BTreeMap;

const DRIVER: &str = r#"
static uint64_t rng_state = 88172645463325252ull;
static float urand() {  // uniform in [-1, 1)
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static double val(__nv_bfloat16 x) { return __bfloat162float(x); }
static __nv_bfloat16 bf(float x) { return __float2bfloat16(x); }
static __nv_bfloat16 bf_nan() { return {(unsigned short)0x7fc0}; }
static bool same(__nv_bfloat16 a, __nv_bfloat16 b) { return a.x == b.x; }
static double logsig(double x) { return x < 0 ? x - log1p(exp(x)) : -log1p(exp(-x)); }

// One decode step at position `pos` (variant: 0 GLA, 1 HGRN2, 2 retention, 3 linear, 4 swa-only;
// `win`: the window branch is present) vs float64; prints `case ID out-err R out-ref R state-err R
// state-ref R bad N` (bad: unwritten outputs and wrong ring entries).
template <typename K>
void run_case(int id, K kernel, int variant, bool win, int H, int KV, int D, int W, double norm, double mix_win,
              double mix_lin, int cs, int threads, size_t smem, int B, int pos) {
    const int G = H / KV, NR = W + 1;
    const bool grm = variant != 4;
    std::vector<__nv_bfloat16> q((size_t)B * H * D), qr(q.size()), k((size_t)B * KV * D), kr(k.size()), v(k.size());
    for (auto& x : q) x = bf(2.0f * urand());
    for (auto& x : qr) x = bf(2.0f * urand());
    for (auto& x : k) x = bf(2.0f * urand());
    for (auto& x : kr) x = bf(2.0f * urand());
    for (auto& x : v) x = bf(urand());
    std::vector<float> st((size_t)B * KV * D * D);
    for (auto& x : st) x = urand();
    const std::vector<float> st0 = st;
    // History: rotated keys and values of positions 0 .. pos-1; the ring holds pos-W .. pos-1.
    std::vector<__nv_bfloat16> hk((size_t)B * pos * KV * D + 1), hv(hk.size());
    for (auto& x : hk) x = bf(2.0f * urand());
    for (auto& x : hv) x = bf(urand());
    auto hix = [&](int b, int p, int j, int i) { return (((size_t)b * pos + p) * KV + j) * D + i; };
    auto rix = [&](int b, int j, int s, int i) { return (((size_t)b * KV + j) * NR + s) * D + i; };
    std::vector<__nv_bfloat16> rk((size_t)B * KV * NR * D, bf_nan()), rv(rk.size(), bf_nan());
    for (int b = 0; b < B; ++b)
        for (int p = pos - W > 0 ? pos - W : 0; p < pos; ++p)
            for (int j = 0; j < KV; ++j)
                for (int i = 0; i < D; ++i) {
                    rk[rix(b, j, p % NR, i)] = hk[hix(b, p, j, i)];
                    rv[rix(b, j, p % NR, i)] = hv[hix(b, p, j, i)];
                }
    const std::vector<__nv_bfloat16> rk0 = rk, rv0 = rv;
    std::vector<__nv_bfloat16> out((size_t)B * H * D, bf_nan());
    int posv = pos;
    emu_launch(kernel, dim3{(unsigned)(D / cs), (unsigned)KV, (unsigned)B}, dim3{(unsigned)threads, 1, 1}, smem,
               (const __nv_bfloat16*)q.data(), (const __nv_bfloat16*)k.data(), (const __nv_bfloat16*)v.data(),
               (const __nv_bfloat16*)qr.data(), (const __nv_bfloat16*)kr.data(), st.data(), rk.data(), rv.data(),
               out.data(), (const int*)&posv);
    double err = 0, ref = 0, serr = 0, sref = 0;
    long bad = 0;
    std::vector<double> qf(D), kf(D), al(D), s, sn(D * D);
    for (int b = 0; b < B; ++b)
        for (int j = 0; j < KV; ++j) {
            const size_t kb = ((size_t)b * KV + j) * D;
            if (grm) {
                double mean = 0, mx = -1e300, l = 0;
                for (int i = 0; i < D; ++i) { mean += val(k[kb + i]) / D; mx = fmax(mx, val(k[kb + i])); }
                for (int i = 0; i < D; ++i) { kf[i] = exp(val(k[kb + i]) - mx); l += kf[i]; }
                for (int i = 0; i < D; ++i) {
                    kf[i] /= l;
                    const double g = variant == 2 ? logsig(mean) / norm : variant == 3 ? 0.0 : logsig(val(k[kb + i])) / norm;
                    al[i] = exp(g);
                    if (variant == 1) kf[i] = 1.0 - al[i];
                }
                const size_t sb = ((size_t)b * KV + j) * D * D;
                for (int i = 0; i < D; ++i)
                    for (int c = 0; c < D; ++c) {
                        sn[i * D + c] = al[i] * st0[sb + i * D + c] + kf[i] * val(v[kb + c]);
                        serr = fmax(serr, fabs(st[sb + i * D + c] - sn[i * D + c]));
                        sref = fmax(sref, fabs(sn[i * D + c]));
                    }
            }
            for (int g = 0; g < G; ++g) {
                const size_t qb = ((size_t)b * H + j * G + g) * D;
                std::vector<double> y(D, 0.0), o(D, 0.0);
                if (grm) {
                    double mx = -1e300, l = 0;
                    for (int i = 0; i < D; ++i) mx = fmax(mx, val(q[qb + i]));
                    for (int i = 0; i < D; ++i) { qf[i] = exp(val(q[qb + i]) - mx); l += qf[i]; }
                    for (int i = 0; i < D; ++i)
                        for (int c = 0; c < D; ++c) o[c] += qf[i] / l * sn[i * D + c];
                }
                if (win) {
                    const int lo = pos - W > 0 ? pos - W : 0;
                    auto key = [&](int p, int i) { return p == pos ? val(kr[kb + i]) : val(hk[hix(b, p, j, i)]); };
                    auto vv = [&](int p, int c) { return p == pos ? val(v[kb + c]) : val(hv[hix(b, p, j, c)]); };
                    s.assign(pos - lo + 1, 0.0);
                    double mx = -1e300, l = 0;
                    for (int p = lo; p <= pos; ++p) {
                        double d = 0;
                        for (int i = 0; i < D; ++i) d += val(qr[qb + i]) * key(p, i);
                        s[p - lo] = d / sqrt((double)D);
                        mx = fmax(mx, s[p - lo]);
                    }
                    for (auto& x : s) { x = exp(x - mx); l += x; }
                    for (int c = 0; c < D; ++c) {
                        for (int p = lo; p <= pos; ++p) y[c] += s[p - lo] * vv(p, c);
                        y[c] /= l;
                    }
                }
                for (int c = 0; c < D; ++c) {
                    const double want = (grm ? mix_lin * o[c] : 0.0) + (win ? mix_win * y[c] : 0.0);
                    const double got = val(out[qb + c]);
                    if (!(got == got)) { ++bad; continue; }
                    err = fmax(err, fabs(got - want));
                    ref = fmax(ref, fabs(want));
                }
            }
            if (win)
                for (int s2 = 0; s2 < NR; ++s2)
                    for (int i = 0; i < D; ++i) {
                        const size_t r = rix(b, j, s2, i);
                        const bool mine = s2 == pos % NR;
                        bad += !same(rk[r], mine ? kr[kb + i] : rk0[r]) || !same(rv[r], mine ? v[kb + i] : rv0[r]);
                    }
        }
    std::printf("case %d out-err %.6e out-ref %.6e state-err %.6e state-ref %.6e bad %ld\n", id, err, ref, serr, sref, bad);
}

int main() {
"#;

/// The keyed decode kernel at several shapes and positions vs float64 (see the file's doc).
#[test]
fn decode_kernel_emulated_matches_reference() {
    use LigerVariant::*;
    use ligerc::codegen::cuda::emulate::SHIM;
    use ligerc::codegen::cuda::kernels::PRELUDE;
    use ligerc::codegen::cuda::kernels::liger;
    use ligerc::codegen::cuda::lower::KernelEntry;
    use ligerc::ir::{LigerSpec, LigerVariant};
    type Shape = (LigerVariant, usize, usize, usize, usize); // (variant, H, KV, D, window)
    // (shape, mix_window, normalizer, batch, positions, the thread-loaded layout even where the
    // bulk one applies)
    type Config = (Shape, f64, f64, usize, Vec<usize>, bool);
    let configs: Vec<Config> = vec![
        ((Gla, 32, 8, 128, 64), 0.5, 16.0, 2, vec![100, 10], false),
        ((Gla, 4, 2, 16, 64), 0.5, 4.0, 2, vec![70, 0], false),
        ((Hgrn2, 9, 3, 64, 64), 0.6, 1.0, 1, vec![64, 65], false),
        ((Retention, 8, 2, 24, 5), 0.5, 4.0, 2, vec![9, 3], false),
        (
            (Linear, 4, 2, 128, 200),
            0.3,
            16.0,
            1,
            vec![250, 150, 40],
            false,
        ),
        ((SwaOnly, 4, 2, 64, 3), 1.0, 16.0, 2, vec![7, 2], false),
        ((Gla, 4, 2, 32, 64), 0.0, 4.0, 2, vec![5], false),
        ((Gla, 16, 2, 16, 0), 0.5, 4.0, 1, vec![3, 0], false),
        ((Gla, 64, 8, 128, 64), 0.5, 4.0, 1, vec![80], false),
        ((Hgrn2, 2, 1, 7, 4), 0.5, 1.0, 2, vec![6, 1], false),
        // The bulk layout (D 128, a window, 16·G ≤ W+1) for every key-gated variant: p V all
        // on tensor cores (W 31), with keys past the tiles in f32 (W 40, 64), positions below
        // the window (stale ring rows zeroed for the tiles); the thread layout at the bench
        // shape.
        ((Hgrn2, 8, 2, 128, 64), 0.6, 1.0, 2, vec![64, 65, 3], false),
        ((Retention, 4, 2, 128, 40), 0.5, 4.0, 2, vec![50, 20], false),
        ((Linear, 2, 2, 128, 31), 0.3, 16.0, 1, vec![40, 5], false),
        ((Gla, 32, 8, 128, 64), 0.5, 16.0, 2, vec![100, 10], true),
    ];
    let mut kernels = BTreeMap::new();
    let mut body = String::new();
    let mut driver = String::from(DRIVER);
    let mut labels = Vec::new();
    for (i, ((variant, h, kv, d, w), mix_win, norm, b, positions, threads)) in
        configs.iter().enumerate()
    {
        let spec = LigerSpec {
            variant: *variant,
            heads: *h,
            kv_heads: *kv,
            head_dim: *d,
            window: *w,
            mix_window: *mix_win,
            mix_linear: 1.0 - mix_win,
            slots: 64,
        };
        let k = if *threads {
            liger::decode_keyed_threads(&spec, *norm)
        } else {
            liger::decode_keyed(&spec, *norm)
        };
        // The grid is `(1, KV, batch)`: one block per (KV head, row).
        let slices: usize = k.grid[1..].split(',').next().unwrap().parse().unwrap();
        let cs = d / slices;
        let code = ligerc::codegen::cuda::emulate::emulation_body(&k.body);
        body.push_str(&format!("namespace k{i} {{\n{PRELUDE}\n{code}\n}}\n"));
        let code = match variant {
            Gla => 0,
            Hgrn2 => 1,
            Retention => 2,
            Linear => 3,
            SwaOnly => 4,
            Gsa => unreachable!(),
        };
        let win = *mix_win != 0.0 || *variant == SwaOnly;
        for pos in positions {
            let id = labels.len();
            labels.push(format!("{} (B {b}, pos {pos})", k.name));
            driver.push_str(&format!(
                "    run_case({id}, k{i}::{}, {code}, {win}, {h}, {kv}, {d}, {w}, {norm:?}, {mix_win:?}, {:?}, {cs}, {}, {}, {b}, {pos});\n",
                k.name,
                1.0 - mix_win,
                k.block[0],
                k.smem,
            ));
        }
        kernels.insert(
            k.name.clone(),
            KernelEntry {
                src: k,
                instances: vec!["decode kernel test".into()],
            }
            .source(),
        );
    }
    driver.push_str("    return 0;\n}\n");
    if let Some(inc) = nvrtc_env() {
        compile_all(&kernels, &inc);
    }
    let Some(cxx) = gxx() else { return };
    let src = format!("{SHIM}\n{body}{driver}");
    let dir = tempdir("cuda-decode-kernel");
    let prog = gxx_build(&cxx, &dir, &src, "decode kernel");
    let text = run_emulation(&prog, &[] as &[&str], "decode kernel");
    let mut seen = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> f64 { f[i].parse().unwrap() };
        let (id, err, reference, serr, sref, bad) = (
            f[1].parse::<usize>().unwrap(),
            num(3),
            num(5),
            num(7),
            num(9),
            f[11].parse::<u64>().unwrap(),
        );
        eprintln!(
            "{}: output max|err| {err:.2e} of max|ref| {reference:.3}; state {serr:.2e} of {sref:.3}; {bad} unwritten outputs / wrong ring entries",
            labels[id]
        );
        assert!(
            bad == 0 && err <= 1e-2 * reference && serr <= 1e-5 * sref.max(1.0),
            "{}: output max|err| {err} (max|ref| {reference}), state max|err| {serr} (max|ref| {sref}), {bad} bad",
            labels[id]
        );
        seen += 1;
    }
    assert_eq!(seen, labels.len(), "cases run:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
