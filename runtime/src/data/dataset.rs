//! [`load_dataset`]: files → documents → packed sequences → train and
//! held-out sets, with the options and statistics that go with it.

use std::path::PathBuf;

use crate::data::pack::{TokenStream, append_documents, cut};
use crate::data::source::{Document, read_documents};
use crate::data::split::split;
use crate::data::{DataError, Encode, Sequence, Tail};

/// Documents are encoded in parallel in groups of at most this many…
const GROUP_DOCUMENTS: usize = 256;
/// …or about this many bytes of text.
const GROUP_BYTES: usize = 8 << 20;

/// How a corpus becomes training sequences.
#[derive(Clone, Debug, PartialEq)]
pub struct DataOptions {
    /// Input tokens per sequence (≥ 1).
    pub seq_len: usize,
    /// Share of sequences held out for evaluation, in `[0, 1)`; a positive
    /// fraction holds out at least one sequence when there are two or more.
    pub heldout_fraction: f64,
    /// Seed of the held-out split (the [`crate::data::Loader`] takes its own).
    pub seed: u64,
    /// Stop reading once the packed stream has this many tokens.
    pub max_tokens: Option<usize>,
    /// What to do with a last, partial sequence.
    pub tail: Tail,
}

impl Default for DataOptions {
    /// The Liger recipe: 1024-token sequences, 5% held out, seed 0, no cap,
    /// the partial tail dropped.
    fn default() -> Self {
        DataOptions {
            seq_len: 1024,
            heldout_fraction: 0.05,
            seed: 0,
            max_tokens: None,
            tail: Tail::Drop,
        }
    }
}

impl DataOptions {
    /// Checks every option's range.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.seq_len == 0 {
            return Err(DataError::Option("seq_len must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.heldout_fraction) {
            return Err(DataError::Option(format!(
                "heldout_fraction must be in [0, 1), got {}",
                self.heldout_fraction
            )));
        }
        if self.max_tokens == Some(0) {
            return Err(DataError::Option("max_tokens must be at least 1".into()));
        }
        Ok(())
    }
}

/// What loading produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataStats {
    /// Documents read (text files and JSONL records) that reached the stream.
    pub documents: usize,
    /// Tokens in the packed stream, end-of-sequence ids included.
    pub tokens: usize,
    /// Targets that carry loss in the training sequences.
    pub trained_tokens: usize,
    /// Targets that carry loss in the held-out sequences.
    pub heldout_trained_tokens: usize,
    /// Training sequences.
    pub train_sequences: usize,
    /// Held-out sequences.
    pub heldout_sequences: usize,
    /// Targets lost with a dropped tail ([`Tail::Drop`]).
    pub dropped_tokens: usize,
    /// Whether [`DataOptions::max_tokens`] cut the corpus short.
    pub capped: bool,
}

/// Packed training and held-out sequences.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// Sequences to train on, in corpus order.
    pub train: Vec<Sequence>,
    /// Sequences held out for evaluation, in corpus order.
    pub heldout: Vec<Sequence>,
    /// Counts.
    pub stats: DataStats,
}

/// Reads `files` in order (`.jsonl` as JSONL records, anything else as one
/// plain-text document), encodes them with `enc`, packs and splits them.
pub fn load_dataset(
    files: &[PathBuf],
    enc: &dyn Encode,
    opts: &DataOptions,
) -> Result<Dataset, DataError> {
    opts.validate()?;
    if files.is_empty() {
        return Err(DataError::NoFiles);
    }
    let cap = opts.max_tokens.unwrap_or(usize::MAX);
    let mut stream = TokenStream::default();
    let mut documents = 0;
    let mut group: Vec<Document> = Vec::new();
    let mut group_bytes = 0;
    let mut capped = false;
    for (i, path) in files.iter().enumerate() {
        for doc in read_documents(path)? {
            group_bytes += doc.len();
            group.push(doc);
        }
        let last = i + 1 == files.len();
        if last || group.len() >= GROUP_DOCUMENTS || group_bytes >= GROUP_BYTES {
            let (used, reached) = append_documents(&mut stream, &group, enc, cap)?;
            documents += used;
            capped = reached;
            group.clear();
            group_bytes = 0;
            if capped {
                break;
            }
        }
    }
    let pad_id = enc.eos_id().unwrap_or(0);
    let (seqs, dropped_tokens) = cut(&stream, opts.seq_len, opts.tail, pad_id);
    if seqs.is_empty() {
        return Err(DataError::TooShort {
            tokens: stream.len(),
            seq_len: opts.seq_len,
        });
    }
    let (train, heldout) = split(seqs, opts.heldout_fraction, opts.seed);
    let stats = DataStats {
        documents,
        tokens: stream.len(),
        trained_tokens: train.iter().map(Sequence::trained).sum(),
        heldout_trained_tokens: heldout.iter().map(Sequence::trained).sum(),
        train_sequences: train.len(),
        heldout_sequences: heldout.len(),
        dropped_tokens,
        capped,
    };
    Ok(Dataset {
        train,
        heldout,
        stats,
    })
}
