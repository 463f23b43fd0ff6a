//! Inference sessions over a language-model graph: full forward passes and
//! incremental decoding with a KV cache.
//!
//! A [`Session`] runs a graph whose input `input_ids` (i64 `[batch, seq]`)
//! gives token ids and whose first output is the logits `[batch, seq, vocab]`.
//! Two optional inputs are bound automatically when the graph has them:
//! `attention_mask` (all ones over every position seen so far) and
//! `position_ids` (the absolute positions of this run's tokens). Any other
//! input is refused when the session is built.
//!
//! Incremental decoding ([`Session::prefill`], [`Session::decode_step`]) keeps
//! each high-level `Attention` node's keys and values, and each
//! `LigerAttention` node's constant-size recurrent state and window ring, in
//! the session's [`ExecState`] and advances the position offset that `Rope`
//! reads. A graph
//! still holding generic ONNX attention (`onnx.Softmax` or `onnx.Attention`)
//! recomputes every position from its inputs, so it cannot decode
//! incrementally: [`Session::supports_kv_cache`] is false, `prefill` and
//! `decode_step` refuse it, and generation falls back to a full forward pass
//! over the whole sequence per new token.

use std::collections::HashMap;

use ligerc_ir::{Graph, Op};

use crate::ops::LigerMode;
use crate::{ExecState, Executor, RuntimeError, Tensor};

/// Name of the token-id input.
pub const INPUT_IDS: &str = "input_ids";
/// Name of the optional padding-mask input.
pub const ATTENTION_MASK: &str = "attention_mask";
/// Name of the optional position input.
pub const POSITION_IDS: &str = "position_ids";

/// A language-model graph ready to run, with its decode state.
pub struct Session {
    exec: Executor,
    state: ExecState,
    kv_cache: bool,
    has_attention_mask: bool,
    has_position_ids: bool,
    /// Tokens per batch row held in the KV cache.
    cached: usize,
    /// Batch size of the cached sequences.
    cached_batch: usize,
}

impl Session {
    /// Prepares `graph` (verified, weights converted) for inference.
    pub fn new(graph: Graph) -> Result<Session, RuntimeError> {
        Session::from_executor(Executor::new(graph)?)
    }

    /// Wraps an already prepared executor; checks the graph's inputs and outputs.
    pub fn from_executor(exec: Executor) -> Result<Session, RuntimeError> {
        let graph = exec.graph();
        let mut has_ids = false;
        let mut has_attention_mask = false;
        let mut has_position_ids = false;
        for (_, name) in graph.inputs() {
            match name {
                INPUT_IDS => has_ids = true,
                ATTENTION_MASK => has_attention_mask = true,
                POSITION_IDS => has_position_ids = true,
                other => {
                    return Err(RuntimeError::Input(format!(
                        "graph `{}` has input `{other}`, which a session cannot bind \
                         (expected `{INPUT_IDS}`, optionally `{ATTENTION_MASK}` and `{POSITION_IDS}`)",
                        graph.name
                    )));
                }
            }
        }
        if !has_ids {
            return Err(RuntimeError::Input(format!(
                "graph `{}` has no `{INPUT_IDS}` input",
                graph.name
            )));
        }
        if graph.outputs.is_empty() {
            return Err(RuntimeError::Input(format!(
                "graph `{}` has no outputs (expected logits first)",
                graph.name
            )));
        }
        let kv_cache = !graph.node_ids().into_iter().any(|id| {
            matches!(graph.node(id).map(|n| &n.op),
                Some(Op::Onnx(o)) if o.op_type == "Softmax" || o.op_type == "Attention")
        });
        Ok(Session {
            exec,
            state: ExecState::default(),
            kv_cache,
            has_attention_mask,
            has_position_ids,
            cached: 0,
            cached_batch: 0,
        })
    }

    /// The executor underneath.
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// Whether the graph can decode incrementally with a KV cache or Liger
    /// state (no generic ONNX attention left in it).
    pub fn supports_kv_cache(&self) -> bool {
        self.kv_cache
    }

    /// Tokens per sequence currently held in the KV cache.
    pub fn cached_len(&self) -> usize {
        self.cached
    }

    /// How LigerAttention nodes compute (kept across [`Session::reset`]).
    pub fn liger_mode(&self) -> LigerMode {
        self.state.liger_mode
    }

    /// Sets how LigerAttention nodes compute full passes and prefills; decode
    /// steps always carry the recurrent state.
    pub fn set_liger_mode(&mut self, mode: LigerMode) {
        self.state.liger_mode = mode;
    }

    /// The decode state: KV caches and Liger states.
    pub fn state(&self) -> &ExecState {
        &self.state
    }

    /// Forgets the KV cache and the Liger states (keeps the Liger mode).
    pub fn reset(&mut self) {
        self.state = ExecState {
            liger_mode: self.state.liger_mode,
            ..ExecState::default()
        };
        self.cached = 0;
        self.cached_batch = 0;
    }

