//! The feature network image scores are computed in: a small CNN classifier
//! of 28×28 Fashion-MNIST images that lockstep trains itself (`lockstep
//! classifier`, eval::classifier) and ships in `assets/`, embedded in the
//! binary and checked against its SHA-256 when loaded.  Its penultimate
//! layer's output (the input of its last layer) is the feature vector;
//! the argmax of its last layer the class.  A multi-channel image (e.g.
//! Stacked-Fashion-MNIST) is one 28×28 image per channel: its features are
//! the channels' features side by side and it has one class per channel.
//! Padded images are cropped back to their centre 28×28.

use std::collections::HashMap;
use std::sync::Arc;

use safetensors::tensor::{Dtype, TensorView};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::nn::{LayerSpec, Network, Shape, Workspace};

/// The `format` metadata of a feature-network file.
pub const FORMAT: &str = "lockstep-feature-net-1";
/// Where the shipped feature network lives in the repository.
pub const BUNDLED_PATH: &str = "assets/fmnist-classifier.safetensors";
/// The shipped file's bytes and SHA-256 (re-create it with the command in README.md).
const BUNDLED: &[u8] = include_bytes!("../../assets/fmnist-classifier.safetensors");
pub const BUNDLED_SHA256: &str = "a2c14afc659c045bee3b90dafe63d2ace5fe7d39c21755268a08f616b835a146";
/// The side of the images the network reads.
pub const SIDE: usize = 28;

/// A loaded feature network.
#[derive(Debug, Clone)]
pub struct FeatureNet {
    pub net: Network,
    pub params: Vec<f32>,
    /// Hex SHA-256 of the file it was loaded from.
    pub digest: String,
    /// The metadata stored with it (test accuracy, the training config, ...).
    pub meta: HashMap<String, String>,
}

/// Features and classes of a set of images.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// Images embedded.
    pub n: usize,
    /// Values per image (channels × the network's feature width).
    pub dim: usize,
    /// `n × dim`, row-major.
    pub features: Vec<f32>,
    /// Channels per image.
    pub channels: usize,
    /// `n × channels` classes.
    pub classes: Vec<u8>,
}

