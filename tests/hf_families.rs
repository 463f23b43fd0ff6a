//! Llama-family Hugging Face checkpoints beyond SmolLM2, end to end: the tiny
//! random models of `tests/fixtures/hf/` (made by `scripts/make_hf_fixtures.py`,
//! see the README there) imported with `ligerc run DIR` and compared with the
//! logits transformers computes for them (`tests/golden/hf_fixtures.json`, CPU,
//! f32, eager attention).
//!
//! Families: `llama31` (rope_scaling llama3, 4.x-style config), `llama2` (no
//! GQA), `llama32_tied` (tied embeddings, no `lm_head.weight`), `qwen2` (q/k/v
//! bias, `layer_types`), `mistral` (`sliding_window: null`).
//!
//! Tolerance: over all 2 × 10 × 128 logits of a model, max |ours − golden| ≤
//! 1e-4 × max |golden| — both sides are f32 and differ only in summation
//! order (measured 2.9e-7 to 5.0e-7 relative). The fixtures make wrong
//! architecture visible far above that: rope scaling off moves llama31's
//! logits by 0.15 × max, q/k/v biases off moves qwen2's by 0.74 × max, norm
//! weights reset to 1 by ≥ 0.09 × max, and RoPE frequencies 1% off by
//! ≥ 0.006 × max (the script prints these).
//!
//! Each fixture's `--emit ir` is also checked for the structure its config
//! implies, and the importer's RoPE inverse frequencies against transformers'.

mod common;
use common::*;

use std::collections::HashMap;
use std::path::PathBuf;

use ligerc_frontends::hf_config::LlamaConfig;
use ligerc_frontends::llama::shape_from_config;
use ligerc_ir::RopeSpec;
use serde_json::Value;

/// The relative logits tolerance (see the module doc).
const REL_TOL: f32 = 1e-4;

