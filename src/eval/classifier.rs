//! Training the feature network (`lockstep classifier`): a small CNN with a
//! softmax cross-entropy on the Fashion-MNIST training split, Adam with a
//! cosine learning-rate decay, random flips and shifts, checked on the test
//! split after every epoch.  Deterministic: the batches, the augmentations
//! and the initialisation are keyed by the seed, and each batch's gradient
//! is summed over fixed chunks in order, whatever the thread count.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::features::{self, FeatureNet, SIDE};
use crate::config::{OptimizerConfig, OptimizerKind, Split, FASHION_MNIST_DIR};
use crate::data::{idx, ImageSet, Permutation};
use crate::error::{Error, Result};
use crate::gan::optim::{Direction, Optimizer};
use crate::nn::{Network, Workspace};
use crate::rng::{Purpose, Stream};

/// `configs/fashion-mnist-classifier.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierConfig {
    pub name: String,
    /// The folder of Fashion-MNIST's IDX files (default: Debian's).
    pub data_path: Option<String>,
    /// The layers, ending in `linear K` (K classes); the layer before it gives the features.
    pub layers: Vec<String>,
    /// Gain of the orthogonal initialisation.
    pub init_gain: f64,
    pub epochs: usize,
    pub batch: usize,
    /// Peak learning rate of Adam, decayed to 0 along a cosine over the run.
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub seed: u64,
    /// Flip each training image left-right with probability 1/2.
    pub flip: bool,
    /// Shift each training image by up to this many pixels in x and y.
    pub shift: usize,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            name: "fashion-mnist-classifier".into(),
            data_path: None,
            layers: [
                "conv 32 4 2 1",
                "leaky_relu 0.1",
                "conv 64 4 2 1",
                "leaky_relu 0.1",
                "flatten",
                "linear 128",
                "leaky_relu 0.1",
                "linear 10",
            ]
            .map(String::from)
            .to_vec(),
            init_gain: 1.0,
            epochs: 12,
            batch: 128,
            lr: 2e-3,
            beta1: 0.9,
            beta2: 0.999,
            seed: 0,
            flip: true,
            shift: 2,
        }
    }
}

/// Rows per chunk of a batch (one thread's share, a fixed summation unit).
const CHUNK: usize = 32;

impl ClassifierConfig {
    /// Reads and checks a classifier config.
    pub fn load(path: &Path, overrides: &[String]) -> Result<ClassifierConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::input(format!("{}: cannot read config: {e}", path.display())))?;
        let origin = path.display().to_string();
        let cfg: ClassifierConfig =
            crate::config::parse_toml(&text, &origin, overrides, "configs/fashion-mnist-classifier.toml")?;
        let key = |k: &str, m: String| Error::input(format!("{origin}: key `{k}`: {m}"));
        features::build(&cfg.layers).map_err(|m| key("layers", m))?;
        if cfg.epochs == 0 {
            return Err(key("epochs", "must be at least 1".into()));
        }
        if cfg.batch == 0 || cfg.batch > 65536 {
            return Err(key("batch", format!("must be 1..=65536, got {}", cfg.batch)));
        }
        if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
            return Err(key("lr", format!("must be a finite number > 0, got {}", cfg.lr)));
        }
        for (k, b) in [("beta1", cfg.beta1), ("beta2", cfg.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(key(k, format!("must be in [0, 1), got {b}")));
            }
        }
        if !(cfg.init_gain.is_finite() && cfg.init_gain > 0.0) {
            return Err(key("init_gain", format!("must be a finite number > 0, got {}", cfg.init_gain)));
        }
        if cfg.shift >= SIDE / 2 {
            return Err(key("shift", format!("must be below {}, got {}", SIDE / 2, cfg.shift)));
        }
        Ok(cfg)
    }
}

