//! `ligerc finetune`: LoRA fine-tuning of a (linearized) model on the CPU.
//!
//! Load → passes → training and evaluation graphs (the autodiff pass) →
//! data (tokenized, packed, split) → updates with a progress bar, metrics,
//! held-out evaluations and atomic checkpoints → the PEFT adapter, the loss
//! curve and a summary, all written under temporary names and renamed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use ligerc::passes::autodiff::{is_lora_weight, training_graph};
use ligerc::runtime::data::{ByteEncoder, DataOptions, Dataset, Encode, Loader, load_dataset};
use ligerc::runtime::train::{
    AdamW, Checkpoint, RunState, Schedule, StepReport, TrainConfig, Trainer, initial_params,
    input_names, load_checkpoint, save_checkpoint,
};

use super::args::Backend;
use super::common::{UsageError, apply_passes, bar, load, spinner, tokenizer};
use super::finetune_args::{FinetuneArgs, FrozenArg, ScheduleArg, TokenizerArg};
use super::finetune_output::{Outputs, metrics_line};

/// Runs `ligerc finetune`.
pub fn finetune(args: &FinetuneArgs) -> Result<()> {
    let config = train_config(args)?;
    let files = data_files(&args.data)?;
    if args.backend == Backend::Cuda {
        // No GPU or CUDA library: say so before importing anything (exit code 3).
        ligerc::runtime::cuda::check_available()?;
    }
    let mut model = load(&args.model, &args.passes)?;
    apply_passes(&mut model.graph, &args.passes)?;
    let pb = spinner("building the training graph");
    let train = training_graph(&model.graph, &is_lora_weight, true)
        .map_err(|e| UsageError(e.to_string()))?;
    let eval = training_graph(&model.graph, &is_lora_weight, false)?;
    pb.finish_and_clear();
    eprintln!(
        "autodiff: {} trainable tensors ({} parameters), {} backward ops",
        train.trainable.len(),
        train
            .trainable
            .iter()
            .filter_map(|n| model.graph.weights.get(n))
            .map(|w| w.numel())
            .sum::<usize>(),
        train.vjp_nodes
    );
    let vocab = logits_width(&model.graph);
    let data = {
        let pb = spinner("tokenizing and packing the data");
        let opts = DataOptions {
            seq_len: args.seq_len,
            heldout_fraction: args.heldout,
            seed: args.seed,
            max_tokens: args.max_tokens,
            ..DataOptions::default()
        };
        let data = match args.tokenizer {
            TokenizerArg::Bytes => load_with(&files, &ByteEncoder::new(), &opts, vocab)?,
            TokenizerArg::Model => {
                let tok = tokenizer(&model, &args.model)?;
                load_with(&files, &tok, &opts, vocab)?
            }
        };
        pb.finish_and_clear();
        data
    };
    let s = &data.stats;
    eprintln!(
        "data: {} documents, {} tokens → {} training and {} held-out sequences of {}",
        s.documents, s.tokens, s.train_sequences, s.heldout_sequences, args.seq_len
    );
    let fingerprint = fingerprint(args, &files)?;
    let mut trainer = new_trainer(args, train, eval.graph, config.clone())?;
    let out = Outputs::new(&args.output);
    let mut state = prepare_resume(args, &out, &mut trainer, config, fingerprint)?;
    let mut loader = Loader::resume(args.seed, data.train.len(), state.cursor)?;
    let heldout = &data.heldout[..data.heldout.len().min(args.eval_sequences)];
    let bar = progress(args.steps, state.step);
    let started = Instant::now();
    let mut tokens_since = 0usize;
    let mut metrics = out.metrics_appender()?;
    let log_every = (args.steps / 20).max(1);
    if state.step == 0
        && let Some(loss) = evaluate(&mut trainer, heldout, args.batch)?
    {
        say(&bar, format!("step 0: held-out loss {loss:.4}"));
        writeln!(
            metrics,
            "{}",
            serde_json::json!({"step": 0, "heldout_loss": loss})
        )?;
        state.heldout.push((0, loss));
    }
    while trainer.step() < args.steps {
        let micro: Vec<Vec<&_>> = (0..args.accum)
            .map(|_| {
                loader
                    .next_batch(args.batch)
                    .into_iter()
                    .map(|i| &data.train[i])
                    .collect()
            })
            .collect();
        let report = trainer.train_step(&micro)?;
        if report.step == 1
            && let Some(path) = &args.dump_grads
        {
            dump_grads(&mut trainer, path)?;
        }
        tokens_since += report.tokens;
        let rate = tokens_since as f64 / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(report.step);
        bar.set_message(format!(
            "training · loss {:.4} · {:.0} tok/s{}{}",
            report.loss,
            rate,
            peak_note(&trainer),
            if trainer.bad_steps() > 0 {
                format!(" · {} skipped", trainer.bad_steps())
            } else {
                String::new()
            }
        ));
        if bar.is_hidden() && (report.step % log_every == 0 || report.step == args.steps) {
            eprintln!(
                "step {}/{}: loss {:.4}, grad norm {:.3}, lr {:.2e}, {:.0} tok/s{}",
                report.step,
                args.steps,
                report.loss,
                report.grad_norm,
                report.lr,
                rate,
                peak_note(&trainer)
            );
        }
        if report.skipped {
            say(
                &bar,
                format!(
                    "step {}: non-finite loss or gradient, update skipped ({} so far)",
                    report.step,
                    trainer.bad_steps()
                ),
            );
        }
        writeln!(metrics, "{}", metrics_line(&report, Some(rate)))?;
        state.history.push(report);
        let step = trainer.step();
        let last = step == args.steps;
        if ((args.eval_every > 0 && step % args.eval_every == 0) || last)
            && let Some(loss) = evaluate(&mut trainer, heldout, args.batch)?
        {
            say(&bar, format!("step {step}: held-out loss {loss:.4}"));
            writeln!(
                metrics,
                "{}",
                serde_json::json!({"step": step, "heldout_loss": loss})
            )?;
            state.heldout.push((step, loss));
        }
        metrics.flush()?;
        if (args.save_every > 0 && step % args.save_every == 0) || last {
            state.step = step;
            state.updates = trainer.updates();
            state.bad_steps = trainer.bad_steps();
            state.cursor = loader.cursor();
            save_checkpoint(
                &args.output,
                &Checkpoint {
                    params: trainer.params()?.to_vec(),
                    state: state.clone(),
                },
            )?;
        }
    }
    bar.finish_and_clear();
    out.finish(&mut model.graph, &mut trainer, &state, args)?;
    let last: Vec<&StepReport> = state.history.iter().rev().take(10).collect();
    let recent = last
        .iter()
        .map(|r| r.loss)
        .filter(|l| l.is_finite())
        .sum::<f64>()
        / last.iter().filter(|r| r.loss.is_finite()).count().max(1) as f64;
    eprintln!(
        "done: {} updates ({} skipped) on {}, {:.0} tok/s{}, recent train loss {recent:.4}{}, outputs in {}",
        trainer.step(),
        trainer.bad_steps(),
        trainer.backend_name(),
        tokens_since as f64 / started.elapsed().as_secs_f64().max(1e-9),
        peak_note(&trainer),
        state
            .heldout
            .last()
            .map(|(_, l)| format!(", held-out loss {l:.4}"))
            .unwrap_or_default(),
        args.output.display()
    );
    Ok(())
}

