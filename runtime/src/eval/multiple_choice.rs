//! Zero-shot multiple choice scored by log-likelihood, with lm-eval's conventions.
//!
//! Each choice is a (context, continuation) pair, tokenized by
//! [`encode_pair`]. Its score is the summed log-probability of the
//! continuation's tokens, each given the context and the continuation tokens
//! before it. Inputs longer than `max_length + 1` tokens lose tokens from the
//! left, as in lm-eval (`(ctx ++ cont)[-(max_length+1):][:-1]`).
//!
//! * `acc`: the choice with the highest summed log-likelihood is the gold one.
//! * `acc_norm`: the same after dividing each log-likelihood by the UTF-8
//!   byte length of the request's continuation string, leading space
//!   included (OE-Eval's `acc_per_byte`; for ASCII continuations identical to
//!   per-character normalisation).
//! * `acc_per_char`: divided by the continuation's length in Unicode scalar
//!   values (Python's `len`), OE-Eval's `acc_per_char`.
//!
//! Ties go to the lowest choice index (`numpy.argmax`).
//!
//! How choices are run: when every choice of a question has the same context
//! and the model can reuse a prefix ([`LanguageModel::continuations_after`]),
//! the context runs once and each continuation runs from a copy of its state.
//! Otherwise (Winogrande's contexts differ per choice; generic-attention
//! graphs; the CUDA runtime) the choices run as one batch of full sequences,
//! right-padded to equal length: a causal model's logits at a position do not
//! depend on later tokens, so the padding never changes a scored logit.

use crate::Tokenizer;

use super::logprob::log_softmax_at;
use super::{EvalError, LanguageModel, Question, encode_pair};

/// How questions are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct McOptions {
    /// Most tokens the model reads per choice (lm-eval's `max_length`; 2048).
    pub max_length: usize,
    /// Most sequences per padded forward pass.
    pub batch: usize,
}

impl Default for McOptions {
    fn default() -> Self {
        McOptions {
            max_length: 2048,
            batch: 8,
        }
    }
}

/// The score of one choice.
#[derive(Clone, Debug, PartialEq)]
pub struct ChoiceScore {
    /// Summed log-likelihood of the continuation, in nats.
    pub loglik: f64,
    /// Continuation tokens scored.
    pub tokens: usize,
    /// UTF-8 bytes of the continuation string.
    pub bytes: usize,
    /// Unicode scalar values of the continuation string.
    pub chars: usize,
}

/// The scores of one question's choices and the predictions.
#[derive(Clone, Debug, PartialEq)]
pub struct QuestionScore {
    /// The request file's `doc_id`.
    pub doc_id: u64,
    /// Index of the correct choice.
    pub gold: usize,
    /// Per choice, by index.
    pub choices: Vec<ChoiceScore>,
    /// Argmax of the log-likelihoods.
    pub pred: usize,
    /// Argmax of the log-likelihoods per byte.
    pub pred_norm: usize,
    /// Argmax of the log-likelihoods per character.
    pub pred_per_char: usize,
}

/// A task's accuracies over its questions.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskScore {
    /// Questions scored.
    pub n: usize,
    /// Fraction with `pred == gold`.
    pub acc: f64,
    /// Fraction with `pred_norm == gold`.
    pub acc_norm: f64,
    /// Fraction with `pred_per_char == gold`.
    pub acc_per_char: f64,
    /// Every question's scores.
    pub questions: Vec<QuestionScore>,
}

