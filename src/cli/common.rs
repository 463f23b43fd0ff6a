//! Pieces every command shares: loading with progress, running passes, error kinds.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ligerc::ir::Graph;
use ligerc::passes::{PassContext, PassManager, PassSpec, make_pass};
use ligerc::runtime::Tokenizer;
use ligerc::{LoadedModel, TokenizerSource};

use super::args::PassArgs;

/// An error caused by the user's input or arguments (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A spinner on stderr for work that may take over a second; hidden when
/// stderr is not a terminal.
pub fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// A bar with a known length on stderr, hidden when stderr is not a terminal.
pub fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} [{elapsed} < {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Imports a model, showing a spinner; weights are checked for NaN/Inf unless
/// `--no-check-finite` is given.
pub fn load(path: &Path, args: &PassArgs) -> Result<LoadedModel> {
    let pb = spinner(&format!("importing {}", path.display()));
    let options = ligerc::LoadOptions {
        check_finite: !args.no_check_finite,
    };
    let m = ligerc::load_model_with(path, &options);
    pb.finish_and_clear();
    Ok(m?)
}

/// Runs the `--pass` pipeline on `graph`; notes and `--print-after-all` go to stderr.
pub fn apply_passes(graph: &mut Graph, args: &PassArgs) -> Result<()> {
    let mut pm = PassManager::new();
    let flags = args.flag_options();
    let mut used = vec![false; flags.len()];
    for p in &args.passes {
        let mut spec: PassSpec = p
            .parse()
            .map_err(|e: ligerc::passes::PassError| UsageError(e.to_string()))?;
        // Flags like --variant fill in options of the pass they belong to (the
        // spec's own options win). --allow-partial also reaches the raise that
        // linearize runs first, through the pipeline's raise step.
        for (i, (pass, key, value)) in flags.iter().enumerate() {
            if spec.name == *pass || (*key == "allow-partial" && spec.name == "linearize") {
                used[i] = true;
                if !spec.options.iter().any(|(k, _)| k == key) {
                    spec.options.push((key.to_string(), value.clone()));
                }
            }
        }
        pm.add(make_pass(&spec).map_err(|e| UsageError(e.to_string()))?);
    }
    if let Some(i) = used.iter().position(|u| !u) {
        let (pass, key, _) = &flags[i];
        return Err(UsageError(format!(
            "--{key} applies to `--pass {pass}`, which is not in the pipeline"
        ))
        .into());
    }
    if pm.is_empty() {
        return Ok(());
    }
    let mut cx = PassContext::default();
    let mut print_err = None;
    pm.run(graph, &mut cx, |name, g| {
        if args.print_after_all {
            match ligerc::ir::text::print(g) {
                Ok(t) => eprintln!("// ----- IR after pass `{name}` -----\n{t}"),
                Err(e) => print_err = Some(e),
            }
        }
    })?;
    if let Some(e) = print_err {
        return Err(e.into());
    }
    for n in cx.notes {
        eprintln!("{n}");
    }
    Ok(())
}

/// Loads the model's tokenizer, or explains why there is none.
pub fn tokenizer(model: &LoadedModel, path: &Path) -> Result<Tokenizer> {
    match &model.tokenizer {
        Some(TokenizerSource::Json(p)) => Ok(Tokenizer::from_file(p)?),
        Some(TokenizerSource::Gguf(t)) => {
            if t.model != "gpt2" {
                return Err(UsageError(format!(
                    "{}: GGUF tokenizer model `{}` is not supported (only byte-level BPE, `gpt2`)",
                    path.display(),
                    t.model
                ))
                .into());
            }
            let pre = t
                .pre
                .as_deref()
                .and_then(ligerc::runtime::BpePreTokenizer::from_gguf_name)
                .unwrap_or(ligerc::runtime::BpePreTokenizer::Gpt2);
            Ok(Tokenizer::from_gguf_bpe_with(t.tokens.clone(), t.merges.clone(), t.token_types.clone(), t.bos, t.eos, pre)
                .with_context(|| format!("building the tokenizer of {}", path.display()))?)
        }
        None => Err(UsageError(format!(
            "{}: no tokenizer found (a tokenizer.json next to the model, or GGUF tokenizer metadata); use --ids instead of --prompt",
            path.display()
        ))
        .into()),
    }
}

/// `graph` lowered to a CUDA program with the default options; what the
/// model cannot be lowered for (an op without a kernel, a shape, shared
/// memory) is a usage error (exit 2), anything else an internal one.
pub fn emit_cuda_program(graph: &Graph) -> Result<ligerc::codegen::cuda::CudaProgram> {
    use ligerc::codegen::cuda::{CudaError, CudaOptions, emit_cuda};
    emit_cuda(graph, &CudaOptions::default()).map_err(|e| match e {
        CudaError::Unsupported { .. }
        | CudaError::Shape { .. }
        | CudaError::SharedMemory { .. } => anyhow::Error::from(UsageError(e.to_string())),
        e => anyhow::Error::from(e),
    })
}
