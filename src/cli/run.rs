//! `ligerc run MODEL (--prompt TEXT | --ids … --logits FILE)`.

use std::io::Write;
use std::ops::ControlFlow;

use anyhow::{Context, Result};
use ligerc::output::write_atomic;
use ligerc::runtime::{GenerateOptions, Session};

use super::args::{Backend, RunArgs};
use super::common::{UsageError, apply_passes, emit_cuda_program, load, spinner, tokenizer};

/// Runs a model on the CPU reference backend.
pub fn run(args: &RunArgs) -> Result<()> {
    if args.backend == Backend::Cuda {
        return run_cuda(args);
    }
    if args.bench_decode.is_some() || args.prefill_len.is_some() {
        return Err(
            UsageError("--bench-decode and --prefill-len need --backend cuda".into()).into(),
        );
    }
    if args.prompt.is_none() && args.ids.is_empty() && args.perplexity.is_none() {
        return Err(UsageError(
            "give --prompt TEXT, --ids ID,ID,… or --perplexity FILE (see `ligerc run --help`)"
                .into(),
        )
        .into());
    }
    let rows = parse_ids(&args.ids)?;
    let mut model = load(&args.model, &args.passes)?;
    apply_passes(&mut model.graph, &args.passes)?;
    let tok = match (&args.prompt, &args.perplexity) {
        (None, None) => None,
        _ => Some(tokenizer(&model, &args.model)?),
    };
    if let (Some(file), Some(tok)) = (&args.perplexity, &tok) {
        let text = std::fs::read_to_string(file)
            .map_err(|e| UsageError(format!("{}: {e}", file.display())))?;
        let ids = tok.encode(&text, args.add_bos)?;
        let pb = spinner("preparing weights");
        let session = Session::new(model.graph)?;
        pb.finish_and_clear();
        let opts = ligerc::runtime::PerplexityOptions {
            window: args.ppl_window,
            stride: args.ppl_stride.unwrap_or(args.ppl_window),
        };
        let pb = super::common::bar(1, "perplexity");
        let r = ligerc::runtime::perplexity_with(&session, &ids, &opts, |done, total| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        })?;
        pb.finish_and_clear();
        println!(
            "{{\"file\": {:?}, \"tokens\": {}, \"tokens_scored\": {}, \"window\": {}, \"stride\": {}, \"mean_nll\": {}, \"perplexity\": {}}}",
            file.display().to_string(),
            ids.len(),
            r.tokens_scored,
            opts.window,
            opts.stride,
            r.mean_nll,
            r.ppl
        );
        return Ok(());
    }
    check_vocab(&model.graph, &rows)?;
    let pb = spinner("preparing weights");
    let mut session = Session::new(model.graph)?;
    pb.finish_and_clear();
    if let (Some(prompt), Some(tok)) = (&args.prompt, tok) {
        let ids = tok.encode(prompt, args.add_bos)?;
        if ids.is_empty() {
            return Err(UsageError("the prompt encodes to no tokens".into()).into());
        }
        let opts = GenerateOptions {
            max_new_tokens: args.max_new_tokens,
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
            stop_tokens: tok.eos_id().into_iter().collect(),
        };
        let mut out = std::io::stdout();
        print!("{prompt}");
        let mut generated: Vec<i64> = Vec::new();
        let mut shown = String::new();
        session.generate_with(&ids, &opts, |t| {
            generated.push(t);
            // Decode the whole continuation each time so multi-byte characters split across tokens print correctly.
            if let Ok(text) = tok.decode(&generated, true)
                && text.len() >= shown.len()
                && text.starts_with(shown.as_str())
            {
                print!("{}", &text[shown.len()..]);
                let _ = out.flush();
                shown = text;
            }
            ControlFlow::Continue(())
        })?;
        println!();
        return Ok(());
    }
    let pb = spinner("running the forward pass");
    let logits = session.forward(&rows)?;
    pb.finish_and_clear();
    let data = logits.as_f32("logits")?;
    match &args.logits {
        Some(path) => {
            let bytes = ligerc::npy::encode_f32(&logits.shape, data);
            write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote logits {:?} to {}", logits.shape, path.display());
        }
        None => {
            // Without --logits, print the most likely next token of each row.
            let vocab = *logits.shape.last().unwrap_or(&1);
            for (r, row) in data
                .chunks(vocab.max(1))
                .enumerate()
                .filter(|(i, _)| (i + 1) % rows[0].len() == 0)
            {
                let best = row
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                    );
                println!(
                    "row {}: next token {} (logit {})",
                    r / rows[0].len(),
                    best.0,
                    best.1
                );
            }
        }
    }
    Ok(())
}

/// Refuses token ids outside the vocabulary (the last dim of the `logits` output), when it is known.
fn check_vocab(graph: &ligerc::ir::Graph, rows: &[Vec<i64>]) -> Result<()> {
    let vocab = graph
        .outputs
        .first()
        .and_then(|o| graph.value_type(o.value).ok())
        .and_then(|t| t.dim(-1))
        .and_then(|d| d.fixed());
    if let Some(v) = vocab
        && let Some(bad) = rows
            .iter()
            .flatten()
            .find(|&&id| id < 0 || id as usize >= v)
    {
        return Err(
            UsageError(format!("token id {bad} is outside the vocabulary (0..{v})")).into(),
        );
    }
    Ok(())
}

