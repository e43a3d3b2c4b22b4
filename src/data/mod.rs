//! Real data behind one interface, `Dataset`: mixtures of Gaussians (a ring
//! or a grid of modes) and image datasets.  Every draw is addressed by
//! (seed, step, draw, global sample index), so sample i of a step is the same
//! whoever draws it and however many workers there are.

pub mod mixture;
pub mod perm;

use crate::nn::Shape;

pub use mixture::Mixture;
pub use perm::Permutation;

/// Which draw of which step a batch of real samples belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrawKey {
    /// The run's seed (`train.seed`).
    pub seed: u64,
    /// The training step (mixtures key their streams by it; image datasets use `base`).
    pub step: u64,
    /// `Purpose::Real` (a step's first minibatch) or `Purpose::RealG` (the
    /// fresh minibatch of an alternating step's G step).
    pub purpose: crate::rng::Purpose,
    /// The global index of this draw's sample 0 (image datasets walk their
    /// epochs by it): step × batch, or (2·step + draw) × batch for
    /// alternating updates.
    pub base: u64,
}

/// A source of real samples, shared by every backend of a process.
pub trait Dataset: Send + Sync + std::fmt::Debug {
    /// The shape of one sample (a mixture's points are flat: (2, 1, 1)).
    fn shape(&self) -> Shape;
    /// One line for logs and summary.json: kind, path, split, count.
    fn describe(&self) -> String;
    /// A hex digest of the content (workers compare theirs with the coordinator's).
    fn digest(&self) -> String;
    /// Fills `out` (`rows × shape().len()`, rows = out.len() / shape().len())
    /// with samples `first`, `first + 1`, ... of draw `key`.
    fn fill(&self, key: &DrawKey, first: u64, out: &mut [f32]);
    /// The mixture, when this is one (its scorer and the CUDA kernel need the centres).
    fn mixture(&self) -> Option<&Mixture> {
        None
    }
}

/// FNV-1a, 64-bit: a small digest for content that is not a file.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Feeds `bytes` in.
    pub fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The digest so far, as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}
