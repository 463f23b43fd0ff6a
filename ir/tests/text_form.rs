//! The text form: print ∘ parse = id, errors name line and column, verifier catches bad graphs.

use ligerc_ir::*;

const SAMPLE: &str = r#"graph "sample" opset 18 {
  %0 = input "input_ids" : i64[batch, seq]
  %1 = weight "embed" : f32[16, 8]
  %2 = const [4, 4] : i64[2]
  %3 = const [1e-5, -0.5, inf, NaN] : f32[4]
  %4 = Embedding(%1, %0) : f32[batch, seq, 8]
  %5 = onnx.Split(%4, %2) {axis = -1} : f32[batch, seq, 4], f32[batch, seq, 4] loc("/model/Split \"q\"")
  %6 = onnx.Add(%5#0, %5#1) : f32[batch, seq, 4]
  %7 = onnx.ConstantOfShape(%2) {value = f32[1] [0.25]} : f32[*]
  %8 = RmsNorm(%4, %1) {eps = 1e-5} : f32[batch, seq, ?]
  %9 = Rope(%8) {factor = 8.0, head_dim = 4, heads = 2, high_freq_factor = 4.0, low_freq_factor = 1.0, original_max_position = 8192.0, scaling = "llama3", theta = 500000.0} : f32[batch, seq, 8]
  output "logits" = %6
  output "rope" = %9
}
"#;

#[test]
fn print_of_parse_is_identity() {
    let g = text::parse(SAMPLE).unwrap();
    let printed = text::print(&g).unwrap();
    assert_eq!(printed, SAMPLE);
    let again = text::print(&text::parse(&printed).unwrap()).unwrap();
    assert_eq!(again, printed);
}

#[test]
fn constants_read_back_bit_exactly() {
    let g = text::parse(SAMPLE).unwrap();
    let consts: Vec<&TensorData> = g
        .node_ids()
        .into_iter()
        .filter_map(|id| match &g.node(id).unwrap().op {
            Op::Const(t) if t.dtype() == DType::F32 => Some(t),
            _ => None,
        })
        .collect();
    let v = consts[0].to_f32_vec();
    assert_eq!(v[0], 1e-5f32);
    assert_eq!(v[1], -0.5);
    assert!(v[2].is_infinite() && v[3].is_nan());
}

#[test]
fn parse_errors_name_line_and_column() {
    let src = "graph \"x\" {\n  %0 = input \"a\" : f32[2]\n  %1 = onnx.Add(%0, %9) : f32[2]\n}\n";
    let err = text::parse(src).unwrap_err();
    assert!(matches!(err, IrError::Parse { line: 3, .. }), "{err}");
    assert!(err.to_string().contains("%9"), "{err}");
    let err = text::parse("graph \"x\" {\n  %0 = onnx.Frobnicate() : f32[2]\n}").unwrap_err();
    assert!(err.to_string().contains("Frobnicate"), "{err}");
    assert!(text::parse("graph \"x\" { %0 = const [1.5] : i64[1] }").is_err());
    assert!(text::parse("graph \"x\" { %0 = const [1] : f32[2] }").is_err());
    assert!(text::parse("graph \"x\" {").is_err());
}

#[test]
fn verifier_reports_every_problem_with_its_node() {
    let src = r#"graph "bad" {
  %0 = input "x" : f32[2, 8]
  %1 = weight "w" : f32[4, 6]
  %2 = Linear(%0, %1) : f32[2, 4]
  %3 = Attention(%2, %2, %2) {causal = 1, head_dim = 2, heads = 3, kv_heads = 2, scale = 1.0} : f32[2, 4]
  %4 = input "x" : f32[2]
  output "y" = %3
}
"#;
    let mut g = text::parse(src).unwrap();
    g.weights.insert(
        "w".into(),
        TensorData::from_f32(vec![4, 6], &[0.0; 24]).unwrap(),
    );
    let IrError::Verify { errors } = verify(&g).unwrap_err() else {
        panic!()
    };
    let all = errors.join("\n");
    assert!(all.contains("input features is 8, expected 6"), "{all}");
    assert!(all.contains("multiple of kv_heads"), "{all}");
    assert!(all.contains("duplicate input name"), "{all}");
    // Missing weight data is a verifier error too.
    g.weights.clear();
    assert!(
        verify(&g)
            .unwrap_err()
            .to_string()
            .contains("not in the weight store")
    );
}

#[test]
fn cycles_are_detected() {
    let mut g = Graph::new("cyc");
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[2]));
    let a = g.add(
        Op::Onnx(OnnxOp {
            op_type: "Neg".into(),
            attrs: Attrs::new(),
        }),
        &[x],
        TensorType::fixed(DType::F32, &[2]),
    );
    let b = g.add(
        Op::Onnx(OnnxOp {
            op_type: "Neg".into(),
            attrs: Attrs::new(),
        }),
        &[a],
        TensorType::fixed(DType::F32, &[2]),
    );
    g.set_operand(a.node, 0, b);
    assert!(matches!(g.topo_order(), Err(IrError::Cycle { .. })));
    assert!(verify(&g).is_err());
    assert!(text::print(&g).is_err());
}

#[test]
fn rope_llama3_inv_freq_matches_transformers_formula() {
    let spec = RopeSpec {
        heads: 1,
        head_dim: 128,
        theta: 500000.0,
        scaling: RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 8192.0,
        },
    };
    let f = spec.inv_freq();
    assert_eq!(f.len(), 64);
    // High frequencies are kept, the lowest are divided by the factor.
    assert_eq!(f[0], 1.0);
    let plain = 1.0 / 500000f64.powf(126.0 / 128.0);
    assert!((f[63] - plain / 8.0).abs() < 1e-18);
}