/// The held-out loss, or `None` without held-out data.
fn evaluate(
    trainer: &mut Trainer,
    heldout: &[ligerc::runtime::data::Sequence],
    batch: usize,
) -> Result<Option<f64>> {
    if heldout.is_empty() {
        return Ok(None);
    }
    Ok(Some(trainer.evaluate(heldout, batch)?.0))
}

/// A trainer on the chosen backend.
fn new_trainer(
    args: &FinetuneArgs,
    train: ligerc::passes::autodiff::TrainingGraph,
    eval: ligerc::ir::Graph,
    config: TrainConfig,
) -> Result<Trainer> {
    use ligerc::runtime::train::{FrozenDtype, round_frozen_to_bf16};
    let frozen = frozen_dtype(args);
    Ok(match args.backend {
        Backend::Cpu => {
            let (mut graph, mut eval) = (train.graph, eval);
            if frozen == FrozenDtype::Bf16 {
                let n = round_frozen_to_bf16(&mut [&mut graph, &mut eval], &train.trainable)?;
                eprintln!(
                    "cpu: {n} frozen projection weights rounded to bf16 (--frozen-dtype bf16)"
                );
            }
            Trainer::new(graph, eval, &train.trainable, config)?
        }
        Backend::Cuda => {
            let pb = spinner("compiling training kernels (NVRTC) and uploading weights");
            let params = initial_params(&train.graph, &train.trainable)?;
            let (ti, ei) = (input_names(&train.graph), input_names(&eval));
            let gpu = ligerc::runtime::cuda::train::CudaBackend::new(
                train.graph,
                eval,
                &train.trainable,
                frozen,
            )?;
            pb.finish_and_clear();
            eprintln!("cuda: training on {}", gpu.device_name());
            Trainer::with_backend(Box::new(gpu), params, ti, ei, config)?
        }
    })
}

