//! `ligerc eval MODEL (--text FILE… | --task NAME… | --passkey)`: perplexity,
//! zero-shot multiple choice and passkey retrieval, as one JSON report.
//!
//! Scoring lives in `ligerc::runtime::eval`; this module parses the options,
//! reads every input before the model is loaded (so bad input fails fast),
//! shows progress and writes the report. Conventions: `docs/EVAL.md`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ligerc::output::write_atomic;
use ligerc::runtime::Tokenizer;
use ligerc::runtime::eval::{
    CpuModel, CudaModel, EvalError, LanguageModel, McOptions, PasskeyOptions, Question, TaskScore,
    TextScore, WindowOptions,
};
use serde_json::{Value, json};

use super::args::{Backend, PassArgs};
use super::common::{UsageError, apply_passes, emit_cuda_program, load, spinner, tokenizer};

/// The tasks `scripts/fetch-oe-eval.sh` fetches.
const KNOWN_TASKS: &[&str] = &[
    "piqa",
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "winogrande",
    "sciq",
    "boolq",
    "openbookqa",
];

/// Bucket boundaries of a bare `--buckets`.
const DEFAULT_BUCKETS: &str = "0,512,1k,2k,4k,8k";

/// `ligerc eval MODEL …`
#[derive(Args, Debug)]
#[command(after_help = "EXAMPLES:\n  \
    scripts/fetch-oe-eval.sh                      # once: data/oe-eval/<task>.jsonl.gz\n  \
    ligerc eval models/SmolLM2-135M-Instruct-hf --task piqa --task arc_easy --limit 100\n  \
    ligerc eval MODEL --pass linearize --task hellaswag -o liger.json\n  \
    ligerc eval MODEL --text book.txt --ppl-window 8192 --buckets      # loss by position 0–512, …, 4k–8k\n  \
    ligerc eval MODEL --pass linearize --passkey --lengths 1024,4096 --trials 5\n  \
    ligerc eval MODEL --task-file my_requests.jsonl --backend cuda\n\n\
    The report (stdout, and -o FILE) holds per task acc, acc_norm (per byte), acc_per_char, n;\n\
    for --text perplexity, tokens, tokens_scored and the buckets; for --passkey accuracy per length.\n\
    Scoring conventions: docs/EVAL.md.")]
pub struct EvalArgs {
    /// The model: an .onnx file, a Hugging Face directory, or a .gguf file.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Passes applied before evaluating.
    #[command(flatten)]
    pub passes: PassArgs,
    /// Perplexity over text files (each tokenized with the model's tokenizer, scored separately, totals pooled).
    #[arg(long, value_name = "FILE", num_args = 1.., help_heading = "Perplexity")]
    pub text: Vec<PathBuf>,
    /// With --text: tokens per forward pass.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 512,
        help_heading = "Perplexity"
    )]
    pub ppl_window: usize,
    /// With --text: distance between window starts [default: the window]; each window
    /// scores only the tokens no earlier window scored.
    #[arg(long, value_name = "N", help_heading = "Perplexity")]
    pub ppl_stride: Option<usize>,
    /// With --text: also report the loss by position within the window, in buckets
    /// `[lo, hi)` split at these boundaries (`k` = ×1024) [bare flag: 0,512,1k,2k,4k,8k].
    #[arg(long, value_name = "LIST", num_args = 0..=1, default_missing_value = DEFAULT_BUCKETS, help_heading = "Perplexity")]
    pub buckets: Option<String>,
    /// Zero-shot multiple-choice tasks, read from `DATA_DIR/NAME.jsonl.gz`
    /// (piqa, arc_easy, arc_challenge, hellaswag, winogrande, sciq, boolq, openbookqa).
    #[arg(long, value_name = "NAME", num_args = 1.., help_heading = "Multiple choice")]
    pub task: Vec<String>,
    /// A request file in OE-Eval's format (JSON lines, gzipped or not), named by its file stem.
    #[arg(long, value_name = "PATH", num_args = 1.., help_heading = "Multiple choice")]
    pub task_file: Vec<PathBuf>,
    /// Where --task looks for request files.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "data/oe-eval",
        help_heading = "Multiple choice"
    )]
    pub data_dir: PathBuf,
    /// Score only the first N questions of each task.
    #[arg(long, value_name = "N", help_heading = "Multiple choice")]
    pub limit: Option<usize>,
    /// Most tokens the model reads per choice; longer inputs lose tokens from the left (lm-eval's max_length).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2048,
        help_heading = "Multiple choice"
    )]
    pub max_length: usize,
    /// Most sequences per forward pass when choices run as a padded batch.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 8,
        help_heading = "Multiple choice"
    )]
    pub batch: usize,
    /// Include every question's per-choice log-likelihoods in the report.
    #[arg(long, help_heading = "Multiple choice")]
    pub details: bool,
    /// Passkey retrieval: a 5-digit key hidden at a random depth in filler text, answered greedily.
    #[arg(long, help_heading = "Passkey")]
    pub passkey: bool,
    /// With --passkey: prompt lengths in tokens (`k` = ×1024).
    #[arg(
        long,
        value_name = "LIST",
        default_value = "1024,2048,4096,8192",
        help_heading = "Passkey"
    )]
    pub lengths: String,
    /// With --passkey: prompts per length.
    #[arg(long, value_name = "N", default_value_t = 5, help_heading = "Passkey")]
    pub trials: usize,
    /// With --passkey: seed of the keys and depths.
    #[arg(long, default_value_t = 0, help_heading = "Passkey")]
    pub seed: u64,
    /// Where to run: the f32 CPU reference, or the GPU (exit code 3 when unavailable).
    /// On CUDA every choice runs as a full padded pass (no prefix reuse).
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
    /// Also write the report to FILE (atomically; nothing is written on failure).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// A task to score: its name, file and questions.
