//! `ligerc bench-cuda MODEL [passes] --batch 1,32 --context 1024,8192`: decode (and
//! chunked prefill) throughput of the `--emit cuda` plan on the GPU, with and without
//! CUDA graphs, in one process (kernels compiled and weights uploaded once). One JSON line
//! per (graphs, batch, context).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};

use super::args::PassArgs;
use super::common::{UsageError, apply_passes, emit_cuda_program, load};

/// Arguments of `ligerc bench-cuda`.
#[derive(Args, Debug)]
pub struct BenchCudaArgs {
    /// The model: an .onnx file, a Hugging Face directory, or a .gguf file.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Passes applied before emitting the CUDA plan.
    #[command(flatten)]
    pub passes: PassArgs,
    /// Batch sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub batch: Vec<usize>,
    /// Prompt tokens per row before decoding (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1024")]
    pub context: Vec<usize>,
    /// Timed greedy decode steps (after 2 untimed: the warm-up and the graph capture).
    #[arg(long, default_value_t = 256)]
    pub steps: usize,
    /// Prefill tokens per row per call (0: up to 16384 tokens per call over the batch).
    #[arg(long, default_value_t = 0)]
    pub chunk: usize,
    /// After each graph run: time N eager decode steps launch by launch (device events)
    /// and print where a step's time goes (stderr).
    #[arg(long, default_value_t = 0)]
    pub profile: usize,
    /// Decode with CUDA graphs, without, or both (for the comparison).
    #[arg(long, value_enum, default_value_t = GraphMode::Both)]
    pub graphs: GraphMode,
}

/// `--graphs`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphMode {
    /// Captured decode graphs only.
    On,
    /// Plain launches only.
    Off,
    /// Both, graphs first.
    Both,
}

/// Runs the benchmark.
pub fn bench_cuda(args: &BenchCudaArgs) -> Result<()> {
    use ligerc::runtime::cuda::{CudaSession, check_available};
    if args.batch.is_empty() || args.context.is_empty() || args.batch.contains(&0) {
        return Err(UsageError("--batch and --context need positive values".into()).into());
    }
    check_available()?;
    let mut model = load(&args.model, &args.passes)?;
    apply_passes(&mut model.graph, &args.passes)?;
    let program = emit_cuda_program(&model.graph)?;
    let t0 = std::time::Instant::now();
    let mut session = CudaSession::from_program(&program)?;
    eprintln!(
        "cuda: {} ({}), {} kernels compiled, {} cached, {:.2} s setup",
        session.stats.device,
        session.stats.arch,
        session.stats.compiled,
        session.stats.cached,
        t0.elapsed().as_secs_f64()
    );
    let modes: &[bool] = match args.graphs {
        GraphMode::On => &[true],
        GraphMode::Off => &[false],
        GraphMode::Both => &[true, false],
    };
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    for &g in modes {
        session.set_graphs(g);
        for &batch in &args.batch {
            for &ctx in &args.context {
                let r = session.bench(batch, ctx, args.steps, args.chunk)?;
                println!(
                    "{{\"backend\": \"ligerc-cuda\", \"device\": {:?}, \"graphs\": {}, \"batch\": {batch}, \"context\": {ctx}, \"steps\": {}, \"prefill_chunk\": {}, \"prefill_s\": {:.6}, \"prefill_tok_s\": {:.1}, \"decode_s\": {:.6}, \"decode_tok_s\": {:.1}, \"ms_per_step\": {:.4}, \"prefill_peak_mib\": {:.1}, \"decode_peak_mib\": {:.1}}}",
                    session.stats.device,
                    r.graphs,
                    args.steps,
                    r.chunk,
                    r.prefill_s,
                    (batch * ctx) as f64 / r.prefill_s,
                    r.decode_s,
                    (batch * args.steps) as f64 / r.decode_s,
                    1e3 * r.decode_s / args.steps.max(1) as f64,
                    mib(r.prefill_peak_bytes),
                    mib(r.decode_peak_bytes),
                );
                if args.profile > 0 && g {
                    let prof = session.profile_decode(args.profile)?;
                    let total: f64 = prof.iter().map(|p| p.2).sum();
                    eprintln!(
                        "decode step profile, batch {batch}, context {ctx} ({total:.1} µs per step with events):"
                    );
                    for (name, n, us) in prof.iter().take(24) {
                        eprintln!("  {us:9.1} µs {:5.1}%  ×{n:<4} {name}", 100.0 * us / total);
                    }
                }
            }
        }
    }
    eprintln!(
        "cuda: {} graphs captured, {} graph launches, {} eager decode steps",
        session.stats.graphs_captured, session.stats.graph_launches, session.stats.eager_steps
    );
    Ok(())
}
