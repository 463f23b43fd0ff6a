//! `--pass linearize`: the rewritten IR pinned by snapshots (every variant, the
//! hybrid, LoRA on top) for a tiny fixture and SmolLM2's config, and the
//! rewritten graph's meaning checked on the CPU runtime.

mod common;
use common::*;

fn ir(model: &std::path::Path, args: &[&str]) -> String {
    let mut a = vec![model.to_str().unwrap()];
    a.extend_from_slice(args);
    String::from_utf8(ligerc_ok(&a).stdout).unwrap()
}

#[test]
fn linearized_ir_snapshots() {
    let tiny = fixture("tiny_dynamo_op18_sdpa.onnx");
    for variant in ["gla", "hgrn2", "gsa", "retention", "linear", "swa-only"] {
        let mut args = vec!["--pass", "linearize", "--variant", variant];
        if variant == "gsa" {
            args.extend(["--slots", "8"]);
        }
        let text = ir(&tiny, &args);
        assert_eq!(text.matches("= LigerAttention(").count(), 2, "{variant}");
        insta::assert_snapshot!(format!("linearize_tiny_{variant}"), text);
    }
    let hybrid = ir(&tiny, &["--pass", "linearize", "--keep-softmax", "every:2"]);
    assert_eq!(hybrid.matches("= LigerAttention(").count(), 1);
    assert_eq!(hybrid.matches("= Attention(").count(), 1);
    insta::assert_snapshot!("linearize_tiny_hybrid_every2", hybrid);
    let lora = ir(&tiny, &["--pass", "linearize", "--pass", "lora"]);
    assert_eq!(lora.matches("= Lora(").count(), 6);
    insta::assert_snapshot!("linearize_tiny_lora", lora);
}

#[test]
fn smollm2_linearized_ir_snapshots() {
    let (gguf, _) = smollm2();
    let text = ir(&gguf, &["--pass", "linearize"]);
    assert_eq!(text.matches("= LigerAttention(").count(), 30);
    assert_eq!(text.matches("= LigerGate(").count(), 30);
    insta::assert_snapshot!("linearize_smollm2_gla", text);
    let hybrid = ir(
        &gguf,
        &[
            "--pass",
            "linearize",
            "--keep-softmax",
            "every:8",
            "--pass",
            "lora",
        ],
    );
    // 30 layers, one in eight kept: layers 7, 15, 23.
    assert_eq!(hybrid.matches("= Attention(").count(), 3);
    assert_eq!(hybrid.matches("= Lora(").count(), 90);
    insta::assert_snapshot!("linearize_smollm2_hybrid_lora", hybrid);
}

#[test]
fn linearize_refuses_bad_options_with_exit_2() {
    let tiny = fixture("tiny_dynamo_op18_sdpa.onnx");
    for (args, needle) in [
        (
            vec!["--pass", "linearize", "--variant", "mamba"],
            "unknown Liger variant",
        ),
        (
            vec!["--pass", "linearize", "--keep-softmax", "9"],
            "layer 9",
        ),
        (
            vec!["--pass", "linearize", "--variant", "gsa", "--slots", "32"],
            "slots",
        ),
        (vec!["--pass", "linearize", "--mix", "0.5"], "mix"),
        (
            vec!["--pass", "linearize:frobnicate=1"],
            "no option `frobnicate`",
        ),
    ] {
        let mut a = vec![tiny.to_str().unwrap()];
        a.extend(args.iter().copied());
        let o = ligerc(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn swa_only_with_a_window_covering_the_sequence_is_softmax_attention() {
    // Window branch alone, weight 1, seeing every earlier token: exactly the original model.
    let dir = tempdir("swa-exact");
    for model in [
        fixture("tiny_legacy_op17_eager.onnx"),
        fixture("tiny_dynamo_op23_sdpa.onnx"),
    ] {
        let rows = random_ids(21, 2, 13, 256);
        let ids = ids_args(&rows);
        let run = |extra: &[&str], out: &std::path::Path| {
            let mut a: Vec<&str> = vec!["run", model.to_str().unwrap()];
            a.extend_from_slice(extra);
            a.extend(ids.iter().map(String::as_str));
            a.extend(["--logits", out.to_str().unwrap()]);
            ligerc_ok(&a);
            read_npy(out).1
        };
        let base = run(&[], &dir.join("base.npy"));
        let swa = run(
            &[
                "--pass",
                "linearize",
                "--variant",
                "swa-only",
                "--window",
                "12",
            ],
            &dir.join("swa.npy"),
        );
        let (d, m) = max_diff(&swa, &base);
        assert!(d <= 1e-5 * m, "{}: {d} vs max {m}", model.display());
        // One key fewer than the sequence needs changes the last positions.
        let short = run(
            &[
                "--pass",
                "linearize",
                "--variant",
                "swa-only",
                "--window",
                "3",
            ],
            &dir.join("short.npy"),
        );
        let (d, m) = max_diff(&short, &base);
        assert!(
            d > 1e-3 * m,
            "a 4-key window should differ from full attention"
        );
    }
}

#[test]
fn linearized_smollm2_prefill_then_decode_equals_one_forward() {
    // 70 prompt tokens, then 10 single-token steps: the window (65 keys) is crossed,
    // so both the recurrent state and the ring buffer carry information across calls.
    use ligerc::passes::{Linearize, Pass, PassContext};
    use ligerc::runtime::Session;
    let (gguf, _) = smollm2();
    let mut graph = ligerc::load_model(&gguf).unwrap().graph;
    Linearize::default()
        .run(&mut graph, &mut PassContext::default())
        .unwrap();
    let mut session = Session::new(graph).unwrap();
    let ids = random_ids(8, 1, 80, 49152).remove(0);
    let full = session.forward(std::slice::from_ref(&ids)).unwrap();
    let full = full.as_f32("logits").unwrap();
    let vocab = 49152;
    let first = session.prefill(&[ids[..70].to_vec()]).unwrap();
    let first = first.as_f32("logits").unwrap();
    let (d, m) = max_diff(first, &full[..70 * vocab]);
    assert!(d <= 1e-4 * m, "prefill: {d} vs max {m}");
    for (t, &id) in ids.iter().enumerate().skip(70) {
        let step = session.decode_step(&[id]).unwrap();
        let (d, m) = max_diff(
            step.as_f32("logits").unwrap(),
            &full[t * vocab..(t + 1) * vocab],
        );
        // f32 over 30 layers, chunked prefill vs recurrent steps: ~1e-6 relative in practice.
        assert!(d <= 1e-4 * m, "decode position {t}: {d} vs max {m}");
    }
}
