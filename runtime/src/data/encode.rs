//! Text → token ids for the data pipeline: the [`Encode`] trait, with
//! implementations for the runtime's [`Tokenizer`] and for raw UTF-8 bytes
//! ([`ByteEncoder`], what the repo's vocabulary-256 test models use).

use crate::Tokenizer;
use crate::data::DataError;

/// Turns text into token ids. Implementations must be pure (the same text
/// always gives the same ids) and thread-safe: documents are encoded in
/// parallel.
pub trait Encode: Sync {
    /// The ids of `text`, with no special tokens added.
    fn encode(&self, text: &str) -> Result<Vec<i64>, DataError>;
    /// The end-of-sequence id written after every document, if any.
    fn eos_id(&self) -> Option<i64>;
    /// Ids are in `0..vocab_size()`.
    fn vocab_size(&self) -> usize;
}

/// Encodes with the tokenizer's `add_special_tokens = false`: no BOS is
/// prepended; documents are separated by [`Tokenizer::eos_id`] when the
/// tokenizer knows it (a bare `tokenizer.json` does not: see
/// [`Tokenizer::with_special_ids`]).
impl Encode for Tokenizer {
    fn encode(&self, text: &str) -> Result<Vec<i64>, DataError> {
        Tokenizer::encode(self, text, false).map_err(|e| DataError::Encode(e.to_string()))
    }

    fn eos_id(&self) -> Option<i64> {
        Tokenizer::eos_id(self)
    }

    fn vocab_size(&self) -> usize {
        Tokenizer::vocab_size(self)
    }
}

/// UTF-8 bytes as ids `0..=255` (vocabulary 256), optionally with one byte
/// value reserved as end-of-sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByteEncoder {
    eos: Option<u8>,
}

impl ByteEncoder {
    /// Bytes, with no end-of-sequence id: documents are concatenated as they
    /// are.
    pub fn new() -> ByteEncoder {
        ByteEncoder { eos: None }
    }

    /// Bytes, with `eos` written after every document (`0`, NUL, never
    /// occurs in ordinary text).
    pub fn with_eos(eos: u8) -> ByteEncoder {
        ByteEncoder { eos: Some(eos) }
    }

    /// The text of byte ids, replacing invalid UTF-8 (and ids outside
    /// `0..=255`) with U+FFFD.
    pub fn decode(&self, ids: &[i64]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .map(|&id| u8::try_from(id).unwrap_or(0xFF))
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Encode for ByteEncoder {
    fn encode(&self, text: &str) -> Result<Vec<i64>, DataError> {
        Ok(text.bytes().map(i64::from).collect())
    }

    fn eos_id(&self) -> Option<i64> {
        self.eos.map(i64::from)
    }

    fn vocab_size(&self) -> usize {
        256
    }
}
