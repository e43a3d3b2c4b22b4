//! Scores of a generator on a mixture of Gaussians (VEEGAN / PacGAN, see
//! PAPER.md): modes covered, high-quality fraction and reverse KL, on
//! samples drawn from the counter-based generator.

use serde::Serialize;

use crate::data::Mixture;
use crate::nn::{Network, Workspace};
use crate::rng::{Purpose, Stream};

/// Scores of one set of samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scores {
    pub samples: usize,
    pub modes_covered: usize,
    pub modes_total: usize,
    /// Fraction of samples within 3 standard deviations of their nearest mode.
    pub high_quality_fraction: f64,
    /// KL(q || uniform) of the high-quality samples' histogram over the
    /// modes; None when no sample is of high quality.
    pub reverse_kl: Option<f64>,
}

/// Scores `samples` against the mixture `m`.
pub fn score(m: &Mixture, samples: &[[f32; 2]]) -> Scores {
    let k = m.centres.len();
    let mut hist = vec![0usize; k];
    let mut hq = 0usize;
    let limit = 3.0 * m.std;
    for s in samples {
        let (best, d2) = m
            .centres
            .iter()
            .enumerate()
            .map(|(i, c)| (i, (s[0] as f64 - c[0]).powi(2) + (s[1] as f64 - c[1]).powi(2)))
            .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
        if d2.sqrt() <= limit {
            hq += 1;
            hist[best] += 1;
        }
    }
    let reverse_kl = (hq > 0).then(|| {
        hist.iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let q = c as f64 / hq as f64;
                q * (q * k as f64).ln()
            })
            .sum::<f64>()
            .max(0.0)
    });
    Scores {
        samples: samples.len(),
        modes_covered: hist.iter().filter(|&&c| c > 0).count(),
        modes_total: k,
        high_quality_fraction: if samples.is_empty() { 0.0 } else { hq as f64 / samples.len() as f64 },
        reverse_kl,
    }
}

/// Draws `n` samples from the generator (f32 parameters `p`), with latents
/// keyed by (seed, Eval, key).
pub fn generate(gen: &Network, p: &[f32], n: usize, seed: u64, key: u64) -> Vec<[f32; 2]> {
    const ROWS: usize = 256;
    let stream = Stream::new(seed, Purpose::Eval, key);
    let mut ws = Workspace::new(gen, ROWS);
    let mut z = vec![0.0f32; ROWS * gen.input];
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let rows = ROWS.min(n - i);
        for r in 0..rows {
            stream.normals((i + r) as u32, &mut z[r * gen.input..(r + 1) * gen.input]);
        }
        gen.forward(p, &z, &mut ws, rows);
        out.extend(gen.output_of(&ws, 0..rows).chunks_exact(2).map(|c| [c[0], c[1]]));
        i += rows;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataConfig;

    #[test]
    fn scores_of_known_sets() {
        let m = Mixture::from_config(&DataConfig::default());
        // Exactly on the modes, evenly: everything perfect.
        let s: Vec<[f32; 2]> = (0..800)
            .map(|i| {
                let c = m.centres[i % 8];
                [c[0] as f32, c[1] as f32]
            })
            .collect();
        let sc = score(&m, &s);
        assert_eq!((sc.modes_covered, sc.modes_total), (8, 8));
        assert_eq!(sc.high_quality_fraction, 1.0);
        assert!(sc.reverse_kl.unwrap().abs() < 1e-12);
        // Collapsed onto one mode, plus as many junk points at the origin.
        let mut s: Vec<[f32; 2]> = vec![[2.0, 0.0]; 100];
        s.extend(vec![[0.0, 0.0]; 100]);
        let sc = score(&m, &s);
        assert_eq!(sc.modes_covered, 1);
        assert_eq!(sc.high_quality_fraction, 0.5);
        assert!((sc.reverse_kl.unwrap() - 8f64.ln()).abs() < 1e-12);
        // A point just outside 3 std is not high quality.
        let sc = score(&m, &[[2.0 + 3.01 * 0.02, 0.0]]);
        assert_eq!((sc.modes_covered, sc.high_quality_fraction, sc.reverse_kl), (0, 0.0, None));
    }
}
