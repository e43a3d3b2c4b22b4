//! Real data behind one interface, `Dataset`: mixtures of Gaussians (a ring
//! or a grid of modes) and image datasets.  Every draw is addressed by
//! (seed, step, draw, global sample index), so sample i of a step is the same
//! whoever draws it and however many workers there are.

pub mod folder;
pub mod idx;
pub mod images;
pub mod mixture;
pub mod perm;
pub mod stacked;

use std::path::Path;
use std::sync::Arc;

use crate::config::{DataConfig, DataKind, FASHION_MNIST_DIR};
use crate::error::{Error, Result};
use crate::nn::Shape;

pub use images::ImageSet;
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
    /// Distinct samples per epoch (images: their count; None for a mixture's endless draws).
    fn epoch_len(&self) -> Option<usize> {
        None
    }
    /// The mixture, when this is one (its scorer and the CUDA kernel need the centres).
    fn mixture(&self) -> Option<&Mixture> {
        None
    }
}

/// Builds the dataset `cfg` describes (a validated config): a mixture, or
/// the images of fashion-mnist or of a folder, loaded whole.
///
/// A process keeps one copy of each dataset while anything holds it: the
/// in-process workers, the coordinator and the scorer of a local run share
/// it rather than loading it once each.
pub fn open(cfg: &DataConfig) -> Result<Arc<dyn Dataset>> {
    type Cache = std::sync::Mutex<Vec<(DataConfig, std::sync::Weak<dyn Dataset>)>>;
    static OPEN: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let mut cache = OPEN.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    cache.retain(|(_, w)| w.strong_count() > 0);
    if let Some(d) = cache.iter().find(|(c, _)| c == cfg).and_then(|(_, w)| w.upgrade()) {
        return Ok(d);
    }
    let d: Arc<dyn Dataset> = match cfg.kind {
        DataKind::Ring | DataKind::Grid => Arc::new(Mixture::from_config(cfg)),
        DataKind::FashionMnist => Arc::new(idx::fashion_mnist(fashion_dir(cfg), cfg.split, cfg.pad)?),
        DataKind::ImageFolder => Arc::new(folder::load(folder_dir(cfg)?, cfg.pad)?),
        DataKind::StackedFashionMnist => {
            Arc::new(stacked::Stacked::new(Arc::new(idx::fashion_mnist(fashion_dir(cfg), cfg.split, cfg.pad)?)))
        }
    };
    cache.push((cfg.clone(), Arc::downgrade(&d)));
    Ok(d)
}

/// The shape of one sample of the dataset `cfg` describes, without loading
/// it: flat 2 for a mixture, 1×(28+2·pad)×(28+2·pad) for fashion-mnist, and
/// for an image folder its first PNG's (in file-name order), padded.
pub fn sample_shape(cfg: &DataConfig) -> Result<Shape> {
    let padded = |s: Shape| Shape::new(s.c, s.h + 2 * cfg.pad, s.w + 2 * cfg.pad);
    Ok(match cfg.kind {
        DataKind::Ring | DataKind::Grid => Shape::flat(2),
        DataKind::FashionMnist => padded(Shape::new(1, idx::FASHION_SIDE, idx::FASHION_SIDE)),
        DataKind::StackedFashionMnist => padded(Shape::new(stacked::CHANNELS, idx::FASHION_SIDE, idx::FASHION_SIDE)),
        DataKind::ImageFolder => {
            let files = folder::png_files(folder_dir(cfg)?)?;
            padded(folder::png_shape(&files[0])?)
        }
    })
}

/// fashion-mnist's folder (also stacked-fashion-mnist's): `data.path`, else Debian's.
fn fashion_dir(cfg: &DataConfig) -> &Path {
    Path::new(cfg.path.as_deref().unwrap_or(FASHION_MNIST_DIR))
}

/// image-folder's folder: `data.path`, which it needs.
fn folder_dir(cfg: &DataConfig) -> Result<&Path> {
    cfg.path
        .as_deref()
        .map(Path::new)
        .ok_or_else(|| Error::input("data.path: image-folder needs data.path = \"DIR\" (a folder of PNG files)"))
}

