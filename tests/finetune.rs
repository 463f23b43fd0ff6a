//! `ligerc finetune` on the tiny fixture model, CPU: the whole training graph
//! against finite differences, held-out loss going down, kill -9 and
//! `--resume` giving the identical curve, non-finite updates skipped and
//! bounded, the PEFT adapter and `--merge` agreeing, and usage errors.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, ligerc, ligerc_ok, py, tempdir};
use ligerc::ir::TensorData;
use ligerc::passes::autodiff::{LOSS_SCALE, TARGETS, is_lora_weight, training_graph};
use ligerc::passes::{PassContext, PassManager, make_pass};
use ligerc::runtime::{ExecState, Executor, Tensor};

const MODEL: &str = "tiny_dynamo_op18_sdpa.onnx";
const TEXT: &str = "tests/fixtures/text/shakespeare_sample.txt";

fn root_path(rel: &str) -> PathBuf {
    common::root().join(rel)
}

/// The inputs of a training graph: `ids` and `targets` as `[batch, len]`, and the loss scale.
fn training_inputs(
    (batch, len): (usize, usize),
    ids: Vec<i64>,
    targets: Vec<i64>,
    loss_scale: f32,
) -> HashMap<String, Tensor> {
    let mut inputs = HashMap::new();
    inputs.insert(
        "input_ids".to_string(),
        Tensor::i64(vec![batch, len], ids).unwrap(),
    );
    inputs.insert(
        TARGETS.to_string(),
        Tensor::i64(vec![batch, len], targets).unwrap(),
    );
    inputs.insert(
        LOSS_SCALE.to_string(),
        Tensor::f32(vec![], vec![loss_scale]).unwrap(),
    );
    inputs
}

/// The tiny model, linearized (GLA) with LoRA on every projection.
fn adapted_graph() -> ligerc::ir::Graph {
    let mut model = ligerc::load_model(&fixture(MODEL)).unwrap();
    let mut pm = PassManager::new();
    for p in ["linearize", "lora:targets=q,k,v,o,gate,up,down"] {
        pm.add(make_pass(&p.parse().unwrap()).unwrap());
    }
    pm.run(&mut model.graph, &mut PassContext::default(), |_, _| {})
        .unwrap();
    model.graph
}

struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Directional derivatives of the mean loss along random directions and along
/// the gradient itself, by central differences of the loss-only graph, against
/// `⟨grad, d⟩` from the training graph — the whole backward graph at once:
/// fan-out sums, residual adds, the gate path, LoRA on every projection.
/// f32 losses of ≈5.5 carry ≈5e-7 absolute rounding; with a step of 1e-2 in
/// parameter norm the difference quotient is good to ≈1e-4 of |grad| plus an
/// O(h²) curvature term, so 2% of |grad| is a tight bound.
#[test]
fn training_graph_gradients_match_directional_finite_differences() {
    let mut graph = adapted_graph();
    let mut rng = SplitMix(7);
    // Non-zero B so that every A has a gradient too.
    let names: Vec<String> = graph
        .weights
        .keys()
        .filter(|n| is_lora_weight(n))
        .cloned()
        .collect();
    for n in &names {
        if n.ends_with("lora_B.weight") {
            let shape = graph.weights[n].shape().to_vec();
            let vals: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|_| 0.05 * rng.next())
                .collect();
            graph
                .weights
                .insert(n.clone(), TensorData::from_f32(shape, &vals).unwrap());
        }
    }
    let train = training_graph(&graph, &is_lora_weight, true).unwrap();
    let eval = training_graph(&graph, &is_lora_weight, false).unwrap();
    let (batch, len) = (2usize, 24usize);
    let ids: Vec<i64> = (0..batch * len)
        .map(|i| ((i * 37 + 11) % 256) as i64)
        .collect();
    let mut targets: Vec<i64> = (0..batch * len)
        .map(|i| ((i * 53 + 5) % 256) as i64)
        .collect();
    targets[3] = -100;
    let counted = (batch * len - 1) as f32;
    let inputs = training_inputs((batch, len), ids, targets, 1.0 / counted);
    let out = Executor::new(train.graph)
        .unwrap()
        .run(&inputs, &mut ExecState::default())
        .unwrap();
    let grads: Vec<Vec<f32>> = out[2..]
        .iter()
        .map(|t| t.as_f32("g").unwrap().to_vec())
        .collect();
    assert_eq!(grads.len(), train.trainable.len());
    let mut eval_exec = Executor::new(eval.graph).unwrap();
    let base: Vec<Vec<f32>> = train
        .trainable
        .iter()
        .map(|n| eval_exec.weight(n).unwrap().as_f32("w").unwrap().to_vec())
        .collect();
    let mut loss_at = |dir: &[Vec<f32>], h: f32| -> f64 {
        for ((n, b), d) in train.trainable.iter().zip(&base).zip(dir) {
            let v: Vec<f32> = b.iter().zip(d).map(|(x, y)| x + h * y).collect();
            let shape = eval_exec.weight(n).unwrap().shape.clone();
            eval_exec
                .set_weight(n, Tensor::f32(shape, v).unwrap())
                .unwrap();
        }
        let o = eval_exec.run(&inputs, &mut ExecState::default()).unwrap();
        f64::from(o[0].as_f32("l").unwrap()[0]) / f64::from(counted)
    };
    let gnorm = grads
        .iter()
        .flatten()
        .map(|g| f64::from(*g).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(gnorm > 1e-3, "gradient norm {gnorm} too small to test");
    let mut dirs: Vec<Vec<Vec<f32>>> = (0..3)
        .map(|_| {
            grads
                .iter()
                .map(|g| g.iter().map(|_| rng.next()).collect())
                .collect()
        })
        .collect();
    dirs.push(grads.clone());
    for (k, dir) in dirs.iter().enumerate() {
        let norm = dir
            .iter()
            .flatten()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt();
        let unit: Vec<Vec<f32>> = dir
            .iter()
            .map(|d| d.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
            .collect();
        let want: f64 = grads
            .iter()
            .flatten()
            .zip(unit.iter().flatten())
            .map(|(g, d)| f64::from(*g) * f64::from(*d))
            .sum();
        let h = 1e-2f32;
        let fd = (loss_at(&unit, h) - loss_at(&unit, -h)) / (2.0 * f64::from(h));
        let err = (fd - want).abs() / gnorm;
        eprintln!(
            "direction {k}: analytic {want:.6e}, finite difference {fd:.6e}, error {err:.2e} of |grad|"
        );
        assert!(
            err < 2e-2,
            "direction {k}: analytic {want} vs finite difference {fd}"
        );
    }
}

fn heldout(metrics: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_u64()?, v.get("heldout_loss")?.as_f64()?)))
        .collect()
}

/// `(step, loss, grad_norm)` of every update line, as their JSON text (bit-exact).
fn curve(metrics: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("loss").is_some())
        .map(|v| {
            (
                v["step"].to_string(),
                v["loss"].to_string(),
                v["grad_norm"].to_string(),
            )
        })
        .collect()
}

fn train_args<'a>(out: &'a str, steps: &'a str, extra: &[&'a str]) -> Vec<String> {
    let model = fixture(MODEL);
    let mut a: Vec<String> = vec![
        "finetune".into(),
        model.display().to_string(),
        "--pass".into(),
        "linearize".into(),
        "--pass".into(),
        "lora".into(),
        "--lora-targets".into(),
        "q,k,v,o,gate,up,down".into(),
        "--lora-rank".into(),
        "16".into(),
        "--tokenizer".into(),
        "bytes".into(),
        "--data".into(),
        root_path(TEXT).display().to_string(),
        "--seq-len".into(),
        "64".into(),
        "--batch".into(),
        "4".into(),
        "--accum".into(),
        "1".into(),
        "--schedule".into(),
        "cosine".into(),
        "--weight-decay".into(),
        "0".into(),
        "--lr".into(),
        "1e-2".into(),
        "--steps".into(),
        steps.into(),
        "-o".into(),
        out.into(),
    ];
    // A flag in `extra` replaces the default of the same name.
    for pair in extra.chunks(2) {
        match a.iter().position(|x| x == pair[0]) {
            Some(i) if pair.len() == 2 && pair[1].parse::<f64>().is_ok() => {
                a[i + 1] = pair[1].to_string()
            }
            _ => a.extend(pair.iter().map(|s| s.to_string())),
        }
    }
    a
}

