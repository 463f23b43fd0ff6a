//! `--emit onnx` of linearized graphs runs in stock onnxruntime and agrees with
//! ligerc's CPU runtime (`ligerc run … --pass linearize`) within
//! 1e-4 × max|logit|:
//!
//! - the full form (LigerGate / LigerAttention as `ai.ligerc` model-local
//!   functions: a `Scan` recurrence plus band-masked window attention), and
//! - the step form (`--onnx-form step`), driven token by token by
//!   `scripts/ort_step.py`, which feeds every `present_*` output back; its
//!   state inputs keep one size however many steps run (a kept softmax
//!   layer's KV cache grows by one token per step).
//!
//! Sequences are longer than the window (`--window 4` on the tiny model,
//! `--window 8` on SmolLM2), so the band mask and the sliding cache matter.

mod common;
use std::path::{Path, PathBuf};

use common::*;

const TINY: &str = "tiny_dynamo_op18_eager.onnx";

/// A linearized model: the source and the flags after `--pass linearize`.
struct Case {
    tag: String,
    model: PathBuf,
    flags: Vec<String>,
    dir: TempDir,
}

impl Case {
    fn new(tag: &str, model: PathBuf, flags: &[&str]) -> Case {
        Case {
            tag: tag.to_string(),
            model,
            flags: flags.iter().map(|s| s.to_string()).collect(),
            dir: tempdir(&format!("liger-onnx-{tag}")),
        }
    }

    fn tiny(tag: &str, flags: &[&str]) -> Case {
        Case::new(tag, fixture(TINY), flags)
    }

