//! Loading a model of any supported kind, with its tokenizer when it has one.

use std::path::{Path, PathBuf};

use ligerc_frontends::llama::{GgufTokenizer, import_gguf, import_hf_dir};
use ligerc_frontends::onnx::import_onnx;
use ligerc_frontends::{ImportError, ImportResult};
use ligerc_ir::Graph;

/// The kind of model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// An `.onnx` file.
    Onnx,
    /// A Hugging Face directory (`config.json` + safetensors).
    HfDir,
    /// A llama.cpp `.gguf` file.
    Gguf,
}

/// Where a model's tokenizer comes from.
#[derive(Clone, Debug)]
pub enum TokenizerSource {
    /// A Hugging Face `tokenizer.json`.
    Json(PathBuf),
    /// Tokenizer tables from GGUF metadata.
    Gguf(GgufTokenizer),
}

/// An imported model.
pub struct LoadedModel {
    /// Its graph.
    pub graph: Graph,
    /// Its file kind.
    pub format: ModelFormat,
    /// Its tokenizer, when one ships with it.
    pub tokenizer: Option<TokenizerSource>,
}

/// Decides the kind of `path`: a directory is a Hugging Face checkpoint; a
/// file is recognised by its magic bytes (`GGUF`) or extension (`.onnx`).
pub fn detect_format(path: &Path) -> ImportResult<ModelFormat> {
    if path.is_dir() {
        return Ok(ModelFormat::HfDir);
    }
    let mut magic = [0u8; 4];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|source| ImportError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        f.read(&mut magic).map_err(|source| ImportError::Io {
            path: path.to_path_buf(),
            source,
        })?
    };
    if n == 4 && &magic == b"GGUF" {
        return Ok(ModelFormat::Gguf);
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("onnx") => Ok(ModelFormat::Onnx),
        Some("gguf") => Ok(ModelFormat::Gguf),
        _ => Err(ImportError::Unsupported {
            path: path.to_path_buf(),
            detail: "not a model ligerc reads: expected an .onnx file, a .gguf file or a Hugging Face directory".into(),
        }),
    }
}

/// How [`load_model_with`] loads a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Refuse weights holding NaN or infinity (on by default; the CLI's
    /// `--no-check-finite` turns it off).
    pub check_finite: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { check_finite: true }
    }
}

/// Imports `path` (ONNX, Hugging Face directory or GGUF) with the default
/// [`LoadOptions`]: weights holding NaN or infinity are refused.
pub fn load_model(path: &Path) -> ImportResult<LoadedModel> {
    load_model_with(path, &LoadOptions::default())
}

/// Imports `path` (ONNX, Hugging Face directory or GGUF).
pub fn load_model_with(path: &Path, options: &LoadOptions) -> ImportResult<LoadedModel> {
    let model = import_any(path)?;
    if options.check_finite {
        ligerc_frontends::check_finite(&model.graph, path)?;
    }
    Ok(model)
}

fn import_any(path: &Path) -> ImportResult<LoadedModel> {
    let format = detect_format(path)?;
    let sibling_json = |dir: &Path| {
        let p = dir.join("tokenizer.json");
        p.is_file().then_some(TokenizerSource::Json(p))
    };
    Ok(match format {
        ModelFormat::Onnx => LoadedModel {
            graph: import_onnx(path)?,
            format,
            tokenizer: path.parent().and_then(sibling_json),
        },
        ModelFormat::HfDir => LoadedModel {
            graph: import_hf_dir(path)?,
            format,
            tokenizer: sibling_json(path),
        },
        ModelFormat::Gguf => {
            let m = import_gguf(path)?;
            LoadedModel {
                graph: m.graph,
                format,
                tokenizer: m.tokenizer.map(TokenizerSource::Gguf),
            }
        }
    })
}
