//! `ligerc-runtime`: executes IR graphs.
//!
//! The CPU backend is an f32 reference interpreter (rayon + matrixmultiply)
//! that runs every op of the IR, generic and high-level, so a graph runs
//! before and after any rewrite. It is the oracle the other backends are
//! tested against.

mod error;
mod exec;
pub mod ops;
mod value;

pub use error::RuntimeError;
pub use exec::{ExecState, Executor, KvCache};
pub use value::{Data, Tensor};