/// Parses `--ids` rows; every row must be non-empty and equally long.
fn parse_ids(raw: &[String]) -> Result<Vec<Vec<i64>>> {
    let mut rows = Vec::new();
    for r in raw {
        let row: Vec<i64> = r
            .split(',')
            .map(|s| {
                s.trim().parse::<i64>().map_err(|_| {
                    UsageError(format!("--ids `{r}`: `{s}` is not an integer token id"))
                })
            })
            .collect::<Result<_, _>>()?;
        rows.push(row);
    }
    if let Some(first) = rows.first()
        && rows.iter().any(|r| r.len() != first.len())
    {
        return Err(UsageError("every --ids row must have the same length".into()).into());
    }
    Ok(rows)
}

/// `ligerc run --backend cuda`: the `--emit cuda` plan on the GPU.
fn run_cuda(args: &RunArgs) -> Result<()> {
    use ligerc::runtime::cuda::{CudaSession, check_available};
    if args.perplexity.is_some() {
        return Err(UsageError("--perplexity is not implemented for --backend cuda".into()).into());
    }
    if args.prompt.is_none() && args.ids.is_empty() && args.bench_decode.is_none() {
        return Err(
            UsageError("give --prompt TEXT, --ids ID,ID,… or --bench-decode N".into()).into(),
        );
    }
    if args.temperature > 0.0 || args.top_k > 0 || args.top_p < 1.0 {
        return Err(
            UsageError("--backend cuda generates greedily only (temperature 0)".into()).into(),
        );
    }
    // No GPU or CUDA library: say so before importing anything (exit code 3).
    check_available()?;
    let rows = parse_ids(&args.ids)?;
    let mut model = load(&args.model, &args.passes)?;
    apply_passes(&mut model.graph, &args.passes)?;
    check_vocab(&model.graph, &rows)?;
    let program = emit_cuda_program(&model.graph)?;
    let pb = spinner("compiling kernels (NVRTC) and uploading weights");
    let t0 = std::time::Instant::now();
    let mut session = CudaSession::from_program(&program)?;
    pb.finish_and_clear();
    eprintln!(
        "cuda: {} ({}, NVRTC {}.{}), {} kernels compiled, {} from the cache, {:.2} s setup",
        session.stats.device,
        session.stats.arch,
        session.stats.nvrtc.0,
        session.stats.nvrtc.1,
        session.stats.compiled,
        session.stats.cached,
        t0.elapsed().as_secs_f64()
    );
    if let Some(steps) = args.bench_decode {
        let (p, d) = session.bench_decode(args.bench_batch, args.bench_context, steps)?;
        println!(
            "{{\"backend\": \"cuda\", \"device\": {:?}, \"batch\": {}, \"context\": {}, \"steps\": {}, \"prefill_s\": {}, \"decode_s\": {}, \"prefill_tok_s\": {}, \"decode_tok_s\": {}}}",
            session.stats.device,
            args.bench_batch,
            args.bench_context,
            steps,
            p,
            d,
            (args.bench_batch * args.bench_context) as f64 / p,
            (args.bench_batch * steps) as f64 / d
        );
        return Ok(());
    }
    if let Some(prompt) = &args.prompt {
        let tok = tokenizer(&model, &args.model)?;
        let ids = tok.encode(prompt, args.add_bos)?;
        if ids.is_empty() {
            return Err(UsageError("the prompt encodes to no tokens".into()).into());
        }
        let stop: Vec<i64> = tok.eos_id().into_iter().collect();
        let mut out = std::io::stdout();
        print!("{prompt}");
        let mut generated: Vec<i64> = Vec::new();
        let mut shown = String::new();
        let (toks, pre_s, dec_s) =
            session.generate_greedy(&ids, args.max_new_tokens, &stop, |t| {
                generated.push(t);
                if let Ok(text) = tok.decode(&generated, true)
                    && text.len() >= shown.len()
                    && text.starts_with(shown.as_str())
                {
                    print!("{}", &text[shown.len()..]);
                    let _ = out.flush();
                    shown = text;
                }
            })?;
        println!();
        eprintln!(
            "cuda: prefill {} tokens {:.2} ms; {} tokens generated, decode {:.2} ms ({:.1} tok/s incl. host sync per token); ids {:?}",
            ids.len(),
            pre_s * 1e3,
            toks.len(),
            dec_s * 1e3,
            toks.len().saturating_sub(1) as f64 / dec_s.max(1e-9),
            toks
        );
        return Ok(());
    }
    let seq = rows[0].len();
    let logits = match args.prefill_len {
        Some(p) if p < seq => session.forward_decode(&rows, p.max(1))?,
        _ => session.forward(&rows)?,
    };
    let vocab = program.plan.model_info.vocab;
    let shape = vec![rows.len(), seq, vocab];
    match &args.logits {
        Some(path) => {
            let bytes = ligerc::npy::encode_f32(&shape, &logits);
            write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote logits {shape:?} to {}", path.display());
        }
        None => {
            for (r, row) in logits
                .chunks(vocab.max(1))
                .enumerate()
                .filter(|(i, _)| (i + 1) % seq == 0)
            {
                let best = row
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                    );
                println!("row {}: next token {} (logit {})", r / seq, best.0, best.1);
            }
        }
    }
    Ok(())
}
