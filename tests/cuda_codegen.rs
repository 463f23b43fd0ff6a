//! `--emit cuda` end to end, without a GPU: the CLI writes kernels, a plan and
//! weights for every fixture (every Liger variant, the hybrid, LoRA) and for
//! SmolLM2; the plan is consistent; and every kernel compiles with NVRTC for
//! sm_90 with an empty log (no error, no warning).
//!
//! NVRTC and `cuda_bf16.h` come from PyPI (`scripts/setup-nvrtc.sh`, which
//! prints `LIGERC_NVRTC_LIB_DIR` and `LIGERC_CUDA_INCLUDE`; `scripts/test.sh`
//! exports them). Without them the compile check is skipped with a message —
//! unless `CI` is set, where it fails.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::Path;

use ligerc::codegen::cuda::plan::{Arg, Plan, Step};

/// FNV-1a of a kernel source.
fn source_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

const VARIANTS: [&str; 6] = ["gla", "hgrn2", "gsa", "retention", "linear", "swa-only"];

/// Kernel sources by name from one `--emit cuda` output, after checking the plan.
fn emitted(dir: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir.join("plan.json")).unwrap();
    let plan: Plan =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: plan.json: {e}", dir.display()));
    assert_eq!(plan.format, "ligerc-cuda-plan");
    assert!(dir.join("weights.safetensors").is_file());
    let mut kernels = BTreeMap::new();
    for k in &plan.kernels {
        let src = std::fs::read_to_string(dir.join(&k.file))
            .unwrap_or_else(|e| panic!("{}: {e}", k.file));
        assert!(
            src.contains(&format!("extern \"C\" __global__ void {}(", k.name)),
            "{}: entry point missing",
            k.file
        );
        assert!(
            src.starts_with(&format!("// {}.cu", k.name))
                && src.contains("// Implements (IR subgraph):")
        );
        // Keyed by name and code (the header comment lists node ids): fixtures with other
        // constants (eps, RoPE theta) keep both, identical code compiles once.
        let code = src
            .find("#include <cuda_bf16.h>")
            .map_or(src.as_str(), |i| &src[i..]);
        kernels.insert(format!("{}@{:016x}", k.name, source_hash(code)), src);
    }
    let names: Vec<&str> = plan.kernels.iter().map(|k| k.name.as_str()).collect();
    let weights: Vec<&str> = plan
        .weights
        .tensors
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    let persistent: Vec<&str> = plan
        .persistent
        .iter()
        .map(|p| p.tensor.name.as_str())
        .collect();
    for (phase_name, phase) in [("prefill", &plan.prefill), ("decode", &plan.decode)] {
        assert!(!phase.steps.is_empty(), "{phase_name}: no steps");
        let buffers: Vec<&str> = phase.buffers.iter().map(|b| b.name.as_str()).collect();
        let inputs: Vec<&str> = phase.inputs.iter().map(|b| b.name.as_str()).collect();
        let check = |a: &Arg| match a {
            Arg::Buffer(n) => assert!(
                buffers.contains(&n.as_str()),
                "{phase_name}: unknown buffer {n}"
            ),
            Arg::Input(n) => assert!(
                inputs.contains(&n.as_str()),
                "{phase_name}: unknown input {n}"
            ),
            Arg::Weight(n) => assert!(
                weights.contains(&n.as_str()),
                "{phase_name}: unknown weight {n}"
            ),
            Arg::Persistent(n) => assert!(
                persistent.contains(&n.as_str()),
                "{phase_name}: unknown persistent {n}"
            ),
            Arg::Scalar(_) | Arg::Null => {}
        };
        for step in &phase.steps {
            match step {
                Step::Launch(l) => {
                    assert!(
                        names.contains(&l.kernel.as_str()),
                        "{phase_name}: unknown kernel {}",
                        l.kernel
                    );
                    l.args.iter().for_each(check);
                }
                Step::Gemm(g) => {
                    [&g.a, &g.b, &g.c].into_iter().for_each(check);
                    assert!(matches!(g.a, Arg::Weight(_)), "GEMM A must be a weight");
                }
            }
        }
        for o in &phase.outputs {
            assert!(
                buffers.contains(&o.buffer.as_str()),
                "{phase_name}: output {} in unknown buffer",
                o.name
            );
        }
        let s = phase.sampling.as_ref().expect("a logits graph samples");
        assert!(
            names.contains(&s.argmax.kernel.as_str()) && names.contains(&s.top_k.kernel.as_str())
        );
    }
    kernels
}

