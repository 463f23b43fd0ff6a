//! GPU training: executes the autodiff pass's training and evaluation graphs
//! (`ligerc_passes::autodiff`) on one NVIDIA GPU, and the optimizer with them,
//! as a [`crate::train::StepBackend`] ([`CudaBackend`]).
//!
//! Owns: device values of a graph run (`value.rs`: f32 / i64 / bf16 tensors in pooled
//! device buffers, freed when their last consumer ran), the kernels
//! (`kernels.rs`: the `train_basic` family of `ligerc_codegen`, NVRTC-compiled
//! once and cached with the inference runtime's cubin cache), the row-major
//! GEMM helper over cuBLAS (`gemm.rs`), forward ops (`forward.rs`), backward
//! ops (`backward.rs`), ops run on the host (`host.rs`), the graph walk
//! (`graph.rs`) and the parameters, moments, gradient accumulators and AdamW
//! (`engine.rs`). It does not touch the inference runtime's plan execution.
//!
//! Activations, LoRA parameters and optimizer state are f32 on the device;
//! frozen projection weights are bf16 by default ([`FrozenDtype`]), their
//! products bf16 × bf16 → f32 on cuBLAS. LigerGate and LigerAttention run the
//! chunk-parallel training kernels of
//! `ligerc_codegen::cuda::kernels::liger_train` (`liger.rs`), and causal
//! softmax Attention their window kernels with an unbounded window. With bf16
//! frozen weights those kernels multiply on bf16 tensor cores
//! ([`TrainMath::Bf16`]), with f32 ones in f32; `LIGERC_TRAIN_MATH=f32|bf16`
//! overrides ([`train_math`]). Ops
//! without a GPU kernel — a Liger variant those kernels refuse, the Embedding
//! backward, broadcasting ONNX ops — are refused with
//! [`GpuTrainError::Unsupported`] naming the node, unless host execution is
//! allowed (`LIGERC_TRAIN_HOST_OPS=1`): then such a node's operands are copied
//! to the host, the CPU kernel runs, and its results are copied back.

mod backward;
mod engine;
mod forward;
mod gemm;
mod graph;
mod host;
mod kernels;
mod liger;
mod value;

use thiserror::Error;

pub use crate::train::FrozenDtype;
pub use engine::CudaBackend;
pub use ligerc_codegen::cuda::kernels::liger_train::TrainMath;

use super::CudaError;

/// What can go wrong training on the GPU.
#[derive(Debug, Error)]
pub enum GpuTrainError {
    /// The driver, NVRTC or cuBLAS failed (or no GPU: `CudaError::Unavailable`).
    #[error(transparent)]
    Cuda(#[from] CudaError),
    /// A node has no GPU kernel (and host execution is off).
    #[error(
        "{node}: {reason} (set LIGERC_TRAIN_HOST_OPS=1 to run such nodes on the CPU, or use --backend cpu)"
    )]
    Unsupported {
        /// The node, as `Graph::describe` writes it.
        node: String,
        /// What is missing.
        reason: String,
    },
    /// Operands of the wrong shape or type, or a malformed graph.
    #[error("{node}: {problem}")]
    Shape {
        /// The node.
        node: String,
        /// What was expected and found.
        problem: String,
    },
    /// A node run on the host failed.
    #[error(transparent)]
    Runtime(#[from] crate::RuntimeError),
}

/// How the LigerAttention training kernels multiply: `LIGERC_TRAIN_MATH`
/// (`f32` or `bf16`) if set, else bf16 tensor cores with bf16 frozen weights
/// and f32 with f32 ones. Any other value is an error naming the variable.
pub fn train_math(frozen: FrozenDtype) -> Result<TrainMath, GpuTrainError> {
    parse_train_math(std::env::var("LIGERC_TRAIN_MATH").ok().as_deref(), frozen)
}

/// [`train_math`] for the variable's value `var` (`None`: unset).
fn parse_train_math(var: Option<&str>, frozen: FrozenDtype) -> Result<TrainMath, GpuTrainError> {
    match var {
        None | Some("") => Ok(match frozen {
            FrozenDtype::Bf16 => TrainMath::Bf16,
            FrozenDtype::F32 => TrainMath::F32,
        }),
        Some("f32") => Ok(TrainMath::F32),
        Some("bf16") => Ok(TrainMath::Bf16),
        Some(other) => Err(GpuTrainError::Shape {
            node: "LIGERC_TRAIN_MATH".into(),
            problem: format!("is `{other}`; expected `f32` or `bf16`"),
        }),
    }
}

/// Whether nodes without a GPU kernel may run on the host
/// (`LIGERC_TRAIN_HOST_OPS=1`).
pub fn host_ops_allowed() -> bool {
    std::env::var("LIGERC_TRAIN_HOST_OPS").is_ok_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn train_math_follows_the_frozen_dtype_unless_overridden() {
        use FrozenDtype::{Bf16, F32};
        assert_eq!(parse_train_math(None, Bf16).unwrap(), TrainMath::Bf16);
        assert_eq!(parse_train_math(Some(""), F32).unwrap(), TrainMath::F32);
        assert_eq!(parse_train_math(Some("f32"), Bf16).unwrap(), TrainMath::F32);
        assert_eq!(
            parse_train_math(Some("bf16"), F32).unwrap(),
            TrainMath::Bf16
        );
        let e = parse_train_math(Some("fp8"), F32).unwrap_err().to_string();
        assert!(e.contains("LIGERC_TRAIN_MATH") && e.contains("fp8"), "{e}");
    }
}
