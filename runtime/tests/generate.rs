//! Sessions, generation, perplexity and the tokenizer, on a tiny two-layer
//! Llama-shaped graph built by hand with random weights.

mod common;
use common::Rng;

use std::ops::ControlFlow;

use ligerc_ir::{
    AttentionSpec, Attrs, DType, Dim, Graph, OnnxOp, Op, RopeScaling, RopeSpec, TensorData,
    TensorType, ValueRef,
};
use ligerc_runtime::{
    BpePreTokenizer, GenerateOptions, PerplexityOptions, RuntimeError, Sampler, Session, Tensor,
    TextStream, Tokenizer, perplexity,
};

impl Rng {
    fn values(&mut self, n: usize, scale: f32, offset: f32) -> Vec<f32> {
        (0..n).map(|_| offset + scale * self.uniform()).collect()
    }

    fn below(&mut self, n: usize) -> i64 {
        (self.next_u64() % n as u64) as i64
    }
}

const VOCAB: usize = 40;
const HIDDEN: usize = 32;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 8;
const FFN: usize = 48;
const LAYERS: usize = 2;

fn act(features: usize) -> TensorType {
    TensorType::new(
        DType::F32,
        vec![Dim::sym("batch"), Dim::sym("seq"), Dim::Fixed(features)],
    )
}

struct Builder {
    g: Graph,
    rng: Rng,
}

impl Builder {
    fn weight(&mut self, name: &str, shape: &[usize], scale: f32, offset: f32) -> ValueRef {
        let n = shape.iter().product();
        let data =
            TensorData::from_f32(shape.to_vec(), &self.rng.values(n, scale, offset)).unwrap();
        self.g.add_weight(name, data)
    }

    fn linear(&mut self, name: &str, x: ValueRef, out: usize, inp: usize, bias: bool) -> ValueRef {
        let w = self.weight(name, &[out, inp], 1.5 / (inp as f32).sqrt(), 0.0);
        let mut operands = vec![x, w];
        if bias {
            operands.push(self.weight(&format!("{name}.bias"), &[out], 0.1, 0.0));
        }
        self.g.add(Op::Linear, &operands, act(out))
    }

    fn norm(&mut self, name: &str, x: ValueRef) -> ValueRef {
        let w = self.weight(name, &[HIDDEN], 0.1, 1.0);
        self.g.add(Op::RmsNorm { eps: 1e-5 }, &[x, w], act(HIDDEN))
    }

    fn add(&mut self, a: ValueRef, b: ValueRef) -> ValueRef {
        let op = Op::Onnx(OnnxOp {
            op_type: "Add".into(),
            attrs: Attrs::new(),
        });
        self.g.add(op, &[a, b], act(HIDDEN))
    }
}