struct TaskInput {
    name: String,
    path: PathBuf,
    questions: Vec<Question>,
}

/// Runs `ligerc eval`.
pub fn eval(args: &EvalArgs) -> Result<()> {
    let started = Instant::now();
    if args.text.is_empty() && args.task.is_empty() && args.task_file.is_empty() && !args.passkey {
        return Err(UsageError(
            "give --text FILE, --task NAME, --task-file PATH or --passkey (see `ligerc eval --help`)"
                .into(),
        )
        .into());
    }
    let window = WindowOptions {
        window: args.ppl_window,
        stride: args.ppl_stride.unwrap_or(args.ppl_window),
        buckets: match &args.buckets {
            Some(b) => ligerc::runtime::eval::parse_buckets(b).map_err(eval_error)?,
            None => Vec::new(),
        },
    };
    if window.window < 2 || window.stride == 0 || window.stride > window.window {
        return Err(UsageError(format!(
            "--ppl-window must be ≥ 2 and --ppl-stride in 1..=window (got {}, {})",
            window.window, window.stride
        ))
        .into());
    }
    let texts: Vec<(PathBuf, String)> = args
        .text
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|t| (p.clone(), t))
                .map_err(|e| UsageError(format!("{}: {e}", p.display())))
        })
        .collect::<Result<_, _>>()?;
    let tasks = read_tasks(args)?;
    let passkey = if args.passkey {
        Some(PasskeyOptions {
            lengths: ligerc::runtime::eval::parse_buckets(&args.lengths).map_err(|_| {
                UsageError(format!(
                    "--lengths `{}`: expected increasing token counts like 1024,2k",
                    args.lengths
                ))
            })?,
            trials: args.trials,
            seed: args.seed,
            max_new_tokens: 8,
        })
    } else {
        None
    };
    if args.batch == 0 || args.max_length < 2 || (args.passkey && args.trials == 0) {
        return Err(UsageError("--batch and --trials must be ≥ 1, --max-length ≥ 2".into()).into());
    }
    if args.backend == Backend::Cuda {
        ligerc::runtime::cuda::check_available()?;
    }

    let mut loaded = load(&args.model, &args.passes)?;
    apply_passes(&mut loaded.graph, &args.passes)?;
    let tok = tokenizer(&loaded, &args.model)?;
    let mut model = make_model(args, loaded.graph)?;

    let mut report = json!({
        "model": args.model.display().to_string(),
        "passes": pass_list(&args.passes),
        "backend": model.backend(),
    });
    if !texts.is_empty() {
        report["text"] = score_texts(model.as_mut(), &tok, &texts, &window)?;
        for key in ["perplexity", "tokens", "tokens_scored", "mean_nll"] {
            report[key] = report["text"][key].clone();
        }
    }
    if !tasks.is_empty() {
        let opts = McOptions {
            max_length: args.max_length,
            batch: args.batch,
        };
        let mut out = serde_json::Map::new();
        for t in &tasks {
            let pb = rate_bar(t.questions.len() as u64, &t.name, "q");
            let s = ligerc::runtime::eval::score_task(
                model.as_mut(),
                &tok,
                &t.questions,
                &opts,
                |done, _| pb.set_position(done as u64),
            )
            .map_err(|e| eval_error(e).context(format!("task {}", t.name)))?;
            pb.finish_and_clear();
            eprintln!(
                "{}: acc {:.4}  acc_norm {:.4}  n {}",
                t.name, s.acc, s.acc_norm, s.n
            );
            out.insert(t.name.clone(), task_json(t, &s, args.details));
        }
        report["tasks"] = Value::Object(out);
        report["settings"]["max_length"] = json!(args.max_length);
        report["settings"]["batch"] = json!(args.batch);
        report["settings"]["limit"] = json!(args.limit);
    }
    if let Some(opts) = &passkey {
        let total = (opts.lengths.len() * opts.trials) as u64;
        let pb = rate_bar(total, "passkey", "trial");
        let r = ligerc::runtime::eval::run_passkey(model.as_mut(), &tok, opts, |done, _| {
            pb.set_position(done as u64)
        })
        .map_err(eval_error)?;
        pb.finish_and_clear();
        let by_len: Vec<Value> = r
            .accuracy_by_length()
            .into_iter()
            .map(|(length, correct, n)| {
                json!({"length": length, "accuracy": correct as f64 / n as f64, "correct": correct, "trials": n})
            })
            .collect();
        let trials: Vec<Value> = r
            .trials
            .iter()
            .map(|t| {
                json!({"length": t.length, "prompt_tokens": t.prompt_tokens, "depth": t.depth,
                       "key": t.key, "answer": t.answer, "correct": t.correct})
            })
            .collect();
        report["passkey"] = json!({"seed": opts.seed, "by_length": by_len, "trials": trials});
    }
    report["seconds"] = json!(started.elapsed().as_secs_f64());
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.output {
        write_atomic(path, format!("{text}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{text}");
    Ok(())
}

/// Reads `--task` and `--task-file` request files, applying `--limit`.
fn read_tasks(args: &EvalArgs) -> Result<Vec<TaskInput>> {
    let mut tasks = Vec::new();
    for name in &args.task {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(UsageError(format!(
                "--task `{name}`: a task name is letters, digits and _"
            ))
            .into());
        }
        let path = args.data_dir.join(format!("{name}.jsonl.gz"));
        if !path.exists() {
            let hint = if KNOWN_TASKS.contains(&name.as_str()) {
                "run scripts/fetch-oe-eval.sh to fetch it".to_string()
            } else {
                format!(
                    "known tasks: {}; or give --task-file PATH",
                    KNOWN_TASKS.join(", ")
                )
            };
            return Err(UsageError(format!(
                "unknown task `{name}`: {} does not exist ({hint})",
                path.display()
            ))
            .into());
        }
        tasks.push(read_task(name.clone(), &path, args.limit)?);
    }
    for path in &args.task_file {
        let name = task_name(path);
        tasks.push(read_task(name, path, args.limit)?);
    }
    Ok(tasks)
}

