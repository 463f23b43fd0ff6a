//! Every real exporter fixture imports into a graph the verifier accepts.

use std::path::PathBuf;

use ligerc_frontends::onnx::import_onnx;
use ligerc_ir::Op;

fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/onnx"
    ));
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.sort();
    assert_eq!(
        v.len(),
        8,
        "expected the 8 exporter fixtures in {}",
        dir.display()
    );
    v
}

#[test]
fn every_fixture_imports_and_verifies() {
    for path in fixtures() {
        let g = import_onnx(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        ligerc_ir::verify(&g).unwrap();
        assert_eq!(g.outputs.len(), 1, "{}", path.display());
        assert_eq!(g.outputs[0].name, "logits");
        let inputs: Vec<&str> = g.inputs().into_iter().map(|(_, n)| n).collect();
        assert_eq!(inputs[0], "input_ids", "{}", path.display());
        let softmax_or_attention = g
            .node_ids()
            .into_iter()
            .filter(|&id| matches!(&g.node(id).unwrap().op, Op::Onnx(o) if o.op_type == "Softmax" || o.op_type == "Attention"))
            .count();
        assert_eq!(
            softmax_or_attention,
            2,
            "{}: one attention per layer",
            path.display()
        );
        // The embedding table is shared by reference, not copied.
        assert!(
            g.weights.values().any(|w| w.shape() == [256, 64]),
            "{}",
            path.display()
        );
    }
}