/// Softmax cross-entropy of `logits` (`rows × k`) against `labels`: writes
/// dL/dlogits × `scale` into `dlogits` and returns the summed loss and the
/// number of rows whose argmax is their label.
pub fn softmax_cross_entropy(logits: &[f32], labels: &[u8], k: usize, scale: f32, dlogits: &mut [f32]) -> (f64, usize) {
    let mut loss = 0.0f64;
    let mut correct = 0;
    for ((z, &y), d) in logits.chunks_exact(k).zip(labels).zip(dlogits.chunks_exact_mut(k)) {
        let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let sum: f64 = z.iter().map(|&v| ((v - m) as f64).exp()).sum();
        let log_sum = sum.ln() + m as f64;
        loss += log_sum - z[y as usize] as f64;
        for (j, (dj, &zj)) in d.iter_mut().zip(z).enumerate() {
            let p = ((zj as f64 - log_sum).exp()) as f32;
            *dj = scale * (p - if j == y as usize { 1.0 } else { 0.0 });
        }
        correct += usize::from(features::argmax(z) == y as usize);
    }
    (loss, correct)
}

/// Writes training image `i` of `set` into `out` (28×28), flipped and
/// shifted as the key (seed, epoch, position j) says.
fn augmented(set: &ImageSet, cfg: &ClassifierConfig, aug: &Stream, i: usize, j: usize, out: &mut [f32]) {
    let mut plain = [0.0f32; SIDE * SIDE];
    set.write_sample(i, &mut plain);
    let w = aug.words(j as u32, 0);
    let flip = cfg.flip && w[0] & 1 == 1;
    let s = cfg.shift as i64;
    let span = (2 * s + 1) as u64;
    let (dx, dy) = ((w[1] as u64 % span) as i64 - s, (w[2] as u64 % span) as i64 - s);
    for y in 0..SIDE as i64 {
        for x in 0..SIDE as i64 {
            let (sy, mut sx) = (y - dy, x - dx);
            if flip {
                sx = SIDE as i64 - 1 - sx;
            }
            let inside = (0..SIDE as i64).contains(&sx) && (0..SIDE as i64).contains(&sy);
            out[(y * SIDE as i64 + x) as usize] = if inside { plain[(sy * SIDE as i64 + sx) as usize] } else { -1.0 };
        }
    }
}

/// One chunk's buffers.
struct Slot {
    ws: Workspace<f32>,
    x: Vec<f32>,
    labels: Vec<u8>,
    dlogits: Vec<f32>,
    grad: Vec<f32>,
    loss: f64,
    correct: usize,
}

/// The fraction of `set`'s images that `net` (parameters `p`) classifies as labelled.
pub fn accuracy(net: &FeatureNet, set: &ImageSet) -> Result<f64> {
    let mut x = vec![0.0f32; set.len() * SIDE * SIDE];
    for (i, o) in x.chunks_exact_mut(SIDE * SIDE).enumerate() {
        set.write_sample(i, o);
    }
    let e = net.embed(&x, crate::nn::Shape::new(1, SIDE, SIDE))?;
    let labels = set.labels().ok_or_else(|| Error::input("the test images have no labels"))?;
    Ok(e.classes.iter().zip(labels).filter(|(a, b)| a == b).count() as f64 / set.len() as f64)
}

