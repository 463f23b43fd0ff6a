//! The `Pass` trait and the pass manager.

use ligerc_ir::{Graph, IrError};
use thiserror::Error;

/// Errors raised by passes.
#[derive(Debug, Error)]
pub enum PassError {
    /// A pass could not do its job; the message names the node.
    #[error("pass `{pass}`: {message}")]
    Failed {
        /// The pass.
        pass: String,
        /// What went wrong, and where.
        message: String,
    },
    /// A pass left a graph the verifier rejects (a bug in the pass).
    #[error("pass `{pass}` produced an invalid graph: {source}")]
    Invalid {
        /// The pass.
        pass: String,
        /// The verifier's report.
        source: IrError,
    },
    /// `--pass NAME` names no known pass, or its options are wrong.
    #[error("{0}")]
    Usage(String),
}

/// What passes may report back to the user (one line each).
#[derive(Debug, Default)]
pub struct PassContext {
    /// Human-readable notes (`"2 of 2 attention blocks raised"`).
    pub notes: Vec<String>,
}

/// A graph transformation.
pub trait Pass {
    /// The name users type after `--pass`.
    fn name(&self) -> &str;
    /// Rewrites `graph` in place.
    fn run(&self, graph: &mut Graph, cx: &mut PassContext) -> Result<(), PassError>;
}

/// Runs passes in order, verifying the graph after each.
#[derive(Default)]
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
}

impl PassManager {
    /// An empty pipeline.
    pub fn new() -> Self {
        PassManager::default()
    }

    /// Appends a pass.
    pub fn add(&mut self, pass: Box<dyn Pass>) -> &mut Self {
        self.passes.push(pass);
        self
    }

    /// Number of passes in the pipeline.
    pub fn len(&self) -> usize {
        self.passes.len()
    }

    /// True when the pipeline is empty.
    pub fn is_empty(&self) -> bool {
        self.passes.is_empty()
    }

    /// Runs every pass; `after_each(pass_name, graph)` is called after each one
    /// (the CLI's `--print-after-all`).
    pub fn run(
        &self,
        graph: &mut Graph,
        cx: &mut PassContext,
        mut after_each: impl FnMut(&str, &Graph),
    ) -> Result<(), PassError> {
        for pass in &self.passes {
            pass.run(graph, cx)?;
            ligerc_ir::verify(graph).map_err(|source| PassError::Invalid {
                pass: pass.name().to_string(),
                source,
            })?;
            after_each(pass.name(), graph);
        }
        Ok(())
    }
}
