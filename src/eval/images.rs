//! The judge of image datasets.  Every evaluation draws the generator's
//! samples for one fixed set of latents as an 8×8 grid (the same z through
//! the whole run, so progress is visible), and a run starts by drawing the
//! real images the same way.  Scores are computed in the feature space of
//! the shipped classifier (eval::features): the Fréchet distance of the
//! features' Gaussian fits, KID, improved precision and recall, and on
//! Stacked-Fashion-MNIST the modes captured and the KL to uniform over the
//! 1000 class triples (reference/SCORES.md).  The real side is the test
//! split (10,000 images) where the data has one, and every score map names
//! its sample counts, the feature network and the floor: the same scores
//! of the training split against the test split.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde_json::json;

use super::features::{Embedding, FeatureNet};
use super::scores::{self, Gaussian};
use super::{generate, Judge, ScoreMap};
use crate::config::{DataConfig, Split};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::nn::Network;

/// Images in a sample grid, and its columns.
pub const GRID: usize = 64;
pub const GRID_COLS: usize = 8;
/// Each image is drawn this many pixels per pixel.
pub const GRID_ZOOM: usize = 2;
/// The latents' key of the grid (`generate`'s key; training steps never reach it).
pub const GRID_KEY: u64 = 1 << 55;
/// Real images scored (at most: the test split has 10,000).
pub const REAL_SAMPLES: usize = 10_000;
/// Generated samples whose class triples are counted on stacked data (VEEGAN's and PacGAN's 26,000).
pub const MODE_SAMPLES: usize = 26_000;
/// The classes of Fashion-MNIST, and the modes of its stacked form.
pub const CLASSES: usize = 10;
/// Nearest neighbours of precision and recall's balls.
pub const PR_K: usize = 3;
/// The fewest samples image scores are computed on (precision and recall need more than `PR_K`).
pub const MIN_SAMPLES: usize = 10;
/// KID's subsets and their size (Binkowski et al.).
pub const KID_SUBSETS: usize = 100;
pub const KID_SUBSET_SIZE: usize = 1000;
/// The seed of the real sets' draws and of KID's subsets: the same for every
/// run, so that scores of different runs are comparable.
pub const SCORE_SEED: u64 = 0;

/// A set of real images in feature space, fitted once.
pub struct RealSet {
    /// What it is, e.g. "fashion-mnist test from DIR: 10000 images".
    pub name: String,
    pub emb: Embedding,
    pub gaussian: Gaussian,
    /// The real side of precision and recall (k = `PR_K`).
    pub balls: scores::RealBalls,
}

impl RealSet {
    /// The first `n` samples (of epoch 0, keyed by `SCORE_SEED`) of `data`, embedded.
    pub fn draw(fnet: &FeatureNet, data: &dyn Dataset, n: usize) -> Result<RealSet> {
        let x = real_images(data, n);
        let emb = fnet.embed(&x, data.shape())?;
        let gaussian = scores::fit_gaussian(&emb.features, emb.dim);
        let balls = scores::RealBalls::new(&emb.features, emb.dim, PR_K);
        Ok(RealSet { name: format!("{} ({n} drawn)", data.describe()), emb, gaussian, balls })
    }
}

/// `n` real samples of `data`: the first n of epoch 0 of seed `SCORE_SEED`.
pub fn real_images(data: &dyn Dataset, n: usize) -> Vec<f32> {
    super::real_samples(data, SCORE_SEED, n)
}

/// The mode of each image of `e` (stacked data: its channels' classes as
/// one number in 0..10^channels).
pub fn modes_of(e: &Embedding) -> Vec<usize> {
    e.classes.chunks_exact(e.channels).map(|c| c.iter().fold(0, |m, &k| CLASSES * m + k as usize)).collect()
}

