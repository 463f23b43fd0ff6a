//! `ligerc bench MODEL [--pass …] [--seq 128,512] [--decode N] [--json]`:
//! wall-clock timings of the CPU reference backend.
//!
//! Every measurement is one [`Record`]: a [`Stage`] (import, passes, weight
//! preparation, full forward, prefill, decode step), the sequence length and
//! batch it ran at, and its samples in milliseconds. Records print as a table,
//! or with `--json` as one JSON object per line, so scripts (see
//! `scripts/bench-cpu.sh`) can join them with other tools' numbers. New kinds
//! of measurement add a [`Stage`] and push more records; the output stays the
//! same shape.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Result;
use ligerc::ir::Graph;
use ligerc::runtime::Session;
use ligerc::{LoadedModel, ModelFormat};

use super::args::BenchArgs;
use super::common::{UsageError, apply_passes, load, spinner};

/// Vocabulary assumed for random ids when the graph's logits do not say.
const FALLBACK_VOCAB: usize = 100;

/// What one [`Record`] measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Importing the model file (`load_model`).
    Import,
    /// Running the `--pass` pipeline.
    Passes,
    /// Building the [`Session`]: verifying the graph and converting weights.
    Prepare,
    /// One full forward pass without a KV cache ([`Session::forward`]).
    Forward,
    /// A prefill that fills the KV cache ([`Session::prefill`]).
    Prefill,
    /// One decode step of one token per row after a prefill
    /// ([`Session::decode_step`]); its times are per step.
    Decode,
}

impl Stage {
    /// The stage's name in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Import => "import",
            Stage::Passes => "passes",
            Stage::Prepare => "prepare",
            Stage::Forward => "forward",
            Stage::Prefill => "prefill",
            Stage::Decode => "decode",
        }
    }
}

/// One measurement: a stage, where it ran, and its timed samples.
#[derive(Clone, Debug)]
pub struct Record {
    /// What was measured.
    pub stage: Stage,
    /// Tokens per row: the prompt length (for decode, the prefilled length
    /// before the first step); `None` for stages without one.
    pub seq: Option<usize>,
    /// Rows per run; `None` for stages without one.
    pub batch: Option<usize>,
    /// Tokens each sample processed in all (for tokens per second).
    pub tokens: Option<usize>,
    /// Untimed runs made before the samples.
    pub warmup: usize,
    /// Wall-clock times in milliseconds, one per timed run.
    pub samples_ms: Vec<f64>,
}

impl Record {
    fn new(stage: Stage, samples_ms: Vec<f64>) -> Record {
        Record {
            stage,
            seq: None,
            batch: None,
            tokens: None,
            warmup: 0,
            samples_ms,
        }
    }

    /// The median sample (mean of the middle two for an even count).
    pub fn median_ms(&self) -> f64 {
        median(&self.samples_ms)
    }

    /// The fastest sample.
    pub fn min_ms(&self) -> f64 {
        self.samples_ms
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
    }

    /// The slowest sample.
    pub fn max_ms(&self) -> f64 {
        self.samples_ms
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// Tokens per second at the median time, when the stage processes tokens.
    pub fn tokens_per_s(&self) -> Option<f64> {
        let m = self.median_ms();
        self.tokens
            .filter(|_| m > 0.0)
            .map(|t| t as f64 * 1000.0 / m)
    }
}

/// Facts shared by every record of one run, repeated in each JSON line.
struct Context {
    model: String,
    format: &'static str,
    label: Option<String>,
    passes: Vec<String>,
    threads: usize,
    matmul_threads: Option<usize>,
}

/// Median of `xs` (NaN when empty).
fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A small seeded generator (SplitMix64) for reproducible token ids.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn id(&mut self, vocab: usize) -> i64 {
        (self.next_u64() % vocab as u64) as i64
    }

    fn rows(&mut self, batch: usize, seq: usize, vocab: usize) -> Vec<Vec<i64>> {
        (0..batch)
            .map(|_| (0..seq).map(|_| self.id(vocab)).collect())
            .collect()
    }
}

/// Milliseconds `f` takes, with its result.
fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t0 = Instant::now();
    let out = f();
    (t0.elapsed().as_secs_f64() * 1000.0, out)
}

/// The vocabulary size: the last dim of the first output (the logits), when fixed.
fn vocab_size(graph: &Graph) -> Option<usize> {
    graph
        .outputs
        .first()
        .and_then(|o| graph.value_type(o.value).ok())
        .and_then(|t| t.dim(-1))
        .and_then(|d| d.fixed())
}

