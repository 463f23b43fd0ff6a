//! Perplexity of documents with sliding windows, overall and by position bucket.
//!
//! The windows are those of [`crate::perplexity`] (and a unit test checks the
//! two agree): a document of N tokens is read in windows of W tokens whose
//! starts are S apart (`0, S, 2S, …`, up to the first window that reaches the
//! end), each one full forward pass from an empty state. A window scores the
//! tokens no earlier window scored, each predicted from the tokens before it
//! *in that window*; the first window scores tokens `1..min(W, N)`, and a
//! window's own first token is never scored (with `S == W` the first token
//! of every later window goes unscored; with `S < W` every token but the very
//! first is scored, each with at least `W − S` tokens of context).
//!
//! **Buckets.** Each scored token is also counted in the bucket of its
//! *position within its window* — the number of tokens the model saw before
//! it in that pass. Buckets are half-open `[lo, hi)` ranges; with
//! `W ≥ N` (one window) that is the absolute position in the document, which
//! is the long-context measurement: a model that uses distant context has a
//! lower loss in later buckets. A linearized model whose state forgets
//! everything beyond its window shows flat (or rising) loss past the window.
//! Tokens past the last boundary go to a final open bucket `[last, ∞)`.

use super::logprob::log_softmax_at;
use super::{EvalError, LanguageModel};

/// How documents are cut into windows and where the buckets split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowOptions {
    /// Tokens per forward pass (at least 2).
    pub window: usize,
    /// Distance between window starts (`1..=window`).
    pub stride: usize,
    /// Increasing bucket boundaries, the first usually 0 (empty: no buckets).
    pub buckets: Vec<usize>,
}

/// Loss over the scored tokens in one range of in-window positions.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    /// First position (inclusive).
    pub lo: usize,
    /// End position (exclusive); `None` for the open last bucket.
    pub hi: Option<usize>,
    /// Tokens scored in the range.
    pub tokens: usize,
    /// Sum of their negative log-likelihoods, in nats.
    pub nll_sum: f64,
}

impl Bucket {
    /// Mean negative log-likelihood (NaN when empty).
    pub fn mean_nll(&self) -> f64 {
        self.nll_sum / self.tokens as f64
    }
}

/// What [`score_text`] measured on one or more documents.
#[derive(Clone, Debug, PartialEq)]
pub struct TextScore {
    /// Tokens in the documents.
    pub tokens: usize,
    /// Tokens whose likelihood was scored.
    pub tokens_scored: usize,
    /// Sum of the scored tokens' negative log-likelihoods, in nats.
    pub nll_sum: f64,
    /// The buckets of [`WindowOptions::buckets`] (and an open last one when used).
    pub buckets: Vec<Bucket>,
}

impl TextScore {
    /// Mean negative log-likelihood per scored token.
    pub fn mean_nll(&self) -> f64 {
        self.nll_sum / self.tokens_scored as f64
    }

    /// `exp(mean_nll)`.
    pub fn perplexity(&self) -> f64 {
        self.mean_nll().exp()
    }

    /// The totals of several scores made with the same options.
    pub fn combine(scores: &[TextScore]) -> TextScore {
        let mut out = TextScore {
            tokens: 0,
            tokens_scored: 0,
            nll_sum: 0.0,
            buckets: scores
                .first()
                .map(|s| s.buckets.clone())
                .unwrap_or_default(),
        };
        for b in &mut out.buckets {
            b.tokens = 0;
            b.nll_sum = 0.0;
        }
        for s in scores {
            out.tokens += s.tokens;
            out.tokens_scored += s.tokens_scored;
            out.nll_sum += s.nll_sum;
            for (o, b) in out.buckets.iter_mut().zip(&s.buckets) {
                o.tokens += b.tokens;
                o.nll_sum += b.nll_sum;
            }
        }
        out
    }
}

