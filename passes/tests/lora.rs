//! The `lora` and `merge-lora` passes and PEFT adapter files, on a small
//! random Llama built by the real importer and run by the CPU runtime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ligerc_frontends::ImportResult;
use ligerc_frontends::llama::{LlamaShape, WeightSource, build_llama};
use ligerc_ir::{Graph, Op, RopeScaling, TensorData};
use ligerc_passes::{
    AdapterError, InsertLora, LoraConfig, LoraTarget, PEFT_PREFIX, PassContext, PassError,
    PassManager, PassSpec, adapter_config, insert_lora, load_adapter, load_adapter_bytes,
    lora_a_init, lora_sites, make_pass, save_adapter, write_adapter,
};
use ligerc_runtime::{ExecState, Executor, Tensor};

const HIDDEN: usize = 16;
const INTERMEDIATE: usize = 24;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 4;
const VOCAB: usize = 40;
const LAYERS: usize = 2;

fn shape(qkv_bias: bool) -> LlamaShape {
    LlamaShape {
        vocab: VOCAB,
        hidden: HIDDEN,
        intermediate: INTERMEDIATE,
        layers: LAYERS,
        heads: HEADS,
        kv_heads: KV_HEADS,
        head_dim: HEAD_DIM,
        rms_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: RopeScaling::None,
        tied_embeddings: false,
        qkv_bias,
        o_bias: false,
        mlp_bias: false,
    }
}

/// A tiny deterministic generator for test data (not the pass's).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let u = (self.0 >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    fn tensor(&mut self, shape: &[usize], lo: f32, hi: f32) -> TensorData {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.uniform(lo, hi)).collect();
        TensorData::from_f32(shape.to_vec(), &v).unwrap()
    }
}

struct MemWeights {
    weights: HashMap<String, TensorData>,
    path: PathBuf,
}

impl WeightSource for MemWeights {
    fn take(&mut self, name: &str) -> ImportResult<Option<TensorData>> {
        Ok(self.weights.remove(name))
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// A random Llama: 2 layers, GQA, optionally with q/k/v biases (Qwen2-style).
fn llama(qkv_bias: bool) -> Graph {
    let s = shape(qkv_bias);
    let mut rng = Rng(42);
    let mut w = HashMap::new();
    let lin = |rng: &mut Rng, out: usize, inp: usize| {
        let b = 1.0 / (inp as f32).sqrt();
        rng.tensor(&[out, inp], -b, b)
    };
    w.insert(
        "model.embed_tokens.weight".to_string(),
        rng.tensor(&[VOCAB, HIDDEN], -1.0, 1.0),
    );
    let (q_w, kv_w) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            w.insert(
                format!("{p}.{norm}.weight"),
                rng.tensor(&[HIDDEN], 0.8, 1.2),
            );
        }
        for (name, out, inp) in [
            ("self_attn.q_proj", q_w, HIDDEN),
            ("self_attn.k_proj", kv_w, HIDDEN),
            ("self_attn.v_proj", kv_w, HIDDEN),
            ("self_attn.o_proj", HIDDEN, q_w),
            ("mlp.gate_proj", INTERMEDIATE, HIDDEN),
            ("mlp.up_proj", INTERMEDIATE, HIDDEN),
            ("mlp.down_proj", HIDDEN, INTERMEDIATE),
        ] {
            w.insert(format!("{p}.{name}.weight"), lin(&mut rng, out, inp));
            if qkv_bias
                && ["q_proj", "k_proj", "v_proj"]
                    .iter()
                    .any(|s| name.ends_with(s))
            {
                w.insert(format!("{p}.{name}.bias"), rng.tensor(&[out], -0.1, 0.1));
            }
        }
    }
    w.insert("model.norm.weight".into(), rng.tensor(&[HIDDEN], 0.8, 1.2));
    w.insert("lm_head.weight".into(), lin(&mut rng, VOCAB, HIDDEN));
    let mut src = MemWeights {
        weights: w,
        path: PathBuf::from("<memory>"),
    };
    build_llama("tiny-llama", &s, &mut src).unwrap()
}

