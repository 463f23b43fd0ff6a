//! Seeded permutations (Fisher–Yates over [`SplitMix64`]), shared by the
//! held-out split and the loader's epochs. A permutation depends only on
//! its length and the generator's seed, on every platform.

use crate::SplitMix64;

/// Salt mixed into the seed of the held-out split, so the split and epoch
/// 0's order are different streams.
const SPLIT_SALT: u64 = 0x5EED_0F5B_1E7D_A7A0;

/// Odd constant spreading epochs over the seed space.
const EPOCH_STRIDE: u64 = 0xD6E8_FEB8_6659_FD93;

/// A uniformly random permutation of `0..len`.
pub fn permutation(len: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        // Multiply-shift: a uniform draw in 0..=i without division.
        let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
        p.swap(i, j);
    }
    p
}

/// The generator of the held-out split for `seed`.
pub fn split_rng(seed: u64) -> SplitMix64 {
    SplitMix64::new(seed ^ SPLIT_SALT)
}

/// The generator of epoch `epoch`'s order for `seed`.
pub fn epoch_rng(seed: u64, epoch: u64) -> SplitMix64 {
    SplitMix64::new(seed.wrapping_add(epoch.wrapping_mul(EPOCH_STRIDE)))
}
