//! Backward (`vjp.*`) kernels and CrossEntropy against float64 references.
//!
//! For every op: a float64 forward written here from the op's math (not from
//! the runtime's code) is first checked against the runtime's f32 forward, so
//! the reference is known to share the runtime's semantics; then the f32 vjp
//! of a random linear functional `⟨r, f(x)⟩` is compared with central finite
//! differences of that float64 forward (step `h = 1e-6·max(1, |x|)`).
//!
//! Errors are `max |got − want| / max |want|` over one whole gradient.
//! Operands are drawn as f32 values, so the reference and the runtime see the
//! same inputs exactly.

mod common;
use common::Rng;

use std::collections::BTreeMap;

use ligerc_ir::{AttentionSpec, Attr, NodeId, OnnxOp, Op, RopeScaling, RopeSpec, VjpSpec};
use ligerc_runtime::ops::{eval_high_level, eval_onnx, eval_vjp};
use ligerc_runtime::{Data, ExecState, RuntimeError, Tensor};

/// Bound on `max|got − want| / max|want|` for forwards and gradients.
///
/// The f32 kernels add at most a few dozen products per output (f32 unit
/// roundoff u = 6e-8), so each output carries a relative error of order
/// `K·u ≲ 4e-6` of the sum of its terms' magnitudes; cancellation can make
/// that sum up to ~10× the largest gradient here, giving ≲ 4e-5. The
/// finite differences contribute `~1e-16·|f|/h + h²·|f'''| ≲ 1e-8`. Rope's
/// f32 angle (`pos·inv_freq` rounded, up to position ~1000) is reproduced by
/// the reference, so it adds nothing. 1e-4 leaves a margin over that bound;
/// the measured worst errors (printed with `--nocapture`) are ~1e-6.
const TOL: f64 = 1e-4;

impl Rng {
    /// `n` values uniform in `[-scale, scale)`, each exactly an f32.
    fn values(&mut self, n: usize, scale: f32) -> Vec<f64> {
        (0..n).map(|_| f64::from(scale * self.uniform())).collect()
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A random f32 tensor.
    fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n = shape.iter().product();
        f32_tensor(shape, &self.values(n, scale))
    }
}

fn f32_tensor(shape: &[usize], v: &[f64]) -> Tensor {
    Tensor::f32(shape.to_vec(), v.iter().map(|&x| x as f32).collect()).unwrap()
}

fn i64_tensor(shape: &[usize], v: &[i64]) -> Tensor {
    Tensor::i64(shape.to_vec(), v.to_vec()).unwrap()
}

/// Every element as f64 (integers and booleans too).
fn as_f64(t: &Tensor) -> Vec<f64> {
    match &t.data {
        Data::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
        Data::Bool(v) => v.iter().map(|&x| f64::from(u8::from(x))).collect(),
    }
}

/// `max |got − want| / max |want|` (the absolute error when `want` is all 0).
fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let diff = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs()));
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    if scale == 0.0 { diff } else { diff / scale }
}

/// An f64 reference forward: operands (all as f64) → the flattened result.
type Reference<'a> = &'a dyn Fn(&[Vec<f64>]) -> Vec<f64>;