fn logits(graph: &Graph) -> Vec<f32> {
    let exec = Executor::new(graph.clone()).unwrap();
    let ids = Tensor::i64(
        vec![2, 7],
        vec![1, 5, 9, 2, 33, 7, 0, 39, 12, 3, 3, 18, 25, 6],
    )
    .unwrap();
    let inputs = HashMap::from([("input_ids".to_string(), ids)]);
    let out = exec.run(&inputs, &mut ExecState::default()).unwrap();
    out[0].as_f32("logits").unwrap().to_vec()
}

/// Runs `--pass` specs through the pass manager (which verifies after each).
fn run_passes(graph: &mut Graph, specs: &[&str]) -> Result<PassContext, PassError> {
    let mut pm = PassManager::new();
    for s in specs {
        pm.add(make_pass(&s.parse::<PassSpec>()?)?);
    }
    let mut cx = PassContext::default();
    pm.run(graph, &mut cx, |_, _| {})?;
    Ok(cx)
}

fn count_ops(graph: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    graph
        .node_ids()
        .into_iter()
        .filter(|&id| graph.node(id).is_some_and(|n| pred(&n.op)))
        .count()
}

fn lora_weights(graph: &Graph) -> Vec<(String, TensorData)> {
    graph
        .weights
        .iter()
        .filter(|(k, _)| k.contains(".lora_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Gives every `lora_B` random values (as training would).
fn randomize_b(graph: &mut Graph, seed: u64) {
    let mut rng = Rng(seed);
    let names: Vec<String> = graph
        .weights
        .keys()
        .filter(|k| k.ends_with(".lora_B.weight"))
        .cloned()
        .collect();
    for name in names {
        let shape = graph.weights[&name].shape().to_vec();
        graph.weights.insert(name, rng.tensor(&shape, -0.2, 0.2));
    }
}

fn temp_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ligerc-lora-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn spec_keeps_comma_separated_targets_together() {
    let spec: PassSpec = "lora:targets=q,k,v,o,rank=4,alpha=16".parse().unwrap();
    assert_eq!(
        spec.options,
        vec![
            ("targets".to_string(), "q,k,v,o".to_string()),
            ("rank".to_string(), "4".to_string()),
            ("alpha".to_string(), "16".to_string()),
        ]
    );
    let pass = InsertLora::from_options(&spec.options).unwrap();
    assert_eq!(
        pass.config,
        LoraConfig {
            targets: vec![LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O],
            rank: 4,
            alpha: 16.0,
            seed: 0,
        }
    );
    assert_eq!(
        InsertLora::from_options(&[]).unwrap().config,
        LoraConfig::default()
    );
}

#[test]
fn fresh_adapter_leaves_logits_bit_identical() {
    for (qkv_bias, spec, adapted) in [
        (false, "lora", 3 * LAYERS),
        (true, "lora:targets=all,rank=3,alpha=5,seed=9", 7 * LAYERS),
    ] {
        let base = llama(qkv_bias);
        let mut g = base.clone();
        let cx = run_passes(&mut g, &[spec]).unwrap();
        assert_eq!(count_ops(&g, |op| matches!(op, Op::Lora { .. })), adapted);
        assert!(
            cx.notes[0].starts_with(&format!("lora: {adapted} projections adapted (rank ")),
            "{:?}",
            cx.notes
        );
        let want: Vec<u32> = logits(&base).iter().map(|v| v.to_bits()).collect();
        let got: Vec<u32> = logits(&g).iter().map(|v| v.to_bits()).collect();
        assert_eq!(want, got, "{spec}: a B = 0 adapter changed the logits");
    }
}

#[test]
fn adapter_weights_are_named_and_shaped_like_peft() {
    let mut g = llama(true);
    run_passes(&mut g, &["lora:targets=q,down,rank=4"]).unwrap();
    let a = &g.weights["model.layers.1.self_attn.q_proj.lora_A.weight"];
    let b = &g.weights["model.layers.1.self_attn.q_proj.lora_B.weight"];
    assert_eq!(
        (a.shape(), b.shape()),
        (&[4, HIDDEN][..], &[HEADS * HEAD_DIM, 4][..])
    );
    let a = &g.weights["model.layers.0.mlp.down_proj.lora_A.weight"];
    let b = &g.weights["model.layers.0.mlp.down_proj.lora_B.weight"];
    assert_eq!(
        (a.shape(), b.shape()),
        (&[4, INTERMEDIATE][..], &[HIDDEN, 4][..])
    );
    assert!(b.to_f32_vec().iter().all(|&v| v == 0.0));
    // The bias of an adapted q_proj moved to operand 4.
    let sites = lora_sites(&g).unwrap();
    assert_eq!(sites.len(), 2 * LAYERS);
    let q = sites
        .iter()
        .find(|s| s.module == "model.layers.0.self_attn.q_proj")
        .unwrap();
    let ops = g.operands(q.nodes[0]);
    assert_eq!(ops.len(), 5);
    assert!(matches!(
        &g.node(ops[4].node).unwrap().op,
        Op::Weight { name } if name == "model.layers.0.self_attn.q_proj.bias"
    ));
}

#[test]
fn merged_graph_matches_the_adapted_graph() {
    let base = llama(true);
    let mut g = base.clone();
    run_passes(&mut g, &["lora:targets=all,rank=4,alpha=16"]).unwrap();
    randomize_b(&mut g, 7);
    let adapted = logits(&g);
    let cx = run_passes(&mut g, &["merge-lora"]).unwrap();
    assert_eq!(
        cx.notes,
        vec![format!(
            "merge-lora: {} Lora nodes merged into their weights",
            7 * LAYERS
        )]
    );
    assert_eq!(count_ops(&g, |op| matches!(op, Op::Lora { .. })), 0);
    assert_eq!(count_ops(&g, |op| matches!(op, Op::Linear)), 7 * LAYERS);
    assert!(lora_weights(&g).is_empty());
    assert_eq!(g.weights.len(), base.weights.len());
    assert!(
        g.weights
            .contains_key("model.layers.0.self_attn.q_proj.weight")
    );
    let merged = logits(&g);
    let scale = adapted.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff =
        |x: &[f32], y: &[f32]| x.iter().zip(y).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let err = max_diff(&adapted, &merged) / scale;
    assert!(err <= 1e-5, "merged logits differ by {err:e} (relative)");
    // The adapters did change the model, so the comparison means something.
    assert!(max_diff(&adapted, &logits(&base)) / scale > 1e-2);
    // Merging again is a no-op.
    let cx = run_passes(&mut g, &["merge-lora"]).unwrap();
    assert_eq!(
        cx.notes,
        vec!["merge-lora: no Lora nodes to merge".to_string()]
    );
}

#[test]
fn a_init_is_peft_kaiming_uniform_and_reproducible() {
    let adapted = |spec: &str| {
        let mut g = llama(false);
        run_passes(&mut g, &[spec]).unwrap();
        g
    };
    let g = adapted("lora:targets=q,k,v,down,rank=8");
    for (name, t) in lora_weights(&g) {
        let v = t.to_f32_vec();
        if name.ends_with("lora_B.weight") {
            assert!(v.iter().all(|&x| x == 0.0), "{name}");
            continue;
        }
        let fan_in = t.shape()[1];
        let bound = 1.0 / (fan_in as f32).sqrt();
        assert!(
            v.iter().all(|x| x.abs() <= bound),
            "{name} exceeds ±{bound}"
        );
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(max > 0.8 * bound, "{name} uses too little of ±{bound}");
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.25 * bound, "{name} mean {mean}");
        assert!(v.iter().any(|&x| x > 0.0) && v.iter().any(|&x| x < 0.0));
    }
    // Same seed, same A; another seed, another A.
    assert_eq!(
        lora_weights(&g),
        lora_weights(&adapted("lora:targets=q,k,v,down,rank=8"))
    );
    let other = adapted("lora:targets=q,k,v,down,rank=8,seed=1");
    assert_ne!(lora_weights(&g), lora_weights(&other));
    // A projection's A does not depend on which other targets were chosen.
    let q_only = adapted("lora:targets=q,rank=8");
    let name = "model.layers.1.self_attn.q_proj.lora_A.weight";
    assert_eq!(q_only.weights[name], g.weights[name]);
    assert_eq!(
        g.weights[name].to_f32_vec(),
        lora_a_init("model.layers.1.self_attn.q_proj", 8, HIDDEN, 0)
    );
    // Projections get different streams.
    assert_ne!(
        g.weights["model.layers.0.self_attn.q_proj.lora_A.weight"],
        g.weights["model.layers.1.self_attn.q_proj.lora_A.weight"]
    );
}

#[test]
fn adapter_round_trips_through_peft_files() {
    let mut trained = llama(false);
    run_passes(&mut trained, &["lora:targets=q,v,o,rank=4,alpha=16,seed=3"]).unwrap();
    randomize_b(&mut trained, 11);
    let bytes = save_adapter(&trained).unwrap();
    let config = adapter_config(&trained, "tiny-llama").unwrap();
    let c: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(c["r"], 4);
    assert_eq!(c["lora_alpha"], 16);
    assert_eq!(c["peft_type"], "LORA");
    assert_eq!(c["task_type"], "CAUSAL_LM");
    assert_eq!(c["lora_dropout"], 0.0);
    assert_eq!(c["bias"], "none");
    assert_eq!(c["base_model_name_or_path"], "tiny-llama");
    assert_eq!(
        c["target_modules"],
        serde_json::json!(["o_proj", "q_proj", "v_proj"])
    );
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 2 * 3 * LAYERS);
    assert!(
        st.names()
            .contains(&"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
    );

    // In memory, with the config: another seed's A is overwritten, alpha comes from the file.
    let mut g = llama(false);
    run_passes(&mut g, &["lora:targets=q,v,o,rank=4,seed=99"]).unwrap();
    assert_ne!(lora_weights(&g), lora_weights(&trained));
    let report = load_adapter_bytes(
        &mut g,
        &bytes,
        Path::new("adapter_model.safetensors"),
        Some((&config, Path::new("adapter_config.json"))),
    )
    .unwrap();
    assert_eq!((report.tensors, report.alpha), (2 * 3 * LAYERS, Some(16.0)));
    assert_eq!(lora_weights(&g), lora_weights(&trained));
    assert_eq!(logits(&g), logits(&trained));

    // Through a directory and the pass's `adapter=` option.
    let dir = temp_dir("round-trip");
    write_adapter(&trained, &dir, "tiny-llama").unwrap();
    let mut g = llama(false);
    let spec = format!("lora:targets=q,v,o,rank=4,adapter={}", dir.display());
    let cx = run_passes(&mut g, &[&spec]).unwrap();
    assert!(
        cx.notes[1].contains("loaded 12 adapter tensors"),
        "{:?}",
        cx.notes
    );
    assert_eq!(lora_weights(&g), lora_weights(&trained));
    assert_eq!(logits(&g), logits(&trained));

    // Names without PEFT's prefix load too (here: the file alone, no config).
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let n = n.strip_prefix(PEFT_PREFIX).unwrap().to_string();
            (n, v.shape().to_vec(), v.data().to_vec())
        })
        .collect();
    let bare = serialize(&tensors);
    let file = dir.join("bare.safetensors");
    std::fs::write(&file, bare).unwrap();
    let mut g = llama(false);
    run_passes(&mut g, &["lora:targets=q,v,o,rank=4,alpha=16"]).unwrap();
    let report = load_adapter(&mut g, &file).unwrap();
    assert_eq!(
        report.alpha,
        Some(16.0),
        "the config next to the file still applies"
    );
    assert_eq!(lora_weights(&g), lora_weights(&trained));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn serialize(tensors: &[(String, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                .unwrap();
            (n.as_str(), v)
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn unknown_targets_and_options_are_usage_errors() {
    for spec in [
        "lora:targets=q,x",
        "lora:targets=",
        "lora:rank=0",
        "lora:alpha=inf",
        "lora:seed=-1",
        "lora:dropout=0.1",
        "merge-lora:rank=2",
    ] {
        let err = make_pass(&spec.parse::<PassSpec>().unwrap()).err();
        assert!(matches!(err, Some(PassError::Usage(_))), "{spec}: {err:?}");
    }
    let Err(PassError::Usage(msg)) = make_pass(&"lora:targets=q,qq".parse().unwrap()) else {
        panic!("expected a usage error");
    };
    assert!(
        msg.contains("unknown target `qq`") && msg.contains("gate"),
        "{msg}"
    );
}

#[test]
fn no_matching_projection_is_an_error_naming_the_targets() {
    let mut g = llama(false);
    run_passes(&mut g, &["lora:targets=q,k"]).unwrap();
    // Everything matching q and k is already adapted.
    let before = g.clone();
    let err = run_passes(&mut g, &["lora:targets=k,q"]).unwrap_err();
    let PassError::Failed { pass, message } = &err else {
        panic!("expected Failed, got {err:?}");
    };
    assert_eq!(pass, "lora");
    assert!(message.contains("targets q,k"), "{message}");
    assert!(message.contains("self_attn.k_proj.weight"), "{message}");
    assert!(message.contains("already has 4 Lora nodes"), "{message}");
    assert_eq!(lora_weights(&g), lora_weights(&before));

    // A graph with no Llama names at all.
    let mut g = Graph::new("plain");
    let x = g.add_input(
        "x",
        ligerc_ir::TensorType::fixed(ligerc_ir::DType::F32, &[2, 3]),
    );
    let w = g.add_weight(
        "proj.weight",
        TensorData::from_f32(vec![4, 3], &[0.5; 12]).unwrap(),
    );
    let y = g.add(
        Op::Linear,
        &[x, w],
        ligerc_ir::TensorType::fixed(ligerc_ir::DType::F32, &[2, 4]),
    );
    g.add_output("y", y);
    let err = insert_lora(&mut g, &LoraConfig::default()).unwrap_err();
    assert!(
        matches!(&err, PassError::Failed { message, .. } if message.contains("q,k,v")),
        "{err:?}"
    );
}

#[test]
fn mismatched_adapters_are_refused_and_change_nothing() {
    let mut trained = llama(false);
    run_passes(&mut trained, &["lora:rank=4"]).unwrap();
    randomize_b(&mut trained, 5);
    let st_bytes = save_adapter(&trained).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let bad = "base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight";
    let entry = tensors.iter_mut().find(|(n, _, _)| n == bad).unwrap();
    entry.1 = vec![KV_HEADS * HEAD_DIM / 2, 8];
    let bad_bytes = serialize(&tensors);

    let mut g = llama(false);
    run_passes(&mut g, &["lora:rank=4"]).unwrap();
    let before = lora_weights(&g);
    let origin = Path::new("adapter_model.safetensors");
    let err = load_adapter_bytes(&mut g, &bad_bytes, origin, None).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AdapterError::Tensor { .. }), "{msg}");
    assert!(
        msg.contains(bad) && msg.contains("expected [8, 4]"),
        "{msg}"
    );
    assert_eq!(
        lora_weights(&g),
        before,
        "a refused adapter must change nothing"
    );

    // Rank mismatch: a rank-8 graph cannot take a rank-4 adapter.
    let mut g8 = llama(false);
    run_passes(&mut g8, &["lora"]).unwrap();
    let msg = load_adapter_bytes(&mut g8, &st_bytes, origin, None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("expected [8, 16]") || msg.contains("expected [16, 8]"),
        "{msg}"
    );
    let config = adapter_config(&trained, "tiny").unwrap();
    let msg = load_adapter_bytes(
        &mut g8,
        &st_bytes,
        origin,
        Some((&config, Path::new("adapter_config.json"))),
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("`r` is 4") && msg.contains("rank 8"), "{msg}");

    // Tensors for projections the graph does not adapt, and missing ones.
    let mut q_only = llama(false);
    run_passes(&mut q_only, &["lora:targets=q,rank=4"]).unwrap();
    let msg = load_adapter_bytes(&mut q_only, &st_bytes, origin, None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("k_proj.lora_A.weight") && msg.contains("matches no LoRA adapter"),
        "{msg}"
    );
    let mut qkvo = llama(false);
    run_passes(&mut qkvo, &["lora:targets=q,k,v,o,rank=4"]).unwrap();
    let msg = load_adapter_bytes(&mut qkvo, &st_bytes, origin, None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("o_proj.lora_A.weight") && msg.contains("is missing"),
        "{msg}"
    );

    // Not safetensors at all, and a missing file, through the pass.
    let msg = load_adapter_bytes(&mut g, b"nonsense", origin, None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not a valid safetensors file"), "{msg}");
    let mut g = llama(false);
    let err = run_passes(&mut g, &["lora:adapter=/nonexistent/adapter"]).unwrap_err();
    assert!(
        matches!(&err, PassError::Failed { pass, message } if pass == "lora" && message.contains("/nonexistent/adapter")),
        "{err:?}"
    );
}

#[test]
fn adapter_config_options_the_graph_cannot_hold_are_refused() {
    let mut g = llama(false);
    run_passes(&mut g, &["lora:rank=4"]).unwrap();
    let bytes = save_adapter(&g).unwrap();
    let origin = Path::new("adapter_model.safetensors");
    let cfg = Path::new("adapter_config.json");
    for (config, key) in [
        (r#"{"r": 4, "use_dora": true}"#, "use_dora"),
        (r#"{"r": 4, "rank_pattern": {"q_proj": 8}}"#, "rank_pattern"),
        (r#"{"peft_type": "IA3"}"#, "peft_type"),
    ] {
        let err = load_adapter_bytes(&mut g, &bytes, origin, Some((config, cfg))).unwrap_err();
        assert!(
            matches!(&err, AdapterError::Config { key: k, .. } if k == key),
            "{config}: {err}"
        );
    }
    // rsLoRA's alpha/√r becomes alpha·√r / r.
    let report = load_adapter_bytes(
        &mut g,
        &bytes,
        origin,
        Some((r#"{"r": 4, "lora_alpha": 8, "use_rslora": true}"#, cfg)),
    )
    .unwrap();
    assert_eq!(report.alpha, Some(16.0));
    assert!(
        lora_sites(&g)
            .unwrap()
            .iter()
            .all(|s| matches!(g.node(s.nodes[0]).unwrap().op, Op::Lora { alpha } if alpha == 16.0))
    );
}

/// The real SmolLM2-135M checkpoint, when `models/` has it (it is not in git).
#[test]
fn smollm2_fresh_adapter_is_exact_and_merge_agrees() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct-hf");
    if !dir.join("model.safetensors").is_file() {
        eprintln!("skipped: {} is absent", dir.display());
        return;
    }
    let base = ligerc_frontends::llama::import_hf_dir(&dir).unwrap();
    let mut g = base.clone();
    run_passes(&mut g, &["lora:targets=all"]).unwrap();
    let want: Vec<u32> = logits(&base).iter().map(|v| v.to_bits()).collect();
    let adapted_logits = logits(&g);
    let got: Vec<u32> = adapted_logits.iter().map(|v| v.to_bits()).collect();
    assert!(want == got, "a B = 0 adapter changed SmolLM2's logits");
    randomize_b(&mut g, 3);
    let adapted = logits(&g);
    run_passes(&mut g, &["merge-lora"]).unwrap();
    let merged = logits(&g);
    let scale = adapted.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = adapted
        .iter()
        .zip(&merged)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale;
    let moved = adapted
        .iter()
        .zip(&adapted_logits)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale;
    eprintln!("smollm2: merged vs adapted {err:e}, adapter effect {moved:e}");
    assert!(err <= 1e-5, "merged logits differ by {err:e} (relative)");
}
