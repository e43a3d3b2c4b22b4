//! The counter-based random number generator: Philox4x32-10 (Salmon et al.,
//! SC'11), keyed by the seed and addressed by (purpose, step, sample index,
//! block).  A sample's numbers depend only on that address, never on which
//! worker draws it, how many workers there are, or what was drawn before;
//! the CUDA twin (kernels/rng.cu) computes the same words.

const M0: u64 = 0xD251_1F53;
const M1: u64 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// What a draw is for; part of the counter so that streams never overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Purpose {
    /// Latent z of the minibatch a step's first phase uses.
    Latent = 1,
    /// Real samples of that minibatch.
    Real = 2,
    /// Latent z of the second minibatch of an alternating step (the G step).
    LatentG = 3,
    /// Real samples of that minibatch.
    RealG = 4,
    /// Parameter initialisation (step = layer index).
    Init = 5,
    /// Latents for scoring and sample plots (step = the training step).
    Eval = 6,
}

/// Philox4x32 with 10 rounds: 4 random 32-bit words for a 128-bit counter.
#[inline]
pub fn philox(key: [u32; 2], ctr: [u32; 4]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for _ in 0..10 {
        let p0 = M0 * c[0] as u64;
        let p1 = M1 * c[2] as u64;
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// A stream of numbers for one (seed, purpose, step).
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    key: [u32; 2],
    step_lo: u32,
    hi: u32,
}

impl Stream {
    pub fn new(seed: u64, purpose: Purpose, step: u64) -> Stream {
        Stream {
            key: [seed as u32, (seed >> 32) as u32],
            step_lo: step as u32,
            hi: ((purpose as u32) << 24) | ((step >> 32) as u32 & 0x00FF_FFFF),
        }
    }

    /// The 4 words for sample `index`, block `block`.
    #[inline]
    pub fn words(&self, index: u32, block: u32) -> [u32; 4] {
        philox(self.key, [block, index, self.step_lo, self.hi])
    }

    /// Fills `out` with N(0, 1) numbers for sample `index` (4 per block, Box–Muller).
    pub fn normals(&self, index: u32, out: &mut [f32]) {
        for (b, o) in out.chunks_mut(4).enumerate() {
            let w = self.words(index, b as u32);
            let (n0, n1) = box_muller(w[0], w[1]);
            let (n2, n3) = box_muller(w[2], w[3]);
            for (d, s) in o.iter_mut().zip([n0, n1, n2, n3]) {
                *d = s;
            }
        }
    }
}

/// A uniform in (0, 1] from the top 24 bits of a word.
#[inline]
pub fn uniform_open0(w: u32) -> f32 {
    ((w >> 8) + 1) as f32 * (1.0 / 16_777_216.0)
}

/// A uniform in [0, 1) from the top 24 bits of a word.
#[inline]
pub fn uniform(w: u32) -> f32 {
    (w >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Two independent N(0, 1) numbers from two words (Box–Muller).
#[inline]
pub fn box_muller(a: u32, b: u32) -> (f32, f32) {
    let r = (-2.0 * uniform_open0(a).ln()).sqrt();
    let (s, c) = (std::f32::consts::TAU * uniform(b)).sin_cos();
    (r * c, r * s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answer() {
        // Known-answer vectors from the Random123 distribution (kat_vectors).
        assert_eq!(philox([0, 0], [0, 0, 0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox([0xffffffff, 0xffffffff], [0xffffffff; 4]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
        assert_eq!(
            philox([0xa4093822, 0x299f31d0], [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn normals_have_unit_moments_and_depend_only_on_address() {
        let s = Stream::new(7, Purpose::Latent, 3);
        let mut v = vec![0.0f32; 256];
        let (mut sum, mut sq, mut n) = (0.0f64, 0.0f64, 0usize);
        for i in 0..400 {
            s.normals(i, &mut v);
            for &x in &v {
                assert!(x.is_finite());
                sum += x as f64;
                sq += (x as f64) * (x as f64);
                n += 1;
            }
        }
        let mean = sum / n as f64;
        let var = sq / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
        let mut a = vec![0.0f32; 10];
        let mut b = vec![0.0f32; 10];
        s.normals(5, &mut a);
        Stream::new(7, Purpose::Latent, 3).normals(5, &mut b);
        assert_eq!(a, b);
        Stream::new(7, Purpose::Real, 3).normals(5, &mut b);
        assert_ne!(a, b);
        Stream::new(7, Purpose::Latent, 4).normals(5, &mut b);
        assert_ne!(a, b);
    }
}