fn run_ok(args: &[String]) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ligerc_ok(&refs);
}

/// A few hundred updates lower the held-out loss of the (random-weight, byte
/// vocabulary) tiny model by a stated margin: at least 0.25 nats below its
/// value before training (measured: 5.55 → 5.17). The adapter is PEFT's, and
/// the merged ONNX model gives the adapted model's logits.
#[test]
fn finetuning_lowers_heldout_loss_and_writes_a_peft_adapter() {
    let dir = tempdir("ft-loss");
    let out = dir.join("run");
    let out_s = out.display().to_string();
    run_ok(&train_args(
        &out_s,
        "300",
        &["--eval-every", "100", "--save-every", "100", "--merge"],
    ));
    let held = heldout(&out.join("metrics.jsonl"));
    let (first, last) = (held.first().unwrap(), held.last().unwrap());
    assert_eq!(
        (first.0, last.0),
        (0, 300),
        "held-out evaluations at {held:?}"
    );
    eprintln!("held-out loss {:.4} → {:.4}", first.1, last.1);
    assert!(
        last.1 < first.1 - 0.25,
        "held-out loss {} → {}",
        first.1,
        last.1
    );
    for f in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "loss_curve.svg",
        "summary.json",
        "merged/model.onnx",
        "merged/model.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let svg = std::fs::read_to_string(out.join("loss_curve.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["r"], 16);
    assert_eq!(config["peft_type"], "LORA");
    let bytes = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names = st.names();
    assert_eq!(names.len(), 28);
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("base_model.model.model.layers.") && n.contains(".lora_")),
        "{names:?}"
    );
    // The adapter loaded back onto the model and the merged export agree.
    let model = fixture(MODEL).display().to_string();
    let (a, m) = (dir.join("adapter.npy"), dir.join("merged.npy"));
    ligerc_ok(&[
        "run",
        &model,
        "--pass",
        "linearize",
        "--pass",
        "lora",
        "--lora-targets",
        "q,k,v,o,gate,up,down",
        "--lora-rank",
        "16",
        "--adapter",
        &out_s,
        "--ids",
        "5,17,3,99,42,7",
        "--logits",
        &a.display().to_string(),
    ]);
    let merged = out.join("merged/model.onnx").display().to_string();
    py(
        "scripts/ort_logits.py",
        &[
            &merged,
            "--ids",
            "5,17,3,99,42,7",
            "-o",
            &m.display().to_string(),
        ],
    );
    let (x, y) = (common::read_npy(&a).1, common::read_npy(&m).1);
    let scale = x.iter().fold(0.0f32, |s, v| s.max(v.abs()));
    let worst = x
        .iter()
        .zip(&y)
        .fold(0.0f32, |s, (p, q)| s.max((p - q).abs()));
    // onnxruntime on the merged export vs ligerc with the adapter: f32 with a
    // different summation order (merged W vs W plus the LoRA branch).
    assert!(
        worst <= 1e-4 * scale,
        "merged logits differ by {worst} (scale {scale})"
    );
}

/// kill -9 in the middle of a run, then `--resume`: every update's loss and
/// gradient norm, and every held-out loss, equal the uninterrupted run's bit
/// for bit.
#[test]
fn kill_and_resume_gives_the_identical_curve() {
    let dir = tempdir("ft-resume");
    let (full, killed) = (dir.join("full"), dir.join("killed"));
    let extra = [
        "--eval-every",
        "15",
        "--save-every",
        "10",
        "--seq-len",
        "96",
    ];
    run_ok(&train_args(&full.display().to_string(), "80", &extra));
    let args = train_args(&killed.display().to_string(), "80", &extra);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ligerc"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = killed.join("checkpoint/state.json");
    let start = Instant::now();
    loop {
        let step = std::fs::read_to_string(&state)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["step"].as_u64());
        if step.is_some_and(|s| s >= 20) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the run finished before it could be killed"
    );
    let mut resumed = args.clone();
    resumed.push("--resume".into());
    run_ok(&resumed);
    let (a, b) = (
        curve(&full.join("metrics.jsonl")),
        curve(&killed.join("metrics.jsonl")),
    );
    assert_eq!(a.len(), 80);
    assert_eq!(a, b, "the resumed curve differs");
    assert_eq!(
        heldout(&full.join("metrics.jsonl")),
        heldout(&killed.join("metrics.jsonl"))
    );
    let adapter = |d: &Path| std::fs::read(d.join("adapter_model.safetensors")).unwrap();
    assert_eq!(adapter(&full), adapter(&killed), "final adapters differ");
}