fn read_task(name: String, path: &Path, limit: Option<usize>) -> Result<TaskInput> {
    let mut questions = ligerc::runtime::eval::read_requests(path).map_err(eval_error)?;
    if let Some(n) = limit {
        questions.truncate(n);
    }
    Ok(TaskInput {
        name,
        path: path.to_path_buf(),
        questions,
    })
}

/// `dir/piqa.jsonl.gz` → `piqa`.
fn task_name(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    file.split('.').next().unwrap_or(&file).to_string()
}

/// The model on the chosen back end.
fn make_model(args: &EvalArgs, graph: ligerc::ir::Graph) -> Result<Box<dyn LanguageModel>> {
    let pb = spinner("preparing weights");
    let model: Box<dyn LanguageModel> = match args.backend {
        Backend::Cpu => Box::new(CpuModel::new(ligerc::runtime::Session::new(graph)?)),
        Backend::Cuda => {
            let program = emit_cuda_program(&graph)?;
            let session = ligerc::runtime::cuda::CudaSession::from_program(&program)?;
            Box::new(CudaModel::new(session))
        }
    };
    pb.finish_and_clear();
    Ok(model)
}

/// Perplexity of every text file, pooled, as the report's `text` object.
fn score_texts(
    model: &mut dyn LanguageModel,
    tok: &Tokenizer,
    texts: &[(PathBuf, String)],
    opts: &WindowOptions,
) -> Result<Value> {
    let mut scores = Vec::new();
    let mut files = Vec::new();
    for (path, text) in texts {
        let ids = tok.encode(text, false)?;
        let pb = rate_bar(1, &path.display().to_string(), "window");
        let s = ligerc::runtime::eval::score_text(model, &ids, opts, |done, total| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        })
        .map_err(|e| eval_error(e).context(path.display().to_string()))?;
        pb.finish_and_clear();
        files.push(json!({"file": path.display().to_string(), "tokens": s.tokens,
            "tokens_scored": s.tokens_scored, "mean_nll": s.mean_nll(), "perplexity": s.perplexity()}));
        scores.push(s);
    }
    let all = TextScore::combine(&scores);
    let buckets: Vec<Value> = all
        .buckets
        .iter()
        .map(|b| {
            json!({"lo": b.lo, "hi": b.hi, "tokens": b.tokens,
                "mean_nll": finite(b.mean_nll()), "perplexity": finite(b.mean_nll().exp())})
        })
        .collect();
    Ok(json!({
        "window": opts.window, "stride": opts.stride,
        "tokens": all.tokens, "tokens_scored": all.tokens_scored,
        "mean_nll": all.mean_nll(), "perplexity": all.perplexity(),
        "files": files, "buckets": buckets,
    }))
}

