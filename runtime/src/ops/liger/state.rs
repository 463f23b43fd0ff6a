//! What a LigerAttention node carries across incremental runs: per (batch row,
//! KV head) the recurrence's fixed-size fp32 memory and a ring buffer of the
//! last `window + 1` rotated keys and values for the window branch.
//!
//! Nothing here grows with the context: the memory is `D×D` (GSA: `D×M` plus
//! `M×D`) and the ring stops growing once it holds `window + 1` tokens.

use ligerc_ir::{LigerSpec, LigerVariant};

use crate::RuntimeError;

/// Chunk length of [`LigerMode::Chunked`] by default (fla `chunk_gla` uses 64).
pub const DEFAULT_CHUNK: usize = 64;

/// How a LigerAttention node evaluates its recurrence.
///
/// With `ExecState::use_cache` the node always carries state: `Recurrent` steps
/// token by token, and both `Chunked` and `Quadratic` run the chunked form
/// (with [`DEFAULT_CHUNK`] for `Quadratic`, which has no state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LigerMode {
    /// The O(T²) reference: global cumsum of the log-gates, every pair `(t, s ≤ t)`
    /// weighted by `exp(B_t − B_s)`. For tests.
    Quadratic,
    /// The chunk-parallel form (prefill): inter-chunk state, intra-chunk pairs
    /// weighted by `exp(b_t − b_s)` of in-chunk cumsums.
    Chunked {
        /// Tokens per chunk (at least 1).
        chunk: usize,
    },
    /// One token at a time on the constant-size state (decode).
    Recurrent,
}

impl Default for LigerMode {
    fn default() -> Self {
        LigerMode::Chunked {
            chunk: DEFAULT_CHUNK,
        }
    }
}