/// Central finite differences of `⟨r, f(args)⟩` with respect to `args[which]`.
fn fd_grad(f: Reference, args: &[Vec<f64>], which: usize, r: &[f64]) -> Vec<f64> {
    let mut args = args.to_vec();
    (0..args[which].len())
        .map(|i| {
            let x = args[which][i];
            let h = 1e-6 * x.abs().max(1.0);
            args[which][i] = x + h;
            let up: f64 = f(&args).iter().zip(r).map(|(y, r)| y * r).sum();
            args[which][i] = x - h;
            let down: f64 = f(&args).iter().zip(r).map(|(y, r)| y * r).sum();
            args[which][i] = x;
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// The runtime's forward of `op` (high-level or ONNX); its first result.
fn forward(op: &Op, operands: &[&Tensor], offset: usize) -> Tensor {
    let mut results = match op {
        Op::Onnx(o) => eval_onnx(o, operands, &[]),
        _ => {
            let mut state = ExecState {
                position_offset: offset,
                ..ExecState::default()
            };
            eval_high_level(op, NodeId::new(0), operands, &mut state)
        }
    }
    .unwrap_or_else(|e| panic!("{} forward: {e}", op.mnemonic()));
    results.remove(0)
}

/// The runtime's `vjp.OP` through `eval_vjp`.
fn vjp(
    op: &Op,
    operands: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
    offset: usize,
) -> Result<Vec<Tensor>, RuntimeError> {
    let spec = VjpSpec {
        forward: Box::new(op.clone()),
        wrt: wrt.to_vec(),
    };
    let mut inputs = operands.to_vec();
    inputs.push(dy);
    let state = ExecState {
        position_offset: offset,
        ..ExecState::default()
    };
    eval_vjp(&spec, &inputs, &state)
}

/// Checks `op` on `operands`: the runtime forward against `reference`, then
/// the vjp of every operand in `diff` against finite differences. Also
/// checks that asking for one gradient alone gives the same bits as asking
/// for all of them. Returns the worst gradient error.
fn check(
    name: &str,
    rng: &mut Rng,
    op: &Op,
    operands: &[Tensor],
    diff: &[usize],
    offset: usize,
    reference: Reference,
) -> f64 {
    let refs: Vec<&Tensor> = operands.iter().collect();
    let vals: Vec<Vec<f64>> = operands.iter().map(as_f64).collect();
    let want_y = reference(&vals);
    let y = forward(op, &refs, offset);
    let fwd_err = rel_err(&as_f64(&y), &want_y);
    assert!(fwd_err <= TOL, "{name}: forward error {fwd_err:e}");
    let r = rng.values(want_y.len(), 1.0);
    let dy = f32_tensor(&y.shape, &r);
    let grads = vjp(op, &refs, &dy, diff, offset).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(grads.len(), diff.len());
    let mut worst = 0.0f64;
    for (k, (&i, g)) in diff.iter().zip(&grads).enumerate() {
        assert_eq!(g.shape, operands[i].shape, "{name}: gradient {k} shape");
        let want = fd_grad(reference, &vals, i, &r);
        let err = rel_err(&as_f64(g), &want);
        assert!(err <= TOL, "{name}: gradient of operand {i}: error {err:e}");
        worst = worst.max(err);
        let alone = vjp(op, &refs, &dy, &[i], offset).unwrap();
        assert_eq!(alone[0], *g, "{name}: operand {i} alone differs");
    }
    eprintln!("{name}: forward {fwd_err:.1e}, worst gradient {worst:.1e}");
    worst
}

// ---------------------------------------------------------------- references

/// `x [rows, in]·Wᵀ (+ b)`, `W [out, in]`.
fn matmul_t(x: &[f64], w: &[f64], rows: usize, in_f: usize, out_f: usize) -> Vec<f64> {
    let mut y = vec![0.0; rows * out_f];
    for r in 0..rows {
        for o in 0..out_f {
            y[r * out_f + o] = (0..in_f).map(|i| x[r * in_f + i] * w[o * in_f + i]).sum();
        }
    }
    y
}

fn linear_ref(v: &[Vec<f64>], in_f: usize, out_f: usize) -> Vec<f64> {
    let rows = v[0].len() / in_f;
    let mut y = matmul_t(&v[0], &v[1], rows, in_f, out_f);
    if let Some(b) = v.get(2) {
        for (k, yk) in y.iter_mut().enumerate() {
            *yk += b[k % out_f];
        }
    }
    y
}

fn lora_ref(v: &[Vec<f64>], in_f: usize, out_f: usize, rank: usize, alpha: f64) -> Vec<f64> {
    let rows = v[0].len() / in_f;
    let mut y = linear_ref(&[v[0].clone(), v[1].clone()], in_f, out_f);
    let down = matmul_t(&v[0], &v[2], rows, in_f, rank);
    let up = matmul_t(&down, &v[3], rows, rank, out_f);
    let scale = if rank == 0 { 0.0 } else { alpha / rank as f64 };
    for (k, yk) in y.iter_mut().enumerate() {
        *yk += scale * up[k] + v.get(4).map_or(0.0, |b| b[k % out_f]);
    }
    y
}

fn embedding_ref(v: &[Vec<f64>], dim: usize) -> Vec<f64> {
    v[1].iter()
        .flat_map(|&id| v[0][id as usize * dim..(id as usize + 1) * dim].to_vec())
        .collect()
}

fn rms_norm_ref(v: &[Vec<f64>], eps: f64) -> Vec<f64> {
    let dim = v[1].len();
    v[0].chunks(dim)
        .flat_map(|row| {
            let ms = row.iter().map(|x| x * x).sum::<f64>() / dim as f64;
            let r = 1.0 / (ms + eps).sqrt();
            row.iter().zip(&v[1]).map(move |(x, w)| w * x * r)
        })
        .collect()
}

fn swiglu_ref(v: &[Vec<f64>]) -> Vec<f64> {
    v[0].iter()
        .zip(&v[1])
        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
        .collect()
}

/// Rotate-half RoPE; the angle is `pos·inv_freq` rounded to f32, as
/// transformers computes it, and everything else is f64.
fn rope_ref(v: &[Vec<f64>], seq: usize, spec: &RopeSpec, factor: f64, offset: usize) -> Vec<f64> {
    let d = spec.head_dim;
    let half = d / 2;
    let features = spec.heads * d;
    let mut out = v[0].clone();
    for (row, chunk) in v[0].chunks(features).enumerate() {
        let pos = (offset + row % seq) as f32;
        for h in 0..spec.heads {
            for i in 0..half {
                let inv = (1.0 / spec.theta.powf(2.0 * i as f64 / d as f64) / factor) as f32;
                let angle = f64::from(pos * inv);
                let (x1, x2) = (chunk[h * d + i], chunk[h * d + half + i]);
                out[row * features + h * d + i] = x1 * angle.cos() - x2 * angle.sin();
                out[row * features + h * d + half + i] = x2 * angle.cos() + x1 * angle.sin();
            }
        }
    }
    out
}

/// Sizes of an attention test case.
#[derive(Clone, Copy, Debug)]
struct Att {
    batch: usize,
    q_len: usize,
    kv_len: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    causal: bool,
}

fn attention_ref(v: &[Vec<f64>], a: Att, scale: f64) -> Vec<f64> {
    let (qf, kf) = (a.heads * a.d, a.kv_heads * a.d);
    let mut out = vec![0.0; a.batch * a.q_len * qf];
    for b in 0..a.batch {
        for h in 0..a.heads {
            let kvh = h / (a.heads / a.kv_heads);
            for t in 0..a.q_len {
                let q = &v[0][(b * a.q_len + t) * qf + h * a.d..][..a.d];
                let seen: Vec<usize> = (0..a.kv_len)
                    .filter(|&j| !a.causal || j + a.q_len <= t + a.kv_len)
                    .filter(|&j| v.get(3).is_none_or(|m| m[b * a.kv_len + j] != 0.0))
                    .collect();
                let s: Vec<f64> = seen
                    .iter()
                    .map(|&j| {
                        let k = &v[1][(b * a.kv_len + j) * kf + kvh * a.d..][..a.d];
                        scale * q.iter().zip(k).map(|(x, y)| x * y).sum::<f64>()
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - max).exp()).sum();
                for (&j, sj) in seen.iter().zip(&s) {
                    let p = (sj - max).exp() / z;
                    for i in 0..a.d {
                        out[(b * a.q_len + t) * qf + h * a.d + i] +=
                            p * v[2][(b * a.kv_len + j) * kf + kvh * a.d + i];
                    }
                }
            }
        }
    }
    out
}

/// `[Σ −log softmax(logits)[target]]` over the targets that are not `ignore`.
fn cross_entropy_ref(v: &[Vec<f64>], vocab: usize, ignore: i64) -> Vec<f64> {
    let mut sum = 0.0;
    for (row, &t) in v[0].chunks(vocab).zip(&v[1]) {
        if t as i64 == ignore {
            continue;
        }
        let z: f64 = row.iter().map(|x| x.exp()).sum();
        sum += z.ln() - row[t as usize];
    }
    vec![sum]
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * shape[k + 1];
    }
    s
}

/// The element of `shape`-shaped `data` read at an index of the broadcast
/// `out` shape (numpy rules).
fn broadcast_at(data: &[f64], shape: &[usize], out: &[usize], index: &[usize]) -> f64 {
    let st = strides(shape);
    let lead = out.len() - shape.len();
    let at: usize = (0..shape.len())
        .map(|k| {
            if shape[k] == 1 {
                0
            } else {
                index[lead + k] * st[k]
            }
        })
        .sum();
    data[at]
}

/// The multi-index of flat position `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for k in (0..shape.len()).rev() {
        index[k] = flat % shape[k];
        flat /= shape[k];
    }
    index
}

