//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// ligerc compiles pretrained Llama-family models into Liger-linearized ones.
///
/// Import a model (an .onnx file, a Hugging Face directory with config.json and
/// safetensors, or a llama.cpp .gguf file), run passes over its graph, and emit
/// the result as text IR or ONNX — or run it on the CPU reference backend.
#[derive(Parser, Debug)]
#[command(
    name = "ligerc",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "EXAMPLES:\n  \
        ligerc model.onnx --emit ir                       print the imported graph\n  \
        ligerc ./SmolLM2-135M --emit onnx -o model.onnx   Hugging Face directory → ONNX\n  \
        ligerc model.gguf --pass dce --print-after-all    run passes, show the IR after each\n  \
        ligerc run model.gguf --prompt \"The capital of France is\" --max-new-tokens 16\n  \
        ligerc run model.onnx --ids 5,17,3 --ids 9,2,4 --logits out.npy\n\n\
        EXIT CODES:\n  0 success · 1 internal error · 2 bad input or usage · 3 device unavailable"
)]
pub struct Cli {
    /// What to do; without a subcommand, compile INPUT.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Compile options (when no subcommand is given).
    #[command(flatten)]
    pub compile: CompileArgs,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a model on the CPU: generate text from a prompt, or dump logits for token ids.
    Run(RunArgs),
    /// List the passes `--pass` accepts.
    Passes,
    /// Time import, weight preparation and forward/decode passes on the CPU.
    Bench(BenchArgs),
    /// Evaluate: perplexity on text, zero-shot multiple choice (OE-Eval requests), passkey retrieval.
    Eval(super::eval::EvalArgs),
    /// LoRA fine-tuning on text or instruction data (CPU): PEFT adapter, metrics, checkpoints, --resume.
    Finetune(super::finetune_args::FinetuneArgs),
    /// Time decode (CUDA graphs vs plain launches) and chunked prefill on the GPU.
    BenchCuda(super::bench_cuda::BenchCudaArgs),
}

/// Passes to apply, shared by every command that loads a model.
#[derive(Args, Debug, Clone, Default)]
pub struct PassArgs {
    /// A pass to run, in order (repeatable). `ligerc passes` lists them; options
    /// go after a colon: `--pass NAME:key=value,key=value`.
    #[arg(long = "pass", value_name = "PASS")]
    pub passes: Vec<String>,
    /// Print the IR after every pass (to stderr).
    #[arg(long)]
    pub print_after_all: bool,
    /// linearize: the recurrence (gla, hgrn2, gsa, retention, linear, swa-only).
    #[arg(long, value_name = "VARIANT", help_heading = "Linearize")]
    pub variant: Option<String>,
    /// linearize: a query sees itself and the N previous tokens in the window branch (N + 1 keys) [default: 64].
    #[arg(long, value_name = "N", help_heading = "Linearize")]
    pub window: Option<usize>,
    /// linearize: weights of the recurrent and the window branch [default: 0.5,0.5].
    #[arg(long, value_name = "RECURRENT,WINDOW", help_heading = "Linearize")]
    pub mix: Option<String>,
    /// linearize: layers that keep softmax attention: 0-based indices `7,15,23` or `every:8`.
    #[arg(long, value_name = "LIST|every:K", help_heading = "Linearize")]
    pub keep_softmax: Option<String>,
    /// linearize: GSA slots [default: 64].
    #[arg(long, value_name = "M", help_heading = "Linearize")]
    pub slots: Option<usize>,
    /// raise: continue when some attention blocks cannot be raised.
    #[arg(long, help_heading = "Raise")]
    pub allow_partial: bool,
    /// lora: projections to adapt, any of q,k,v,o,gate,up,down [default: q,k,v].
    #[arg(long, value_name = "LIST", help_heading = "LoRA")]
    pub lora_targets: Option<String>,
    /// lora: rank [default: 8].
    #[arg(long, value_name = "R", help_heading = "LoRA")]
    pub lora_rank: Option<usize>,
    /// lora: alpha; the branch is scaled by alpha/rank [default: 8].
    #[arg(long, value_name = "ALPHA", help_heading = "LoRA")]
    pub lora_alpha: Option<f64>,
    /// lora: load trained adapter weights (a PEFT adapter_model.safetensors or its directory).
    #[arg(long, value_name = "PATH", help_heading = "LoRA")]
    pub adapter: Option<std::path::PathBuf>,
    /// Load the model even if a weight holds NaN or infinity (by default such a model is refused).
    #[arg(long, help_heading = "Loading")]
    pub no_check_finite: bool,
}

impl PassArgs {
    /// `(pass, option, value)` for every pass-specific flag given.
    pub fn flag_options(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut v = Vec::new();
        if let Some(x) = &self.variant {
            v.push(("linearize", "variant", x.clone()));
        }
        if let Some(x) = self.window {
            v.push(("linearize", "window", x.to_string()));
        }
        if let Some(x) = &self.mix {
            v.push(("linearize", "mix", x.replace(',', "/")));
        }
        if let Some(x) = &self.keep_softmax {
            v.push(("linearize", "keep-softmax", x.replace(',', "/")));
        }
        if let Some(x) = self.slots {
            v.push(("linearize", "slots", x.to_string()));
        }
        if self.allow_partial {
            v.push(("raise", "allow-partial", "true".into()));
        }
        if let Some(x) = &self.lora_targets {
            v.push(("lora", "targets", x.clone()));
        }
        if let Some(x) = self.lora_rank {
            v.push(("lora", "rank", x.to_string()));
        }
        if let Some(x) = self.lora_alpha {
            v.push(("lora", "alpha", x.to_string()));
        }
        if let Some(x) = &self.adapter {
            v.push(("lora", "adapter", x.display().to_string()));
        }
        v
    }
}

