//! What `ligerc finetune` writes into its output folder, each file under a
//! temporary name renamed into place: `metrics.jsonl`, `loss_curve.svg`,
//! `summary.json`, the PEFT adapter and, with `--merge`, `merged/`.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ligerc::codegen::onnx::{ExportOptions, export_onnx_bytes};
use ligerc::ir::{Graph, TensorData};
use ligerc::output::{write_atomic, write_dir_atomic};
use ligerc::runtime::train::{RunState, StepReport, Trainer, loss_curve_svg};

use super::finetune_args::FinetuneArgs;

/// The metrics log's file name.
pub const METRICS: &str = "metrics.jsonl";

/// One update's metrics line.
pub fn metrics_line(r: &StepReport, tokens_per_s: Option<f64>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "step": r.step,
        "loss": r.loss,
        "tokens": r.tokens,
        "grad_norm": r.grad_norm,
        "lr": r.lr,
        "skipped": r.skipped,
    });
    if let Some(rate) = tokens_per_s {
        v["tokens_per_s"] = serde_json::json!(rate);
    }
    v
}

/// The output folder of a run.
pub struct Outputs {
    dir: PathBuf,
}

impl Outputs {
    /// Outputs under `dir`.
    pub fn new(dir: &Path) -> Outputs {
        Outputs {
            dir: dir.to_path_buf(),
        }
    }

    /// Creates the folder for a new run and empties its metrics log.
    pub fn start_fresh(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        write_atomic(&self.dir.join(METRICS), b"")
            .with_context(|| format!("writing {}", self.dir.join(METRICS).display()))
    }

    /// The metrics log, opened for appending.
    pub fn metrics_appender(&self) -> Result<BufWriter<File>> {
        let path = self.dir.join(METRICS);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(BufWriter::new(f))
    }

    /// Rewrites the metrics log from a checkpoint's history, dropping lines a
    /// killed run wrote after its last checkpoint.
    pub fn rewrite_metrics(&self, st: &RunState) -> Result<()> {
        let mut text = String::new();
        let mut held = st.heldout.iter().peekable();
        while let Some(&&(0, loss)) = held.peek() {
            text.push_str(&serde_json::json!({"step": 0, "heldout_loss": loss}).to_string());
            text.push('\n');
            held.next();
        }
        for r in &st.history {
            text.push_str(&metrics_line(r, None).to_string());
            text.push('\n');
            while let Some(&&(step, loss)) = held.peek() {
                if step > r.step {
                    break;
                }
                text.push_str(&serde_json::json!({"step": step, "heldout_loss": loss}).to_string());
                text.push('\n');
                held.next();
            }
        }
        write_atomic(&self.dir.join(METRICS), text.as_bytes())
            .with_context(|| format!("writing {}", self.dir.join(METRICS).display()))
    }

    /// The run's final outputs: adapter, loss curve, summary and, with `--merge`, the merged model.
    pub fn finish(
        &self,
        graph: &mut Graph,
        trainer: &mut Trainer,
        st: &RunState,
        args: &FinetuneArgs,
    ) -> Result<()> {
        for p in trainer.params()? {
            let data = TensorData::from_f32(p.shape.clone(), &p.value)?;
            graph.weights.insert(p.name.clone(), data);
        }
        let base = args.model.display().to_string();
        ligerc::passes::write_adapter(graph, &self.dir, &base)
            .with_context(|| format!("writing the adapter to {}", self.dir.display()))?;
        let title = format!("ligerc finetune · {}", file_name(&args.model));
        let svg = loss_curve_svg(&title, &st.history, &st.heldout);
        write_atomic(&self.dir.join("loss_curve.svg"), svg.as_bytes())?;
        let summary = serde_json::json!({
            "model": base,
            "passes": args.passes.passes,
            "steps": st.step,
            "skipped_updates": st.bad_steps,
            "trained_tokens": st.history.iter().map(|r| r.tokens).sum::<usize>(),
            "first_loss": st.history.first().map(|r| r.loss),
            "last_loss": st.history.last().map(|r| r.loss),
            "heldout": st.heldout,
            "config": st.config,
        });
        write_atomic(
            &self.dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)?.as_bytes(),
        )?;
        if args.merge {
            self.merge(graph)?;
        }
        Ok(())
    }

    /// `merged/model.onnx` and `merged/model.safetensors` (every weight under its graph name).
    fn merge(&self, graph: &mut Graph) -> Result<()> {
        ligerc::passes::merge_lora(graph)?;
        let onnx = export_onnx_bytes(graph, &ExportOptions::default())?;
        let tensors = weights_safetensors(graph)?;
        write_dir_atomic(&self.dir.join("merged"), |tmp| {
            std::fs::write(tmp.join("model.onnx"), &onnx)?;
            std::fs::write(tmp.join("model.safetensors"), &tensors)
        })
        .with_context(|| format!("writing {}", self.dir.join("merged").display()))
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// All graph weights as one safetensors file, in their stored dtypes.
fn weights_safetensors(graph: &Graph) -> Result<Vec<u8>> {
    use safetensors::tensor::TensorView;
    let views: Vec<(String, TensorView<'_>)> = graph
        .weights
        .iter()
        .map(|(name, t)| {
            let dtype = safetensors_dtype(t.dtype())
                .with_context(|| format!("weight `{name}` has dtype {}", t.dtype()))?;
            let view = TensorView::new(dtype, t.shape().to_vec(), t.bytes())
                .with_context(|| format!("weight `{name}`"))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<_>>()?;
    Ok(safetensors::serialize(views, None)?)
}

fn safetensors_dtype(d: ligerc::ir::DType) -> Option<safetensors::Dtype> {
    use ligerc::ir::DType;
    use safetensors::Dtype;
    Some(match d {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F64 => Dtype::F64,
        DType::I64 => Dtype::I64,
        DType::I32 => Dtype::I32,
        DType::I8 => Dtype::I8,
        DType::U8 => Dtype::U8,
        DType::Bool => Dtype::BOOL,
    })
}
