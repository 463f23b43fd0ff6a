//! Errors of the CUDA back end.

use super::nvrtc::NvrtcError;

/// Why `--emit cuda` could not lower a graph, or a kernel did not compile.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// The graph holds an op (or an op configuration) the back end has no kernel for.
    #[error("--emit cuda: {node}: {reason}")]
    Unsupported {
        /// The node, as `Graph::describe` writes it.
        node: String,
        /// What is missing, and what would work instead.
        reason: String,
    },
    /// The graph is not shaped as the back end expects (an operand of the wrong
    /// width, a weight that is not a weight, …).
    #[error("--emit cuda: {node}: {problem}")]
    Shape {
        /// The node.
        node: String,
        /// What was expected and what was found.
        problem: String,
    },
    /// The graph could not be ordered (a cycle) or has a dangling reference.
    #[error("--emit cuda: {0}")]
    Graph(#[from] ligerc_ir::IrError),
    /// A kernel needs more shared memory than the architecture offers.
    #[error(
        "--emit cuda: kernel `{kernel}` needs {bytes} bytes of shared memory, more than the {limit} of {arch}"
    )]
    SharedMemory {
        /// The kernel.
        kernel: String,
        /// What it needs.
        bytes: usize,
        /// What the architecture allows per block.
        limit: usize,
        /// The architecture.
        arch: String,
    },
    /// Two different sources were generated under one kernel name (a bug).
    #[error(
        "--emit cuda: internal error: kernel name `{0}` generated twice with different sources"
    )]
    KernelClash(String),
    /// NVRTC failed.
    #[error(transparent)]
    Nvrtc(#[from] NvrtcError),
    /// Writing the output failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}
