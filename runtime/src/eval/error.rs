//! Errors of the evaluation library.

use std::path::PathBuf;

use thiserror::Error;

use crate::RuntimeError;

/// Everything that can go wrong reading evaluation inputs or scoring them.
#[derive(Debug, Error)]
pub enum EvalError {
    /// A request or text file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of a request file is not a valid request.
    #[error("{path}:{line}: {message}")]
    Request {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The inputs are unusable as a whole (no questions, bad options, …).
    #[error("{0}")]
    Input(String),
    /// The model failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The CUDA runtime failed.
    #[error(transparent)]
    Cuda(#[from] crate::cuda::CudaError),
}

impl EvalError {
    /// Whether the user's input or options caused the error (exit code 2), as
    /// opposed to a failure of the model or the machine.
    pub fn is_input_error(&self) -> bool {
        match self {
            EvalError::Io { .. } | EvalError::Request { .. } | EvalError::Input(_) => true,
            EvalError::Runtime(r) => {
                matches!(r, RuntimeError::Input(_) | RuntimeError::Tokenizer(_))
            }
            EvalError::Cuda(_) => false,
        }
    }
}
