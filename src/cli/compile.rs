//! `ligerc INPUT [--pass …] --emit ir|onnx [-o FILE]`.

use anyhow::{Context, Result};
use ligerc::codegen::onnx::{ExportOptions, export_onnx_bytes};
use ligerc::output::write_atomic;

use super::args::{CompileArgs, Emit};
use super::common::{UsageError, apply_passes, load, spinner};

/// Imports, rewrites and emits one model.
pub fn compile(args: &CompileArgs) -> Result<()> {
    let input = args
        .input
        .as_ref()
        .ok_or_else(|| UsageError("no INPUT model given (see --help)".into()))?;
    let mut model = load(input)?;
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
            let bytes = export_onnx_bytes(&model.graph, &ExportOptions::default())?;
            write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            pb.finish_and_clear();
        }
    }
    Ok(())
}
