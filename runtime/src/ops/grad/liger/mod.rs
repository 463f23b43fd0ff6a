//! Backward of `LigerGate` and `LigerAttention` (forwards in `ops/liger/`).
//!
//! LigerAttention's backward runs per (batch row, KV head) in parallel, like
//! its forward: the window branch (`window.rs`), then the recurrence
//! (`recurrence.rs`) through the variant's feature maps and gate:
//!
//! - GLA, retention, linear: `q̃ = softmax(q)`, `k̃ = softmax(k)` over the head dim;
//! - HGRN2: `q̃ = softmax(q)`, `k̃ = 1 − e^{g}` (the key operand gets no gradient
//!   from the recurrence; it reaches the key projection through the gate);
//! - GSA: slot pass on raw q, k, softmax over slots, value pass, with
//!   `s = 1 − e^{g}` written into both passes.
//!
//! The gate's gradient from the recurrence is the reverse cumsum of `∂L/∂b`;
//! `LigerGate`'s backward carries it on to the key projection, so a linearized
//! layer's `k` gradient is the sum of the key path and the gate path.

mod recurrence;
mod window;

use ligerc_ir::{GateSpec, LigerSpec, LigerVariant};
use rayon::prelude::*;

use super::not_differentiable;
use crate::ops::high::kernels::{f32_data, rank3};
use crate::ops::liger::check_operands;
use crate::ops::liger::feature::softmax_rows;
use crate::{RuntimeError, Tensor};
use recurrence::{keyed_backward, reverse_cumsum, slot_backward, slot_forward};
use window::window_backward;

/// Backward of `LigerGate(k)`: `dk` from the gate gradient (only `wrt = [0]`).
///
/// `d logsigmoid(x)/dx = σ(−x)`; GSA's pooled bins and retention's head mean
/// spread their gradient evenly over the channels they average.
pub(super) fn gate_vjp(
    spec: &GateSpec,
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
) -> Result<Vec<Tensor>, RuntimeError> {
    if wrt.is_empty() {
        return Ok(Vec::new());
    }
    let [k] = fwd else {
        return Err(RuntimeError::Shape(format!(
            "LigerGate takes 1 operand, got {}",
            fwd.len()
        )));
    };
    let gate = crate::ops::liger::liger_gate(spec, k)?;
    if dy.shape != gate.shape {
        return Err(RuntimeError::Shape(format!(
            "LigerGate gradient is {:?}, the gate is {:?}",
            dy.shape, gate.shape
        )));
    }
    let ks = f32_data(k, "LigerGate key")?;
    let dys = f32_data(dy, "LigerGate gradient")?;
    let (d, width) = (spec.head_dim, spec.width());
    let norm = spec.normalizer as f32;
    let mut dk = vec![0.0f32; ks.len()];
    dk.par_chunks_mut(d)
        .zip(ks.par_chunks(d))
        .zip(dys.par_chunks(width))
        .for_each(|((dkh, kh), dyh)| {
            for (i, &g) in dyh.iter().enumerate() {
                let (lo, hi) = match spec.variant {
                    LigerVariant::Gsa => (i * d / width, ((i + 1) * d).div_ceil(width)),
                    LigerVariant::Retention => (0, d),
                    _ => (i, i + 1),
                };
                let mean = kh[lo..hi].iter().sum::<f32>() / (hi - lo) as f32;
                let slope = sigmoid(-mean) / norm / (hi - lo) as f32;
                dkh[lo..hi].iter_mut().for_each(|x| *x += g * slope);
            }
        });
    wrt.iter()
        .map(|&w| match w {
            0 => Tensor::f32(k.shape.clone(), dk.clone()),
            _ => Err(not_differentiable("LigerGate", w, "no such operand")),
        })
        .collect()
}

fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// One (batch row, KV head)'s operands or gradients, token-major:
/// `q`, `q_rot [T][G·D]`, `k`, `v`, `k_rot [T][D]`, `gate [T][width]`.
#[derive(Default)]
struct HeadRows {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    q_rot: Vec<f32>,
    k_rot: Vec<f32>,
    gate: Vec<f32>,
}