fn format_name(f: ModelFormat) -> &'static str {
    match f {
        ModelFormat::Onnx => "onnx",
        ModelFormat::HfDir => "hf",
        ModelFormat::Gguf => "gguf",
    }
}

/// Parses `--seq 128,512`.
fn parse_seqs(raw: &str) -> Result<Vec<usize>> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(UsageError(format!(
                "--seq `{raw}`: `{s}` is not a positive sequence length"
            ))
            .into()),
        })
        .collect()
}

/// A positive integer environment variable.
fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n| n > 0)
}

/// Times import, passes, weight preparation, and forward (and optionally
/// decode) passes of one model on the CPU reference backend.
pub fn bench(args: &BenchArgs) -> Result<()> {
    let seqs = if args.import_only {
        Vec::new()
    } else {
        parse_seqs(&args.seq)?
    };
    if !args.import_only && seqs.is_empty() {
        return Err(UsageError("--seq lists no sequence length".into()).into());
    }
    if args.batch == 0 || args.reps == 0 || args.import_reps == 0 {
        return Err(
            UsageError("--batch, --reps and --import-reps must be at least 1".into()).into(),
        );
    }
    let mut records = Vec::new();

    // Import: the last import is the one used further on.
    let mut samples = Vec::new();
    let mut model: Option<LoadedModel> = None;
    for _ in 0..args.import_reps {
        drop(model.take());
        let (ms, m) = timed(|| load(&args.model, &args.passes));
        samples.push(ms);
        model = Some(m?);
    }
    let Some(mut model) = model else {
        unreachable!("import_reps >= 1")
    };
    records.push(Record::new(Stage::Import, samples));

    let cx = Context {
        model: args.model.display().to_string(),
        format: format_name(model.format),
        label: args.label.clone(),
        passes: args.passes.passes.clone(),
        threads: env_usize("RAYON_NUM_THREADS")
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1),
        matmul_threads: env_usize("MATMUL_NUM_THREADS"),
    };

    if !args.passes.passes.is_empty() {
        let (ms, r) = timed(|| apply_passes(&mut model.graph, &args.passes));
        r?;
        records.push(Record::new(Stage::Passes, vec![ms]));
    }
    if args.import_only {
        return emit(args, &cx, &records);
    }

    let vocab = match vocab_size(&model.graph) {
        Some(v) if v > 0 => v,
        _ => {
            eprintln!(
                "warning: the logits' vocabulary size is not fixed; drawing ids below {FALLBACK_VOCAB}"
            );
            FALLBACK_VOCAB
        }
    };
    let pb = spinner("preparing weights");
    let (ms, session) = timed(|| Session::new(model.graph));
    pb.finish_and_clear();
    let mut session = session?;
    records.push(Record::new(Stage::Prepare, vec![ms]));
    if args.decode > 0 && !session.supports_kv_cache() {
        return Err(UsageError(format!(
            "{}: --decode needs a KV cache, and this graph still has generic ONNX attention",
            args.model.display()
        ))
        .into());
    }

    let mut rng = Rng(args.seed);
    let batch = args.batch;
    for &seq in &seqs {
        let rows = rng.rows(batch, seq, vocab);
        let pb = spinner(&format!("forward, {batch}×{seq} tokens"));
        let mut samples = Vec::new();
        for i in 0..args.warmup + args.reps {
            let (ms, out) = timed(|| session.forward(&rows));
            drop(out?);
            if i >= args.warmup {
                samples.push(ms);
            }
        }
        pb.finish_and_clear();
        records.push(Record {
            seq: Some(seq),
            batch: Some(batch),
            tokens: Some(batch * seq),
            warmup: args.warmup,
            ..Record::new(Stage::Forward, samples)
        });

        if args.decode > 0 {
            let pb = spinner(&format!(
                "prefill {batch}×{seq}, then {} decode steps",
                args.decode
            ));
            let mut prefill = Vec::new();
            let mut steps = Vec::new();
            for i in 0..args.warmup + args.reps {
                let (ms, out) = timed(|| session.prefill(&rows));
                drop(out?);
                let mut step_ms = Vec::with_capacity(args.decode);
                for _ in 0..args.decode {
                    let next: Vec<i64> = (0..batch).map(|_| rng.id(vocab)).collect();
                    let (ms, out) = timed(|| session.decode_step(&next));
                    drop(out?);
                    step_ms.push(ms);
                }
                if i >= args.warmup {
                    prefill.push(ms);
                    steps.extend(step_ms);
                }
            }
            session.reset();
            pb.finish_and_clear();
            records.push(Record {
                seq: Some(seq),
                batch: Some(batch),
                tokens: Some(batch * seq),
                warmup: args.warmup,
                ..Record::new(Stage::Prefill, prefill)
            });
            records.push(Record {
                seq: Some(seq),
                batch: Some(batch),
                tokens: Some(batch),
                warmup: args.warmup,
                ..Record::new(Stage::Decode, steps)
            });
        }
    }
    emit(args, &cx, &records)
}

