//! Errors of the runtimes.

use thiserror::Error;

/// Everything that can go wrong executing a graph.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// A tensor has the wrong element type.
    #[error("type error: {0}")]
    Type(String),
    /// Shapes do not fit together.
    #[error("shape error: {0}")]
    Shape(String),
    /// An op or attribute the runtime cannot execute.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A graph input was not supplied, or an unknown one was.
    #[error("input error: {0}")]
    Input(String),
    /// The graph itself is malformed.
    #[error(transparent)]
    Ir(#[from] ligerc_ir::IrError),
    /// An op failed; names the node.
    #[error("{node}: {inner}")]
    Node {
        /// The failing node, described.
        node: String,
        /// What went wrong.
        inner: Box<RuntimeError>,
    },
    /// Tokenizer failure.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}
