//! Every exporter fixture: ligerc's CPU logits equal onnxruntime's on the same
//! random `input_ids` (two rows; two lengths), to 1e-4 × max|logit| — f32
//! accumulation-order noise over a 2-layer model is ~1e-6 relative, so 1e-4
//! leaves margin without hiding a wrong op.

mod common;
use common::*;

fn compare(model: &std::path::Path, rows: &[Vec<i64>], dir: &std::path::Path, tag: &str) {
    assert_matches_ort(model, &[], model, rows, dir, tag, 1e-4);
}

#[test]
fn fixtures_match_onnxruntime() {
    let dir = tempdir("ort");
    for model in fixtures() {
        let name = model.file_stem().unwrap().to_string_lossy().into_owned();
        // onnxruntime runs the opset-23 export only at batch 1 (see tests/fixtures/README.md).
        let rows = if name.contains("op23") { 1 } else { 2 };
        for (i, len) in [5usize, 12].into_iter().enumerate() {
            let ids = random_ids(17 + i as u64, rows, len, 256);
            compare(&model, &ids, &dir, &format!("{name}-{len}"));
        }
    }
}

#[test]
fn op23_fixture_broadcasts_rotary_caches_over_the_batch() {
    // onnxruntime refuses batch 2 here; PyTorch broadcasts. Row-by-row at batch 1
    // must equal our batch-2 run.
    let dir = tempdir("op23");
    let model = fixture("tiny_dynamo_op23_sdpa.onnx");
    let rows = random_ids(5, 2, 7, 256);
    let both = dir.join("both.npy");
    let ids = ids_args(&rows);
    let mut args: Vec<&str> = vec!["run", model.to_str().unwrap()];
    args.extend(ids.iter().map(String::as_str));
    args.extend(["--logits", both.to_str().unwrap()]);
    ligerc_ok(&args);
    let (_, all) = read_npy(&both);
    let per_row = all.len() / 2;
    for (r, row) in rows.iter().enumerate() {
        let one = dir.join(format!("row{r}.npy"));
        let ids = ids_args(std::slice::from_ref(row));
        let mut pargs: Vec<&str> = vec![model.to_str().unwrap()];
        pargs.extend(ids.iter().map(String::as_str));
        pargs.extend(["-o", one.to_str().unwrap()]);
        py("scripts/ort_logits.py", &pargs);
        let (_, b) = read_npy(&one);
        let (d, m) = max_diff(&all[r * per_row..(r + 1) * per_row], &b);
        assert!(d <= 1e-4 * m, "row {r}: {d} > 1e-4 × {m}");
    }
}

#[test]
fn external_data_files_are_read() {
    // The onnx package rewrites a fixture with every initializer in one `.onnx.data` file.
    let dir = tempdir("external");
    let src = fixture("tiny_dynamo_op18_eager.onnx");
    let out = dir.join("ext.onnx");
    let script = format!(
        "import onnx; m = onnx.load({:?}); onnx.save_model(m, {:?}, save_as_external_data=True, all_tensors_to_one_file=True, location='ext.onnx.data', size_threshold=1024)",
        src.to_str().unwrap(),
        out.to_str().unwrap()
    );
    let o = std::process::Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dir.join("ext.onnx.data").exists());
    let (model_len, data_len) = (
        std::fs::metadata(&out).unwrap().len(),
        std::fs::metadata(dir.join("ext.onnx.data")).unwrap().len(),
    );
    assert!(
        data_len > 2 * model_len,
        "weights should live in the data file ({model_len} vs {data_len} bytes)"
    );
    compare(&out, &random_ids(2, 2, 6, 256), &dir, "external");
    // A data file that is too short is an error naming the tensor, not a panic.
    let data = std::fs::read(dir.join("ext.onnx.data")).unwrap();
    std::fs::write(dir.join("ext.onnx.data"), &data[..data.len() / 2]).unwrap();
    let o = ligerc(&[out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("past the end of the file"), "{err}");
}