fn arith_ref(v: &[Vec<f64>], op: &str, sa: &[usize], sb: &[usize], out: &[usize]) -> Vec<f64> {
    (0..out.iter().product())
        .map(|flat| {
            let index = unravel(flat, out);
            let a = broadcast_at(&v[0], sa, out, &index);
            let b = broadcast_at(&v[1], sb, out, &index);
            match op {
                "Add" => a + b,
                "Sub" => a - b,
                "Mul" => a * b,
                _ => a / b,
            }
        })
        .collect()
}

fn transpose_ref(v: &[Vec<f64>], shape: &[usize], perm: &[usize]) -> Vec<f64> {
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let st = strides(shape);
    (0..out.iter().product())
        .map(|flat| {
            let index = unravel(flat, &out);
            v[0][(0..out.len())
                .map(|k| index[k] * st[perm[k]])
                .sum::<usize>()]
        })
        .collect()
}

fn onnx(op_type: &str, attrs: &[(&str, Attr)]) -> Op {
    Op::Onnx(OnnxOp {
        op_type: op_type.into(),
        attrs: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    })
}

// ---------------------------------------------------------------- gradients

#[test]
fn linear_and_lm_head_gradients_match_finite_differences() {
    let mut rng = Rng(11);
    let mut worst = 0.0f64;
    // (x's leading dims, in, out, bias)
    let cases: [(&[usize], usize, usize, bool); 5] = [
        (&[2, 3], 7, 5, true),
        (&[1, 1], 3, 4, false),
        (&[4], 9, 2, true),
        (&[2, 1, 3], 5, 6, true),
        (&[3, 5], 4, 3, false),
    ];
    for (lead, in_f, out_f, bias) in cases {
        let mut xs = lead.to_vec();
        xs.push(in_f);
        let mut ops = vec![rng.tensor(&xs, 1.0), rng.tensor(&[out_f, in_f], 1.0)];
        if bias {
            ops.push(rng.tensor(&[out_f], 1.0));
        }
        let diff: Vec<usize> = (0..ops.len()).collect();
        let reference = |v: &[Vec<f64>]| linear_ref(v, in_f, out_f);
        let name = format!("Linear {xs:?}→{out_f} bias={bias}");
        worst = worst.max(check(
            &name,
            &mut rng,
            &Op::Linear,
            &ops,
            &diff,
            0,
            &reference,
        ));
        if !bias {
            let name = format!("LmHead {xs:?}→{out_f}");
            worst = worst.max(check(
                &name,
                &mut rng,
                &Op::LmHead,
                &ops,
                &diff,
                0,
                &reference,
            ));
        }
    }
    eprintln!("Linear/LmHead worst gradient error {worst:.1e}");
}