/// embedding → 2 × [rmsnorm → q,k,v → rope → attention → o → residual →
/// rmsnorm → swiglu MLP → residual] → norm → lm head.
fn tiny_llama(seed: u64) -> Graph {
    let mut b = Builder {
        g: Graph::new("tiny-llama"),
        rng: Rng(seed),
    };
    let ids = b.g.add_input(
        "input_ids",
        TensorType::new(DType::I64, vec![Dim::sym("batch"), Dim::sym("seq")]),
    );
    let table = b.weight("embed", &[VOCAB, HIDDEN], 1.0, 0.0);
    let mut x = b.g.add(Op::Embedding, &[table, ids], act(HIDDEN));
    let rope = |heads| {
        Op::Rope(RopeSpec {
            heads,
            head_dim: HEAD_DIM,
            theta: 10000.0,
            scaling: RopeScaling::None,
        })
    };
    for l in 0..LAYERS {
        let h = b.norm(&format!("l{l}.attn_norm"), x);
        let bias = l == 0;
        let q = b.linear(&format!("l{l}.q"), h, HEADS * HEAD_DIM, HIDDEN, bias);
        let k = b.linear(&format!("l{l}.k"), h, KV_HEADS * HEAD_DIM, HIDDEN, bias);
        let v = b.linear(&format!("l{l}.v"), h, KV_HEADS * HEAD_DIM, HIDDEN, bias);
        let q = b.g.add(rope(HEADS), &[q], act(HEADS * HEAD_DIM));
        let k = b.g.add(rope(KV_HEADS), &[k], act(KV_HEADS * HEAD_DIM));
        let spec = AttentionSpec {
            heads: HEADS,
            kv_heads: KV_HEADS,
            head_dim: HEAD_DIM,
            scale: 1.0 / (HEAD_DIM as f64).sqrt(),
            causal: true,
        };
        let a =
            b.g.add(Op::Attention(spec), &[q, k, v], act(HEADS * HEAD_DIM));
        let o = b.linear(&format!("l{l}.o"), a, HIDDEN, HEADS * HEAD_DIM, false);
        x = b.add(x, o);
        let h = b.norm(&format!("l{l}.mlp_norm"), x);
        let gate = b.linear(&format!("l{l}.gate"), h, FFN, HIDDEN, false);
        let up = b.linear(&format!("l{l}.up"), h, FFN, HIDDEN, false);
        let s = b.g.add(Op::SwiGlu, &[gate, up], act(FFN));
        let down = b.linear(&format!("l{l}.down"), s, HIDDEN, FFN, false);
        x = b.add(x, down);
    }
    let h = b.norm("final_norm", x);
    let w = b.weight(
        "lm_head",
        &[VOCAB, HIDDEN],
        3.0 / (HIDDEN as f32).sqrt(),
        0.0,
    );
    let logits = b.g.add(Op::LmHead, &[h, w], act(VOCAB));
    b.g.add_output("logits", logits);
    b.g
}

fn f32s(t: &Tensor) -> &[f32] {
    t.as_f32("test").unwrap()
}

/// Logits of position `t` of row `b`.
fn position(t: &Tensor, b: usize, pos: usize) -> &[f32] {
    let (seq, vocab) = (t.shape[1], t.shape[2]);
    &f32s(t)[(b * seq + pos) * vocab..(b * seq + pos + 1) * vocab]
}

fn assert_rel_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    let scale = want.iter().fold(1e-30f32, |m, w| m.max(w.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * scale,
            "{what}: element {i}: {g} vs {w}"
        );
    }
}

fn random_ids(rng: &mut Rng, n: usize) -> Vec<i64> {
    (0..n).map(|_| rng.below(VOCAB)).collect()
}

// ---------------------------------------------------------------- KV cache

#[test]
fn prefill_and_decode_steps_match_a_full_forward() {
    let mut session = Session::new(tiny_llama(1)).unwrap();
    assert!(session.supports_kv_cache());
    let mut rng = Rng(2);
    let rows: Vec<Vec<i64>> = (0..2).map(|_| random_ids(&mut rng, 9)).collect();
    let full = session.forward(&rows).unwrap();
    assert_eq!(full.shape, [2, 9, VOCAB]);
    let prompt: Vec<Vec<i64>> = rows.iter().map(|r| r[..5].to_vec()).collect();
    let pre = session.prefill(&prompt).unwrap();
    assert_eq!(pre.shape, [2, 5, VOCAB]);
    for b in 0..2 {
        for t in 0..5 {
            assert_rel_close(position(&pre, b, t), position(&full, b, t), 1e-5, "prefill");
        }
    }
    for t in 5..9 {
        let step: Vec<i64> = rows.iter().map(|r| r[t]).collect();
        let logits = session.decode_step(&step).unwrap();
        assert_eq!(logits.shape, [2, 1, VOCAB]);
        for b in 0..2 {
            assert_rel_close(
                position(&logits, b, 0),
                position(&full, b, t),
                1e-5,
                "decode step",
            );
        }
    }
    assert_eq!(session.cached_len(), 9);
    // A new prefill starts over.
    let again = session.prefill(&prompt).unwrap();
    assert_eq!(f32s(&again), f32s(&pre));
}