/// The scores of the embedded images `gen` (the first `n` of them) against
/// `real`: FD, KID, precision and recall, with their sample counts; on
/// stacked data also the modes of all of `gen`'s images.
pub fn score(fnet: &FeatureNet, real: &RealSet, gen: &Embedding, n: usize) -> ScoreMap {
    let n = n.min(gen.n);
    let g = &gen.features[..n * gen.dim];
    let fd = scores::frechet_distance(&real.gaussian, &scores::fit_gaussian(g, gen.dim));
    let m = KID_SUBSET_SIZE.min(n).min(real.emb.n);
    let kid = scores::kid(&real.emb.features, g, gen.dim, KID_SUBSETS, m, SCORE_SEED);
    let pr = scores::precision_recall_against(&real.emb.features, &real.balls, g);
    let mut s = ScoreMap::new();
    s.insert("fd".into(), json!(fd));
    s.insert("kid".into(), json!(kid.mean));
    s.insert("kid_std".into(), json!(kid.std));
    s.insert("kid_subsets".into(), json!(format!("{} × {}", kid.subsets, kid.subset_size)));
    s.insert("precision".into(), json!(pr.precision));
    s.insert("recall".into(), json!(pr.recall));
    s.insert("pr_k".into(), json!(pr.k));
    s.insert("generated_samples".into(), json!(n));
    s.insert("real_samples".into(), json!(real.emb.n));
    s.insert("real_set".into(), json!(real.name));
    s.insert("feature_net".into(), json!(fnet.name()));
    if gen.channels > 1 {
        let mc = scores::mode_count(&modes_of(gen), CLASSES.pow(gen.channels as u32));
        s.insert("modes".into(), json!(mc.modes));
        s.insert("modes_total".into(), json!(mc.modes_total));
        s.insert("kl".into(), json!(mc.kl));
        s.insert("mode_samples".into(), json!(mc.samples));
    }
    s
}

/// The real sets of a dataset's scores: the reference (the test split, or
/// the data itself) and the data of the floor's other side (the training
/// split, when the data has splits).
struct Reference {
    fnet: Arc<FeatureNet>,
    real: RealSet,
    train: Option<DataConfig>,
}

/// The data of the floor's two sides for data `cfg`: (the scores' real set,
/// the training split when the data has splits).
fn sides(cfg: &DataConfig) -> (DataConfig, Option<DataConfig>) {
    if cfg.kind.has_splits() {
        (DataConfig { split: Split::Test, ..cfg.clone() }, Some(DataConfig { split: Split::Train, ..cfg.clone() }))
    } else {
        (cfg.clone(), None)
    }
}

impl Reference {
    fn new(cfg: &DataConfig) -> Result<Reference> {
        let fnet = FeatureNet::bundled()?;
        let (test, train) = sides(cfg);
        let data = crate::data::open(&test)?;
        FeatureNet::fits(data.shape()).map_err(Error::input)?;
        let n = REAL_SAMPLES.min(data.epoch_len().unwrap_or(REAL_SAMPLES));
        let real = RealSet::draw(&fnet, data.as_ref(), n)?;
        Ok(Reference { fnet, real, train })
    }

    /// The scores of `n` training images against the reference, as a
    /// generator's `n` samples would be scored (FD is biased by n, so a
    /// floor is only comparable at the same n); None without splits.
    fn floor(&self, n: usize) -> Option<Result<ScoreMap>> {
        let train = self.train.as_ref()?;
        Some((|| {
            let data = crate::data::open(train)?;
            let drawn = if data.shape().c > 1 { n.max(MODE_SAMPLES) } else { n };
            let e = self.fnet.embed(&real_images(data.as_ref(), drawn), data.shape())?;
            let mut s = score(&self.fnet, &self.real, &e, n);
            s.insert("against".into(), json!(format!("{} ({drawn} drawn)", data.describe())));
            Ok(s)
        })())
    }
}

/// The floor of data `cfg`: `n` images of the training split scored
/// against the test split (`lockstep eval --real`).
pub fn floor(cfg: &DataConfig, n: usize) -> Result<ScoreMap> {
    if n < MIN_SAMPLES {
        return Err(Error::input(format!("--n {n}: the floor needs at least {MIN_SAMPLES} samples")));
    }
    if !cfg.kind.has_splits() {
        return Err(Error::input(format!(
            "data.kind = \"{}\" has no train and test splits to compare; the floor needs fashion-mnist or stacked-fashion-mnist",
            cfg.kind.name()
        )));
    }
    Reference::new(cfg)?.floor(n).expect("the data has splits")
}