    /// Logits `[batch, seq, vocab]` of a full pass over `ids` (one row per
    /// sequence, all of the same length), without touching the KV cache.
    pub fn forward(&self, ids: &[Vec<i64>]) -> Result<Tensor, RuntimeError> {
        let mut state = ExecState {
            liger_mode: self.state.liger_mode,
            ..ExecState::default()
        };
        self.run(ids, 0, &mut state)
    }

    /// Starts incremental decoding: clears the cache, runs `ids` (equal-length
    /// rows) filling it, and returns their logits `[batch, seq, vocab]`.
    pub fn prefill(&mut self, ids: &[Vec<i64>]) -> Result<Tensor, RuntimeError> {
        self.require_cache()?;
        self.reset();
        self.extend(ids)
    }

    /// Runs one new token per sequence (`ids[b]` for row `b`) after the cached
    /// ones; returns its logits `[batch, 1, vocab]`.
    pub fn decode_step(&mut self, ids: &[i64]) -> Result<Tensor, RuntimeError> {
        self.require_cache()?;
        if self.cached == 0 {
            return Err(RuntimeError::Input(
                "decode_step needs a prefill first (the KV cache is empty)".into(),
            ));
        }
        if ids.len() != self.cached_batch {
            return Err(RuntimeError::Input(format!(
                "decode_step got {} tokens for a cache of {} sequences",
                ids.len(),
                self.cached_batch
            )));
        }
        let rows: Vec<Vec<i64>> = ids.iter().map(|&id| vec![id]).collect();
        self.extend(&rows)
    }

    /// Appends `ids` to the cached sequences. On error the cache is cleared,
    /// since some attention nodes may have appended and others not.
    fn extend(&mut self, ids: &[Vec<i64>]) -> Result<Tensor, RuntimeError> {
        let mut state = std::mem::take(&mut self.state);
        state.use_cache = true;
        let result = self.run(ids, self.cached, &mut state);
        match result {
            Ok(logits) => {
                self.state = state;
                self.cached += ids.first().map_or(0, Vec::len);
                self.cached_batch = ids.len();
                Ok(logits)
            }
            Err(e) => {
                self.reset();
                Err(e)
            }
        }
    }

    fn require_cache(&self) -> Result<(), RuntimeError> {
        if self.kv_cache {
            Ok(())
        } else {
            Err(RuntimeError::Unsupported(format!(
                "graph `{}` still has generic ONNX attention, so it has no KV cache; \
                 use forward (or generate, which recomputes the sequence per token)",
                self.exec.graph().name
            )))
        }
    }

    /// Binds the inputs for `ids` at absolute position `offset` and returns
    /// the first output, checked to be logits `[batch, seq, vocab]`.
    fn run(
        &self,
        ids: &[Vec<i64>],
        offset: usize,
        state: &mut ExecState,
    ) -> Result<Tensor, RuntimeError> {
        let batch = ids.len();
        let seq = ids.first().map_or(0, Vec::len);
        if batch == 0 || seq == 0 {
            return Err(RuntimeError::Input("no token ids given".into()));
        }
        if let Some((row, r)) = ids.iter().enumerate().find(|(_, r)| r.len() != seq) {
            return Err(RuntimeError::Input(format!(
                "sequence {row} has {} tokens, sequence 0 has {seq}: rows must be of equal length",
                r.len()
            )));
        }
        let inputs = token_inputs(
            ids.concat(),
            (batch, seq),
            offset,
            self.has_attention_mask,
            self.has_position_ids,
        )?;
        state.position_offset = offset;
        let logits = self
            .exec
            .run(&inputs, state)?
            .into_iter()
            .next()
            .ok_or_else(|| RuntimeError::Input("the graph returned no outputs".into()))?;
        logits.as_f32("logits")?;
        match logits.shape[..] {
            [b, s, _] if b == batch && s == seq => Ok(logits),
            _ => Err(RuntimeError::Shape(format!(
                "logits are {:?}, expected [{batch}, {seq}, vocab]",
                logits.shape
            ))),
        }
    }
}

/// The token inputs of a language-model graph for `ids` (`batch × seq`,
/// row-major) starting at absolute position `offset`: `input_ids`, and when the
/// graph takes them, an all-ones `attention_mask` over the `offset + seq`
/// positions seen and `position_ids` `offset..offset + seq` per row.
pub(crate) fn token_inputs(
    ids: Vec<i64>,
    (batch, seq): (usize, usize),
    offset: usize,
    attention_mask: bool,
    position_ids: bool,
) -> Result<HashMap<String, Tensor>, RuntimeError> {
    let mut inputs = HashMap::new();
    inputs.insert(INPUT_IDS.to_string(), Tensor::i64(vec![batch, seq], ids)?);
    if attention_mask {
        let total = offset + seq;
        inputs.insert(
            ATTENTION_MASK.to_string(),
            Tensor::i64(vec![batch, total], vec![1; batch * total])?,
        );
    }
    if position_ids {
        let positions: Vec<i64> = (0..batch)
            .flat_map(|_| (offset..offset + seq).map(|p| p as i64))
            .collect();
        inputs.insert(
            POSITION_IDS.to_string(),
            Tensor::i64(vec![batch, seq], positions)?,
        );
    }
    Ok(inputs)
}
