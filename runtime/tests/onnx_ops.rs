//! Generic ONNX ops on the CPU: hand-computed values (or naive loops
//! written independently of the kernels) for every op family, and the bad
//! inputs that must return errors rather than panic.

use ligerc_ir::{Attr, DType, OnnxOp, TensorData, TensorType};
use ligerc_runtime::ops::eval_onnx;
use ligerc_runtime::{Data, RuntimeError, Tensor};

// ---------------------------------------------------------------- helpers

fn op(name: &str, attrs: &[(&str, Attr)]) -> OnnxOp {
    OnnxOp {
        op_type: name.to_string(),
        attrs: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

fn f(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::f32(shape.to_vec(), data.to_vec()).unwrap()
}

fn i(shape: &[usize], data: &[i64]) -> Tensor {
    Tensor::i64(shape.to_vec(), data.to_vec()).unwrap()
}

fn b(shape: &[usize], data: &[bool]) -> Tensor {
    Tensor::bool(shape.to_vec(), data.to_vec()).unwrap()
}

fn int(v: i64) -> Attr {
    Attr::Int(v)
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

fn run_n(o: &OnnxOp, inputs: &[&Tensor], results: usize) -> Result<Vec<Tensor>, RuntimeError> {
    eval_onnx(o, inputs, &vec![TensorType::unranked(DType::F32); results])
}

fn run(o: &OnnxOp, inputs: &[&Tensor]) -> Result<Tensor, RuntimeError> {
    Ok(run_n(o, inputs, 1)?.remove(0))
}

fn ok(o: &OnnxOp, inputs: &[&Tensor]) -> Tensor {
    match run(o, inputs) {
        Ok(t) => t,
        Err(e) => panic!("{} failed: {e}", o.op_type),
    }
}

fn fv(t: &Tensor) -> &[f32] {
    match &t.data {
        Data::F32(v) => v,
        other => panic!("expected f32, got {other:?}"),
    }
}

fn iv(t: &Tensor) -> &[i64] {
    match &t.data {
        Data::I64(v) => v,
        other => panic!("expected i64, got {other:?}"),
    }
}

fn bv(t: &Tensor) -> &[bool] {
    match &t.data {
        Data::Bool(v) => v,
        other => panic!("expected bool, got {other:?}"),
    }
}

#[track_caller]
fn close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "lengths differ: {got:?} vs {want:?}");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= tol * (1.0 + w.abs());
        assert!(
            ok,
            "element {k}: got {g}, want {w}\n got {got:?}\nwant {want:?}"
        );
    }
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

// ------------------------------------------------------ elementwise binary

#[test]
fn add_broadcasts_both_ways_and_scalars() {
    let a = f(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let row = f(&[3], &[10., 20., 30.]);
    let t = ok(&op("Add", &[]), &[&a, &row]);
    assert_eq!(t.shape, vec![2, 3]);
    close(fv(&t), &[11., 22., 33., 14., 25., 36.], 0.0);

    let col = f(&[2, 1], &[1., 2.]);
    let row = f(&[1, 3], &[1., 10., 100.]);
    let t = ok(&op("Mul", &[]), &[&col, &row]);
    assert_eq!(t.shape, vec![2, 3]);
    close(fv(&t), &[1., 10., 100., 2., 20., 200.], 0.0);

    let s = f(&[], &[2.]);
    let t = ok(&op("Sub", &[]), &[&s, &a]);
    close(fv(&t), &[1., 0., -1., -2., -3., -4.], 0.0);
    let t = ok(&op("Div", &[]), &[&a, &s]);
    close(fv(&t), &[0.5, 1., 1.5, 2., 2.5, 3.], 0.0);

    // [2,1,2] + [3,1]: middle dim from the right operand.
    let x = f(&[2, 1, 2], &[1., 2., 3., 4.]);
    let y = f(&[3, 1], &[10., 20., 30.]);
    let t = ok(&op("Add", &[]), &[&x, &y]);
    assert_eq!(t.shape, vec![2, 3, 2]);
    close(
        fv(&t),
        &[11., 12., 21., 22., 31., 32., 13., 14., 23., 24., 33., 34.],
        0.0,
    );
}

#[test]
fn integer_arithmetic_truncates_and_refuses_zero_division() {
    let a = i(&[4], &[7, -7, 9, i64::MAX]);
    let d = i(&[4], &[2, 2, -4, 1]);
    assert_eq!(iv(&ok(&op("Div", &[]), &[&a, &d])), &[3, -3, -2, i64::MAX]);
    let one = i(&[], &[1]);
    assert_eq!(iv(&ok(&op("Add", &[]), &[&a, &one]))[3], i64::MIN); // wraps
    let zero = i(&[1], &[0]);
    assert!(matches!(
        run(&op("Div", &[]), &[&a, &zero]),
        Err(RuntimeError::Shape(_))
    ));
}

#[test]
fn pow_takes_float_or_integer_exponents() {
    let x = f(&[4], &[2., -3., 4., 0.5]);
    let t = ok(&op("Pow", &[]), &[&x, &f(&[], &[2.])]);
    close(fv(&t), &[4., 9., 16., 0.25], 0.0);
    let t = ok(&op("Pow", &[]), &[&x, &i(&[], &[3])]);
    close(fv(&t), &[8., -27., 64., 0.125], 0.0);
    let t = ok(
        &op("Pow", &[]),
        &[&f(&[2], &[4., 9.]), &f(&[2], &[0.5, 1.5])],
    );
    close(fv(&t), &[2., 27.], 1e-6);
    let t = ok(
        &op("Pow", &[]),
        &[&i(&[3], &[2, 3, -2]), &i(&[3], &[10, 3, 3])],
    );
    assert_eq!(iv(&t), &[1024, 27, -8]);
}

#[test]
fn comparisons_and_logic_give_bools() {
    let a = f(&[3], &[1., 2., f32::NAN]);
    let b2 = f(&[1], &[2.]);
    assert_eq!(
        bv(&ok(&op("Equal", &[]), &[&a, &b2])),
        &[false, true, false]
    );
    assert_eq!(bv(&ok(&op("Less", &[]), &[&a, &b2])), &[true, false, false]);
    assert_eq!(
        bv(&ok(&op("LessOrEqual", &[]), &[&a, &b2])),
        &[true, true, false]
    );
    assert_eq!(
        bv(&ok(&op("Greater", &[]), &[&a, &b2])),
        &[false, false, false]
    );
    assert_eq!(
        bv(&ok(&op("GreaterOrEqual", &[]), &[&a, &b2])),
        &[false, true, false]
    );
    // The causal-mask pattern of exporters: arange[None, :] <= arange[:, None].
    let r = i(&[1, 3], &[0, 1, 2]);
    let c = i(&[3, 1], &[0, 1, 2]);
    let t = ok(&op("LessOrEqual", &[]), &[&r, &c]);
    assert_eq!(t.shape, vec![3, 3]);
    assert_eq!(
        bv(&t),
        &[true, false, false, true, true, false, true, true, true]
    );
    let p = b(&[2, 1], &[true, false]);
    let q = b(&[2], &[true, false]);
    assert_eq!(
        bv(&ok(&op("And", &[]), &[&p, &q])),
        &[true, false, false, false]
    );
    assert_eq!(
        bv(&ok(&op("Or", &[]), &[&p, &q])),
        &[true, true, true, false]
    );
    assert_eq!(
        bv(&ok(&op("Equal", &[]), &[&p, &q])),
        &[true, false, false, true]
    );
}

#[test]
fn where_and_variadic_max_min_broadcast() {
    let c = b(&[2, 1], &[true, false]);
    let x = f(&[3], &[1., 2., 3.]);
    let y = f(&[], &[-1.]);
    let t = ok(&op("Where", &[]), &[&c, &x, &y]);
    assert_eq!(t.shape, vec![2, 3]);
    close(fv(&t), &[1., 2., 3., -1., -1., -1.], 0.0);

    let a = f(&[2, 2], &[1., 5., 3., f32::NAN]);
    let m = f(&[2], &[2., 4.]);
    let s = f(&[], &[0.]);
    let t = ok(&op("Max", &[]), &[&a, &m, &s]);
    close(fv(&t), &[2., 5., 3., f32::NAN], 0.0);
    let t = ok(&op("Min", &[]), &[&a, &m]);
    close(fv(&t), &[1., 4., 2., f32::NAN], 0.0);
    let t = ok(&op("Max", &[]), &[&i(&[3], &[1, 7, -2])]);
    assert_eq!(iv(&t), &[1, 7, -2]);
    let t = ok(&op("Max", &[]), &[&i(&[3], &[1, 7, -2]), &i(&[1], &[0])]);
    assert_eq!(iv(&t), &[1, 7, 0]);
}

// ------------------------------------------------------------------ unary

#[test]
fn unary_float_ops() {
    let x = f(&[4], &[-1., 0., 0.25, 4.]);
    let u = |name: &str, t: &Tensor| fv(&ok(&op(name, &[]), &[t])).to_vec();
    close(&u("Neg", &x), &[1., -0., -0.25, -4.], 0.0);
    close(&u("Abs", &x), &[1., 0., 0.25, 4.], 0.0);
    close(&u("Relu", &x), &[0., 0., 0.25, 4.], 0.0);
    close(&u("Reciprocal", &x), &[-1., f32::INFINITY, 4., 0.25], 0.0);
    close(
        &u("Sqrt", &f(&[2], &[4., 2.])),
        &[2., std::f32::consts::SQRT_2],
        1e-7,
    );
    close(
        &u("Exp", &f(&[2], &[0., 1.])),
        &[1., std::f32::consts::E],
        1e-7,
    );
    close(
        &u("Log", &f(&[2], &[1., std::f32::consts::E])),
        &[0., 1.],
        1e-7,
    );
    close(
        &u("Cos", &f(&[2], &[0., std::f32::consts::PI])),
        &[1., -1.],
        1e-7,
    );
    close(
        &u("Sin", &f(&[2], &[0., std::f32::consts::FRAC_PI_2])),
        &[0., 1.],
        1e-7,
    );
    close(&u("Tanh", &f(&[2], &[0., 1.])), &[0., 0.761_594_2], 1e-6);
    close(
        &u("Sigmoid", &f(&[4], &[0., 2., -2., -100.])),
        // sigmoid(-100) ≈ 3.7e-44, below the tolerance.
        &[0.5, 0.880_797_1, 0.119_202_92, 0.0],
        1e-6,
    );
    // erf from tables (Abramowitz & Stegun 7.1).
    close(
        &u("Erf", &f(&[6], &[0., 0.5, 1., -2., 3.5, 7.])),
        &[0., 0.520_499_9, 0.842_700_8, -0.995_322_3, 0.999_999_3, 1.],
        2e-7,
    );
    assert_eq!(iv(&ok(&op("Neg", &[]), &[&i(&[2], &[3, -4])])), &[-3, 4]);
    assert_eq!(iv(&ok(&op("Abs", &[]), &[&i(&[2], &[3, -4])])), &[3, 4]);
}

#[test]
fn unary_predicates_and_not() {
    let x = f(&[4], &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.]);
    assert_eq!(
        bv(&ok(&op("IsNaN", &[]), &[&x])),
        &[true, false, false, false]
    );
    assert_eq!(
        bv(&ok(&op("IsInf", &[]), &[&x])),
        &[false, true, true, false]
    );
    let neg_only = op("IsInf", &[("detect_positive", int(0))]);
    assert_eq!(bv(&ok(&neg_only, &[&x])), &[false, false, true, false]);
    assert_eq!(
        bv(&ok(&op("Not", &[]), &[&b(&[2], &[true, false])])),
        &[false, true]
    );
    assert!(matches!(
        run(&op("Sqrt", &[]), &[&i(&[1], &[4])]),
        Err(RuntimeError::Type(_))
    ));
    assert!(matches!(
        run(&op("Not", &[]), &[&x]),
        Err(RuntimeError::Type(_))
    ));
}

// ------------------------------------------------------------------- cast

#[test]
fn cast_rounds_to_half_precisions_and_truncates_to_ints() {
    let cast = |to: i64, t: &Tensor| ok(&op("Cast", &[("to", int(to))]), &[t]);
    let x = f(&[5], &[0.1, 1.0004, 1.0005, 65520., -2.7]);
    // f16: spacing 2^-10 at 1; 0.1 → 0.0999755859375; 65520 rounds up past the max.
    close(
        fv(&cast(10, &x)),
        &[0.099_975_586, 1.0, 1.000_976_6, f32::INFINITY, -2.699_218_8],
        0.0,
    );
    // bf16: 8 significant bits.
    close(
        fv(&cast(16, &f(&[3], &[1.01, 3.15, -0.1]))),
        &[1.007_812_5, 3.156_25, -0.100_097_656],
        0.0,
    );
    let t = cast(7, &f(&[4], &[2.7, -2.7, 0.0, 1e3]));
    assert_eq!(iv(&t), &[2, -2, 0, 1000]);
    assert_eq!(iv(&cast(6, &i(&[2], &[(1 << 32) + 5, -1]))), &[5, -1]);
    assert_eq!(iv(&cast(2, &i(&[2], &[-1, 256]))), &[255, 0]);
    assert_eq!(
        bv(&cast(9, &f(&[3], &[0., -0.5, f32::NAN]))),
        &[false, true, true]
    );
    assert_eq!(bv(&cast(9, &i(&[2], &[0, 3]))), &[false, true]);
    close(fv(&cast(1, &b(&[2], &[true, false]))), &[1., 0.], 0.0);
    close(fv(&cast(1, &i(&[2], &[3, -4]))), &[3., -4.], 0.0);
    assert!(matches!(
        run(&op("Cast", &[("to", int(8))]), &[&x]),
        Err(RuntimeError::Unsupported(_))
    ));
}

#[test]
fn cast_like_takes_the_declared_precision() {
    let x = f(&[1], &[0.1]);
    let like = f(&[1], &[0.]);
    let out = eval_onnx(
        &op("CastLike", &[]),
        &[&x, &like],
        &[TensorType::unranked(DType::F16)],
    )
    .unwrap();
    close(fv(&out[0]), &[0.099_975_586], 0.0);
    let out = eval_onnx(
        &op("CastLike", &[]),
        &[&f(&[1], &[-3.9]), &i(&[1], &[0])],
        &[TensorType::unranked(DType::I64)],
    )
    .unwrap();
    assert_eq!(iv(&out[0]), &[-3]);
}

// ----------------------------------------------------------------- matmul

/// Naive `[.., m, k] × [.., k, n]` with explicit batch broadcasting.
fn naive_matmul(a: &[f32], sa: &[usize], bm: &[f32], sb: &[usize]) -> (Vec<usize>, Vec<f32>) {
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let n = sb[sb.len() - 1];
    let ba = &sa[..sa.len() - 2];
    let bb = &sb[..sb.len() - 2];
    let rank = ba.len().max(bb.len());
    let pad = |s: &[usize]| {
        let mut v = vec![1; rank - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (pa, pb) = (pad(ba), pad(bb));
    let batch: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| x.max(y)).collect();
    let count: usize = batch.iter().product();
    let mut out = Vec::new();
    for flat in 0..count {
        let mut idx = vec![0; rank];
        let mut r = flat;
        for d in (0..rank).rev() {
            idx[d] = r % batch[d];
            r /= batch[d];
        }
        let lin = |p: &[usize]| {
            idx.iter()
                .zip(p)
                .fold(0, |acc, (&i, &d)| acc * d + if d == 1 { 0 } else { i })
        };
        let (oa, ob) = (lin(&pa) * m * k, lin(&pb) * k * n);
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for l in 0..k {
                    s += f64::from(a[oa + i * k + l]) * f64::from(bm[ob + l * n + j]);
                }
                out.push(s as f32);
            }
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    (shape, out)
}

#[test]
fn matmul_2d_batched_and_broadcast() {
    let a = f(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let bm = f(&[3, 2], &[7., 8., 9., 10., 11., 12.]);
    let t = ok(&op("MatMul", &[]), &[&a, &bm]);
    assert_eq!(t.shape, vec![2, 2]);
    close(fv(&t), &[58., 64., 139., 154.], 0.0);

    for (sa, sb) in [
        (vec![2, 5, 7], vec![7, 4]),       // folded into one GEMM
        (vec![2, 1, 2, 3], vec![3, 3, 2]), // batch broadcast both ways
        (vec![3, 4, 5], vec![3, 5, 6]),    // plain batches
        (vec![1, 4, 5], vec![2, 5, 3]),    // left batch broadcast
    ] {
        let av = values(sa.iter().product(), 1);
        let bvv = values(sb.iter().product(), 2);
        let t = ok(&op("MatMul", &[]), &[&f(&sa, &av), &f(&sb, &bvv)]);
        let (shape, want) = naive_matmul(&av, &sa, &bvv, &sb);
        assert_eq!(t.shape, shape, "{sa:?} x {sb:?}");
        close(fv(&t), &want, 1e-5);
    }
}

#[test]
fn matmul_promotes_1d_operands() {
    let v = f(&[3], &[1., 2., 3.]);
    let m = f(&[3, 2], &[1., 2., 3., 4., 5., 6.]);
    let t = ok(&op("MatMul", &[]), &[&v, &m]);
    assert_eq!(t.shape, vec![2]);
    close(fv(&t), &[22., 28.], 0.0);
    let mt = f(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let t = ok(&op("MatMul", &[]), &[&mt, &v]);
    assert_eq!(t.shape, vec![2]);
    close(fv(&t), &[14., 32.], 0.0);
    let t = ok(&op("MatMul", &[]), &[&v, &v]);
    assert_eq!(t.shape, Vec::<usize>::new());
    close(fv(&t), &[14.], 0.0);
    let t = ok(
        &op("MatMul", &[]),
        &[&i(&[1, 2], &[1, 2]), &i(&[2, 1], &[3, 4])],
    );
    assert_eq!(iv(&t), &[11]);
    assert!(matches!(
        run(&op("MatMul", &[]), &[&mt, &mt]),
        Err(RuntimeError::Shape(_))
    ));
    assert!(matches!(
        run(&op("MatMul", &[]), &[&v, &i(&[3], &[1, 2, 3])]),
        Err(RuntimeError::Type(_))
    ));
}

#[test]
fn gemm_transposes_scales_and_adds_c() {
    // A' = [[1,2],[3,4]] given transposed; B' = [[5,6],[7,8]] given transposed.
    let a = f(&[2, 2], &[1., 3., 2., 4.]);
    let bm = f(&[2, 2], &[5., 7., 6., 8.]);
    let c = f(&[2], &[1., 2.]);
    let g = op(
        "Gemm",
        &[
            ("transA", int(1)),
            ("transB", int(1)),
            ("alpha", Attr::Float(2.0)),
            ("beta", Attr::Float(0.5)),
        ],
    );
    let t = ok(&g, &[&a, &bm, &c]);
    // A'B' = [[19,22],[43,50]] → 2·AB + 0.5·c.
    close(fv(&t), &[38.5, 45., 86.5, 101.], 0.0);
    let t = ok(
        &op("Gemm", &[]),
        &[
            &f(&[1, 2], &[1., 1.]),
            &f(&[2, 3], &[1., 2., 3., 4., 5., 6.]),
        ],
    );
    close(fv(&t), &[5., 7., 9.], 0.0);
}

// ------------------------------------------------------------- shape ops

#[test]
fn shape_with_start_and_end() {
    let x = f(&[2, 3, 4, 5], &[0.; 120]);
    assert_eq!(iv(&ok(&op("Shape", &[]), &[&x])), &[2, 3, 4, 5]);
    let t = ok(&op("Shape", &[("start", int(1)), ("end", int(-1))]), &[&x]);
    assert_eq!(iv(&t), &[3, 4]);
    let t = ok(&op("Shape", &[("start", int(-10)), ("end", int(1))]), &[&x]);
    assert_eq!(iv(&t), &[2]);
    let t = ok(&op("Shape", &[("start", int(3)), ("end", int(1))]), &[&x]);
    assert_eq!(t.shape, vec![0]);
}

#[test]
fn reshape_copies_zero_and_infers_minus_one() {
    let x = f(&[2, 3, 4], &values(24, 3));
    let t = ok(&op("Reshape", &[]), &[&x, &i(&[3], &[0, -1, 2])]);
    assert_eq!(t.shape, vec![2, 6, 2]);
    assert_eq!(fv(&t), fv(&x));
    let t = ok(&op("Reshape", &[]), &[&x, &i(&[1], &[-1])]);
    assert_eq!(t.shape, vec![24]);
    let empty = f(&[0, 3], &[]);
    let t = ok(
        &op("Reshape", &[("allowzero", int(1))]),
        &[&empty, &i(&[2], &[3, 0])],
    );
    assert_eq!(t.shape, vec![3, 0]);
    let bad = run(&op("Reshape", &[]), &[&x, &i(&[2], &[5, -1])]);
    assert!(matches!(bad, Err(RuntimeError::Shape(_))), "{bad:?}");
    let bad = run(&op("Reshape", &[]), &[&x, &i(&[2], &[5, 5])]);
    assert!(matches!(bad, Err(RuntimeError::Shape(_))));
    let bad = run(&op("Reshape", &[]), &[&x, &i(&[2], &[-1, -1])]);
    assert!(matches!(bad, Err(RuntimeError::Shape(_))));
    let bad = run(&op("Reshape", &[]), &[&x, &i(&[4], &[0, 0, 0, 0])]);
    assert!(matches!(bad, Err(RuntimeError::Shape(_))));
}

#[test]
fn flatten_squeeze_unsqueeze() {
    let x = f(&[2, 3, 4], &[0.; 24]);
    let shape = |o: OnnxOp, inputs: &[&Tensor]| ok(&o, inputs).shape;
    assert_eq!(shape(op("Flatten", &[]), &[&x]), vec![2, 12]);
    assert_eq!(
        shape(op("Flatten", &[("axis", int(0))]), &[&x]),
        vec![1, 24]
    );
    assert_eq!(
        shape(op("Flatten", &[("axis", int(-1))]), &[&x]),
        vec![6, 4]
    );
    assert_eq!(
        shape(op("Flatten", &[("axis", int(3))]), &[&x]),
        vec![24, 1]
    );
    assert!(run(&op("Flatten", &[("axis", int(4))]), &[&x]).is_err());

    let y = f(&[1, 3, 1, 2], &[0.; 6]);
    assert_eq!(shape(op("Squeeze", &[]), &[&y]), vec![3, 2]);
    assert_eq!(
        shape(op("Squeeze", &[]), &[&y, &i(&[1], &[-2])]),
        vec![1, 3, 2]
    );
    assert_eq!(
        shape(op("Squeeze", &[("axes", ints(&[0]))]), &[&y]),
        vec![3, 1, 2]
    );
    assert!(run(&op("Squeeze", &[]), &[&y, &i(&[1], &[1])]).is_err());

    let z = f(&[3, 2], &[0.; 6]);
    assert_eq!(
        shape(op("Unsqueeze", &[]), &[&z, &i(&[2], &[0, -1])]),
        vec![1, 3, 2, 1]
    );
    assert_eq!(
        shape(op("Unsqueeze", &[]), &[&z, &i(&[2], &[1, 3])]),
        vec![3, 1, 2, 1]
    );
    assert_eq!(
        shape(op("Unsqueeze", &[("axes", ints(&[0]))]), &[&f(&[], &[1.])]),
        vec![1]
    );
    assert!(run(&op("Unsqueeze", &[]), &[&z, &i(&[2], &[0, 0])]).is_err());
    let t = ok(&op("Identity", &[]), &[&z]);
    assert_eq!(t, z);
}

#[test]
fn transpose_with_and_without_perm() {
    let x = f(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let t = ok(&op("Transpose", &[]), &[&x]);
    assert_eq!(t.shape, vec![3, 2]);
    close(fv(&t), &[1., 4., 2., 5., 3., 6.], 0.0);
    let x = f(&[2, 2, 3], &(0..12).map(|v| v as f32).collect::<Vec<_>>());
    let t = ok(&op("Transpose", &[("perm", ints(&[1, 2, 0]))]), &[&x]);
    assert_eq!(t.shape, vec![2, 3, 2]);
    // out[i][j][k] = x[k][i][j]
    close(
        fv(&t),
        &[0., 6., 1., 7., 2., 8., 3., 9., 4., 10., 5., 11.],
        0.0,
    );
    assert!(run(&op("Transpose", &[("perm", ints(&[0, 0, 1]))]), &[&x]).is_err());
}

#[test]
fn concat_split_and_tile() {
    let a = i(&[2, 1], &[1, 2]);
    let c = i(&[2, 2], &[3, 4, 5, 6]);
    let t = ok(&op("Concat", &[("axis", int(-1))]), &[&a, &c]);
    assert_eq!(t.shape, vec![2, 3]);
    assert_eq!(iv(&t), &[1, 3, 4, 2, 5, 6]);
    let t = ok(
        &op("Concat", &[("axis", int(0))]),
        &[&i(&[1], &[7]), &i(&[0], &[]), &i(&[2], &[8, 9])],
    );
    assert_eq!(iv(&t), &[7, 8, 9]);
    assert!(run(&op("Concat", &[("axis", int(0))]), &[&a, &c]).is_err());
    assert!(matches!(
        run(
            &op("Concat", &[("axis", int(0))]),
            &[&a, &f(&[2, 1], &[0., 0.])]
        ),
        Err(RuntimeError::Type(_))
    ));

    let x = f(&[2, 5], &(0..10).map(|v| v as f32).collect::<Vec<_>>());
    let parts = run_n(
        &op("Split", &[("axis", int(1))]),
        &[&x, &i(&[2], &[2, 3])],
        2,
    )
    .unwrap();
    assert_eq!(parts[0].shape, vec![2, 2]);
    close(fv(&parts[0]), &[0., 1., 5., 6.], 0.0);
    close(fv(&parts[1]), &[2., 3., 4., 7., 8., 9.], 0.0);
    let parts = run_n(
        &op("Split", &[("axis", int(-1)), ("num_outputs", int(3))]),
        &[&x],
        3,
    )
    .unwrap();
    let widths: Vec<usize> = parts.iter().map(|p| p.shape[1]).collect();
    assert_eq!(widths, vec![2, 2, 1]);
    close(fv(&parts[2]), &[4., 9.], 0.0);
    let parts = run_n(&op("Split", &[]), &[&x], 2).unwrap();
    assert_eq!(parts[1].shape, vec![1, 5]);
    assert!(
        run_n(
            &op("Split", &[("axis", int(1))]),
            &[&x, &i(&[2], &[2, 2])],
            2
        )
        .is_err()
    );

    let t = ok(
        &op("Tile", &[]),
        &[&i(&[2, 2], &[1, 2, 3, 4]), &i(&[2], &[2, 3])],
    );
    assert_eq!(t.shape, vec![4, 6]);
    assert_eq!(
        iv(&t),
        &[
            1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4, 1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4
        ]
    );
}

#[test]
fn slice_clamps_and_steps_backwards() {
    let x = i(&[3, 4], &[0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]);
    let s = |starts: &[i64], ends: &[i64], axes: Option<&[i64]>, steps: Option<&[i64]>| {
        let st = i(&[starts.len()], starts);
        let en = i(&[ends.len()], ends);
        let ax = axes.map(|a| i(&[a.len()], a));
        let sp = steps.map(|a| i(&[a.len()], a));
        let mut inputs = vec![&x, &st, &en];
        if let Some(a) = &ax {
            inputs.push(a);
        }
        if let Some(p) = &sp {
            inputs.push(p);
        }
        run(&op("Slice", &[]), &inputs)
    };
    let t = s(&[1, 1], &[3, 3], None, None).unwrap();
    assert_eq!(
        (t.shape.clone(), iv(&t).to_vec()),
        (vec![2, 2], vec![11, 12, 21, 22])
    );
    // Negative axis, end past the dim (clamped).
    let t = s(&[2], &[i64::MAX], Some(&[-1]), None).unwrap();
    assert_eq!(iv(&t), &[2, 3, 12, 13, 22, 23]);
    // Reverse both axes: start -1, end INT_MIN, step -1.
    let t = s(
        &[-1, -1],
        &[i64::MIN, i64::MIN],
        Some(&[0, 1]),
        Some(&[-1, -1]),
    )
    .unwrap();
    assert_eq!(iv(&t), &[23, 22, 21, 20, 13, 12, 11, 10, 3, 2, 1, 0]);
    // Step -2 from a clamped start.
    let t = s(&[10], &[-10], Some(&[1]), Some(&[-2])).unwrap();
    assert_eq!(
        (t.shape.clone(), iv(&t).to_vec()),
        (vec![3, 2], vec![3, 1, 13, 11, 23, 21])
    );
    // Empty result.
    let t = s(&[3], &[1], Some(&[1]), None).unwrap();
    assert_eq!(t.shape, vec![3, 0]);
    assert!(s(&[0], &[1], Some(&[1]), Some(&[0])).is_err());
    assert!(s(&[0], &[1], Some(&[2]), None).is_err());
    assert!(s(&[0, 0], &[1], None, None).is_err());
}

#[test]
fn expand_broadcasts_in_both_directions() {
    let x = f(&[3, 1], &[1., 2., 3.]);
    let t = ok(&op("Expand", &[]), &[&x, &i(&[3], &[2, 1, 2])]);
    assert_eq!(t.shape, vec![2, 3, 2]);
    close(
        fv(&t),
        &[1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3.],
        0.0,
    );
    // A shape of 1s keeps the input's dims.
    let t = ok(&op("Expand", &[]), &[&x, &i(&[1], &[1])]);
    assert_eq!(t.shape, vec![3, 1]);
    assert!(run(&op("Expand", &[]), &[&x, &i(&[2], &[2, 2])]).is_err());
    assert!(run(&op("Expand", &[]), &[&x, &i(&[1], &[-2])]).is_err());
}

#[test]
fn gather_and_gather_nd() {
    let data = f(&[3, 2], &[1., 2., 3., 4., 5., 6.]);
    let t = ok(&op("Gather", &[]), &[&data, &i(&[2, 2], &[0, -1, 1, 2])]);
    assert_eq!(t.shape, vec![2, 2, 2]);
    close(fv(&t), &[1., 2., 5., 6., 3., 4., 5., 6.], 0.0);
    let t = ok(&op("Gather", &[("axis", int(1))]), &[&data, &i(&[], &[-1])]);
    assert_eq!(t.shape, vec![3]);
    close(fv(&t), &[2., 4., 6.], 0.0);
    assert!(matches!(
        run(&op("Gather", &[]), &[&data, &i(&[1], &[3])]),
        Err(RuntimeError::Shape(_))
    ));
    assert!(run(&op("Gather", &[]), &[&data, &i(&[1], &[-4])]).is_err());

    let d = i(&[2, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7]);
    let t = ok(&op("GatherND", &[]), &[&d, &i(&[2, 2], &[0, 1, 1, 0])]);
    assert_eq!(
        (t.shape.clone(), iv(&t).to_vec()),
        (vec![2, 2], vec![2, 3, 4, 5])
    );
    let t = ok(
        &op("GatherND", &[]),
        &[&d, &i(&[2, 3], &[0, 1, 1, 1, 1, -1])],
    );
    assert_eq!(iv(&t), &[3, 7]);
    let t = ok(
        &op("GatherND", &[("batch_dims", int(1))]),
        &[&d, &i(&[2, 1], &[1, 0])],
    );
    assert_eq!(
        (t.shape.clone(), iv(&t).to_vec()),
        (vec![2, 2], vec![2, 3, 4, 5])
    );
    assert!(run(&op("GatherND", &[]), &[&d, &i(&[1, 4], &[0, 0, 0, 0])]).is_err());
    assert!(run(&op("GatherND", &[]), &[&d, &i(&[1, 1], &[2])]).is_err());
}

// --------------------------------------------------------------- generate

#[test]
fn range_constant_of_shape_trilu() {
    let t = ok(
        &op("Range", &[]),
        &[&i(&[], &[0]), &i(&[], &[5]), &i(&[], &[2])],
    );
    assert_eq!(iv(&t), &[0, 2, 4]);
    let t = ok(
        &op("Range", &[]),
        &[&i(&[], &[10]), &i(&[], &[4]), &i(&[], &[-3])],
    );
    assert_eq!(iv(&t), &[10, 7]);
    let t = ok(
        &op("Range", &[]),
        &[&i(&[], &[4]), &i(&[], &[1]), &i(&[], &[1])],
    );
    assert_eq!(t.shape, vec![0]);
    let t = ok(
        &op("Range", &[]),
        &[&f(&[], &[1.]), &f(&[], &[2.]), &f(&[], &[0.25])],
    );
    close(fv(&t), &[1., 1.25, 1.5, 1.75], 0.0);
    assert!(
        run(
            &op("Range", &[]),
            &[&i(&[], &[0]), &i(&[], &[5]), &i(&[], &[0])]
        )
        .is_err()
    );
    assert!(
        run(
            &op("Range", &[]),
            &[&i(&[], &[0]), &f(&[], &[5.]), &i(&[], &[1])]
        )
        .is_err()
    );

    let t = ok(&op("ConstantOfShape", &[]), &[&i(&[2], &[2, 3])]);
    assert_eq!(
        (t.shape.clone(), fv(&t).to_vec()),
        (vec![2, 3], vec![0.; 6])
    );
    let one = TensorData::from_i64(vec![1], &[1]).unwrap();
    let t = ok(
        &op("ConstantOfShape", &[("value", Attr::Tensor(one))]),
        &[&i(&[1], &[3])],
    );
    assert_eq!(iv(&t), &[1, 1, 1]);
    let yes = TensorData::from_f64_as(DType::Bool, vec![1], &[1.0]).unwrap();
    let t = ok(
        &op("ConstantOfShape", &[("value", Attr::Tensor(yes))]),
        &[&i(&[0], &[])],
    );
    assert_eq!((t.shape.clone(), bv(&t).to_vec()), (vec![], vec![true]));
    assert!(run(&op("ConstantOfShape", &[]), &[&i(&[1], &[-1])]).is_err());

    let m = f(&[3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    close(
        fv(&ok(&op("Trilu", &[]), &[&m])),
        &[1., 2., 3., 0., 5., 6., 0., 0., 9.],
        0.0,
    );
    let lower = op("Trilu", &[("upper", int(0))]);
    close(
        fv(&ok(&lower, &[&m, &i(&[], &[-1])])),
        &[0., 0., 0., 4., 0., 0., 7., 8., 0.],
        0.0,
    );
    close(
        fv(&ok(&op("Trilu", &[]), &[&m, &i(&[], &[1])])),
        &[0., 2., 3., 0., 0., 6., 0., 0., 0.],
        0.0,
    );
}

// ----------------------------------------------------------------- reduce

#[test]
fn reductions_with_attr_or_operand_axes() {
    let x = f(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let t = ok(&op("ReduceMean", &[("axes", ints(&[-1]))]), &[&x]);
    assert_eq!(
        (t.shape.clone(), fv(&t).to_vec()),
        (vec![2, 1], vec![2., 5.])
    );
    let t = ok(
        &op("ReduceMean", &[("keepdims", int(0))]),
        &[&x, &i(&[1], &[0])],
    );
    assert_eq!(
        (t.shape.clone(), fv(&t).to_vec()),
        (vec![3], vec![2.5, 3.5, 4.5])
    );
    let t = ok(&op("ReduceSum", &[("keepdims", int(0))]), &[&x]);
    assert_eq!((t.shape.clone(), fv(&t).to_vec()), (vec![], vec![21.]));
    let t = ok(
        &op("ReduceSum", &[("noop_with_empty_axes", int(1))]),
        &[&x, &i(&[0], &[])],
    );
    assert_eq!(t, x);
    let y = i(&[2, 2, 2], &[1, 8, 3, 4, 5, 6, 7, 2]);
    let t = ok(&op("ReduceMax", &[]), &[&y, &i(&[2], &[0, 2])]);
    assert_eq!(
        (t.shape.clone(), iv(&t).to_vec()),
        (vec![1, 2, 1], vec![8, 7])
    );
    let t = ok(
        &op("ReduceSum", &[("keepdims", int(0))]),
        &[&y, &i(&[1], &[1])],
    );
    assert_eq!(iv(&t), &[4, 12, 12, 8]);
    assert!(run(&op("ReduceMean", &[]), &[&x, &i(&[1], &[2])]).is_err());
}

// ---------------------------------------------------------------- softmax

#[test]
fn softmax_on_last_and_inner_axes() {
    let x = f(&[2, 3], &[1., 2., 3., 0., 0., f32::NEG_INFINITY]);
    let t = ok(&op("Softmax", &[]), &[&x]);
    let e = [1f32.exp(), 2f32.exp(), 3f32.exp()];
    let s: f32 = e.iter().sum();
    close(fv(&t), &[e[0] / s, e[1] / s, e[2] / s, 0.5, 0.5, 0.], 1e-6);
    let t = ok(
        &op("Softmax", &[("axis", int(0))]),
        &[&f(&[2, 2], &[0., 1., 0., 3.])],
    );
    let (a, bb) = (1.0 / (1.0 + 2f32.exp()), 2f32.exp() / (1.0 + 2f32.exp()));
    close(fv(&t), &[0.5, a, 0.5, bb], 1e-6);
    // A fully -inf row is NaN, as in onnxruntime.
    let t = ok(&op("Softmax", &[]), &[&f(&[2], &[f32::NEG_INFINITY; 2])]);
    assert!(fv(&t).iter().all(|v| v.is_nan()));
}

// ------------------------------------------------------- opset-23 fused ops

#[test]
fn rms_normalization_matches_a_naive_loop() {
    let xv = values(2 * 3 * 8, 5);
    let sv = values(8, 6);
    let t = ok(
        &op("RMSNormalization", &[("epsilon", Attr::Float(1e-5))]),
        &[&f(&[2, 3, 8], &xv), &f(&[8], &sv)],
    );
    let mut want = Vec::new();
    for row in xv.chunks(8) {
        let ms: f64 = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            / 8.0;
        let inv = 1.0 / (ms + 1e-5).sqrt();
        want.extend(
            row.iter()
                .zip(&sv)
                .map(|(&v, &s)| (f64::from(v) * inv * f64::from(s)) as f32),
        );
    }
    close(fv(&t), &want, 1e-5);
    // axis = 1 normalizes over the last two dims together.
    let t = ok(
        &op("RMSNormalization", &[("axis", int(1))]),
        &[
            &f(&[1, 2, 2], &[1., 1., 1., 1.]),
            &f(&[2, 2], &[1., 2., 3., 4.]),
        ],
    );
    close(fv(&t), &[1., 2., 3., 4.], 1e-5);
    assert!(
        run(
            &op("RMSNormalization", &[]),
            &[&f(&[2, 4], &[0.; 8]), &f(&[3], &[0.; 3])]
        )
        .is_err()
    );
}

/// Naive rotary embedding on `[B, S, H, D]` data (token-major), positions per (b, s).
#[allow(clippy::too_many_arguments)]
fn naive_rope(
    x: &[f32],
    (bsz, s, h, d): (usize, usize, usize, usize),
    rd: usize,
    interleaved: bool,
    cos: impl Fn(usize, usize, usize) -> f32,
    sin: impl Fn(usize, usize, usize) -> f32,
) -> Vec<f32> {
    let mut out = x.to_vec();
    let half = rd / 2;
    for bi in 0..bsz {
        for si in 0..s {
            for hi in 0..h {
                let base = ((bi * s + si) * h + hi) * d;
                for k in 0..half {
                    let (p, q) = if interleaved {
                        (2 * k, 2 * k + 1)
                    } else {
                        (k, k + half)
                    };
                    let (c, sn) = (cos(bi, si, k), sin(bi, si, k));
                    out[base + p] = c * x[base + p] - sn * x[base + q];
                    out[base + q] = sn * x[base + p] + c * x[base + q];
                }
            }
        }
    }
    out
}

/// `[B, H, S, D]` ↔ `[B, S, H, D]`.
fn swap_hs(x: &[f32], (b0, a1, a2, d): (usize, usize, usize, usize)) -> Vec<f32> {
    let mut out = vec![0.; x.len()];
    for bi in 0..b0 {
        for i in 0..a1 {
            for j in 0..a2 {
                for k in 0..d {
                    out[((bi * a2 + j) * a1 + i) * d + k] = x[((bi * a1 + i) * a2 + j) * d + k];
                }
            }
        }
    }
    out
}

#[test]
fn rotary_embedding_4d_with_batch_one_caches() {
    let (bsz, h, s, d) = (2, 3, 4, 8);
    let xv = values(bsz * h * s * d, 7);
    let angle = |si: usize, k: usize| si as f32 * (0.3 + 0.1 * k as f32);
    let cos: Vec<f32> = (0..s)
        .flat_map(|si| (0..d / 2).map(move |k| angle(si, k).cos()))
        .collect();
    let sin: Vec<f32> = (0..s)
        .flat_map(|si| (0..d / 2).map(move |k| angle(si, k).sin()))
        .collect();
    let o = op(
        "RotaryEmbedding",
        &[("interleaved", int(0)), ("num_heads", int(3))],
    );
    let t = ok(
        &o,
        &[
            &f(&[bsz, h, s, d], &xv),
            &f(&[1, s, d / 2], &cos),
            &f(&[1, s, d / 2], &sin),
        ],
    );
    let token_major = swap_hs(&xv, (bsz, h, s, d));
    let want = naive_rope(
        &token_major,
        (bsz, s, h, d),
        d,
        false,
        |_, si, k| cos[si * 4 + k],
        |_, si, k| sin[si * 4 + k],
    );
    close(fv(&t), &swap_hs(&want, (bsz, s, h, d)), 1e-6);
    // Caches of the wrong length are refused.
    let short = f(&[1, s, 3], &[0.; 12]);
    assert!(run(&o, &[&f(&[bsz, h, s, d], &xv), &short, &short]).is_err());
}

#[test]
fn rotary_embedding_3d_interleaved_partial_with_position_ids() {
    let (bsz, s, h, d, rd) = (2, 3, 2, 6, 4);
    let xv = values(bsz * s * h * d, 9);
    let max_pos = 10;
    let table = |p: usize, k: usize, phase: f32| ((p as f32) * 0.7 + k as f32 + phase).sin();
    let cos: Vec<f32> = (0..max_pos)
        .flat_map(|p| (0..rd / 2).map(move |k| table(p, k, 1.0)))
        .collect();
    let sin: Vec<f32> = (0..max_pos)
        .flat_map(|p| (0..rd / 2).map(move |k| table(p, k, 0.0)))
        .collect();
    let pos = [3i64, 4, 5, 0, 9, 2];
    let o = op(
        "RotaryEmbedding",
        &[
            ("interleaved", int(1)),
            ("num_heads", int(h as i64)),
            ("rotary_embedding_dim", int(rd as i64)),
        ],
    );
    let inputs = [
        f(&[bsz, s, h * d], &xv),
        f(&[max_pos, rd / 2], &cos),
        f(&[max_pos, rd / 2], &sin),
        i(&[bsz, s], &pos),
    ];
    let t = ok(&o, &inputs.iter().collect::<Vec<_>>());
    let p = |bi: usize, si: usize| pos[bi * s + si] as usize;
    let want = naive_rope(
        &xv,
        (bsz, s, h, d),
        rd,
        true,
        |bi, si, k| cos[p(bi, si) * 2 + k],
        |bi, si, k| sin[p(bi, si) * 2 + k],
    );
    close(fv(&t), &want, 1e-6);
    let bad_pos = i(&[bsz, s], &[0, 0, 0, 0, 0, 10]);
    assert!(run(&o, &[&inputs[0], &inputs[1], &inputs[2], &bad_pos]).is_err());
}

/// Naive f64 attention on `[B, H, S, D]` tensors with GQA, causal offset and
/// an additive bias `bias(b, h, i, j)`.
#[allow(clippy::too_many_arguments)]
fn naive_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (bsz, hq, hk, sq, skv, d): (usize, usize, usize, usize, usize, usize),
    scale: f64,
    causal: bool,
    bias: impl Fn(usize, usize, usize, usize) -> f64,
) -> Vec<f32> {
    let past = skv - sq;
    let mut out = vec![0f32; bsz * hq * sq * d];
    for bi in 0..bsz {
        for h in 0..hq {
            let kh = h / (hq / hk);
            for i in 0..sq {
                let mut w = vec![0f64; skv];
                for (j, wj) in w.iter_mut().enumerate() {
                    let mut dot = 0f64;
                    for e in 0..d {
                        dot += f64::from(q[((bi * hq + h) * sq + i) * d + e])
                            * f64::from(k[((bi * hk + kh) * skv + j) * d + e]);
                    }
                    let masked = causal && j > i + past;
                    *wj = if masked {
                        f64::NEG_INFINITY
                    } else {
                        dot * scale + bias(bi, h, i, j)
                    };
                }
                let m = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if m == f64::NEG_INFINITY {
                    continue; // fully masked: zeros
                }
                let z: f64 = w.iter().map(|x| (x - m).exp()).sum();
                for e in 0..d {
                    let mut acc = 0f64;
                    for (j, wj) in w.iter().enumerate() {
                        acc +=
                            (wj - m).exp() / z * f64::from(v[((bi * hk + kh) * skv + j) * d + e]);
                    }
                    out[((bi * hq + h) * sq + i) * d + e] = acc as f32;
                }
            }
        }
    }
    out
}

#[test]
fn attention_gqa_causal_matches_naive_f64() {
    let (bsz, hq, hk, s, d) = (2, 4, 2, 5, 8);
    let qv = values(bsz * hq * s * d, 11);
    let kv = values(bsz * hk * s * d, 12);
    let vv = values(bsz * hk * s * d, 13);
    let o = op("Attention", &[("is_causal", int(1))]);
    let t = ok(
        &o,
        &[
            &f(&[bsz, hq, s, d], &qv),
            &f(&[bsz, hk, s, d], &kv),
            &f(&[bsz, hk, s, d], &vv),
        ],
    );
    assert_eq!(t.shape, vec![bsz, hq, s, d]);
    let scale = 1.0 / (d as f64).sqrt();
    let want = naive_attention(
        &qv,
        &kv,
        &vv,
        (bsz, hq, hk, s, s, d),
        scale,
        true,
        |_, _, _, _| 0.0,
    );
    close(fv(&t), &want, 1e-5);
}

#[test]
fn attention_3d_with_bool_mask_past_and_presents() {
    let (bsz, hq, hk, sq, past, d) = (1, 2, 1, 2, 3, 4);
    let total = past + sq;
    let qv = values(bsz * sq * hq * d, 21);
    let kv = values(bsz * sq * hk * d, 22);
    let vv = values(bsz * sq * hk * d, 23);
    let pk = values(bsz * hk * past * d, 24);
    let pv = values(bsz * hk * past * d, 25);
    // Key 1 is padding for every query.
    let mask: Vec<bool> = (0..total).map(|j| j != 1).collect();
    let o = op(
        "Attention",
        &[
            ("is_causal", int(1)),
            ("q_num_heads", int(hq as i64)),
            ("kv_num_heads", int(hk as i64)),
            ("scale", Attr::Float(0.3)),
        ],
    );
    let out = run_n(
        &o,
        &[
            &f(&[bsz, sq, hq * d], &qv),
            &f(&[bsz, sq, hk * d], &kv),
            &f(&[bsz, sq, hk * d], &vv),
            &b(&[total], &mask),
            &f(&[bsz, hk, past, d], &pk),
            &f(&[bsz, hk, past, d], &pv),
        ],
        3,
    )
    .unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].shape, vec![bsz, sq, hq * d]);
    assert_eq!(out[1].shape, vec![bsz, hk, total, d]);
    let mut k_all = pk.clone();
    k_all.extend_from_slice(&kv); // hk = 1, bsz = 1: [S, D] rows append
    let mut v_all = pv.clone();
    v_all.extend_from_slice(&vv);
    close(fv(&out[1]), &k_all, 0.0);
    close(fv(&out[2]), &v_all, 0.0);
    let q4 = swap_hs(&qv, (bsz, sq, hq, d));
    let want = naive_attention(
        &q4,
        &k_all,
        &v_all,
        (bsz, hq, hk, sq, total, d),
        0.3,
        true,
        |_, _, _, j| {
            if mask[j] { 0.0 } else { f64::NEG_INFINITY }
        },
    );
    close(fv(&out[0]), &swap_hs(&want, (bsz, hq, sq, d)), 1e-5);
}

#[test]
fn attention_float_mask_fully_masked_rows_and_qk_output() {
    let (bsz, h, s, d) = (1, 1, 2, 2);
    let q = f(&[bsz, h, s, d], &[1., 0., 0., 1.]);
    let k = f(&[bsz, h, s, d], &[1., 0., 0., 1.]);
    let v = f(&[bsz, h, s, d], &[1., 2., 3., 4.]);
    // Row 0 fully masked; row 1 gets +1 on key 0.
    let mask = f(&[s, s], &[f32::NEG_INFINITY, f32::NEG_INFINITY, 1., 0.]);
    let o = op(
        "Attention",
        &[
            ("scale", Attr::Float(1.0)),
            ("qk_matmul_output_mode", int(3)),
        ],
    );
    let out = run_n(&o, &[&q, &k, &v, &mask], 4).unwrap();
    // Row 1: scores q1·k = [0, 1] + [1, 0] = [1, 1] → uniform → mean of v rows.
    close(fv(&out[0]), &[0., 0., 2., 3.], 1e-6);
    close(fv(&out[3]), &[0., 0., 0.5, 0.5], 1e-6);
    // Softcap: scores [1, 0] → 2·tanh([0.5, 0]) before the mask.
    let capped = op(
        "Attention",
        &[
            ("scale", Attr::Float(1.0)),
            ("softcap", Attr::Float(2.0)),
            ("qk_matmul_output_mode", int(1)),
        ],
    );
    let out = run_n(&capped, &[&q, &k, &v], 4).unwrap();
    let c = 2.0 * 0.5f32.tanh();
    close(fv(&out[3]), &[c, 0., 0., c], 1e-6);
    assert!(run(&o, &[&q, &k, &v, &f(&[3, 3], &[0.; 9])]).is_err());
}

// ----------------------------------------------------------------- errors

#[test]
fn bad_inputs_are_errors_not_panics() {
    let x = f(&[2, 3], &[0.; 6]);
    let y = f(&[4], &[0.; 4]);
    let err = run(&op("Add", &[]), &[&x, &y]).unwrap_err();
    assert!(matches!(err, RuntimeError::Shape(_)), "{err}");
    assert!(err.to_string().contains("Add"), "{err}");
    assert!(matches!(
        run(&op("Add", &[]), &[&x, &i(&[1], &[1])]),
        Err(RuntimeError::Type(_))
    ));
    assert!(matches!(
        run(&op("Add", &[]), &[&x]),
        Err(RuntimeError::Shape(_))
    ));
    assert!(matches!(
        run(&op("Where", &[]), &[&x, &x, &x]),
        Err(RuntimeError::Type(_))
    ));
    assert!(matches!(
        run(&op("LSTM", &[]), &[&x]),
        Err(RuntimeError::Unsupported(_))
    ));
    assert!(run(&op("Transpose", &[("perm", ints(&[0]))]), &[&x]).is_err());
    assert!(run(&op("Softmax", &[("axis", int(2))]), &[&x]).is_err());
    assert!(run(&op("Cast", &[]), &[&x]).is_err());
    assert!(run(&op("Tile", &[]), &[&x, &i(&[1], &[2])]).is_err());
    assert!(run(&op("Attention", &[]), &[&x, &x, &x]).is_err());
    assert!(
        run(
            &op("Attention", &[]),
            &[
                &f(&[1, 2, 2, 2], &[0.; 8]),
                &f(&[1, 3, 2, 2], &[0.; 12]),
                &f(&[1, 3, 2, 2], &[0.; 12])
            ]
        )
        .is_err()
    );
    assert!(run(&op("RotaryEmbedding", &[]), &[&x, &x, &x]).is_err());
    // A tensor whose data disagrees with its shape (fields are public).
    let broken = Tensor {
        shape: vec![4, 4],
        data: Data::F32(vec![0.; 3]),
    };
    for name in ["Transpose", "Softmax", "Neg", "ReduceSum"] {
        assert!(run(&op(name, &[]), &[&broken]).is_err(), "{name}");
    }
    assert!(run(&op("MatMul", &[]), &[&broken, &broken]).is_err());
    assert!(run(&op("Add", &[]), &[&broken, &f(&[4, 1], &[0.; 4])]).is_err());
}

#[test]
fn every_listed_op_is_implemented_and_odd_operands_never_panic() {
    let pool = [
        f(&[2, 3], &[1., -2., 3., 0.5, 0., 7.]),
        f(&[], &[2.]),
        f(&[1, 2, 2, 2], &[0.5; 8]),
        i(&[2], &[1, -1]),
        i(&[], &[3]),
        i(&[0], &[]),
        b(&[3], &[true, false, true]),
    ];
    for schema in ligerc_ir::onnx_ops::ONNX_OPS {
        let name = schema.op_type;
        let o = op(
            name,
            &[("axis", int(1)), ("to", int(1)), ("num_heads", int(2))],
        );
        let arities = schema.min_inputs..=schema.max_inputs.min(schema.min_inputs + 2).min(6);
        for n in arities {
            for first in &pool {
                for rest in &pool {
                    let mut inputs = vec![first];
                    inputs.extend(std::iter::repeat_n(rest, n.saturating_sub(1)));
                    for results in [1, schema.max_outputs.min(3)] {
                        // Must not panic; an error is fine, but never "not implemented".
                        if let Err(RuntimeError::Unsupported(msg)) = run_n(&o, &inputs, results) {
                            assert_ne!(msg, format!("ONNX op {name}"), "{name} is not implemented");
                        }
                    }
                }
            }
        }
    }
}
