//! The LigerGate / LigerAttention training kernels
//! (`codegen::cuda::kernels::liger_train`) without a GPU:
//!
//! - every source compiles with NVRTC for sm_90 with an empty log, and names
//!   every kernel its launch lists use;
//! - run on the CPU through the CUDA emulation shim (`codegen::cuda::emulate::SHIM`,
//!   g++), the forward and backward launch lists match the CPU runtime
//!   (`eval_high_level`, `eval_vjp`) to 1e-4 of each output's max |value|, on
//!   odd lengths, lengths below the window and past one chunk, batch > 1,
//!   GQA 2:1 and 3:1, and extreme gates (near 0 and near −30), and for the
//!   window kernels' tiles GQA 4:1, 8:1 and 66:1, head dims 6, 20 and 128, a
//!   window past one key tile; every output and the scratch start as NaN, so
//!   an element a launch forgets fails.
//!
//! `LIGERC_TRAIN_KERNELS_DUMP=DIR cargo test --test cuda_train_kernels dump -- --ignored`
//! writes the sources and launch lists `scripts/gpu_train_kernels.py` runs on a GPU.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ligerc::codegen::cuda::CudaError;
use ligerc::codegen::cuda::emulate::SHIM;
use ligerc::codegen::cuda::kernels::liger_train::*;
use ligerc::ir::{GateSpec, LigerSpec, LigerVariant, NodeId, Op, VjpSpec};
use ligerc::runtime::ops::{eval_high_level, eval_vjp};
use ligerc::runtime::{ExecState, Tensor};

use common::{compile_all, gxx, gxx_build, nvrtc_env, run_emulation};

const ATTENTION_OUT: [&str; 7] = ["y", "dq", "dk", "dv", "dq_rot", "dk_rot", "dgate"];

fn spec(v: LigerVariant, h: usize, kv: usize, d: usize, w: usize, mix: (f64, f64)) -> LigerSpec {
    LigerSpec {
        variant: v,
        heads: h,
        kv_heads: kv,
        head_dim: d,
        window: w,
        mix_window: mix.0,
        mix_linear: mix.1,
        slots: 0,
    }
}

/// A GSA spec with `slots` slots.
fn gsa(h: usize, kv: usize, d: usize, slots: usize, w: usize, mix: (f64, f64)) -> LigerSpec {
    LigerSpec {
        slots,
        ..spec(LigerVariant::Gsa, h, kv, d, w, mix)
    }
}

fn gate_spec(v: LigerVariant, kv: usize, d: usize, slots: usize) -> GateSpec {
    GateSpec {
        variant: v,
        kv_heads: kv,
        head_dim: d,
        slots,
        normalizer: v.default_normalizer(),
    }
}

/// splitmix64 uniforms in `[lo, hi)`.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (hi - lo) * self.next()) as f32)
            .collect()
    }
    /// Log-gates `[n / width][width]`: moderate (−0.05..0, memory across
    /// chunks), or extreme by channel: near 0 (−1e-3..0), near −30, or per
    /// element one of the three.
    fn gates(&mut self, n: usize, width: usize, extreme: bool) -> Vec<f32> {
        (0..n)
            .map(|e| {
                let class = if extreme { (e % width) % 3 } else { 3 };
                let class = if class == 2 {
                    (self.next() * 3.0) as usize
                } else {
                    class
                };
                let x = match class {
                    0 => -1e-3 * self.next(),
                    1 => -30.0 + self.next(),
                    _ => -0.05 * self.next(),
                };
                x as f32
            })
            .collect()
    }
}

/// The pass bound of a `TrainMath::Bf16` case, relative to the output's
/// largest element (or the 1% floor): the products' operands are rounded to
/// bf16 (relative error ≤ 2^-9 each, so ≤ 2^-8 ≈ 3.9e-3 a product), the sums
/// accumulate in f32, and a gradient chains two or three such products
/// (scores, probabilities, then the gradient's own product), each of whose
/// rounding errors is bounded by the largest term rather than the result:
/// 3 × 3.9e-3 ≈ 1.2e-2, rounded up to 2e-2. The f32 cases keep 1e-4.
const TC_TOL: f64 = 2e-2;

/// One emulated LigerAttention case: spec, math, batch, seq, inputs in `TrainArg` order.
struct Case {
    spec: LigerSpec,
    math: TrainMath,
    batch: usize,
    seq: usize,
    /// q, k, v, q_rot, k_rot, gate (empty without), dy.
    inputs: Vec<Vec<f32>>,
}

impl Case {
    fn new(spec: LigerSpec, batch: usize, seq: usize, extreme: bool, seed: u64) -> Case {
        let mut r = Rng(seed);
        let (hd, kd) = (spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim);
        let n = batch * seq;
        let width = spec.variant.gate_width(spec.head_dim, spec.slots);
        let gate = if spec.variant.has_gate() {
            r.gates(n * spec.kv_heads * width, spec.kv_heads * width, extreme)
        } else {
            Vec::new()
        };
        let inputs = vec![
            r.vec(n * hd, -2.0, 2.0),
            r.vec(n * kd, -2.0, 2.0),
            r.vec(n * kd, -1.0, 1.0),
            r.vec(n * hd, -1.5, 1.5),
            r.vec(n * kd, -1.5, 1.5),
            gate,
            r.vec(n * hd, -1.0, 1.0),
        ];
        Case {
            spec,
            math: TrainMath::F32,
            batch,
            seq,
            inputs,
        }
    }

