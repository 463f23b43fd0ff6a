//! High-level op kernels against naive f64 implementations, on graphs built by
//! hand, plus the errors they must return.

mod common;
use common::Rng;

use std::collections::HashMap;

use ligerc_ir::{AttentionSpec, DType, Graph, NodeId, Op, RopeScaling, RopeSpec, TensorType};
use ligerc_runtime::ops::eval_high_level;
use ligerc_runtime::{Data, ExecState, Executor, RuntimeError, Tensor};

impl Rng {
    fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::f32(shape.to_vec(), (0..n).map(|_| self.uniform()).collect()).unwrap()
    }
}

fn f32s(t: &Tensor) -> &[f32] {
    t.as_f32("test").unwrap()
}

fn ty_of(t: &Tensor) -> TensorType {
    let dtype = match t.data {
        Data::F32(_) => DType::F32,
        Data::I64(_) => DType::I64,
        Data::Bool(_) => DType::Bool,
    };
    TensorType::fixed(dtype, &t.shape)
}

/// A graph computing `op` on inputs `x0, x1, …` bound to `operands`.
fn op_graph(op: Op, operands: &[&Tensor], out_shape: &[usize]) -> (Graph, HashMap<String, Tensor>) {
    let mut g = Graph::new("op");
    let mut inputs = HashMap::new();
    let mut refs = Vec::new();
    for (i, t) in operands.iter().enumerate() {
        let name = format!("x{i}");
        refs.push(g.add_input(&name, ty_of(t)));
        inputs.insert(name, (*t).clone());
    }
    let out = g.add(op, &refs, TensorType::fixed(DType::F32, out_shape));
    g.add_output("y", out);
    (g, inputs)
}

/// Runs `op` through the executor.
fn run_op(op: Op, operands: &[&Tensor], out_shape: &[usize], state: &mut ExecState) -> Tensor {
    let (g, inputs) = op_graph(op, operands, out_shape);
    let exec = Executor::new(g).unwrap();
    let mut out = exec.run(&inputs, state).unwrap();
    let y = out.remove(0);
    assert_eq!(y.shape, out_shape);
    y
}

/// Runs `op` directly on the kernel entry point (bypassing the verifier).
fn eval(op: &Op, operands: &[&Tensor]) -> Result<Tensor, RuntimeError> {
    let mut state = ExecState::default();
    eval_high_level(op, NodeId::new(0), operands, &mut state).map(|mut v| v.remove(0))
}

/// Largest `|got - want|` relative to `max(1, max |want|)`.
fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, w| m.max(w.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(*g) - w).abs() / scale;
        assert!(
            err <= tol,
            "{what}: element {i}: got {g}, want {w} (rel err {err:e})"
        );
    }
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    f32s(t).iter().map(|&x| f64::from(x)).collect()
}

// ---------------------------------------------------------------- Embedding

#[test]
fn embedding_picks_rows() {
    let mut rng = Rng(1);
    let table = rng.tensor(&[11, 6]);
    let ids = Tensor::i64(vec![2, 3], vec![0, 10, 4, 4, 7, 1]).unwrap();
    let y = run_op(
        Op::Embedding,
        &[&table, &ids],
        &[2, 3, 6],
        &mut ExecState::default(),
    );
    let t = f32s(&table);
    let want: Vec<f64> = [0usize, 10, 4, 4, 7, 1]
        .iter()
        .flat_map(|&id| t[id * 6..id * 6 + 6].iter().map(|&x| f64::from(x)))
        .collect();
    assert_close(f32s(&y), &want, 0.0, "embedding");
}

#[test]
fn embedding_rejects_out_of_range_ids() {
    let table = Rng(2).tensor(&[5, 3]);
    for bad in [5i64, -1] {
        let ids = Tensor::i64(vec![1, 2], vec![0, bad]).unwrap();
        let err = eval(&Op::Embedding, &[&table, &ids])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&bad.to_string()) && err.contains('5'), "{err}");
    }
    let float_ids = Tensor::f32(vec![1], vec![0.0]).unwrap();
    assert!(eval(&Op::Embedding, &[&table, &float_ids]).is_err());
    let flat_table = Tensor::f32(vec![15], vec![0.0; 15]).unwrap();
    let ids = Tensor::i64(vec![1], vec![0]).unwrap();
    assert!(eval(&Op::Embedding, &[&flat_table, &ids]).is_err());
}

// ---------------------------------------------------------------- Linear / LmHead

