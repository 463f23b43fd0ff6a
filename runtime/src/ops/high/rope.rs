//! `Rope`: rotary position embedding, Hugging Face "rotate half" convention.
//!
//! The forward and its backward (`grad/rope.rs`) share [`RopeTables`] and
//! [`rotate`], so the backward turns by exactly the negated angles of the
//! forward, from the very same `cos`/`sin` values.

use ligerc_ir::RopeSpec;
use rayon::prelude::*;

use super::kernels::{f32_data, rank3};
use crate::{RuntimeError, Tensor};

/// Which way [`rotate`] turns each pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// By `+θ`: the forward.
    Forward,
    /// By `−θ` (the transposed rotation): the backward.
    Backward,
}

/// `cos θ` and `sin θ` per (token, frequency), shared by every batch row and
/// head of one `Rope` application.
pub(crate) struct RopeTables {
    /// `head_dim / 2`.
    half: usize,
    /// `[seq, half]`.
    cos: Vec<f32>,
    /// `[seq, half]`.
    sin: Vec<f32>,
}

impl RopeTables {
    /// The tables for `seq` tokens starting at absolute position
    /// `position_offset`. As in transformers, `inv_freq` and the position are
    /// f32 and their product is taken in f32 before `cos`/`sin`.
    pub(crate) fn new(spec: &RopeSpec, seq: usize, position_offset: usize) -> RopeTables {
        let half = spec.head_dim / 2;
        let inv_freq: Vec<f32> = spec.inv_freq().into_iter().map(|f| f as f32).collect();
        let mut cos = vec![0.0f32; seq * half];
        let mut sin = vec![0.0f32; seq * half];
        for t in 0..seq {
            let pos = (position_offset + t) as f32;
            for (i, &f) in inv_freq.iter().enumerate().take(half) {
                let angle = pos * f;
                cos[t * half + i] = angle.cos();
                sin[t * half + i] = angle.sin();
            }
        }
        RopeTables { half, cos, sin }
    }
}

/// Checks that `x` is `[batch, seq, heads·head_dim]` for `spec` with an even,
/// positive `head_dim`; returns `(seq, features)`.
pub(crate) fn check_rope_input(
    x: &Tensor,
    spec: &RopeSpec,
    what: &str,
) -> Result<(usize, usize), RuntimeError> {
    f32_data(x, what)?;
    let (_, seq, features) = rank3(x, what)?;
    let d = spec.head_dim;
    if d == 0 || !d.is_multiple_of(2) {
        return Err(RuntimeError::Shape(format!(
            "Rope head_dim must be even and positive, is {d}"
        )));
    }
    if spec.heads.checked_mul(d) != Some(features) {
        return Err(RuntimeError::Shape(format!(
            "{what} has {features} features, expected {} heads × {d}",
            spec.heads
        )));
    }
    Ok((seq, features))
}

/// Rotates every head of `xs` (`[batch, seq, features]`, checked by
/// [`check_rope_input`]) by `±θ` from `tables`.
///
/// For `i < d/2`, forward: `out[i] = x[i]·cos θ − x[i+d/2]·sin θ`,
/// `out[i+d/2] = x[i+d/2]·cos θ + x[i]·sin θ`; backward flips the sign of
/// every `sin θ` term.
pub(crate) fn rotate(
    xs: &[f32],
    tables: &RopeTables,
    seq: usize,
    features: usize,
    turn: Turn,
) -> Vec<f32> {
    let half = tables.half;
    let d = 2 * half;
    let mut out = vec![0.0f32; xs.len()];
    if features == 0 || seq == 0 || d == 0 {
        return out;
    }
    out.par_chunks_mut(features)
        .zip(xs.par_chunks(features))
        .enumerate()
        .for_each(|(row, (o, xr))| {
            let t = row % seq;
            let c = &tables.cos[t * half..(t + 1) * half];
            let s = &tables.sin[t * half..(t + 1) * half];
            for (oh, xh) in o.chunks_mut(d).zip(xr.chunks(d)) {
                let (x1, x2) = xh.split_at(half);
                let (o1, o2) = oh.split_at_mut(half);
                for i in 0..half {
                    match turn {
                        Turn::Forward => {
                            o1[i] = x1[i] * c[i] - x2[i] * s[i];
                            o2[i] = x2[i] * c[i] + x1[i] * s[i];
                        }
                        Turn::Backward => {
                            o1[i] = x1[i] * c[i] + x2[i] * s[i];
                            o2[i] = x2[i] * c[i] - x1[i] * s[i];
                        }
                    }
                }
            }
        });
    out
}

/// Rotates every head of `x [batch, seq, heads·head_dim]`; token `t` is at
/// absolute position `position_offset + t` (see [`rotate`] and
/// [`RopeTables::new`] for the exact arithmetic).
pub fn rope(x: &Tensor, spec: &RopeSpec, position_offset: usize) -> Result<Tensor, RuntimeError> {
    let (seq, features) = check_rope_input(x, spec, "Rope input")?;
    let xs = f32_data(x, "Rope input")?;
    let tables = RopeTables::new(spec, seq, position_offset);
    let out = rotate(xs, &tables, seq, features, Turn::Forward);
    Tensor::f32(x.shape.clone(), out)
}