/// One task's report entry.
fn task_json(t: &TaskInput, s: &TaskScore, details: bool) -> Value {
    let mut v = json!({"file": t.path.display().to_string(), "n": s.n,
        "acc": s.acc, "acc_norm": s.acc_norm, "acc_per_char": s.acc_per_char});
    if details {
        v["questions"] = s
            .questions
            .iter()
            .map(|q| {
                json!({"doc_id": q.doc_id, "gold": q.gold, "pred": q.pred, "pred_norm": q.pred_norm,
                    "loglik": q.choices.iter().map(|c| c.loglik).collect::<Vec<_>>(),
                    "tokens": q.choices.iter().map(|c| c.tokens).collect::<Vec<_>>(),
                    "bytes": q.choices.iter().map(|c| c.bytes).collect::<Vec<_>>()})
            })
            .collect();
    }
    v
}

/// The pipeline as given: `--pass` values and pass-specific flags.
fn pass_list(p: &PassArgs) -> Value {
    let flags: Vec<String> = p
        .flag_options()
        .into_iter()
        .map(|(pass, key, value)| format!("{pass}.{key}={value}"))
        .collect();
    json!({"passes": p.passes, "options": flags})
}

/// NaN (an empty bucket) as JSON null.
fn finite(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

/// A progress bar with a rate, on stderr, hidden when stderr is not a terminal.
fn rate_bar(len: u64, msg: &str, unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let template =
        format!("{{msg}} {{bar:30}} {{pos}}/{{len}} {unit}s ({{per_sec}}) [{{elapsed}} < {{eta}}]");
    pb.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(250));
    pb
}

/// An evaluation error with the exit code it deserves: input problems are
/// usage errors (2); CUDA and runtime failures keep their own type.
fn eval_error(e: EvalError) -> anyhow::Error {
    match e {
        e if e.is_input_error() => UsageError(e.to_string()).into(),
        EvalError::Cuda(c) => c.into(),
        EvalError::Runtime(r) => r.into(),
        e => e.into(),
    }
}