#[test]
fn lora_gradients_match_finite_differences() {
    let mut rng = Rng(12);
    let mut worst = 0.0f64;
    // (x's leading dims, [in, out, rank], alpha, bias)
    let cases: [(&[usize], [usize; 3], f64, bool); 4] = [
        (&[2, 3], [6, 5, 3], 8.0, true),
        (&[5], [4, 7, 1], 2.0, false),
        (&[1, 2, 2], [9, 4, 4], 16.0, true),
        (&[3], [5, 3, 0], 8.0, false),
    ];
    for (lead, [in_f, out_f, rank], alpha, bias) in cases {
        let mut xs = lead.to_vec();
        xs.push(in_f);
        let mut ops = vec![
            rng.tensor(&xs, 1.0),
            rng.tensor(&[out_f, in_f], 1.0),
            rng.tensor(&[rank, in_f], 1.0),
            rng.tensor(&[out_f, rank], 1.0),
        ];
        if bias {
            ops.push(rng.tensor(&[out_f], 1.0));
        }
        let diff: Vec<usize> = (0..ops.len()).collect();
        let reference = |v: &[Vec<f64>]| lora_ref(v, in_f, out_f, rank, alpha);
        let name = format!("Lora {xs:?}→{out_f} rank {rank} alpha {alpha} bias={bias}");
        worst = worst.max(check(
            &name,
            &mut rng,
            &Op::Lora { alpha },
            &ops,
            &diff,
            0,
            &reference,
        ));
    }
    eprintln!("Lora worst gradient error {worst:.1e}");
}

#[test]
fn embedding_gradient_scatter_adds_repeated_ids() {
    let mut rng = Rng(13);
    let mut worst = 0.0f64;
    // (vocab, dim, ids shape); dim 70 spans two column blocks of the kernel.
    let cases: [(usize, usize, &[usize]); 3] = [(11, 5, &[2, 3]), (5, 70, &[3, 4]), (4, 3, &[7])];
    for (vocab, dim, ids_shape) in cases {
        let n: usize = ids_shape.iter().product();
        // Ids drawn from a small range so that most repeat.
        let ids: Vec<i64> = (0..n).map(|_| rng.below(vocab.min(3)) as i64).collect();
        let ops = vec![rng.tensor(&[vocab, dim], 1.0), i64_tensor(ids_shape, &ids)];
        let reference = |v: &[Vec<f64>]| embedding_ref(v, dim);
        let name = format!("Embedding [{vocab}, {dim}] ids {ids_shape:?}");
        worst = worst.max(check(
            &name,
            &mut rng,
            &Op::Embedding,
            &ops,
            &[0],
            0,
            &reference,
        ));
    }
    eprintln!("Embedding worst gradient error {worst:.1e}");
}

#[test]
fn rms_norm_gradients_match_finite_differences() {
    let mut rng = Rng(14);
    let mut worst = 0.0f64;
    // (shape, eps, input scale)
    let cases: [(&[usize], f64, f32); 5] = [
        (&[2, 3, 8], 1e-5, 2.0),
        (&[5, 13], 1e-6, 2.0),
        (&[1, 1, 1], 1e-5, 2.0), // D = 1: dx is all cancellation
        (&[70, 4], 1e-5, 2.0),   // more rows than one weight-gradient block
        (&[3, 6], 1e-5, 1e-3),   // eps dominates the mean square
    ];
    for (shape, eps, scale) in cases {
        let dim = *shape.last().unwrap();
        let ops = vec![rng.tensor(shape, scale), rng.tensor(&[dim], 1.5)];
        let reference = |v: &[Vec<f64>]| rms_norm_ref(v, eps);
        let name = format!("RmsNorm {shape:?} eps {eps:e} scale {scale:e}");
        let op = Op::RmsNorm { eps };
        worst = worst.max(check(&name, &mut rng, &op, &ops, &[0, 1], 0, &reference));
    }
    eprintln!("RmsNorm worst gradient error {worst:.1e}");
}

#[test]
fn swiglu_gradients_match_finite_differences() {
    let mut rng = Rng(15);
    let mut worst = 0.0f64;
    for shape in [&[2, 3, 5][..], &[17], &[1, 4097]] {
        let ops = vec![rng.tensor(shape, 4.0), rng.tensor(shape, 2.0)];
        let name = format!("SwiGlu {shape:?}");
        worst = worst.max(check(
            &name,
            &mut rng,
            &Op::SwiGlu,
            &ops,
            &[0, 1],
            0,
            &swiglu_ref,
        ));
    }
    eprintln!("SwiGlu worst gradient error {worst:.1e}");
}

