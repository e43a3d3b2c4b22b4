//! A keyed pseudo-random permutation of 0..n, computed index by index: no
//! table, so sampling without replacement needs no state and every worker
//! finds the same order from (seed, epoch) alone.
//!
//! A balanced Feistel network over 2^(2·half) ≥ n elements (the smallest
//! even-bit power of two, so both halves have `half` bits), with Philox4x32-10
//! as its round function; an output ≥ n is fed back in (cycle-walking) until
//! it falls below n.  The domain is less than 4n, so a lookup walks fewer
//! than 4 times on average.

use crate::rng::philox;

/// Feistel rounds; 4 already give a pseudo-random permutation for a
/// pseudo-random round function (Luby–Rackoff), 6 leave a margin.
const ROUNDS: u32 = 6;

/// Top byte of the counter's last word: keeps these counters apart from the
/// `rng::Stream` ones (whose top byte is a `Purpose`, 1..=6).
const TAG: u32 = 0xF0 << 24;

/// A permutation of 0..n keyed by (seed, epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permutation {
    key: [u32; 2],
    epoch: u64,
    n: usize,
    /// Bits of each Feistel half (0 when n ≤ 1: the identity).
    half: u32,
}

impl Permutation {
    /// The permutation of 0..`n` for epoch `epoch` of seed `seed`.
    pub fn new(seed: u64, epoch: u64, n: usize) -> Permutation {
        let bits = if n <= 1 { 0 } else { usize::BITS - (n - 1).leading_zeros() };
        let half = bits.div_ceil(2);
        assert!(half <= 32, "Permutation::new: n = {n} is beyond 2^64");
        Permutation { key: [seed as u32, (seed >> 32) as u32], epoch, n, half }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the permutation has no element (n = 0).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The epoch this permutation was made for.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The element at position `j` (< n).
    pub fn get(&self, j: usize) -> usize {
        assert!(j < self.n, "Permutation::get: index {j} out of range 0..{}", self.n);
        if self.half == 0 {
            return j;
        }
        let mut x = j as u64;
        loop {
            x = self.feistel(x);
            if x < self.n as u64 {
                return x as usize;
            }
        }
    }

    /// One pass of the Feistel network over 0..2^(2·half).
    #[inline]
    fn feistel(&self, x: u64) -> u64 {
        let mask = if self.half == 32 { u32::MAX } else { (1u32 << self.half) - 1 };
        let (mut l, mut r) = ((x >> self.half) as u32 & mask, x as u32 & mask);
        let ctr_hi = TAG | ((self.epoch >> 32) as u32 & 0x00FF_FFFF);
        for round in 0..ROUNDS {
            let f = philox(self.key, [r, round, self.epoch as u32, ctr_hi])[0] & mask;
            (l, r) = (r, l ^ f);
        }
        ((l as u64) << self.half) | r as u64
    }
}

#[cfg(test)]
mod tests {
    use super::Permutation;

    fn order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
        let p = Permutation::new(seed, epoch, n);
        (0..n).map(|j| p.get(j)).collect()
    }

    #[test]
    fn every_index_appears_exactly_once() {
        for n in [1, 2, 3, 7, 1000, 1024, 1025, 60000] {
            for (seed, epoch) in [(0, 0), (7, 3), (u64::MAX, u64::MAX)] {
                let mut seen = vec![0u8; n];
                for i in order(seed, epoch, n) {
                    seen[i] += 1;
                }
                assert!(seen.iter().all(|&c| c == 1), "n = {n}, seed {seed}, epoch {epoch}: not a permutation");
            }
        }
    }

    #[test]
    fn orders_depend_on_epoch_and_seed_and_not_on_anything_else() {
        for n in [7, 1000, 60000] {
            let a = order(1, 0, n);
            assert_eq!(a, order(1, 0, n), "n = {n}: not deterministic");
            assert_ne!(a, order(1, 1, n), "n = {n}: epochs 0 and 1 give the same order");
            assert_ne!(a, order(2, 0, n), "n = {n}: seeds 1 and 2 give the same order");
            assert_ne!(a, (0..n).collect::<Vec<_>>(), "n = {n}: the identity");
        }
        // The two permutations of 2 elements both turn up.
        let swaps = (0..64).filter(|&e| order(5, e, 2) == [1, 0]).count();
        assert!((8..=56).contains(&swaps), "{swaps} of 64 epochs swap 2 elements");
    }

    #[test]
    fn positions_are_spread_out() {
        // Where element 0 lands over many epochs: roughly uniform over 0..n.
        let n = 10;
        let mut hits = [0usize; 10];
        for e in 0..5000 {
            let p = Permutation::new(3, e, n);
            hits[(0..n).find(|&j| p.get(j) == 0).unwrap()] += 1;
        }
        assert!(hits.iter().all(|&h| (380..620).contains(&h)), "{hits:?}");
    }
}
