//! `ligerc run MODEL (--prompt TEXT | --ids … --logits FILE)`.

use std::io::Write;
use std::ops::ControlFlow;

use anyhow::{Context, Result};
use ligerc::output::write_atomic;
use ligerc::runtime::{GenerateOptions, Session};

use super::args::RunArgs;
use super::common::{UsageError, apply_passes, load, spinner, tokenizer};

/// Runs a model on the CPU reference backend.
pub fn run(args: &RunArgs) -> Result<()> {
    if args.prompt.is_none() && args.ids.is_empty() && args.perplexity.is_none() {
        return Err(UsageError(
            "give --prompt TEXT, --ids ID,ID,… or --perplexity FILE (see `ligerc run --help`)".into(),
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
        let text = std::fs::read_to_string(file).map_err(|e| UsageError(format!("{}: {e}", file.display())))?;
        let ids = tok.encode(&text, args.add_bos)?;
        let pb = spinner("preparing weights");
        let session = Session::new(model.graph)?;
        pb.finish_and_clear();
        let opts = ligerc::runtime::PerplexityOptions { window: args.ppl_window, stride: args.ppl_stride.unwrap_or(args.ppl_window) };
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
