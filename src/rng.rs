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
    /// The feature classifier's augmentations (step = the epoch).
    Augment = 7,
    /// Start vectors of the Jacobian's Arnoldi iteration (`stability`).
    Krylov = 8,
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

    /// (key, step's low word, purpose and step's high bits): the counter's
    /// fixed parts, as the CUDA kernels take them.
    pub fn parts(&self) -> ([u32; 2], u32, u32) {
        (self.key, self.step_lo, self.hi)
    }

    /// The 4 words for sample `index`, block `block`.
    #[inline]
    pub fn words(&self, index: u32, block: u32) -> [u32; 4] {
        philox(self.key, [block, index, self.step_lo, self.hi])
    }

    /// Fills `out` with N(0, 1) numbers for sample `index`: block b gives
    /// out[4b..4b+4] by Box–Muller on its 4 words.
    pub fn normals(&self, index: u32, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { self.normals_avx2(index, out) };
        }
        self.normals_portable(index, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn normals_avx2(&self, index: u32, out: &mut [f32]) {
        self.normals_with(index, out, |key, c| {
            // SAFETY: AVX2 is enabled for this function.
            unsafe { philox8_avx2(key, c) }
        })
    }

    /// The same numbers on any CPU: no FMA contraction, so the AVX2 build and
    /// the plain one agree bit for bit.
    fn normals_portable(&self, index: u32, out: &mut [f32]) {
        self.normals_with(index, out, philox_lanes::<8>)
    }

    #[inline(always)]
    fn normals_with(&self, index: u32, out: &mut [f32], philox8: impl Fn([u32; 2], [[u32; 8]; 4]) -> [[u32; 8]; 4]) {
        const L: usize = 8; // blocks per batch: 32 numbers
        let mut base = 0usize;
        let mut block = 0u32;
        while base < out.len() {
            let mut c = [[0u32; L]; 4];
            for (l, c0) in c[0].iter_mut().enumerate() {
                *c0 = block + l as u32;
            }
            c[1] = [index; L];
            c[2] = [self.step_lo; L];
            c[3] = [self.hi; L];
            let w = philox8(self.key, c);
            // Lane-wise (vectorises), then interleaved: block l gives v[4l..4l+4].
            let mut n = [[0.0f32; L]; 4];
            for l in 0..L {
                (n[0][l], n[1][l]) = box_muller(w[0][l], w[1][l]);
                (n[2][l], n[3][l]) = box_muller(w[2][l], w[3][l]);
            }
            let mut v = [0.0f32; 4 * L];
            for l in 0..L {
                v[4 * l..4 * l + 4].copy_from_slice(&[n[0][l], n[1][l], n[2][l], n[3][l]]);
            }
            let n = (out.len() - base).min(4 * L);
            out[base..base + n].copy_from_slice(&v[..n]);
            base += n;
            block += L as u32;
        }
    }
}

