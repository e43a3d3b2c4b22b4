//! The run configuration: a TOML file, `--set key=value` overrides, defaults
//! for every key, and validation with errors that name the key, the file and
//! what was expected.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gan::objective::Objective;
use crate::nn::LayerSpec;

/// The whole resolved configuration of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// A short name for the run; the default run directory is `runs/<name>-<timestamp>`.
    pub name: String,
    pub data: DataConfig,
    pub generator: NetConfig,
    pub discriminator: NetConfig,
    pub train: TrainConfig,
    pub optimizer: OptimizerConfig,
    pub log: LogConfig,
}

/// Where the real samples come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `ring` (modes on a circle), `grid` (modes on a square lattice),
    /// `fashion-mnist` (IDX files), `stacked-fashion-mnist` (three
    /// fashion-mnist images as three channels) or `image-folder` (a folder of PNG files).
    pub kind: DataKind,
    /// Number of modes (ring only; a grid has `grid_side`^2).
    pub modes: usize,
    /// Ring radius.
    pub radius: f64,
    /// Modes per side of the grid.
    pub grid_side: usize,
    /// Distance between neighbouring grid modes; the grid is centred on 0.
    pub grid_spacing: f64,
    /// Standard deviation of every mode.
    pub std: f64,
    /// The folder of the image files: fashion-mnist's IDX files (default
    /// [`FASHION_MNIST_DIR`]) or image-folder's PNG files (required).
    pub path: Option<String>,
    /// Which split of fashion-mnist: `train` (60,000 images) or `test` (10,000).
    pub split: Split,
    /// Pixels of background added on each side of every image (2 turns 28×28 into 32×32).
    pub pad: usize,
}

/// Where Debian's package `dataset-fashion-mnist` puts the IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The largest `train.batch` accepted.
pub const MAX_BATCH: usize = 1 << 24;

/// The largest `data.pad` accepted.
pub const MAX_PAD: usize = 256;

/// The kind of real data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    /// A ring of 2-D Gaussians.
    Ring,
    /// A square grid of 2-D Gaussians.
    Grid,
    /// Fashion-MNIST's 28×28 grayscale images, from IDX files (gzipped or not).
    FashionMnist,
    /// Every PNG file of a folder, all of one size and channel count.
    ImageFolder,
    /// Three independently drawn Fashion-MNIST images as the three channels
    /// of one sample: 1000 class triples (the Stacked-MNIST benchmark).
    StackedFashionMnist,
}

impl DataKind {
    /// The name a config uses (`ring`, `grid`, `fashion-mnist`, `image-folder`).
    pub fn name(self) -> &'static str {
        match self {
            DataKind::Ring => "ring",
            DataKind::Grid => "grid",
            DataKind::FashionMnist => "fashion-mnist",
            DataKind::ImageFolder => "image-folder",
            DataKind::StackedFashionMnist => "stacked-fashion-mnist",
        }
    }

    /// Whether the data has a train and a test split (fashion-mnist and its stacked form).
    pub fn has_splits(self) -> bool {
        matches!(self, DataKind::FashionMnist | DataKind::StackedFashionMnist)
    }

    /// Whether this is a mixture of Gaussians (ring or grid).
    pub fn is_mixture(self) -> bool {
        matches!(self, DataKind::Ring | DataKind::Grid)
    }
}

/// A split of a dataset that has them (fashion-mnist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// The training images.
    #[default]
    Train,
    /// The held-out test images.
    Test,
}