#[test]
fn rope_gradient_is_the_transposed_rotation() {
    let mut rng = Rng(16);
    let mut worst = 0.0f64;
    // (batch, seq, heads, head_dim, linear factor, position offset)
    let cases = [
        (2, 3, 2, 8, 1.0, 0),
        (1, 5, 3, 4, 2.0, 7),
        (2, 1, 1, 2, 1.0, 1000),
        (3, 4, 2, 6, 1.0, 5),
    ];
    for (batch, seq, heads, d, factor, offset) in cases {
        let spec = RopeSpec {
            heads,
            head_dim: d,
            theta: 10000.0,
            scaling: if factor == 1.0 {
                RopeScaling::None
            } else {
                RopeScaling::Linear { factor }
            },
        };
        let ops = vec![rng.tensor(&[batch, seq, heads * d], 1.0)];
        let reference = |v: &[Vec<f64>]| rope_ref(v, seq, &spec, factor, offset);
        let name = format!("Rope [{batch}, {seq}, {heads}×{d}] offset {offset}");
        let op = Op::Rope(spec.clone());
        worst = worst.max(check(&name, &mut rng, &op, &ops, &[0], offset, &reference));
    }
    eprintln!("Rope worst gradient error {worst:.1e}");
}

/// A padding mask `[B, S]` of the given kind with about a quarter of the keys
/// hidden, and batch row 0's last key always kept.
fn random_mask(rng: &mut Rng, batch: usize, kv_len: usize, kind: &str) -> Tensor {
    let keep: Vec<bool> = (0..batch * kv_len)
        .map(|i| i == kv_len - 1 || rng.below(4) != 0)
        .collect();
    match kind {
        "f32" => Tensor::f32(
            vec![batch, kv_len],
            keep.iter().map(|&k| f32::from(u8::from(k))).collect(),
        ),
        "i64" => Tensor::i64(
            vec![batch, kv_len],
            keep.iter().map(|&k| i64::from(k)).collect(),
        ),
        _ => Tensor::bool(vec![batch, kv_len], keep),
    }
    .unwrap()
}

#[test]
fn attention_gradients_match_finite_differences() {
    let mut rng = Rng(17);
    let mut worst = 0.0f64;
    let att = |batch, q_len, kv_len, heads, kv_heads, d, causal| Att {
        batch,
        q_len,
        kv_len,
        heads,
        kv_heads,
        d,
        causal,
    };
    // (sizes, mask kind or "")
    let cases = [
        (att(2, 5, 7, 4, 2, 4, true), "f32"), // GQA, T ≠ S, masked keys
        (att(1, 4, 4, 2, 2, 3, false), ""),   // plain multi-head, not causal
        (att(2, 3, 6, 6, 1, 2, true), "i64"), // multi-query
        (att(1, 6, 3, 2, 1, 4, true), ""),    // T > S: early queries see nothing
        (att(2, 4, 5, 4, 2, 3, false), "bool"), // masked, not causal
    ];
    for (a, mask) in cases {
        let spec = AttentionSpec {
            heads: a.heads,
            kv_heads: a.kv_heads,
            head_dim: a.d,
            scale: 1.0 / (a.d as f64).sqrt(),
            causal: a.causal,
        };
        let mut ops = vec![
            rng.tensor(&[a.batch, a.q_len, a.heads * a.d], 1.5),
            rng.tensor(&[a.batch, a.kv_len, a.kv_heads * a.d], 1.5),
            rng.tensor(&[a.batch, a.kv_len, a.kv_heads * a.d], 1.0),
        ];
        if !mask.is_empty() {
            ops.push(random_mask(&mut rng, a.batch, a.kv_len, mask));
        }
        let scale = spec.scale;
        let reference = |v: &[Vec<f64>]| attention_ref(v, a, scale);
        let name = format!("Attention {a:?} mask {mask:?}");
        let op = Op::Attention(spec);
        worst = worst.max(check(&name, &mut rng, &op, &ops, &[0, 1, 2], 0, &reference));
    }
    eprintln!("Attention worst gradient error {worst:.1e}");
}

#[test]
fn attention_gradients_are_deterministic_and_fully_masked_rows_get_none() {
    let mut rng = Rng(18);
    let spec = AttentionSpec {
        heads: 8,
        kv_heads: 2,
        head_dim: 16,
        scale: 0.25,
        causal: true,
    };
    let (b, t, s) = (3, 9, 12);
    let q = rng.tensor(&[b, t, 128], 1.0);
    let k = rng.tensor(&[b, s, 32], 1.0);
    let v = rng.tensor(&[b, s, 32], 1.0);
    // Batch row 1 hides every key: its queries see nothing.
    let keep: Vec<i64> = (0..b * s).map(|i| i64::from(i / s != 1)).collect();
    let mask = i64_tensor(&[b, s], &keep);
    let dy = rng.tensor(&[b, t, 128], 1.0);
    let ops = [&q, &k, &v, &mask];
    let op = Op::Attention(spec);
    let first = vjp(&op, &ops, &dy, &[0, 1, 2], 0).unwrap();
    for _ in 0..3 {
        assert_eq!(vjp(&op, &ops, &dy, &[0, 1, 2], 0).unwrap(), first);
    }
    for g in &first {
        let row = g.shape[1] * g.shape[2];
        let data = g.data.clone();
        let Data::F32(data) = data else { panic!("f32") };
        assert!(data[row..2 * row].iter().all(|&x| x == 0.0));
        assert!(data[..row].iter().any(|&x| x != 0.0));
    }
}

