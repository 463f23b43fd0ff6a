//! The model interface the scorers use, and its CPU and CUDA implementations.

use crate::cuda::CudaSession;
use crate::{ATTENTION_MASK, ExecState, Executor, GenerateOptions, POSITION_IDS, Session};

use super::EvalError;
use super::logprob::log_softmax_at;

/// Logits of a batch: `data` is `[rows, seq, vocab]`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    /// The values.
    pub data: Vec<f32>,
    /// Sequence length of every row.
    pub seq: usize,
    /// Vocabulary size.
    pub vocab: usize,
}

impl Logits {
    /// The logits row of `row`'s token at `pos`.
    pub fn at(&self, row: usize, pos: usize) -> &[f32] {
        let start = (row * self.seq + pos) * self.vocab;
        &self.data[start..start + self.vocab]
    }
}

/// What the scorers need from a model.
pub trait LanguageModel {
    /// A short name of the back end for reports (`cpu`, `cuda`).
    fn backend(&self) -> &'static str;

    /// Logits of full passes over `rows` (equal lengths, each from position 0).
    fn forward(&mut self, rows: &[Vec<i64>]) -> Result<Logits, EvalError>;

    /// `log p(cont[j] | prefix, cont[..j])` for every continuation, running
    /// the prefix once and reusing its state; `None` when this model cannot
    /// reuse a prefix (the caller then runs padded full passes).
    fn continuations_after(
        &mut self,
        _prefix: &[i64],
        _conts: &[&[i64]],
    ) -> Result<Option<Vec<Vec<f64>>>, EvalError> {
        Ok(None)
    }

    /// Up to `max_new` greedily chosen tokens after `prompt`.
    fn greedy(&mut self, prompt: &[i64], max_new: usize) -> Result<Vec<i64>, EvalError>;
}

/// The f32 CPU reference runtime.
pub struct CpuModel {
    session: Session,
}

impl CpuModel {
    /// Wraps a session.
    pub fn new(session: Session) -> CpuModel {
        CpuModel { session }
    }

    /// The session underneath.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl LanguageModel for CpuModel {
    fn backend(&self) -> &'static str {
        "cpu"
    }

    fn forward(&mut self, rows: &[Vec<i64>]) -> Result<Logits, EvalError> {
        let t = self.session.forward(rows)?;
        let seq = t.shape[1];
        let vocab = t.shape[2];
        let data = t.as_f32("logits")?.to_vec();
        Ok(Logits { data, seq, vocab })
    }

    /// Runs the prefix with the KV cache (or Liger state) filled, then each
    /// continuation but its last token from a copy of that state.
    fn continuations_after(
        &mut self,
        prefix: &[i64],
        conts: &[&[i64]],
    ) -> Result<Option<Vec<Vec<f64>>>, EvalError> {
        if !self.session.supports_kv_cache() || prefix.is_empty() {
            return Ok(None);
        }
        let exec = self.session.executor();
        let mut state = ExecState {
            liger_mode: self.session.liger_mode(),
            use_cache: true,
            ..ExecState::default()
        };
        let pre = run_cached(exec, prefix, 0, &mut state)?;
        let last = pre.at(0, prefix.len() - 1);
        let mut out = Vec::with_capacity(conts.len());
        for cont in conts {
            let Some((&first, _)) = cont.split_first() else {
                return Err(EvalError::Input("a continuation has no tokens".into()));
            };
            let mut lps = vec![log_softmax_at(last, first)?];
            if cont.len() > 1 {
                let mut st = state.clone();
                let l = run_cached(exec, &cont[..cont.len() - 1], prefix.len(), &mut st)?;
                for (j, &tok) in cont.iter().enumerate().skip(1) {
                    lps.push(log_softmax_at(l.at(0, j - 1), tok)?);
                }
            }
            out.push(lps);
        }
        Ok(Some(out))
    }

    fn greedy(&mut self, prompt: &[i64], max_new: usize) -> Result<Vec<i64>, EvalError> {
        let opts = GenerateOptions {
            max_new_tokens: max_new,
            ..GenerateOptions::default()
        };
        Ok(self.session.generate(prompt, &opts)?)
    }
}

/// One row of `ids` at absolute position `offset`, appending to `state`'s
/// caches; binds `attention_mask` and `position_ids` as [`Session`] does
/// (`session::token_inputs`).
fn run_cached(
    exec: &Executor,
    ids: &[i64],
    offset: usize,
    state: &mut ExecState,
) -> Result<Logits, EvalError> {
    let seq = ids.len();
    let inputs = exec.graph().inputs();
    let has = |n: &str| inputs.iter().any(|(_, g)| *g == n);
    let inputs = crate::session::token_inputs(
        ids.to_vec(),
        (1, seq),
        offset,
        has(ATTENTION_MASK),
        has(POSITION_IDS),
    )?;
    state.position_offset = offset;
    let t = exec
        .run(&inputs, state)?
        .into_iter()
        .next()
        .ok_or_else(|| EvalError::Input("the graph returned no outputs".into()))?;
    match t.shape[..] {
        [1, s, vocab] if s == seq => Ok(Logits {
            data: t.as_f32("logits")?.to_vec(),
            seq,
            vocab,
        }),
        _ => Err(EvalError::Input(format!(
            "logits are {:?}, expected [1, {seq}, vocab]",
            t.shape
        ))),
    }
}

/// The CUDA runtime (the `--emit cuda` plan); full passes only, no prefix reuse.
pub struct CudaModel {
    session: CudaSession,
}

impl CudaModel {
    /// Wraps a CUDA session.
    pub fn new(session: CudaSession) -> CudaModel {
        CudaModel { session }
    }
}

impl LanguageModel for CudaModel {
    fn backend(&self) -> &'static str {
        "cuda"
    }

    fn forward(&mut self, rows: &[Vec<i64>]) -> Result<Logits, EvalError> {
        let data = self.session.forward(rows)?;
        let seq = rows.first().map_or(0, Vec::len);
        let vocab = self.session.plan().model_info.vocab;
        if data.len() != rows.len() * seq * vocab {
            return Err(EvalError::Input(format!(
                "the CUDA runtime returned {} logits, expected {} × {seq} × {vocab}",
                data.len(),
                rows.len()
            )));
        }
        Ok(Logits { data, seq, vocab })
    }

    fn greedy(&mut self, prompt: &[i64], max_new: usize) -> Result<Vec<i64>, EvalError> {
        let (toks, _, _) = self.session.generate_greedy(prompt, max_new, &[], |_| {})?;
        Ok(toks)
    }
}