impl Split {
    /// The name a config uses (`train`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// A sequential network: `layers` are strings such as `"linear 128"`,
/// `"relu"`, `"leaky_relu 0.2"`, `"tanh"`, `"sigmoid"`, `"scale 0.25"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    pub layers: Vec<String>,
    /// Gain of the orthogonal initialisation of every linear weight (biases start at 0).
    pub init_gain: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Update {
    /// Both players step from the same point (the paper's analysis).
    Simultaneous,
    /// A discriminator step, then a generator step on a fresh minibatch (the authors' code).
    Alternating,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub steps: u64,
    pub batch: usize,
    /// Samples per chunk: the unit of work whose partial sums are reduced in a
    /// fixed order, so results do not depend on how the batch is split.
    pub chunk: usize,
    /// Dimension of the latent z ~ N(0, I).
    pub latent: usize,
    pub objective: Objective,
    /// Weight of the regularizer eta * ||grad_D V||^2 in the generator's loss.
    pub eta: f64,
    pub update: Update,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    Sgd,
    Adam,
}

/// The optimizer of both players (`generator_lr` / `discriminator_lr` override `lr`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub generator_lr: Option<f64>,
    pub discriminator_lr: Option<f64>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Steps between lines of metrics.jsonl (and progress-bar updates of V).
    pub every: u64,
    /// Steps between scores on `eval_samples` samples (0: only at the end).
    pub eval_every: u64,
    /// Steps between sample plots (0: only at the end).
    pub sample_every: u64,
    /// Steps between checkpoints (0: only at the end).
    pub checkpoint_every: u64,
    /// How many periodic checkpoints to keep (the newest ones).
    pub keep_checkpoints: usize,
    /// Samples drawn for the scores (the literature uses 2,500).
    pub eval_samples: usize,
    /// Steps between estimates of the game Jacobian's leading eigenvalues
    /// (0: none), computed in the background (`stability::live`).
    pub stability_every: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "mog-ring".into(),
            data: DataConfig::default(),
            generator: NetConfig {
                layers: vec!["linear 128".into(), "relu".into(), "linear 128".into(), "relu".into(), "linear 2".into()],
                init_gain: 0.8,
            },
            discriminator: NetConfig {
                layers: vec!["scale 0.25".into(), "linear 128".into(), "relu".into(), "linear 1".into()],
                init_gain: 0.8,
            },
            train: TrainConfig::default(),
            optimizer: OptimizerConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            kind: DataKind::Ring,
            modes: 8,
            radius: 2.0,
            grid_side: 5,
            grid_spacing: 2.0,
            std: 0.02,
            path: None,
            split: Split::Train,
            pad: 0,
        }
    }
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig { layers: Vec::new(), init_gain: 0.8 }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 100_000,
            batch: 512,
            chunk: 64,
            latent: 256,
            objective: Objective::Gan,
            eta: 0.5,
            update: Update::Simultaneous,
            seed: 0,
        }
    }
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam,
            lr: 1e-4,
            generator_lr: None,
            discriminator_lr: None,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            every: 1000,
            eval_every: 10_000,
            sample_every: 10_000,
            checkpoint_every: 10_000,
            keep_checkpoints: 3,
            eval_samples: 2500,
            stability_every: 0,
        }
    }
}

