//! The judge of image datasets: every evaluation draws the generator's
//! samples for one fixed set of latents as an 8×8 grid (the same z through
//! the whole run, so progress is visible), and a run starts by drawing the
//! real images the same way.

use std::path::Path;
use std::sync::Arc;

use super::{generate, real_samples, Judge, ScoreMap};
use crate::data::Dataset;
use crate::error::Result;
use crate::nn::Network;

/// Images in a sample grid, and its columns.
pub const GRID: usize = 64;
pub const GRID_COLS: usize = 8;
/// Each image is drawn this many pixels per pixel.
pub const GRID_ZOOM: usize = 2;
/// The latents' key of the grid (`generate`'s key; training steps never reach it).
pub const GRID_KEY: u64 = 1 << 55;

pub struct ImageJudge {
    pub data: Arc<dyn Dataset>,
}

impl Judge for ImageJudge {
    fn evaluate(
        &self,
        gen: &Network,
        p: &[f32],
        seed: u64,
        _step: u64,
        score: bool,
        picture: Option<&Path>,
    ) -> Result<Option<ScoreMap>> {
        if let Some(path) = picture {
            let x = generate(gen, p, GRID, seed, GRID_KEY);
            crate::plot::image_grid(path, &x, gen.output_shape(), GRID_COLS, GRID_ZOOM)?;
        }
        Ok(score.then(|| {
            let mut m = ScoreMap::new();
            m.insert("dataset".into(), self.data.describe().into());
            m
        }))
    }

    fn headline(&self, _scores: &ScoreMap) -> String {
        String::new()
    }

    fn start(&self, samples_dir: &Path, seed: u64) -> Result<()> {
        let x = real_samples(self.data.as_ref(), seed, GRID);
        crate::plot::image_grid(&samples_dir.join("real.png"), &x, self.data.shape(), GRID_COLS, GRID_ZOOM)
    }
}