    /// The same case with bf16 tensor-core products.
    fn tc(self) -> Case {
        Case {
            math: TrainMath::Bf16,
            ..self
        }
    }

    /// The pass bound of every output's relative error.
    fn tol(&self) -> f64 {
        match self.math {
            TrainMath::F32 => 1e-4,
            TrainMath::Bf16 => TC_TOL,
        }
    }

    /// Element counts of the outputs, in `ATTENTION_OUT` order.
    fn out_sizes(&self) -> Vec<usize> {
        let i = &self.inputs;
        vec![
            i[0].len(),
            i[0].len(),
            i[1].len(),
            i[2].len(),
            i[3].len(),
            i[4].len(),
            i[5].len(),
        ]
    }

    /// The CPU runtime's y and gradients, in `ATTENTION_OUT` order.
    fn reference(&self) -> Vec<Vec<f32>> {
        let (b, t) = (self.batch, self.seq);
        let tensor = |x: &Vec<f32>| Tensor::f32(vec![b, t, x.len() / (b * t)], x.clone()).unwrap();
        let fwd: Vec<Tensor> = self.inputs[..6]
            .iter()
            .filter(|x| !x.is_empty())
            .map(tensor)
            .collect();
        let refs: Vec<&Tensor> = fwd.iter().collect();
        let op = Op::LigerAttention(self.spec.clone());
        let mut state = ExecState::default();
        let y = eval_high_level(&op, NodeId::new(0), &refs, &mut state).unwrap();
        let dy = tensor(&self.inputs[6]);
        let mut with_dy = refs.clone();
        with_dy.push(&dy);
        let vjp = VjpSpec {
            forward: Box::new(op),
            wrt: (0..fwd.len()).collect(),
        };
        let grads = eval_vjp(&vjp, &with_dy, &state).unwrap();
        let mut out: Vec<Vec<f32>> = std::iter::once(&y[0])
            .chain(&grads)
            .map(|t| t.as_f32("ref").unwrap().to_vec())
            .collect();
        out.resize(7, Vec::new());
        out
    }
}

/// Where the harnesses place the saved buffer in their one buffer: after the
/// `scratch` floats, at a 256-byte boundary as a device allocation's start
/// (the kernels store 16-byte rows there).
fn saved_at(scratch: usize) -> usize {
    scratch.next_multiple_of(64)
}

/// `launches` with the saved buffer placed at `saved_at(scratch)`: the
/// harnesses run a forward and its backward on one buffer of
/// `saved_at(liger_scratch_floats) + liger_saved_floats` floats, which hands
/// the backward what its forward saved, as the runtime does with two buffers.
fn saved_after_scratch(launches: Vec<TrainLaunch>, scratch: usize) -> Vec<TrainLaunch> {
    let scratch = saved_at(scratch);
    launches
        .into_iter()
        .map(|mut l| {
            for a in &mut l.args {
                if let TrainArg::Saved { offset_floats } = *a {
                    *a = TrainArg::Scratch {
                        offset_floats: scratch + offset_floats,
                    };
                }
            }
            l
        })
        .collect()
}

/// Floats of the harnesses' one buffer for `spec` at `batch × seq`: the
/// scratch, then the saved buffer at `saved_at`.
fn one_buffer_floats(spec: &LigerSpec, math: TrainMath, batch: usize, seq: usize) -> usize {
    saved_at(liger_scratch_floats(spec, math, batch, seq))
        + liger_saved_floats(spec, math, batch, seq)
}

/// One forward then its backward for `spec` at `batch × seq` (saved buffer
/// after the scratch), and the floats of that one buffer.
fn forward_backward(
    spec: &LigerSpec,
    math: TrainMath,
    batch: usize,
    seq: usize,
) -> (Vec<TrainLaunch>, usize) {
    let mut launches = liger_forward_launches(spec, math, batch, seq).unwrap();
    launches.extend(liger_backward_launches(spec, math, batch, seq).unwrap());
    let scratch = liger_scratch_floats(spec, math, batch, seq);
    (
        saved_after_scratch(launches, scratch),
        one_buffer_floats(spec, math, batch, seq),
    )
}

/// The C++ expression binding one kernel argument.
fn arg_expr(a: TrainArg) -> String {
    use TrainArg::*;
    let buf = |i: usize| format!("bufs[{i}]");
    match a {
        Q => buf(0),
        K => buf(1),
        V => buf(2),
        QRot => buf(3),
        KRot => buf(4),
        Gate => buf(5),
        DY => buf(6),
        Y => buf(7),
        DQ => buf(8),
        DK => buf(9),
        DV => buf(10),
        DQRot => buf(11),
        DKRot => buf(12),
        DGate => buf(13),
        Scratch { offset_floats } => format!("(scratch + {offset_floats})"),
        Saved { .. } => unreachable!("saved_after_scratch maps the saved buffer into the scratch"),
        Batch => "(int)batch".into(),
        Seq => "(int)seq".into(),
    }
}