/// `, peak N MiB GPU` when the backend tracks device memory.
fn peak_note(trainer: &Trainer) -> String {
    trainer
        .peak_memory()
        .map(|b| format!(", peak {:.0} MiB GPU", b as f64 / (1 << 20) as f64))
        .unwrap_or_default()
}

/// `--dump-grads`: the first update's gradients as JSON.
fn dump_grads(trainer: &mut Trainer, path: &Path) -> Result<()> {
    let shapes: std::collections::HashMap<String, Vec<usize>> = trainer
        .params()?
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect();
    let mut map = serde_json::Map::new();
    for (name, g) in trainer.last_grads()? {
        let shape = shapes.get(&name).cloned().unwrap_or_default();
        map.insert(name, serde_json::json!({"shape": shape, "values": g}));
    }
    std::fs::write(path, serde_json::Value::Object(map).to_string())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn load_with(
    files: &[PathBuf],
    enc: &dyn Encode,
    opts: &DataOptions,
    vocab: Option<usize>,
) -> Result<Dataset> {
    if let Some(v) = vocab
        && enc.vocab_size() > v
    {
        return Err(UsageError(format!(
            "the tokenizer has {} tokens but the model's vocabulary is {v} (use --tokenizer bytes only with byte-level models)",
            enc.vocab_size()
        ))
        .into());
    }
    load_dataset(files, enc, opts).map_err(|e| UsageError(e.to_string()).into())
}

fn logits_width(graph: &ligerc::ir::Graph) -> Option<usize> {
    let out = graph
        .outputs
        .iter()
        .find(|o| o.name == "logits")
        .or(graph.outputs.first())?;
    graph.value_type(out.value).ok()?.dim(-1)?.fixed()
}

/// The settings from the flags, checked.
fn train_config(args: &FinetuneArgs) -> Result<TrainConfig> {
    let betas: Vec<f64> = args
        .betas
        .split(',')
        .map(|b| b.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            UsageError(format!(
                "--betas `{}`: expected two numbers B1,B2",
                args.betas
            ))
        })?;
    let [beta1, beta2] = betas[..] else {
        return Err(UsageError(format!(
            "--betas `{}`: expected two numbers B1,B2",
            args.betas
        ))
        .into());
    };
    if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) {
        return Err(UsageError("--betas must lie in [0, 1)".into()).into());
    }
    let positive = |v: f64, what: &str| -> Result<()> {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(UsageError(format!("{what} must be positive, is {v}")).into())
        }
    };
    positive(args.lr, "--lr")?;
    positive(args.adam_eps, "--adam-eps")?;
    if args.steps == 0 || args.batch == 0 || args.accum == 0 || args.seq_len < 2 {
        return Err(UsageError(
            "--steps, --batch and --accum must be ≥ 1 and --seq-len ≥ 2".into(),
        )
        .into());
    }
    if !(args.clip >= 0.0 && args.weight_decay >= 0.0) {
        return Err(UsageError("--clip and --weight-decay must be ≥ 0".into()).into());
    }
    Ok(TrainConfig {
        steps: args.steps,
        batch: args.batch,
        accum: args.accum,
        lr: args.lr,
        warmup: args.warmup,
        schedule: match args.schedule {
            ScheduleArg::Constant => Schedule::Constant,
            ScheduleArg::Cosine => Schedule::Cosine,
        },
        adamw: AdamW {
            beta1,
            beta2,
            eps: args.adam_eps,
            weight_decay: args.weight_decay,
        },
        clip: args.clip,
        max_bad_steps: args.max_bad_steps,
        seed: args.seed,
    })
}

