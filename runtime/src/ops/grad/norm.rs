//! Backward of RmsNorm and SwiGlu.
//!
//! RmsNorm, per row of `D` features with `r = 1/sqrt(mean(x²) + eps)` and
//! `y = w·(x·r)`: `dw = Σ_rows dy·x·r` and
//! `dx = r·w·dy − x·r³/D · Σ_j dy_j·w_j·x_j`. SwiGlu, `y = silu(g)·u` with
//! `σ = sigmoid(g)`: `dg = dy·u·σ·(1 + g·(1 − σ))`, `du = dy·g·σ`.

use rayon::prelude::*;

use crate::ops::high::kernels::f32_data;
use crate::{RuntimeError, Tensor};

/// Rows of RmsNorm handed to one rayon task when summing the weight gradient.
const NORM_ROWS: usize = 64;

/// Elements of SwiGlu handed to one rayon task.
const CHUNK: usize = 4096;

/// `r = 1/sqrt(mean(x²) + eps)` of one row, in f64.
///
/// Not the forward's f32 value: `dx` contains `1 − x²·r²/D`-like
/// cancellations (complete when `D = 1`, large whenever `eps` dominates the
/// mean square), which the f32 `r` would leave with a relative error of
/// `u·mean(x²)/eps`.
fn inv_rms(row: &[f32], eps: f64) -> f64 {
    let sum_sq: f64 = row.iter().map(|&x| x as f64 * x as f64).sum();
    1.0 / (sum_sq / row.len() as f64 + eps).sqrt()
}