impl DataConfig {
    /// Checks the data keys: `Err((key, message))` names the first key that is wrong.
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let d = self;
        let pos = |v: f64| v.is_finite() && v > 0.0;
        let kind = d.kind.name();
        if !pos(d.std) {
            return Err(("data.std", format!("must be a finite number > 0, got {}", d.std)));
        }
        match d.kind {
            DataKind::Ring => {
                if d.modes == 0 {
                    return Err(("data.modes", "must be at least 1".into()));
                }
                if !pos(d.radius) {
                    return Err(("data.radius", format!("must be a finite number > 0, got {}", d.radius)));
                }
            }
            DataKind::Grid => {
                if d.grid_side == 0 {
                    return Err(("data.grid_side", "must be at least 1".into()));
                }
                if !pos(d.grid_spacing) {
                    return Err(("data.grid_spacing", format!("must be a finite number > 0, got {}", d.grid_spacing)));
                }
            }
            DataKind::FashionMnist | DataKind::StackedFashionMnist => {}
            DataKind::ImageFolder => {
                if d.path.is_none() {
                    return Err(("data.path", "image-folder needs data.path = \"DIR\" (a folder of PNG files)".into()));
                }
            }
        }
        if d.kind.is_mixture() {
            if d.path.is_some() {
                return Err((
                    "data.path",
                    format!("applies to fashion-mnist and image-folder only; remove it for kind = \"{kind}\""),
                ));
            }
            if d.pad != 0 {
                return Err((
                    "data.pad",
                    format!("applies to fashion-mnist and image-folder only; remove it for kind = \"{kind}\""),
                ));
            }
        }
        if d.split != Split::Train && !d.kind.has_splits() {
            return Err((
                "data.split",
                format!("applies to fashion-mnist and stacked-fashion-mnist only; remove it for kind = \"{kind}\""),
            ));
        }
        if d.path.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err(("data.path", "is empty; set it to a folder, e.g. data.path = \"data/faces\"".into()));
        }
        if d.pad > MAX_PAD {
            return Err((
                "data.pad",
                format!("must be at most {MAX_PAD} pixels, got {} (2 turns 28×28 into 32×32)", d.pad),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Reads `path`, applies `overrides` (`key.path=value`, the value parsed
    /// as TOML, else taken as a string) and validates the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::input(format!(
                "{}: cannot read config: {e} (check the path given to --config; shipped configs are in configs/)",
                path.display()
            ))
        })?;
        Self::from_toml_str(&text, &path.display().to_string(), overrides)
    }

    /// Parses a config from TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str, overrides: &[String]) -> Result<Config> {
        let cfg: Config = parse_toml(text, origin, overrides, "configs/mog-ring.toml")?;
        cfg.validate().map_err(|(key, msg)| Error::input(format!("{origin}: key `{key}`: {msg}")))?;
        Ok(cfg)
    }

    /// The resolved config as TOML (written to the run directory and checkpoints).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a Config always serializes")
    }

    pub fn generator_lr(&self) -> f64 {
        self.optimizer.generator_lr.unwrap_or(self.optimizer.lr)
    }

    pub fn discriminator_lr(&self) -> f64 {
        self.optimizer.discriminator_lr.unwrap_or(self.optimizer.lr)
    }

    /// Number of chunks in one minibatch.
    pub fn chunks(&self) -> usize {
        self.train.batch / self.train.chunk
    }

    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let t = &self.train;
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if t.batch == 0 {
            return Err(("train.batch", "must be at least 1, got 0".into()));
        }
        if t.chunk == 0 {
            return Err(("train.chunk", "must be at least 1, got 0".into()));
        }
        if t.batch > MAX_BATCH {
            return Err(("train.batch", format!("must be at most {MAX_BATCH}, got {}", t.batch)));
        }
        if t.latent > crate::nn::layer::MAX_DIM {
            return Err(("train.latent", format!("must be at most {}, got {}", crate::nn::layer::MAX_DIM, t.latent)));
        }
        if t.batch % t.chunk != 0 {
            return Err((
                "train.batch",
                format!(
                    "{} is not a multiple of train.chunk = {}; make it one (e.g. {})",
                    t.batch,
                    t.chunk,
                    t.batch.div_ceil(t.chunk) * t.chunk
                ),
            ));
        }
        if t.steps == 0 {
            return Err(("train.steps", "must be at least 1".into()));
        }
        if t.latent == 0 {
            return Err(("train.latent", "must be at least 1".into()));
        }
        if !(t.eta.is_finite() && t.eta >= 0.0) {
            return Err(("train.eta", format!("must be a finite number >= 0, got {}", t.eta)));
        }
        let o = &self.optimizer;
        for (key, v) in [
            ("optimizer.lr", Some(o.lr)),
            ("optimizer.generator_lr", o.generator_lr),
            ("optimizer.discriminator_lr", o.discriminator_lr),
            ("optimizer.eps", Some(o.eps)),
        ] {
            if let Some(v) = v {
                if !pos(v) {
                    return Err((key, format!("must be a finite number > 0, got {v}")));
                }
            }
        }
        for (key, v) in [("optimizer.beta1", o.beta1), ("optimizer.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err((key, format!("must be in [0, 1), got {v}")));
            }
        }
        self.data.validate()?;
        let l = &self.log;
        if l.every == 0 {
            return Err(("log.every", "must be at least 1".into()));
        }
        if l.eval_samples == 0 {
            return Err(("log.eval_samples", "must be at least 1".into()));
        }
        if l.keep_checkpoints == 0 {
            return Err(("log.keep_checkpoints", "must be at least 1".into()));
        }
        for (key, net) in [("generator", &self.generator), ("discriminator", &self.discriminator)] {
            if !(net.init_gain.is_finite() && net.init_gain > 0.0) {
                return Err((
                    if key == "generator" { "generator.init_gain" } else { "discriminator.init_gain" },
                    format!("must be > 0, got {}", net.init_gain),
                ));
            }
        }
        // The shapes (G's output = the data's, D's = one logit) are checked
        // against the data in `gan::trainer::game`.
        LayerSpec::parse_all(&self.generator.layers).map_err(|m| ("generator.layers", m))?;
        LayerSpec::parse_all(&self.discriminator.layers).map_err(|m| ("discriminator.layers", m))?;
        Ok(())
    }
}

/// Sets `key.path=value` in a TOML table, creating intermediate tables.
fn apply_override(root: &mut toml::Table, spec: &str) -> Result<()> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| Error::input(format!("--set {spec}: expected key=value, e.g. --set train.batch=1024")))?;
    let key = key.trim();
    let raw = raw.trim();
    // Parse the value as TOML (numbers, booleans, arrays); fall back to a bare string.
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(Error::input(format!("--set {spec}: empty key segment in `{key}`")));
    }
    let mut table = root;
    for p in &parts[..parts.len() - 1] {
        let entry = table.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| Error::input(format!("--set {spec}: `{p}` is not a table")))?;
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Parses TOML `text` (with `--set key=value` overrides) into a config
/// struct; errors name `origin`, the key, and `example` (a shipped config
/// listing every key).
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    overrides: &[String],
    example: &str,
) -> Result<T> {
    let mut value: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Error::input(format!("{origin}: not valid TOML: {}", one_line(&e.to_string())))
    })?;
    for o in overrides {
        apply_override(&mut value, o)?;
    }
    serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
        let path = e.path().to_string();
        Error::input(format!(
            "{origin}: key `{path}`: {} (see {example} for every key and its default)",
            plain_types(&one_line(&e.inner().to_string()))
        ))
    })
}

/// Serde's Rust type names in words a config author knows.
fn plain_types(s: &str) -> String {
    s.replace("expected usize", "expected a non-negative integer")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected f64", "expected a number")
        .replace("expected i64", "expected an integer")
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