impl FeatureNet {
    /// The shipped network, checked against its digest (loaded once per process).
    pub fn bundled() -> Result<Arc<FeatureNet>> {
        static NET: std::sync::OnceLock<std::result::Result<Arc<FeatureNet>, String>> = std::sync::OnceLock::new();
        NET.get_or_init(|| {
            let got = sha256_hex(BUNDLED);
            if got != BUNDLED_SHA256 {
                return Err(format!(
                    "the feature network built into this binary ({BUNDLED_PATH}) has SHA-256 {got}, expected {BUNDLED_SHA256}; rebuild from a clean checkout"
                ));
            }
            FeatureNet::parse(BUNDLED, BUNDLED_PATH, got).map(Arc::new).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(Error::runtime)
    }

    /// Parses a feature-network file's bytes (as `lockstep classifier --out`
    /// writes them); `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<FeatureNet> {
        FeatureNet::parse(bytes, origin, sha256_hex(bytes))
    }

    /// [`FeatureNet::from_bytes`] with the bytes' SHA-256 already known.
    fn parse(bytes: &[u8], origin: &str, digest: String) -> Result<FeatureNet> {
        let bad = |m: String| Error::input(format!("{origin}: not a valid lockstep feature network: {m}"));
        let (st, meta) = crate::checkpoint::open_verified(bytes).map_err(bad)?;
        let get = |k: &str| meta.get(k).ok_or_else(|| bad(format!("metadata `{k}` missing")));
        if get("format")? != FORMAT {
            return Err(bad(format!("format `{}`, expected `{FORMAT}`", get("format")?)));
        }
        let layers: Vec<String> =
            serde_json::from_str(get("layers")?).map_err(|e| bad(format!("metadata `layers`: {e}")))?;
        let net = build(&layers).map_err(bad)?;
        let mut params = vec![0.0f32; net.n_params];
        for t in net.tensors() {
            let v = st.tensor(&t.name).map_err(|_| bad(format!("tensor `{}` missing", t.name)))?;
            if v.dtype() != Dtype::F32 || v.shape() != t.shape.as_slice() {
                return Err(bad(format!(
                    "tensor `{}` is {:?} {:?}, expected F32 {:?}",
                    t.name,
                    v.dtype(),
                    v.shape(),
                    t.shape
                )));
            }
            crate::f32le::decode(v.data(), &mut params[t.range.clone()], &t.name).map_err(bad)?;
        }
        if params.iter().any(|v| !v.is_finite()) {
            return Err(bad("parameters contain non-finite values".into()));
        }
        Ok(FeatureNet { net, params, digest, meta })
    }

    /// The file's bytes for `net` with parameters `params` and extra metadata.
    pub fn to_bytes(net: &Network, layers: &[String], params: &[f32], meta: &[(&str, String)]) -> Result<Vec<u8>> {
        let owned: Vec<(String, Vec<usize>, Vec<u8>)> =
            net.tensors().into_iter().map(|t| (t.name, t.shape, crate::f32le::encode(&params[t.range]))).collect();
        let views: Vec<(String, TensorView)> = owned
            .iter()
            .map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).expect("sizes match")))
            .collect();
        let mut md: HashMap<String, String> = meta.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        md.insert("format".into(), FORMAT.into());
        md.insert("layers".into(), serde_json::to_string(layers).expect("json"));
        md.insert("input".into(), format!("1,{SIDE},{SIDE}"));
        crate::checkpoint::serialize(views, md)
            .map_err(|e| Error::runtime(format!("cannot serialize the feature network: {e}")))
    }

    /// The network's feature width (its last layer's input).
    pub fn width(&self) -> usize {
        self.net.width_in(self.net.layers.len() - 1)
    }

    /// The number of classes (its last layer's output).
    pub fn classes(&self) -> usize {
        self.net.output()
    }

    /// What outputs name the network by: its file and the start of its digest.
    pub fn name(&self) -> String {
        format!("{BUNDLED_PATH} sha256:{}", &self.digest[..16])
    }

    /// Whether images of `shape` can be embedded: C channels of 28×28, padded or not.
    pub fn fits(shape: Shape) -> std::result::Result<(), String> {
        if shape.h == shape.w && shape.h >= SIDE && (shape.h - SIDE) % 2 == 0 && shape.c >= 1 {
            Ok(())
        } else {
            Err(format!(
                "image scores need {SIDE}×{SIDE} images (padded or not, any channel count), but these are {shape}"
            ))
        }
    }

    /// Features and classes of `images` (`n × shape.len()` values in [-1, 1]),
    /// in parallel over fixed blocks (the result does not depend on the thread count).
    pub fn embed(&self, images: &[f32], shape: Shape) -> Result<Embedding> {
        use rayon::prelude::*;
        Self::fits(shape).map_err(Error::input)?;
        assert_eq!(images.len() % shape.len(), 0, "FeatureNet::embed: not a whole number of {shape} images");
        const BLOCK: usize = 128;
        let n = images.len() / shape.len();
        let (c, width, last) = (shape.c, self.width(), self.net.layers.len() - 1);
        let pad = (shape.h - SIDE) / 2;
        let plane = SIDE * SIDE;
        let mut features = vec![0.0f32; n * c * width];
        let mut classes = vec![0u8; n * c];
        features.par_chunks_mut(BLOCK * c * width).zip(classes.par_chunks_mut(BLOCK * c)).enumerate().for_each(
            |(b, (f, k))| {
                let rows = k.len();
                let mut ws = Workspace::new(&self.net, rows);
                let mut x = vec![0.0f32; rows * plane];
                for (r, xr) in x.chunks_exact_mut(plane).enumerate() {
                    // Row r is channel r % c of image b·BLOCK + r / c, cropped.
                    let img = &images[(b * BLOCK + r / c) * shape.len()..][..shape.len()];
                    let src = &img[(r % c) * shape.h * shape.w..][..shape.h * shape.w];
                    for y in 0..SIDE {
                        xr[y * SIDE..][..SIDE].copy_from_slice(&src[(y + pad) * shape.w + pad..][..SIDE]);
                    }
                }
                self.net.forward(&self.params, &x, &mut ws, rows);
                f.copy_from_slice(self.net.layer_output(&ws, last - 1, 0..rows));
                for (kr, logits) in k.iter_mut().zip(self.net.output_of(&ws, 0..rows).chunks_exact(self.classes())) {
                    *kr = argmax(logits) as u8;
                }
            },
        );
        Ok(Embedding { n, dim: c * width, features, channels: c, classes })
    }
}

/// The classifier network of `layers` on 1×28×28 inputs; its last layer
/// must be a `linear` (the logits) with a parameter-free layer before it.
pub fn build(layers: &[String]) -> std::result::Result<Network, String> {
    let specs = LayerSpec::parse_all(layers)?;
    let net = Network::build("classifier", specs, Shape::new(1, SIDE, SIDE))?;
    let l = net.layers.len();
    if l < 2 || !matches!(net.layers[l - 1], LayerSpec::Linear { .. }) || !net.output_shape().is_flat() {
        return Err("the classifier must end in a `linear` layer (its logits), after its feature layer".into());
    }
    if net.output() < 2 || net.output() > 256 {
        return Err(format!("the classifier has {} classes, expected 2..=256", net.output()));
    }
    Ok(net)
}

/// The index of the largest value (the first of equals).
pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |b, (i, &x)| if x > v[b] { i } else { b })
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::data::hex(&Sha256::digest(bytes))
}
