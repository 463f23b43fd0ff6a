//! LigerGate and LigerAttention on the CPU: the three forms of the recurrence
//! against each other, every variant against a float64 reference written here
//! from LIGER.md's recurrent equations (with upstream's per-query-head
//! `repeat_kv` states), incremental decoding against full forwards, constant
//! decode memory, and the errors bad operands must return.
//!
//! Errors are measured as `max |got − want| / max |want|` over a whole output.

mod common;
use common::Rng;

use std::collections::HashMap;

use ligerc_ir::{
    DType, Dim, GateSpec, Graph, LigerSpec, LigerVariant, NodeId, Op, RopeScaling, RopeSpec,
    TensorData, TensorType, ValueRef, VjpSpec,
};
use ligerc_runtime::ops::{LigerMode, eval_high_level};
use ligerc_runtime::{Data, ExecState, Executor, RuntimeError, Session, Tensor};

const BATCH: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const GROUP: usize = HEADS / KV_HEADS;
const HEAD_DIM: usize = 8;
const SLOTS: usize = 4;
const MIX_WINDOW: f64 = 0.4;
const MIX_LINEAR: f64 = 0.6;
const LENGTHS: [usize; 8] = [1, 3, 4, 5, 15, 16, 17, 40];

impl Rng {
    fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| scale * self.uniform()).collect()
    }

    fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::f32(shape.to_vec(), self.values(n, scale)).unwrap()
    }
}

/// How the gate operand of a test is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Gates {
    /// `logsigmoid(3u)/16`: ordinary forgetting.
    Typical,
    /// In `(−1e−6, 0]`: almost no forgetting (α → 1, as from a large positive key).
    NearZero,
    /// Around −30: almost total forgetting every step.
    NearMinus30,
    /// Each entry drawn from one of the three above.
    Mixed,
}

const ALL_GATES: [Gates; 4] = [
    Gates::Typical,
    Gates::NearZero,
    Gates::NearMinus30,
    Gates::Mixed,
];

fn draw_gate(rng: &mut Rng, gates: Gates) -> f32 {
    let kind = match gates {
        Gates::Mixed => {
            [Gates::Typical, Gates::NearZero, Gates::NearMinus30][(rng.next_u64() % 3) as usize]
        }
        g => g,
    };
    let u = rng.uniform();
    match kind {
        Gates::NearZero => -5e-7 * (u + 1.0),
        Gates::NearMinus30 => -30.0 + u,
        _ => log_sigmoid(3.0 * f64::from(u)) as f32 / 16.0,
    }
}

fn spec(variant: LigerVariant, window: usize) -> LigerSpec {
    LigerSpec {
        variant,
        heads: HEADS,
        kv_heads: KV_HEADS,
        head_dim: HEAD_DIM,
        window,
        mix_window: MIX_WINDOW,
        mix_linear: MIX_LINEAR,
        slots: SLOTS,
    }
}

fn gate_width(variant: LigerVariant) -> usize {
    variant.gate_width(HEAD_DIM, SLOTS)
}

/// Random `q, k, v, q_rot, k_rot [, gate]` for `batch × len`.
fn operands(
    rng: &mut Rng,
    variant: LigerVariant,
    batch: usize,
    len: usize,
    gates: Gates,
) -> Vec<Tensor> {
    let (q_w, kv_w) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    let mut ops = vec![
        rng.tensor(&[batch, len, q_w], 2.0),
        rng.tensor(&[batch, len, kv_w], 2.0),
        rng.tensor(&[batch, len, kv_w], 1.0),
        rng.tensor(&[batch, len, q_w], 1.0),
        rng.tensor(&[batch, len, kv_w], 1.0),
    ];
    if variant.has_gate() {
        let n = batch * len * KV_HEADS * gate_width(variant);
        let g = (0..n).map(|_| draw_gate(rng, gates)).collect();
        ops.push(Tensor::f32(vec![batch, len, KV_HEADS * gate_width(variant)], g).unwrap());
    }
    ops
}

fn f32s(t: &Tensor) -> &[f32] {
    t.as_f32("test").unwrap()
}

fn run(spec: &LigerSpec, ops: &[Tensor], state: &mut ExecState) -> Result<Tensor, RuntimeError> {
    let refs: Vec<&Tensor> = ops.iter().collect();
    eval_high_level(
        &Op::LigerAttention(spec.clone()),
        NodeId::new(7),
        &refs,
        state,
    )
    .map(|mut v| v.remove(0))
}

fn run_mode(spec: &LigerSpec, ops: &[Tensor], mode: LigerMode) -> Tensor {
    let mut state = ExecState {
        liger_mode: mode,
        ..ExecState::default()
    };
    run(spec, ops, &mut state).unwrap()
}

/// `max |got − want| / max |want|`.
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(1e-30f64, |m, w| m.max(w.abs()));
    let worst = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((f64::from(*g) - w).abs()));
    assert!(worst.is_finite(), "non-finite output");
    worst / scale
}

fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

// ------------------------------------------------------- float64 reference

fn log_sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}