#[test]
fn cross_entropy_loss_and_gradient_match_the_reference() {
    let mut rng = Rng(19);
    let mut worst = 0.0f64;
    // (logits shape, ignore_index, fraction of ignored positions in quarters)
    let cases: [(&[usize], i64, usize); 4] = [
        (&[2, 3, 7], -100, 1),
        (&[5, 11], 0, 0),   // ignore_index is a class id: targets 0 are skipped
        (&[1, 4], -100, 4), // everything ignored: loss 0, count 0
        (&[4, 2, 33], -1, 2),
    ];
    for (shape, ignore, quarters) in cases {
        let (&vocab, lead) = shape.split_last().unwrap();
        let n: usize = lead.iter().product();
        let targets: Vec<i64> = (0..n)
            .map(|_| {
                if rng.below(4) < quarters {
                    ignore
                } else {
                    rng.below(vocab) as i64
                }
            })
            .collect();
        let ops = vec![rng.tensor(shape, 3.0), i64_tensor(lead, &targets)];
        let counted = targets.iter().filter(|&&t| t != ignore).count();
        let results = forward_all(
            &Op::CrossEntropy {
                ignore_index: ignore,
            },
            &ops,
        );
        assert_eq!(results[0].shape, Vec::<usize>::new());
        assert_eq!(
            results[1],
            Tensor::f32(vec![], vec![counted as f32]).unwrap()
        );
        let reference = |v: &[Vec<f64>]| cross_entropy_ref(v, vocab, ignore);
        let name = format!("CrossEntropy {shape:?} ignore {ignore} counted {counted}/{n}");
        let op = Op::CrossEntropy {
            ignore_index: ignore,
        };
        worst = worst.max(check(&name, &mut rng, &op, &ops, &[0], 0, &reference));
        // Ignored rows get exactly zero gradient.
        let dy = Tensor::f32(vec![], vec![1.0]).unwrap();
        let refs: Vec<&Tensor> = ops.iter().collect();
        let g = vjp(&op, &refs, &dy, &[0], 0).unwrap().remove(0);
        let Data::F32(g) = g.data else { panic!("f32") };
        for (row, &t) in g.chunks(vocab).zip(&targets) {
            if t == ignore {
                assert!(row.iter().all(|&x| x == 0.0));
            }
        }
    }
    eprintln!("CrossEntropy worst gradient error {worst:.1e}");
}

fn forward_all(op: &Op, operands: &[Tensor]) -> Vec<Tensor> {
    let refs: Vec<&Tensor> = operands.iter().collect();
    eval_high_level(op, NodeId::new(0), &refs, &mut ExecState::default()).unwrap()
}

#[test]
fn broadcasting_arithmetic_gradients_reduce_over_broadcast_axes() {
    let mut rng = Rng(20);
    let mut worst = 0.0f64;
    let cases: [(&str, &[usize], &[usize]); 9] = [
        ("Add", &[2, 3, 4], &[3, 1]),
        ("Sub", &[1, 4], &[3, 1]),
        ("Mul", &[2, 3], &[]),
        ("Div", &[2, 1, 3], &[4, 1]),
        ("Mul", &[3, 5], &[3, 5]),
        ("Sub", &[], &[2, 2]),
        ("Div", &[5], &[2, 3, 5]),
        ("Add", &[2, 1, 4, 1], &[3, 1, 5]),
        ("Mul", &[1], &[6]),
    ];
    for (op_type, sa, sb) in cases {
        let a = rng.tensor(sa, 2.0);
        // Divisors kept away from zero: |b| in [0.5, 1.5).
        let nb: usize = sb.iter().product();
        let bv: Vec<f64> = rng
            .values(nb, 1.0)
            .into_iter()
            .map(|u| f64::from((u.signum() * (0.5 + u.abs())) as f32))
            .collect();
        let ops = vec![a, f32_tensor(sb, &bv)];
        let rank = sa.len().max(sb.len());
        let pad = |s: &[usize], k: usize| (k + s.len()).checked_sub(rank).map_or(1, |i| s[i]);
        let out: Vec<usize> = (0..rank).map(|k| pad(sa, k).max(pad(sb, k))).collect();
        let reference = |v: &[Vec<f64>]| arith_ref(v, op_type, sa, sb, &out);
        let name = format!("onnx.{op_type} {sa:?} ∘ {sb:?}");
        worst = worst.max(check(
            &name,
            &mut rng,
            &onnx(op_type, &[]),
            &ops,
            &[0, 1],
            0,
            &reference,
        ));
    }
    eprintln!("Add/Sub/Mul/Div worst gradient error {worst:.1e}");
}