/// The tiny model with token 122 (`z`)'s embedding row set to NaN: every
/// sequence holding a `z` gives a non-finite loss. Those updates are skipped
/// and counted, the run goes on, and no checkpoint or adapter holds a NaN;
/// with a bound of zero skipped updates the run stops with exit code 2 and
/// writes no adapter.
#[test]
fn non_finite_updates_are_skipped_counted_and_bounded() {
    let dir = tempdir("ft-nan");
    let model = dir.join("nan.onnx");
    py(
        "tests/finetune_nan_model.py",
        &[
            &fixture(MODEL).display().to_string(),
            &model.display().to_string(),
            "122",
        ],
    );
    let with = |out: &Path, bound: &str| -> Vec<String> {
        let mut a = train_args(
            &out.display().to_string(),
            "30",
            &["--max-bad-steps", bound, "--no-check-finite"],
        );
        a[1] = model.display().to_string();
        a
    };
    let ok = dir.join("ok");
    run_ok(&with(&ok, "1000"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ok.join("summary.json")).unwrap()).unwrap();
    let skipped = summary["skipped_updates"].as_u64().unwrap();
    assert!(skipped > 0 && skipped < 30, "skipped {skipped} of 30");
    let bytes = std::fs::read(ok.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, view) in st.tensors() {
        assert!(
            view.data()
                .chunks_exact(4)
                .all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()),
            "{name} holds a non-finite value"
        );
    }
    let stop = dir.join("stop");
    let args = with(&stop, "0");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ligerc(&refs);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("non-finite"));
    assert!(!stop.join("adapter_model.safetensors").exists());
}

