//! The training loop's step: forward, loss, backward over micro-batches,
//! the bad-numerics guard, clipping and the AdamW update.

use std::collections::HashMap;

use ligerc_ir::Graph;
use ligerc_ir::training::{LOSS_SCALE, TARGETS};
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::optim::{AdamW, Moments, Schedule, clip_global_norm};
use crate::data::Sequence;
use crate::session::{ATTENTION_MASK, INPUT_IDS, POSITION_IDS};
use crate::{ExecState, Executor, Tensor};

/// Settings of a fine-tuning run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Optimizer updates to run.
    pub steps: u64,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Micro-batches per update (gradient accumulation).
    pub accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup updates.
    pub warmup: u64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// AdamW settings.
    pub adamw: AdamW,
    /// Global gradient-norm bound (0 = no clipping).
    pub clip: f64,
    /// Updates skipped for non-finite loss or gradients before the run stops.
    pub max_bad_steps: u64,
    /// Seed of the data order.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// The Liger recipe's optimizer settings (LIGER.md §5) at a small batch.
    fn default() -> Self {
        TrainConfig {
            steps: 100,
            batch: 1,
            accum: 8,
            lr: 1e-3,
            warmup: 0,
            schedule: Schedule::Constant,
            adamw: AdamW::default(),
            clip: 1.0,
            max_bad_steps: 10,
            seed: 0,
        }
    }
}

/// One trainable tensor with its optimizer state.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Weight name in the graph.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Current value.
    pub value: Vec<f32>,
    /// AdamW moments.
    pub moments: Moments,
}

/// What one update did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Update number (1-based).
    pub step: u64,
    /// Mean loss per counted token over the update's micro-batches.
    pub loss: f64,
    /// Counted (trained) tokens.
    pub tokens: usize,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// True when the update was skipped (non-finite loss or gradient).
    pub skipped: bool,
}

/// Trains LoRA parameters of a model on the CPU backend.
pub struct Trainer {
    train: Executor,
    eval: Executor,
    params: Vec<Param>,
    config: TrainConfig,
    step: u64,
    updates: u64,
    bad_steps: u64,
}

impl Trainer {
    /// Prepares executors for the training graph (loss + gradients of
    /// `trainable`, from the autodiff pass) and the evaluation graph (loss
    /// only). Parameters start at the graph's stored values, moments at zero.
    pub fn new(
        train: Graph,
        eval: Graph,
        trainable: &[String],
        config: TrainConfig,
    ) -> Result<Trainer, TrainError> {
        if config.batch == 0 || config.accum == 0 {
            return Err(TrainError::Config(
                "batch and gradient accumulation must be at least 1".into(),
            ));
        }
        if !(config.lr.is_finite() && config.lr > 0.0) {
            return Err(TrainError::Config(format!(
                "the learning rate must be positive, is {}",
                config.lr
            )));
        }
        let mut params = Vec::with_capacity(trainable.len());
        for name in trainable {
            let w = train.weights.get(name).ok_or_else(|| {
                TrainError::Config(format!("trainable weight `{name}` is not in the graph"))
            })?;
            let value = w.to_f32_vec();
            params.push(Param {
                name: name.clone(),
                shape: w.shape().to_vec(),
                moments: Moments::zeros(value.len()),
                value,
            });
        }
        Ok(Trainer {
            train: Executor::new(train)?,
            eval: Executor::new(eval)?,
            params,
            config,
            step: 0,
            updates: 0,
            bad_steps: 0,
        })
    }

    /// The trainable parameters.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The run's settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Updates done so far (skipped ones included).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Updates skipped for bad numerics so far.
    pub fn bad_steps(&self) -> u64 {
        self.bad_steps
    }

    /// Restores a checkpointed state: parameter values and moments (matched by
    /// name, checked by shape, in any order) and the counters.
    pub fn restore(
        &mut self,
        params: Vec<Param>,
        step: u64,
        updates: u64,
        bad_steps: u64,
    ) -> Result<(), TrainError> {
        if params.len() != self.params.len() {
            return Err(TrainError::Checkpoint(format!(
                "the checkpoint has {} trainable tensors, the model {}",
                params.len(),
                self.params.len()
            )));
        }
        let mut by_name: HashMap<String, Param> =
            params.into_iter().map(|p| (p.name.clone(), p)).collect();
        let mut ordered = Vec::with_capacity(self.params.len());
        for mine in &self.params {
            let theirs = by_name.remove(&mine.name).ok_or_else(|| {
                TrainError::Checkpoint(format!("the checkpoint has no tensor `{}`", mine.name))
            })?;
            if theirs.shape != mine.shape || theirs.value.len() != mine.value.len() {
                return Err(TrainError::Checkpoint(format!(
                    "checkpoint tensor `{}` is {:?}, the model's is {:?}",
                    mine.name, theirs.shape, mine.shape
                )));
            }
            ordered.push(theirs);
        }
        self.params = ordered;
        self.step = step;
        self.updates = updates;
        self.bad_steps = bad_steps;
        self.push_params()
    }

