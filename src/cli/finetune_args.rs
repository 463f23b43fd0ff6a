//! Arguments of `ligerc finetune`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::args::{Backend, PassArgs};

/// `ligerc finetune MODEL --data FILE… -o DIR …`
#[derive(Args, Debug)]
#[command(after_help = "EXAMPLES:\n  \
    ligerc finetune SmolLM2.gguf --pass linearize --pass lora --data data/corpora/shakespeare \\\n      \
        --steps 500 --seq-len 1024 --batch 4 -o runs/gla\n  \
    ligerc finetune tiny.onnx --pass linearize --pass lora --tokenizer bytes \\\n      \
        --data tests/fixtures/text/shakespeare_sample.txt --seq-len 64 --steps 200 -o runs/tiny\n  \
    ligerc finetune … -o runs/gla --resume          continue a killed run exactly\n\n\
    OUTPUT (in DIR): adapter_model.safetensors + adapter_config.json (PEFT), metrics.jsonl,\n\
    loss_curve.svg, summary.json, checkpoint/ (every --save-every updates), and with --merge\n\
    merged/model.onnx + merged/model.safetensors.")]
pub struct FinetuneArgs {
    /// The model: an .onnx file, a Hugging Face directory, or a .gguf file.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Passes applied before training; LoRA adapters must be among them
    /// (typically `--pass linearize --pass lora`).
    #[command(flatten)]
    pub passes: PassArgs,
    /// Training text: plain-text files, `.jsonl` (Alpaca `instruction`/`input`/`output`, or
    /// `text`), or folders of them (repeatable).
    #[arg(long, value_name = "PATH", required = true, action = clap::ArgAction::Append)]
    pub data: Vec<PathBuf>,
    /// Output folder.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Optimizer updates.
    #[arg(long, default_value_t = 100)]
    pub steps: u64,
    /// Tokens per training sequence (sequences are packed to this length).
    #[arg(long, default_value_t = 1024)]
    pub seq_len: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Micro-batches per update (gradient accumulation; the Liger recipe: batch 1 × 8).
    #[arg(long, default_value_t = 8)]
    pub accum: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Linear warmup updates.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Learning-rate schedule after warmup.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Constant)]
    pub schedule: ScheduleArg,
    /// AdamW betas.
    #[arg(long, value_name = "B1,B2", default_value = "0.9,0.999")]
    pub betas: String,
    /// AdamW epsilon.
    #[arg(long, default_value_t = 1e-8)]
    pub adam_eps: f64,
    /// AdamW decoupled weight decay (PyTorch's default, as in the Liger recipe).
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = off; the upstream Liger loop never clips).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Seed of the data split and order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of sequences held out for evaluation.
    #[arg(long, default_value_t = 0.05)]
    pub heldout: f64,
    /// Stop reading data after this many tokens.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<usize>,
    /// Evaluate the held-out loss every N updates (and at the end; 0 = only at the end).
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    /// Evaluate on at most this many held-out sequences.
    #[arg(long, default_value_t = 64)]
    pub eval_sequences: usize,
    /// Write a checkpoint every N updates (and at the end; 0 = only at the end).
    #[arg(long, default_value_t = 50)]
    pub save_every: u64,
    /// Continue the run whose checkpoint is in DIR (same model, passes, data and settings).
    #[arg(long)]
    pub resume: bool,
    /// Also write the model with the adapters merged in (ONNX and safetensors).
    #[arg(long)]
    pub merge: bool,
    /// Updates skipped for a non-finite loss or gradient before the run stops.
    #[arg(long, default_value_t = 10)]
    pub max_bad_steps: u64,
    /// How text becomes token ids: the model's own tokenizer, or UTF-8 bytes (for byte-level
    /// models with a 256-token vocabulary).
    #[arg(long, value_enum, default_value_t = TokenizerArg::Model)]
    pub tokenizer: TokenizerArg,
    /// Where the updates run: the f32 CPU reference, or one NVIDIA GPU (exit code 3 when no
    /// GPU or CUDA library is available). Same loop, checkpoints and outputs.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
    /// How the frozen projection weights are held [default: bf16 with --backend cuda, f32 on
    /// the CPU]. On the GPU, bf16 halves their memory and runs their products on bf16 tensor
    /// cores with f32 accumulation (as PyTorch autocast); on the CPU, bf16 rounds them to the
    /// same bf16 values and keeps the math f32, to reproduce a GPU run's weights. LoRA
    /// parameters, AdamW state and activations stay f32 either way; f32 on the GPU matches the
    /// CPU reference to rounding (for gradient checks).
    #[arg(long, value_enum)]
    pub frozen_dtype: Option<FrozenArg>,
    /// Debugging: write the gradients of the first update (before clipping when `--clip 0`)
    /// as JSON `{name: {shape, values}}` to FILE (docs/FINETUNE.md, "GPU training").
    #[arg(long, value_name = "FILE", hide = true)]
    pub dump_grads: Option<PathBuf>,
}

/// `--frozen-dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FrozenArg {
    /// bfloat16 frozen weights (the default on the GPU).
    Bf16,
    /// f32 frozen weights (the default on the CPU).
    F32,
}

/// `--schedule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    /// Constant after warmup.
    Constant,
    /// Cosine decay to 10% of the peak.
    Cosine,
}

/// `--tokenizer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TokenizerArg {
    /// The tokenizer that ships with the model.
    Model,
    /// UTF-8 bytes as token ids 0–255.
    Bytes,
}
