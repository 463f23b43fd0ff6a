//! Text generation: token sampling and the generation loop.
//!
//! [`Session::generate`] extends one prompt token by token. With a KV cache
//! (graphs whose attention is the high-level `Attention` op) it runs one
//! prefill of the prompt, then one decode step per new token. A graph still
//! holding generic ONNX attention has no cache
//! ([`Session::supports_kv_cache`]): generation then reruns the full sequence
//! — prompt plus everything generated so far — for every new token, which
//! gives the same tokens at quadratic cost.
//!
//! Sampling ([`Sampler`]) is greedy at temperature 0; otherwise logits are
//! divided by the temperature, cut to the `top_k` most likely tokens, then to
//! the smallest set whose probability reaches `top_p`, and drawn with a small
//! seeded generator (SplitMix64), so a seed reproduces a run exactly.

use std::ops::ControlFlow;

use crate::{RuntimeError, Session};

/// How [`Session::generate`] picks and stops.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Softmax temperature; `0` means greedy (always the most likely token).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; `0` keeps all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches
    /// `top_p` (in `(0, 1]`; `1` keeps all).
    pub top_p: f32,
    /// Seed of the sampling generator.
    pub seed: u64,
    /// Generation ends after producing any of these (it is returned too).
    pub stop_tokens: Vec<i64>,
}

impl Default for GenerateOptions {
    /// 64 greedy tokens, no stop tokens.
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 64,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            stop_tokens: Vec::new(),
        }
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny, fast, well-mixed generator.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Picks the next token from a row of logits.
#[derive(Clone, Debug)]
pub struct Sampler {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    rng: SplitMix64,
}

impl Sampler {
    /// A sampler with `opts`' temperature, top-k, top-p and seed; refuses a
    /// negative or non-finite temperature and a `top_p` outside `(0, 1]`.
    pub fn new(opts: &GenerateOptions) -> Result<Sampler, RuntimeError> {
        if !(opts.temperature.is_finite() && opts.temperature >= 0.0) {
            return Err(RuntimeError::Input(format!(
                "temperature must be finite and non-negative, is {}",
                opts.temperature
            )));
        }
        if !(opts.top_p > 0.0 && opts.top_p <= 1.0) {
            return Err(RuntimeError::Input(format!(
                "top_p must be in (0, 1], is {}",
                opts.top_p
            )));
        }
        Ok(Sampler {
            temperature: opts.temperature,
            top_k: opts.top_k,
            top_p: opts.top_p,
            rng: SplitMix64::new(opts.seed),
        })
    }

    /// The token chosen from `logits` (one per vocabulary entry). NaN logits
    /// are an error; ties go to the lower id.
    pub fn sample(&mut self, logits: &[f32]) -> Result<i64, RuntimeError> {
        if logits.is_empty() {
            return Err(RuntimeError::Shape(
                "cannot sample from an empty vocabulary".into(),
            ));
        }
        if let Some(i) = logits.iter().position(|x| x.is_nan()) {
            return Err(RuntimeError::Input(format!("logit of token {i} is NaN")));
        }
        if self.temperature == 0.0 {
            return Ok(argmax(logits) as i64);
        }
        // Candidates, most likely first (stable: ties keep the lower id first).
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if self.top_k > 0 {
            order.truncate(self.top_k);
        }
        let t = f64::from(self.temperature);
        let max = f64::from(logits[order[0]]) / t;
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| (f64::from(logits[i]) / t - max).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        for p in &mut probs {
            *p /= total;
        }
        if self.top_p < 1.0 {
            let mut cumulative = 0.0;
            let mut keep = probs.len();
            for (n, p) in probs.iter().enumerate() {
                cumulative += p;
                if cumulative >= f64::from(self.top_p) {
                    keep = n + 1;
                    break;
                }
            }
            probs.truncate(keep);
            order.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut target = self.rng.next_f64() * total;
        for (n, p) in probs.iter().enumerate() {
            if target < *p {
                return Ok(order[n] as i64);
            }
            target -= p;
        }
        Ok(order[probs.len() - 1] as i64)
    }
}

/// Index of the largest value (the first one on ties).
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

impl Session {
    /// Generates up to `opts.max_new_tokens` tokens after `prompt` and returns
    /// them (a stop token that ended generation is the last one returned).
    pub fn generate(
        &mut self,
        prompt: &[i64],
        opts: &GenerateOptions,
    ) -> Result<Vec<i64>, RuntimeError> {
        self.generate_with(prompt, opts, |_| ControlFlow::Continue(()))
    }

    /// [`Session::generate`], calling `on_token` with each new token as soon
    /// as it is chosen (to stream text); returning `ControlFlow::Break` stops
    /// generation after that token.
    ///
    /// With a KV cache the session's cache holds the prompt and the generated
    /// tokens afterwards (the last token is not run through the model).
    pub fn generate_with(
        &mut self,
        prompt: &[i64],
        opts: &GenerateOptions,
        mut on_token: impl FnMut(i64) -> ControlFlow<()>,
    ) -> Result<Vec<i64>, RuntimeError> {
        if prompt.is_empty() {
            return Err(RuntimeError::Input(
                "generation needs a non-empty prompt".into(),
            ));
        }
        let mut sampler = Sampler::new(opts)?;
        let mut generated = Vec::new();
        if opts.max_new_tokens == 0 {
            return Ok(generated);
        }
        let cached = self.supports_kv_cache();
        let mut sequence = prompt.to_vec();
        let mut logits = if cached {
            self.prefill(&[sequence.clone()])?
        } else {
            self.forward(&[sequence.clone()])?
        };
        loop {
            let vocab = logits.shape[2];
            let seq = logits.shape[1];
            let row = &logits.as_f32("logits")?[(seq - 1) * vocab..seq * vocab];
            let token = sampler.sample(row)?;
            generated.push(token);
            let flow = on_token(token);
            if flow.is_break()
                || opts.stop_tokens.contains(&token)
                || generated.len() >= opts.max_new_tokens
            {
                return Ok(generated);
            }
            logits = if cached {
                self.decode_step(&[token])?
            } else {
                sequence.push(token);
                self.forward(&[sequence.clone()])?
            };
        }
    }
}
