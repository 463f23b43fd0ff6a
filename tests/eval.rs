//! `ligerc eval`: zero-shot multiple choice on SmolLM2 against transformers
//! goldens (`scripts/eval_reference.py` → `tests/golden/eval_smollm2.json`),
//! the error cases, and a passkey / position-bucket smoke test on a tiny
//! fixture model.
//!
//! The goldens hold the first 5 questions of each of the eight OE-Eval tasks;
//! the request files come from `scripts/fetch-oe-eval.sh` (data/oe-eval/).

mod common;

use std::path::{Path, PathBuf};

use common::{fixture, ligerc, ligerc_ok, root, smollm2, tempdir};
use serde_json::Value;

/// |Δ log-likelihood| allowed per choice, in nats: f32 CPU runtime vs
/// transformers fp32 (measured ≤ 8e-5 over the first 15 questions of every task; docs/EVAL.md).
const LOGLIK_TOL: f64 = 1e-3;
/// Accuracy points allowed per task (on these questions they are identical).
const ACC_TOL: f64 = 0.005;

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn smollm2_matches_transformers_on_every_task() {
    let (_, hf) = smollm2();
    let golden = read_json(&root().join("tests/golden/eval_smollm2.json"));
    let tasks = golden["tasks"].as_object().unwrap();
    let data = root().join("data/oe-eval");
    let missing: Vec<&String> = tasks
        .keys()
        .filter(|t| !data.join(format!("{t}.jsonl.gz")).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "request files missing for {missing:?}: run scripts/fetch-oe-eval.sh"
    );
    let limit = golden["limit"].as_u64().unwrap().to_string();
    let dir = tempdir("eval-smollm2");
    let out = dir.join("report.json");
    let mut args: Vec<String> = vec!["eval".into(), hf.display().to_string()];
    for t in tasks.keys() {
        args.extend(["--task".into(), t.clone()]);
    }
    args.extend(["--limit".into(), limit, "--details".into()]);
    args.extend(["-o".into(), out.display().to_string()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    ligerc_ok(&argv);
    let ours = read_json(&out);
    for (name, want) in tasks {
        let got = &ours["tasks"][name];
        assert_eq!(got["n"], want["n"], "{name}: n");
        for (qa, qb) in got["questions"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want["questions"].as_array().unwrap())
        {
            assert_eq!(qa["doc_id"], qb["doc_id"], "{name}: question order");
            assert_eq!(
                qa["tokens"], qb["tokens"],
                "{name} doc {}: continuation tokens",
                qb["doc_id"]
            );
            let (a, b) = (
                qa["loglik"].as_array().unwrap(),
                qb["loglik"].as_array().unwrap(),
            );
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                assert!(
                    (x - y).abs() <= LOGLIK_TOL,
                    "{name} doc {}: loglik {x} vs transformers {y}",
                    qb["doc_id"]
                );
            }
        }
        for metric in ["acc", "acc_norm", "acc_per_char"] {
            let (x, y) = (
                got[metric].as_f64().unwrap(),
                want[metric].as_f64().unwrap(),
            );
            assert!(
                (x - y).abs() <= ACC_TOL,
                "{name}: {metric} {x} vs transformers {y}"
            );
        }
    }
}

/// A byte-level BPE tokenizer with no merges: ids 0..256 are the bytes, so
/// it fits the fixtures' 256-token vocabulary.
fn byte_tokenizer_json() -> String {
    // GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to 256+.
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut vocab = serde_json::Map::new();
    for (b, c) in printable.iter().zip(&chars) {
        vocab.insert(char::from_u32(*c).unwrap().to_string(), Value::from(*b));
    }
    serde_json::json!({
        "version": "1.0",
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "vocab": vocab, "merges": []}
    })
    .to_string()
}

/// The tiny fixture with a byte tokenizer next to it, in `dir`.
fn tiny_model(dir: &Path) -> PathBuf {
    let model = dir.join("tiny.onnx");
    std::fs::copy(fixture("tiny_legacy_op17_eager.onnx"), &model).unwrap();
    std::fs::write(dir.join("tokenizer.json"), byte_tokenizer_json()).unwrap();
    model
}