#[test]
fn unary_and_layout_gradients_match_finite_differences() {
    let mut rng = Rng(21);
    let mut worst = 0.0f64;
    let copy = |v: &[Vec<f64>]| v[0].clone();
    let neg = |v: &[Vec<f64>]| v[0].iter().map(|x| -x).collect::<Vec<f64>>();
    let ints = |v: &[i64]| i64_tensor(&[v.len()], v);
    // (op, x shape, extra operands, reference)
    let cases: Vec<(Op, &[usize], Vec<Tensor>, Reference)> = vec![
        (onnx("Neg", &[]), &[2, 3], vec![], &neg),
        (onnx("Identity", &[]), &[4], vec![], &copy),
        (
            onnx("Cast", &[("to", Attr::Int(1))]),
            &[2, 2],
            vec![],
            &copy,
        ),
        (onnx("Cast", &[("to", Attr::Int(11))]), &[3], vec![], &copy),
        (
            onnx("Reshape", &[]),
            &[2, 3, 4],
            vec![ints(&[4, -1])],
            &copy,
        ),
        (
            onnx("Flatten", &[("axis", Attr::Int(2))]),
            &[2, 3, 4],
            vec![],
            &copy,
        ),
        (onnx("Squeeze", &[]), &[2, 1, 3], vec![ints(&[1])], &copy),
        (onnx("Unsqueeze", &[]), &[2, 3], vec![ints(&[0, 3])], &copy),
    ];
    for (op, shape, extra, reference) in cases {
        let mut ops = vec![rng.tensor(shape, 1.0)];
        ops.extend(extra);
        let name = format!("{} {shape:?}", op.mnemonic());
        worst = worst.max(check(&name, &mut rng, &op, &ops, &[0], 0, reference));
    }
    let perms: [(&[usize], Option<&[i64]>); 4] = [
        (&[2, 3, 4], Some(&[2, 0, 1])),
        (&[3, 5], None),
        (&[2, 1, 3, 2], Some(&[3, 1, 0, 2])),
        (&[2, 3, 4], Some(&[-1, 0, 1])),
    ];
    for (shape, perm) in perms {
        let attrs: Vec<(&str, Attr)> = perm
            .map(|p| ("perm", Attr::Ints(p.to_vec())))
            .into_iter()
            .collect();
        let axes: Vec<usize> = match perm {
            Some(p) => p
                .iter()
                .map(|&a| a.rem_euclid(shape.len() as i64) as usize)
                .collect(),
            None => (0..shape.len()).rev().collect(),
        };
        let ops = vec![rng.tensor(shape, 1.0)];
        let reference = |v: &[Vec<f64>]| transpose_ref(v, shape, &axes);
        let name = format!("onnx.Transpose {shape:?} perm {perm:?}");
        worst = worst.max(check(
            &name,
            &mut rng,
            &onnx("Transpose", &attrs),
            &ops,
            &[0],
            0,
            &reference,
        ));
    }
    eprintln!(
        "Neg/Identity/Cast/Reshape/Flatten/Squeeze/Unsqueeze/Transpose worst gradient error {worst:.1e}"
    );
}

#[test]
fn vjp_nodes_run_through_eval_high_level() {
    let mut rng = Rng(22);
    let x = rng.tensor(&[2, 3], 1.0);
    let w = rng.tensor(&[3], 1.0);
    let dy = rng.tensor(&[2, 3], 1.0);
    let spec = VjpSpec {
        forward: Box::new(Op::RmsNorm { eps: 1e-5 }),
        wrt: vec![1, 0],
    };
    let direct = eval_vjp(&spec, &[&x, &w, &dy], &ExecState::default()).unwrap();
    let node = eval_high_level(
        &Op::Vjp(spec),
        NodeId::new(0),
        &[&x, &w, &dy],
        &mut ExecState::default(),
    )
    .unwrap();
    assert_eq!(direct, node);
    assert_eq!(node[0].shape, vec![3]);
    assert_eq!(node[1].shape, vec![2, 3]);
}

// ---------------------------------------------------------------- errors

fn err(op: &Op, operands: &[&Tensor], dy: &Tensor, wrt: &[usize]) -> String {
    match vjp(op, operands, dy, wrt, 0) {
        Ok(g) => panic!(
            "{}: expected an error, got {} gradients",
            op.mnemonic(),
            g.len()
        ),
        Err(e) => e.to_string(),
    }
}

#[test]
fn integer_operands_have_no_gradient() {
    let mut rng = Rng(23);
    let table = rng.tensor(&[5, 3], 1.0);
    let ids = i64_tensor(&[2], &[1, 4]);
    let e = err(
        &Op::Embedding,
        &[&table, &ids],
        &rng.tensor(&[2, 3], 1.0),
        &[1],
    );
    assert!(e.contains("no gradient"), "{e}");

    let logits = rng.tensor(&[2, 5], 1.0);
    let targets = i64_tensor(&[2], &[0, 3]);
    let scalar = Tensor::f32(vec![], vec![1.0]).unwrap();
    let ce = Op::CrossEntropy { ignore_index: -100 };
    let e = err(&ce, &[&logits, &targets], &scalar, &[0, 1]);
    assert!(e.contains("targets"), "{e}");

    let spec = AttentionSpec {
        heads: 2,
        kv_heads: 1,
        head_dim: 2,
        scale: 0.5,
        causal: true,
    };
    let q = rng.tensor(&[1, 2, 4], 1.0);
    let kv = rng.tensor(&[1, 3, 2], 1.0);
    let mask = i64_tensor(&[1, 3], &[1, 1, 0]);
    let e = err(&Op::Attention(spec), &[&q, &kv, &kv, &mask], &q, &[3]);
    assert!(e.contains("mask"), "{e}");

    let x = rng.tensor(&[2, 3], 1.0);
    let shape = i64_tensor(&[1], &[6]);
    let e = err(
        &onnx("Reshape", &[]),
        &[&x, &shape],
        &rng.tensor(&[6], 1.0),
        &[1],
    );
    assert!(e.contains("no gradient"), "{e}");
    let e = err(&onnx("Cast", &[("to", Attr::Int(7))]), &[&x], &x, &[0]);
    assert!(e.contains("no gradient"), "{e}");
    let (ia, ib) = (i64_tensor(&[2], &[1, 2]), i64_tensor(&[2], &[3, 4]));
    let e = err(&onnx("Add", &[]), &[&ia, &ib], &rng.tensor(&[2], 1.0), &[0]);
    assert!(e.contains("no gradient"), "{e}");
}

