//! Passkey retrieval: can the model repeat a number hidden deep in filler text?
//!
//! The prompt is the standard one (Mohtashami & Jaggi 2023, "Landmark
//! Attention"; also LongLoRA's `passkey_retrivial.py`), lines joined by `\n`:
//!
//! ```text
//! There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there.
//! The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. … (k times)
//! The pass key is 68254. Remember it. 68254 is the pass key.
//! The grass is green. … (n − k times)
//! What is the pass key? The pass key is
//! ```
//!
//! For a target length L the filler count n is the largest whose prompt is at
//! most L tokens; the key is a uniform 5-digit number and the depth k/n is
//! uniform in [0, 1) (k = ⌊depth · n⌋), both drawn from SplitMix64 seeded with
//! the options' seed, so a run is reproducible. The model decodes greedily
//! ([`PasskeyOptions::max_new_tokens`] tokens, no BOS); a trial is correct
//! when the first run of digits in the decoded answer equals the key.

use crate::{SplitMix64, Tokenizer};

use super::{EvalError, LanguageModel};

const TASK: &str = "There is an important info hidden inside a lot of irrelevant text. \
Find it and memorize them. I will quiz you about the important information there.";
const FILLER: &str =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
const QUESTION: &str = "What is the pass key? The pass key is";

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasskeyOptions {
    /// Target prompt lengths in tokens.
    pub lengths: Vec<usize>,
    /// Trials per length.
    pub trials: usize,
    /// Seed of the keys and depths.
    pub seed: u64,
    /// Tokens decoded for the answer.
    pub max_new_tokens: usize,
}

/// One prompt and what the model answered.
#[derive(Clone, Debug, PartialEq)]
pub struct PasskeyTrial {
    /// Target length.
    pub length: usize,
    /// Actual prompt tokens.
    pub prompt_tokens: usize,
    /// Where the key sits, as a fraction of the filler (0 = first).
    pub depth: f64,
    /// The key.
    pub key: u32,
    /// The decoded answer.
    pub answer: String,
    /// Whether the answer's first number is the key.
    pub correct: bool,
}

/// Every trial, in order of length.
#[derive(Clone, Debug, PartialEq)]
pub struct PasskeyResult {
    /// The trials.
    pub trials: Vec<PasskeyTrial>,
}

impl PasskeyResult {
    /// `(length, correct, trials)` per target length, in the order run.
    pub fn accuracy_by_length(&self) -> Vec<(usize, usize, usize)> {
        let mut out: Vec<(usize, usize, usize)> = Vec::new();
        for t in &self.trials {
            match out.iter_mut().find(|(l, _, _)| *l == t.length) {
                Some(e) => {
                    e.1 += usize::from(t.correct);
                    e.2 += 1;
                }
                None => out.push((t.length, usize::from(t.correct), 1)),
            }
        }
        out
    }
}

/// The prompt text with `filler` repetitions, the key after `before` of them.
pub fn passkey_prompt(key: u32, filler: usize, before: usize) -> String {
    let before = before.min(filler);
    let rep = |n: usize| vec![FILLER; n].join(" ");
    let info = format!("The pass key is {key}. Remember it. {key} is the pass key.");
    [
        TASK.to_string(),
        rep(before),
        info,
        rep(filler - before),
        QUESTION.to_string(),
    ]
    .join("\n")
}

/// Runs every trial; `on_trial(done, total)` is called after each.
pub fn run_passkey(
    model: &mut dyn LanguageModel,
    tok: &Tokenizer,
    opts: &PasskeyOptions,
    mut on_trial: impl FnMut(usize, usize),
) -> Result<PasskeyResult, EvalError> {
    if opts.trials == 0 || opts.lengths.is_empty() || opts.max_new_tokens == 0 {
        return Err(EvalError::Input(
            "passkey needs at least one length, one trial and one new token".into(),
        ));
    }
    let mut rng = SplitMix64::new(opts.seed);
    let total = opts.lengths.len() * opts.trials;
    let mut trials = Vec::with_capacity(total);
    for &length in &opts.lengths {
        for _ in 0..opts.trials {
            let key = 10_000 + (rng.next_u64() % 90_000) as u32;
            let depth = rng.next_f64();
            let (ids, filler) = fit(tok, key, depth, length)?;
            let out = model.greedy(&ids, opts.max_new_tokens)?;
            let answer = tok.decode(&out, true)?;
            let correct = first_number(&answer) == Some(key.to_string());
            trials.push(PasskeyTrial {
                length,
                prompt_tokens: ids.len(),
                depth: if filler == 0 {
                    0.0
                } else {
                    depth_index(depth, filler) as f64 / filler as f64
                },
                key,
                answer,
                correct,
            });
            on_trial(trials.len(), total);
        }
    }
    Ok(PasskeyResult { trials })
}

fn depth_index(depth: f64, filler: usize) -> usize {
    ((depth * filler as f64) as usize).min(filler)
}

/// The longest prompt of at most `length` tokens: (ids, filler count).
fn fit(
    tok: &Tokenizer,
    key: u32,
    depth: f64,
    length: usize,
) -> Result<(Vec<i64>, usize), EvalError> {
    let encode = |n: usize| tok.encode(&passkey_prompt(key, n, depth_index(depth, n)), false);
    let base = encode(0)?;
    if base.len() > length {
        return Err(EvalError::Input(format!(
            "passkey length {length} is shorter than the prompt without filler ({} tokens)",
            base.len()
        )));
    }
    // Binary search on the filler count: tokens grow with it.
    let (mut lo, mut hi) = (0usize, length);
    let mut best = base;
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let ids = encode(mid)?;
        if ids.len() <= length {
            lo = mid;
            best = ids;
        } else {
            hi = mid - 1;
        }
    }
    Ok((best, lo))
}

/// The first run of ASCII digits in `s`.
fn first_number(s: &str) -> Option<String> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let digits: String = s[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_places_the_key() {
        let p = passkey_prompt(12345, 3, 1);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[1], FILLER);
        assert!(lines[2].starts_with("The pass key is 12345."));
        assert_eq!(lines[3].matches("grass").count(), 2);
        assert_eq!(lines[4], QUESTION);
    }

    #[test]
    fn first_number_takes_the_first_digit_run() {
        assert_eq!(first_number(" 12345. Remember"), Some("12345".into()));
        assert_eq!(first_number(" twelve"), None);
    }
}
