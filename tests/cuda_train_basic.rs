//! The GPU training kernels (`codegen/src/cuda/kernels/train_basic.rs`) without a GPU:
//! the source compiles with NVRTC for sm_90 with an empty log (skipped unless
//! `LIGERC_NVRTC_LIB_DIR` / `LIGERC_CUDA_INCLUDE` are set; required under `CI`), and the
//! kernels, run on the CPU through the fiber-based CUDA shim of
//! `codegen/src/cuda/emulate.rs` (g++), match the CPU runtime's forward ops, backward
//! rules, cross-entropy and AdamW on random shapes (f32: ≤ 1e-5 of the largest value).

mod common;

use std::fmt::Write as _;

use common::*;
use ligerc::codegen::cuda::emulate::SHIM;
use ligerc::codegen::cuda::kernels::train_basic::train_basic_source;
use ligerc::codegen::cuda::nvrtc;
use ligerc::ir::{NodeId, Op, RopeScaling, RopeSpec, VjpSpec};
use ligerc::runtime::ops::{eval_high_level, eval_vjp};
use ligerc::runtime::train::{AdamW, Moments};
use ligerc::runtime::{ExecState, Tensor};

#[test]
fn train_basic_compiles_with_nvrtc_sm90_cleanly() {
    let Some(include) = nvrtc_env() else { return };
    let c = nvrtc::compile("train_basic", train_basic_source(), "sm_90", &include)
        .unwrap_or_else(|e| panic!("train_basic: {e}"));
    assert!(c.cubin && !c.image.is_empty());
    assert!(
        nvrtc::log_diagnostics(&c.log).is_empty(),
        "NVRTC diagnostics:\n{}",
        c.log
    );
}

/// A splitmix64 stream of floats in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// One emulated check: named f32/i64 inputs, launch code, named f32 outputs.
struct Case {
    name: String,
    f32_in: Vec<(String, Vec<f32>)>,
    i64_in: Vec<(String, Vec<i64>)>,
    outs: Vec<(String, usize)>,
    code: String,
}

/// Runs every case in one emulated program; returns each case's outputs.
fn emulate(cases: &[Case]) -> Option<Vec<Vec<Vec<f32>>>> {
    let cxx = gxx()?;
    let dir = tempdir("cuda-train-basic");
    let mut src = String::from(SHIM);
    src.push_str(
        "inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }\n",
    );
    src.push_str("namespace k {\n");
    src.push_str(train_basic_source());
    src.push_str("\n} // namespace k\nusing namespace k;\n");
    src.push_str(
        "template <typename T> std::vector<T> slurp(const char* p) { FILE* f = std::fopen(p, \"rb\"); std::vector<T> v; T x; while (std::fread(&x, sizeof(T), 1, f) == 1) v.push_back(x); std::fclose(f); return v; }\n\
         static void spill(const char* p, const std::vector<float>& v) { FILE* f = std::fopen(p, \"wb\"); std::fwrite(v.data(), 4, v.size(), f); std::fclose(f); }\n\
         static unsigned cdiv(long a, long b) { return (unsigned)((a + b - 1) / b); }\n\
         int main() {\n",
    );
    for (ci, c) in cases.iter().enumerate() {
        let _ = writeln!(src, "  {{ // {}", c.name);
        for (n, v) in &c.f32_in {
            let p = dir.join(format!("c{ci}_{n}.bin"));
            std::fs::write(
                &p,
                v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
            )
            .unwrap();
            let _ = writeln!(src, "    auto {n} = slurp<float>(\"{}\");", p.display());
        }
        for (n, v) in &c.i64_in {
            let p = dir.join(format!("c{ci}_{n}.bin"));
            std::fs::write(
                &p,
                v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
            )
            .unwrap();
            let _ = writeln!(src, "    auto {n} = slurp<long long>(\"{}\");", p.display());
        }
        for (n, len) in &c.outs {
            let _ = writeln!(src, "    std::vector<float> {n}({len}, 0.0f);");
        }
        src.push_str(&c.code);
        for (n, _) in &c.outs {
            let p = dir.join(format!("c{ci}_out_{n}.bin"));
            let _ = writeln!(src, "    spill(\"{}\", {n});", p.display());
        }
        src.push_str("  }\n");
    }
    src.push_str("  return 0;\n}\n");
    let prog = gxx_build(&cxx, &dir, &src, "basic training kernels");
    run_emulation(&prog, &[] as &[&str], "basic training kernels");
    Some(
        cases
            .iter()
            .enumerate()
            .map(|(ci, c)| {
                c.outs
                    .iter()
                    .map(|(n, _)| {
                        std::fs::read(dir.join(format!("c{ci}_out_{n}.bin")))
                            .unwrap()
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect()
                    })
                    .collect()
            })
            .collect(),
    )
}

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::f32(shape.to_vec(), v.to_vec()).unwrap()
}