/// Checks `x [.., D]`, `w [D]` and `dy` (shaped like `x`); returns `D`.
fn rms_dims(x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<usize, RuntimeError> {
    f32_data(x, "RmsNorm input")?;
    f32_data(w, "RmsNorm weight")?;
    f32_data(dy, "RmsNorm result gradient")?;
    let &dim = x
        .shape
        .last()
        .ok_or_else(|| RuntimeError::Shape("RmsNorm input is a scalar".into()))?;
    if w.shape != [dim] {
        return Err(RuntimeError::Shape(format!(
            "RmsNorm weight is {:?}, expected [{dim}] to match input {:?}",
            w.shape, x.shape
        )));
    }
    if dy.shape != x.shape {
        return Err(RuntimeError::Shape(format!(
            "RmsNorm result gradient is {:?}, expected {:?}",
            dy.shape, x.shape
        )));
    }
    Ok(dim)
}

/// Backward of `RmsNorm { eps }` (`x [.., D], w [D]`): gradients of `x` and
/// `w`, each only when `wrt` names it.
pub(super) fn rms_norm_vjp(
    eps: f64,
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
) -> Result<Vec<Tensor>, RuntimeError> {
    let [x, w] = fwd else {
        return Err(RuntimeError::Shape(format!(
            "RmsNorm takes 2 operands (input, weight), got {}",
            fwd.len()
        )));
    };
    let dim = rms_dims(x, w, dy)?;
    let (xs, ws, g) = (
        f32_data(x, "RmsNorm input")?,
        f32_data(w, "RmsNorm weight")?,
        f32_data(dy, "RmsNorm result gradient")?,
    );
    // The forward adds eps in f32.
    let eps = eps as f32 as f64;
    wrt.iter()
        .map(|&i| match i {
            0 => Tensor::f32(x.shape.clone(), rms_input_grad(xs, ws, g, dim, eps)),
            _ => Tensor::f32(w.shape.clone(), rms_weight_grad(xs, g, dim, eps)),
        })
        .collect()
}

/// `dx = r·w·dy − x·r³/D · Σ_j dy_j·w_j·x_j`, row by row (sums in f64).
fn rms_input_grad(xs: &[f32], ws: &[f32], g: &[f32], dim: usize, eps: f64) -> Vec<f32> {
    let mut dx = vec![0.0f32; xs.len()];
    if dim == 0 {
        return dx;
    }
    dx.par_chunks_mut(dim)
        .zip(xs.par_chunks(dim).zip(g.par_chunks(dim)))
        .for_each(|(dx, (x, gy))| {
            let r = inv_rms(x, eps);
            let proj: f64 = x
                .iter()
                .zip(gy)
                .zip(ws)
                .map(|((&xi, &gi), &wi)| xi as f64 * gi as f64 * wi as f64)
                .sum();
            let k = r * r * r * proj / dim as f64;
            for (((d, &xi), &gi), &wi) in dx.iter_mut().zip(x).zip(gy).zip(ws) {
                *d = (r * wi as f64 * gi as f64 - xi as f64 * k) as f32;
            }
        });
    dx
}

/// `dw = Σ_rows dy·x·r`, summed in f64 over fixed blocks of rows and then in
/// block order, so the result does not depend on the thread count.
fn rms_weight_grad(xs: &[f32], g: &[f32], dim: usize, eps: f64) -> Vec<f32> {
    if dim == 0 {
        return Vec::new();
    }
    let partials: Vec<Vec<f64>> = xs
        .par_chunks(dim * NORM_ROWS)
        .zip(g.par_chunks(dim * NORM_ROWS))
        .map(|(xb, gb)| {
            let mut acc = vec![0.0f64; dim];
            for (x, gy) in xb.chunks_exact(dim).zip(gb.chunks_exact(dim)) {
                let r = inv_rms(x, eps);
                for ((a, &xi), &gi) in acc.iter_mut().zip(x).zip(gy) {
                    *a += gi as f64 * xi as f64 * r;
                }
            }
            acc
        })
        .collect();
    let mut dw = vec![0.0f64; dim];
    for p in &partials {
        for (d, &v) in dw.iter_mut().zip(p) {
            *d += v;
        }
    }
    dw.into_iter().map(|v| v as f32).collect()
}

/// Backward of `SwiGlu` (`gate, up`): gradients of `gate` and `up`, each only
/// when `wrt` names it.
pub(super) fn swiglu_vjp(
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
) -> Result<Vec<Tensor>, RuntimeError> {
    let [gate, up] = fwd else {
        return Err(RuntimeError::Shape(format!(
            "SwiGlu takes 2 operands (gate, up), got {}",
            fwd.len()
        )));
    };
    let gs = f32_data(gate, "SwiGlu gate")?;
    let us = f32_data(up, "SwiGlu up")?;
    let g = f32_data(dy, "SwiGlu result gradient")?;
    if gate.shape != up.shape || dy.shape != gate.shape {
        return Err(RuntimeError::Shape(format!(
            "SwiGlu gate {:?}, up {:?} and result gradient {:?} must have one shape",
            gate.shape, up.shape, dy.shape
        )));
    }
    wrt.iter()
        .map(|&i| {
            let rule: fn(f32, f32, f32) -> f32 = if i == 0 { d_gate } else { d_up };
            let mut out = vec![0.0f32; gs.len()];
            out.par_chunks_mut(CHUNK)
                .zip(gs.par_chunks(CHUNK).zip(us.par_chunks(CHUNK)))
                .zip(g.par_chunks(CHUNK))
                .for_each(|((o, (gc, uc)), dc)| {
                    for (((o, &gv), &uv), &dv) in o.iter_mut().zip(gc).zip(uc).zip(dc) {
                        *o = rule(gv, uv, dv);
                    }
                });
            Tensor::f32(gate.shape.clone(), out)
        })
        .collect()
}

/// `∂/∂gate` of `silu(gate)·up`, times `dy`.
fn d_gate(gate: f32, up: f32, dy: f32) -> f32 {
    let sigmoid = 1.0 / (1.0 + (-gate).exp());
    dy * up * sigmoid * (1.0 + gate * (1.0 - sigmoid))
}

/// `∂/∂up` of `silu(gate)·up`, times `dy`.
fn d_up(gate: f32, _up: f32, dy: f32) -> f32 {
    let sigmoid = 1.0 / (1.0 + (-gate).exp());
    dy * gate * sigmoid
}
