//! Errors of the IR layer.

use thiserror::Error;

/// Everything that can go wrong building, verifying or parsing a graph.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum IrError {
    /// A tensor's bytes do not match its declared dtype and shape.
    #[error("tensor size: {what}")]
    TensorSize {
        /// What did not match.
        what: String,
    },
    /// An op name the IR does not know.
    #[error("unknown op `{op}`")]
    UnknownOp {
        /// The name.
        op: String,
    },
    /// An attribute is missing, mistyped or unexpected.
    #[error("op {op}: attribute `{key}`: {problem}")]
    Attr {
        /// The op.
        op: String,
        /// The attribute key.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// A reference to a node that does not exist.
    #[error("reference to missing node %{node}")]
    DanglingNode {
        /// The missing node's index.
        node: usize,
    },
    /// The graph has a cycle.
    #[error("graph has a cycle through {node}")]
    Cycle {
        /// A node on or behind the cycle.
        node: String,
    },
    /// Verification found problems; every one is listed.
    #[error("graph failed verification:\n{}", .errors.join("\n"))]
    Verify {
        /// One line per problem, each naming its node.
        errors: Vec<String>,
    },
    /// The text form could not be parsed.
    #[error("line {line}, column {col}: {msg}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What was expected.
        msg: String,
    },
}