/// Parses bucket boundaries: comma-separated, increasing, with an optional
/// `k` (×1024) suffix: `0,512,1k,2k,4k,8k`.
pub fn parse_buckets(spec: &str) -> Result<Vec<usize>, EvalError> {
    let mut out: Vec<usize> = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let (digits, scale) = match part.strip_suffix(['k', 'K']) {
            Some(d) => (d, 1024),
            None => (part, 1),
        };
        let v = digits
            .parse::<usize>()
            .ok()
            .and_then(|v| v.checked_mul(scale))
            .ok_or_else(|| {
                EvalError::Input(format!(
                    "bucket boundary `{part}` is not a number (like 512 or 2k)"
                ))
            })?;
        if out.last().is_some_and(|&l| v <= l) {
            return Err(EvalError::Input(format!(
                "bucket boundaries must increase: `{spec}`"
            )));
        }
        out.push(v);
    }
    Ok(out)
}

/// Scores one tokenized document (see the module doc); `on_window(done,
/// total)` is called after each window.
pub fn score_text(
    model: &mut dyn LanguageModel,
    tokens: &[i64],
    opts: &WindowOptions,
    mut on_window: impl FnMut(usize, usize),
) -> Result<TextScore, EvalError> {
    let WindowOptions { window, stride, .. } = *opts;
    if window < 2 || stride == 0 || stride > window {
        return Err(EvalError::Input(format!(
            "perplexity needs window ≥ 2 and 1 ≤ stride ≤ window, got window {window}, stride {stride}"
        )));
    }
    if tokens.len() < 2 {
        return Err(EvalError::Input(format!(
            "perplexity needs at least 2 tokens, got {}",
            tokens.len()
        )));
    }
    let mut buckets = make_buckets(&opts.buckets);
    let starts = window_starts(tokens.len(), window, stride);
    let mut nll_sum = 0.0;
    let mut scored = 0;
    let mut prev_end = 0;
    for (n, &begin) in starts.iter().enumerate() {
        let end = (begin + window).min(tokens.len());
        let logits = model.forward(&[tokens[begin..end].to_vec()])?;
        let first = prev_end.max(begin + 1);
        for (p, &target) in tokens.iter().enumerate().take(end).skip(first) {
            let nll = -log_softmax_at(logits.at(0, p - 1 - begin), target)?;
            nll_sum += nll;
            scored += 1;
            let pos = p - begin;
            if let Some(b) = buckets
                .iter_mut()
                .find(|b| pos >= b.lo && b.hi.is_none_or(|hi| pos < hi))
            {
                b.tokens += 1;
                b.nll_sum += nll;
            }
        }
        prev_end = end;
        on_window(n + 1, starts.len());
    }
    // The open bucket is reported only when something fell into it.
    if buckets
        .last()
        .is_some_and(|b| b.hi.is_none() && b.tokens == 0)
    {
        buckets.pop();
    }
    Ok(TextScore {
        tokens: tokens.len(),
        tokens_scored: scored,
        nll_sum,
        buckets,
    })
}

/// Buckets `[b0, b1), …, [b_last, ∞)` for the boundaries given.
fn make_buckets(bounds: &[usize]) -> Vec<Bucket> {
    let mut v: Vec<Bucket> = bounds
        .windows(2)
        .map(|w| Bucket {
            lo: w[0],
            hi: Some(w[1]),
            tokens: 0,
            nll_sum: 0.0,
        })
        .collect();
    if let Some(&last) = bounds.last() {
        v.push(Bucket {
            lo: last,
            hi: None,
            tokens: 0,
            nll_sum: 0.0,
        });
    }
    v
}

/// Window starts: `0, stride, 2·stride, …` up to the first window that
/// reaches the end (as in [`crate::perplexity`]).
fn window_starts(len: usize, window: usize, stride: usize) -> Vec<usize> {
    let mut starts = vec![0];
    while starts[starts.len() - 1] + window < len {
        let next = starts[starts.len() - 1] + stride;
        starts.push(next);
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_parse() {
        assert_eq!(
            parse_buckets("0,512,1k,2K").unwrap(),
            vec![0, 512, 1024, 2048]
        );
        assert!(parse_buckets("0,512,256").is_err());
        assert!(parse_buckets("0,x").is_err());
    }

    #[test]
    fn window_starts_cover_the_sequence() {
        assert_eq!(window_starts(10, 4, 4), vec![0, 4, 8]);
        assert_eq!(window_starts(10, 4, 2), vec![0, 2, 4, 6]);
        assert_eq!(window_starts(3, 4, 4), vec![0]);
    }
}
