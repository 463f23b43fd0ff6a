//! Liger ops on the CPU, in f32 (LIGER.md §2–§4): `LigerGate` (the forget gate
//! derived from the key projection) and `LigerAttention`
//! (`mix_window · SWA + mix_linear · GRM`).
//!
//! The recurrence (GRM) comes in three forms that agree to rounding
//! ([`LigerMode`]): the O(T²) quadratic reference, the chunk-parallel prefill
//! form and the token-by-token recurrent form. Work is split over
//! (batch row, KV head): the GQA group's query heads share one state, exactly
//! as upstream's `repeat_kv`'d per-query-head states would be.
//!
//! With `ExecState::use_cache` a node keeps a [`LigerState`] in
//! `ExecState::liger` (fixed-size memory plus a ring of the last `window + 1`
//! rotated keys and values) and continues from it; otherwise every run starts
//! from zero. This module reads and updates that state but never resets it.
//!
//! Files: `gate.rs` (LigerGate), `feature.rs` (feature maps per variant),
//! `swa.rs` (window branch), `gla_quadratic.rs` / `gla_chunked.rs` /
//! `gla_recurrent.rs` (the key-gated recurrence of GLA, HGRN2, retention and
//! linear), `gsa.rs` (gated slot attention), `head.rs` (one KV head, both
//! branches), `state.rs` (modes and decode state).

pub(crate) mod feature;
mod gate;
mod gla_chunked;
mod gla_quadratic;
mod gla_recurrent;
mod gsa;
mod head;
mod state;
mod swa;

use std::collections::hash_map::Entry;

use ligerc_ir::{LigerSpec, LigerVariant, NodeId};
use rayon::prelude::*;

use super::high;
use crate::{ExecState, RuntimeError, Tensor};
use head::{HeadInputs, run_head};
use high::kernels::{f32_data, rank3};
use state::HeadState;

pub(crate) use gate::liger_gate;
pub use state::{DEFAULT_CHUNK, LigerMode, LigerState};

/// Sizes of a gated linear recurrence on one KV head.
#[derive(Clone, Copy, Debug)]
struct Dims {
    /// Query heads per KV head.
    groups: usize,
    /// Tokens in this run.
    len: usize,
    /// Key (and query) channels: rows of the state.
    key: usize,
    /// Value channels: columns of the state.
    value: usize,
}

/// The operands of a gated linear recurrence, token-major: `q [T][G·key]`,
/// `k [T][key]`, `v [T][value]`, `g [T][key]` (log-gates, ≤ 0).
#[derive(Clone, Copy)]
struct Operands<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    g: &'a [f32],
}

impl<'a> Operands<'a> {
    /// The operands of token `t` alone.
    fn token(self, dims: Dims, t: usize) -> Operands<'a> {
        let (gk, dk, dv) = (dims.groups * dims.key, dims.key, dims.value);
        Operands {
            q: &self.q[t * gk..(t + 1) * gk],
            k: &self.k[t * dk..(t + 1) * dk],
            v: &self.v[t * dv..(t + 1) * dv],
            g: &self.g[t * dk..(t + 1) * dk],
        }
    }
}

/// Inclusive cumsum over tokens of the log-gates `g [len][width]`, in f64.
///
/// The chunked and quadratic forms weight a pair `(t, s)` by `e^{b_t − b_s}`;
/// in f32 that difference loses `ulp(|b_s|)` to cancellation (3e-5 once the
/// sum reaches −400, as with gates near −30), while the recurrent form has no
/// such error. Accumulating in f64 keeps the three forms within rounding of
/// each other; the differences are taken in f64 and exponentiated in f32.
fn cumsum(g: &[f32], width: usize, len: usize) -> Vec<f64> {
    let mut cum: Vec<f64> = g[..len * width].iter().map(|&x| f64::from(x)).collect();
    for t in 1..len {
        for d in 0..width {
            cum[t * width + d] += cum[(t - 1) * width + d];
        }
    }
    cum
}

/// The form one run evaluates the recurrence in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// O(T²), from a zero state, state untouched.
    Quadratic,
    /// Chunks of the given length, carrying the state.
    Chunked(usize),
    /// Token by token, carrying the state.
    Recurrent,
}

/// `LigerAttention(q, k, v, q_rot, k_rot [, gate])` → `[B, T, heads·head_dim]`.
///
/// Reads `state.liger_mode`; with `state.use_cache` continues from and updates
/// `state.liger[node]` (created on first use), otherwise starts from zero.
/// Operands are checked before any state is touched, so an error leaves the
/// state as it was.
pub(crate) fn liger_attention(
    spec: &LigerSpec,
    node: NodeId,
    inputs: &[&Tensor],
    state: &mut ExecState,
) -> Result<Tensor, RuntimeError> {
    let (batch, len) = check_operands(spec, inputs)?;
    let form = match (state.liger_mode, state.use_cache) {
        (LigerMode::Quadratic, false) => Form::Quadratic,
        (LigerMode::Quadratic, true) => Form::Chunked(DEFAULT_CHUNK),
        (LigerMode::Chunked { chunk: 0 }, _) => {
            return Err(RuntimeError::Unsupported(
                "LigerAttention: chunked mode needs a chunk of at least 1 token".into(),
            ));
        }
        (LigerMode::Chunked { chunk }, _) => Form::Chunked(chunk),
        (LigerMode::Recurrent, _) => Form::Recurrent,
    };
    if !state.use_cache {
        let mut fresh = LigerState::new(spec, batch);
        return compute(spec, form, inputs, batch, len, &mut fresh.heads);
    }
    let carried = match state.liger.entry(node) {
        Entry::Occupied(e) => {
            e.get().check(spec, batch)?;
            e.into_mut()
        }
        Entry::Vacant(e) => e.insert(LigerState::new(spec, batch)),
    };
    let out = compute(spec, form, inputs, batch, len, &mut carried.heads)?;
    carried.advance(len);
    Ok(out)
}

