//! The training loop's step: forward, loss, backward over micro-batches,
//! the bad-numerics guard, clipping and the AdamW update, executed by a
//! [`StepBackend`] (CPU or GPU).

use std::collections::HashMap;

use ligerc_ir::Graph;
use ligerc_ir::training::{LOSS_SCALE, TARGETS};
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::backend::{CpuBackend, StepBackend, initial_params};
use super::optim::{AdamW, Moments, Schedule};
use crate::Tensor;
use crate::data::Sequence;
use crate::session::{ATTENTION_MASK, POSITION_IDS, token_inputs};

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

/// Trains LoRA parameters of a model on a [`StepBackend`] (the CPU reference
/// executor by default, or the GPU engine of `crate::cuda::train`).
pub struct Trainer {
    backend: Box<dyn StepBackend>,
    /// Host copy of the parameters; `None` after an update until read back.
    params: Option<Vec<Param>>,
    train_inputs: Vec<String>,
    eval_inputs: Vec<String>,
    config: TrainConfig,
    step: u64,
    updates: u64,
    bad_steps: u64,
}

/// The names of `graph`'s inputs.
pub fn input_names(graph: &Graph) -> Vec<String> {
    graph.inputs().iter().map(|(_, n)| n.to_string()).collect()
}

impl Trainer {
    /// Prepares CPU executors for the training graph (loss + gradients of
    /// `trainable`, from the autodiff pass) and the evaluation graph (loss
    /// only). Parameters start at the graph's stored values, moments at zero.
    pub fn new(
        train: Graph,
        eval: Graph,
        trainable: &[String],
        config: TrainConfig,
    ) -> Result<Trainer, TrainError> {
        check_config(&config)?;
        let params = initial_params(&train, trainable)?;
        let (train_inputs, eval_inputs) = (input_names(&train), input_names(&eval));
        let backend = CpuBackend::new(train, eval, params.clone())?;
        Trainer::with_backend(Box::new(backend), params, train_inputs, eval_inputs, config)
    }

    /// A trainer over any backend. `params` are the starting values (loaded
    /// into the backend); `train_inputs` / `eval_inputs` are the graphs'
    /// input names ([`input_names`]).
    pub fn with_backend(
        mut backend: Box<dyn StepBackend>,
        params: Vec<Param>,
        train_inputs: Vec<String>,
        eval_inputs: Vec<String>,
        config: TrainConfig,
    ) -> Result<Trainer, TrainError> {
        check_config(&config)?;
        backend.load_params(&params)?;
        Ok(Trainer {
            backend,
            params: Some(params),
            train_inputs,
            eval_inputs,
            config,
            step: 0,
            updates: 0,
            bad_steps: 0,
        })
    }

    /// The trainable parameters and their moments (read back from the
    /// backend when an update changed them).
    pub fn params(&mut self) -> Result<&[Param], TrainError> {
        if self.params.is_none() {
            self.params = Some(self.backend.params()?);
        }
        Ok(self.params.as_deref().unwrap_or_default())
    }

    /// The backend's name (`cpu`, `cuda`).
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Peak device memory of the backend in bytes, where it tracks it.
    pub fn peak_memory(&self) -> Option<usize> {
        self.backend.peak_memory()
    }

    /// The gradient accumulators of the last update, by parameter name
    /// (a debugging aid: `ligerc finetune --dump-grads`).
    pub fn last_grads(&mut self) -> Result<Vec<(String, Vec<f32>)>, TrainError> {
        let names: Vec<String> = self.params()?.iter().map(|p| p.name.clone()).collect();
        Ok(names.into_iter().zip(self.backend.grads()?).collect())
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
        let current = self.params()?.to_vec();
        if params.len() != current.len() {
            return Err(TrainError::Checkpoint(format!(
                "the checkpoint has {} trainable tensors, the model {}",
                params.len(),
                current.len()
            )));
        }
        let mut by_name: HashMap<String, Param> =
            params.into_iter().map(|p| (p.name.clone(), p)).collect();
        let mut ordered = Vec::with_capacity(current.len());
        for mine in &current {
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
        self.backend.load_params(&ordered)?;
        self.params = Some(ordered);
        self.step = step;
        self.updates = updates;
        self.bad_steps = bad_steps;
        Ok(())
    }

    /// Optimizer updates applied (skipped steps excluded): AdamW's bias-correction count.
    pub fn updates(&self) -> u64 {
        self.updates
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
        self.backend.zero_grads()?;
        let mut loss_sum = 0.0f64;
        if tokens > 0 {
            let scale = 1.0 / tokens as f32;
            for mb in micro_batches.iter().filter(|mb| !mb.is_empty()) {
                let inputs = batch_inputs(&self.train_inputs, mb, Some(scale))?;
                loss_sum += f64::from(self.backend.accumulate(&inputs)?);
            }
        }
        let loss = if tokens > 0 {
            loss_sum / tokens as f64
        } else {
            f64::NAN
        };
        // Every gradient is finite exactly when their f64 sum of squares is
        // (f32 squares cannot overflow it).
        let grad_norm = if loss.is_finite() {
            self.backend.grad_norm()?
        } else {
            f64::NAN
        };
        if !(loss.is_finite() && grad_norm.is_finite()) {
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
        let clip = self.config.clip;
        let clip_scale =
            (clip > 0.0 && grad_norm > clip).then(|| (clip / (grad_norm + 1e-6)) as f32);
        self.updates += 1;
        self.params = None;
        self.backend
            .apply(&self.config.adamw, lr, self.updates, clip_scale)?;
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
    pub fn evaluate(
        &mut self,
        seqs: &[Sequence],
        batch: usize,
    ) -> Result<(f64, usize), TrainError> {
        let (mut sum, mut tokens) = (0.0f64, 0usize);
        for chunk in seqs.chunks(batch.max(1)) {
            let refs: Vec<&Sequence> = chunk.iter().collect();
            let inputs = batch_inputs(&self.eval_inputs, &refs, None)?;
            let (s, n) = self.backend.evaluate(&inputs)?;
            sum += f64::from(s);
            tokens += n as usize;
        }
        Ok((sum / tokens.max(1) as f64, tokens))
    }
}

fn check_config(config: &TrainConfig) -> Result<(), TrainError> {
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
    Ok(())
}

/// The inputs of a training or evaluation graph (input names `graph_inputs`)
/// for one micro-batch: ids, targets, an all-ones padding mask, positions and
/// the loss scale, as the graph asks.
pub fn batch_inputs(
    graph_inputs: &[String],
    seqs: &[&Sequence],
    loss_scale: Option<f32>,
) -> Result<HashMap<String, Tensor>, TrainError> {
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
    let ids: Vec<i64> = seqs.iter().flat_map(|s| s.ids.iter().copied()).collect();
    let targets: Vec<i64> = seqs
        .iter()
        .flat_map(|s| s.targets.iter().copied())
        .collect();
    let has = |n: &str| graph_inputs.iter().any(|g| g == n);
    let mut inputs = token_inputs(ids, (batch, len), 0, has(ATTENTION_MASK), has(POSITION_IDS))?;
    inputs.insert(TARGETS.to_string(), Tensor::i64(vec![batch, len], targets)?);
    if has(LOSS_SCALE) {
        let s = loss_scale.unwrap_or(1.0);
        inputs.insert(LOSS_SCALE.to_string(), Tensor::f32(vec![], vec![s])?);
    }
    Ok(inputs)
}