fn emit(model: &Path, args: &[&str], tag: &str) -> BTreeMap<String, String> {
    let dir = tempdir(&format!("cuda-{tag}"));
    let out = dir.join("out");
    let mut a: Vec<&str> = vec![model.to_str().unwrap()];
    a.extend_from_slice(args);
    a.extend(["--emit", "cuda", "-o", out.to_str().unwrap()]);
    ligerc_ok(&a);
    let k = emitted(&out);
    let _ = std::fs::remove_dir_all(&dir);
    k
}

#[test]
fn fixtures_every_variant_and_hybrid_compile_with_nvrtc() {
    let include = nvrtc_env();
    let mut all = BTreeMap::new();
    for (i, f) in fixtures().iter().enumerate() {
        for v in VARIANTS {
            // The fixtures' head_dim is 16: GSA slots must fit in it.
            let k = emit(
                f,
                &["--pass", "linearize", "--variant", v, "--slots", "8"],
                &format!("{i}-{v}"),
            );
            all.extend(k);
        }
        // The hybrid keeps softmax in layer 1 (with a KV cache, and a key mask for the mask fixtures) plus LoRA.
        all.extend(emit(
            f,
            &[
                "--pass",
                "linearize",
                "--keep-softmax",
                "1",
                "--pass",
                "lora",
            ],
            &format!("{i}-hybrid"),
        ));
    }
    // Hugging Face fixtures: Llama 3.1 RoPE scaling, tied embeddings, Qwen2 biases.
    for hf in ["llama2", "llama31", "llama32_tied", "mistral", "qwen2"] {
        let dir = root().join("tests/fixtures/hf").join(hf);
        all.extend(emit(&dir, &["--pass", "linearize"], &format!("hf-{hf}")));
    }
    // Window 0 and a recurrent-only mix exercise the kernels' reduced forms.
    let f = fixture("tiny_dynamo_op18_sdpa.onnx");
    all.extend(emit(&f, &["--pass", "linearize", "--window", "0"], "w0"));
    all.extend(emit(&f, &["--pass", "linearize", "--mix", "1,0"], "nowin"));
    all.extend(emit(
        &f,
        &[
            "--pass",
            "linearize",
            "--variant",
            "gsa",
            "--slots",
            "8",
            "--mix",
            "1,0",
        ],
        "gsa-nowin",
    ));
    let names: Vec<&str> = all.keys().map(String::as_str).collect();
    for want in [
        "liger_gla_prefill",
        "liger_gla_chunk_prep",
        "liger_state_pass",
        "liger_gsa_chunk_states",
        "liger_state_scan",
        "liger_hgrn2_decode",
        "liger_gsa_slots_prefill",
        "liger_gsa_decode",
        "liger_retention_prefill",
        "liger_linear_decode",
        "liger_swa_only_decode",
        "liger_window_prefill",
        "liger_ring_store",
        "attention_h4_kv2_d16_causal_masked",
        "kv_store",
        "key_mask_store",
        "mask_rows",
        "add_rmsnorm",
        "embedding",
        "swiglu",
        "rope",
        "argmax",
        "top_k",
        "bias_add",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "no kernel `{want}*` among {names:?}"
        );
    }
    if let Some(inc) = include {
        compile_all(&all, &inc);
    }
}

#[test]
fn smollm2_compiles_with_nvrtc() {
    let include = nvrtc_env();
    let (gguf, _) = smollm2();
    let mut all = emit(&gguf, &["--pass", "linearize"], "smollm2");
    all.extend(emit(
        &gguf,
        &[
            "--pass",
            "linearize",
            "--variant",
            "gsa",
            "--keep-softmax",
            "every:8",
            "--pass",
            "lora",
        ],
        "smollm2-gsa",
    ));
    // head dim 64, window 64: the window branch inside step 3
    assert!(
        all.keys()
            .any(|n| n.starts_with("liger_gla_prefill_fused_h9_kv3_d64_w64")),
        "no fused step 3 among {:?}",
        all.keys().collect::<Vec<_>>()
    );
    if let Some(inc) = include {
        compile_all(&all, &inc);
    }
}