/// Usage errors: exit 2, a message naming the problem, nothing written.
#[test]
fn finetune_usage_errors() {
    let dir = tempdir("ft-usage");
    let model = fixture(MODEL).display().to_string();
    let text = root_path(TEXT).display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "finetune",
                &model,
                "--pass",
                "linearize",
                "--tokenizer",
                "bytes",
                "--data",
                &text,
                "-o",
            ]
            .into_iter()
            .map(String::from)
            .chain([dir.join("a").display().to_string()])
            .collect(),
            "no trainable weights",
        ),
        (
            train_args(
                &dir.join("b").display().to_string(),
                "5",
                &["--betas", "0.9"],
            ),
            "--betas",
        ),
        (
            {
                let mut a = train_args(&dir.join("c").display().to_string(), "5", &[]);
                a[13] = dir.join("missing.txt").display().to_string();
                a
            },
            "no such file",
        ),
        (
            {
                let mut a = train_args(&dir.join("d").display().to_string(), "5", &[]);
                a[11] = "model".into();
                a
            },
            "no tokenizer",
        ),
    ];
    for (args, want) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ligerc(&refs);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: expected `{want}` in: {err}");
    }
    // A finished run is not overwritten; --resume with other settings or other frozen
    // weights (bf16-rounded instead of f32) is refused.
    let out = dir.join("e").display().to_string();
    run_ok(&train_args(&out, "3", &[]));
    for (extra, want) in [
        (vec![], "already holds"),
        (vec!["--lr", "5e-3", "--resume"], "other settings"),
        (vec!["--frozen-dtype", "bf16", "--resume"], "frozen=Bf16"),
    ] {
        let args = train_args(&out, "3", &extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = ligerc(&refs);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(want),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// The training graph of the linearized Llama-3.1 fixture (GQA, llama3 RoPE
/// scaling, LoRA r 8 on q/k/v) against PyTorch autograd through an
/// independent PyTorch Liger-GLA (`scripts/liger_torch.py golden`, float64,
/// upstream's per-query-head states, PEFT LoRA): the mean loss and every LoRA
/// gradient for 2 × 80 tokens (longer than the 65-key window), one target
/// ignored. Ours runs in f32: 1e-4 of the largest gradient leaves an order of
/// magnitude over f32 rounding through two layers.
#[test]
fn training_graph_matches_pytorch_autograd() {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root_path("tests/golden/finetune_grads.json")).unwrap(),
    )
    .unwrap();
    let mut model = ligerc::load_model(&root_path(golden["model"].as_str().unwrap())).unwrap();
    let mut pm = PassManager::new();
    for p in ["linearize", "lora"] {
        pm.add(make_pass(&p.parse().unwrap()).unwrap());
    }
    pm.run(&mut model.graph, &mut PassContext::default(), |_, _| {})
        .unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    for (name, values) in golden["lora"].as_object().unwrap() {
        let shape = model.graph.weights[name].shape().to_vec();
        let data = TensorData::from_f32(shape, &floats(values)).unwrap();
        model.graph.weights.insert(name.clone(), data);
    }
    let train = training_graph(&model.graph, &is_lora_weight, true).unwrap();
    let rows = |key: &str| -> Vec<i64> {
        golden[key]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
            .collect()
    };
    let (ids, targets) = (rows("ids"), rows("targets"));
    let (batch, len) = (2, ids.len() / 2);
    let counted = targets.iter().filter(|&&t| t >= 0).count() as f32;
    let inputs = training_inputs((batch, len), ids, targets, 1.0 / counted);
    let out = Executor::new(train.graph)
        .unwrap()
        .run(&inputs, &mut ExecState::default())
        .unwrap();
    let loss = f64::from(out[0].as_f32("loss").unwrap()[0]) / f64::from(counted);
    let want_loss = golden["loss"].as_f64().unwrap();
    assert!(
        (loss - want_loss).abs() <= 1e-5 * want_loss,
        "loss {loss} vs PyTorch {want_loss}"
    );
    let grads = golden["grads"].as_object().unwrap();
    assert_eq!(grads.len(), train.trainable.len());
    let scale = grads
        .values()
        .flat_map(&floats)
        .fold(0.0f32, |m, x| m.max(x.abs()));
    let mut worst = 0.0f32;
    for (name, got) in train.trainable.iter().zip(&out[2..]) {
        let want = floats(&grads[name]);
        let got = got.as_f32("grad").unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        let err = got
            .iter()
            .zip(&want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= 1e-4 * scale,
            "{name}: off by {err} (largest gradient {scale})"
        );
        worst = worst.max(err);
    }
    eprintln!(
        "loss {loss:.6} vs PyTorch {want_loss:.6}; worst gradient error {:.2e} of the largest",
        worst / scale
    );
}

/// Activation checkpointing (the default): the backward sweep recomputes each
/// layer's activations from the residual stream right before that layer's
/// backward ops. The gradients are bit-identical to keeping every activation,
/// and fewer activation bytes are alive at the peak.
#[test]
fn recomputation_gives_identical_gradients_with_less_memory() {
    use ligerc::passes::autodiff::{AutodiffOptions, training_graph_with};
    let graph = adapted_graph();
    let (batch, len) = (2usize, 48usize);
    let ids: Vec<i64> = (0..batch * len)
        .map(|i| ((i * 29 + 3) % 256) as i64)
        .collect();
    let targets: Vec<i64> = (0..batch * len)
        .map(|i| ((i * 31 + 7) % 256) as i64)
        .collect();
    let inputs = training_inputs((batch, len), ids, targets, 0.01);
    let run = |recompute: bool| {
        let t = training_graph_with(&graph, &is_lora_weight, true, AutodiffOptions { recompute })
            .unwrap();
        let exec = Executor::new(t.graph).unwrap();
        let out = exec.run(&inputs, &mut ExecState::default()).unwrap();
        (out, exec.peak_activation_bytes())
    };
    let (kept, kept_peak) = run(false);
    let (recomputed, recomputed_peak) = run(true);
    assert_eq!(
        kept, recomputed,
        "recomputation changed the loss or a gradient"
    );
    eprintln!("peak activation bytes: {kept_peak} kept, {recomputed_peak} recomputed");
    assert!(
        recomputed_peak < kept_peak,
        "{recomputed_peak} ≥ {kept_peak}"
    );
}

