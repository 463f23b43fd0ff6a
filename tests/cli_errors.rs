//! Bad input ends in a clear error naming what and where, exit code 2, and no
//! output file.

mod common;
use common::*;

fn expect_bad(args: &[&str], needle: &str, out: Option<&std::path::Path>) {
    let o = ligerc(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{args:?}: expected exit 2, stderr: {err}"
    );
    assert!(
        err.contains(needle),
        "{args:?}: stderr lacks `{needle}`: {err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    if let Some(p) = out {
        assert!(!p.exists(), "{args:?} left {}", p.display());
    }
}

#[test]
fn truncated_and_corrupted_onnx_are_refused() {
    let dir = tempdir("bad-onnx");
    let good = std::fs::read(fixture("tiny_dynamo_op18_eager.onnx")).unwrap();
    let out = dir.join("out.onnx");
    for cut in [10usize, 1000, good.len() / 2, good.len() - 3] {
        let p = dir.join(format!("cut{cut}.onnx"));
        std::fs::write(&p, &good[..cut]).unwrap();
        expect_bad(
            &[
                p.to_str().unwrap(),
                "--emit",
                "onnx",
                "-o",
                out.to_str().unwrap(),
            ],
            "cut",
            Some(&out),
        );
    }
    let p = dir.join("garbage.onnx");
    std::fs::write(&p, b"\xff\xff\xff\xffnot a protobuf at all").unwrap();
    expect_bad(&[p.to_str().unwrap()], "malformed ONNX", None);
}

#[test]
fn unsupported_op_names_op_node_and_file() {
    // Rename the first MatMul's op_type in the protobuf bytes: same length, so the file stays well-formed.
    let dir = tempdir("bad-op");
    let mut bytes = std::fs::read(fixture("tiny_dynamo_op18_eager.onnx")).unwrap();
    let at = bytes.windows(6).position(|w| w == b"MatMul").unwrap();
    bytes[at..at + 6].copy_from_slice(b"MatMux");
    let p = dir.join("weird.onnx");
    std::fs::write(&p, &bytes).unwrap();
    expect_bad(&[p.to_str().unwrap()], "unsupported op `MatMux`", None);
    expect_bad(&[p.to_str().unwrap()], "weird.onnx", None);
}

#[test]
fn bad_gguf_files_are_refused() {
    let dir = tempdir("bad-gguf");
    let p = dir.join("m.gguf");
    std::fs::write(&p, b"GGUF\x03\x00\x00\x00").unwrap();
    expect_bad(&[p.to_str().unwrap()], "GGUF", None);
    std::fs::write(&p, b"GGUF\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00").unwrap();
    expect_bad(&[p.to_str().unwrap()], "version", None);
}

#[test]
fn bad_hf_directories_are_refused() {
    let dir = tempdir("bad-hf");
    expect_bad(&[dir.to_str().unwrap()], "config.json", None);
    std::fs::write(
        dir.join("config.json"),
        "{\"model_type\": \"llama\", \"hidden_size\": ",
    )
    .unwrap();
    expect_bad(&[dir.to_str().unwrap()], "config.json", None);
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "gpt2", "hidden_size": 8}"#,
    )
    .unwrap();
    expect_bad(&[dir.to_str().unwrap()], "gpt2", None);
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "llama", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-5, "vocab_size": 10,
            "max_position_embeddings": 64, "rope_theta": 10000.0}"#,
    )
    .unwrap();
    expect_bad(&[dir.to_str().unwrap()], "model.safetensors", None);
    // A safetensors file whose header lies about its length.
    std::fs::write(
        dir.join("model.safetensors"),
        [0xffu8, 0xff, 0, 0, 0, 0, 0, 0, b'{'],
    )
    .unwrap();
    expect_bad(&[dir.to_str().unwrap()], "safetensors", None);
}

#[test]
fn usage_errors_exit_2() {
    expect_bad(
        &[
            "run",
            fixture("tiny_dynamo_op18_eager.onnx").to_str().unwrap(),
            "--ids",
            "1,x,3",
        ],
        "not an integer",
        None,
    );
    expect_bad(
        &[
            "run",
            fixture("tiny_dynamo_op18_eager.onnx").to_str().unwrap(),
            "--ids",
            "1,2",
            "--ids",
            "1",
        ],
        "same length",
        None,
    );
    expect_bad(
        &[
            fixture("tiny_dynamo_op18_eager.onnx").to_str().unwrap(),
            "--pass",
            "nonsense",
        ],
        "unknown pass",
        None,
    );
    expect_bad(&["/no/such/model.onnx"], "/no/such/model.onnx", None);
    expect_bad(
        &[
            "run",
            fixture("tiny_dynamo_op18_eager.onnx").to_str().unwrap(),
            "--ids",
            "1,999999",
        ],
        "999999",
        None,
    );
}

#[test]
fn a_config_that_does_not_match_its_weights_is_refused() {
    // Qwen2 weights (with q/k/v biases) under a config that says Llama (no biases).
    let dir = tempdir("mismatch");
    let src = root().join("tests/fixtures/hf/qwen2");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("\"qwen2\"", "\"llama\"");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    expect_bad(&[dir.to_str().unwrap()], "q_proj.bias", None);
    // A weight whose shape disagrees with the config.
    let cfg = std::fs::read_to_string(src.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 128", "\"intermediate_size\": 96");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    expect_bad(&[dir.to_str().unwrap()], "the config implies", None);
}
