//! The fine-tuning data pipeline: corpus files → token sequences for
//! `ligerc finetune`.
//!
//! - [`source`]: plain-text files (one document each) and JSONL files
//!   (`{"text"}` records, or Alpaca `{"instruction", "input"?, "output"}`
//!   records rendered with the [`alpaca`] template, loss on the response
//!   only);
//! - [`encode`]: text → ids through the [`Encode`] trait, for the runtime's
//!   [`crate::Tokenizer`] and for raw bytes ([`ByteEncoder`]);
//! - [`pack`]: one token stream with a loss mask, cut into overlapping
//!   [`Sequence`]s of next-token targets (−100 where no loss);
//! - [`split`]: the seeded held-out split;
//! - [`loader`]: the resumable, per-epoch-shuffled batch [`Loader`];
//! - [`load_dataset`] ties them together.
//!
//! This module owns reading and packing the corpus; it knows nothing of
//! models, graphs or training steps. Formats and guarantees are described
//! in `docs/DATA.md`.

pub mod alpaca;
mod dataset;
pub mod encode;
mod error;
pub mod loader;
pub mod pack;
mod shuffle;
pub mod source;
pub mod split;

pub use alpaca::alpaca_prompt;
pub use dataset::{DataOptions, DataStats, Dataset, load_dataset};
pub use encode::{ByteEncoder, Encode};
pub use error::{DataError, Location};
pub use loader::{Cursor, Loader};
pub use pack::{IGNORE, Sequence, Tail, TokenStream};