/// The first update's gradients (`--dump-grads`, `--clip 0`) of a one-step run, by tensor.
fn first_grads(dir: &Path, tag: &str, extra: &[&str]) -> (HashMap<String, Vec<f64>>, String) {
    let (out, dump) = (dir.join(tag), dir.join(format!("{tag}.json")));
    let (out_s, dump_s) = (out.display().to_string(), dump.display().to_string());
    let mut flags = vec!["--clip", "0", "--eval-every", "0", "--dump-grads", &dump_s];
    flags.extend_from_slice(extra);
    let args = train_args(&out_s, "1", &flags);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let res = ligerc_ok(&refs);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dump).unwrap()).unwrap();
    let grads = json
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let values = v["values"].as_array().unwrap();
            (
                k.clone(),
                values.iter().map(|x| x.as_f64().unwrap()).collect(),
            )
        })
        .collect();
    (grads, String::from_utf8_lossy(&res.stderr).into_owned())
}

/// `--frozen-dtype bf16` on the CPU computes with the frozen projection weights rounded to
/// bf16, as the GPU stores them: the 14 projections of the 2-layer fixture and its (untied)
/// LM head are rounded, and the first update's gradients move by a bf16-sized amount — more than 1e-4 of
/// the largest entry in some tensor (f32 reordering alone would stay near 1e-7), less than
/// 5e-2 in every tensor (8-bit mantissas on the weights, 2^-9 relative each, through a
/// 2-layer chain: the GPU check's bf16 bound on this fixture). The CPU default stays f32.
#[test]
fn frozen_bf16_on_cpu_rounds_the_projection_weights() {
    let dir = tempdir("ft-frozen");
    let (default, _) = first_grads(&dir, "default", &[]);
    let (f32_run, _) = first_grads(&dir, "f32", &["--frozen-dtype", "f32"]);
    let (bf16_run, log) = first_grads(&dir, "bf16", &["--frozen-dtype", "bf16"]);
    assert_eq!(default, f32_run, "the CPU default is f32 frozen weights");
    assert!(
        log.contains("cpu: 15 frozen projection weights rounded to bf16"),
        "{log}"
    );
    let mut worst = 0.0f64;
    for (name, g) in &f32_run {
        let r = &bf16_run[name];
        let scale = g.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        if scale == 0.0 {
            continue;
        }
        let err = g
            .iter()
            .zip(r)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        assert!(
            err < 5e-2,
            "{name}: bf16 weights moved the gradient by {err:.2e}"
        );
        worst = worst.max(err);
    }
    eprintln!("bf16 vs f32 frozen weights: worst per-tensor gradient change {worst:.2e}");
    assert!(worst > 1e-4, "rounding changed nothing (worst {worst:.2e})");
}

/// The autodiff pass names each backward op `N.vjp` and each recomputation
/// clone `recompute:N` after the forward node (`N` its name, or its index when
/// unnamed): the GPU trainer pairs a LigerAttention backward with the clone
/// that ran its forward just before it by that name, to take the window
/// statistics the forward saved (`runtime/src/cuda/train/graph.rs`). Every
/// attention backward must find such a clone earlier in the run order.
#[test]
fn attention_backwards_are_named_after_their_recomputed_forwards() {
    use ligerc::ir::Op;
    use ligerc::ir::training::RECOMPUTE_PREFIX;
    let train = training_graph(&adapted_graph(), &is_lora_weight, true).unwrap();
    let g = &train.graph;
    let order = g.topo_order().unwrap();
    let mut clones_seen = std::collections::HashSet::new();
    let mut backwards = 0;
    for id in order {
        let node = g.node(id).unwrap();
        let name = node.name.clone().unwrap_or_default();
        match &node.op {
            Op::LigerAttention(_) => {
                if let Some(original) = name.strip_prefix(RECOMPUTE_PREFIX) {
                    clones_seen.insert(original.to_string());
                }
            }
            Op::Vjp(v) if matches!(*v.forward, Op::LigerAttention(_)) => {
                backwards += 1;
                let forward = name
                    .strip_suffix(".vjp")
                    .unwrap_or_else(|| panic!("backward {} is not named N.vjp", g.describe(id)));
                assert!(
                    clones_seen.contains(forward),
                    "no recomputed forward `{RECOMPUTE_PREFIX}{forward}` runs before {}",
                    g.describe(id)
                );
            }
            _ => {}
        }
    }
    assert!(
        backwards > 0,
        "the fixture's training graph has no attention backward"
    );
}
