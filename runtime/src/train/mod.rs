//! LoRA fine-tuning: the optimizer (`optim.rs`), the update step
//! (`trainer.rs`) over an execution backend (`backend.rs`: the CPU executor;
//! the GPU engine is `crate::cuda::train`), how frozen weights are held
//! (`frozen.rs`), checkpoints (`checkpoint.rs`), the
//! metrics log and the loss-curve plot (`plot.rs`).
//!
//! The graphs come from the autodiff pass (`ligerc_passes::autodiff`): a
//! training graph returning `loss_sum`, `loss_tokens` and `grad:<weight>` per
//! trainable weight, and an evaluation graph returning the loss alone.

mod backend;
mod checkpoint;
mod frozen;
mod optim;
mod plot;
mod trainer;

use thiserror::Error;

pub use backend::{CpuBackend, StepBackend, initial_params};
pub use checkpoint::{CHECKPOINT_DIR, Checkpoint, RunState, load_checkpoint, save_checkpoint};
pub use frozen::{FrozenDtype, projection_only_weights, round_frozen_to_bf16};
pub use optim::{AdamW, Moments, Schedule, clip_global_norm, global_norm};
pub use plot::loss_curve_svg;
pub use trainer::{Param, StepReport, TrainConfig, Trainer, batch_inputs, input_names};

/// What can go wrong while fine-tuning.
#[derive(Debug, Error)]
pub enum TrainError {
    /// Settings that cannot work.
    #[error("training settings: {0}")]
    Config(String),
    /// Too many updates had a non-finite loss or gradient.
    #[error(
        "stopping at step {step}: {skipped} updates had a non-finite loss or gradient \
         (lower the learning rate, or raise --max-bad-steps)"
    )]
    BadNumerics {
        /// The update that crossed the bound.
        step: u64,
        /// Updates skipped so far.
        skipped: u64,
    },
    /// A checkpoint cannot be written, read, or does not fit this run.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Executing a graph failed.
    #[error(transparent)]
    Runtime(#[from] crate::RuntimeError),
    /// The GPU backend failed (`crate::cuda::train`).
    #[error(transparent)]
    Gpu(#[from] crate::cuda::train::GpuTrainError),
}
