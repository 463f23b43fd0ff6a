//! `--emit onnx` writes models stock onnxruntime runs, with the same logits as
//! ligerc's CPU runtime (1e-4 × max|logit|: both are f32 with different
//! summation orders).

mod common;
use std::path::Path;

use common::*;

fn ours_vs_ort(model: &Path, exported: &Path, rows: &[Vec<i64>], dir: &Path, tag: &str) {
    assert_matches_ort(model, &[], exported, rows, dir, tag, 1e-4);
}

#[test]
fn fixtures_round_trip_through_onnx_export() {
    let dir = tempdir("export-fixtures");
    for model in fixtures() {
        let name = model.file_stem().unwrap().to_string_lossy().into_owned();
        let out = dir.join(format!("{name}.onnx"));
        ligerc_ok(&[
            model.to_str().unwrap(),
            "--emit",
            "onnx",
            "-o",
            out.to_str().unwrap(),
        ]);
        let rows = if name.contains("op23") { 1 } else { 2 };
        ours_vs_ort(&model, &out, &random_ids(3, rows, 9, 256), &dir, &name);
    }
}

#[test]
fn smollm2_exports_from_gguf_and_hf() {
    let dir = tempdir("export-smollm2");
    let (gguf, hf) = smollm2();
    for (model, tag) in [(gguf, "gguf"), (hf, "hf")] {
        let out = dir.join(format!("smollm2-{tag}.onnx"));
        ligerc_ok(&[
            model.to_str().unwrap(),
            "--emit",
            "onnx",
            "-o",
            out.to_str().unwrap(),
        ]);
        ours_vs_ort(&model, &out, &random_ids(11, 2, 16, 49152), &dir, tag);
    }
}
