//! AdamW, the learning-rate schedule and global-norm gradient clipping.

use serde::{Deserialize, Serialize};

/// AdamW hyper-parameters (Loshchilov & Hutter: decoupled weight decay).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
    /// Decoupled weight decay, multiplied by the learning rate.
    pub weight_decay: f64,
}

impl Default for AdamW {
    /// PyTorch's defaults, which the Liger recipe uses (LIGER.md §5).
    fn default() -> Self {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// One parameter's optimizer state.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    /// First moment.
    pub m: Vec<f32>,
    /// Second moment.
    pub v: Vec<f32>,
}

impl Moments {
    /// Zero moments for `n` elements.
    pub fn zeros(n: usize) -> Moments {
        Moments {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }
}

impl AdamW {
    /// One update of `param` with `grad` at learning rate `lr`; `step` counts
    /// updates from 1 (for the bias corrections).
    pub fn update(&self, param: &mut [f32], grad: &[f32], state: &mut Moments, lr: f64, step: u64) {
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powf(step as f64);
        let c2 = 1.0 - b2.powf(step as f64);
        let decay = (1.0 - lr * self.weight_decay) as f32;
        for (((p, &g), m), v) in param
            .iter_mut()
            .zip(grad)
            .zip(state.m.iter_mut())
            .zip(state.v.iter_mut())
        {
            *m = (b1 * f64::from(*m) + (1.0 - b1) * f64::from(g)) as f32;
            *v = (b2 * f64::from(*v) + (1.0 - b2) * f64::from(g) * f64::from(g)) as f32;
            let m_hat = f64::from(*m) / c1;
            let v_hat = f64::from(*v) / c2;
            *p = *p * decay - (lr * m_hat / (v_hat.sqrt() + self.eps)) as f32;
        }
    }
}

/// How the learning rate moves over the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Linear warmup, then constant.
    Constant,
    /// Linear warmup, then a cosine decay to 10% of the peak at the last step.
    Cosine,
}

impl Schedule {
    /// The learning rate of update `step` (1-based) of `total`, peak `lr`,
    /// after `warmup` linear warmup steps.
    pub fn lr(self, lr: f64, step: u64, total: u64, warmup: u64) -> f64 {
        if warmup > 0 && step <= warmup {
            return lr * step as f64 / warmup as f64;
        }
        match self {
            Schedule::Constant => lr,
            Schedule::Cosine => {
                let span = total.saturating_sub(warmup).max(1) as f64;
                let done = (step.saturating_sub(warmup) as f64 / span).min(1.0);
                let floor = 0.1 * lr;
                floor + (lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * done).cos())
            }
        }
    }
}

/// The global L2 norm of `grads`, accumulated in f64.
pub fn global_norm(grads: &[Vec<f32>]) -> f64 {
    grads
        .iter()
        .flatten()
        .map(|&g| f64::from(g) * f64::from(g))
        .sum::<f64>()
        .sqrt()
}

/// Scales `grads` so their global norm is at most `max_norm` (when positive);
/// returns the norm before clipping.
pub fn clip_global_norm(grads: &mut [Vec<f32>], max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    if max_norm > 0.0 && norm > max_norm {
        let scale = (max_norm / (norm + 1e-6)) as f32;
        grads.iter_mut().flatten().for_each(|g| *g *= scale);
    }
    norm
}