#[test]
fn session_errors() {
    let mut session = Session::new(tiny_llama(3)).unwrap();
    assert!(session.decode_step(&[1]).is_err(), "decode before prefill");
    assert!(
        session.forward(&[vec![1, VOCAB as i64]]).is_err(),
        "id out of range"
    );
    assert!(session.forward(&[vec![1, -1]]).is_err(), "negative id");
    assert!(
        session.forward(&[vec![1, 2], vec![3]]).is_err(),
        "ragged rows"
    );
    assert!(session.forward(&[]).is_err(), "no rows");
    session.prefill(&[vec![1, 2], vec![3, 4]]).unwrap();
    assert!(session.decode_step(&[1]).is_err(), "batch mismatch");
    // A failed run clears the cache instead of leaving it half-appended.
    session.prefill(&[vec![1, 2]]).unwrap();
    assert!(session.decode_step(&[VOCAB as i64]).is_err());
    assert_eq!(session.cached_len(), 0);

    let mut g = Graph::new("no-ids");
    let x = g.add_input("tokens", TensorType::fixed(DType::I64, &[1, 1]));
    g.add_output("y", x);
    assert!(matches!(Session::new(g), Err(RuntimeError::Input(_))));
}

// ---------------------------------------------------------------- Generation

#[test]
fn greedy_generation_is_deterministic_and_follows_argmax() {
    let mut session = Session::new(tiny_llama(4)).unwrap();
    let prompt = vec![3, 14, 15, 9, 2];
    let opts = GenerateOptions {
        max_new_tokens: 8,
        ..GenerateOptions::default()
    };
    let first = session.generate(&prompt, &opts).unwrap();
    let second = session.generate(&prompt, &opts).unwrap();
    assert_eq!(first.len(), 8);
    assert_eq!(first, second);
    // The same tokens by recomputing the whole sequence each step.
    let mut seq = prompt.clone();
    for &tok in &first {
        let logits = session.forward(&[seq.clone()]).unwrap();
        let last = position(&logits, 0, seq.len() - 1);
        let argmax = (0..VOCAB).fold(0, |best, i| if last[i] > last[best] { i } else { best });
        assert_eq!(tok, argmax as i64);
        seq.push(tok);
    }
    // top_k = 1 sampling is greedy whatever the temperature.
    let top1 = GenerateOptions {
        temperature: 2.0,
        top_k: 1,
        seed: 99,
        ..opts.clone()
    };
    assert_eq!(session.generate(&prompt, &top1).unwrap(), first);
}

/// The tiny Llama with a generic ONNX `Softmax` hanging off the logits (a
/// second output), as an unraised graph would have: no KV cache possible.
fn tiny_llama_with_onnx_softmax(seed: u64) -> Graph {
    let mut g = tiny_llama(seed);
    let logits = g.outputs[0].value;
    let softmax = Op::Onnx(OnnxOp {
        op_type: "Softmax".into(),
        attrs: Attrs::new(),
    });
    let probs = g.add(softmax, &[logits], act(VOCAB));
    g.add_output("probs", probs);
    g
}