/// Backward of `LigerAttention(q, k, v, q_rot, k_rot [, gate])` from a zero
/// state (a training forward never continues a cache).
pub(super) fn liger_attention_vjp(
    spec: &LigerSpec,
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
) -> Result<Vec<Tensor>, RuntimeError> {
    let (batch, len) = check_operands(spec, fwd)?;
    let (d, kv_heads) = (spec.head_dim, spec.kv_heads);
    let groups = spec.heads / kv_heads;
    let width = spec.variant.gate_width(d, spec.slots);
    let widths = [
        groups * d,
        d,
        d,
        groups * d,
        d,
        if spec.variant.has_gate() { width } else { 0 },
    ];
    let dys = f32_data(dy, "LigerAttention output gradient")?;
    if rank3(dy, "LigerAttention output gradient")? != (batch, len, spec.heads * d) {
        return Err(RuntimeError::Shape(format!(
            "LigerAttention output gradient is {:?}, expected [{batch}, {len}, {}]",
            dy.shape,
            spec.heads * d
        )));
    }
    let data: Vec<&[f32]> = fwd
        .iter()
        .map(|t| t.as_f32("LigerAttention operand"))
        .collect::<Result<_, _>>()?;
    let gather = |x: &[f32], b: usize, j: usize, w: usize| -> Vec<f32> {
        let features = kv_heads * w;
        (0..len)
            .flat_map(|t| x[(b * len + t) * features + j * w..][..w].iter().copied())
            .collect()
    };
    let grads: Vec<HeadRows> = (0..batch * kv_heads)
        .into_par_iter()
        .map(|i| {
            let (b, j) = (i / kv_heads, i % kv_heads);
            let rows = HeadRows {
                q: gather(data[0], b, j, widths[0]),
                k: gather(data[1], b, j, widths[1]),
                v: gather(data[2], b, j, widths[2]),
                q_rot: gather(data[3], b, j, widths[3]),
                k_rot: gather(data[4], b, j, widths[4]),
                gate: data
                    .get(5)
                    .map_or_else(Vec::new, |g| gather(g, b, j, width)),
            };
            head_backward(spec, rows, &gather(dys, b, j, groups * d))
        })
        .collect();
    let mut out = Vec::with_capacity(wrt.len());
    for &w in wrt {
        if w >= fwd.len() {
            return Err(not_differentiable("LigerAttention", w, "no such operand"));
        }
        let mut full = vec![0.0f32; fwd[w].numel()];
        let hw = widths[w];
        for (i, g) in grads.iter().enumerate() {
            let (b, j) = (i / kv_heads, i % kv_heads);
            let part = match w {
                0 => &g.q,
                1 => &g.k,
                2 => &g.v,
                3 => &g.q_rot,
                4 => &g.k_rot,
                _ => &g.gate,
            };
            for t in 0..len {
                full[(b * len + t) * kv_heads * hw + j * hw..][..hw]
                    .copy_from_slice(&part[t * hw..(t + 1) * hw]);
            }
        }
        out.push(Tensor::f32(fwd[w].shape.clone(), full)?);
    }
    Ok(out)
}

/// `dx = y ⊙ (dy − ⟨y, dy⟩)` for every `width`-long row of a softmax output `y`.
fn softmax_backward(y: &[f32], dy: &[f32], width: usize) -> Vec<f32> {
    let mut dx = vec![0.0f32; y.len()];
    for ((o, y), g) in dx
        .chunks_mut(width)
        .zip(y.chunks(width))
        .zip(dy.chunks(width))
    {
        let inner: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
        for ((o, &yi), &gi) in o.iter_mut().zip(y).zip(g) {
            *o = yi * (gi - inner);
        }
    }
    dx
}

fn softmaxed(mut x: Vec<f32>, width: usize) -> Vec<f32> {
    softmax_rows(&mut x, width);
    x
}