pub struct ImageJudge {
    pub data: Arc<dyn Dataset>,
    pub cfg: DataConfig,
    /// Generated samples scored (FD, KID, precision/recall).
    pub samples: usize,
    reference: OnceLock<std::result::Result<Arc<Reference>, String>>,
    /// The floor at `samples`, computed with the first scores.
    floor: OnceLock<Option<std::result::Result<ScoreMap, String>>>,
}

impl ImageJudge {
    pub fn new(cfg: &DataConfig, data: Arc<dyn Dataset>, samples: usize) -> ImageJudge {
        ImageJudge { data, cfg: cfg.clone(), samples, reference: OnceLock::new(), floor: OnceLock::new() }
    }

    /// The reference set, made on first use (the feature network and the real images, embedded).
    fn reference(&self) -> std::result::Result<Arc<Reference>, String> {
        self.reference.get_or_init(|| Reference::new(&self.cfg).map(Arc::new).map_err(|e| e.to_string())).clone()
    }
}

impl Judge for ImageJudge {
    fn evaluate(
        &self,
        gen: &Network,
        p: &[f32],
        seed: u64,
        step: u64,
        want_score: bool,
        picture: Option<&Path>,
    ) -> Result<Option<ScoreMap>> {
        if let Some(path) = picture {
            let x = generate(gen, p, GRID, seed, GRID_KEY);
            crate::plot::image_grid(path, &x, gen.output_shape(), GRID_COLS, GRID_ZOOM)?;
        }
        if !want_score {
            return Ok(None);
        }
        let mut s = ScoreMap::new();
        s.insert("dataset".into(), self.data.describe().into());
        if self.samples < MIN_SAMPLES {
            let why = format!("image scores need at least {MIN_SAMPLES} samples, got {}", self.samples);
            s.insert("scores_unavailable".into(), why.into());
            return Ok(Some(s));
        }
        let r = match self.reference() {
            Ok(r) => r,
            Err(why) => {
                s.insert("scores_unavailable".into(), why.into());
                return Ok(Some(s));
            }
        };
        let shape = gen.output_shape();
        let n = if shape.c > 1 { self.samples.max(MODE_SAMPLES) } else { self.samples };
        let x = generate(gen, p, n, seed, step);
        let e = r.fnet.embed(&x, shape)?;
        s.extend(score(&r.fnet, &r.real, &e, self.samples));
        let floor = self.floor.get_or_init(|| r.floor(self.samples).map(|f| f.map_err(|e| e.to_string())));
        match floor.clone() {
            Some(Ok(f)) => {
                let keep = ["fd", "kid", "precision", "recall", "modes", "kl", "against"];
                let f: ScoreMap = f.into_iter().filter(|(k, _)| keep.contains(&k.as_str())).collect();
                s.insert("floor".into(), serde_json::Value::Object(f));
            }
            Some(Err(why)) => {
                s.insert("floor".into(), json!(format!("unavailable: {why}")));
            }
            None => {}
        }
        Ok(Some(s))
    }

    fn headline(&self, s: &ScoreMap) -> String {
        let n = |k: &str| s.get(k).and_then(|v| v.as_f64());
        let mut h = match (n("fd"), n("precision"), n("recall")) {
            (Some(fd), Some(p), Some(r)) => format!("FD {fd:.2}  P {p:.2}  R {r:.2}"),
            _ => String::new(),
        };
        if let Some(m) = n("modes") {
            h.push_str(&format!("  modes {m}/{}", n("modes_total").unwrap_or(f64::NAN)));
        }
        h
    }

    fn start(&self, samples_dir: &Path, seed: u64) -> Result<()> {
        let x = super::real_samples(self.data.as_ref(), seed, GRID);
        crate::plot::image_grid(&samples_dir.join("real.png"), &x, self.data.shape(), GRID_COLS, GRID_ZOOM)
    }
}
