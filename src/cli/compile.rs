//! `ligerc INPUT [--pass …] --emit ir|onnx|cuda [-o FILE|DIR]`.

use anyhow::{Context, Result};
use ligerc::codegen::onnx::{ExportError, ExportOptions, OnnxForm, export_onnx_bytes};
use ligerc::output::write_atomic;

use super::args::{CompileArgs, Emit, OnnxFormArg};
use super::common::{UsageError, apply_passes, emit_cuda_program, load, spinner};

/// Imports, rewrites and emits one model.
pub fn compile(args: &CompileArgs) -> Result<()> {
    let input = args
        .input
        .as_ref()
        .ok_or_else(|| UsageError("no INPUT model given (see --help)".into()))?;
    if args.emit != Emit::Onnx && args.onnx_form != OnnxFormArg::Full {
        return Err(UsageError("--onnx-form applies to --emit onnx".into()).into());
    }
    let mut model = load(input, &args.passes)?;
    apply_passes(&mut model.graph, &args.passes)?;
    match args.emit {
        Emit::Ir => {
            let text = ligerc::ir::text::print(&model.graph)?;
            match &args.output {
                Some(path) => write_atomic(path, text.as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
        }
        Emit::Onnx => {
            let path = args
                .output
                .as_ref()
                .ok_or_else(|| UsageError("--emit onnx needs -o FILE".into()))?;
            let pb = spinner(&format!("writing {}", path.display()));
            let opts = ExportOptions {
                form: match args.onnx_form {
                    OnnxFormArg::Full => OnnxForm::Full,
                    OnnxFormArg::Step => OnnxForm::Step,
                },
                ..ExportOptions::default()
            };
            // A graph the step form cannot carry (softmax attention with a mask) is the user's input.
            let bytes = export_onnx_bytes(&model.graph, &opts).map_err(|e| match e {
                ExportError::Unsupported(m) if opts.form == OnnxForm::Step => {
                    UsageError(format!("ONNX export: {m}")).into()
                }
                e => anyhow::Error::from(e),
            })?;
            write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            pb.finish_and_clear();
        }
        Emit::Cuda => {
            let dir = args
                .output
                .as_ref()
                .ok_or_else(|| UsageError("--emit cuda needs -o DIR".into()))?;
            // A graph without kernels for some node is the user's input (exit 2).
            let program = emit_cuda_program(&model.graph)?;
            let pb = spinner(&format!("writing {}", dir.display()));
            ligerc::output::write_dir_atomic(dir, |tmp| {
                program.write_to(tmp).map_err(std::io::Error::other)
            })
            .with_context(|| format!("writing {}", dir.display()))?;
            pb.finish_and_clear();
        }
    }
    Ok(())
}