/// The kernel source as plain C++ for the shim, in namespace `ns`.
fn emulated(ns: &str, src: &str) -> String {
    // C++ linkage, so that specs with equal kernel names coexist in one program.
    let body = ligerc::codegen::cuda::emulate::emulation_body(src).replace("extern \"C\" ", "");
    format!("namespace {ns} {{\n{body}\n}} // namespace {ns}\n")
}

/// `void NAME(float** bufs, float* scratch, long batch, long seq)` running `launches` in order.
fn runner(name: &str, ns: &str, launches: &[TrainLaunch]) -> String {
    let mut s = format!(
        "void {name}(float** bufs, float* scratch, long batch, long seq) {{\n    (void)bufs; (void)scratch; (void)batch; (void)seq;\n"
    );
    for l in launches {
        let args: Vec<String> = l.args.iter().map(|&a| arg_expr(a)).collect();
        let _ = writeln!(
            s,
            "    emu_launch({ns}::{}, dim3{{{}, {}, {}}}, dim3{{{}, 1, 1}}, {}, {});",
            l.kernel,
            l.grid.0,
            l.grid.1,
            l.grid.2,
            l.block,
            l.dynamic_smem,
            args.join(", ")
        );
    }
    s.push_str("}\n");
    s
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ligerc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_f32(path: &Path, xs: &[&Vec<f32>]) {
    let bytes: Vec<u8> = xs
        .iter()
        .flat_map(|x| x.iter())
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(path, bytes).unwrap();
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `main`'s handling of one case: read the inputs, NaN-fill outputs and
/// scratch, run `run`, write the outputs.
fn main_case(i: usize, run: &str, ins: &[usize], outs: &[usize], scratch: usize) -> String {
    let mut s = format!(
        "    {{\n        std::vector<std::vector<float>> b({});\n",
        ins.len() + outs.len()
    );
    let _ = writeln!(
        s,
        "        FILE* f = std::fopen((dir + \"/case{i}.in\").c_str(), \"rb\"); if (!f) return 1;"
    );
    for (k, n) in ins.iter().enumerate() {
        let _ = writeln!(
            s,
            "        b[{k}].resize({n} + 1); if (std::fread(b[{k}].data(), 4, {n}, f) != (size_t){n}) return 1;"
        );
    }
    s.push_str("        std::fclose(f);\n");
    for (k, n) in outs.iter().enumerate() {
        let _ = writeln!(s, "        b[{}].assign({n} + 1, NAN);", ins.len() + k);
    }
    let _ = writeln!(
        s,
        "        std::vector<float> sc({scratch} + 1, NAN);\n        std::vector<float*> p;\n        for (auto& x : b) p.push_back(x.size() > 1 ? x.data() : nullptr);"
    );
    let _ = writeln!(
        s,
        "        {run}(p.data(), sc.data());\n        f = std::fopen((dir + \"/case{i}.out\").c_str(), \"wb\");"
    );
    for (k, n) in outs.iter().enumerate() {
        let _ = writeln!(
            s,
            "        std::fwrite(b[{}].data(), 4, {n}, f);",
            ins.len() + k
        );
    }
    s.push_str("        std::fclose(f);\n    }\n");
    s
}

/// max |x| over `xs`.
fn max_abs(xs: &[f32]) -> f64 {
    xs.iter().fold(0.0f64, |m, &x| m.max(f64::from(x).abs()))
}

/// max |ours − ref| / max(max |ref|, floor) (NaN-safe: a NaN anywhere gives
/// infinity). `floor` matters only for a tensor that is zero up to rounding
/// (the gate gradient of a one-token sequence, the window gradients of a
/// query seeing one key), whose own max is that rounding.
fn rel_err(ours: &[f32], reference: &[f32], floor: f64) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let scale = max_abs(reference).max(floor);
    let mut worst = 0.0f64;
    for (&a, &b) in ours.iter().zip(reference) {
        let d = (f64::from(a) - f64::from(b)).abs();
        if d.is_nan() {
            return f64::INFINITY;
        }
        worst = worst.max(d);
    }
    if scale == 0.0 { worst } else { worst / scale }
}

fn attention_cases() -> Vec<Case> {
    use LigerVariant::*;
    let half = (0.5, 0.5);
    vec![
        // GQA 2:1, two chunks (67 = 64 + 3), batch 2, extreme gates.
        Case::new(spec(Gla, 4, 2, 16, 4, half), 2, 67, true, 1),
        // GQA 3:1, T below the window, other mixes.
        Case::new(spec(Gla, 3, 1, 16, 64, (0.3, 0.7)), 1, 37, false, 2),
        // Tiny sequences, batch 3.
        Case::new(spec(Gla, 2, 1, 16, 4, half), 3, 1, true, 3),
        Case::new(spec(Gla, 2, 2, 16, 2, half), 3, 5, false, 4),
        // D 64 (two value / key-row tiles), window 64.
        Case::new(spec(Gla, 2, 1, 64, 64, half), 1, 70, true, 5),
        Case::new(spec(Hgrn2, 4, 2, 16, 4, half), 2, 70, true, 6),
        Case::new(spec(Hgrn2, 3, 1, 16, 0, half), 1, 33, false, 7),
        Case::new(spec(Retention, 2, 1, 32, 0, half), 1, 130, true, 8),
        Case::new(spec(Retention, 3, 1, 16, 4, (0.2, 0.8)), 2, 41, false, 9),
        Case::new(spec(Linear, 4, 2, 16, 4, half), 2, 65, false, 10),
        Case::new(spec(SwaOnly, 4, 2, 16, 4, (1.0, 0.0)), 2, 21, false, 11),
        // The tilings of the recurrence kernels at run time: D 128 with chunk 16 and GQA 4:1
        // (extreme gates), D not a multiple of 4, two head passes with partial column groups
        // (D 68, GQA 5:1), one KV head for 16 query heads, D 6, D 36.
        Case::new(spec(Gla, 8, 2, 128, 8, half), 1, 40, true, 30),
        Case::new(spec(Gla, 3, 1, 20, 4, half), 2, 45, true, 31),
        Case::new(spec(Retention, 10, 2, 68, 4, half), 1, 35, false, 32),
        Case::new(spec(Hgrn2, 16, 1, 64, 4, half), 1, 20, true, 33),
        Case::new(spec(Linear, 2, 1, 6, 4, half), 1, 70, false, 34),
        Case::new(spec(Gla, 5, 1, 36, 4, (0.0, 1.0)), 1, 50, true, 35),
        // Recurrent only (mix_window 0), three chunks, moderate gates.
        Case::new(spec(Gla, 2, 1, 16, 4, (0.0, 1.0)), 1, 150, false, 12),
        // Full causal softmax attention (the GPU trainer's `Attention`): an
        // unbounded window, no recurrence.
        Case::new(
            spec(SwaOnly, 4, 2, 16, 1 << 29, (1.0, 0.0)),
            2,
            45,
            false,
            13,
        ),
        // GSA: GQA 2:1, D 16, 8 slots, three chunks, batch 2, extreme gates.
        Case::new(gsa(4, 2, 16, 8, 4, half), 2, 70, true, 14),
        // GQA 3:1, T below the window, 16 slots, other mixes.
        Case::new(gsa(3, 1, 32, 16, 64, (0.3, 0.7)), 1, 37, false, 15),
        // M = D, two chunks, extreme gates.
        Case::new(gsa(2, 1, 16, 16, 4, half), 1, 67, true, 16),
        // Recurrent only (mix_window 0), four chunks, moderate gates (memory across chunks).
        Case::new(gsa(2, 2, 16, 4, 4, (0.0, 1.0)), 1, 100, false, 17),
        // Tiny sequences, batch 3.
        Case::new(gsa(2, 1, 16, 8, 4, half), 3, 1, true, 18),
        // D 64, 48 slots (softmax rows over two lane rounds).
        Case::new(gsa(2, 1, 64, 48, 64, half), 1, 40, true, 19),
        // Window tiling: GQA 4:1 at D 128, a window past one key tile (32), query tiles of 16
        // tokens, a partial last tile.
        Case::new(spec(SwaOnly, 8, 2, 128, 70, (1.0, 0.0)), 1, 100, false, 20),
        // GQA 8:1, D 20 (no float4 row padding), batch 2.
        Case::new(spec(SwaOnly, 8, 1, 20, 40, (1.0, 0.0)), 2, 50, false, 21),
        // 66 query heads of one KV head (two head groups a query block, three a key-side
        // tile), D 6 (a partial float4 column, scalar stores).
        Case::new(spec(SwaOnly, 66, 1, 6, 5, (1.0, 0.0)), 1, 9, false, 22),
        // Head dims whose window tiles shrink to fit shared memory: D 212 (one row a thread,
        // 32-key tiles), D 452 (16-key tiles, single buffers).
        Case::new(gsa(2, 1, 212, 2, 40, half), 1, 37, false, 23),
        Case::new(gsa(2, 1, 452, 1, 20, half), 1, 23, false, 24),
        // bf16 tensor-core products (`TrainMath::Bf16`): GQA 4:1 at D 128 over three chunks
        // and two query tiles with extreme gates, D 64 GQA 3:1 with the window past the
        // sequence, a partial last chunk at D 16, softmax attention (unbounded window).
        Case::new(spec(Gla, 8, 2, 128, 64, half), 1, 100, true, 40).tc(),
        Case::new(spec(Gla, 3, 1, 64, 64, (0.3, 0.7)), 2, 37, false, 41).tc(),
        Case::new(spec(Gla, 4, 2, 16, 4, half), 2, 67, true, 42).tc(),
        Case::new(spec(Hgrn2, 4, 2, 32, 8, half), 1, 50, true, 43).tc(),
        // The tensor-core recurrence: every keyed variant, D 16/32/64/128, GQA 1:1, 3:1, 4:1,
        // lengths past several chunks and off the chunk and sub-chunk grid, batch > 1,
        // extreme gates (near 0 and near -30 a token).
        Case::new(spec(Gla, 4, 1, 128, 4, half), 1, 150, true, 45).tc(),
        Case::new(spec(Gla, 3, 1, 64, 4, (0.0, 1.0)), 2, 141, true, 46).tc(),
        Case::new(spec(Hgrn2, 2, 2, 32, 4, half), 2, 75, true, 47).tc(),
        Case::new(spec(Hgrn2, 3, 1, 128, 4, (0.0, 1.0)), 1, 70, false, 48).tc(),
        Case::new(spec(Retention, 4, 1, 16, 4, half), 2, 83, true, 49).tc(),
        Case::new(spec(Retention, 3, 3, 64, 4, (0.0, 1.0)), 1, 99, false, 50).tc(),
        Case::new(spec(Linear, 3, 1, 32, 4, (0.0, 1.0)), 1, 70, false, 51).tc(),
        Case::new(spec(Linear, 4, 4, 16, 4, half), 3, 5, false, 52).tc(),
        // At the tensor-core chunk (64): three and four chunks with a partial last one, GQA
        // 4:1, 1:1 and 3:1, batch > 1, extreme gates.
        Case::new(spec(Gla, 8, 2, 128, 4, half), 2, 197, true, 53).tc(),
        Case::new(spec(Hgrn2, 2, 2, 32, 4, (0.0, 1.0)), 2, 140, true, 54).tc(),
        Case::new(spec(Retention, 3, 1, 64, 4, half), 1, 231, true, 55).tc(),
        Case::new(spec(Linear, 4, 1, 16, 4, (0.0, 1.0)), 1, 211, false, 56).tc(),
        Case::new(
            spec(SwaOnly, 4, 2, 64, 1 << 29, (1.0, 0.0)),
            1,
            45,
            false,
            44,
        )
        .tc(),
        // The tensor-core window kernels (`liger_train_win_tc.rs`): GQA 1:1 at D 16 with
        // window 0, 4:1 at D 64 with window 3, 8:1 at D 128 with a window past four key tiles
        // (70), T below the window and off the 16-token grid, batch > 1; softmax attention at
        // D 128 over more key tiles than one shared-memory stage holds; 4 and 2 row / key
        // tiles a block (the launch picks them from batch · seq: every SM a block).
        Case::new(spec(SwaOnly, 2, 2, 16, 0, (1.0, 0.0)), 2, 37, false, 60).tc(),
        Case::new(spec(SwaOnly, 8, 2, 64, 3, (1.0, 0.0)), 1, 50, false, 61).tc(),
        Case::new(spec(SwaOnly, 8, 1, 128, 70, (1.0, 0.0)), 1, 90, false, 62).tc(),
        Case::new(spec(Gla, 8, 2, 128, 64, half), 2, 40, false, 63).tc(),
        Case::new(spec(Gla, 4, 4, 64, 64, (0.3, 0.7)), 2, 83, true, 64).tc(),
        Case::new(
            spec(SwaOnly, 2, 2, 128, 1 << 29, (1.0, 0.0)),
            1,
            200,
            false,
            65,
        )
        .tc(),
        Case::new(spec(SwaOnly, 2, 1, 32, 20, (0.7, 0.0)), 4, 2112, false, 66).tc(),
        Case::new(spec(SwaOnly, 1, 1, 16, 40, (1.0, 0.0)), 2, 2110, false, 67).tc(),
    ]
}

fn gate_cases() -> Vec<(GateSpec, usize, usize)> {
    use LigerVariant::*;
    vec![
        (gate_spec(Gla, 2, 16, 0), 2, 9),
        (gate_spec(Hgrn2, 2, 16, 0), 1, 7),
        (gate_spec(Retention, 3, 16, 0), 2, 5),
        // 6 slots over 16 channels: overlapping bins.
        (gate_spec(Gsa, 2, 16, 6), 2, 5),
        (gate_spec(Gsa, 1, 64, 64), 1, 3),
    ]
}

#[test]
fn training_kernels_match_the_cpu_runtime_in_emulation() {
    let Some(cxx) = gxx() else { return };
    let dir = scratch_dir("train-kernels");
    let cases = attention_cases();
    let gates = gate_cases();
    let mut prog = String::from(SHIM);
    prog.push_str("#include <string>\n");
    let mut main = String::from(
        "int main(int argc, char** argv) {\n    if (argc != 2) return 2;\n    const std::string dir = argv[1];\n",
    );
    let mut refs = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let ns = format!("a{i}");
        prog.push_str(&emulated(
            &ns,
            &liger_train_source(&c.spec, c.math).unwrap(),
        ));
        let (launches, scratch) = forward_backward(&c.spec, c.math, c.batch, c.seq);
        let run = format!("run_case{i}");
        prog.push_str(&runner(&run, &ns, &launches));
        let sizes: Vec<usize> = c.inputs.iter().map(Vec::len).collect();
        let call = format!(
            "[&](float** p, float* s) {{ {run}(p, s, {}, {}); }}",
            c.batch, c.seq
        );
        main.push_str(&main_case(i, &call, &sizes, &c.out_sizes(), scratch));
        write_f32(
            &dir.join(format!("case{i}.in")),
            &c.inputs.iter().collect::<Vec<_>>(),
        );
        refs.push(c.reference());
    }
    let mut gate_refs = Vec::new();
    for (g, (gs, batch, seq)) in gates.iter().enumerate() {
        let i = cases.len() + g;
        let ns = format!("g{g}");
        prog.push_str(&emulated(&ns, &gate_train_source(gs).unwrap()));
        let mut launches = gate_forward_launches(gs, *batch, *seq).unwrap();
        launches.extend(gate_backward_launches(gs, *batch, *seq).unwrap());
        // Gate kernels bind K = bufs[1], Gate = bufs[5], DGate = bufs[13], DK = bufs[9].
        let run = format!("run_gate{g}");
        prog.push_str(&runner(&run, &ns, &launches));
        let mut r = Rng(100 + g as u64);
        let n = batch * seq;
        let k = r.vec(n * gs.kv_heads * gs.head_dim, -8.0, 8.0);
        let dgate = r.vec(n * gs.kv_heads * gs.width(), -1.0, 1.0);
        // Buffers: 14 slots as for attention; only K, DGate in, Gate, DK out.
        let ins = [0, k.len(), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, dgate.len()];
        let call = format!(
            "[&](float** p, float* s) {{ float* q[14]; for (int x = 0; x < 14; ++x) q[x] = p[x]; q[5] = p[14]; q[9] = p[15]; {run}(q, s, {batch}, {seq}); }}"
        );
        main.push_str(&main_case(i, &call, &ins, &[dgate.len(), k.len()], 0));
        write_f32(&dir.join(format!("case{i}.in")), &[&k, &dgate]);
        let kt = Tensor::f32(vec![*batch, *seq, k.len() / n], k.clone()).unwrap();
        let dg = Tensor::f32(vec![*batch, *seq, dgate.len() / n], dgate.clone()).unwrap();
        let op = Op::LigerGate(gs.clone());
        let mut state = ExecState::default();
        let gate = eval_high_level(&op, NodeId::new(0), &[&kt], &mut state).unwrap();
        let vjp = VjpSpec {
            forward: Box::new(op),
            wrt: vec![0],
        };
        let dk = eval_vjp(&vjp, &[&kt, &dg], &state).unwrap();
        gate_refs.push([
            gate[0].as_f32("gate").unwrap().to_vec(),
            dk[0].as_f32("dk").unwrap().to_vec(),
        ]);
    }
    main.push_str("    return 0;\n}\n");
    prog.push_str(&main);
    let exe = gxx_build(&cxx, &dir, &prog, "training kernels");
    run_emulation(&exe, &[&dir], "training kernels");
    let mut failures = Vec::new();
    for (i, (c, reference)) in cases.iter().zip(&refs).enumerate() {
        let ours = read_f32(&dir.join(format!("case{i}.out")));
        let mut at = 0;
        let mut line = format!(
            "{}{} h{} kv{} d{} w{} b{} t{}:",
            c.spec.variant,
            if c.math == TrainMath::Bf16 { " tc" } else { "" },
            c.spec.heads,
            c.spec.kv_heads,
            c.spec.head_dim,
            c.spec.window,
            c.batch,
            c.seq
        );
        // 1% of the largest gradient: the floor of tensors that are zero up to rounding.
        let floor = 1e-2
            * reference[1..]
                .iter()
                .map(|x| max_abs(x))
                .fold(0.0, f64::max);
        for (name, want) in ATTENTION_OUT.iter().zip(reference) {
            let got = &ours[at..at + want.len()];
            at += want.len();
            if want.is_empty() {
                continue;
            }
            let e = rel_err(got, want, floor);
            let _ = write!(line, " {name} {e:.1e}");
            if std::env::var_os("LIGERC_TRAIN_VERBOSE").is_some() {
                let (a, b) = (max_abs(got), max_abs(want));
                let _ = write!(line, " (max ours {a:.2e} ref {b:.2e})");
            }
            if e > c.tol() {
                failures.push(format!(
                    "case {i} ({} {:?}): {name} error {e:.3e}",
                    c.spec.variant, c.math
                ));
            }
        }
        eprintln!("{line}");
    }
    for (g, ((gs, batch, seq), [gate, dk])) in gates.iter().zip(&gate_refs).enumerate() {
        let ours = read_f32(&dir.join(format!("case{}.out", cases.len() + g)));
        let (eg, ek) = (
            rel_err(&ours[..gate.len()], gate, 0.0),
            rel_err(&ours[gate.len()..], dk, 0.0),
        );
        eprintln!(
            "gate {} kv{} d{} w{} b{batch} t{seq}: gate {eg:.1e} dk {ek:.1e}",
            gs.variant,
            gs.kv_heads,
            gs.head_dim,
            gs.width()
        );
        if eg > 1e-4 || ek > 1e-4 {
            failures.push(format!("gate {}: errors {eg:.3e} {ek:.3e}", gs.variant));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Specs of the NVRTC check: every supported variant, D 16/64/128, GQA 2:1
/// and 3:1, window 0/4/64, and the window kernels' smaller tilings (D 6, 20,
/// 212, 452; GQA 8:1, 66:1).
fn compile_specs() -> Vec<LigerSpec> {
    use LigerVariant::*;
    let mut out = Vec::new();
    for v in [Gla, Hgrn2, Retention, Linear, SwaOnly] {
        out.push(spec(v, 8, 4, 64, 64, (0.5, 0.5)));
        out.push(spec(v, 6, 2, 16, 4, (0.5, 0.5)));
    }
    out.push(spec(Gla, 4, 2, 16, 0, (0.0, 1.0)));
    out.push(spec(Gla, 32, 8, 128, 64, (0.5, 0.5)));
    out.push(gsa(8, 4, 64, 64, 64, (0.5, 0.5)));
    out.push(gsa(6, 2, 16, 8, 4, (0.5, 0.5)));
    out.push(gsa(4, 2, 16, 4, 0, (0.0, 1.0)));
    out.push(gsa(32, 8, 128, 128, 64, (0.5, 0.5)));
    out.push(gsa(32, 8, 128, 64, 64, (0.5, 0.5)));
    // The window kernels' other tilings and staging paths (D 6: one float a copy).
    out.push(spec(SwaOnly, 66, 1, 6, 5, (1.0, 0.0)));
    out.push(spec(SwaOnly, 8, 1, 20, 40, (1.0, 0.0)));
    out.push(gsa(2, 1, 212, 2, 40, (0.5, 0.5)));
    out.push(gsa(2, 1, 452, 1, 20, (0.5, 0.5)));
    out
}

#[test]
fn training_kernels_compile_with_nvrtc() {
    let Some(include) = nvrtc_env() else { return };
    let mut sources: Vec<(String, String, Vec<TrainLaunch>)> = Vec::new();
    for s in compile_specs() {
        for math in [TrainMath::F32, TrainMath::Bf16] {
            let mut l = liger_forward_launches(&s, math, 2, 100).unwrap();
            l.extend(liger_backward_launches(&s, math, 2, 100).unwrap());
            let label = format!(
                "{} h{} kv{} d{} w{} {math:?}",
                s.variant, s.heads, s.kv_heads, s.head_dim, s.window
            );
            sources.push((label, liger_train_source(&s, math).unwrap(), l));
        }
    }
    for (g, _, _) in gate_cases() {
        let mut l = gate_forward_launches(&g, 2, 100).unwrap();
        l.extend(gate_backward_launches(&g, 2, 100).unwrap());
        sources.push((
            format!("gate {} w{}", g.variant, g.width()),
            gate_train_source(&g).unwrap(),
            l,
        ));
    }
    let mut missing = Vec::new();
    for (label, src, launches) in &sources {
        for l in launches {
            if !src.contains(&format!("extern \"C\" __global__ void {}(", l.kernel)) {
                missing.push(format!("{label}: no kernel {}", l.kernel));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    compile_all(sources.iter().map(|(label, src, _)| (label, src)), &include);
}

#[test]
fn bad_specs_are_typed_errors() {
    use LigerVariant::*;
    let good = gsa(4, 2, 64, 32, 64, (0.5, 0.5));
    assert!(liger_train_source(&good, TrainMath::F32).is_ok());
    assert!(liger_scratch_floats(&good, TrainMath::F32, 1, 8) > 0);
    for slots in [0, 65] {
        let bad = gsa(4, 2, 64, slots, 64, (0.5, 0.5));
        for r in [
            liger_train_source(&bad, TrainMath::Bf16).map(|_| ()),
            liger_forward_launches(&bad, TrainMath::F32, 1, 8).map(|_| ()),
            liger_backward_launches(&bad, TrainMath::Bf16, 1, 8).map(|_| ()),
        ] {
            assert!(
                matches!(&r, Err(CudaError::Shape { problem, .. }) if problem.contains("GSA")),
                "{r:?}"
            );
        }
        assert_eq!(liger_scratch_floats(&bad, TrainMath::F32, 1, 8), 0);
    }
    for bad in [
        spec(Gla, 3, 2, 16, 4, (0.5, 0.5)),
        spec(Gla, 2, 0, 16, 4, (0.5, 0.5)),
        spec(Gla, 2, 1, 0, 4, (0.5, 0.5)),
    ] {
        assert!(matches!(
            liger_train_source(&bad, TrainMath::Bf16),
            Err(CudaError::Shape { .. })
        ));
    }
    assert!(matches!(
        liger_forward_launches(
            &spec(Gla, 2, 1, 16, 4, (0.5, 0.5)),
            TrainMath::F32,
            70_000,
            4
        ),
        Err(CudaError::Shape { .. })
    ));
    assert!(matches!(
        liger_train_source(&spec(Gla, 2, 1, 1024, 4, (0.5, 0.5)), TrainMath::F32),
        Err(CudaError::SharedMemory { .. })
    ));
    assert!(
        liger_forward_launches(&spec(Gla, 2, 1, 16, 4, (0.5, 0.5)), TrainMath::Bf16, 0, 4)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        gate_train_source(&gate_spec(Linear, 2, 16, 0)),
        Err(CudaError::Unsupported { .. })
    ));
    assert!(matches!(
        gate_train_source(&gate_spec(Gsa, 2, 16, 17)),
        Err(CudaError::Shape { .. })
    ));
}

/// Writes `DIR/NAME/{source.cu,launches.json}` for `scripts/gpu_train_kernels.py`.
#[test]
#[ignore = "run by hand: LIGERC_TRAIN_KERNELS_DUMP=DIR"]
fn dump() {
    let Some(dir) = std::env::var_os("LIGERC_TRAIN_KERNELS_DUMP") else {
        panic!("set LIGERC_TRAIN_KERNELS_DUMP to the output folder");
    };
    use LigerVariant::*;
    let specs = [
        (
            "gla_h32_kv8_d128_w64",
            spec(Gla, 32, 8, 128, 64, (0.5, 0.5)),
        ),
        ("gla_h9_kv3_d64_w64", spec(Gla, 9, 3, 64, 64, (0.5, 0.5))),
        ("gla_h4_kv2_d64_w3", spec(Gla, 4, 2, 64, 3, (0.5, 0.5))),
        (
            "hgrn2_h8_kv4_d64_w64",
            spec(Hgrn2, 8, 4, 64, 64, (0.5, 0.5)),
        ),
        (
            "retention_h8_kv4_d64_w64",
            spec(Retention, 8, 4, 64, 64, (0.5, 0.5)),
        ),
        (
            "linear_h8_kv4_d64_w64",
            spec(Linear, 8, 4, 64, 64, (0.5, 0.5)),
        ),
        (
            "swa_only_h8_kv4_d64_w64",
            spec(SwaOnly, 8, 4, 64, 64, (1.0, 0.0)),
        ),
        ("gsa_h9_kv3_d64_m64_w64", gsa(9, 3, 64, 64, 64, (0.5, 0.5))),
        ("gsa_h8_kv4_d64_m32_w3", gsa(8, 4, 64, 32, 3, (0.5, 0.5))),
    ];
    let gate = gate_spec(Gla, 8, 128, 0);
    let root = PathBuf::from(dir);
    let both = specs.into_iter().flat_map(|(name, s)| {
        [
            (name.to_string(), s.clone(), TrainMath::F32),
            (format!("{name}_tc"), s, TrainMath::Bf16),
        ]
    });
    for (name, s, math) in both {
        let d = root.join(&name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("source.cu"), liger_train_source(&s, math).unwrap()).unwrap();
        std::fs::write(
            d.join("gate_source.cu"),
            gate_train_source(&GateSpec {
                kv_heads: s.kv_heads,
                head_dim: s.head_dim,
                ..gate.clone()
            })
            .unwrap(),
        )
        .unwrap();
        let mut json = format!(
            "{{\"math\": \"{}\", \"tolerance\": {}, \"variant\": \"{}\", \"heads\": {}, \"kv_heads\": {}, \"head_dim\": {}, \"window\": {}, \"mix_window\": {}, \"mix_linear\": {}, \"slots\": {}, \"gate_normalizer\": {}, \"launches\": {{",
            if math == TrainMath::Bf16 {
                "bf16"
            } else {
                "f32"
            },
            if math == TrainMath::Bf16 {
                TC_TOL
            } else {
                2e-4
            },
            s.variant,
            s.heads,
            s.kv_heads,
            s.head_dim,
            s.window,
            s.mix_window,
            s.mix_linear,
            s.slots,
            s.variant.default_normalizer()
        );
        // Launch lists at the shapes the script runs (the grid depends on batch and seq).
        let shapes: [(usize, usize); 6] =
            [(1, 1), (2, 37), (3, 67), (1, 200), (8, 1024), (8, 4096)];
        let mut first = true;
        for (b, t) in shapes {
            let total = liger_scratch_floats(&s, math, b, t);
            let fwd = saved_after_scratch(liger_forward_launches(&s, math, b, t).unwrap(), total);
            let bwd = saved_after_scratch(liger_backward_launches(&s, math, b, t).unwrap(), total);
            let gf = gate_forward_launches(
                &GateSpec {
                    kv_heads: s.kv_heads,
                    head_dim: s.head_dim,
                    ..gate.clone()
                },
                b,
                t,
            )
            .unwrap();
            let gb = gate_backward_launches(
                &GateSpec {
                    kv_heads: s.kv_heads,
                    head_dim: s.head_dim,
                    ..gate.clone()
                },
                b,
                t,
            )
            .unwrap();
            let _ = write!(
                json,
                "{}\"{b}x{t}\": {{\"scratch\": {}, \"forward\": {}, \"backward\": {}, \"gate_forward\": {}, \"gate_backward\": {}}}",
                if first { "" } else { ", " },
                one_buffer_floats(&s, math, b, t),
                launches_json(&fwd),
                launches_json(&bwd),
                launches_json(&gf),
                launches_json(&gb)
            );
            first = false;
        }
        json.push_str("}}\n");
        std::fs::write(d.join("launches.json"), json).unwrap();
    }
}

fn launches_json(ls: &[TrainLaunch]) -> String {
    let items: Vec<String> = ls
        .iter()
        .map(|l| {
            let args: Vec<String> = l
                .args
                .iter()
                .map(|a| match a {
                    TrainArg::Scratch { offset_floats } => format!("[\"Scratch\", {offset_floats}]"),
                    other => format!("\"{other:?}\""),
                })
                .collect();
            format!(
                "{{\"kernel\": \"{}\", \"grid\": [{}, {}, {}], \"block\": {}, \"smem\": {}, \"args\": [{}]}}",
                l.kernel,
                l.grid.0,
                l.grid.1,
                l.grid.2,
                l.block,
                l.dynamic_smem,
                args.join(", ")
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}
