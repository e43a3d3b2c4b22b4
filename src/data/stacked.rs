//! Stacked-Fashion-MNIST: three independently drawn Fashion-MNIST images as
//! the three channels of one sample, so the data has 10³ = 1000 modes (class
//! triples), the mode-collapse benchmark of Metz et al., VEEGAN and PacGAN
//! (reference/SCORES.md) on Fashion-MNIST instead of MNIST.
//!
//! Channel c of sample g (g = key.base + first + row) is image
//! perm_{e,c}(g mod N) of the single-channel set, with e = g / N and perm_{e,c}
//! the permutation keyed by (seed, c, e): each channel shows every image once
//! per epoch, the three in independent orders, the same whoever draws them.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Dataset, DrawKey, ImageSet, Permutation};
use crate::nn::Shape;

/// The number of stacked channels.
pub const CHANNELS: usize = 3;

/// Three-channel samples drawn from one single-channel image set.
#[derive(Debug)]
pub struct Stacked {
    base: Arc<ImageSet>,
    digest: String,
}

impl Stacked {
    /// Stacks `base` (single-channel images with labels).
    pub fn new(base: Arc<ImageSet>) -> Stacked {
        assert_eq!(base.shape().c, 1, "Stacked::new: the base images must have one channel");
        let mut h = Sha256::new();
        h.update(b"lockstep stacked v1\0");
        h.update((CHANNELS as u64).to_le_bytes());
        h.update(base.digest().as_bytes());
        Stacked { digest: super::hex(&h.finalize()), base }
    }

    /// The single-channel images the channels are drawn from.
    pub fn base(&self) -> &ImageSet {
        &self.base
    }

    /// The seed of channel `c`'s permutations (a Philox word of (seed, c)).
    fn channel_seed(seed: u64, c: usize) -> u64 {
        let w = crate::rng::philox([seed as u32, (seed >> 32) as u32], [c as u32, 0x5354_4b44, 0, 0]);
        (w[0] as u64) | (w[1] as u64) << 32
    }

    /// The channels' permutations of epoch `epoch` of seed `seed`.
    fn perms(&self, seed: u64, epoch: u64) -> [Permutation; CHANNELS] {
        std::array::from_fn(|c| Permutation::new(Self::channel_seed(seed, c), epoch, self.base.len()))
    }

    /// The base images of sample `g` of seed `seed`, one per channel.
    pub fn images_of(&self, seed: u64, g: u64) -> [usize; CHANNELS] {
        let n = self.base.len() as u64;
        let (epoch, j) = (g / n, (g % n) as usize);
        self.perms(seed, epoch).map(|p| p.get(j))
    }

    /// The class triple of sample `g` as one mode index, 100·l0 + 10·l1 + l2
    /// (None when the base set has no labels).
    pub fn mode_of(&self, seed: u64, g: u64) -> Option<usize> {
        let labels = self.base.labels()?;
        Some(self.images_of(seed, g).iter().fold(0, |m, &i| 10 * m + labels[i] as usize))
    }
}

impl Dataset for Stacked {
    fn shape(&self) -> Shape {
        let s = self.base.shape();
        Shape::new(CHANNELS, s.h, s.w)
    }

    fn describe(&self) -> String {
        format!("stacked-fashion-mnist: {CHANNELS} independent images per sample from {}", self.base.describe())
    }

    fn digest(&self) -> String {
        self.digest.clone()
    }

    fn epoch_len(&self) -> Option<usize> {
        Some(self.base.len())
    }

    fn fill(&self, key: &DrawKey, first: u64, out: &mut [f32]) {
        let len = self.shape().len();
        let plane = len / CHANNELS;
        assert!(out.len() % len == 0, "Stacked::fill: {} values is not a whole number of samples of {len}", out.len());
        let n = self.base.len() as u64;
        let mut perms: Option<[Permutation; CHANNELS]> = None;
        for (r, o) in out.chunks_exact_mut(len).enumerate() {
            let g = key.base.wrapping_add(first).wrapping_add(r as u64);
            let (epoch, j) = (g / n, (g % n) as usize);
            let p = match perms {
                Some(p) if p[0].epoch() == epoch => p,
                _ => *perms.insert(self.perms(key.seed, epoch)),
            };
            for (c, o) in o.chunks_exact_mut(plane).enumerate() {
                self.base.write_sample(p[c].get(j), o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataKind;
    use crate::rng::Purpose;

    /// n single-pixel images whose pixel is i and label i % 10.
    fn base(n: usize) -> Arc<ImageSet> {
        let pixels = (0..n).map(|i| i as u8).collect();
        let labels = Some((0..n).map(|i| (i % 10) as u8).collect());
        Arc::new(ImageSet::new(DataKind::FashionMnist, "t".into(), Shape::new(1, 1, 1), pixels, labels, 0).unwrap())
    }

    fn pixel(v: f32) -> usize {
        ((v + 1.0) * 127.5).round() as usize
    }

    #[test]
    fn channels_are_independent_permutations_of_every_image() {
        let s = Stacked::new(base(50));
        assert_eq!(s.shape(), Shape::new(3, 1, 1));
        let key = DrawKey { seed: 9, step: 0, purpose: Purpose::Real, base: 0 };
        // Two epochs, drawn in two uneven pieces: each channel shows every image once per epoch.
        let mut all = vec![0.0f32; 100 * 3];
        s.fill(&key, 0, &mut all[..37 * 3]);
        s.fill(&key, 37, &mut all[37 * 3..]);
        let mut whole = vec![0.0f32; 100 * 3];
        s.fill(&key, 0, &mut whole);
        assert_eq!(all, whole, "the same samples whoever draws them");
        for epoch in 0..2 {
            for c in 0..3 {
                let mut seen: Vec<usize> = (0..50).map(|r| pixel(all[(epoch * 50 + r) * 3 + c])).collect();
                seen.sort();
                assert_eq!(seen, (0..50).collect::<Vec<_>>(), "channel {c} of epoch {epoch}");
            }
        }
        // The channels are not drawn in the same order, and images_of/mode_of say what fill drew.
        let col = |c: usize| (0..50).map(|r| pixel(all[r * 3 + c])).collect::<Vec<_>>();
        assert_ne!(col(0), col(1));
        assert_ne!(col(1), col(2));
        for g in [0u64, 7, 49, 63] {
            let im = s.images_of(9, g);
            for c in 0..3 {
                assert_eq!(pixel(whole[g as usize * 3 + c]), im[c]);
            }
            assert_eq!(s.mode_of(9, g), Some(100 * (im[0] % 10) + 10 * (im[1] % 10) + im[2] % 10));
        }
        // Another seed, another order; the digest depends on the base's.
        let other = DrawKey { seed: 10, ..key };
        let mut o = vec![0.0f32; 50 * 3];
        s.fill(&other, 0, &mut o);
        assert_ne!(o, whole[..150]);
        assert_ne!(Stacked::new(base(51)).digest(), s.digest());
        assert_ne!(s.digest(), s.base().digest());
    }
}