fn naive_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Vec<f64> {
    let (out_f, in_f) = (w.shape[0], w.shape[1]);
    let (xs, ws) = (f32s(x), f32s(w));
    let rows = xs.len() / in_f;
    let mut y = vec![0.0f64; rows * out_f];
    for r in 0..rows {
        for o in 0..out_f {
            let mut acc = b.map_or(0.0, |b| f64::from(f32s(b)[o]));
            for i in 0..in_f {
                acc += f64::from(xs[r * in_f + i]) * f64::from(ws[o * in_f + i]);
            }
            y[r * out_f + o] = acc;
        }
    }
    y
}

#[test]
fn linear_matches_naive_for_few_and_many_rows() {
    let mut rng = Rng(3);
    // [1, 1, 37] takes the dot-product path, [2, 9, 37] the sgemm path.
    for x_shape in [[1usize, 1, 37], [1, 3, 37], [2, 9, 37]] {
        let x = rng.tensor(&x_shape);
        let w = rng.tensor(&[70, 37]);
        let b = rng.tensor(&[70]);
        let out = [x_shape[0], x_shape[1], 70];
        let y = run_op(Op::Linear, &[&x, &w, &b], &out, &mut ExecState::default());
        assert_close(
            f32s(&y),
            &naive_linear(&x, &w, Some(&b)),
            1e-5,
            "linear+bias",
        );
        let y = run_op(Op::Linear, &[&x, &w], &out, &mut ExecState::default());
        assert_close(f32s(&y), &naive_linear(&x, &w, None), 1e-5, "linear");
        let y = run_op(Op::LmHead, &[&x, &w], &out, &mut ExecState::default());
        assert_close(f32s(&y), &naive_linear(&x, &w, None), 1e-5, "lm head");
    }
}

#[test]
fn linear_accepts_any_leading_dims() {
    let mut rng = Rng(4);
    let x = rng.tensor(&[13, 8]);
    let w = rng.tensor(&[5, 8]);
    let y = run_op(Op::Linear, &[&x, &w], &[13, 5], &mut ExecState::default());
    assert_close(f32s(&y), &naive_linear(&x, &w, None), 1e-5, "2-d linear");
}

#[test]
fn linear_rejects_bad_shapes() {
    let mut rng = Rng(5);
    let x = rng.tensor(&[1, 2, 8]);
    let w = rng.tensor(&[5, 7]);
    assert!(matches!(
        eval(&Op::Linear, &[&x, &w]),
        Err(RuntimeError::Shape(_))
    ));
    let w = rng.tensor(&[5, 8]);
    let b = rng.tensor(&[4]);
    assert!(matches!(
        eval(&Op::Linear, &[&x, &w, &b]),
        Err(RuntimeError::Shape(_))
    ));
    let w3 = rng.tensor(&[1, 5, 8]);
    assert!(eval(&Op::Linear, &[&x, &w3]).is_err());
    assert!(eval(&Op::LmHead, &[&x, &w, &rng.tensor(&[5])]).is_err());
    assert!(eval(&Op::Linear, &[&x]).is_err());
    // Tensor fields are public: an element count that contradicts the shape
    // is an error, not an out-of-bounds read.
    let inconsistent = Tensor {
        shape: vec![4, 8],
        data: Data::F32(vec![0.0; 8]),
    };
    assert!(eval(&Op::Linear, &[&inconsistent, &w]).is_err());
    let ids = Tensor {
        shape: vec![3],
        data: Data::I64(vec![0]),
    };
    assert!(eval(&Op::Embedding, &[&w, &ids]).is_err());
}

// ---------------------------------------------------------------- RmsNorm