fn fwd(op: Op, args: &[&Tensor]) -> Vec<f32> {
    let r = eval_high_level(&op, NodeId::new(0), args, &mut ExecState::default()).unwrap();
    r[0].as_f32("out").unwrap().to_vec()
}

fn vjp(op: Op, wrt: usize, args: &[&Tensor]) -> Vec<f32> {
    let spec = VjpSpec {
        forward: Box::new(op),
        wrt: vec![wrt],
    };
    let r = eval_vjp(&spec, args, &ExecState::default()).unwrap();
    r[0].as_f32("grad").unwrap().to_vec()
}

/// Max |a − b| over max |b| (≥ 1e-30).
fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-30f32, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn emulated_training_kernels_match_the_cpu_runtime() {
    let mut rng = Rng(42);
    let mut cases = Vec::new();
    let mut want: Vec<Vec<Vec<f32>>> = Vec::new();
    let mut add = |c: Case, w: Vec<Vec<f32>>| {
        cases.push(c);
        want.push(w);
    };
    // RmsNorm forward and backward (odd widths, several rows).
    for (rows, dim) in [(3usize, 37usize), (5, 300)] {
        let (x, w, dy) = (
            rng.vec(rows * dim, 2.0),
            rng.vec(dim, 1.5),
            rng.vec(rows * dim, 1.0),
        );
        let (xt, wt, dyt) = (
            t(&[1, rows, dim], &x),
            t(&[dim], &w),
            t(&[1, rows, dim], &dy),
        );
        let eps = 1e-5f64;
        add(
            Case {
                name: format!("rmsnorm {rows}x{dim}"),
                f32_in: vec![("x".into(), x), ("w".into(), w), ("dy".into(), dy)],
                i64_in: vec![],
                outs: vec![
                    ("y".into(), rows * dim),
                    ("dx".into(), rows * dim),
                    ("dw".into(), dim),
                ],
                code: format!(
                    "    emu_launch(tr_rmsnorm, dim3{{{rows}}}, dim3{{256}}, 0, x.data(), w.data(), y.data(), {rows}, {dim}, (float){eps:e});\n\
                     emu_launch(tr_rmsnorm_dx, dim3{{{rows}}}, dim3{{256}}, 0, x.data(), w.data(), dy.data(), dx.data(), {rows}, {dim}, (double)(float){eps:e});\n\
                     std::vector<double> inv({rows});\n\
                     emu_launch(tr_row_inv_rms, dim3{{{rows}}}, dim3{{256}}, 0, x.data(), inv.data(), {rows}, {dim}, (double)(float){eps:e});\n\
                     emu_launch(tr_rmsnorm_dw, dim3{{cdiv({dim}, 256)}}, dim3{{256}}, 0, x.data(), dy.data(), inv.data(), dw.data(), {rows}, {dim});\n"
                ),
            },
            vec![
                fwd(Op::RmsNorm { eps }, &[&xt, &wt]),
                vjp(Op::RmsNorm { eps }, 0, &[&xt, &wt, &dyt]),
                vjp(Op::RmsNorm { eps }, 1, &[&xt, &wt, &dyt]),
            ],
        );
    }
    // SwiGlu forward and both gradients; residual add.
    {
        let n = 1000usize;
        let (g, u, dy) = (rng.vec(n, 6.0), rng.vec(n, 2.0), rng.vec(n, 1.0));
        let (gt, ut, dyt) = (
            t(&[1, 8, 125], &g),
            t(&[1, 8, 125], &u),
            t(&[1, 8, 125], &dy),
        );
        let sum: Vec<f32> = g.iter().zip(&u).map(|(a, b)| a + b).collect();
        add(
            Case {
                name: "swiglu + add".into(),
                f32_in: vec![("g".into(), g), ("u".into(), u), ("dy".into(), dy)],
                i64_in: vec![],
                outs: vec![
                    ("y".into(), n),
                    ("dg".into(), n),
                    ("du".into(), n),
                    ("s".into(), n),
                ],
                code: format!(
                    "    emu_launch(tr_swiglu, dim3{{cdiv({n}, 256)}}, dim3{{256}}, 0, g.data(), u.data(), y.data(), {n}LL);\n\
                     emu_launch(tr_swiglu_dg, dim3{{cdiv({n}, 256)}}, dim3{{256}}, 0, g.data(), u.data(), dy.data(), dg.data(), {n}LL);\n\
                     emu_launch(tr_swiglu_du, dim3{{cdiv({n}, 256)}}, dim3{{256}}, 0, g.data(), dy.data(), du.data(), {n}LL);\n\
                     emu_launch(tr_add, dim3{{cdiv({n}, 256)}}, dim3{{256}}, 0, g.data(), u.data(), s.data(), {n}LL);\n"
                ),
            },
            vec![
                fwd(Op::SwiGlu, &[&gt, &ut]),
                vjp(Op::SwiGlu, 0, &[&gt, &ut, &dyt]),
                vjp(Op::SwiGlu, 1, &[&gt, &ut, &dyt]),
                sum,
            ],
        );
    }
    // f32 → bf16 (the activations of a product with a bf16 frozen weight):
    // bit-exact against `half`'s round-to-nearest-even, ties, subnormals and
    // infinities included.
    {
        let mut x = rng.vec(300, 3.0);
        x.extend([
            1.0 + f32::EPSILON * 64.0,  // a tie below an even mantissa: down
            1.0 + f32::EPSILON * 192.0, // a tie below an odd mantissa: up
            1e-40,
            -3.4e38,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
        ]);
        let n = x.len();
        let want: Vec<f32> = x
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect();
        add(
            Case {
                name: "tr_to_bf16".into(),
                f32_in: vec![("x".into(), x)],
                i64_in: vec![],
                outs: vec![("y".into(), n)],
                code: format!(
                    "    {{ std::vector<unsigned short> hb({n});\n\
                     emu_launch(tr_to_bf16, dim3{{cdiv({n}, 256)}}, dim3{{256}}, 0, x.data(), hb.data(), {n}LL);\n\
                     for (long i = 0; i < {n}; ++i) {{ uint32_t u = (uint32_t)hb[i] << 16; std::memcpy(&y[i], &u, 4); }} }}\n"
                ),
            },
            vec![want],
        );
    }
    // Rope forward and backward: 2 rows × 7 tokens, 3 heads of 10, tables as the runtime builds them.
    {
        let (batch, seq, heads, d) = (2usize, 7usize, 3usize, 10usize);
        let spec = RopeSpec {
            heads,
            head_dim: d,
            theta: 10000.0,
            scaling: RopeScaling::None,
        };
        let half = d / 2;
        let inv: Vec<f32> = spec.inv_freq().into_iter().map(|f| f as f32).collect();
        let (mut cos, mut sin) = (vec![0.0f32; seq * half], vec![0.0f32; seq * half]);
        for t in 0..seq {
            for i in 0..half {
                let a = t as f32 * inv[i];
                cos[t * half + i] = a.cos();
                sin[t * half + i] = a.sin();
            }
        }
        let n = batch * seq * heads * d;
        let (x, dy) = (rng.vec(n, 1.0), rng.vec(n, 1.0));
        let (xt, dyt) = (
            t(&[batch, seq, heads * d], &x),
            t(&[batch, seq, heads * d], &dy),
        );
        let rows = batch * seq;
        let f = heads * d;
        add(
            Case {
                name: "rope".into(),
                f32_in: vec![
                    ("x".into(), x),
                    ("dy".into(), dy),
                    ("c".into(), cos),
                    ("s".into(), sin),
                ],
                i64_in: vec![],
                outs: vec![("y".into(), n), ("dx".into(), n)],
                code: format!(
                    "    emu_launch(tr_rope, dim3{{cdiv({rows} * {f} / 2, 256)}}, dim3{{256}}, 0, x.data(), c.data(), s.data(), y.data(), {rows}, {seq}, {f}, {half}, 1);\n\
                     emu_launch(tr_rope, dim3{{cdiv({rows} * {f} / 2, 256)}}, dim3{{256}}, 0, dy.data(), c.data(), s.data(), dx.data(), {rows}, {seq}, {f}, {half}, -1);\n"
                ),
            },
            vec![
                fwd(Op::Rope(spec.clone()), &[&xt]),
                vjp(Op::Rope(spec), 0, &[&xt, &dyt]),
            ],
        );
    }
    // Cross-entropy: loss sum, count and gradient, with ignored positions.
    {
        let (rows, vocab) = (9usize, 301usize);
        let logits = rng.vec(rows * vocab, 8.0);
        let targets: Vec<i64> = (0..rows as i64)
            .map(|r| {
                if r % 4 == 3 {
                    -100
                } else {
                    (r * 37) % vocab as i64
                }
            })
            .collect();
        let lt = t(&[1, rows, vocab], &logits);
        let tt = Tensor::i64(vec![1, rows], targets.clone()).unwrap();
        let scale = 0.125f32;
        let op = Op::CrossEntropy { ignore_index: -100 };
        let r =
            eval_high_level(&op, NodeId::new(0), &[&lt, &tt], &mut ExecState::default()).unwrap();
        let (ls, lc) = (r[0].as_f32("l").unwrap()[0], r[1].as_f32("c").unwrap()[0]);
        let dy = t(&[], &[scale]);
        add(
            Case {
                name: "cross-entropy".into(),
                f32_in: vec![("x".into(), logits), ("dy".into(), vec![scale])],
                i64_in: vec![("tg".into(), targets)],
                outs: vec![("sum".into(), 2), ("dx".into(), rows * vocab)],
                code: format!(
                    "    std::vector<double> lse({rows}), loss({rows});\n\
                     emu_launch(tr_xent_rows, dim3{{{rows}}}, dim3{{256}}, 0, x.data(), tg.data(), lse.data(), loss.data(), {rows}, {vocab}, -100LL);\n\
                     emu_launch(tr_xent_sum, dim3{{1}}, dim3{{256}}, 0, loss.data(), tg.data(), sum.data(), {rows}, {vocab}, -100LL);\n\
                     emu_launch(tr_xent_grad, dim3{{{rows}}}, dim3{{256}}, 0, x.data(), tg.data(), lse.data(), dy.data(), dx.data(), {rows}, {vocab}, -100LL);\n"
                ),
            },
            vec![vec![ls, lc], vjp(op, 0, &[&lt, &tt, &dy])],
        );
    }
    // Gradient sum of squares and AdamW (with a clip factor) against the CPU optimizer.
    {
        let n = 3000usize;
        let (p, g) = (rng.vec(n, 1.0), rng.vec(n, 0.01));
        let (m0, v0) = (
            rng.vec(n, 0.001),
            rng.vec(n, 1e-5).iter().map(|v| v.abs()).collect::<Vec<_>>(),
        );
        let adamw = AdamW::default();
        let (lr, step, clip) = (1e-3f64, 3u64, 0.5f32);
        let mut cp = p.clone();
        let gs: Vec<f32> = g.iter().map(|x| x * clip).collect();
        let mut mom = Moments {
            m: m0.clone(),
            v: v0.clone(),
        };
        adamw.update(&mut cp, &gs, &mut mom, lr, step);
        let sumsq = g.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() as f32;
        let c1 = 1.0 - adamw.beta1.powf(step as f64);
        let c2 = 1.0 - adamw.beta2.powf(step as f64);
        let decay = (1.0 - lr * adamw.weight_decay) as f32;
        add(
            Case {
                name: "adamw".into(),
                f32_in: vec![
                    ("p".into(), p),
                    ("g".into(), g),
                    ("m".into(), m0),
                    ("v".into(), v0),
                ],
                i64_in: vec![],
                outs: vec![
                    ("pout".into(), n),
                    ("mout".into(), n),
                    ("vout".into(), n),
                    ("ss".into(), 1),
                ],
                code: format!(
                    "    std::vector<double> part(120), tot(1);\n\
                     emu_launch(tr_sumsq_partial, dim3{{120}}, dim3{{256}}, 0, g.data(), {n}LL, part.data());\n\
                     emu_launch(tr_sum_partials, dim3{{1}}, dim3{{256}}, 0, part.data(), 120, tot.data());\n\
                     ss[0] = (float)tot[0];\n\
                     emu_launch(tr_adamw, dim3{{cdiv({n}, 256)}}, dim3{{256}}, 0, p.data(), g.data(), m.data(), v.data(), {n}LL, {clip:e}f, {lr:e}, {b1:e}, {b2:e}, {eps:e}, {decay:e}f, {c1:e}, {c2:e});\n\
                     pout = p; mout = m; vout = v;\n",
                    b1 = adamw.beta1,
                    b2 = adamw.beta2,
                    eps = adamw.eps,
                ),
            },
            vec![cp, mom.m, mom.v, vec![sumsq]],
        );
    }
    let Some(got) = emulate(&cases) else { return };
    for ((c, g), w) in cases.iter().zip(&got).zip(&want) {
        for (((name, _), a), b) in c.outs.iter().zip(g).zip(w) {
            if c.name == "tr_to_bf16" {
                let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "tr_to_bf16 differs from half::bf16::from_f32");
                continue;
            }
            let e = rel(a, b);
            eprintln!("{}: {name}: max error {e:.2e} of max |cpu|", c.name);
            assert!(e <= 1e-5, "{}: {name}: error {e:e} > 1e-5", c.name);
        }
    }
}