#[test]
fn bad_shapes_and_values_are_errors() {
    let mut rng = Rng(24);
    let x = rng.tensor(&[2, 3], 1.0);
    let w = rng.tensor(&[4, 3], 1.0);
    // Linear: result gradient of the wrong shape; weight of the wrong rank.
    let e = err(&Op::Linear, &[&x, &w], &rng.tensor(&[2, 5], 1.0), &[0]);
    assert!(e.contains("result gradient"), "{e}");
    let e = err(
        &Op::Linear,
        &[&x, &rng.tensor(&[12], 1.0)],
        &rng.tensor(&[2, 4], 1.0),
        &[1],
    );
    assert!(e.contains("[out, in]"), "{e}");
    // Lora: A of the wrong width.
    let (a, b) = (rng.tensor(&[2, 5], 1.0), rng.tensor(&[4, 2], 1.0));
    let e = err(
        &Op::Lora { alpha: 8.0 },
        &[&x, &w, &a, &b],
        &rng.tensor(&[2, 4], 1.0),
        &[2],
    );
    assert!(e.contains("lora_A"), "{e}");
    // Embedding: id out of range.
    let e = err(
        &Op::Embedding,
        &[&w, &i64_tensor(&[2], &[0, 4])],
        &rng.tensor(&[2, 3], 1.0),
        &[0],
    );
    assert!(e.contains("token id 4"), "{e}");
    // RmsNorm: weight of the wrong length.
    let e = err(
        &Op::RmsNorm { eps: 1e-5 },
        &[&x, &rng.tensor(&[2], 1.0)],
        &x,
        &[0],
    );
    assert!(e.contains("weight"), "{e}");
    // SwiGlu: shapes differ.
    let e = err(&Op::SwiGlu, &[&x, &w], &x, &[0]);
    assert!(e.contains("one shape"), "{e}");
    // Rope: odd head_dim.
    let rope = Op::Rope(RopeSpec {
        heads: 1,
        head_dim: 3,
        theta: 10000.0,
        scaling: RopeScaling::None,
    });
    let r = rng.tensor(&[1, 2, 3], 1.0);
    let e = err(&rope, &[&r], &r, &[0]);
    assert!(e.contains("even"), "{e}");
    // Attention: result gradient not shaped like the query.
    let spec = AttentionSpec {
        heads: 2,
        kv_heads: 1,
        head_dim: 2,
        scale: 0.5,
        causal: false,
    };
    let q = rng.tensor(&[1, 2, 4], 1.0);
    let kv = rng.tensor(&[1, 3, 2], 1.0);
    let e = err(
        &Op::Attention(spec),
        &[&q, &kv, &kv],
        &rng.tensor(&[1, 3, 4], 1.0),
        &[0],
    );
    assert!(e.contains("result gradient"), "{e}");
    // CrossEntropy: a target outside 0..V names its position and value.
    let logits = rng.tensor(&[2, 3, 4], 1.0);
    let targets = i64_tensor(&[2, 3], &[0, -100, 3, 1, 9, 2]);
    let scalar = Tensor::f32(vec![], vec![1.0]).unwrap();
    let ce = Op::CrossEntropy { ignore_index: -100 };
    let e = err(&ce, &[&logits, &targets], &scalar, &[0]);
    assert!(e.contains("position 4") && e.contains("target 9"), "{e}");
    let fwd = eval_high_level(
        &ce,
        NodeId::new(0),
        &[&logits, &targets],
        &mut ExecState::default(),
    );
    assert!(matches!(fwd, Err(RuntimeError::Input(_))), "{fwd:?}");
    let e = err(&ce, &[&logits, &i64_tensor(&[2], &[0, 1])], &scalar, &[0]);
    assert!(e.contains("targets"), "{e}");
    // ONNX: operands that do not broadcast; a perm that is not one; no rule.
    let e = err(&onnx("Add", &[]), &[&x, &w], &x, &[0]);
    assert!(e.contains("broadcast"), "{e}");
    let t = onnx("Transpose", &[("perm", Attr::Ints(vec![0, 0]))]);
    let e = err(&t, &[&x], &x, &[0]);
    assert!(e.contains("permutation"), "{e}");
    let e = err(&onnx("Softmax", &[]), &[&x], &x, &[0]);
    assert!(e.contains("no backward rule for onnx.Softmax"), "{e}");
    // A tensor whose data does not match its shape.
    let broken = Tensor {
        shape: vec![2, 3],
        data: Data::F32(vec![0.0; 5]),
    };
    let e = err(&Op::SwiGlu, &[&broken, &broken], &broken, &[0]);
    assert!(e.contains("elements"), "{e}");
}