    fn pass_args(&self) -> Vec<&str> {
        let mut a = vec!["--pass", "linearize"];
        a.extend(self.flags.iter().map(String::as_str));
        a
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Exports the model in `form` (`full` or `step`).
    fn export(&self, form: &str) -> PathBuf {
        let out = self.file(&format!("{form}.onnx"));
        let mut a = vec![self.model.to_str().unwrap()];
        a.extend(self.pass_args());
        a.extend([
            "--emit",
            "onnx",
            "--onnx-form",
            form,
            "-o",
            out.to_str().unwrap(),
        ]);
        ligerc_ok(&a);
        out
    }

    /// ligerc's CPU runtime on `rows`.
    fn reference(&self, rows: &[Vec<i64>]) -> (Vec<usize>, Vec<f32>) {
        let out = self.file("ref.npy");
        let ids = ids_args(rows);
        let mut a = vec!["run", self.model.to_str().unwrap()];
        a.extend(self.pass_args());
        a.extend(ids.iter().map(String::as_str));
        a.extend(["--logits", out.to_str().unwrap()]);
        ligerc_ok(&a);
        read_npy(&out)
    }
}

fn ort_full(model: &Path, rows: &[Vec<i64>], out: &Path) -> (Vec<usize>, Vec<f32>) {
    let ids = ids_args(rows);
    let mut a: Vec<&str> = vec![model.to_str().unwrap()];
    a.extend(ids.iter().map(String::as_str));
    a.extend(["-o", out.to_str().unwrap()]);
    py("scripts/ort_logits.py", &a);
    read_npy(out)
}

/// Decodes `rows` step by step; returns the logits and the bytes of the state inputs of every step.
fn ort_step(model: &Path, rows: &[Vec<i64>], out: &Path) -> ((Vec<usize>, Vec<f32>), Vec<u64>) {
    let report = out.with_extension("json");
    let ids = ids_args(rows);
    let mut a: Vec<&str> = vec![model.to_str().unwrap()];
    a.extend(ids.iter().map(String::as_str));
    a.extend([
        "--report",
        report.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    py("scripts/ort_step.py", &a);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let bytes = r["state_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    (read_npy(out), bytes)
}

/// Asserts `got` is within 1e-4 × max|want| of `want`; returns max|diff| and max|want|.
fn assert_close(
    what: &str,
    got: &(Vec<usize>, Vec<f32>),
    want: &(Vec<usize>, Vec<f32>),
) -> (f32, f32) {
    assert_eq!(got.0, want.0, "{what}: shapes");
    let (d, m) = max_diff(&got.1, &want.1);
    assert!(m > 0.0 && d.is_finite(), "{what}: degenerate logits");
    assert!(d <= 1e-4 * m, "{what}: max|diff| {d} > 1e-4 × {m}");
    eprintln!(
        "{what}: max|diff| {d:.3e} (max|logit| {m:.3e}, relative {:.2e})",
        d / m
    );
    (d, m)
}

/// Full and step form against the CPU runtime; returns the step form's state bytes per step.
fn check_both_forms(case: &Case, rows: &[Vec<i64>]) -> Vec<u64> {
    let want = case.reference(rows);
    let full = ort_full(&case.export("full"), rows, &case.file("full.npy"));
    assert_close(&format!("{} full", case.tag), &full, &want);
    let (step, bytes) = ort_step(&case.export("step"), rows, &case.file("step.npy"));
    assert_close(&format!("{} step vs runtime", case.tag), &step, &want);
    assert_close(&format!("{} step vs full", case.tag), &step, &full);
    assert_eq!(bytes.len(), rows[0].len());
    bytes
}

/// A variant on the tiny model with 12-token rows (`--window 4` unless
/// `flags` set one); the step inputs keep one size.
fn tiny_variant(tag: &str, flags: &[&str]) {
    let mut all = if flags.contains(&"--window") {
        vec![]
    } else {
        vec!["--window", "4"]
    };
    all.extend(flags);
    let case = Case::tiny(tag, &all);
    let bytes = check_both_forms(&case, &random_ids(7, 2, 12, 256));
    assert!(
        bytes[0] > 0 && bytes.iter().all(|&b| b == bytes[0]),
        "{tag}: state bytes per step {bytes:?}"
    );
}

#[test]
fn gla_matches_the_cpu_runtime() {
    tiny_variant("gla", &["--variant", "gla"]);
}

#[test]
fn hgrn2_matches_the_cpu_runtime() {
    tiny_variant("hgrn2", &["--variant", "hgrn2"]);
}

#[test]
fn gsa_matches_the_cpu_runtime() {
    tiny_variant("gsa", &["--variant", "gsa", "--slots", "8"]);
}

#[test]
fn retention_matches_the_cpu_runtime() {
    tiny_variant("retention", &["--variant", "retention"]);
}

#[test]
fn linear_matches_the_cpu_runtime() {
    tiny_variant("linear", &["--variant", "linear"]);
}

#[test]
fn swa_only_matches_the_cpu_runtime() {
    tiny_variant("swa-only", &["--variant", "swa-only"]);
}

#[test]
fn a_window_of_zero_needs_no_window_cache() {
    tiny_variant("window0", &["--window", "0", "--mix", "0.3,0.7"]);
}

#[test]
fn hybrid_keeps_a_softmax_layer_with_a_growing_kv_cache() {
    let case = Case::tiny("hybrid", &["--window", "4", "--keep-softmax", "1"]);
    let rows = random_ids(8, 2, 12, 256);
    let bytes = check_both_forms(&case, &rows);
    // Layer 1's past_k / past_v grow by one [2 rows, 2 KV heads, 16] f32 token each per step.
    let per_token = 2 * 2 * 2 * 16 * 4;
    for (t, w) in bytes.windows(2).enumerate() {
        assert_eq!(w[1] - w[0], per_token, "step {t}: state bytes {bytes:?}");
    }
}

#[test]
fn other_importers_and_masks_export_too() {
    // opset 17 (legacy exporter, with an attention_mask input) and opset 23 graphs.
    for name in [
        "tiny_legacy_op17_eager_mask.onnx",
        "tiny_dynamo_op23_sdpa.onnx",
    ] {
        let case = Case::new(
            name.trim_end_matches(".onnx"),
            fixture(name),
            &["--window", "4", "--variant", "gla"],
        );
        check_both_forms(&case, &random_ids(9, 2, 10, 256));
    }
}

#[test]
fn lora_adapters_export_as_matmuls() {
    let case = Case::tiny(
        "lora",
        &[
            "--window",
            "4",
            "--pass",
            "lora",
            "--lora-alpha",
            "16",
            "--adapter",
            "ADAPTER",
        ],
    );
    // Non-zero B, so the branch changes the logits.
    let adapter = case.file("adapter_model.safetensors");
    let script = format!(
        "import numpy as np\nfrom safetensors.numpy import save_file\nrng = np.random.default_rng(0)\nt = {{}}\n\
         for l in range(2):\n    for p, o in (('q', 64), ('k', 32), ('v', 32)):\n        n = f'base_model.model.model.layers.{{l}}.self_attn.{{p}}_proj'\n        \
         t[n + '.lora_A.weight'] = rng.normal(0, 0.1, (8, 64)).astype(np.float32)\n        \
         t[n + '.lora_B.weight'] = rng.normal(0, 0.1, (o, 8)).astype(np.float32)\nsave_file(t, {:?})\n",
        adapter.to_str().unwrap()
    );
    let o = std::process::Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let case = Case {
        flags: case
            .flags
            .iter()
            .map(|f| {
                if f == "ADAPTER" {
                    adapter.to_str().unwrap().to_string()
                } else {
                    f.clone()
                }
            })
            .collect(),
        ..case
    };
    let rows = random_ids(10, 2, 9, 256);
    check_both_forms(&case, &rows);
    let plain = Case::tiny("lora-plain", &["--window", "4"]).reference(&rows);
    let (d, _) = max_diff(&case.reference(&rows).1, &plain.1);
    assert!(
        d > 1e-2,
        "the adapter should change the logits (max diff {d})"
    );
}

#[test]
fn liger_ops_are_model_local_functions() {
    let case = Case::tiny(
        "structure",
        &[
            "--window",
            "4",
            "--variant",
            "gsa",
            "--slots",
            "8",
            "--keep-softmax",
            "1",
        ],
    );
    let (full, step) = (case.export("full"), case.export("step"));
    let script = format!(
        r#"
import onnx
for path, form in (({full:?}, "full"), ({step:?}, "step")):
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    assert m.ir_version >= 10, m.ir_version
    assert {{(o.domain, o.version) for o in m.opset_import}} == {{("", 18), ("ai.ligerc", 1)}}, m.opset_import
    funcs = {{(f.domain, f.name, f.overload): f for f in m.functions}}
    att = "LigerAttention" if form == "full" else "LigerAttentionStep"
    key = ("ai.ligerc", att, "gsa_h4_kv2_d16_w4_mix0.5_0.5_m8")
    assert set(funcs) == {{key, ("ai.ligerc", "LigerGate", "gsa_kv2_d16_n16_m8")}}, list(funcs)
    f = funcs[key]
    assert [(o.domain, o.version) for o in f.opset_import] == [("", 18)]
    assert all(n.domain == "" for n in f.node)
    scans = [n for n in f.node if n.op_type == "Scan"]
    assert len(scans) == (1 if form == "full" else 0), [n.op_type for n in f.node]
    nodes = [n for n in m.graph.node if n.domain == "ai.ligerc"]
    assert [n.op_type for n in nodes] == ["LigerGate", att], [n.op_type for n in nodes]
    attrs = {{a.name: onnx.helper.get_attribute_value(a) for a in nodes[1].attribute}}
    assert attrs["variant"] == b"gsa" and attrs["slots"] == 8 and attrs["window"] == 4, attrs
    assert nodes[1].overload == key[2]
    ins = [i.name for i in m.graph.input]
    outs = [o.name for o in m.graph.output]
    if form == "full":
        assert ins == ["input_ids"] and outs == ["logits"], (ins, outs)
    else:
        assert ins == ["input_ids", "position", "state_k.0", "state_v.0", "window_k.0", "window_v.0", "past_k.1", "past_v.1"], ins
        assert outs == ["logits", "present_state_k.0", "present_state_v.0", "present_window_k.0", "present_window_v.0", "present_k.1", "present_v.1"], outs
        dims = lambda v: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
        shapes = {{v.name: dims(v) for v in list(m.graph.input) + list(m.graph.output)}}
        assert shapes["input_ids"] == ["batch", 1] and shapes["logits"] == ["batch", 1, 256], shapes
        assert shapes["state_k.0"] == ["batch", 2, 16, 8] and shapes["state_v.0"] == ["batch", 2, 8, 16], shapes
        assert shapes["window_k.0"] == ["batch", 2, 4, 16] and shapes["past_k.1"] == ["batch", 2, "past", 16], shapes
"#
    );
    let o = std::process::Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn step_form_refuses_softmax_attention_with_a_padding_mask() {
    let dir = tempdir("liger-onnx-refuse");
    let out = dir.join("step.onnx");
    let model = fixture("tiny_dynamo_op18_eager_mask.onnx");
    let o = ligerc(&[
        model.to_str().unwrap(),
        "--pass",
        "linearize",
        "--keep-softmax",
        "1",
        "--emit",
        "onnx",
        "--onnx-form",
        "step",
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("padding mask"), "{err}");
    assert!(!out.exists(), "no half-written output");
    // --onnx-form belongs to --emit onnx.
    let o = ligerc(&[model.to_str().unwrap(), "--onnx-form", "step"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn smollm2_gla_matches_in_both_forms() {
    let (gguf, _) = smollm2();
    let case = Case::new("smollm2-gla", gguf, &["--window", "8", "--variant", "gla"]);
    let bytes = check_both_forms(&case, &random_ids(12, 2, 20, 49152));
    assert!(
        bytes.iter().all(|&b| b == bytes[0]),
        "state bytes per step {bytes:?}"
    );
    for f in ["full.onnx", "step.onnx"] {
        let _ = std::fs::remove_file(case.file(f));
    }
}
