//! The data pipeline's typed errors. Every error about the corpus names the
//! file and, for JSONL records and UTF-8 faults, the 1-based line.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// Where in the corpus something is: a file, and a 1-based line when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file, as it was given.
    pub path: PathBuf,
    /// The 1-based line, when the fault has one.
    pub line: Option<usize>,
}

impl Location {
    /// A whole file.
    pub fn file(path: impl Into<PathBuf>) -> Location {
        Location {
            path: path.into(),
            line: None,
        }
    }

    /// One line of a file.
    pub fn line(path: impl Into<PathBuf>, line: usize) -> Location {
        Location {
            path: path.into(),
            line: Some(line),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// Everything that can go wrong reading, encoding, packing or iterating a
/// corpus.
#[derive(Debug, Error)]
pub enum DataError {
    // ---- reading the files
    /// A file could not be read.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A file holds bytes that are not UTF-8.
    #[error("{at}: not valid UTF-8")]
    NotUtf8 {
        /// The file and the line of the first bad byte.
        at: Location,
    },
    /// A file holds no text (or, for JSONL, no record).
    #[error("{at}: empty file")]
    Empty {
        /// The file.
        at: Location,
    },

    // ---- JSONL records
    /// A JSONL line is not valid JSON, or not a JSON object.
    #[error("{at}: invalid JSONL record: {message}")]
    Json {
        /// The file and line.
        at: Location,
        /// What the JSON parser said.
        message: String,
    },
    /// A JSONL record lacks a field it needs.
    #[error(
        "{at}: missing field \"{field}\" (want {{\"text\"}} or {{\"instruction\", \"input\"?, \"output\"}})"
    )]
    MissingField {
        /// The file and line.
        at: Location,
        /// The field.
        field: &'static str,
    },
    /// A JSONL field has the wrong JSON type.
    #[error("{at}: field \"{field}\" must be a string")]
    FieldType {
        /// The file and line.
        at: Location,
        /// The field.
        field: &'static str,
    },

    // ---- encoding
    /// The encoder failed on some text.
    #[error("encoding: {0}")]
    Encode(String),
    /// The encoder failed on a document; wraps [`DataError::Encode`].
    #[error("{at}: {message}")]
    EncodeAt {
        /// The document's file (and line for JSONL).
        at: Location,
        /// What the encoder said.
        message: String,
    },
    /// The encoder produced an id outside its own vocabulary.
    #[error("{at}: token id {id} is outside the vocabulary of {vocab_size}")]
    TokenOutOfRange {
        /// The document's file (and line for JSONL).
        at: Location,
        /// The id.
        id: i64,
        /// The encoder's vocabulary size.
        vocab_size: usize,
    },

    // ---- options and packing
    /// A [`crate::data::DataOptions`] value is out of range.
    #[error("invalid data option: {0}")]
    Option(String),
    /// No files were given.
    #[error("no data files given")]
    NoFiles,
    /// The corpus is too short for one sequence with a trained target.
    #[error(
        "the corpus gives no sequence to train on: {tokens} tokens, sequences of {seq_len} need {} with at least one trained target",
        seq_len + 1
    )]
    TooShort {
        /// Tokens in the packed stream.
        tokens: usize,
        /// The sequence length asked for.
        seq_len: usize,
    },

    // ---- the loader
    /// A resume cursor does not fit the data set.
    #[error("cursor at index {index} of epoch {epoch} is past the {len} training sequences")]
    Cursor {
        /// The cursor's epoch.
        epoch: u64,
        /// The cursor's index.
        index: usize,
        /// Training sequences the loader was given.
        len: usize,
    },
}