#[test]
fn rms_norm_matches_naive() {
    let mut rng = Rng(6);
    let x = rng.tensor(&[2, 5, 24]);
    let w = rng.tensor(&[24]);
    let eps = 1e-5;
    let y = run_op(
        Op::RmsNorm { eps },
        &[&x, &w],
        &[2, 5, 24],
        &mut ExecState::default(),
    );
    let (xs, ws) = (to_f64(&x), to_f64(&w));
    let want: Vec<f64> = xs
        .chunks(24)
        .flat_map(|row| {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / 24.0;
            let r = 1.0 / (ms + eps).sqrt();
            row.iter()
                .zip(&ws)
                .map(move |(v, w)| v * r * w)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_close(f32s(&y), &want, 1e-5, "rms norm");
    assert!(eval(&Op::RmsNorm { eps }, &[&x, &rng.tensor(&[23])]).is_err());
}

// ---------------------------------------------------------------- Rope

fn naive_rope(x: &Tensor, spec: &RopeSpec, offset: usize) -> Vec<f64> {
    let (seq, feat) = (x.shape[1], x.shape[2]);
    let d = spec.head_dim;
    let inv = spec.inv_freq();
    let xs = to_f64(x);
    let mut y = vec![0.0; xs.len()];
    for (row, (yr, xr)) in y.chunks_mut(feat).zip(xs.chunks(feat)).enumerate() {
        let pos = (offset + row % seq) as f64;
        for h in 0..spec.heads {
            for i in 0..d / 2 {
                let (a, b) = (xr[h * d + i], xr[h * d + i + d / 2]);
                let (s, c) = (pos * inv[i]).sin_cos();
                yr[h * d + i] = a * c - b * s;
                yr[h * d + i + d / 2] = b * c + a * s;
            }
        }
    }
    y
}

#[test]
fn rope_matches_naive_at_an_offset() {
    let mut rng = Rng(7);
    let scalings = [
        RopeScaling::None,
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 64.0,
        },
    ];
    for scaling in scalings {
        let spec = RopeSpec {
            heads: 3,
            head_dim: 8,
            theta: 10000.0,
            scaling,
        };
        let x = rng.tensor(&[2, 5, 24]);
        for offset in [0usize, 7] {
            let mut state = ExecState {
                position_offset: offset,
                ..ExecState::default()
            };
            let y = run_op(Op::Rope(spec.clone()), &[&x], &[2, 5, 24], &mut state);
            // f32 angles: error grows with the position, ~1e-6 here.
            assert_close(f32s(&y), &naive_rope(&x, &spec, offset), 1e-5, "rope");
        }
    }
}

#[test]
fn rope_rejects_bad_shapes() {
    let spec = RopeSpec {
        heads: 3,
        head_dim: 8,
        theta: 10000.0,
        scaling: RopeScaling::None,
    };
    let mut rng = Rng(8);
    assert!(eval(&Op::Rope(spec.clone()), &[&rng.tensor(&[2, 5, 23])]).is_err());
    assert!(eval(&Op::Rope(spec.clone()), &[&rng.tensor(&[10, 24])]).is_err());
    let odd = RopeSpec {
        head_dim: 7,
        heads: 1,
        ..spec
    };
    assert!(eval(&Op::Rope(odd), &[&rng.tensor(&[1, 1, 7])]).is_err());
}

// ---------------------------------------------------------------- SwiGlu

#[test]
fn swiglu_matches_naive() {
    let mut rng = Rng(9);
    let g = rng.tensor(&[3, 4, 10]);
    let u = rng.tensor(&[3, 4, 10]);
    let y = run_op(
        Op::SwiGlu,
        &[&g, &u],
        &[3, 4, 10],
        &mut ExecState::default(),
    );
    let want: Vec<f64> = to_f64(&g)
        .iter()
        .zip(to_f64(&u))
        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
        .collect();
    assert_close(f32s(&y), &want, 1e-6, "swiglu");
    assert!(eval(&Op::SwiGlu, &[&g, &rng.tensor(&[3, 4, 9])]).is_err());
}

// ---------------------------------------------------------------- Attention

/// Naive attention: f64, the causal rule of the IR (`j ≤ t + S − T`), masked
/// keys skipped, a query seeing nothing yields zeros.
fn naive_attention(
    spec: &AttentionSpec,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&[bool]>,
) -> Vec<f64> {
    let (b_n, t_n, qf) = (q.shape[0], q.shape[1], q.shape[2]);
    let (s_n, kf) = (k.shape[1], k.shape[2]);
    let d = spec.head_dim;
    let group = spec.heads / spec.kv_heads;
    let (qs, ks, vs) = (to_f64(q), to_f64(k), to_f64(v));
    let mut y = vec![0.0; qs.len()];
    for b in 0..b_n {
        for h in 0..spec.heads {
            let kvh = h / group;
            for t in 0..t_n {
                let allowed: Vec<usize> = (0..s_n)
                    .filter(|&j| !spec.causal || j + t_n <= t + s_n)
                    .filter(|&j| mask.is_none_or(|m| m[b * s_n + j]))
                    .collect();
                if allowed.is_empty() {
                    continue;
                }
                let scores: Vec<f64> = allowed
                    .iter()
                    .map(|&j| {
                        (0..d)
                            .map(|i| {
                                qs[(b * t_n + t) * qf + h * d + i]
                                    * ks[(b * s_n + j) * kf + kvh * d + i]
                            })
                            .sum::<f64>()
                            * spec.scale
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                for i in 0..d {
                    y[(b * t_n + t) * qf + h * d + i] = allowed
                        .iter()
                        .zip(&exps)
                        .map(|(&j, e)| e / total * vs[(b * s_n + j) * kf + kvh * d + i])
                        .sum();
                }
            }
        }
    }
    y
}

fn spec(heads: usize, kv_heads: usize, head_dim: usize, causal: bool) -> AttentionSpec {
    AttentionSpec {
        heads,
        kv_heads,
        head_dim,
        scale: 1.0 / (head_dim as f64).sqrt(),
        causal,
    }
}

#[test]
fn attention_matches_naive() {
    let mut rng = Rng(10);
    for (causal, t_n, s_n) in [(true, 6, 6), (false, 6, 6), (true, 2, 7), (false, 3, 5)] {
        let s = spec(4, 2, 8, causal);
        let q = rng.tensor(&[2, t_n, 32]);
        let k = rng.tensor(&[2, s_n, 16]);
        let v = rng.tensor(&[2, s_n, 16]);
        let y = run_op(
            Op::Attention(s.clone()),
            &[&q, &k, &v],
            &[2, t_n, 32],
            &mut ExecState::default(),
        );
        assert_close(
            f32s(&y),
            &naive_attention(&s, &q, &k, &v, None),
            1e-5,
            "attention",
        );
    }
}

#[test]
fn attention_with_padding_mask_matches_naive() {
    let mut rng = Rng(11);
    let s = spec(2, 1, 8, true);
    let q = rng.tensor(&[2, 5, 16]);
    let k = rng.tensor(&[2, 5, 8]);
    let v = rng.tensor(&[2, 5, 8]);
    // Row 0 left-padded by two, row 1 right-padded by one.
    let keep = [
        false, false, true, true, true, true, true, true, true, false,
    ];
    for mask in [
        Tensor::i64(vec![2, 5], keep.iter().map(|&b| i64::from(b)).collect()).unwrap(),
        Tensor::f32(
            vec![2, 5],
            keep.iter().map(|&b| f32::from(u8::from(b))).collect(),
        )
        .unwrap(),
        Tensor::bool(vec![2, 5], keep.to_vec()).unwrap(),
    ] {
        let y = run_op(
            Op::Attention(s.clone()),
            &[&q, &k, &v, &mask],
            &[2, 5, 16],
            &mut ExecState::default(),
        );
        let want = naive_attention(&s, &q, &k, &v, Some(&keep));
        assert_close(f32s(&y), &want, 1e-5, "masked attention");
        // Fully padded queries (row 0, t < 2) come out as zeros.
        assert!(f32s(&y)[..2 * 16].iter().all(|&x| x == 0.0));
    }
}

/// `k [B, S, kv·d]` with every KV head repeated `group` times.
fn repeat_kv(k: &Tensor, kv_heads: usize, d: usize, group: usize) -> Tensor {
    let (b, s, _) = (k.shape[0], k.shape[1], k.shape[2]);
    let ks = f32s(k);
    let mut out = Vec::with_capacity(b * s * kv_heads * group * d);
    for row in ks.chunks(kv_heads * d) {
        for h in 0..kv_heads {
            for _ in 0..group {
                out.extend_from_slice(&row[h * d..(h + 1) * d]);
            }
        }
    }
    Tensor::f32(vec![b, s, kv_heads * group * d], out).unwrap()
}

#[test]
fn grouped_query_attention_equals_repeated_kv_heads() {
    let mut rng = Rng(12);
    let (heads, kv_heads, d) = (6, 2, 8);
    let q = rng.tensor(&[2, 7, heads * d]);
    let k = rng.tensor(&[2, 7, kv_heads * d]);
    let v = rng.tensor(&[2, 7, kv_heads * d]);
    let gqa = run_op(
        Op::Attention(spec(heads, kv_heads, d, true)),
        &[&q, &k, &v],
        &[2, 7, heads * d],
        &mut ExecState::default(),
    );
    let group = heads / kv_heads;
    let (k_rep, v_rep) = (
        repeat_kv(&k, kv_heads, d, group),
        repeat_kv(&v, kv_heads, d, group),
    );
    let mha = run_op(
        Op::Attention(spec(heads, heads, d, true)),
        &[&q, &k_rep, &v_rep],
        &[2, 7, heads * d],
        &mut ExecState::default(),
    );
    assert_eq!(f32s(&gqa), f32s(&mha));
}

#[test]
fn attention_with_cache_equals_one_pass() {
    let mut rng = Rng(13);
    let s = spec(4, 2, 8, true);
    let (q, k, v) = (
        rng.tensor(&[2, 9, 32]),
        rng.tensor(&[2, 9, 16]),
        rng.tensor(&[2, 9, 16]),
    );
    let full = run_op(
        Op::Attention(s.clone()),
        &[&q, &k, &v],
        &[2, 9, 32],
        &mut ExecState::default(),
    );
    // Same graph run in chunks of 5, 1, 3 tokens with the cache on.
    let (g, _) = op_graph(
        Op::Attention(s.clone()),
        &[
            &rng.tensor(&[2, 1, 32]),
            &rng.tensor(&[2, 1, 16]),
            &rng.tensor(&[2, 1, 16]),
        ],
        &[2, 1, 32],
    );
    // Make the graph's inputs dynamic in seq so every chunk length verifies.
    let mut g = g;
    for id in g.node_ids() {
        let node = g.node_mut(id).unwrap();
        for ty in &mut node.outputs {
            if let Some(shape) = &mut ty.shape {
                shape[1] = ligerc_ir::Dim::sym("seq");
            }
        }
    }
    let exec = Executor::new(g).unwrap();
    let mut state = ExecState {
        use_cache: true,
        ..ExecState::default()
    };
    let slice = |t: &Tensor, a: usize, b: usize| {
        let f = t.shape[2];
        let data: Vec<f32> = (0..2)
            .flat_map(|r| f32s(t)[(r * 9 + a) * f..(r * 9 + b) * f].to_vec())
            .collect();
        Tensor::f32(vec![2, b - a, f], data).unwrap()
    };
    let mut rows: Vec<Vec<f32>> = vec![Vec::new(), Vec::new()];
    for (a, b) in [(0, 5), (5, 6), (6, 9)] {
        let inputs: HashMap<String, Tensor> = [("x0", &q), ("x1", &k), ("x2", &v)]
            .into_iter()
            .map(|(n, t)| (n.to_string(), slice(t, a, b)))
            .collect();
        state.position_offset = a;
        let y = exec.run(&inputs, &mut state).unwrap().remove(0);
        assert_eq!(y.shape, [2, b - a, 32]);
        for (r, row) in rows.iter_mut().enumerate() {
            row.extend_from_slice(&f32s(&y)[r * (b - a) * 32..(r + 1) * (b - a) * 32]);
        }
    }
    let cached: Vec<f32> = rows.concat();
    let want: Vec<f64> = f32s(&full).iter().map(|&x| f64::from(x)).collect();
    assert_close(&cached, &want, 1e-6, "cached attention");
    let kv = state.kv.values().next().unwrap();
    assert_eq!(kv.k.as_ref().unwrap().shape, [2, 9, 16]);
}

#[test]
fn attention_rejects_bad_shapes() {
    let mut rng = Rng(14);
    let s = Op::Attention(spec(4, 2, 8, true));
    let (q, k, v) = (
        rng.tensor(&[2, 3, 32]),
        rng.tensor(&[2, 3, 16]),
        rng.tensor(&[2, 3, 16]),
    );
    assert!(eval(&s, &[&q, &k, &v]).is_ok());
    assert!(eval(&s, &[&rng.tensor(&[2, 3, 31]), &k, &v]).is_err());
    assert!(eval(&s, &[&q, &rng.tensor(&[2, 3, 32]), &v]).is_err());
    assert!(eval(&s, &[&q, &k, &rng.tensor(&[2, 4, 16])]).is_err());
    assert!(
        eval(
            &s,
            &[&q, &rng.tensor(&[1, 3, 16]), &rng.tensor(&[1, 3, 16])]
        )
        .is_err()
    );
    let bad_mask = Tensor::i64(vec![2, 2], vec![1; 4]).unwrap();
    assert!(eval(&s, &[&q, &k, &v, &bad_mask]).is_err());
    assert!(eval(&Op::Attention(spec(3, 2, 8, true)), &[&q, &k, &v]).is_err());
    // A cache of another batch size cannot be extended.
    let mut state = ExecState {
        use_cache: true,
        ..ExecState::default()
    };
    let node = NodeId::new(0);
    assert!(eval_high_level(&s, node, &[&q, &k, &v], &mut state).is_ok());
    let (q1, k1, v1) = (
        rng.tensor(&[1, 1, 32]),
        rng.tensor(&[1, 1, 16]),
        rng.tensor(&[1, 1, 16]),
    );
    assert!(eval_high_level(&s, node, &[&q1, &k1, &v1], &mut state).is_err());
}

#[test]
fn non_high_level_ops_are_refused() {
    let x = Rng(15).tensor(&[1]);
    let op = Op::Input { name: "x".into() };
    assert!(matches!(
        eval(&op, &[&x]),
        Err(RuntimeError::Unsupported(_))
    ));
}
