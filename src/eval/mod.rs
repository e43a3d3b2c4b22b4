//! Judging a generator: a `Judge` per kind of data scores its samples and
//! draws them.  Mixtures of Gaussians get VEEGAN's and PacGAN's scores (modes
//! covered, high-quality fraction, reverse KL; see PAPER.md) and a scatter
//! plot; images get sample grids (their scores are FID-style distances in a
//! feature network's space).  Samples come from the counter-based generator.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::data::{Dataset, DrawKey, Mixture};
use crate::error::Result;
use crate::nn::{Network, Workspace};
use crate::rng::{Purpose, Stream};

/// Scores as a JSON object (sample counts included), merged into metrics.jsonl and summary.json.
pub type ScoreMap = serde_json::Map<String, serde_json::Value>;

/// Scores and pictures of a generator for one kind of data.
pub trait Judge: Send {
    /// Judges the generator `p` at training step `step` (samples keyed by
    /// it): its scores when `score` (else None), and a PNG of its samples at
    /// `picture` when given, from the same samples where the kind draws
    /// what it scores.
    fn evaluate(
        &self,
        gen: &Network,
        p: &[f32],
        seed: u64,
        step: u64,
        score: bool,
        picture: Option<&Path>,
    ) -> Result<Option<ScoreMap>>;
    /// A few words for the progress bar from `evaluate`'s scores.
    fn headline(&self, scores: &ScoreMap) -> String;
    /// What a run draws once at its start, into its `samples/` folder (e.g. the real images).
    fn start(&self, _samples_dir: &Path, _seed: u64) -> Result<()> {
        Ok(())
    }
}

/// The judge of run `cfg`'s data `data` (opened from `cfg.data`); `samples`
/// is the number of generated samples scored.
pub fn judge_for(cfg: &crate::config::Config, data: Arc<dyn Dataset>, samples: usize) -> Box<dyn Judge> {
    match data.mixture() {
        Some(m) => Box::new(MixtureJudge { run: cfg.name.clone(), mixture: m.clone(), samples }),
        None => Box::new(images::ImageJudge::new(&cfg.data, data, samples)),
    }
}

pub mod classifier;
pub mod features;
pub mod images;
pub mod scores;

/// The judge of mixtures of Gaussians.
pub struct MixtureJudge {
    /// The run's name (its config's), for the pictures' titles.
    pub run: String,
    pub mixture: Mixture,
    pub samples: usize,
}

/// A scatter plot of `samples` (x, y pairs) with `m`'s modes marked, titled `title`.
fn scatter(m: &Mixture, samples: &[[f32; 2]], path: &Path, title: &str) -> Result<()> {
    let centres: Vec<[f32; 2]> = m.centres.iter().map(|c| [c[0] as f32, c[1] as f32]).collect();
    crate::plot::scatter_with_modes(path, samples, &centres, (3.0 * m.std) as f32, title)
}

impl Judge for MixtureJudge {
    fn evaluate(
        &self,
        gen: &Network,
        p: &[f32],
        seed: u64,
        step: u64,
        want_score: bool,
        picture: Option<&Path>,
    ) -> Result<Option<ScoreMap>> {
        if !want_score && picture.is_none() {
            return Ok(None);
        }
        let points = to_points(&generate(gen, p, self.samples, seed, step));
        // Scored even for a picture alone (cheap): its title shows the scores.
        let sc = score(&self.mixture, &points);
        if let Some(path) = picture {
            let kl = sc.reverse_kl.map_or("n/a".into(), |k| format!("{k:.3}"));
            let title = format!(
                "{} · {} · step {step} · modes {}/{} · high quality {:.1}% · reverse KL {kl}",
                self.run,
                Dataset::describe(&self.mixture),
                sc.modes_covered,
                sc.modes_total,
                100.0 * sc.high_quality_fraction
            );
            scatter(&self.mixture, &points, path, &title)?;
        }
        Ok(want_score
            .then(|| serde_json::to_value(&sc).expect("scores serialize").as_object().expect("object").clone()))
    }

    fn headline(&self, s: &ScoreMap) -> String {
        let n = |k: &str| s.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        format!("modes {}/{}  hq {:.1}%", n("modes_covered"), n("modes_total"), 100.0 * n("high_quality_fraction"))
    }
}

/// Draws `samples` (of `shape`) of the data `cfg` describes as a PNG at
/// `path`, without loading the dataset: a mixture's points as a scatter plot
/// with its modes marked, titled `title`; images as a grid (as square as it
/// gets; a picture without text, so `title` is not drawn).
pub fn draw(
    cfg: &crate::config::DataConfig,
    samples: &[f32],
    shape: crate::nn::Shape,
    path: &Path,
    title: &str,
) -> Result<()> {
    if cfg.kind.is_mixture() {
        return scatter(&Mixture::from_config(cfg), &to_points(samples), path, title);
    }
    let n = samples.len() / shape.len().max(1);
    let cols = (n as f64).sqrt().ceil() as usize;
    crate::plot::image_grid(path, samples, shape, cols, images::GRID_ZOOM)
}

fn to_points(flat: &[f32]) -> Vec<[f32; 2]> {
    flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
}

/// `n` real samples of `data` (the first of epoch 0), flat.
pub fn real_samples(data: &dyn Dataset, seed: u64, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n * data.shape().len()];
    data.fill(&DrawKey { seed, step: 0, purpose: Purpose::Real, base: 0 }, 0, &mut out);
    out
}

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
/// keyed by (seed, Eval, key): `n × gen.output()` values.
pub fn generate(gen: &Network, p: &[f32], n: usize, seed: u64, key: u64) -> Vec<f32> {
    use rayon::prelude::*;
    // Blocks of a fixed size, so the values do not depend on the thread count.
    const ROWS: usize = 256;
    let stream = Stream::new(seed, Purpose::Eval, key);
    let width = gen.output();
    let mut out = vec![0.0f32; n * width];
    out.par_chunks_mut(ROWS * width).enumerate().for_each(|(b, o)| {
        let rows = o.len() / width;
        let mut ws = Workspace::new(gen, rows);
        let mut z = vec![0.0f32; rows * gen.input];
        for (r, zr) in z.chunks_exact_mut(gen.input).enumerate() {
            stream.normals((b * ROWS + r) as u32, zr);
        }
        gen.forward(p, &z, &mut ws, rows);
        o.copy_from_slice(gen.output_of(&ws, 0..rows));
    });
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