#[test]
fn graphs_with_onnx_attention_generate_by_recomputing() {
    let mut fallback = Session::new(tiny_llama_with_onnx_softmax(10)).unwrap();
    assert!(!fallback.supports_kv_cache());
    assert!(matches!(
        fallback.prefill(&[vec![1, 2]]),
        Err(RuntimeError::Unsupported(_))
    ));
    assert!(fallback.decode_step(&[1]).is_err());
    let mut cached = Session::new(tiny_llama(10)).unwrap();
    let prompt = vec![5, 6, 7, 8];
    for opts in [
        GenerateOptions {
            max_new_tokens: 6,
            ..GenerateOptions::default()
        },
        GenerateOptions {
            max_new_tokens: 6,
            temperature: 1.0,
            seed: 17,
            ..GenerateOptions::default()
        },
    ] {
        let a = fallback.generate(&prompt, &opts).unwrap();
        let b = cached.generate(&prompt, &opts).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn sampling_with_a_seed_is_reproducible() {
    let mut session = Session::new(tiny_llama(5)).unwrap();
    let prompt = vec![1, 2, 3];
    let opts = |seed| GenerateOptions {
        max_new_tokens: 16,
        temperature: 1.5,
        top_k: 20,
        top_p: 0.95,
        seed,
        stop_tokens: vec![],
    };
    let runs: Vec<Vec<i64>> = (0..4)
        .map(|s| session.generate(&prompt, &opts(s)).unwrap())
        .collect();
    for (s, run) in runs.iter().enumerate() {
        assert_eq!(run, &session.generate(&prompt, &opts(s as u64)).unwrap());
        assert!(run.iter().all(|&t| (0..VOCAB as i64).contains(&t)));
    }
    assert!(
        runs.windows(2).any(|w| w[0] != w[1]),
        "different seeds, different samples"
    );
}

#[test]
fn stop_tokens_and_callbacks_end_generation() {
    let mut session = Session::new(tiny_llama(6)).unwrap();
    let prompt = vec![7, 8, 9];
    let greedy = GenerateOptions {
        max_new_tokens: 6,
        ..GenerateOptions::default()
    };
    let all = session.generate(&prompt, &greedy).unwrap();
    let stop_at = all.iter().position(|&t| t == all[2]).unwrap();
    let stopped = session
        .generate(
            &prompt,
            &GenerateOptions {
                stop_tokens: vec![all[2]],
                ..greedy.clone()
            },
        )
        .unwrap();
    assert_eq!(stopped, all[..=stop_at]);
    let mut seen = Vec::new();
    let streamed = session
        .generate_with(&prompt, &greedy, |t| {
            seen.push(t);
            if seen.len() == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(streamed, all[..2]);
    assert_eq!(seen, streamed);
    let none = GenerateOptions {
        max_new_tokens: 0,
        ..greedy.clone()
    };
    assert!(session.generate(&prompt, &none).unwrap().is_empty());
    assert!(session.generate(&[], &greedy).is_err());
    let bad_p = GenerateOptions {
        top_p: 0.0,
        temperature: 1.0,
        ..greedy.clone()
    };
    assert!(session.generate(&prompt, &bad_p).is_err());
    let bad_t = GenerateOptions {
        temperature: -1.0,
        ..greedy
    };
    assert!(session.generate(&prompt, &bad_t).is_err());
}

#[test]
fn sampler_respects_top_k_and_top_p() {
    let logits = [0.0f32, 5.0, 4.9, -3.0, 4.8];
    let mut top2 = Sampler::new(&GenerateOptions {
        temperature: 1.0,
        top_k: 2,
        ..GenerateOptions::default()
    })
    .unwrap();
    for _ in 0..200 {
        assert!([1, 2].contains(&top2.sample(&logits).unwrap()));
    }
    // The top token alone has probability < 0.4, so top_p 0.4 keeps two.
    let mut top_p = Sampler::new(&GenerateOptions {
        temperature: 1.0,
        top_p: 0.4,
        seed: 3,
        ..GenerateOptions::default()
    })
    .unwrap();
    let picks: Vec<i64> = (0..200).map(|_| top_p.sample(&logits).unwrap()).collect();
    assert!(picks.iter().all(|t| [1, 2].contains(t)));
    assert!(picks.contains(&1) && picks.contains(&2));
    assert!(top_p.sample(&[1.0, f32::NAN]).is_err());
    assert!(top_p.sample(&[]).is_err());
}

// ---------------------------------------------------------------- Perplexity

/// Logits identically zero: every token has probability 1/V.
fn uniform_model() -> Graph {
    let mut g = Graph::new("uniform");
    let ids = g.add_input(
        "input_ids",
        TensorType::new(DType::I64, vec![Dim::sym("batch"), Dim::sym("seq")]),
    );
    let table = g.add_weight(
        "embed",
        TensorData::from_f32(vec![VOCAB, 4], &[0.5; VOCAB * 4]).unwrap(),
    );
    let x = g.add(Op::Embedding, &[table, ids], act(4));
    let w = g.add_weight(
        "lm_head",
        TensorData::from_f32(vec![VOCAB, 4], &[0.0; VOCAB * 4]).unwrap(),
    );
    let logits = g.add(Op::LmHead, &[x, w], act(VOCAB));
    g.add_output("logits", logits);
    g
}

#[test]
fn perplexity_of_uniform_logits_is_the_vocab_size() {
    let session = Session::new(uniform_model()).unwrap();
    let tokens = random_ids(&mut Rng(7), 50);
    // Overlapping windows score every token but the first; disjoint ones
    // (stride = window) cannot score the first token of each later window.
    for (window, stride, scored) in [(8, 3, 49), (8, 8, 43), (64, 1, 49), (2, 1, 49)] {
        let p = perplexity(&session, &tokens, &PerplexityOptions { window, stride }).unwrap();
        assert_eq!(p.tokens_scored, scored, "window {window} stride {stride}");
        assert!((p.mean_nll - (VOCAB as f64).ln()).abs() < 1e-9);
        assert!((p.ppl - VOCAB as f64).abs() < 1e-6, "ppl {}", p.ppl);
    }
}

/// The sliding-window rule written out directly: token `p` is scored by the
/// first window `[begin, begin + W)` that contains it past its first token.
fn naive_windowed_nll(
    session: &Session,
    tokens: &[i64],
    window: usize,
    stride: usize,
) -> (usize, f64) {
    let mut scored = vec![false; tokens.len()];
    let (mut count, mut sum) = (0, 0.0);
    let mut begin = 0;
    loop {
        let end = (begin + window).min(tokens.len());
        let logits = session.forward(&[tokens[begin..end].to_vec()]).unwrap();
        for p in begin + 1..end {
            if !scored[p] {
                scored[p] = true;
                let row: Vec<f64> = position(&logits, 0, p - 1 - begin)
                    .iter()
                    .map(|&x| f64::from(x))
                    .collect();
                let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
                sum += lse - row[tokens[p] as usize];
                count += 1;
            }
        }
        if end == tokens.len() {
            return (count, sum / count as f64);
        }
        begin += stride;
    }
}

#[test]
fn perplexity_scores_each_token_once_with_window_context() {
    let session = Session::new(tiny_llama(8)).unwrap();
    let tokens = random_ids(&mut Rng(9), 23);
    for (window, stride) in [(23, 23), (8, 8), (8, 3), (5, 1)] {
        let p = perplexity(&session, &tokens, &PerplexityOptions { window, stride }).unwrap();
        let (count, mean) = naive_windowed_nll(&session, &tokens, window, stride);
        assert_eq!(p.tokens_scored, count);
        assert!((p.mean_nll - mean).abs() < 1e-6, "{} vs {mean}", p.mean_nll);
        assert!((p.ppl - mean.exp()).abs() < 1e-6 * mean.exp());
    }
    let bad = |window, stride| {
        perplexity(&session, &tokens, &PerplexityOptions { window, stride }).is_err()
    };
    assert!(bad(1, 1) && bad(8, 0) && bad(8, 9));
    assert!(
        perplexity(
            &session,
            &[1],
            &PerplexityOptions {
                window: 4,
                stride: 4
            }
        )
        .is_err()
    );
    assert!(
        perplexity(
            &session,
            &[1, VOCAB as i64],
            &PerplexityOptions {
                window: 4,
                stride: 4
            }
        )
        .is_err()
    );
}

// ---------------------------------------------------------------- Tokenizer

/// GPT-2's byte → printable character table.
fn byte_chars() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap()
            }
        })
        .collect()
}