/// What `--emit` writes.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// The stable text form of the graph.
    Ir,
    /// An ONNX model that onnxruntime runs.
    Onnx,
    /// CUDA kernels, a launch plan and bf16 weights in a directory (`-o DIR`).
    Cuda,
}

/// Which graph `--emit onnx` writes.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnnxFormArg {
    /// The whole sequence: input_ids [batch, seq] → logits [batch, seq, vocab].
    #[default]
    Full,
    /// One decode step: the token, its position and every layer's state in; logits and the new states out.
    Step,
}

/// `ligerc INPUT …`
#[derive(Args, Debug)]
pub struct CompileArgs {
    /// The model: an .onnx file, a Hugging Face directory, or a .gguf file.
    #[arg(value_name = "INPUT", required = true)]
    pub input: Option<PathBuf>,
    /// Passes.
    #[command(flatten)]
    pub passes: PassArgs,
    /// What to write.
    #[arg(long, value_enum, default_value = "ir")]
    pub emit: Emit,
    /// With `--emit onnx`: the full-sequence graph, or a one-token decode step with states as inputs/outputs.
    #[arg(long, value_enum, default_value = "full", value_name = "FORM")]
    pub onnx_form: OnnxFormArg,
    /// Output file (default: stdout for `ir`; required for `onnx`), or directory (required for `cuda`).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `ligerc run MODEL …`
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The model: an .onnx file, a Hugging Face directory, or a .gguf file.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Passes applied before running.
    #[command(flatten)]
    pub passes: PassArgs,
    /// Text to continue (needs the model's tokenizer).
    #[arg(long, conflicts_with = "ids")]
    pub prompt: Option<String>,
    /// Token ids of one sequence, comma-separated (repeatable; equal lengths).
    #[arg(long, value_name = "ID,ID,…", action = clap::ArgAction::Append)]
    pub ids: Vec<String>,
    /// With --ids: write the logits [rows, len, vocab] as a NumPy .npy file.
    #[arg(long, value_name = "FILE", requires = "ids")]
    pub logits: Option<PathBuf>,
    /// Tokens to generate after the prompt.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample only within the smallest set of tokens whose probability reaches P.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prepend the tokenizer's BOS token to the prompt.
    #[arg(long)]
    pub add_bos: bool,
    /// Perplexity of the model over a text file (tokenized with the model's tokenizer), printed as JSON.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prompt", "ids"])]
    pub perplexity: Option<PathBuf>,
    /// With --perplexity: tokens per forward pass.
    #[arg(long, value_name = "N", default_value_t = 512, requires = "perplexity")]
    pub ppl_window: usize,
    /// With --perplexity: distance between window starts [default: the window]; each
    /// window scores only tokens no earlier window scored.
    #[arg(long, value_name = "N", requires = "perplexity")]
    pub ppl_stride: Option<usize>,
    /// Where to run: the f32 CPU reference, or the GPU (the `--emit cuda` plan, compiled
    /// with NVRTC; exit code 3 when no GPU or CUDA library is available).
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
    /// With --backend cuda and --ids: prefill only the first N tokens, then feed the rest
    /// one decode step at a time (the logits cover every position either way).
    #[arg(long, value_name = "N", requires = "ids")]
    pub prefill_len: Option<usize>,
    /// With --backend cuda: time N greedy decode steps (after a prefill of
    /// --bench-context tokens per row, --bench-batch rows) and print one JSON line.
    #[arg(long, value_name = "N", conflicts_with_all = ["prompt", "ids", "perplexity"])]
    pub bench_decode: Option<usize>,
    /// Rows of --bench-decode.
    #[arg(long, value_name = "B", default_value_t = 1)]
    pub bench_batch: usize,
    /// Prompt tokens per row before --bench-decode.
    #[arg(long, value_name = "L", default_value_t = 128)]
    pub bench_context: usize,
}

/// `ligerc run --backend`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    /// The f32 CPU reference runtime.
    #[default]
    Cpu,
    /// The CUDA runtime (bf16 weights, NVRTC-compiled kernels, cuBLAS).
    Cuda,
}

/// `ligerc bench MODEL …`
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The model: an .onnx file, a Hugging Face directory, or a .gguf file.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Passes applied before running (their time is reported too).
    #[command(flatten)]
    pub passes: PassArgs,
    /// Sequence lengths of the forward passes, comma-separated.
    #[arg(long, value_name = "N,N,…", default_value = "128,512")]
    pub seq: String,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timed runs per measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// After a prefill of each sequence length, time this many KV-cache decode steps.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub decode: usize,
    /// Times to import the model (the median is reported).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub import_reps: usize,
    /// Only time the import (and passes); run nothing.
    #[arg(long)]
    pub import_only: bool,
    /// Seed of the random token ids.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A free-form tag carried into every output row (e.g. `linearized`).
    #[arg(long)]
    pub label: Option<String>,
    /// Print one JSON object per measurement instead of a table.
    #[arg(long)]
    pub json: bool,
}
