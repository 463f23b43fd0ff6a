//! CrossEntropy (summed token loss and counted tokens) and its backward.
//!
//! Every row's log-softmax is max-subtracted with its sums in f64; positions
//! whose target is `ignore_index` contribute nothing and are not counted.

use rayon::prelude::*;

use super::not_differentiable;
use crate::ops::high::kernels::{consistent, f32_data};
use crate::{RuntimeError, Tensor};

/// Logits and targets, checked against each other.
struct Rows<'t> {
    /// `[rows, vocab]`, row-major.
    logits: &'t [f32],
    /// One per row.
    targets: &'t [i64],
    /// The last axis of the logits.
    vocab: usize,
}

impl Rows<'_> {
    /// Whether row `row`'s target is a class (not `ignore`), and which.
    fn class(&self, row: usize, ignore: i64) -> Option<usize> {
        let t = self.targets[row];
        (t != ignore).then_some(t as usize)
    }
}

/// `ln Σ exp(x)` of one row of logits, max-subtracted, summed in f64.
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln()
}

/// Checks `logits [.., V]` (f32) and `targets` (integers, the logits' shape
/// without its last axis, each in `0..V` or `ignore`).
fn rows<'t>(
    ignore: i64,
    logits: &'t Tensor,
    targets: &'t Tensor,
) -> Result<Rows<'t>, RuntimeError> {
    let data = f32_data(logits, "CrossEntropy logits")?;
    let Some((&vocab, lead)) = logits.shape.split_last() else {
        return Err(RuntimeError::Shape(
            "CrossEntropy logits must be [.., vocab], got a scalar".into(),
        ));
    };
    let ts = targets.as_i64("CrossEntropy targets")?;
    consistent(targets, "CrossEntropy targets")?;
    if targets.shape != lead {
        return Err(RuntimeError::Shape(format!(
            "CrossEntropy targets are {:?}, expected {lead:?} to match logits {:?}",
            targets.shape, logits.shape
        )));
    }
    let bad = ts
        .iter()
        .enumerate()
        .find(|&(_, &t)| t != ignore && usize::try_from(t).map_or(true, |c| c >= vocab));
    if let Some((pos, &t)) = bad {
        return Err(RuntimeError::Input(format!(
            "CrossEntropy target {t} at flat position {pos} is outside 0..{vocab} \
             and is not ignore_index {ignore}"
        )));
    }
    Ok(Rows {
        logits: data,
        targets: ts,
        vocab,
    })
}

/// `[loss_sum, count]`, both f32 scalars of shape `[]`: the summed negative
/// log-likelihood of the targets under `softmax(logits)` over the positions
/// whose target is not `ignore`, and the number of those positions.
///
/// A target outside `0..V` that is not `ignore` is an input error naming its
/// flat position and value.
pub(crate) fn cross_entropy(
    ignore: i64,
    logits: &Tensor,
    targets: &Tensor,
) -> Result<Vec<Tensor>, RuntimeError> {
    let r = rows(ignore, logits, targets)?;
    let losses: Vec<Option<f64>> = (0..r.targets.len())
        .into_par_iter()
        .map(|row| {
            let class = r.class(row, ignore)?;
            let x = &r.logits[row * r.vocab..(row + 1) * r.vocab];
            Some(log_sum_exp(x) - x[class] as f64)
        })
        .collect();
    // Summed in row order so the result does not depend on the thread count.
    let (sum, count) = losses
        .iter()
        .flatten()
        .fold((0.0f64, 0usize), |(s, n), &l| (s + l, n + 1));
    Ok(vec![
        Tensor::f32(vec![], vec![sum as f32])?,
        Tensor::f32(vec![], vec![count as f32])?,
    ])
}

/// The gradient of `loss_sum` with respect to the logits, scaled by `dy`
/// (the scalar gradient of `loss_sum`): `dy·(softmax − onehot)` on counted
/// rows, 0 on ignored rows. Only operand 0 (the logits) is differentiable.
pub(super) fn cross_entropy_vjp(
    ignore: i64,
    fwd: &[&Tensor],
    dy: &Tensor,
    wrt: &[usize],
) -> Result<Vec<Tensor>, RuntimeError> {
    let [logits, targets] = fwd else {
        return Err(RuntimeError::Shape(format!(
            "CrossEntropy takes 2 operands (logits, targets), got {}",
            fwd.len()
        )));
    };
    if let Some(&w) = wrt.iter().find(|&&w| w != 0) {
        return Err(not_differentiable("CrossEntropy", w, "targets"));
    }
    let r = rows(ignore, logits, targets)?;
    let scale = match f32_data(dy, "CrossEntropy loss gradient")? {
        [g] => *g as f64,
        _ => {
            return Err(RuntimeError::Shape(format!(
                "CrossEntropy loss gradient must be a scalar, is {:?}",
                dy.shape
            )));
        }
    };
    let mut grad = vec![0.0f32; r.logits.len()];
    if r.vocab > 0 {
        grad.par_chunks_mut(r.vocab)
            .enumerate()
            .for_each(|(row, g)| {
                let Some(class) = r.class(row, ignore) else {
                    return;
                };
                let x = &r.logits[row * r.vocab..(row + 1) * r.vocab];
                let lse = log_sum_exp(x);
                for (gi, &xi) in g.iter_mut().zip(x) {
                    *gi = (scale * (xi as f64 - lse).exp()) as f32;
                }
                g[class] = (scale * ((x[class] as f64 - lse).exp() - 1.0)) as f32;
            });
    }
    let out = Tensor::f32(logits.shape.clone(), grad)?;
    Ok(wrt.iter().map(|_| out.clone()).collect())
}