fn softmax(x: &[f64]) -> Vec<f64> {
    let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let e: Vec<f64> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// LigerGate from LIGER.md §3, in f64.
fn reference_gate(g: &GateSpec, k: &[f32]) -> Vec<f64> {
    reference_gate_f64(g, &to_f64(k))
}

/// [`reference_gate`] on a float64 key.
fn reference_gate_f64(g: &GateSpec, k: &[f64]) -> Vec<f64> {
    let (d, width) = (g.head_dim, g.width());
    let mut out = Vec::new();
    for row in k.chunks(g.kv_heads * d) {
        for head in row.chunks(d) {
            let head: Vec<f64> = head.to_vec();
            let pooled: Vec<f64> = match g.variant {
                LigerVariant::Gsa => (0..width)
                    .map(|i| {
                        let lo = (i * d) / width;
                        let hi = ((i + 1) * d).div_ceil(width);
                        head[lo..hi].iter().sum::<f64>() / (hi - lo) as f64
                    })
                    .collect(),
                LigerVariant::Retention => vec![head.iter().sum::<f64>() / d as f64],
                _ => head,
            };
            out.extend(pooled.iter().map(|&x| log_sigmoid(x) / g.normalizer));
        }
    }
    out
}

/// The reference's output `[B,T,H·D]` and its per-(batch, query head) final
/// states: `S` (or GSA's `Hv`) and GSA's `Hk`.
struct Reference {
    out: Vec<f64>,
    memory: Vec<Vec<f64>>,
    slot_keys: Vec<Vec<f64>>,
}

/// LigerAttention straight from LIGER.md §2.4–§2.6 and the §3 table: naive
/// loops over t, k and v replicated per query head (upstream's `repeat_kv`),
/// one state per query head.
fn reference(spec: &LigerSpec, ops: &[Tensor]) -> Reference {
    let (batch, len) = (ops[0].shape[0], ops[0].shape[1]);
    let wide: Vec<Vec<f64>> = ops.iter().map(|t| to_f64(f32s(t))).collect();
    reference_f64(spec, batch, len, &wide)
}

/// [`reference`] on float64 operands `q, k, v, q_rot, k_rot [, gate]`.
fn reference_f64(spec: &LigerSpec, batch: usize, len: usize, ops: &[Vec<f64>]) -> Reference {
    let (h_n, d, m) = (spec.heads, spec.head_dim, spec.slots);
    let group = spec.heads / spec.kv_heads;
    let width = spec.variant.gate_width(d, m);
    let [q, k, v, qr, kr] = [0, 1, 2, 3, 4].map(|i| ops[i].clone());
    let gate = ops.get(5).cloned();
    let (q_w, kv_w, g_w) = (h_n * d, spec.kv_heads * d, spec.kv_heads * width);
    let mut out = vec![0.0; batch * len * q_w];
    let mut memory = Vec::new();
    let mut slot_keys = Vec::new();
    for b in 0..batch {
        for h in 0..h_n {
            let j = h / group;
            let row = |x: &[f64], t: usize, feat: usize, off: usize, n: usize| -> Vec<f64> {
                x[(b * len + t) * feat + off..][..n].to_vec()
            };
            let mut s = vec![vec![0.0; d]; d];
            let mut hk = vec![vec![0.0; m]; d];
            let mut hv = vec![vec![0.0; d]; m];
            for t in 0..len {
                // Sliding-window softmax attention on the rotated q, k.
                let qt = row(&qr, t, q_w, h * d, d);
                let lo = t.saturating_sub(spec.window);
                let scores: Vec<f64> = (lo..=t)
                    .map(|s| {
                        let ks = row(&kr, s, kv_w, j * d, d);
                        qt.iter().zip(&ks).map(|(a, b)| a * b).sum::<f64>() / (d as f64).sqrt()
                    })
                    .collect();
                let p = softmax(&scores);
                let mut y = vec![0.0; d];
                for (s, ps) in (lo..=t).zip(&p) {
                    let vs = row(&v, s, kv_w, j * d, d);
                    for e in 0..d {
                        y[e] += ps * vs[e];
                    }
                }
                // The gated recurrence on the un-rotated q, k.
                let qraw = row(&q, t, q_w, h * d, d);
                let kraw = row(&k, t, kv_w, j * d, d);
                let vt = row(&v, t, kv_w, j * d, d);
                let gt = gate.as_ref().map(|g| row(g, t, g_w, j * width, width));
                let mut o = vec![0.0; d];
                match spec.variant {
                    LigerVariant::Gsa => {
                        let gamma = gt.unwrap();
                        let alpha: Vec<f64> = gamma.iter().map(|x| x.exp()).collect();
                        let sw: Vec<f64> = alpha.iter().map(|a| 1.0 - a).collect();
                        for dd in 0..d {
                            for mm in 0..m {
                                hk[dd][mm] = hk[dd][mm] * alpha[mm] + kraw[dd] * sw[mm];
                            }
                        }
                        let logits: Vec<f64> = (0..m)
                            .map(|mm| (0..d).map(|dd| qraw[dd] * hk[dd][mm]).sum())
                            .collect();
                        let p = softmax(&logits);
                        for mm in 0..m {
                            for e in 0..d {
                                hv[mm][e] = alpha[mm] * hv[mm][e] + sw[mm] * vt[e];
                            }
                        }
                        for e in 0..d {
                            o[e] = (0..m).map(|mm| p[mm] * hv[mm][e]).sum();
                        }
                    }
                    LigerVariant::SwaOnly => {}
                    variant => {
                        let alpha: Vec<f64> = match variant {
                            LigerVariant::Retention => vec![gt.unwrap()[0].exp(); d],
                            LigerVariant::Linear => vec![1.0; d],
                            _ => gt.unwrap().iter().map(|x| x.exp()).collect(),
                        };
                        let qf = softmax(&qraw);
                        let kf: Vec<f64> = match variant {
                            LigerVariant::Hgrn2 => alpha.iter().map(|a| 1.0 - a).collect(),
                            _ => softmax(&kraw),
                        };
                        for dd in 0..d {
                            for e in 0..d {
                                s[dd][e] = alpha[dd] * s[dd][e] + kf[dd] * vt[e];
                            }
                        }
                        for e in 0..d {
                            o[e] = (0..d).map(|dd| qf[dd] * s[dd][e]).sum();
                        }
                    }
                }
                let at = (b * len + t) * q_w + h * d;
                for e in 0..d {
                    out[at + e] = spec.mix_window * y[e] + spec.mix_linear * o[e];
                }
            }
            let flat = |x: Vec<Vec<f64>>| x.into_iter().flatten().collect::<Vec<f64>>();
            match spec.variant {
                LigerVariant::Gsa => {
                    memory.push(flat(hv));
                    slot_keys.push(flat(hk));
                }
                LigerVariant::SwaOnly => {
                    memory.push(Vec::new());
                    slot_keys.push(Vec::new());
                }
                _ => {
                    memory.push(flat(s));
                    slot_keys.push(Vec::new());
                }
            }
        }
    }
    Reference {
        out,
        memory,
        slot_keys,
    }
}

// ------------------------------------------------------------ (a) forms agree

#[test]
fn quadratic_chunked_and_recurrent_forms_agree() {
    let mut rng = Rng(11);
    let mut worst = [0.0f64; 2];
    for variant in LigerVariant::ALL {
        for (window, chunk) in [(4, 4), (8, 16), (4, 16), (8, 4), (4, 1), (8, 64), (0, 4)] {
            let spec = spec(variant, window);
            for len in LENGTHS {
                for gates in ALL_GATES {
                    if !variant.has_gate() && gates != Gates::Typical {
                        continue;
                    }
                    let ops = operands(&mut rng, variant, BATCH, len, gates);
                    let quadratic = to_f64(f32s(&run_mode(&spec, &ops, LigerMode::Quadratic)));
                    let chunked = run_mode(&spec, &ops, LigerMode::Chunked { chunk });
                    let recurrent = run_mode(&spec, &ops, LigerMode::Recurrent);
                    let what = format!("{variant} window {window} chunk {chunk} T {len} {gates:?}");
                    for (i, got) in [&chunked, &recurrent].into_iter().enumerate() {
                        assert_eq!(got.shape, [BATCH, len, HEADS * HEAD_DIM]);
                        let err = rel_err(f32s(got), &quadratic);
                        assert!(
                            err <= 1e-5,
                            "{what}: form {i} differs from quadratic by {err:e}"
                        );
                        worst[i] = worst[i].max(err);
                    }
                }
            }
        }
    }
    eprintln!(
        "forms agree: chunked vs quadratic {:.2e}, recurrent vs quadratic {:.2e}",
        worst[0], worst[1]
    );
}

// ---------------------------------------------------- (b) float64 reference

#[test]
fn gate_matches_float64_reference() {
    let mut rng = Rng(21);
    let mut worst = 0.0f64;
    for (variant, slots) in [
        (LigerVariant::Gla, 0),
        (LigerVariant::Hgrn2, 0),
        (LigerVariant::Retention, 0),
        (LigerVariant::Gsa, 8),
        (LigerVariant::Gsa, 4),
        (LigerVariant::Gsa, 3),
        (LigerVariant::Gsa, 5),
        (LigerVariant::Gsa, 1),
    ] {
        let g = GateSpec {
            variant,
            kv_heads: KV_HEADS,
            head_dim: HEAD_DIM,
            slots,
            normalizer: variant.default_normalizer(),
        };
        for scale in [1.0f32, 8.0, 100.0] {
            let k = rng.tensor(&[BATCH, 5, KV_HEADS * HEAD_DIM], scale);
            let y = eval_high_level(
                &Op::LigerGate(g.clone()),
                NodeId::new(0),
                &[&k],
                &mut ExecState::default(),
            )
            .unwrap()
            .remove(0);
            assert_eq!(y.shape, [BATCH, 5, KV_HEADS * g.width()]);
            assert!(
                f32s(&y).iter().all(|&x| x <= 0.0),
                "{variant}: a gate is positive"
            );
            let err = rel_err(f32s(&y), &reference_gate(&g, f32s(&k)));
            assert!(
                err <= 1e-5,
                "{variant} slots {slots} scale {scale}: {err:e}"
            );
            worst = worst.max(err);
        }
    }
    // Extreme keys: no NaN, α → 1 for large positive keys, log α ≈ k/n for very negative ones.
    let g = GateSpec {
        variant: LigerVariant::Gla,
        kv_heads: 1,
        head_dim: 4,
        slots: 0,
        normalizer: 16.0,
    };
    let k = Tensor::f32(vec![1, 1, 4], vec![1e4, 60.0, -60.0, -1e4]).unwrap();
    let y = eval_high_level(
        &Op::LigerGate(g),
        NodeId::new(0),
        &[&k],
        &mut ExecState::default(),
    )
    .unwrap()
    .remove(0);
    let y = f32s(&y);
    assert_eq!(y[0], 0.0);
    assert!(y[1] <= 0.0 && y[1] > -1e-20);
    assert!((y[2] + 60.0 / 16.0).abs() < 1e-5);
    assert!((y[3] + 1e4 / 16.0).abs() < 1e-2);
    eprintln!("gate vs f64: {worst:.2e}");
}

#[test]
fn every_variant_matches_float64_reference() {
    let mut rng = Rng(31);
    let mut worst = 0.0f64;
    for variant in LigerVariant::ALL {
        for (window, chunk) in [(4, 4), (8, 16)] {
            let spec = spec(variant, window);
            for len in [1, 5, 16, 17, 40] {
                for gates in [Gates::Typical, Gates::Mixed, Gates::NearZero] {
                    let ops = operands(&mut rng, variant, BATCH, len, gates);
                    let want = reference(&spec, &ops).out;
                    for mode in [
                        LigerMode::Quadratic,
                        LigerMode::Chunked { chunk },
                        LigerMode::Recurrent,
                    ] {
                        let got = run_mode(&spec, &ops, mode);
                        let err = rel_err(f32s(&got), &want);
                        assert!(
                            err <= 1e-4,
                            "{variant} window {window} T {len} {gates:?} {mode:?}: {err:e}"
                        );
                        worst = worst.max(err);
                    }
                }
            }
        }
    }
    eprintln!("LigerAttention vs f64 reference: {worst:.2e}");
}

/// The window branch alone with `mix_window = 1`: query `t` sees exactly the
/// keys `t − window ..= t`.
#[test]
fn window_branch_sees_window_plus_one_keys() {
    let mut rng = Rng(41);
    let mut spec = spec(LigerVariant::SwaOnly, 2);
    spec.mix_window = 1.0;
    let mut ops = operands(&mut rng, LigerVariant::SwaOnly, 1, 6, Gates::Typical);
    // Identical rotated keys: uniform attention over the visible values.
    ops[4] = Tensor::f32(
        vec![1, 6, KV_HEADS * HEAD_DIM],
        vec![0.5; 6 * KV_HEADS * HEAD_DIM],
    )
    .unwrap();
    let y = run_mode(&spec, &ops, LigerMode::Recurrent);
    let v = f32s(&ops[2]);
    let kv_w = KV_HEADS * HEAD_DIM;
    for t in 0..6usize {
        let lo = t.saturating_sub(2usize);
        for e in 0..HEAD_DIM {
            let mean = (lo..=t).map(|s| v[s * kv_w + e]).sum::<f32>() / (t - lo + 1) as f32;
            let got = f32s(&y)[t * HEADS * HEAD_DIM + e];
            assert!((got - mean).abs() < 1e-5, "t {t}: {got} vs {mean}");
        }
    }
}

// ------------------------------------------- (c) one state per KV head

#[test]
fn per_kv_head_state_equals_replicated_query_head_states() {
    let mut rng = Rng(51);
    let mut worst = 0.0f64;
    for variant in LigerVariant::ALL {
        let spec = spec(variant, 4);
        for mode in [
            LigerMode::Chunked { chunk: 4 },
            LigerMode::Recurrent,
            LigerMode::Quadratic,
        ] {
            let ops = operands(&mut rng, variant, BATCH, 17, Gates::Mixed);
            let want = reference(&spec, &ops);
            let mut state = ExecState {
                use_cache: true,
                liger_mode: mode,
                ..ExecState::default()
            };
            let got = run(&spec, &ops, &mut state).unwrap();
            worst = worst.max(rel_err(f32s(&got), &want.out));
            let carried = &state.liger[&NodeId::new(7)];
            assert_eq!(carried.seen(), 17);
            assert_eq!(carried.batch(), BATCH);
            for b in 0..BATCH {
                for j in 0..KV_HEADS {
                    let memory = carried.memory(b, j).unwrap();
                    let slot_keys = carried.slot_keys(b, j).unwrap();
                    for h in j * GROUP..(j + 1) * GROUP {
                        let i = b * HEADS + h;
                        // Upstream's replicated states are identical within a group.
                        assert_eq!(want.memory[i], want.memory[b * HEADS + j * GROUP]);
                        assert_eq!(memory.len(), want.memory[i].len(), "{variant}");
                        assert_eq!(slot_keys.len(), want.slot_keys[i].len(), "{variant}");
                        if !memory.is_empty() {
                            let err = rel_err(memory, &want.memory[i]);
                            assert!(
                                err <= 1e-4,
                                "{variant} {mode:?}: state of b {b} head {h}: {err:e}"
                            );
                            worst = worst.max(err);
                        }
                        if !slot_keys.is_empty() {
                            let err = rel_err(slot_keys, &want.slot_keys[i]);
                            assert!(
                                err <= 1e-4,
                                "{variant} {mode:?}: Hk of b {b} head {h}: {err:e}"
                            );
                            worst = worst.max(err);
                        }
                    }
                }
            }
            assert!(carried.memory(BATCH, 0).is_none());
            assert!(carried.memory(0, KV_HEADS).is_none());
        }
    }
    eprintln!("per-KV-head state vs replicated f64 states: {worst:.2e}");
}

// ------------------------------------------------- (d) prefill + decode

const MODEL: usize = 24;

fn act(features: usize) -> TensorType {
    TensorType::new(
        DType::F32,
        vec![Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(features)],
    )
}

fn weight(g: &mut Graph, rng: &mut Rng, name: &str, shape: &[usize], scale: f32) -> ValueRef {
    let n = shape.iter().product();
    g.add_weight(
        name,
        TensorData::from_f32(shape.to_vec(), &rng.values(n, scale)).unwrap(),
    )
}

/// `x → q, k, v → LigerGate(k) → Rope(q), Rope(k) → LigerAttention`, appended to `g`.
fn liger_block(g: &mut Graph, rng: &mut Rng, x: ValueRef, spec: &LigerSpec) -> ValueRef {
    let scale = 2.0 / (MODEL as f32).sqrt();
    let (q_w, kv_w) = (spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim);
    let wq = weight(g, rng, "q_proj", &[q_w, MODEL], scale);
    let wk = weight(g, rng, "k_proj", &[kv_w, MODEL], scale);
    let wv = weight(g, rng, "v_proj", &[kv_w, MODEL], scale);
    let q = g.add(Op::Linear, &[x, wq], act(q_w));
    let k = g.add(Op::Linear, &[x, wk], act(kv_w));
    let v = g.add(Op::Linear, &[x, wv], act(kv_w));
    let rope = |heads| {
        Op::Rope(RopeSpec {
            heads,
            head_dim: spec.head_dim,
            theta: 10000.0,
            scaling: RopeScaling::None,
        })
    };
    let q_rot = g.add(rope(spec.heads), &[q], act(q_w));
    let k_rot = g.add(rope(spec.kv_heads), &[k], act(kv_w));
    let mut operands = vec![q, k, v, q_rot, k_rot];
    if spec.variant.has_gate() {
        let gate_spec = GateSpec {
            variant: spec.variant,
            kv_heads: spec.kv_heads,
            head_dim: spec.head_dim,
            slots: spec.slots,
            normalizer: spec.variant.default_normalizer(),
        };
        let width = spec.kv_heads * gate_spec.width();
        operands.push(g.add(Op::LigerGate(gate_spec), &[k], act(width)));
    }
    g.add(Op::LigerAttention(spec.clone()), &operands, act(q_w))
}

fn block_graph(spec: &LigerSpec, seed: u64) -> Graph {
    let mut g = Graph::new("liger-block");
    let mut rng = Rng(seed);
    let x = g.add_input("x", act(MODEL));
    let y = liger_block(&mut g, &mut rng, x, spec);
    g.add_output("y", y);
    g
}

/// Tokens `range` of `x [B, T, F]`.
fn tokens(x: &Tensor, range: std::ops::Range<usize>) -> Tensor {
    let (batch, len, feat) = (x.shape[0], x.shape[1], x.shape[2]);
    let data: Vec<f32> = (0..batch)
        .flat_map(|b| {
            f32s(x)[(b * len + range.start) * feat..(b * len + range.end) * feat]
                .iter()
                .copied()
        })
        .collect();
    Tensor::f32(vec![batch, range.len(), feat], data).unwrap()
}

fn run_block(exec: &Executor, x: Tensor, state: &mut ExecState) -> Tensor {
    let inputs = HashMap::from([("x".to_string(), x)]);
    exec.run(&inputs, state).unwrap().remove(0)
}

/// Runs `x` as a prefill of `prefill` tokens, one multi-token extension of 3,
/// then single-token decode steps; returns the outputs concatenated over
/// tokens and the state.
fn incremental(
    exec: &Executor,
    x: &Tensor,
    prefill: usize,
    mode: LigerMode,
) -> (Vec<Vec<f32>>, ExecState) {
    let (batch, len, feat) = (x.shape[0], x.shape[1], HEADS * HEAD_DIM);
    let mut state = ExecState {
        use_cache: true,
        liger_mode: mode,
        ..ExecState::default()
    };
    let mut rows = vec![Vec::new(); batch];
    let mut bounds = vec![0, prefill, prefill + 3];
    bounds.extend(prefill + 4..=len);
    for w in bounds.windows(2) {
        state.position_offset = w[0];
        let y = run_block(exec, tokens(x, w[0]..w[1]), &mut state);
        for (b, row) in rows.iter_mut().enumerate() {
            row.extend_from_slice(
                &f32s(&y)[b * (w[1] - w[0]) * feat..(b + 1) * (w[1] - w[0]) * feat],
            );
        }
    }
    (rows, state)
}

#[test]
fn prefill_then_decode_matches_a_full_forward() {
    let mut rng = Rng(61);
    let mut worst = 0.0f64;
    let len = 19;
    for variant in LigerVariant::ALL {
        let spec = spec(variant, 4);
        let exec = Executor::new(block_graph(&spec, 62)).unwrap();
        let x = rng.tensor(&[BATCH, len, MODEL], 1.0);
        let full = run_block(
            &exec,
            x.clone(),
            &mut ExecState {
                liger_mode: LigerMode::Quadratic,
                ..ExecState::default()
            },
        );
        let full = to_f64(f32s(&full));
        for (prefill, mode) in [
            (6, LigerMode::Chunked { chunk: 4 }),
            (6, LigerMode::Recurrent),
            (2, LigerMode::Chunked { chunk: 4 }),
            (9, LigerMode::Quadratic),
        ] {
            let (rows, state) = incremental(&exec, &x, prefill, mode);
            let err = rel_err(&rows.concat(), &full);
            assert!(err <= 1e-5, "{variant} prefill {prefill} {mode:?}: {err:e}");
            worst = worst.max(err);
            let carried = state.liger.values().next().unwrap();
            assert_eq!(carried.seen(), len);
            assert_eq!(carried.window_len(), 5);
        }
    }
    eprintln!("prefill + decode vs full forward: {worst:.2e}");
}

fn session_graph(spec: &LigerSpec) -> Graph {
    let vocab = 30;
    let mut g = Graph::new("liger-lm");
    let mut rng = Rng(71);
    let ids = g.add_input(
        "input_ids",
        TensorType::new(DType::I64, vec![Dim::sym("batch"), Dim::sym("seq")]),
    );
    let table = weight(&mut g, &mut rng, "embed", &[vocab, MODEL], 1.0);
    let x = g.add(Op::Embedding, &[table, ids], act(MODEL));
    let y = liger_block(&mut g, &mut rng, x, spec);
    let w = weight(&mut g, &mut rng, "lm_head", &[vocab, HEADS * HEAD_DIM], 1.0);
    let logits = g.add(Op::LmHead, &[y, w], act(vocab));
    g.add_output("logits", logits);
    g
}

#[test]
fn session_decodes_liger_graphs_incrementally() {
    for variant in [LigerVariant::Gla, LigerVariant::Gsa, LigerVariant::SwaOnly] {
        let mut session = Session::new(session_graph(&spec(variant, 3))).unwrap();
        assert!(session.supports_kv_cache());
        session.set_liger_mode(LigerMode::Chunked { chunk: 2 });
        let ids: Vec<Vec<i64>> = vec![
            (0..12).map(|i| (i * 7 % 30) as i64).collect(),
            (0..12).map(|i| (i * 11 % 30) as i64).collect(),
        ];
        let full = session.forward(&ids).unwrap();
        let vocab = full.shape[2];
        for _ in 0..2 {
            // A second prefill must start from a clean state.
            let prompt: Vec<Vec<i64>> = ids.iter().map(|r| r[..5].to_vec()).collect();
            let pre = session.prefill(&prompt).unwrap();
            let mut got = vec![Vec::new(); 2];
            for (b, row) in got.iter_mut().enumerate() {
                row.extend_from_slice(&f32s(&pre)[b * 5 * vocab..(b + 1) * 5 * vocab]);
            }
            for (&first, &second) in ids[0][5..].iter().zip(&ids[1][5..]) {
                let step = session.decode_step(&[first, second]).unwrap();
                for (b, row) in got.iter_mut().enumerate() {
                    row.extend_from_slice(&f32s(&step)[b * vocab..(b + 1) * vocab]);
                }
            }
            let err = rel_err(&got.concat(), &to_f64(f32s(&full)));
            assert!(err <= 1e-5, "{variant}: session decode differs by {err:e}");
            assert_eq!(session.state().liger.len(), 1);
            assert!(session.state().kv.is_empty());
        }
        session.reset();
        assert!(session.state().liger.is_empty());
        assert_eq!(session.liger_mode(), LigerMode::Chunked { chunk: 2 });
    }
}

// --------------------------------------------------- (e) constant memory

#[test]
fn decode_state_does_not_grow_with_context() {
    for variant in LigerVariant::ALL {
        let window = 4;
        let spec = spec(variant, window);
        let exec = Executor::new(block_graph(&spec, 81)).unwrap();
        let mut rng = Rng(82);
        let x = rng.tensor(&[BATCH, 206, MODEL], 1.0);
        let mut state = ExecState {
            use_cache: true,
            ..ExecState::default()
        };
        run_block(&exec, tokens(&x, 0..6), &mut state);
        let mut sizes = HashMap::new();
        for t in 6..206 {
            state.position_offset = t;
            let y = run_block(&exec, tokens(&x, t..t + 1), &mut state);
            assert!(f32s(&y).iter().all(|v| v.is_finite()));
            let steps = t - 5;
            if steps == 10 || steps == 200 {
                sizes.insert(steps, state.liger.values().next().unwrap().floats());
            }
        }
        let memory = match variant {
            LigerVariant::SwaOnly => 0,
            LigerVariant::Gsa => 2 * HEAD_DIM * SLOTS,
            _ => HEAD_DIM * HEAD_DIM,
        };
        let expected = BATCH * KV_HEADS * (memory + 2 * (window + 1) * HEAD_DIM);
        assert_eq!(sizes[&10], sizes[&200], "{variant}");
        assert_eq!(sizes[&200], expected, "{variant}");
        let carried = state.liger.values().next().unwrap();
        assert_eq!(carried.seen(), 206);
        assert!(state.kv.is_empty());
    }
}

// ------------------------------------------------------------- (f) errors

fn expect_err(spec: &LigerSpec, ops: &[Tensor], what: &str) {
    let mut state = ExecState::default();
    assert!(run(spec, ops, &mut state).is_err(), "{what}: accepted");
}

#[test]
fn bad_operands_are_errors() {
    let mut rng = Rng(91);
    let gla = spec(LigerVariant::Gla, 4);
    let good = operands(&mut rng, LigerVariant::Gla, 1, 5, Gates::Typical);
    assert!(run(&gla, &good, &mut ExecState::default()).is_ok());
    // Wrong widths, one operand at a time.
    for i in 0..6 {
        let mut ops = good.clone();
        let s = ops[i].shape.clone();
        ops[i] = rng.tensor(&[s[0], s[1], s[2] + 1], 1.0);
        expect_err(&gla, &ops, &format!("operand {i} one feature too wide"));
        ops[i] = rng.tensor(&[s[0], s[1] + 1, s[2]], 1.0);
        expect_err(&gla, &ops, &format!("operand {i} of another length"));
        ops[i] = rng.tensor(&[s[0] + 1, s[1], s[2]], 1.0);
        expect_err(&gla, &ops, &format!("operand {i} of another batch"));
        ops[i] = rng.tensor(&[s[1], s[2]], 1.0);
        expect_err(&gla, &ops, &format!("operand {i} of rank 2"));
        ops[i] = Tensor::i64(s.clone(), vec![0; s.iter().product()]).unwrap();
        expect_err(&gla, &ops, &format!("operand {i} of integers"));
        ops[i] = Tensor {
            shape: s.clone(),
            data: Data::F32(vec![0.0; 3]),
        };
        expect_err(
            &gla,
            &ops,
            &format!("operand {i} inconsistent with its shape"),
        );
    }
    expect_err(&gla, &good[..5], "missing gate");
    expect_err(&gla, &good[..3], "three operands");
    expect_err(
        &spec(LigerVariant::SwaOnly, 4),
        &good,
        "a gate for swa-only",
    );
    let mut gsa_ops = operands(&mut rng, LigerVariant::Gsa, 1, 5, Gates::Typical);
    expect_err(&gla, &gsa_ops, "GSA's gate width for GLA");
    let mut bad_gsa = spec(LigerVariant::Gsa, 4);
    bad_gsa.slots = 0;
    expect_err(&bad_gsa, &gsa_ops, "zero slots");
    bad_gsa.slots = HEAD_DIM + 1;
    expect_err(&bad_gsa, &gsa_ops, "more slots than channels");
    // Gates must be log-space forget gates; a NaN gate (non-finite
    // activations upstream, as during a diverging fine-tune) propagates to
    // the output so the trainer can skip the update.
    let mut nan_ops = gsa_ops.clone();
    let mut g = f32s(&nan_ops[5]).to_vec();
    g[3] = f32::NAN;
    nan_ops[5] = Tensor::f32(nan_ops[5].shape.clone(), g).unwrap();
    let y = run(
        &spec(LigerVariant::Gsa, 4),
        &nan_ops,
        &mut ExecState::default(),
    )
    .unwrap();
    assert!(f32s(&y).iter().any(|v| v.is_nan()), "a NaN gate vanished");
    let mut g = f32s(&gsa_ops[5]).to_vec();
    g[3] = 0.5;
    gsa_ops[5] = Tensor::f32(gsa_ops[5].shape.clone(), g).unwrap();
    expect_err(&spec(LigerVariant::Gsa, 4), &gsa_ops, "a positive gate");
    let mut odd = gla.clone();
    odd.kv_heads = 3;
    expect_err(&odd, &good, "heads not a multiple of kv_heads");
    odd.kv_heads = 0;
    expect_err(&odd, &good, "zero kv_heads");
    let mut nan_mix = gla.clone();
    nan_mix.mix_linear = f64::NAN;
    expect_err(&nan_mix, &good, "NaN mix");
    // An empty run is fine.
    let empty = operands(&mut rng, LigerVariant::Gla, 1, 0, Gates::Typical);
    for mode in [
        LigerMode::Quadratic,
        LigerMode::Chunked { chunk: 4 },
        LigerMode::Recurrent,
    ] {
        assert_eq!(run_mode(&gla, &empty, mode).shape, [1, 0, HEADS * HEAD_DIM]);
    }
    let mut zero_chunk = ExecState {
        liger_mode: LigerMode::Chunked { chunk: 0 },
        ..ExecState::default()
    };
    assert!(
        run(&gla, &good, &mut zero_chunk).is_err(),
        "chunk 0 accepted"
    );
}

#[test]
fn a_state_of_another_batch_or_spec_is_an_error_and_kept() {
    let mut rng = Rng(92);
    let gla = spec(LigerVariant::Gla, 4);
    let mut state = ExecState {
        use_cache: true,
        ..ExecState::default()
    };
    run(
        &gla,
        &operands(&mut rng, LigerVariant::Gla, 2, 5, Gates::Typical),
        &mut state,
    )
    .unwrap();
    let before = state.liger[&NodeId::new(7)].clone();
    let one_row = operands(&mut rng, LigerVariant::Gla, 1, 1, Gates::Typical);
    assert!(run(&gla, &one_row, &mut state).is_err());
    let wider = spec(LigerVariant::Gla, 5);
    let two_rows = operands(&mut rng, LigerVariant::Gla, 2, 1, Gates::Typical);
    assert!(run(&wider, &two_rows, &mut state).is_err());
    let mut bad_gate = two_rows.clone();
    bad_gate[5] = Tensor::f32(bad_gate[5].shape.clone(), vec![1.0; bad_gate[5].numel()]).unwrap();
    assert!(run(&gla, &bad_gate, &mut state).is_err());
    let after = &state.liger[&NodeId::new(7)];
    assert_eq!(after.seen(), before.seen());
    assert_eq!(after.memory(1, 1), before.memory(1, 1));
    assert!(run(&gla, &two_rows, &mut state).is_ok());
}

#[test]
fn bad_gate_specs_are_errors() {
    let mut rng = Rng(93);
    let k = rng.tensor(&[1, 3, KV_HEADS * HEAD_DIM], 1.0);
    let good = GateSpec {
        variant: LigerVariant::Gla,
        kv_heads: KV_HEADS,
        head_dim: HEAD_DIM,
        slots: 0,
        normalizer: 16.0,
    };
    let eval = |g: &GateSpec, k: &Tensor| {
        eval_high_level(
            &Op::LigerGate(g.clone()),
            NodeId::new(0),
            &[k],
            &mut ExecState::default(),
        )
    };
    assert!(eval(&good, &k).is_ok());
    for (what, g) in [
        (
            "swa-only",
            GateSpec {
                variant: LigerVariant::SwaOnly,
                ..good.clone()
            },
        ),
        (
            "linear",
            GateSpec {
                variant: LigerVariant::Linear,
                ..good.clone()
            },
        ),
        (
            "zero normalizer",
            GateSpec {
                normalizer: 0.0,
                ..good.clone()
            },
        ),
        (
            "negative normalizer",
            GateSpec {
                normalizer: -1.0,
                ..good.clone()
            },
        ),
        (
            "NaN normalizer",
            GateSpec {
                normalizer: f64::NAN,
                ..good.clone()
            },
        ),
        (
            "zero slots",
            GateSpec {
                variant: LigerVariant::Gsa,
                slots: 0,
                ..good.clone()
            },
        ),
        (
            "too many slots",
            GateSpec {
                variant: LigerVariant::Gsa,
                slots: HEAD_DIM + 1,
                ..good.clone()
            },
        ),
        (
            "wrong width",
            GateSpec {
                kv_heads: 3,
                ..good.clone()
            },
        ),
        (
            "zero head_dim",
            GateSpec {
                head_dim: 0,
                ..good.clone()
            },
        ),
    ] {
        assert!(eval(&g, &k).is_err(), "{what} accepted");
    }
    assert!(
        eval(&good, &rng.tensor(&[3, KV_HEADS * HEAD_DIM], 1.0)).is_err(),
        "rank 2 accepted"
    );
    let ints = Tensor::i64(
        vec![1, 1, KV_HEADS * HEAD_DIM],
        vec![0; KV_HEADS * HEAD_DIM],
    )
    .unwrap();
    assert!(eval(&good, &ints).is_err(), "integers accepted");
    assert!(
        eval_high_level(
            &Op::LigerGate(good),
            NodeId::new(0),
            &[&k, &k],
            &mut ExecState::default()
        )
        .is_err(),
        "two operands accepted"
    );
}

// ------------------------------------- (g) backward vs finite differences

/// `∂⟨r, f(x)⟩/∂x` by central differences of a float64 function, one element at a time.
fn finite_differences(x: &[Vec<f64>], which: usize, f: &dyn Fn(&[Vec<f64>]) -> f64) -> Vec<f64> {
    const H: f64 = 1e-6;
    let mut probe = x.to_vec();
    (0..x[which].len())
        .map(|i| {
            let at = x[which][i];
            probe[which][i] = at + H;
            let up = f(&probe);
            probe[which][i] = at - H;
            let down = f(&probe);
            probe[which][i] = at;
            (up - down) / (2.0 * H)
        })
        .collect()
}

fn vjp(forward: Op, wrt: Vec<usize>, ops: &[Tensor], dy: &Tensor) -> Vec<Tensor> {
    let mut refs: Vec<&Tensor> = ops.iter().collect();
    refs.push(dy);
    eval_high_level(
        &Op::Vjp(VjpSpec {
            forward: Box::new(forward),
            wrt,
        }),
        NodeId::new(3),
        &refs,
        &mut ExecState::default(),
    )
    .unwrap()
}

/// Every operand's gradient of every variant against central differences of
/// the float64 reference, for windows shorter and longer than the run, one
/// token, GQA, and gates from ordinary to extreme. The backward runs in f32
/// over sums of at most `T·(window+1)` terms of magnitude ≤ max|grad|, so
/// `1e-4 · max|grad|` leaves two orders of margin over f32 rounding (the
/// finite differences themselves are good to ~1e-9 in f64 with h = 1e-6).
#[test]
fn liger_attention_backward_matches_finite_differences() {
    let mut rng = Rng(41);
    let mut worst = 0.0f64;
    for variant in LigerVariant::ALL {
        for (window, len, gates) in [
            (4, 9, Gates::Typical),
            (64, 6, Gates::Mixed),
            (2, 1, Gates::Typical),
            (3, 7, Gates::NearZero),
        ] {
            if !variant.has_gate() && gates != Gates::Typical {
                continue;
            }
            let spec = spec(variant, window);
            let ops = operands(&mut rng, variant, BATCH, len, gates);
            let r = rng.tensor(&[BATCH, len, HEADS * HEAD_DIM], 1.0);
            let r64 = to_f64(f32s(&r));
            let wide: Vec<Vec<f64>> = ops.iter().map(|t| to_f64(f32s(t))).collect();
            let loss = |x: &[Vec<f64>]| -> f64 {
                let out = reference_f64(&spec, BATCH, len, x).out;
                out.iter().zip(&r64).map(|(a, b)| a * b).sum()
            };
            let wrt: Vec<usize> = (0..ops.len()).collect();
            let grads = vjp(Op::LigerAttention(spec.clone()), wrt.clone(), &ops, &r);
            for (&w, got) in wrt.iter().zip(&grads) {
                assert_eq!(got.shape, ops[w].shape);
                let want = finite_differences(&wide, w, &loss);
                let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                let err = f32s(got)
                    .iter()
                    .zip(&want)
                    .fold(0.0f64, |m, (g, w)| m.max((f64::from(*g) - w).abs()))
                    / scale.max(1e-3);
                assert!(
                    err <= 1e-4,
                    "{variant} window {window} T {len} {gates:?}: operand {w} off by {err:e} (scale {scale:e})"
                );
                worst = worst.max(err);
            }
        }
    }
    eprintln!("LigerAttention backward vs finite differences: worst {worst:.2e}");
}

/// LigerGate's backward against central differences of the float64 gate,
/// including GSA's overlapping bins and retention's head mean.
#[test]
fn liger_gate_backward_matches_finite_differences() {
    let mut rng = Rng(43);
    let mut worst = 0.0f64;
    for (variant, slots) in [
        (LigerVariant::Gla, 0),
        (LigerVariant::Hgrn2, 0),
        (LigerVariant::Retention, 0),
        (LigerVariant::Gsa, 4),
        (LigerVariant::Gsa, 3),
        (LigerVariant::Gsa, 5),
    ] {
        let g = GateSpec {
            variant,
            kv_heads: KV_HEADS,
            head_dim: HEAD_DIM,
            slots,
            normalizer: variant.default_normalizer(),
        };
        for scale in [1.0f32, 8.0] {
            let k = rng.tensor(&[BATCH, 3, KV_HEADS * HEAD_DIM], scale);
            let r = rng.tensor(&[BATCH, 3, KV_HEADS * g.width()], 1.0);
            let r64 = to_f64(f32s(&r));
            let loss = |x: &[Vec<f64>]| -> f64 {
                let out = reference_gate_f64(&g, &x[0]);
                out.iter().zip(&r64).map(|(a, b)| a * b).sum()
            };
            let got = vjp(
                Op::LigerGate(g.clone()),
                vec![0],
                std::slice::from_ref(&k),
                &r,
            )
            .remove(0);
            let want = finite_differences(&[to_f64(f32s(&k))], 0, &loss);
            let err = rel_err(f32s(&got), &want);
            assert!(
                err <= 1e-5,
                "{variant} slots {slots} scale {scale}: {err:e}"
            );
            worst = worst.max(err);
        }
    }
    eprintln!("LigerGate backward vs finite differences: worst {worst:.2e}");
}
