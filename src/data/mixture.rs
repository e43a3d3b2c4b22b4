//! Mixtures of Gaussians (a ring or a grid of modes), drawn from the
//! counter-based generator so that sample i of a step is the same whoever
//! draws it.

use sha2::{Digest, Sha256};

use super::{hex, Dataset, DrawKey};
use crate::config::{DataConfig, DataKind};
use crate::nn::Shape;
use crate::rng::{box_muller, Stream};

/// An equal-weight mixture of isotropic 2-D Gaussians.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixture {
    /// The modes' centres.
    pub centres: Vec<[f64; 2]>,
    /// The standard deviation of every mode.
    pub std: f64,
}

impl Mixture {
    /// The ring or grid that `c` describes.
    ///
    /// # Panics
    /// When `c.kind` is not a mixture (`fashion-mnist`, `image-folder`): those
    /// are opened with `data::open`.
    pub fn from_config(c: &DataConfig) -> Mixture {
        let centres = match c.kind {
            DataKind::Ring => (0..c.modes)
                .map(|k| {
                    let a = std::f64::consts::TAU * k as f64 / c.modes as f64;
                    [c.radius * a.cos(), c.radius * a.sin()]
                })
                .collect(),
            DataKind::Grid => {
                let h = (c.grid_side as f64 - 1.0) / 2.0;
                (0..c.grid_side * c.grid_side)
                    .map(|k| {
                        let (i, j) = (k / c.grid_side, k % c.grid_side);
                        [(i as f64 - h) * c.grid_spacing, (j as f64 - h) * c.grid_spacing]
                    })
                    .collect()
            }
            DataKind::FashionMnist | DataKind::ImageFolder | DataKind::StackedFashionMnist => {
                panic!("Mixture::from_config: data.kind = \"{}\" is not a mixture; use data::open", c.kind.name())
            }
        };
        Mixture { centres, std: c.std }
    }

    /// Sample `index` of `stream`: a mode chosen uniformly, plus Gaussian noise.
    #[inline]
    pub fn sample(&self, stream: &Stream, index: u32) -> [f32; 2] {
        let w = stream.words(index, 0);
        let k = ((w[0] as u64 * self.centres.len() as u64) >> 32) as usize;
        let (n0, n1) = box_muller(w[1], w[2]);
        let c = self.centres[k];
        [(c[0] + self.std * n0 as f64) as f32, (c[1] + self.std * n1 as f64) as f32]
    }

    /// Fills `out` (rows × 2) with samples first_index, first_index+1, ...
    pub fn fill(&self, stream: &Stream, first_index: u32, out: &mut [f32]) {
        for (i, o) in out.chunks_exact_mut(2).enumerate() {
            o.copy_from_slice(&self.sample(stream, first_index + i as u32));
        }
    }
}

impl Dataset for Mixture {
    fn shape(&self) -> Shape {
        Shape::flat(2)
    }

    fn describe(&self) -> String {
        format!("mixture of {} Gaussians (std {})", self.centres.len(), self.std)
    }

    fn digest(&self) -> String {
        // The centres and the std are the whole content.
        let mut h = Sha256::new();
        h.update(b"lockstep mixture v1\0");
        for c in &self.centres {
            h.update(c[0].to_le_bytes());
            h.update(c[1].to_le_bytes());
        }
        h.update(self.std.to_le_bytes());
        hex(&h.finalize())
    }

    fn fill(&self, key: &DrawKey, first: u64, out: &mut [f32]) {
        let stream = Stream::new(key.seed, key.purpose, key.step);
        Mixture::fill(self, &stream, first as u32, out)
    }

    fn mixture(&self) -> Option<&Mixture> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Purpose;

    #[test]
    fn ring_and_grid_centres() {
        let ring = Mixture::from_config(&DataConfig::default());
        assert_eq!(ring.centres.len(), 8);
        assert!((ring.centres[2][1] - 2.0).abs() < 1e-12 && ring.centres[2][0].abs() < 1e-12);
        let grid = Mixture::from_config(&DataConfig { kind: DataKind::Grid, std: 0.05, ..DataConfig::default() });
        assert_eq!(grid.centres.len(), 25);
        assert_eq!(grid.centres[0], [-4.0, -4.0]);
        assert_eq!(grid.centres[24], [4.0, 4.0]);
    }

    #[test]
    fn samples_sit_on_their_modes_and_cover_all() {
        let m = Mixture::from_config(&DataConfig::default());
        let s = Stream::new(1, Purpose::Real, 0);
        let mut hits = [0usize; 8];
        for i in 0..4000 {
            let x = m.sample(&s, i);
            let (k, d) = m
                .centres
                .iter()
                .enumerate()
                .map(|(k, c)| (k, ((x[0] as f64 - c[0]).powi(2) + (x[1] as f64 - c[1]).powi(2)).sqrt()))
                .fold((0, f64::MAX), |a, b| if b.1 < a.1 { b } else { a });
            assert!(d < 6.0 * m.std, "sample {i} is {d} from its mode");
            hits[k] += 1;
        }
        assert!(hits.iter().all(|&h| h > 400), "{hits:?}");
    }
}