/// Gradients of one (batch row, KV head) for `dy [T][G·D]`.
fn head_backward(spec: &LigerSpec, x: HeadRows, dy: &[f32]) -> HeadRows {
    let d = spec.head_dim;
    let groups = spec.heads / spec.kv_heads;
    let mut g = HeadRows {
        q: vec![0.0; x.q.len()],
        k: vec![0.0; x.k.len()],
        v: vec![0.0; x.v.len()],
        q_rot: vec![0.0; x.q_rot.len()],
        k_rot: vec![0.0; x.k_rot.len()],
        gate: vec![0.0; x.gate.len()],
    };
    window_backward(
        groups,
        d,
        spec.window,
        spec.mix_window as f32,
        (&x.q_rot, &x.k_rot, &x.v),
        dy,
        &mut g.q_rot,
        &mut g.k_rot,
        &mut g.v,
    );
    if spec.variant == LigerVariant::SwaOnly {
        return g;
    }
    let mix = spec.mix_linear as f32;
    let dout: Vec<f32> = dy.iter().map(|v| mix * v).collect();
    let add = |acc: &mut [f32], x: &[f32]| acc.iter_mut().zip(x).for_each(|(a, b)| *a += b);
    match spec.variant {
        LigerVariant::Gsa => {
            let m = spec.slots;
            let s: Vec<f32> = x.gate.iter().map(|gi| -gi.exp_m1()).collect();
            let ops = (
                x.q.as_slice(),
                x.k.as_slice(),
                s.as_slice(),
                x.gate.as_slice(),
            );
            let logits = slot_forward((groups, d, m), ops);
            let p = softmaxed(logits.clone(), m);
            let values = keyed_backward((groups, m, d), (&p, &s, &x.v, &x.gate), &dout);
            add(&mut g.v, &values.dv);
            let dlogits = softmax_backward(&p, &values.dq, m);
            let slots = slot_backward((groups, d, m), ops, &logits, &dlogits);
            g.q = slots.dq;
            g.k = slots.dk;
            let db: Vec<f64> = slots
                .db
                .iter()
                .zip(&values.db)
                .map(|(a, b)| a + b)
                .collect();
            let dg = reverse_cumsum(&db, m);
            for (i, out) in g.gate.iter_mut().enumerate() {
                let ds = slots.ds[i] + values.dk[i];
                *out = dg[i] - x.gate[i].exp() * ds;
            }
        }
        variant => {
            let q = softmaxed(x.q.clone(), d);
            let k = match variant {
                LigerVariant::Hgrn2 => x.gate.iter().map(|gi| -gi.exp_m1()).collect(),
                _ => softmaxed(x.k.clone(), d),
            };
            let decay: Vec<f32> = match variant {
                LigerVariant::Gla | LigerVariant::Hgrn2 => x.gate.clone(),
                LigerVariant::Retention => x
                    .gate
                    .iter()
                    .flat_map(|&gi| std::iter::repeat_n(gi, d))
                    .collect(),
                _ => vec![0.0; k.len()],
            };
            let r = keyed_backward((groups, d, d), (&q, &k, &x.v, &decay), &dout);
            add(&mut g.v, &r.dv);
            g.q = softmax_backward(&q, &r.dq, d);
            let dg = reverse_cumsum(&r.db, d);
            match variant {
                LigerVariant::Gla => {
                    g.gate = dg;
                    g.k = softmax_backward(&k, &r.dk, d);
                }
                LigerVariant::Hgrn2 => {
                    for (i, out) in g.gate.iter_mut().enumerate() {
                        *out = dg[i] - x.gate[i].exp() * r.dk[i];
                    }
                }
                LigerVariant::Retention => {
                    for (out, row) in g.gate.iter_mut().zip(dg.chunks(d)) {
                        *out = row.iter().sum();
                    }
                    g.k = softmax_backward(&k, &r.dk, d);
                }
                _ => g.k = softmax_backward(&k, &r.dk, d),
            }
        }
    }
    g
}
