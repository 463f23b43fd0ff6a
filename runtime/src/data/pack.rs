//! Packing: documents → one token stream with a parallel loss mask →
//! fixed-length training sequences.
//!
//! Every document's segments are encoded one after the other and followed by
//! the encoder's end-of-sequence id when it has one (the EOS carries loss
//! whenever the document's last segment does, so a model learns to stop).
//! Sequence `k` takes inputs `stream[k·L .. k·L + L]` and targets
//! `stream[k·L + 1 .. k·L + L + 1]`, a target being [`IGNORE`] where that
//! stream token carries no loss. Consecutive sequences therefore overlap by
//! one token (the last target of one is the first input of the next), and
//! every stream token after the first is a target exactly once. There is no
//! reset at document boundaries, as in the Liger recipe.

use rayon::prelude::*;

use crate::data::source::Document;
use crate::data::{DataError, Encode};

/// The target value of a position that carries no loss (PyTorch's
/// `ignore_index`).
pub const IGNORE: i64 = -100;

/// One training sequence: `seq_len` input ids and as many next-token targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequence {
    /// Input token ids.
    pub ids: Vec<i64>,
    /// `targets[i]` is the token after `ids[i]`, or [`IGNORE`].
    pub targets: Vec<i64>,
}

impl Sequence {
    /// Targets that carry loss.
    pub fn trained(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE).count()
    }
}

/// What to do with the stream's last tokens when they do not fill a
/// sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tail {
    /// Drop them (the Liger recipe).
    #[default]
    Drop,
    /// Keep them in one last sequence, padding the inputs with the EOS id (or
    /// 0 when the encoder has none) and the targets with [`IGNORE`].
    Pad,
}

/// Concatenated documents: ids and whether each id carries loss as a target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenStream {
    /// Token ids.
    pub ids: Vec<i64>,
    /// `loss[j]`: whether `ids[j]` is a training target.
    pub loss: Vec<bool>,
}

impl TokenStream {
    /// Tokens in the stream.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the stream is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Appends an encoded document, keeping at most `cap` tokens in all.
    /// Returns whether the cap was reached.
    fn push(&mut self, doc: EncodedDocument, cap: usize) -> bool {
        let room = cap.saturating_sub(self.ids.len());
        let take = doc.ids.len().min(room);
        self.ids.extend_from_slice(&doc.ids[..take]);
        self.loss.extend_from_slice(&doc.loss[..take]);
        self.ids.len() >= cap
    }
}

/// A document's ids and loss mask, EOS included.
struct EncodedDocument {
    ids: Vec<i64>,
    loss: Vec<bool>,
}

/// Encodes one document and checks its ids against the vocabulary.
fn encode_document(doc: &Document, enc: &dyn Encode) -> Result<EncodedDocument, DataError> {
    let mut ids = Vec::with_capacity(doc.len() / 3 + 1);
    let mut loss = Vec::with_capacity(ids.capacity());
    for seg in &doc.segments {
        let seg_ids = enc.encode(&seg.text).map_err(|e| match e {
            DataError::Encode(message) => DataError::EncodeAt {
                at: doc.at.clone(),
                message,
            },
            other => other,
        })?;
        loss.resize(loss.len() + seg_ids.len(), seg.loss);
        ids.extend(seg_ids);
    }
    if let Some(eos) = enc.eos_id() {
        ids.push(eos);
        loss.push(doc.segments.last().is_some_and(|s| s.loss));
    }
    let vocab_size = enc.vocab_size();
    if let Some(&id) = ids
        .iter()
        .find(|&&id| usize::try_from(id).map_or(true, |u| u >= vocab_size))
    {
        return Err(DataError::TokenOutOfRange {
            at: doc.at.clone(),
            id,
            vocab_size,
        });
    }
    Ok(EncodedDocument { ids, loss })
}

/// Encodes `docs` in parallel and appends them in order to `stream`, up to
/// `cap` tokens in all. Returns how many documents went (wholly or partly)
/// into the stream and whether the cap was reached.
pub fn append_documents(
    stream: &mut TokenStream,
    docs: &[Document],
    enc: &dyn Encode,
    cap: usize,
) -> Result<(usize, bool), DataError> {
    let encoded: Vec<EncodedDocument> = docs
        .par_iter()
        .map(|doc| encode_document(doc, enc))
        .collect::<Result<_, _>>()?;
    for (n, doc) in encoded.into_iter().enumerate() {
        if stream.push(doc, cap) {
            return Ok((n + 1, true));
        }
    }
    Ok((docs.len(), false))
}

/// Cuts `stream` into sequences of `seq_len` (> 0), keeping only those with
/// at least one trained target. Returns them and the number of targets
/// [`Tail::Drop`] left out.
pub fn cut(
    stream: &TokenStream,
    seq_len: usize,
    tail: Tail,
    pad_id: i64,
) -> (Vec<Sequence>, usize) {
    let n = stream.len();
    let mut out = Vec::new();
    let mut start = 0;
    // A sequence needs seq_len inputs and one more token for its last target.
    while start + seq_len < n {
        out.push(window(stream, start, seq_len, seq_len, pad_id));
        start += seq_len;
    }
    // Tokens start..n remain; as inputs, all but the last have a target.
    let rest = n.saturating_sub(start + 1);
    let mut dropped = 0;
    if rest > 0 {
        match tail {
            Tail::Pad => out.push(window(stream, start, rest, seq_len, pad_id)),
            Tail::Drop => dropped = rest,
        }
    }
    out.retain(|s| s.trained() > 0);
    (out, dropped)
}

/// A sequence whose first `used` inputs come from `stream[start..]` and the
/// rest is padding.
fn window(
    stream: &TokenStream,
    start: usize,
    used: usize,
    seq_len: usize,
    pad_id: i64,
) -> Sequence {
    let mut ids = Vec::with_capacity(seq_len);
    let mut targets = Vec::with_capacity(seq_len);
    ids.extend_from_slice(&stream.ids[start..start + used]);
    for j in start + 1..start + used + 1 {
        targets.push(if stream.loss[j] {
            stream.ids[j]
        } else {
            IGNORE
        });
    }
    ids.resize(seq_len, pad_id);
    targets.resize(seq_len, IGNORE);
    Sequence { ids, targets }
}