    /// Optimizer updates applied (skipped steps excluded): AdamW's bias-correction count.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    fn push_params(&mut self) -> Result<(), TrainError> {
        for p in &self.params {
            let t = Tensor::f32(p.shape.clone(), p.value.clone())?;
            self.train.set_weight(&p.name, t.clone())?;
            self.eval.set_weight(&p.name, t)?;
        }
        Ok(())
    }

    /// One update over `micro_batches` (each a list of sequences of equal length).
    ///
    /// The loss is the mean over every counted token of the update; when it or
    /// any gradient is not finite the update is skipped (parameters and moments
    /// untouched) and counted, and the run fails once more than
    /// `max_bad_steps` were skipped.
    pub fn train_step(
        &mut self,
        micro_batches: &[Vec<&Sequence>],
    ) -> Result<StepReport, TrainError> {
        let tokens: usize = micro_batches
            .iter()
            .flatten()
            .map(|s| s.targets.iter().filter(|&&t| t >= 0).count())
            .sum();
        self.step += 1;
        let lr = self.config.schedule.lr(
            self.config.lr,
            self.step,
            self.config.steps,
            self.config.warmup,
        );
        let mut grads: Vec<Vec<f32>> = self
            .params
            .iter()
            .map(|p| vec![0.0; p.value.len()])
            .collect();
        let mut loss_sum = 0.0f64;
        if tokens > 0 {
            let scale = 1.0 / tokens as f32;
            for mb in micro_batches.iter().filter(|mb| !mb.is_empty()) {
                let outputs = run_batch(&self.train, mb, Some(scale))?;
                loss_sum += f64::from(scalar(&outputs, "loss_sum", 0)?);
                for (i, g) in grads.iter_mut().enumerate() {
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
            }
        }
        let loss = if tokens > 0 {
            loss_sum / tokens as f64
        } else {
            f64::NAN
        };
        let finite = loss.is_finite() && grads.iter().flatten().all(|g| g.is_finite());
        if !finite {
            self.bad_steps += 1;
            if self.bad_steps > self.config.max_bad_steps {
                return Err(TrainError::BadNumerics {
                    step: self.step,
                    skipped: self.bad_steps,
                });
            }
            return Ok(StepReport {
                step: self.step,
                loss,
                tokens,
                grad_norm: f64::NAN,
                lr,
                skipped: true,
            });
        }
        let grad_norm = clip_global_norm(&mut grads, self.config.clip);
        self.updates += 1;
        for (p, g) in self.params.iter_mut().zip(&grads) {
            self.config
                .adamw
                .update(&mut p.value, g, &mut p.moments, lr, self.updates);
        }
        self.push_params()?;
        Ok(StepReport {
            step: self.step,
            loss,
            tokens,
            grad_norm,
            lr,
            skipped: false,
        })
    }

    /// Mean loss per counted token over `seqs`, in batches of `batch`;
    /// returns `(loss, tokens)`.
    pub fn evaluate(&self, seqs: &[Sequence], batch: usize) -> Result<(f64, usize), TrainError> {
        let (mut sum, mut tokens) = (0.0f64, 0usize);
        for chunk in seqs.chunks(batch.max(1)) {
            let refs: Vec<&Sequence> = chunk.iter().collect();
            let out = run_batch(&self.eval, &refs, None)?;
            sum += f64::from(scalar(&out, "loss_sum", 0)?);
            tokens += scalar(&out, "loss_tokens", 1)? as usize;
        }
        Ok((sum / tokens.max(1) as f64, tokens))
    }
}

fn scalar(outputs: &[Tensor], what: &str, i: usize) -> Result<f32, TrainError> {
    outputs
        .get(i)
        .and_then(|t| t.as_f32(what).ok())
        .and_then(|d| d.first().copied())
        .ok_or_else(|| TrainError::Config(format!("the graph did not return `{what}`")))
}

/// Runs a training or evaluation graph on one micro-batch.
fn run_batch(
    exec: &Executor,
    seqs: &[&Sequence],
    loss_scale: Option<f32>,
) -> Result<Vec<Tensor>, TrainError> {
    let batch = seqs.len();
    let len = seqs.first().map_or(0, |s| s.ids.len());
    if let Some(s) = seqs
        .iter()
        .find(|s| s.ids.len() != len || s.targets.len() != len)
    {
        return Err(TrainError::Config(format!(
            "sequences of one batch must share a length: {} ids / {} targets vs {len}",
            s.ids.len(),
            s.targets.len()
        )));
    }
    let mut inputs = HashMap::new();
    let ids: Vec<i64> = seqs.iter().flat_map(|s| s.ids.iter().copied()).collect();
    let targets: Vec<i64> = seqs
        .iter()
        .flat_map(|s| s.targets.iter().copied())
        .collect();
    inputs.insert(INPUT_IDS.to_string(), Tensor::i64(vec![batch, len], ids)?);
    inputs.insert(TARGETS.to_string(), Tensor::i64(vec![batch, len], targets)?);
    let graph_inputs: Vec<String> = exec
        .graph()
        .inputs()
        .iter()
        .map(|(_, n)| n.to_string())
        .collect();
    for name in &graph_inputs {
        match name.as_str() {
            ATTENTION_MASK => {
                inputs.insert(
                    name.clone(),
                    Tensor::i64(vec![batch, len], vec![1; batch * len])?,
                );
            }
            POSITION_IDS => {
                let pos = (0..batch).flat_map(|_| 0..len as i64).collect();
                inputs.insert(name.clone(), Tensor::i64(vec![batch, len], pos)?);
            }
            LOSS_SCALE => {
                let s = loss_scale.unwrap_or(1.0);
                inputs.insert(name.clone(), Tensor::f32(vec![], vec![s])?);
            }
            _ => {}
        }
    }
    Ok(exec.run(&inputs, &mut ExecState::default())?)
}
