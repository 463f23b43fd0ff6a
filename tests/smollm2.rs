//! The real model, SmolLM2-135M-Instruct, from GGUF and from the Hugging Face
//! directory the same weights convert to, against transformers on CPU in f32
//! (golden values from `scripts/make_goldens.py`, kept in tests/golden/).
//!
//! Tolerances: logits within 1e-3 × the position's largest |logit| (f32 with a
//! different summation order over 30 layers drifts ~1e-5 relative; 1e-3 is the
//! issue's bound); perplexity within 0.5%.

mod common;
use std::path::Path;

use common::*;
use serde_json::Value;

fn golden() -> Value {
    let text = std::fs::read_to_string(root().join("tests/golden/smollm2.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids_of(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn check_logits(model: &Path, tag: &str) {
    let g = golden();
    let rows: Vec<Vec<i64>> = g["logits"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids_of)
        .collect();
    let probes = ids_of(&g["logits"]["probe_token_ids"]);
    let tmp = tempdir(tag);
    let out = tmp.join("logits.npy");
    let ids = ids_args(&rows);
    let mut args: Vec<&str> = vec!["run", model.to_str().unwrap()];
    args.extend(ids.iter().map(String::as_str));
    args.extend(["--logits", out.to_str().unwrap()]);
    ligerc_ok(&args);
    let (shape, data) = read_npy(&out);
    let vocab = shape[2];
    assert_eq!(shape, vec![rows.len(), rows[0].len(), 49152]);
    for (r, row) in g["logits"]["rows"].as_array().unwrap().iter().enumerate() {
        for (t, pos) in row.as_array().unwrap().iter().enumerate() {
            let ours = &data[(r * rows[0].len() + t) * vocab..][..vocab];
            let top5 = ids_of(&pos["top5_ids"]);
            let top5_logits: Vec<f64> = pos["top5_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let scale = top5_logits[0].abs().max(1.0);
            let best = ours
                .iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            assert_eq!(best.0 as i64, top5[0], "{tag} row {r} pos {t}: top-1 token");
            let mut checks: Vec<(i64, f64)> = top5.iter().copied().zip(top5_logits).collect();
            let probe_logits = pos["probe_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap());
            checks.extend(probes.iter().copied().zip(probe_logits));
            for (id, want) in checks {
                let got = ours[id as usize] as f64;
                assert!(
                    (got - want).abs() <= 1e-3 * scale,
                    "{tag} row {r} pos {t} token {id}: {got} vs {want}"
                );
            }
            let max = ours.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
            let lse = max
                + ours
                    .iter()
                    .map(|&v| ((v as f64) - max).exp())
                    .sum::<f64>()
                    .ln();
            let want = pos["logsumexp"].as_f64().unwrap();
            assert!(
                (lse - want).abs() <= 1e-3 * scale,
                "{tag} row {r} pos {t}: logsumexp {lse} vs {want}"
            );
        }
    }
}

#[test]
fn gguf_logits_match_transformers() {
    check_logits(&smollm2().0, "gguf");
}

#[test]
fn hf_dir_logits_match_transformers() {
    check_logits(&smollm2().1, "hf");
}

#[test]
fn greedy_continuation_says_paris() {
    let g = golden();
    let want = g["greedy"]["full_text"].as_str().unwrap();
    for model in [smollm2().0, smollm2().1] {
        let out = ligerc_ok(&[
            "run",
            model.to_str().unwrap(),
            "--prompt",
            "The capital of France is",
            "--max-new-tokens",
            "8",
        ]);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.starts_with("The capital of France is Paris"),
            "{}: {text:?}",
            model.display()
        );
        assert_eq!(
            text.trim_end_matches('\n'),
            want,
            "{}: greedy continuation differs from transformers",
            model.display()
        );
    }
}

#[test]
fn perplexity_matches_transformers() {
    use ligerc::runtime::{PerplexityOptions, Session, perplexity};
    let g = golden();
    let p = &g["perplexity"];
    let want_ids = ids_of(&p["token_ids"]);
    let (gguf, _) = smollm2();
    let model = ligerc::load_model(&gguf).unwrap();
    let Some(ligerc::TokenizerSource::Gguf(t)) = &model.tokenizer else {
        panic!("GGUF without tokenizer")
    };
    let pre = t
        .pre
        .as_deref()
        .and_then(ligerc::runtime::BpePreTokenizer::from_gguf_name)
        .unwrap();
    let tok = ligerc::runtime::Tokenizer::from_gguf_bpe_with(
        t.tokens.clone(),
        t.merges.clone(),
        t.token_types.clone(),
        t.bos,
        t.eos,
        pre,
    )
    .unwrap();
    let text = std::fs::read_to_string(root().join("tests/data/passage.txt")).unwrap();
    let ids = tok.encode(&text, false).unwrap();
    assert_eq!(
        ids.len() as u64,
        p["passage_tokens_total"].as_u64().unwrap(),
        "tokenizer differs from transformers"
    );
    assert_eq!(
        &ids[..want_ids.len()],
        &want_ids[..],
        "tokenizer differs from transformers"
    );
    let session = Session::new(model.graph).unwrap();
    let n = want_ids.len();
    let r = perplexity(
        &session,
        &want_ids,
        &PerplexityOptions {
            window: n,
            stride: n,
        },
    )
    .unwrap();
    let want = p["ppl"].as_f64().unwrap();
    assert_eq!(r.tokens_scored, n - 1);
    assert!(
        (r.ppl / want - 1.0).abs() < 0.005,
        "perplexity {} vs transformers {want}",
        r.ppl
    );
}
