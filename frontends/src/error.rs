//! The error type shared by every importer.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong importing a model. Every variant names the
/// file and, where there is one, the node, tensor or key at fault.
#[derive(Debug, Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a well-formed model of its format.
    #[error("{}: malformed {format} file: {detail}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// `ONNX`, `GGUF`, `safetensors`, `config.json`.
        format: &'static str,
        /// What is wrong, and where.
        detail: String,
    },
    /// An ONNX op the IR does not support.
    #[error("{}: unsupported op `{op}` (domain `{domain}`) at node `{node}`", path.display())]
    UnsupportedOp {
        /// The file.
        path: PathBuf,
        /// ONNX op_type.
        op: String,
        /// ONNX domain (empty = the standard domain).
        domain: String,
        /// The node's name (or its first output when unnamed).
        node: String,
    },
    /// Something valid in the format that ligerc does not handle.
    #[error("{}: unsupported: {detail}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What, and where.
        detail: String,
    },
    /// A tensor is invalid (size, dtype, data location, non-finite values).
    #[error("{}: tensor `{tensor}`: {detail}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong.
        detail: String,
    },
    /// The imported graph does not verify.
    #[error("{}: imported graph is invalid: {source}", path.display())]
    Graph {
        /// The file.
        path: PathBuf,
        /// The verifier's report.
        source: ligerc_ir::IrError,
    },
}

/// `Result` with [`ImportError`].
pub type ImportResult<T> = Result<T, ImportError>;