fn golden() -> Value {
    let text = std::fs::read_to_string(root().join("tests/golden/hf_fixtures.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn fixture_dir(name: &str) -> PathBuf {
    root().join("tests/fixtures/hf").join(name)
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Runs the fixture through `ligerc run` and compares every logit with transformers'.
fn check_logits(name: &str) {
    let g = golden();
    let m = &g["models"][name];
    assert!(
        m.is_object(),
        "no golden for {name}: rerun scripts/make_hf_fixtures.py"
    );
    let rows: Vec<Vec<i64>> = m["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect();
    let want: Vec<f32> = m["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().flat_map(f64s))
        .map(|x| x as f32)
        .collect();
    let want_shape: Vec<usize> = m["logits_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(want_shape, vec![rows.len(), rows[0].len(), 128]);
    assert_eq!(want.len(), want_shape.iter().product::<usize>());

    let tmp = tempdir(&format!("hf-{name}"));
    let out = tmp.join("logits.npy");
    let dir = fixture_dir(name);
    let ids = ids_args(&rows);
    let mut args: Vec<&str> = vec!["run", dir.to_str().unwrap()];
    args.extend(ids.iter().map(String::as_str));
    args.extend(["--logits", out.to_str().unwrap()]);
    ligerc_ok(&args);
    let (shape, got) = read_npy(&out);
    assert_eq!(shape, want_shape, "{name}: logits shape");
    let (d, max) = max_diff(&got, &want);
    eprintln!(
        "{name}: max|diff| {d:.3e}, max|logit| {max:.4}, relative {:.3e}",
        d / max
    );
    assert!(
        d <= REL_TOL * max,
        "{name}: max|diff| {d} > {REL_TOL} × max|logit| {max}"
    );
}

/// One node of `--emit ir` text.
#[derive(Debug)]
struct IrNode {
    op: String,
    operands: Vec<String>,
    attrs: String,
}

/// The IR of a fixture: weight names by value id, and the op nodes in order.
struct Ir {
    weights: HashMap<String, String>,
    nodes: Vec<IrNode>,
    text: String,
}

impl Ir {
    fn emit(name: &str) -> Ir {
        let dir = fixture_dir(name);
        let out = ligerc_ok(&[dir.to_str().unwrap(), "--emit", "ir"]);
        let text = String::from_utf8(out.stdout).unwrap();
        let mut weights = HashMap::new();
        let mut nodes = Vec::new();
        for line in text.lines().map(str::trim) {
            let Some((id, rhs)) = line.split_once(" = ") else {
                continue;
            };
            if !id.starts_with('%') {
                continue;
            }
            if let Some(w) = rhs.strip_prefix("weight \"") {
                weights.insert(id.to_string(), w.split('"').next().unwrap().to_string());
            } else if let Some((op, rest)) = rhs.split_once('(') {
                let (args, rest) = rest.split_once(')').unwrap();
                let attrs = match rest.trim_start().strip_prefix('{') {
                    Some(a) => a.split_once('}').unwrap().0.to_string(),
                    None => String::new(),
                };
                nodes.push(IrNode {
                    op: op.to_string(),
                    operands: args.split(", ").map(str::to_string).collect(),
                    attrs,
                });
            }
        }
        Ir {
            weights,
            nodes,
            text,
        }
    }

    fn ops(&self, op: &str) -> Vec<&IrNode> {
        self.nodes.iter().filter(|n| n.op == op).collect()
    }

    /// The weight name an operand refers to ("" for a computed value).
    fn weight(&self, operand: &str) -> &str {
        self.weights.get(operand).map_or("", String::as_str)
    }
}

/// Structure every fixture shares, plus the per-family details passed in:
/// KV heads, the Rope attributes as printed (`{heads}` stands for the head
/// count: 4 on q, `kv_heads` on k), whether q/k/v carry a bias, and a tied head.
fn check_ir(name: &str, kv_heads: usize, rope_attrs: &str, qkv_bias: bool, tied: bool) {
    let ir = Ir::emit(name);
    let t = &ir.text;
    assert_eq!(ir.ops("Embedding").len(), 1, "{name}:\n{t}");
    assert_eq!(ir.ops("RmsNorm").len(), 5, "{name}:\n{t}");
    assert_eq!(ir.ops("SwiGlu").len(), 2, "{name}:\n{t}");
    for n in ir.ops("RmsNorm") {
        assert_eq!(n.attrs, "eps = 1e-5", "{name}: {n:?}");
    }

    let linears = ir.ops("Linear");
    assert_eq!(linears.len(), 14, "{name}: 7 Linear per layer\n{t}");
    for n in &linears {
        let w = ir.weight(&n.operands[1]);
        let proj = w
            .strip_suffix(".weight")
            .unwrap_or_else(|| panic!("{name}: {n:?}"));
        let is_qkv = ["q_proj", "k_proj", "v_proj"]
            .iter()
            .any(|p| proj.ends_with(&format!("self_attn.{p}")));
        if qkv_bias && is_qkv {
            assert_eq!(n.operands.len(), 3, "{name}: {proj} needs its bias: {n:?}");
            assert_eq!(ir.weight(&n.operands[2]), format!("{proj}.bias"), "{name}");
        } else {
            assert_eq!(n.operands.len(), 2, "{name}: {proj} has no bias: {n:?}");
        }
    }

    let ropes = ir.ops("Rope");
    assert_eq!(ropes.len(), 4, "{name}: Rope on q and k per layer\n{t}");
    for (i, n) in ropes.iter().enumerate() {
        let heads = if i % 2 == 0 { 4 } else { kv_heads };
        let want = rope_attrs.replace("{heads}", &heads.to_string());
        assert_eq!(n.attrs, want, "{name}: Rope {i}");
    }

    let attns = ir.ops("Attention");
    assert_eq!(attns.len(), 2, "{name}:\n{t}");
    for n in attns {
        assert_eq!(
            n.attrs,
            format!("causal = 1, head_dim = 16, heads = 4, kv_heads = {kv_heads}, scale = 0.25"),
            "{name}"
        );
    }

    let heads = ir.ops("LmHead");
    assert_eq!(heads.len(), 1, "{name}:\n{t}");
    let head_w = ir.weight(&heads[0].operands[1]);
    let want_head = if tied {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    assert_eq!(head_w, want_head, "{name}: LmHead weight");
    assert_eq!(
        ir.weights.values().any(|w| w == "lm_head.weight"),
        !tied,
        "{name}: lm_head.weight present iff untied"
    );
}

/// The importer's config reading and the IR's RoPE frequencies against
/// transformers' `inv_freq` buffer (f32).
fn check_inv_freq(name: &str) {
    let g = golden();
    let want = f64s(&g["models"][name]["rope_inv_freq"]);
    let cfg = LlamaConfig::from_file(&fixture_dir(name).join("config.json")).unwrap();
    let from_cfg = cfg.rope_inv_freq();
    let shape = shape_from_config(&cfg);
    let spec = RopeSpec {
        heads: shape.heads,
        head_dim: shape.head_dim,
        theta: shape.rope_theta,
        scaling: shape.rope_scaling.clone(),
    };
    let from_ir = spec.inv_freq();
    assert_eq!(want.len(), 8);
    for (i, &w) in want.iter().enumerate() {
        for (what, v) in [("hf_config", from_cfg[i]), ("RopeSpec", from_ir[i])] {
            assert!(
                (v - w).abs() <= 1e-6 * w,
                "{name}: {what} inv_freq[{i}] = {v}, transformers {w}"
            );
        }
    }
}

/// Rope attributes of a plain (unscaled) RoPE with base `theta`.
fn plain_rope(theta: &str) -> String {
    format!("head_dim = 16, heads = {{heads}}, theta = {theta}")
}

/// llama31's Rope: llama3 scaling, attributes printed sorted by key.
const LLAMA31_ROPE: &str = "factor = 8.0, head_dim = 16, heads = {heads}, high_freq_factor = 4.0, \
     low_freq_factor = 1.0, original_max_position = 64.0, scaling = \"llama3\", theta = 500000.0";

#[test]
fn llama31_logits() {
    check_logits("llama31");
}

#[test]
fn llama31_ir() {
    check_ir("llama31", 2, LLAMA31_ROPE, false, false);
    check_inv_freq("llama31");
}

#[test]
fn llama2_logits() {
    check_logits("llama2");
}

#[test]
fn llama2_ir() {
    check_ir("llama2", 4, &plain_rope("10000.0"), false, false);
    check_inv_freq("llama2");
}

#[test]
fn llama32_tied_logits() {
    check_logits("llama32_tied");
}

#[test]
fn llama32_tied_ir() {
    check_ir("llama32_tied", 2, &plain_rope("500000.0"), false, true);
    check_inv_freq("llama32_tied");
}

#[test]
fn qwen2_logits() {
    check_logits("qwen2");
}

#[test]
fn qwen2_ir() {
    check_ir("qwen2", 2, &plain_rope("1000000.0"), true, false);
    check_inv_freq("qwen2");
}

#[test]
fn mistral_logits() {
    check_logits("mistral");
}

#[test]
fn mistral_ir() {
    check_ir("mistral", 2, &plain_rope("10000.0"), false, false);
    check_inv_freq("mistral");
}

/// Every fixture directory has a golden entry and a test above, and the
/// README's 4.x/5.x split holds for the files as committed.
#[test]
fn fixtures_are_covered() {
    let g = golden();
    let mut dirs: Vec<String> = std::fs::read_dir(root().join("tests/fixtures/hf"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut golden_names: Vec<String> = g["models"].as_object().unwrap().keys().cloned().collect();
    golden_names.sort();
    assert_eq!(dirs, golden_names);
    assert_eq!(
        dirs,
        ["llama2", "llama31", "llama32_tied", "mistral", "qwen2"]
    );
    for name in &dirs {
        let text = std::fs::read_to_string(fixture_dir(name).join("config.json")).unwrap();
        let cfg: Value = serde_json::from_str(&text).unwrap();
        let v4 = g["models"][name]["config_style"] == "4.x";
        assert_eq!(cfg.get("rope_theta").is_some(), v4, "{name}: rope_theta");
        assert_eq!(
            cfg.get("rope_parameters").is_some(),
            !v4,
            "{name}: rope_parameters"
        );
        let size = std::fs::metadata(fixture_dir(name).join("model.safetensors"))
            .unwrap()
            .len();
        assert!(size < 1 << 20, "{name}: model.safetensors is {size} bytes");
    }
}
