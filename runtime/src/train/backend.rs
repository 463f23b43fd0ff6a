//! Where a training step executes: the [`StepBackend`] trait the
//! [`super::Trainer`] drives, and its CPU implementation ([`CpuBackend`]: the
//! f32 reference [`Executor`]). The GPU implementation lives in
//! `crate::cuda::train`.
//!
//! The trainer owns the loop's semantics (micro-batches, the token mean, the
//! bad-step guard, the clipping decision, the schedule, counters); a backend
//! owns the parameters, their AdamW moments and the gradient accumulators,
//! and runs the graphs.

use std::collections::HashMap;

use ligerc_ir::Graph;

use super::TrainError;
use super::optim::{AdamW, Moments, global_norm};
use super::trainer::Param;
use crate::{ExecState, Executor, Tensor};

/// One execution engine for the training and evaluation graphs.
pub trait StepBackend {
    /// A short name for reports (`cpu`, `cuda`).
    fn name(&self) -> &'static str;
    /// Replaces the parameters and their moments (start, `--resume`), in the
    /// order the backend was built with.
    fn load_params(&mut self, params: &[Param]) -> Result<(), TrainError>;
    /// The current parameters and moments, on the host.
    fn params(&mut self) -> Result<Vec<Param>, TrainError>;
    /// Sets the gradient accumulators to zero (start of an update).
    fn zero_grads(&mut self) -> Result<(), TrainError>;
    /// Runs the training graph on one micro-batch's `inputs`, adds its
    /// gradients to the accumulators and returns its `loss_sum`.
    fn accumulate(&mut self, inputs: &HashMap<String, Tensor>) -> Result<f32, TrainError>;
    /// The global L2 norm of the accumulated gradients (summed in f64); not
    /// finite when any gradient is not.
    fn grad_norm(&mut self) -> Result<f64, TrainError>;
    /// Multiplies the gradients by `clip_scale` (when given) and applies one
    /// AdamW update at `lr`; `step` counts applied updates from 1.
    fn apply(
        &mut self,
        adamw: &AdamW,
        lr: f64,
        step: u64,
        clip_scale: Option<f32>,
    ) -> Result<(), TrainError>;
    /// Runs the evaluation graph; returns `(loss_sum, loss_tokens)`.
    fn evaluate(&mut self, inputs: &HashMap<String, Tensor>) -> Result<(f32, f32), TrainError>;
    /// The gradient accumulators on the host, one per parameter (after
    /// [`StepBackend::apply`] they hold the clipped gradients on the CPU and
    /// the unclipped ones on the GPU; equal without clipping).
    fn grads(&mut self) -> Result<Vec<Vec<f32>>, TrainError>;
    /// Peak device memory in bytes, where the backend tracks it.
    fn peak_memory(&self) -> Option<usize> {
        None
    }
}

/// The CPU reference backend: both graphs on the f32 [`Executor`].
pub struct CpuBackend {
    train: Executor,
    eval: Executor,
    params: Vec<Param>,
    grads: Vec<Vec<f32>>,
}

impl CpuBackend {
    /// Prepares executors for both graphs; `params` are the trainable
    /// tensors in the order the training graph returns their gradients.
    pub fn new(train: Graph, eval: Graph, params: Vec<Param>) -> Result<CpuBackend, TrainError> {
        let grads = params.iter().map(|p| vec![0.0; p.value.len()]).collect();
        Ok(CpuBackend {
            train: Executor::new(train)?,
            eval: Executor::new(eval)?,
            params,
            grads,
        })
    }

    fn push_params(&mut self) -> Result<(), TrainError> {
        for p in &self.params {
            let t = Tensor::f32(p.shape.clone(), p.value.clone())?;
            self.train.set_weight(&p.name, t.clone())?;
            self.eval.set_weight(&p.name, t)?;
        }
        Ok(())
    }
}

impl StepBackend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn load_params(&mut self, params: &[Param]) -> Result<(), TrainError> {
        self.params = params.to_vec();
        self.grads = params.iter().map(|p| vec![0.0; p.value.len()]).collect();
        self.push_params()
    }

    fn params(&mut self) -> Result<Vec<Param>, TrainError> {
        Ok(self.params.clone())
    }

    fn zero_grads(&mut self) -> Result<(), TrainError> {
        self.grads.iter_mut().for_each(|g| g.fill(0.0));
        Ok(())
    }

    fn accumulate(&mut self, inputs: &HashMap<String, Tensor>) -> Result<f32, TrainError> {
        let outputs = self.train.run(inputs, &mut ExecState::default())?;
        let loss = scalar(&outputs, "loss_sum", 0)?;
        for (i, g) in self.grads.iter_mut().enumerate() {
            let out = outputs.get(2 + i).ok_or_else(|| {
                TrainError::Config("the training graph returned too few gradients".into())
            })?;
            let data = out.as_f32("gradient")?;
            if data.len() != g.len() {
                return Err(TrainError::Config(format!(
                    "gradient of `{}` has {} elements, the parameter {}",
                    self.params[i].name,
                    data.len(),
                    g.len()
                )));
            }
            g.iter_mut().zip(data).for_each(|(a, b)| *a += b);
        }
        Ok(loss)
    }

    fn grad_norm(&mut self) -> Result<f64, TrainError> {
        Ok(global_norm(&self.grads))
    }

    fn apply(
        &mut self,
        adamw: &AdamW,
        lr: f64,
        step: u64,
        clip_scale: Option<f32>,
    ) -> Result<(), TrainError> {
        if let Some(scale) = clip_scale {
            self.grads.iter_mut().flatten().for_each(|g| *g *= scale);
        }
        for (p, g) in self.params.iter_mut().zip(&self.grads) {
            adamw.update(&mut p.value, g, &mut p.moments, lr, step);
        }
        self.push_params()
    }

    fn grads(&mut self) -> Result<Vec<Vec<f32>>, TrainError> {
        Ok(self.grads.clone())
    }

    fn evaluate(&mut self, inputs: &HashMap<String, Tensor>) -> Result<(f32, f32), TrainError> {
        let out = self.eval.run(inputs, &mut ExecState::default())?;
        Ok((
            scalar(&out, "loss_sum", 0)?,
            scalar(&out, "loss_tokens", 1)?,
        ))
    }
}

/// The trainable tensors of `graph` named by `trainable`, at their stored
/// values, with zero moments.
pub fn initial_params(graph: &Graph, trainable: &[String]) -> Result<Vec<Param>, TrainError> {
    trainable
        .iter()
        .map(|name| {
            let w = graph.weights.get(name).ok_or_else(|| {
                TrainError::Config(format!("trainable weight `{name}` is not in the graph"))
            })?;
            let value = w.to_f32_vec();
            Ok(Param {
                name: name.clone(),
                shape: w.shape().to_vec(),
                moments: Moments::zeros(value.len()),
                value,
            })
        })
        .collect()
}

/// Output `i` of a graph run as an f32 scalar.
pub(crate) fn scalar(outputs: &[Tensor], what: &str, i: usize) -> Result<f32, TrainError> {
    outputs
        .get(i)
        .and_then(|t| t.as_f32(what).ok())
        .and_then(|d| d.first().copied())
        .ok_or_else(|| TrainError::Config(format!("the graph did not return `{what}`")))
}