#[test]
fn passkey_and_buckets_on_a_tiny_linearized_model() {
    let dir = tempdir("eval-tiny");
    let model = tiny_model(&dir);
    let text = root().join("tests/data/passage.txt");
    let out = dir.join("report.json");
    let m = model.to_str().unwrap();
    let t = text.to_str().unwrap();
    ligerc_ok(&[
        "eval",
        m,
        "--pass",
        "linearize",
        "--window",
        "16",
        "--text",
        t,
        "--ppl-window",
        "512",
        "--ppl-stride",
        "256",
        "--buckets",
        "0,16,64,256",
        "--passkey",
        "--lengths",
        "512,1k",
        "--trials",
        "2",
        "-o",
        out.to_str().unwrap(),
    ]);
    let r = read_json(&out);
    // Buckets partition the scored tokens.
    let buckets = r["text"]["buckets"].as_array().unwrap();
    let in_buckets: u64 = buckets.iter().map(|b| b["tokens"].as_u64().unwrap()).sum();
    assert_eq!(in_buckets, r["tokens_scored"].as_u64().unwrap());
    assert_eq!(buckets.len(), 4, "[0,16) [16,64) [64,256) [256,∞)");
    assert!(r["perplexity"].as_f64().unwrap() > 1.0);
    // Passkey: every trial ran at or under its length, the key sits inside the filler.
    let by_len = r["passkey"]["by_length"].as_array().unwrap();
    assert_eq!(by_len.len(), 2);
    for tr in r["passkey"]["trials"].as_array().unwrap() {
        let len = tr["length"].as_u64().unwrap();
        let got = tr["prompt_tokens"].as_u64().unwrap();
        assert!(
            got <= len && got > len - 100,
            "prompt of {got} tokens for length {len}"
        );
        let d = tr["depth"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&d));
    }
    // The eval windows are `ligerc run --perplexity`'s windows.
    let run = ligerc_ok(&[
        "run",
        m,
        "--pass",
        "linearize",
        "--window",
        "16",
        "--perplexity",
        t,
        "--ppl-window",
        "512",
        "--ppl-stride",
        "256",
    ]);
    let run: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(run["tokens_scored"], r["tokens_scored"]);
    let (a, b) = (
        run["perplexity"].as_f64().unwrap(),
        r["perplexity"].as_f64().unwrap(),
    );
    assert!((a - b).abs() <= 1e-9 * a, "run {a} vs eval {b}");
}

/// Runs a failing `ligerc eval`, checks exit code 2, the message, and that no report was written.
fn assert_input_error(args: &[&str], report: &Path, needle: &str) {
    let out = ligerc(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected `{needle}` in: {err}"
    );
    assert!(!report.exists(), "{args:?} wrote a report");
}

#[test]
fn bad_input_exits_2_without_a_report() {
    let dir = tempdir("eval-errors");
    let model = tiny_model(&dir);
    let m = model.to_str().unwrap();
    let report = dir.join("report.json");
    let o = report.to_str().unwrap();
    assert_input_error(
        &["eval", m, "--task", "no_such_task", "-o", o],
        &report,
        "unknown task `no_such_task`",
    );
    let bad = dir.join("bad.jsonl");
    let good = r#"{"request_type": "loglikelihood", "doc_id": 0, "idx": 0, "label": 0, "request": {"context": "Q", "continuation": " a"}}"#;
    std::fs::write(&bad, format!("{good}\n{{\"doc_id\": 0, \"idx\": 1\n")).unwrap();
    let needle = format!("{}:2:", bad.display());
    assert_input_error(
        &["eval", m, "--task-file", bad.to_str().unwrap(), "-o", o],
        &report,
        &needle,
    );
    let missing = dir.join("missing.jsonl.gz");
    assert_input_error(
        &["eval", m, "--task-file", missing.to_str().unwrap(), "-o", o],
        &report,
        "missing.jsonl.gz",
    );
    assert_input_error(
        &["eval", m, "--text", missing.to_str().unwrap(), "-o", o],
        &report,
        "missing.jsonl.gz",
    );
    assert_input_error(&["eval", m, "-o", o], &report, "give --text FILE");
}