/// Philox4x32-10 on L counters at once (lane-parallel, so it vectorises).
#[inline(always)]
fn philox_lanes<const L: usize>(key: [u32; 2], c: [[u32; L]; 4]) -> [[u32; L]; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = c;
    let mut k = key;
    for _ in 0..10 {
        for l in 0..L {
            let p0 = M0 * c0[l] as u64;
            let p1 = M1 * c2[l] as u64;
            let (a1, a3) = (c1[l], c3[l]);
            c0[l] = (p1 >> 32) as u32 ^ a1 ^ k[0];
            c1[l] = p1 as u32;
            c2[l] = (p0 >> 32) as u32 ^ a3 ^ k[1];
            c3[l] = p0 as u32;
        }
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    [c0, c1, c2, c3]
}

/// `philox_lanes::<8>` with AVX2 intrinsics (LLVM does not vectorise the
/// 32×32→64-bit products by itself).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn philox8_avx2(key: [u32; 2], c: [[u32; 8]; 4]) -> [[u32; 8]; 4] {
    use std::arch::x86_64::*;
    let ld = |a: &[u32; 8]| _mm256_loadu_si256(a.as_ptr() as *const __m256i);
    let (mut c0, mut c1, mut c2, mut c3) = (ld(&c[0]), ld(&c[1]), ld(&c[2]), ld(&c[3]));
    let (m0, m1) = (_mm256_set1_epi32(M0 as i32), _mm256_set1_epi32(M1 as i32));
    // (hi, lo) 32-bit halves of the 8 products a·m.
    let mul = |a: __m256i, m: __m256i| {
        let even = _mm256_mul_epu32(a, m);
        let odd = _mm256_mul_epu32(_mm256_srli_epi64::<32>(a), m);
        let hi = _mm256_blend_epi32::<0b1010_1010>(_mm256_srli_epi64::<32>(even), odd);
        let lo = _mm256_blend_epi32::<0b1010_1010>(even, _mm256_slli_epi64::<32>(odd));
        (hi, lo)
    };
    let mut k = key;
    for _ in 0..10 {
        let (h0, l0) = mul(c0, m0);
        let (h1, l1) = mul(c2, m1);
        let k0 = _mm256_set1_epi32(k[0] as i32);
        let k1 = _mm256_set1_epi32(k[1] as i32);
        let n0 = _mm256_xor_si256(_mm256_xor_si256(h1, c1), k0);
        let n2 = _mm256_xor_si256(_mm256_xor_si256(h0, c3), k1);
        (c0, c1, c2, c3) = (n0, l1, n2, l0);
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    let mut out = [[0u32; 8]; 4];
    for (o, v) in out.iter_mut().zip([c0, c1, c2, c3]) {
        _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, v);
    }
    out
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

/// Two independent N(0, 1) numbers from two words (Box–Muller), with the
/// polynomial `ln` and `sincos` below: branch-free, so loops of it
/// vectorise, and written so that the CUDA twin computes the same floats.
#[inline(always)]
pub fn box_muller(a: u32, b: u32) -> (f32, f32) {
    let r = (-2.0 * ln_unit(uniform_open0(a))).sqrt();
    let (s, c) = sincos_turns(uniform(b));
    (r * c, r * s)
}

/// ln(x) for x in (0, 1] (absolute error under 1e-7): x = m·2^e with m in
/// [√½, √2), ln m = 2 atanh((m-1)/(m+1)) by its series to the 9th power.
#[inline(always)]
pub fn ln_unit(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > std::f32::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e += big as i32;
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let p = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0))));
    e as f32 * std::f32::consts::LN_2 + 2.0 * s * p
}

/// (sin 2πu, cos 2πu) for u in [0, 1) (absolute error under 1e-6): reduced to
/// a quarter turn k and r in [-π/4, π/4], Taylor polynomials, then rotated.
#[inline(always)]
pub fn sincos_turns(u: f32) -> (f32, f32) {
    let q = (u * 4.0 + 0.5).floor(); // quarter turns, 0..=4
    let r = (u * 4.0 - q) * std::f32::consts::FRAC_PI_2;
    let r2 = r * r;
    let s = r * (1.0 + r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362_880.0)))));
    let c = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40_320.0))));
    // Rotate by k quarter turns: (s, c) -> (c, -s) -> (-s, -c) -> (-c, s).
    let k = (q as i32) & 3;
    let odd = k & 1 != 0;
    let (s1, c1) = (if odd { c } else { s }, if odd { s } else { c });
    let sin_neg = k & 2 != 0;
    let cos_neg = (k + 1) & 2 != 0;
    (if sin_neg { -s1 } else { s1 }, if cos_neg { -c1 } else { c1 })
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
    fn polynomial_ln_and_sincos_are_accurate() {
        let mut worst = (0.0f64, 0.0f64);
        for i in 0..=(1u32 << 16) {
            let w = i.wrapping_mul(0x9E37_79B9) ^ (i << 16);
            let x = uniform_open0(w);
            worst.0 = worst.0.max((ln_unit(x) as f64 - (x as f64).ln()).abs());
            let u = uniform(w);
            let (s, c) = sincos_turns(u);
            let a = std::f64::consts::TAU * u as f64;
            worst.1 = worst.1.max((s as f64 - a.sin()).abs()).max((c as f64 - a.cos()).abs());
        }
        assert!(worst.0 < 2e-6, "ln error {}", worst.0);
        assert!(worst.1 < 2e-6, "sincos error {}", worst.1);
        assert_eq!(ln_unit(1.0), 0.0);
        assert!(ln_unit(uniform_open0(0)).is_finite());
    }

    #[test]
    fn vectorised_and_portable_normals_agree_bitwise() {
        let s = Stream::new(11, Purpose::Latent, 5);
        let (mut a, mut b) = (vec![0.0f32; 259], vec![0.0f32; 259]);
        s.normals(3, &mut a);
        s.normals_portable(3, &mut b);
        assert_eq!(
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        // Block b of a sample is the same whatever the length asked for.
        let mut c = vec![0.0f32; 8];
        s.normals(3, &mut c);
        assert_eq!(&a[..8], &c[..]);
        // And equals the single-counter Philox path.
        let w = s.words(3, 1);
        let (n0, n1) = box_muller(w[0], w[1]);
        assert_eq!((a[4], a[5]), (n0, n1));
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
