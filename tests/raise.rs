//! `--pass raise` on every exporter fixture and on SmolLM2: every attention
//! block raised, and the raised graph's logits equal the imported graph's
//! (≤ 1e-5 × max|logit|: the same f32 math in another order).

mod common;
use std::path::Path;

use common::*;

fn logits(
    model: &Path,
    passes: &[&str],
    rows: &[Vec<i64>],
    out: &Path,
) -> (Vec<usize>, Vec<f32>, String) {
    let ids = ids_args(rows);
    let mut args: Vec<&str> = vec!["run", model.to_str().unwrap()];
    for p in passes {
        args.extend(["--pass", p]);
    }
    args.extend(ids.iter().map(String::as_str));
    args.extend(["--logits", out.to_str().unwrap()]);
    let o = ligerc_ok(&args);
    let (s, d) = read_npy(out);
    (s, d, String::from_utf8_lossy(&o.stderr).into_owned())
}

fn check_raise(model: &Path, rows: &[Vec<i64>], dir: &Path, tag: &str, blocks: usize) {
    let (s1, a, _) = logits(model, &[], rows, &dir.join(format!("{tag}-orig.npy")));
    let (s2, b, notes) = logits(
        model,
        &["raise"],
        rows,
        &dir.join(format!("{tag}-raised.npy")),
    );
    assert!(
        notes.contains(&format!(
            "raise: {blocks} of {blocks} attention blocks raised"
        )),
        "{tag}: {notes}"
    );
    assert_eq!(s1, s2);
    let (d, m) = max_diff(&b, &a);
    assert!(
        d <= 1e-5 * m,
        "{tag}: raised logits differ by {d} (max {m})"
    );
}

#[test]
fn every_fixture_raises_and_keeps_its_logits() {
    let dir = tempdir("raise");
    for model in fixtures() {
        let name = model.file_stem().unwrap().to_string_lossy().into_owned();
        check_raise(&model, &random_ids(9, 2, 11, 256), &dir, &name, 2);
        // Nothing generic is left but the residual adds.
        let text =
            String::from_utf8(ligerc_ok(&[model.to_str().unwrap(), "--pass", "raise"]).stdout)
                .unwrap();
        let generic: Vec<&str> = text.lines().filter(|l| l.contains("= onnx.")).collect();
        assert!(
            generic.iter().all(|l| l.contains("onnx.Add(")),
            "{name}: left {generic:#?}"
        );
        assert_eq!(text.matches("= Attention(").count(), 2, "{name}");
        assert_eq!(text.matches("= RmsNorm(").count(), 5, "{name}");
        assert_eq!(text.matches("= SwiGlu(").count(), 2, "{name}");
        assert!(
            text.contains("weight \"model.layers.1.self_attn.k_proj.weight\""),
            "{name}: roles not named"
        );
    }
}

#[test]
fn raise_snapshots() {
    for model in fixtures() {
        let name = model.file_stem().unwrap().to_string_lossy().into_owned();
        let text =
            String::from_utf8(ligerc_ok(&[model.to_str().unwrap(), "--pass", "raise"]).stdout)
                .unwrap();
        insta::assert_snapshot!(format!("raise_{name}"), text);
    }
}

#[test]
fn smollm2_raises_from_checkpoints_and_from_our_own_onnx_export() {
    let dir = tempdir("raise-smollm2");
    let (gguf, hf) = smollm2();
    let rows = random_ids(4, 1, 12, 49152);
    // Checkpoint graphs are built high-level: raise finds nothing left to do.
    check_raise(&gguf, &rows, &dir, "gguf", 30);
    check_raise(&hf, &rows, &dir, "hf", 30);
    // Our ONNX export decomposes everything again; raising it recovers the blocks.
    let onnx = dir.join("smollm2.onnx");
    ligerc_ok(&[
        gguf.to_str().unwrap(),
        "--emit",
        "onnx",
        "-o",
        onnx.to_str().unwrap(),
    ]);
    check_raise(&onnx, &rows, &dir, "onnx", 30);
}

#[test]
fn unraisable_attention_is_named_and_allow_partial_continues() {
    // A graph whose softmax is not over the key axis cannot be raised.
    let dir = tempdir("raise-bad");
    let src = fixture("tiny_dynamo_op18_eager.onnx");
    let mut bytes = std::fs::read(&src).unwrap();
    // Point layer 0's Softmax at axis -2: the encoded varint for -1 is ten bytes of 0xff..0x01; find "Softmax" and its axis attr.
    let at = bytes.windows(7).position(|w| w == b"Softmax").unwrap();
    let axis = bytes[at..].windows(4).position(|w| w == b"axis").unwrap() + at;
    // attribute i = -1 is encoded as 0x18 followed by ten bytes (ff × 9, 01); -2 is fe ff … 01.
    let i_tag = bytes[axis..].iter().position(|&b| b == 0x18).unwrap() + axis;
    bytes[i_tag + 1] = 0xfe;
    let p = dir.join("bad.onnx");
    std::fs::write(&p, &bytes).unwrap();
    let o = ligerc(&[p.to_str().unwrap(), "--pass", "raise"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("1 of 2 attention blocks were not raised") && err.contains("Softmax"),
        "{err}"
    );
    let o = ligerc(&[p.to_str().unwrap(), "--pass", "raise:allow-partial=true"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("raise: 1 of 2 attention blocks raised"));
}