/// Scores one question.
pub fn score_question(
    model: &mut dyn LanguageModel,
    tok: &Tokenizer,
    q: &Question,
    opts: &McOptions,
) -> Result<QuestionScore, EvalError> {
    if opts.max_length < 2 || opts.batch == 0 {
        return Err(EvalError::Input(format!(
            "max length {} (needs ≥ 2) or batch {} (needs ≥ 1) is out of range",
            opts.max_length, opts.batch
        )));
    }
    let pairs: Vec<(Vec<i64>, Vec<i64>)> = q
        .choices
        .iter()
        .map(|c| encode_pair(tok, &c.context, &c.continuation))
        .collect::<Result<_, _>>()?;
    if let Some((_, c)) = pairs.iter().find(|(_, c)| c.len() > opts.max_length) {
        return Err(EvalError::Input(format!(
            "doc_id {}: a continuation of {} tokens is longer than the max length {}",
            q.doc_id,
            c.len(),
            opts.max_length
        )));
    }
    let shared = pairs.iter().all(|(ctx, _)| *ctx == pairs[0].0);
    let fits = pairs
        .iter()
        .all(|(ctx, c)| ctx.len() + c.len() <= opts.max_length + 1);
    let mut logprobs = None;
    if shared && fits {
        let conts: Vec<&[i64]> = pairs.iter().map(|(_, c)| c.as_slice()).collect();
        logprobs = model.continuations_after(&pairs[0].0, &conts)?;
    }
    let logprobs = match logprobs {
        Some(lp) => lp,
        None => padded(model, &pairs, opts)?,
    };
    let choices: Vec<ChoiceScore> = q
        .choices
        .iter()
        .zip(&logprobs)
        .map(|(c, lp)| ChoiceScore {
            loglik: lp.iter().sum(),
            tokens: lp.len(),
            bytes: c.continuation.len(),
            chars: c.continuation.chars().count(),
        })
        .collect();
    Ok(QuestionScore {
        doc_id: q.doc_id,
        gold: q.gold,
        pred: first_max(choices.iter().map(|c| c.loglik)),
        pred_norm: first_max(choices.iter().map(|c| c.loglik / c.bytes as f64)),
        pred_per_char: first_max(choices.iter().map(|c| c.loglik / c.chars as f64)),
        choices,
    })
}

/// Scores every question, calling `on_question(done, total)` after each.
pub fn score_task(
    model: &mut dyn LanguageModel,
    tok: &Tokenizer,
    questions: &[Question],
    opts: &McOptions,
    mut on_question: impl FnMut(usize, usize),
) -> Result<TaskScore, EvalError> {
    let mut scores = Vec::with_capacity(questions.len());
    for (i, q) in questions.iter().enumerate() {
        scores.push(score_question(model, tok, q, opts)?);
        on_question(i + 1, questions.len());
    }
    let n = scores.len();
    let frac = |f: &dyn Fn(&QuestionScore) -> bool| {
        if n == 0 {
            0.0
        } else {
            scores.iter().filter(|s| f(s)).count() as f64 / n as f64
        }
    };
    Ok(TaskScore {
        n,
        acc: frac(&|s| s.pred == s.gold),
        acc_norm: frac(&|s| s.pred_norm == s.gold),
        acc_per_char: frac(&|s| s.pred_per_char == s.gold),
        questions: scores,
    })
}

/// Log-probabilities of each continuation from right-padded full passes.
fn padded(
    model: &mut dyn LanguageModel,
    pairs: &[(Vec<i64>, Vec<i64>)],
    opts: &McOptions,
) -> Result<Vec<Vec<f64>>, EvalError> {
    // The model reads all but the last token of (ctx ++ cont), left-truncated.
    let inputs: Vec<(Vec<i64>, &[i64])> = pairs
        .iter()
        .map(|(ctx, cont)| {
            let mut s: Vec<i64> = ctx.iter().chain(cont).copied().collect();
            let keep = s.len().min(opts.max_length + 1);
            s.drain(..s.len() - keep);
            s.pop();
            (s, cont.as_slice())
        })
        .collect();
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in inputs.chunks(opts.batch) {
        let width = chunk.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
        if width == 0 {
            return Err(EvalError::Input("a choice has no tokens to read".into()));
        }
        let rows: Vec<Vec<i64>> = chunk
            .iter()
            .map(|(s, _)| {
                let mut r = s.clone();
                r.resize(width, 0);
                r
            })
            .collect();
        let logits = model.forward(&rows)?;
        for (row, (s, cont)) in chunk.iter().enumerate() {
            // cont[j] is predicted at position len(s) − len(cont) + j.
            let base = s.len() + 1 - cont.len();
            let lps = cont
                .iter()
                .enumerate()
                .map(|(j, &t)| log_softmax_at(logits.at(row, base + j - 1), t))
                .collect::<Result<Vec<f64>, _>>()?;
            out.push(lps);
        }
    }
    Ok(out)
}

/// Index of the first maximum (`numpy.argmax`); NaN never wins.
fn first_max(values: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}
