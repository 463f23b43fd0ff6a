//! Perplexity of a model on a token sequence, with sliding windows.
//!
//! The sequence is scored in windows of `window` (W) tokens whose starts are
//! `stride` (S) apart, `1 ≤ S ≤ W`, as in the Hugging Face perplexity guide:
//! every window is one full forward pass, and each scores only the tokens no
//! earlier window scored — its last S tokens (fewer for the final window),
//! each predicted from the tokens before it in the window, so with at least
//! `W − S` tokens of context. The first window scores all of its predicted
//! tokens (every token but the very first of the sequence). A window's own
//! first token is never scored, since nothing in the window predicts it: with
//! `S < W` that token was scored by an earlier window, but with `S == W`
//! (disjoint windows, the cheapest setting) the first token of every window
//! after the first goes unscored, exactly as in the guide. A smaller stride
//! gives each token more context at more compute. Unlike the guide, which
//! averages per-window mean losses, the result is the exact mean negative
//! log-likelihood over all scored tokens, with log-softmax in f64.

use crate::{RuntimeError, Session};

/// How to cut the sequence into windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerplexityOptions {
    /// Tokens per forward pass (at least 2).
    pub window: usize,
    /// Distance between window starts (`1..=window`).
    pub stride: usize,
}

/// What [`perplexity`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Perplexity {
    /// Tokens whose likelihood was scored.
    pub tokens_scored: usize,
    /// Mean negative log-likelihood per scored token, in nats.
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub ppl: f64,
}

/// Perplexity of `session`'s model on `tokens` (see the module doc for the
/// windows); needs at least two tokens.
pub fn perplexity(
    session: &Session,
    tokens: &[i64],
    opts: &PerplexityOptions,
) -> Result<Perplexity, RuntimeError> {
    perplexity_with(session, tokens, opts, |_, _| {})
}

/// [`perplexity`], calling `on_window(done, total)` after each window.
pub fn perplexity_with(
    session: &Session,
    tokens: &[i64],
    opts: &PerplexityOptions,
    mut on_window: impl FnMut(usize, usize),
) -> Result<Perplexity, RuntimeError> {
    let PerplexityOptions { window, stride } = *opts;
    if window < 2 || stride == 0 || stride > window {
        return Err(RuntimeError::Input(format!(
            "perplexity needs window ≥ 2 and 1 ≤ stride ≤ window, got window {window}, stride {stride}"
        )));
    }
    if tokens.len() < 2 {
        return Err(RuntimeError::Input(format!(
            "perplexity needs at least 2 tokens, got {}",
            tokens.len()
        )));
    }
    let starts = window_starts(tokens.len(), window, stride);
    let mut nll_sum = 0.0f64;
    let mut scored = 0usize;
    let mut prev_end = 0usize;
    for (n, &begin) in starts.iter().enumerate() {
        let end = (begin + window).min(tokens.len());
        let logits = session.forward(&[tokens[begin..end].to_vec()])?;
        let vocab = logits.shape[2];
        let data = logits.as_f32("logits")?;
        // Token p is predicted by the logits at window position p - 1 - begin.
        let first = prev_end.max(begin + 1);
        for (p, &target) in tokens.iter().enumerate().take(end).skip(first) {
            let at = p - 1 - begin;
            let row = &data[at * vocab..(at + 1) * vocab];
            nll_sum += token_nll(row, target)?;
            scored += 1;
        }
        prev_end = end;
        on_window(n + 1, starts.len());
    }
    let mean_nll = nll_sum / scored as f64;
    Ok(Perplexity {
        tokens_scored: scored,
        mean_nll,
        ppl: mean_nll.exp(),
    })
}

/// Starts of the windows: `0, stride, 2·stride, …` up to the first window
/// that reaches the end of the sequence.
fn window_starts(len: usize, window: usize, stride: usize) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut begin = 0;
    loop {
        starts.push(begin);
        if begin + window >= len {
            return starts;
        }
        begin += stride;
    }
}

/// `−log softmax(row)[target]`, in f64 with the max subtracted; an input
/// error when `target` is outside the row or the logits hold NaN.
pub(crate) fn token_nll(row: &[f32], target: i64) -> Result<f64, RuntimeError> {
    let t = usize::try_from(target)
        .ok()
        .filter(|&t| t < row.len())
        .ok_or_else(|| {
            RuntimeError::Input(format!(
                "token id {target} is out of range for a vocabulary of {}",
                row.len()
            ))
        })?;
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let sum: f64 = row.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    let nll = max + sum.ln() - f64::from(row[t]);
    if nll.is_nan() {
        return Err(RuntimeError::Input("the model's logits contain NaN".into()));
    }
    Ok(nll)
}
