//! `ligerc-runtime`: executes IR graphs.
//!
//! The CPU backend is an f32 reference interpreter (rayon + matrixmultiply)
//! that runs every op of the IR, generic and high-level, so a graph runs
//! before and after any rewrite. It is the oracle the other backends are
//! tested against.

pub mod cuda;
pub mod data;
mod error;
pub mod eval;
mod exec;
mod generate;
pub mod ops;
mod perplexity;
mod session;
mod tokenizer;
pub mod train;
mod value;

pub use error::RuntimeError;
pub use exec::{ExecState, Executor, KvCache};
pub use generate::{GenerateOptions, Sampler, SplitMix64};
pub use perplexity::{Perplexity, PerplexityOptions, perplexity, perplexity_with};
pub use session::{ATTENTION_MASK, INPUT_IDS, POSITION_IDS, Session};
pub use tokenizer::{BpePreTokenizer, TextStream, Tokenizer};
pub use value::{Data, Tensor};
