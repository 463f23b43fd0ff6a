//! The resumable batch loader: indices into the training sequences, in a
//! fresh order every epoch.
//!
//! Epoch `e`'s order is a permutation of `0..len` that depends only on
//! `(seed, e)`, so a [`Cursor`] (epoch and position in it) is the loader's
//! whole state: [`Loader::resume`] from a saved cursor yields exactly the
//! batches the uninterrupted loader would have. A batch that runs past the
//! end of an epoch continues into the next one (so with `n > len` a batch
//! can hold an index twice).

use serde::{Deserialize, Serialize};

use crate::data::DataError;
use crate::data::shuffle::{epoch_rng, permutation};

/// Where a [`Loader`] is: the next index it yields is position `index` of
/// epoch `epoch`'s order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor {
    /// Epochs completed.
    pub epoch: u64,
    /// Sequences of this epoch already yielded.
    pub index: usize,
}

/// Yields batches of indices into the training sequences.
#[derive(Clone, Debug)]
pub struct Loader {
    seed: u64,
    len: usize,
    cursor: Cursor,
    order: Vec<usize>,
}

impl Loader {
    /// A loader over `len` sequences at the start of epoch 0.
    pub fn new(seed: u64, len: usize) -> Loader {
        Loader {
            seed,
            len,
            cursor: Cursor::default(),
            order: permutation(len, &mut epoch_rng(seed, 0)),
        }
    }

    /// A loader over `len` sequences continuing from `cursor` (as returned
    /// by [`Loader::cursor`] of a loader with the same seed and length).
    pub fn resume(seed: u64, len: usize, cursor: Cursor) -> Result<Loader, DataError> {
        if cursor.index > len {
            return Err(DataError::Cursor {
                epoch: cursor.epoch,
                index: cursor.index,
                len,
            });
        }
        let mut loader = Loader {
            seed,
            len,
            cursor,
            order: permutation(len, &mut epoch_rng(seed, cursor.epoch)),
        };
        loader.roll_over();
        Ok(loader)
    }

    /// The next `n` indices (none when there are no sequences).
    pub fn next_batch(&mut self, n: usize) -> Vec<usize> {
        if self.len == 0 {
            return Vec::new();
        }
        let mut batch = Vec::with_capacity(n);
        while batch.len() < n {
            let take = (n - batch.len()).min(self.len - self.cursor.index);
            batch.extend_from_slice(&self.order[self.cursor.index..self.cursor.index + take]);
            self.cursor.index += take;
            self.roll_over();
        }
        batch
    }

    /// The loader's position, to save with a checkpoint.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// The seed the orders derive from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Sequences per epoch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The current epoch's order.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Moves to the next epoch when this one is used up.
    fn roll_over(&mut self) {
        if self.len > 0 && self.cursor.index == self.len {
            self.cursor = Cursor {
                epoch: self.cursor.epoch + 1,
                index: 0,
            };
            self.order = permutation(self.len, &mut epoch_rng(self.seed, self.cursor.epoch));
        }
    }
}