/// Trains the classifier `cfg` describes and writes it to `out`; returns a
/// summary (test accuracy, digest, time).  `quiet`: no progress bar.
pub fn train(cfg: &ClassifierConfig, out: &Path, quiet: bool) -> Result<serde_json::Value> {
    use rayon::prelude::*;
    let started = Instant::now();
    let dir = Path::new(cfg.data_path.as_deref().unwrap_or(FASHION_MNIST_DIR));
    let train_set = idx::fashion_mnist(dir, Split::Train, 0)?;
    let test_set = idx::fashion_mnist(dir, Split::Test, 0)?;
    let labels = train_set.labels().ok_or_else(|| Error::input("the training images have no labels"))?.to_vec();
    let net: Network = features::build(&cfg.layers).map_err(Error::input)?;
    let k = net.output();
    let mut params = crate::nn::init::orthogonal(&net, cfg.init_gain, cfg.seed, 2);
    let oc = OptimizerConfig {
        kind: OptimizerKind::Adam,
        lr: cfg.lr,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        ..Default::default()
    };
    let mut opt = Optimizer::new(&oc, cfg.lr, net.n_params, Direction::Descend);
    let n = train_set.len();
    let batches = n.div_ceil(cfg.batch);
    let total = (cfg.epochs * batches) as u64;
    let slots: Vec<Mutex<Slot>> = (0..cfg.batch.div_ceil(CHUNK))
        .map(|_| {
            Mutex::new(Slot {
                ws: Workspace::new(&net, CHUNK),
                x: vec![0.0; CHUNK * SIDE * SIDE],
                labels: vec![0; CHUNK],
                dlogits: vec![0.0; CHUNK * k],
                grad: vec![0.0; net.n_params],
                loss: 0.0,
                correct: 0,
            })
        })
        .collect();
    let mut grad = vec![0.0f32; net.n_params];
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} batches  eta {eta}  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut epochs = Vec::new();
    let mut fnet = FeatureNet { net: net.clone(), params: Vec::new(), digest: String::new(), meta: Default::default() };
    for epoch in 0..cfg.epochs {
        let perm = Permutation::new(cfg.seed, epoch as u64, n);
        let aug = Stream::new(cfg.seed, Purpose::Augment, epoch as u64);
        let (mut loss, mut correct) = (0.0f64, 0usize);
        for b in 0..batches {
            let start = b * cfg.batch;
            let rows = cfg.batch.min(n - start);
            let scale = 1.0 / rows as f32;
            let t = (epoch * batches + b) as f64 / total as f64;
            opt.lr = cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
            let p = &params;
            slots.par_iter().enumerate().for_each(|(c, slot)| {
                let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
                let s = &mut *s;
                let lo = (c * CHUNK).min(rows);
                let m = (rows - lo).min(CHUNK);
                (s.loss, s.correct) = (0.0, 0);
                if m == 0 {
                    return;
                }
                for r in 0..m {
                    let j = start + lo + r;
                    let i = perm.get(j);
                    augmented(&train_set, cfg, &aug, i, j, &mut s.x[r * SIDE * SIDE..][..SIDE * SIDE]);
                    s.labels[r] = labels[i];
                }
                net.forward(p, &s.x, &mut s.ws, m);
                let logits = net.output_of(&s.ws, 0..m);
                (s.loss, s.correct) = softmax_cross_entropy(logits, &s.labels[..m], k, scale, &mut s.dlogits);
                net.backward(p, &s.x, &mut s.ws, 0..m, &s.dlogits, Some(&mut s.grad), None);
            });
            // The chunks' gradients in chunk order.
            grad.fill(0.0);
            for (c, slot) in slots.iter().enumerate() {
                if c * CHUNK >= rows {
                    break;
                }
                let s = slot.lock().unwrap_or_else(|e| e.into_inner());
                for (g, &v) in grad.iter_mut().zip(&s.grad) {
                    *g += v;
                }
                loss += s.loss;
                correct += s.correct;
            }
            if grad.iter().any(|g| !g.is_finite()) {
                return Err(Error::runtime(format!(
                    "epoch {epoch} batch {b}: the gradient is not finite; lower lr (now {})",
                    cfg.lr
                )));
            }
            opt.step(&mut params, &grad);
            bar.inc(1);
            if b % 20 == 0 {
                let seen = (start + rows) as f64;
                bar.set_message(format!(
                    "epoch {}/{}  loss {:.4}  train acc {:.3}",
                    epoch + 1,
                    cfg.epochs,
                    loss / seen,
                    correct as f64 / seen
                ));
            }
        }
        fnet.params.clone_from(&params);
        let test_acc = accuracy(&fnet, &test_set)?;
        let line = json!({
            "epoch": epoch + 1,
            "loss": loss / n as f64,
            "train_accuracy": correct as f64 / n as f64,
            "test_accuracy": test_acc,
            "seconds": started.elapsed().as_secs_f64(),
        });
        if !quiet {
            let say = |m: String| if bar.is_hidden() { eprintln!("lockstep: {m}") } else { bar.println(m) };
            say(format!(
                "epoch {}/{}  loss {:.4}  train acc {:.4}  test acc {:.4}  {:.0} s",
                epoch + 1,
                cfg.epochs,
                loss / n as f64,
                correct as f64 / n as f64,
                test_acc,
                started.elapsed().as_secs_f64()
            ));
        }
        epochs.push(line);
    }
    bar.finish_and_clear();
    let test_accuracy = epochs.last().and_then(|e| e["test_accuracy"].as_f64()).unwrap_or(0.0);
    let meta = [
        ("test_accuracy", format!("{test_accuracy:.6}")),
        ("train_digest", crate::data::Dataset::digest(&train_set)),
        ("test_digest", crate::data::Dataset::digest(&test_set)),
        ("config", toml::to_string(cfg).expect("toml")),
    ];
    let bytes = FeatureNet::to_bytes(&net, &cfg.layers, &params, &meta)?;
    crate::fsutil::write_atomic(out, &bytes)?;
    Ok(json!({
        "out": out.display().to_string(),
        "sha256": features::sha256_hex(&bytes),
        "bytes": bytes.len(),
        "parameters": net.n_params,
        "test_accuracy": test_accuracy,
        "test_images": test_set.len(),
        "train_images": n,
        "wall_seconds": started.elapsed().as_secs_f64(),
        "epochs": epochs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_and_its_gradient() {
        // Two rows of 3 classes; the gradient against central differences.
        let z = [0.5f32, -1.0, 2.0, 0.1, 0.2, -0.3];
        let y = [2u8, 0];
        let mut d = [0.0f32; 6];
        let (loss, correct) = softmax_cross_entropy(&z, &y, 3, 1.0, &mut d);
        assert_eq!(correct, 1);
        let direct: f64 = [(0usize, 2usize), (1, 0)]
            .iter()
            .map(|&(r, c)| {
                let row = &z[r * 3..r * 3 + 3];
                let s: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
                s.ln() - row[c] as f64
            })
            .sum();
        assert!((loss - direct).abs() < 1e-6, "{loss} vs {direct}");
        for i in 0..6 {
            let h = 1e-3f32;
            let (mut zp, mut zm) = (z, z);
            zp[i] += h;
            zm[i] -= h;
            let mut scratch = [0.0f32; 6];
            let lp = softmax_cross_entropy(&zp, &y, 3, 1.0, &mut scratch).0;
            let lm = softmax_cross_entropy(&zm, &y, 3, 1.0, &mut scratch).0;
            let fd = (lp - lm) / (2.0 * h as f64);
            assert!((fd - d[i] as f64).abs() < 1e-3, "logit {i}: {fd} vs {}", d[i]);
        }
        // Each row's gradient sums to 0 (softmax minus a one-hot).
        assert!(d[..3].iter().sum::<f32>().abs() < 1e-6 && d[3..].iter().sum::<f32>().abs() < 1e-6);
    }

    #[test]
    fn config_errors_name_the_key() {
        let dir = std::env::temp_dir().join(format!("lockstep-clf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        for (text, key) in [
            ("epochs = 0", "epochs"),
            ("lr = -1.0", "lr"),
            ("layers = [\"conv 8 4 2 1\", \"linear 10\"]", "layers"),
            ("layers = [\"conv 8 40 2 1\", \"flatten\", \"linear 10\"]", "layers"),
            ("shift = 20", "shift"),
            ("batchsize = 3", "batchsize"),
        ] {
            std::fs::write(&f, text).unwrap();
            let e = ClassifierConfig::load(&f, &[]).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")) && e.contains("c.toml"), "{text}: {e}");
        }
        std::fs::write(&f, "epochs = 2").unwrap();
        assert_eq!(ClassifierConfig::load(&f, &[]).unwrap().epochs, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