/// Lowercase hex of a digest's bytes (the datasets' `digest`).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Temporary folders for the loaders' tests.

    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh folder under the system's temp dir, removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("lockstep-data-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Split};

    fn data_of(toml: &str) -> crate::Result<DataConfig> {
        // Only the data table: the rest of a config is checked against the mixture's width 2.
        let cfg: Config = toml::from_str(toml).map_err(|e| Error::input(e.to_string()))?;
        cfg.data.validate().map_err(|(k, m)| Error::input(format!("key `{k}`: {m}")))?;
        Ok(cfg.data)
    }

    fn err(toml: &str) -> String {
        data_of(toml).unwrap_err().to_string()
    }

    #[test]
    fn data_keys_parse_and_validate() {
        let d = data_of("[data]\nkind = \"fashion-mnist\"\nsplit = \"test\"\npad = 2").unwrap();
        assert_eq!((d.kind, d.split, d.pad, d.path.as_deref()), (DataKind::FashionMnist, Split::Test, 2, None));
        assert_eq!(sample_shape(&d).unwrap(), Shape::new(1, 32, 32));
        let d = data_of("[data]\nkind = \"image-folder\"\npath = \"x\"").unwrap();
        assert_eq!((d.kind, d.split, d.path.as_deref()), (DataKind::ImageFolder, Split::Train, Some("x")));
        assert_eq!(sample_shape(&data_of("[data]\nkind = \"grid\"").unwrap()).unwrap(), Shape::flat(2));
        // The resolved config round-trips through TOML with the new keys.
        let cfg = Config { data: d.clone(), ..Config::default() };
        let back: Config = toml::from_str(&cfg.to_toml()).unwrap();
        assert_eq!(back.data, d);

        let e = err("[data]\nkind = \"image-folder\"");
        assert!(e.contains("data.path") && e.contains("image-folder needs data.path = \"DIR\""), "{e}");
        let e = err("[data]\nkind = \"image-folder\"\npath = \"x\"\nsplit = \"test\"");
        assert!(e.contains("data.split") && e.contains("stacked-fashion-mnist only"), "{e}");
        let e = err("[data]\nkind = \"ring\"\npad = 2");
        assert!(e.contains("data.pad") && e.contains("\"ring\""), "{e}");
        let e = err("[data]\nkind = \"grid\"\npath = \"x\"");
        assert!(e.contains("data.path"), "{e}");
        let e = err("[data]\nkind = \"fashion-mnist\"\npad = 1000");
        assert!(e.contains("data.pad") && e.contains("at most"), "{e}");
        let e = err("[data]\nkind = \"fashion-mnist\"\nsplit = \"validation\"");
        assert!(e.contains("validation"), "{e}");
        let e = err("[data]\nkind = \"mnist\"");
        assert!(e.contains("mnist"), "{e}");
    }

    #[test]
    fn open_builds_every_kind_and_names_missing_folders() {
        let ring = open(&DataConfig::default()).unwrap();
        assert_eq!(ring.shape(), Shape::flat(2));
        assert!(ring.mixture().is_some());

        let cfg = DataConfig { kind: DataKind::ImageFolder, path: None, ..DataConfig::default() };
        let e = open(&cfg).unwrap_err();
        assert!(matches!(e, Error::Input(_)) && e.to_string().contains("data.path"), "{e}");
        let gone = std::env::temp_dir().join("lockstep-data-no-such-folder");
        let cfg = DataConfig { kind: DataKind::FashionMnist, path: Some(gone.display().to_string()), ..cfg };
        let e = open(&cfg).unwrap_err();
        assert!(matches!(e, Error::Input(_)), "{e}");
        assert!(e.to_string().contains("lockstep-data-no-such-folder"), "{e}");
        assert!(e.to_string().contains("apt-get install dataset-fashion-mnist"), "{e}");
        let cfg = DataConfig { kind: DataKind::ImageFolder, ..cfg };
        let e = sample_shape(&cfg).unwrap_err();
        assert!(matches!(e, Error::Input(_)) && e.to_string().contains("lockstep-data-no-such-folder"), "{e}");
    }
}
