//! The held-out split: a seeded shuffle of sequence indices picks which
//! sequences are held out; both parts keep corpus order.

use crate::data::Sequence;
use crate::data::shuffle::{permutation, split_rng};

/// Sequences held out of `total` for `fraction`: none when the fraction is 0
/// or there are fewer than 2 sequences, otherwise `round(total · fraction)`
/// clamped to `1..=total - 1`.
pub fn heldout_count(total: usize, fraction: f64) -> usize {
    if fraction <= 0.0 || total < 2 {
        return 0;
    }
    ((total as f64 * fraction).round() as usize).clamp(1, total - 1)
}

/// Splits `seqs` into (train, held-out), deterministic in `seed`.
pub fn split(seqs: Vec<Sequence>, fraction: f64, seed: u64) -> (Vec<Sequence>, Vec<Sequence>) {
    let n_held = heldout_count(seqs.len(), fraction);
    let mut held = vec![false; seqs.len()];
    for &i in permutation(seqs.len(), &mut split_rng(seed))
        .iter()
        .take(n_held)
    {
        held[i] = true;
    }
    let (mut train, mut heldout) = (Vec::new(), Vec::new());
    for (seq, h) in seqs.into_iter().zip(held) {
        if h {
            heldout.push(seq);
        } else {
            train.push(seq);
        }
    }
    (train, heldout)
}