/// The files behind `--data`: files as given, folders walked (sorted, hidden entries skipped).
fn data_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found).with_context(|| format!("reading {}", p.display()))?;
            if found.is_empty() {
                return Err(UsageError(format!(
                    "--data {}: the folder holds no files",
                    p.display()
                ))
                .into());
            }
            files.extend(found);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(
                UsageError(format!("--data {}: no such file or folder", p.display())).into(),
            );
        }
    }
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// How the frozen projection weights are held: `--frozen-dtype`, else bf16 on the GPU and
/// f32 on the CPU.
fn frozen_dtype(args: &FinetuneArgs) -> ligerc::runtime::train::FrozenDtype {
    use ligerc::runtime::train::FrozenDtype;
    match (args.frozen_dtype, args.backend) {
        (Some(FrozenArg::Bf16), _) | (None, Backend::Cuda) => FrozenDtype::Bf16,
        (Some(FrozenArg::F32), _) | (None, Backend::Cpu) => FrozenDtype::F32,
    }
}

/// What must be the same for `--resume` to continue a run: model, passes, data, packing,
/// the frozen weights' precision (a GPU run resumed on the CPU needs `--frozen-dtype bf16`).
fn fingerprint(args: &FinetuneArgs, files: &[PathBuf]) -> Result<String> {
    let sizes: Vec<String> = files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .map(|m| format!("{}:{}", f.display(), m.len()))
                .with_context(|| format!("reading {}", f.display()))
        })
        .collect::<Result<_>>()?;
    Ok(format!(
        "model={} passes={:?} flags={:?} data=[{}] seq_len={} heldout={} max_tokens={:?} tokenizer={:?} frozen={:?}",
        args.model.display(),
        args.passes.passes,
        args.passes.flag_options(),
        sizes.join(","),
        args.seq_len,
        args.heldout,
        args.max_tokens,
        args.tokenizer,
        frozen_dtype(args)
    ))
}

/// A fresh run state, or the checkpointed one restored into `trainer` with `--resume`.
fn prepare_resume(
    args: &FinetuneArgs,
    out: &Outputs,
    trainer: &mut Trainer,
    config: TrainConfig,
    fingerprint: String,
) -> Result<RunState> {
    let found = load_checkpoint(&args.output)?;
    match (found, args.resume) {
        (None, false) => {
            out.start_fresh()?;
            Ok(RunState::new(config, fingerprint))
        }
        (None, true) => Err(UsageError(format!(
            "--resume: {} holds no checkpoint",
            args.output.display()
        ))
        .into()),
        (Some(_), false) => Err(UsageError(format!(
            "{} already holds a training run; pass --resume to continue it, or choose another -o",
            args.output.display()
        ))
        .into()),
        (Some(ckpt), true) => {
            let st = ckpt.state;
            if st.fingerprint != fingerprint {
                return Err(UsageError(format!(
                    "--resume: the checkpoint was made with other inputs\n  checkpoint: {}\n  now:        {fingerprint}",
                    st.fingerprint
                ))
                .into());
            }
            if st.config != config {
                return Err(UsageError(format!(
                    "--resume: the checkpoint was made with other settings\n  checkpoint: {:?}\n  now:        {config:?}",
                    st.config
                ))
                .into());
            }
            trainer.restore(ckpt.params, st.step, st.updates, st.bad_steps)?;
            out.rewrite_metrics(&st)?;
            eprintln!("resuming at update {} of {}", st.step, args.steps);
            Ok(st)
        }
    }
}

/// A line above the bar, or on stderr when the bar is hidden (not a terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn progress(total: u64, at: u64) -> ProgressBar {
    let pb = bar(total, "training");
    pb.set_position(at);
    pb
}