/// Prints the records: JSON lines with `--json`, else a table.
fn emit(args: &BenchArgs, cx: &Context, records: &[Record]) -> Result<()> {
    if args.json {
        for r in records {
            println!("{}", json_line(cx, r));
        }
    } else {
        print!("{}", table(cx, records));
    }
    Ok(())
}

/// One record as a JSON object (one line).
fn json_line(cx: &Context, r: &Record) -> serde_json::Value {
    let finite = |x: f64| if x.is_finite() { Some(x) } else { None };
    serde_json::json!({
        "tool": "ligerc",
        "model": cx.model,
        "format": cx.format,
        "label": cx.label,
        "passes": cx.passes,
        "threads": cx.threads,
        "matmul_threads": cx.matmul_threads,
        "stage": r.stage.as_str(),
        "seq": r.seq,
        "batch": r.batch,
        "warmup": r.warmup,
        "reps": r.samples_ms.len(),
        "median_ms": finite(r.median_ms()),
        "min_ms": finite(r.min_ms()),
        "max_ms": finite(r.max_ms()),
        "tokens_per_s": r.tokens_per_s(),
        "samples_ms": r.samples_ms,
    })
}

/// The records as a plain-text table with a one-line header.
fn table(cx: &Context, records: &[Record]) -> String {
    let mut s = String::new();
    let passes = if cx.passes.is_empty() {
        "none".to_string()
    } else {
        cx.passes.join(" ")
    };
    let _ = writeln!(
        s,
        "{} ({}){}  passes: {passes}  threads: {}{}",
        cx.model,
        cx.format,
        cx.label
            .as_ref()
            .map(|l| format!("  [{l}]"))
            .unwrap_or_default(),
        cx.threads,
        cx.matmul_threads
            .map(|m| format!(" (matmul {m})"))
            .unwrap_or_default(),
    );
    let _ = writeln!(
        s,
        "{:<8} {:>5} {:>5} {:>4} {:>11} {:>11} {:>11} {:>10}",
        "stage", "seq", "batch", "n", "median ms", "min ms", "max ms", "tok/s"
    );
    let opt = |x: Option<usize>| x.map_or("-".to_string(), |v| v.to_string());
    for r in records {
        let _ = writeln!(
            s,
            "{:<8} {:>5} {:>5} {:>4} {:>11.2} {:>11.2} {:>11.2} {:>10}",
            r.stage.as_str(),
            opt(r.seq),
            opt(r.batch),
            r.samples_ms.len(),
            r.median_ms(),
            r.min_ms(),
            r.max_ms(),
            r.tokens_per_s()
                .map_or("-".to_string(), |t| format!("{t:.1}")),
        );
    }
    if records.iter().any(|r| r.stage == Stage::Decode) {
        let _ = writeln!(
            s,
            "decode: times are per step (one new token per row) after a prefill of `seq` tokens"
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn seqs_parse() {
        assert_eq!(parse_seqs("128, 512").unwrap(), vec![128, 512]);
        assert!(parse_seqs("128,0").is_err());
        assert!(parse_seqs("x").is_err());
    }

    #[test]
    fn rng_is_seeded_and_in_range() {
        let a = Rng(7).rows(2, 16, 10);
        assert_eq!(a, Rng(7).rows(2, 16, 10));
        assert!(a.iter().flatten().all(|&x| (0..10).contains(&x)));
    }

    #[test]
    fn tokens_per_second() {
        let r = Record {
            tokens: Some(100),
            ..Record::new(Stage::Forward, vec![500.0, 1000.0, 2000.0])
        };
        assert_eq!(r.tokens_per_s(), Some(100.0));
        assert_eq!(r.min_ms(), 500.0);
        assert_eq!(r.max_ms(), 2000.0);
    }
}