/// The last `capacity` rotated keys and values of one KV head, oldest first.
#[derive(Clone, Debug)]
pub(super) struct Ring {
    /// Tokens held at most (`window + 1`).
    capacity: usize,
    /// Features per token.
    width: usize,
    /// Physical slot of the oldest token once full (0 while filling).
    start: usize,
    /// Tokens held.
    len: usize,
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl Ring {
    fn new(capacity: usize, width: usize) -> Ring {
        Ring {
            capacity: capacity.max(1),
            width,
            start: 0,
            len: 0,
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Tokens held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Appends one token, dropping the oldest when full.
    pub(super) fn push(&mut self, key: &[f32], value: &[f32]) {
        let w = self.width;
        if self.len < self.capacity {
            self.keys.extend_from_slice(&key[..w]);
            self.values.extend_from_slice(&value[..w]);
            self.len += 1;
        } else {
            let at = self.start * w;
            self.keys[at..at + w].copy_from_slice(&key[..w]);
            self.values[at..at + w].copy_from_slice(&value[..w]);
            self.start = (self.start + 1) % self.capacity;
        }
    }

    /// Appends every token of `keys`, `values` (`[n][width]`) in order; only
    /// the last `capacity` can remain, so only those are copied.
    pub(super) fn extend(&mut self, keys: &[f32], values: &[f32]) {
        let w = self.width;
        let n = keys.len().checked_div(w).unwrap_or(0);
        for t in n.saturating_sub(self.capacity)..n {
            self.push(&keys[t * w..(t + 1) * w], &values[t * w..(t + 1) * w]);
        }
    }

    /// Appends the last `keep` tokens, oldest first, to `keys` and `values`.
    pub(super) fn copy_last(&self, keep: usize, keys: &mut Vec<f32>, values: &mut Vec<f32>) {
        let w = self.width;
        for i in self.len - keep.min(self.len)..self.len {
            let at = ((self.start + i) % self.capacity) * w;
            keys.extend_from_slice(&self.keys[at..at + w]);
            values.extend_from_slice(&self.values[at..at + w]);
        }
    }

    fn floats(&self) -> usize {
        self.keys.len() + self.values.len()
    }
}

/// The state of one (batch row, KV head), shared by the KV head's query heads.
#[derive(Clone, Debug)]
pub(super) struct HeadState {
    /// The recurrence's memory: `S` (`D×D`, rows = key channel) for the
    /// key-gated variants, `Hv` (`M×D`) for GSA, empty for swa-only.
    pub(super) memory: Vec<f32>,
    /// GSA's key memory `Hk` (`D×M`); empty for other variants.
    pub(super) slot_keys: Vec<f32>,
    /// The window branch's recent rotated keys and values.
    pub(super) ring: Ring,
}

impl HeadState {
    fn new(spec: &LigerSpec) -> HeadState {
        let d = spec.head_dim;
        let (memory, slot_keys) = match spec.variant {
            LigerVariant::SwaOnly => (0, 0),
            LigerVariant::Gsa => (spec.slots * d, d * spec.slots),
            _ => (d * d, 0),
        };
        HeadState {
            memory: vec![0.0; memory],
            slot_keys: vec![0.0; slot_keys],
            ring: Ring::new(spec.window.saturating_add(1), d),
        }
    }
}

/// The decode state of one LigerAttention node (in `ExecState::liger`).
#[derive(Clone, Debug)]
pub struct LigerState {
    spec: LigerSpec,
    batch: usize,
    seen: usize,
    /// Indexed by `batch_row · kv_heads + kv_head`.
    pub(super) heads: Vec<HeadState>,
}

impl LigerState {
    /// A zero state (no token seen) for `batch` sequences.
    pub(super) fn new(spec: &LigerSpec, batch: usize) -> LigerState {
        LigerState {
            spec: spec.clone(),
            batch,
            seen: 0,
            heads: (0..batch * spec.kv_heads)
                .map(|_| HeadState::new(spec))
                .collect(),
        }
    }

    /// Errors unless this state was built for `spec` and `batch` rows.
    pub(super) fn check(&self, spec: &LigerSpec, batch: usize) -> Result<(), RuntimeError> {
        if &self.spec != spec {
            return Err(RuntimeError::Shape(format!(
                "LigerAttention state was built for {:?}, the node now has {spec:?}",
                self.spec
            )));
        }
        if self.batch != batch {
            return Err(RuntimeError::Shape(format!(
                "LigerAttention state holds {} sequences, this run has {batch}",
                self.batch
            )));
        }
        Ok(())
    }

    /// Counts `tokens` more tokens as seen.
    pub(super) fn advance(&mut self, tokens: usize) {
        self.seen += tokens;
    }

    /// The op parameters the state was built for.
    pub fn spec(&self) -> &LigerSpec {
        &self.spec
    }

    /// Sequences (batch rows) in the state.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Tokens per sequence folded into the state so far.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Tokens per sequence the window ring holds now (at most `window + 1`).
    pub fn window_len(&self) -> usize {
        self.heads.first().map_or(0, |h| h.ring.len())
    }

    /// The recurrent memory of (`batch_row`, `kv_head`), row-major: `S` (`D×D`,
    /// rows = key channel) for GLA, HGRN2, retention and linear; GSA's value
    /// memory `Hv` (`M×D`); empty for swa-only. `None` out of range.
    pub fn memory(&self, batch_row: usize, kv_head: usize) -> Option<&[f32]> {
        self.head(batch_row, kv_head).map(|h| h.memory.as_slice())
    }

    /// GSA's key memory `Hk` (`D×M`, row-major) of (`batch_row`, `kv_head`);
    /// empty for other variants. `None` out of range.
    pub fn slot_keys(&self, batch_row: usize, kv_head: usize) -> Option<&[f32]> {
        self.head(batch_row, kv_head)
            .map(|h| h.slot_keys.as_slice())
    }

    /// f32 values held in total (memories and rings): bounded by
    /// `batch · kv_heads · (memory + 2·(window+1)·D)` whatever the context length.
    pub fn floats(&self) -> usize {
        self.heads
            .iter()
            .map(|h| h.memory.len() + h.slot_keys.len() + h.ring.floats())
            .sum()
    }

    fn head(&self, batch_row: usize, kv_head: usize) -> Option<&HeadState> {
        if batch_row >= self.batch || kv_head >= self.spec.kv_heads {
            return None;
        }
        self.heads.get(batch_row * self.spec.kv_heads + kv_head)
    }
}