#[test]
fn unsupported_graphs_are_refused_naming_the_node() {
    // Without raise/linearize, an exported graph still holds generic ONNX ops: a clear error, exit 2, no output.
    let dir = tempdir("cuda-refuse");
    let out = dir.join("out");
    let f = fixture("tiny_dynamo_op18_sdpa.onnx");
    let r = ligerc(&[
        f.to_str().unwrap(),
        "--emit",
        "cuda",
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("--emit cuda") && err.contains("node"), "{err}");
    assert!(!out.exists());
    let r = ligerc(&[f.to_str().unwrap(), "--pass", "linearize", "--emit", "cuda"]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("-o DIR"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Emits CUDA for `model` with `passes`, runs the plan under the CPU emulation
/// (prefill of `prefill` tokens — as two calls split at `split` when it is not
/// 0 — then decode steps up to `total`) and compares every position's logits
/// with the CPU runtime's full forward pass.
fn emulate_against_cpu(
    model: &Path,
    passes: &[&str],
    tag: &str,
    batch: usize,
    lens: (usize, usize, usize),
    tol: f32,
) {
    emulate_against_cpu_env(model, passes, tag, batch, lens, tol, &[]);
}

/// [`emulate_against_cpu`] with `env` set for the code generation (`--emit cuda`) only.
fn emulate_against_cpu_env(
    model: &Path,
    passes: &[&str],
    tag: &str,
    batch: usize,
    (prefill, split, total): (usize, usize, usize),
    tol: f32,
    env: &[(&str, &str)],
) {
    let Some(cxx) = gxx() else { return };
    let dir = tempdir(&format!("cuda-emu-{tag}"));
    let out = dir.join("out");
    let mut a: Vec<&str> = vec![model.to_str().unwrap()];
    a.extend_from_slice(passes);
    a.extend(["--emit", "cuda", "-o", out.to_str().unwrap()]);
    let emitted = std::process::Command::new(env!("CARGO_BIN_EXE_ligerc"))
        .args(&a)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        emitted.status.success(),
        "{tag}: ligerc {a:?} failed: {}",
        String::from_utf8_lossy(&emitted.stderr)
    );
    let emu = ligerc::codegen::cuda::emulate::emulation(&out).unwrap();
    std::fs::write(dir.join("weights.bin"), &emu.weights).unwrap();
    let plan: Plan =
        serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
    let vocab = plan.model_info.vocab;
    let rows = random_ids(7, batch, total, vocab as u64);
    let ids: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(dir.join("ids.bin"), ids).unwrap();
    let prog = gxx_build(&cxx, &dir, &emu.source, tag);
    let (lp, np) = (dir.join("logits.bin"), dir.join("next.bin"));
    let args = [
        dir.join("weights.bin"),
        dir.join("ids.bin"),
        batch.to_string().into(),
        prefill.to_string().into(),
        total.to_string().into(),
        lp.clone(),
        np.clone(),
        split.to_string().into(),
    ];
    run_emulation(&prog, &args, tag);
    let ours: Vec<f32> = std::fs::read(&lp)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let next: Vec<i64> = std::fs::read(&np)
        .unwrap()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // The CPU runtime's full forward pass of the same ids.
    let refp = dir.join("ref.npy");
    let mut r: Vec<String> = vec!["run".into(), model.to_str().unwrap().into()];
    r.extend(passes.iter().map(|s| s.to_string()));
    r.extend(ids_args(&rows));
    r.extend(["--logits".into(), refp.to_str().unwrap().into()]);
    let r: Vec<&str> = r.iter().map(String::as_str).collect();
    ligerc_ok(&r);
    let (shape, reference) = read_npy(&refp);
    assert_eq!(shape, [batch, total, vocab], "{tag}: reference shape");
    let mut worst = 0.0f32;
    for t in 0..total {
        let pick = |x: &[f32]| -> Vec<f32> {
            (0..batch)
                .flat_map(|b| x[(b * total + t) * vocab..][..vocab].to_vec())
                .collect()
        };
        let (d, m) = max_diff(&pick(&ours), &pick(&reference));
        worst = worst.max(d / m);
        assert!(
            d <= tol * m,
            "{tag}: position {t} ({}): max|diff| {d} > {tol} × max|logit| {m}",
            if t < prefill { "prefill" } else { "decode" }
        );
    }
    // Greedy sampling: the argmax kernel agrees with the emulated logits of each call's last position.
    for (k, t) in (prefill - 1..total).enumerate() {
        for b in 0..batch {
            let row = &ours[(b * total + t) * vocab..][..vocab];
            let best = row
                .iter()
                .enumerate()
                .fold(0, |bi, (i, &v)| if v > row[bi] { i } else { bi });
            assert_eq!(
                next[k * batch + b],
                best as i64,
                "{tag}: argmax at row {b}, position {t}"
            );
        }
    }
    if std::env::var_os("LIGERC_KEEP_EMU").is_some() {
        eprintln!("{tag}: kept {}", dir.display());
        return;
    }
    eprintln!(
        "{tag}: CPU emulation of the plan matches the CPU runtime over {total} positions × {batch} rows (worst max|diff|/max|logit| {worst:.4})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn emulated_plan_matches_cpu_runtime_every_variant() {
    let f = fixture("tiny_dynamo_op18_sdpa.onnx");
    for v in VARIANTS {
        // 70 positions: a prefill of 67 as two calls (30 tokens, then 37 more continuing
        // from the state and the ring: past one chunk and past the 65-key window), then
        // 3 decode steps.
        emulate_against_cpu(
            &f,
            &["--pass", "linearize", "--variant", v, "--slots", "8"],
            v,
            2,
            (67, 30, 70),
            0.015,
        );
    }
    // The recurrence alone (no window branch) makes its errors stand out in the logits.
    for v in ["gla", "gsa"] {
        let tag = format!("{v}-recurrent-only");
        let args = [
            "--pass",
            "linearize",
            "--variant",
            v,
            "--slots",
            "8",
            "--mix",
            "1,0",
        ];
        emulate_against_cpu(&f, &args, &tag, 1, (67, 0, 69), 0.015);
        // Several chunks per call of the chunk-parallel recurrence, the second call's scan
        // starting from the stored state, 2 rows: 150 tokens as 70 (chunks of 64 + 6),
        // then 80 more (64 + 16), then 2 decode steps.
        emulate_against_cpu(
            &f,
            &args,
            &format!("{tag}-chunks"),
            2,
            (150, 70, 152),
            0.015,
        );
    }
}

#[test]
fn emulated_plan_matches_cpu_runtime_hybrid_lora_mask_and_hf() {
    let f = fixture("tiny_legacy_op17_eager_mask.onnx");
    emulate_against_cpu(
        &f,
        &[
            "--pass",
            "linearize",
            "--keep-softmax",
            "1",
            "--pass",
            "lora",
        ],
        "hybrid-mask",
        2,
        (5, 2, 9),
        0.015,
    );
    let f = fixture("tiny_dynamo_op18_sdpa.onnx");
    emulate_against_cpu(
        &f,
        &["--pass", "linearize", "--window", "3"],
        "window3",
        1,
        (6, 0, 12),
        0.015,
    );
    // Qwen2's projection biases, Llama 3.1's RoPE scaling.
    for hf in ["qwen2", "llama31"] {
        let dir = root().join("tests/fixtures/hf").join(hf);
        emulate_against_cpu(&dir, &["--pass", "linearize"], hf, 1, (5, 0, 8), 0.015);
    }
}

/// The kernels at Llama-3-8B's shapes (H 32, KV 8, D 128, hidden 4096, vocab 128256;
/// GSA with 64 and 128 slots), generated directly, compile cleanly too.
#[test]
fn llama3_8b_shapes_compile_with_nvrtc() {
    use ligerc::codegen::cuda::kernels::liger::{self, Recurrence, WindowOut};
    use ligerc::codegen::cuda::kernels::{attention, basic, sample};
    use ligerc::codegen::cuda::lower::KernelEntry;
    use ligerc::ir::{AttentionSpec, DType, LigerSpec, LigerVariant, RopeScaling, RopeSpec};
    let Some(include) = nvrtc_env() else { return };
    let mut srcs = vec![
        basic::embedding(4096, 128_256, DType::I64).unwrap(),
        basic::rmsnorm(4096, 1e-5, DType::F32, Some(DType::F32)).unwrap(),
        basic::swiglu(14336, DType::BF16, DType::BF16).unwrap(),
        sample::argmax(128_256),
        sample::top_k(128_256),
        attention::attention(
            &AttentionSpec {
                heads: 32,
                kv_heads: 8,
                head_dim: 128,
                scale: 128f64.powf(-0.5),
                causal: true,
            },
            true,
        ),
    ];
    let scaling = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position: 8192.0,
    };
    srcs.push(
        basic::rope(
            &RopeSpec {
                heads: 32,
                head_dim: 128,
                theta: 500_000.0,
                scaling,
            },
            DType::BF16,
        )
        .unwrap(),
    );
    let limit = 227 * 1024;
    for variant in LigerVariant::ALL {
        for slots in [64, 128] {
            if slots == 128 && variant != LigerVariant::Gsa {
                continue;
            }
            let spec = LigerSpec {
                variant,
                heads: 32,
                kv_heads: 8,
                head_dim: 128,
                window: 64,
                mix_window: 0.5,
                mix_linear: 0.5,
                slots,
            };
            let n = variant.default_normalizer();
            srcs.push(liger::window_prefill(&spec, WindowOut::Partial));
            srcs.push(liger::ring_store(&spec));
            match variant {
                LigerVariant::SwaOnly => srcs.push(liger::decode_keyed(&spec, n)),
                LigerVariant::Gsa => {
                    let (c, bytes) = liger::slots_chunk(&spec, 64, limit);
                    assert!(bytes <= limit);
                    srcs.push(liger::gsa_slots_prefill(&spec, c, n));
                    let (c, bytes) = liger::gla_chunk(&spec, Recurrence::GsaValues, 64, limit);
                    assert!(bytes <= limit);
                    srcs.push(liger::gla_chunk_states(&spec, Recurrence::GsaValues, c, n));
                    srcs.push(liger::gla_state_scan(&spec, Recurrence::GsaValues, c));
                    srcs.push(liger::gla_prefill(&spec, Recurrence::GsaValues, c, n, true));
                    srcs.push(liger::decode_gsa(&spec, n));
                }
                _ => {
                    let (c, bytes) = liger::gla_chunk(&spec, Recurrence::Keyed, 64, limit);
                    assert!(c == 64 && bytes <= limit, "chunk {c}, {bytes} bytes");
                    srcs.extend(
                        liger::key_and_state_pass(&spec, Recurrence::Keyed, c, n)
                            .expect("the tensor-core kernels serve D 128"),
                    );
                    srcs.push(liger::gla_prefill(&spec, Recurrence::Keyed, c, n, true));
                    if liger::fused_eligible(&spec, c, limit) {
                        srcs.push(liger::fused_prefill(&spec, c));
                    }
                    srcs.extend(liger::gla_prefill_subchunk(
                        &spec,
                        Recurrence::Keyed,
                        c,
                        n,
                        true,
                    ));
                    srcs.push(liger::decode_keyed(&spec, n));
                }
            }
        }
    }
    let kernels: BTreeMap<String, String> = srcs
        .into_iter()
        .map(|src| {
            let name = src.name.clone();
            (
                name,
                KernelEntry {
                    src,
                    instances: vec!["Llama-3-8B shape".into()],
                }
                .source(),
            )
        })
        .collect();
    compile_all(&kernels, &include);
}

/// Head dim 64 (SmolLM2's; GQA 4/2, `tests/gpu/make_d64_fixture.py`): the tensor-core chunk
/// kernels with four 16-column tiles and every warp busy, the window and decode kernels at
/// the width of the real model. The recurrence alone, then with the window; three chunks of
/// 64 as two calls (130 = 64 + 64 + 2, then 70 more from the stored state), then decode.
/// Tolerance 3e-2 of the largest logit, as `scripts/gpu-test.sh` uses for this fixture: its
/// random 256-wide layers amplify the bf16 rounding of the activations between kernels
/// (the scalar kernels' emulation also differs from the f32 runtime by 1.6e-2 here). Then
/// the recurrence again with the sub-chunk score path forced.
#[test]
fn emulated_plan_matches_cpu_runtime_head_dim_64() {
    if gxx().is_none() {
        return;
    }
    let dir = tempdir("cuda-emu-d64-src");
    let d64 = dir.join("d64");
    py(
        "tests/gpu/make_d64_fixture.py",
        &[
            root().join("tests/fixtures/hf/llama31").to_str().unwrap(),
            d64.to_str().unwrap(),
        ],
    );
    let rec = ["--pass", "linearize", "--mix", "1,0"];
    emulate_against_cpu(
        &d64,
        &rec,
        "d64-gla-recurrent-only",
        2,
        (200, 130, 203),
        0.03,
    );
    emulate_against_cpu(
        &d64,
        &["--pass", "linearize"],
        "d64-gla",
        1,
        (100, 37, 102),
        0.03,
    );
    // The tensor-core kernels' sub-chunk score path (taken by chunks whose gates decay by
    // more than e^-40), forced for every chunk.
    emulate_against_cpu_env(
        &d64,
        &rec,
        "d64-gla-subchunk-scores",
        1,
        (150, 70, 152),
        0.03,
        &[("LIGERC_CUDA_SUBCHUNK_SCORES", "1")],
    );
    // Both paths in one call, chunk by chunk (every odd-numbered chunk the sub-chunk
    // kernel's, and the state pass's two-halves update): 200 tokens as 130 (chunks of 64,
    // 64, 2), then 70 more (64 + 6), 2 rows.
    emulate_against_cpu_env(
        &d64,
        &rec,
        "d64-gla-alternate-chunks",
        2,
        (200, 130, 203),
        0.03,
        &[("LIGERC_CUDA_SUBCHUNK_SCORES", "alternate")],
    );
    // The window inside step 3 (the fused kernel) on the same alternation: on the sub-chunk
    // kernel's chunks it writes the window part alone and the sub-chunk kernel adds to the
    // output in place.
    emulate_against_cpu_env(
        &d64,
        &["--pass", "linearize"],
        "d64-gla-fused-alternate-chunks",
        2,
        (200, 130, 203),
        0.03,
        &[("LIGERC_CUDA_SUBCHUNK_SCORES", "alternate")],
    );
    // A 33-key window: the chunk's first key tiles lie before a row tile's window band
    // and join its weights as tiles of their own.
    emulate_against_cpu(
        &d64,
        &["--pass", "linearize", "--window", "32"],
        "d64-gla-fused-window-32",
        2,
        (150, 70, 152),
        0.03,
    );
    // The window kernel and step 3 apart (what shapes the fused kernel does not take get).
    emulate_against_cpu_env(
        &d64,
        &["--pass", "linearize"],
        "d64-gla-separate-window",
        1,
        (100, 37, 102),
        0.03,
        &[("LIGERC_CUDA_WINDOW", "separate")],
    );
}

/// `--emit cuda` is reproducible: two runs write the same plan.json (buffer reuse does
/// not follow a hash map's per-process order).
#[test]
fn emitted_plan_is_the_same_on_every_run() {
    let f = fixture("tiny_legacy_op17_eager_mask.onnx");
    let dir = tempdir("cuda-emit-twice");
    let plans: Vec<String> = (0..2)
        .map(|i| {
            let out = dir.join(format!("out{i}"));
            ligerc_ok(&[
                f.to_str().unwrap(),
                "--pass",
                "linearize",
                "--keep-softmax",
                "1",
                "--emit",
                "cuda",
                "-o",
                out.to_str().unwrap(),
            ]);
            std::fs::read_to_string(out.join("plan.json")).unwrap()
        })
        .collect();
    assert!(plans[0] == plans[1], "plan.json differs between two runs");
}