/// 256 byte tokens, a few merges, and `<|endoftext|>` as a control token.
fn tiny_bpe(bos: bool, pre: BpePreTokenizer) -> Tokenizer {
    let mut tokens: Vec<String> = byte_chars().into_iter().map(String::from).collect();
    let merges: Vec<String> = [
        "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "1 2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for m in &merges {
        tokens.push(m.replace(' ', ""));
    }
    tokens.push("<|endoftext|>".into());
    let mut types = vec![1; tokens.len()];
    *types.last_mut().unwrap() = 3;
    let eot = (tokens.len() - 1) as u32;
    Tokenizer::from_gguf_bpe_with(tokens, merges, types, bos.then_some(eot), Some(eot), pre)
        .unwrap()
}

#[test]
fn gguf_bpe_tokenizer_round_trips() {
    let tok = tiny_bpe(false, BpePreTokenizer::Gpt2);
    assert_eq!(tok.vocab_size(), 256 + 8 + 1);
    let hello = tok.token_to_id("hello").unwrap();
    let eot = tok.token_to_id("<|endoftext|>").unwrap();
    assert_eq!(tok.eos_id(), Some(eot));
    let ids = tok.encode("hello world", false).unwrap();
    assert_eq!(ids[0], hello);
    assert_eq!(ids[1], tok.token_to_id("Ġwor").unwrap());
    assert_eq!(tok.decode(&ids, false).unwrap(), "hello world");
    for text in [
        "héllo, 日本語!  two  spaces\n",
        "",
        "12 + 34",
        "hello<|endoftext|>again",
    ] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
    let ids = tok.encode("hello<|endoftext|>", false).unwrap();
    assert_eq!(ids, [hello, eot]);
    assert_eq!(tok.decode(&ids, true).unwrap(), "hello");
    assert_eq!(tok.id_to_token(hello).as_deref(), Some("hello"));
    // No BOS configured: add_special_tokens adds nothing.
    assert_eq!(tok.encode("hello", true).unwrap(), [hello]);
    assert!(tok.decode(&[tok.vocab_size() as i64], false).is_err());
    assert!(tok.decode(&[-1], false).is_err());
}

#[test]
fn gguf_bpe_special_tokens_and_pre_tokenizers() {
    let with_bos = tiny_bpe(true, BpePreTokenizer::Gpt2);
    let eot = with_bos.bos_id().unwrap();
    let plain = with_bos.encode("hello", false).unwrap();
    let with = with_bos.encode("hello", true).unwrap();
    assert_eq!(with[0], eot);
    assert_eq!(with[1..], plain[..]);
    // GPT-2 merges "12"; SmolLM's pre-tokenizer splits every digit first.
    let twelve = with_bos.token_to_id("12").unwrap();
    assert_eq!(with_bos.encode("12", false).unwrap(), [twelve]);
    let digits = tiny_bpe(false, BpePreTokenizer::IndividualDigits);
    let one = digits.token_to_id("1").unwrap();
    let two = digits.token_to_id("2").unwrap();
    assert_eq!(digits.encode("12", false).unwrap(), [one, two]);
    assert_eq!(
        BpePreTokenizer::from_gguf_name("smollm"),
        Some(BpePreTokenizer::IndividualDigits)
    );
    assert_eq!(
        BpePreTokenizer::from_gguf_name("gpt2"),
        Some(BpePreTokenizer::Gpt2)
    );
}

#[test]
fn text_stream_waits_for_whole_characters() {
    let tok = tiny_bpe(false, BpePreTokenizer::Gpt2);
    let text = "hello 日本 world";
    let ids = tok.encode(text, false).unwrap();
    let mut stream = TextStream::new(false);
    let mut pieces = Vec::new();
    for &id in &ids {
        pieces.push(stream.push(&tok, id).unwrap());
    }
    pieces.push(stream.finish(&tok).unwrap());
    assert_eq!(pieces.concat(), text);
    // "日" is three byte tokens: the first two emit nothing.
    assert!(pieces.iter().any(|p| p.is_empty()));
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')));
}

#[test]
fn tokenizer_errors() {
    let bytes: Vec<String> = byte_chars().into_iter().map(String::from).collect();
    let bad_merge = Tokenizer::from_gguf_bpe(bytes.clone(), vec!["abc".into()], vec![], None, None);
    assert!(matches!(bad_merge, Err(RuntimeError::Tokenizer(_))));
    let bad_types = Tokenizer::from_gguf_bpe(bytes.clone(), vec![], vec![1, 1], None, None);
    assert!(matches!(bad_types, Err(RuntimeError::Tokenizer(_))));
    let bad_bos = Tokenizer::from_gguf_bpe(bytes, vec![], vec![], Some(999), None);
    assert!(matches!(bad_bos, Err(RuntimeError::Tokenizer(_))));
    assert!(matches!(
        Tokenizer::from_bytes(b"{not json"),
        Err(RuntimeError::Tokenizer(_))
    ));
    let missing = Tokenizer::from_file(std::path::Path::new("/nonexistent/tokenizer.json"));
    assert!(matches!(missing, Err(RuntimeError::Tokenizer(m)) if m.contains("/nonexistent")));
}