/// Checks the spec and the operands; returns `(batch, seq)`.
pub(crate) fn check_operands(
    spec: &LigerSpec,
    inputs: &[&Tensor],
) -> Result<(usize, usize), RuntimeError> {
    let d = spec.head_dim;
    if spec.kv_heads == 0 || d == 0 || !spec.heads.is_multiple_of(spec.kv_heads) {
        return Err(RuntimeError::Shape(format!(
            "LigerAttention needs heads ({}) a multiple of kv_heads ({}) and head_dim ({d}) > 0",
            spec.heads, spec.kv_heads
        )));
    }
    if spec.variant == LigerVariant::Gsa && (spec.slots == 0 || spec.slots > d) {
        return Err(RuntimeError::Shape(format!(
            "LigerAttention: GSA needs 1..={d} slots, has {}",
            spec.slots
        )));
    }
    if !spec.mix_window.is_finite() || !spec.mix_linear.is_finite() {
        return Err(RuntimeError::Shape(format!(
            "LigerAttention: mix weights must be finite, are {} and {}",
            spec.mix_window, spec.mix_linear
        )));
    }
    let gated = spec.variant.has_gate();
    let want = if gated { 6 } else { 5 };
    if inputs.len() != want {
        let gate = if gated { ", gate" } else { "" };
        return Err(RuntimeError::Shape(format!(
            "LigerAttention ({}) takes {want} operands (q, k, v, q_rot, k_rot{gate}), got {}",
            spec.variant,
            inputs.len()
        )));
    }
    let overflow = || RuntimeError::Shape(format!("LigerAttention: {spec:?} overflows"));
    let q_w = spec.heads.checked_mul(d).ok_or_else(overflow)?;
    let kv_w = spec.kv_heads.checked_mul(d).ok_or_else(overflow)?;
    let gate_w = spec
        .kv_heads
        .checked_mul(spec.variant.gate_width(d, spec.slots))
        .ok_or_else(overflow)?;
    let names = [
        ("q", q_w, "heads × head_dim"),
        ("k", kv_w, "kv_heads × head_dim"),
        ("v", kv_w, "kv_heads × head_dim"),
        ("q_rot", q_w, "heads × head_dim"),
        ("k_rot", kv_w, "kv_heads × head_dim"),
        ("gate", gate_w, "kv_heads × gate width"),
    ];
    let (batch, len, _) = rank3(inputs[0], "LigerAttention q")?;
    for (t, (name, width, what)) in inputs.iter().zip(names) {
        let label = format!("LigerAttention {name}");
        f32_data(t, &label)?;
        let (b, s, f) = rank3(t, &label)?;
        if (b, s) != (batch, len) || f != width {
            return Err(RuntimeError::Shape(format!(
                "{label} is {:?}, expected [{batch}, {len}, {width}] ({what})",
                t.shape
            )));
        }
    }
    if gated {
        let gate = f32_data(inputs[5], "LigerAttention gate")?;
        if let Some(bad) = gate.iter().find(|g| **g > 0.0) {
            return Err(RuntimeError::Shape(format!(
                "LigerAttention gate holds {bad}: log-space forget gates must be ≤ 0 (a NaN gate, from non-finite activations, propagates to the output instead)"
            )));
        }
    }
    Ok((batch, len))
}

/// Runs every (batch row, KV head) on its state in `heads` and assembles the
/// output `[B, T, heads·head_dim]`. The operands are already checked.
fn compute(
    spec: &LigerSpec,
    form: Form,
    inputs: &[&Tensor],
    batch: usize,
    len: usize,
    heads: &mut [HeadState],
) -> Result<Tensor, RuntimeError> {
    let (d, kv_heads) = (spec.head_dim, spec.kv_heads);
    let groups = spec.heads / kv_heads;
    let (q_w, kv_w) = (spec.heads * d, kv_heads * d);
    let width = spec.variant.gate_width(d, spec.slots);
    let data: Vec<&[f32]> = inputs
        .iter()
        .map(|t| t.as_f32("LigerAttention operand"))
        .collect::<Result<_, _>>()?;
    let rows = |x: &[f32], b: usize, features: usize, offset: usize, n: usize| -> Vec<f32> {
        (0..len)
            .flat_map(|t| x[(b * len + t) * features + offset..][..n].iter().copied())
            .collect()
    };
    let blocks: Vec<Vec<f32>> = heads
        .par_iter_mut()
        .enumerate()
        .map(|(i, head)| {
            let (b, j) = (i / kv_heads, i % kv_heads);
            let inputs = HeadInputs {
                q: rows(data[0], b, q_w, j * groups * d, groups * d),
                k: rows(data[1], b, kv_w, j * d, d),
                v: rows(data[2], b, kv_w, j * d, d),
                q_rot: rows(data[3], b, q_w, j * groups * d, groups * d),
                k_rot: rows(data[4], b, kv_w, j * d, d),
                gate: data
                    .get(5)
                    .map_or_else(Vec::new, |g| rows(g, b, kv_heads * width, j * width, width)),
            };
            run_head(spec, form, len, inputs, head)
        })
        .collect();
    let mut out = vec![0.0f32; batch * len * q_w];
    let block = groups * d;
    for (i, head_out) in blocks.iter().enumerate() {
        let (b, j) = (i / kv_heads, i % kv_heads);
        for t in 0..len {
            out[(b * len + t) * q_w + j * block..][..block]
                .copy_from_slice(&head_out[t * block..(t + 1) * block]);
        }
    }
    Tensor::f32(vec![batch, len, q_w], out)
}
