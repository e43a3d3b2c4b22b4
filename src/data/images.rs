//! A set of same-sized images held as bytes, served as [-1, 1] floats: the
//! common form of fashion-mnist and an image folder.
//!
//! The pixels stay u8 (C planes of H×W per image, images one after another);
//! `fill` converts only the rows it is asked for, x = p / 127.5 − 1, with
//! `pad` pixels of background (−1) on each side.  Sample g of the run (g =
//! key.base + first + row) is image perm_e(g mod N) of epoch e = g / N, so
//! every epoch shows every image once, in an order keyed by (seed, epoch).

use sha2::{Digest, Sha256};

use super::{Dataset, DrawKey, Permutation};
use crate::config::DataKind;
use crate::error::{Error, Result};
use crate::nn::Shape;

/// Images of one shape, with optional labels.
pub struct ImageSet {
    kind: DataKind,
    /// What and where, for `describe` (e.g. "fashion-mnist train ... from DIR").
    source: String,
    /// The shape of one stored image (before padding).
    image: Shape,
    pad: usize,
    count: usize,
    pixels: Vec<u8>,
    labels: Option<Vec<u8>>,
    digest: String,
}

impl std::fmt::Debug for ImageSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageSet")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .field("image", &self.image)
            .field("pad", &self.pad)
            .field("count", &self.count)
            .field("labels", &self.labels.is_some())
            .field("digest", &self.digest)
            .finish()
    }
}

impl ImageSet {
    /// Wraps `pixels` (`count × image.len()` bytes, each image as C planes of
    /// H×W) and optional `labels` (one per image), and computes the digest.
    /// `source` says what and where for `describe`.
    pub fn new(
        kind: DataKind,
        source: String,
        image: Shape,
        pixels: Vec<u8>,
        labels: Option<Vec<u8>>,
        pad: usize,
    ) -> Result<ImageSet> {
        if image.is_empty() || pixels.is_empty() {
            return Err(Error::input(format!("{source}: no images (or images of no pixels)")));
        }
        if pixels.len() % image.len() != 0 {
            return Err(Error::runtime(format!(
                "{source}: {} bytes of pixels is not a whole number of {image} images",
                pixels.len()
            )));
        }
        let count = pixels.len() / image.len();
        if let Some(l) = &labels {
            if l.len() != count {
                return Err(Error::input(format!("{source}: {} labels for {count} images", l.len())));
            }
        }
        let digest = digest(kind, image, pad, count, &pixels, labels.as_deref());
        Ok(ImageSet { kind, source, image, pad, count, pixels, labels, digest })
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there is no image (never, for a loaded set).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// One label per image (fashion-mnist's classes, 0..10), when the data has them.
    pub fn labels(&self) -> Option<&[u8]> {
        self.labels.as_deref()
    }

    /// Image `i`'s bytes: C planes of H×W, unpadded.
    pub fn image_u8(&self, i: usize) -> &[u8] {
        let n = self.image.len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The shape of one stored image, before padding.
    pub fn image_shape(&self) -> Shape {
        self.image
    }

    /// Writes image `i` into `out` (`shape().len()` values): padded, in [-1, 1].
    pub fn write_sample(&self, i: usize, out: &mut [f32]) {
        let s = self.shape();
        assert_eq!(out.len(), s.len(), "ImageSet::write_sample: out has {} values, a sample {}", out.len(), s);
        let (p, h, w) = (self.pad, self.image.h, self.image.w);
        let src = self.image_u8(i);
        if p > 0 {
            out.fill(-1.0);
        }
        for c in 0..s.c {
            for y in 0..h {
                let from = &src[(c * h + y) * w..][..w];
                let to = &mut out[(c * s.h + y + p) * s.w + p..][..w];
                for (t, &v) in to.iter_mut().zip(from) {
                    *t = v as f32 / 127.5 - 1.0;
                }
            }
        }
    }
}

impl Dataset for ImageSet {
    fn shape(&self) -> Shape {
        Shape::new(self.image.c, self.image.h + 2 * self.pad, self.image.w + 2 * self.pad)
    }

    fn describe(&self) -> String {
        let padded = if self.pad > 0 { format!(" padded to {}", self.shape()) } else { String::new() };
        format!("{}: {} images of {}{padded}", self.source, self.count, self.image)
    }

    fn digest(&self) -> String {
        self.digest.clone()
    }

    fn epoch_len(&self) -> Option<usize> {
        Some(self.count)
    }

    fn fill(&self, key: &DrawKey, first: u64, out: &mut [f32]) {
        let len = self.shape().len();
        assert!(out.len() % len == 0, "ImageSet::fill: {} values is not a whole number of samples of {len}", out.len());
        let n = self.count as u64;
        let mut perm: Option<Permutation> = None;
        for (r, o) in out.chunks_exact_mut(len).enumerate() {
            let g = key.base.wrapping_add(first).wrapping_add(r as u64);
            let (epoch, j) = (g / n, (g % n) as usize);
            let p = match perm {
                Some(p) if p.epoch() == epoch => p,
                _ => *perm.insert(Permutation::new(key.seed, epoch, self.count)),
            };
            self.write_sample(p.get(j), o);
        }
    }
}

/// Hex SHA-256 of a canonical description: a version tag, the kind, the
/// stored shape, the padding, the count, the pixels and the labels (if any).
/// Where the files live and what they are called do not enter it.
fn digest(kind: DataKind, image: Shape, pad: usize, count: usize, pixels: &[u8], labels: Option<&[u8]>) -> String {
    let mut h = Sha256::new();
    h.update(b"lockstep images v1\0");
    h.update(kind.name().as_bytes());
    h.update(b"\0");
    for v in [image.c, image.h, image.w, pad, count] {
        h.update((v as u64).to_le_bytes());
    }
    h.update(pixels);
    match labels {
        Some(l) => {
            h.update([1u8]);
            h.update(l);
        }
        None => h.update([0u8]),
    }
    super::hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Purpose;

    /// n images of 1×3×2 whose pixels are 10·i + k (i the image, k the pixel).
    fn set(n: usize, pad: usize) -> ImageSet {
        let pixels = (0..n).flat_map(|i| (0..6).map(move |k| (10 * i + k) as u8)).collect();
        let labels = (0..n).map(|i| i as u8).collect();
        ImageSet::new(DataKind::FashionMnist, "test".into(), Shape::new(1, 3, 2), pixels, Some(labels), pad).unwrap()
    }

    fn key(seed: u64, base: u64) -> DrawKey {
        DrawKey { seed, step: 0, purpose: Purpose::Real, base }
    }

    /// Which image a filled (unpadded) sample is: its first pixel / 10.
    fn which(sample: &[f32]) -> usize {
        (((sample[0] + 1.0) * 127.5).round() as usize) / 10
    }

    #[test]
    fn values_padding_and_layout() {
        let s = set(3, 2);
        assert_eq!(s.shape(), Shape::new(1, 7, 6));
        let mut out = vec![0.0; 3 * 42];
        s.fill(&key(1, 0), 0, &mut out);
        for o in out.chunks(42) {
            assert!(o.iter().all(|v| (-1.0..=1.0).contains(v)));
            // Border rows and columns are background.
            for y in 0..7 {
                for x in 0..6 {
                    let inside = (2..5).contains(&y) && (2..4).contains(&x);
                    if !inside {
                        assert_eq!(o[y * 6 + x], -1.0, "({y}, {x})");
                    }
                }
            }
            let i = ((o[2 * 6 + 2] + 1.0) * 127.5).round() as usize / 10;
            for y in 0..3 {
                for x in 0..2 {
                    let want = (10 * i + y * 2 + x) as f32 / 127.5 - 1.0;
                    assert_eq!(o[(y + 2) * 6 + x + 2], want, "image {i} ({y}, {x})");
                }
            }
        }
        // The extremes map to -1 and 1 exactly.
        let s = ImageSet::new(DataKind::ImageFolder, "t".into(), Shape::new(1, 1, 2), vec![0, 255], None, 0).unwrap();
        let mut o = [0.0; 2];
        s.fill(&key(0, 0), 0, &mut o);
        assert_eq!(o, [-1.0, 1.0]);
        assert_eq!(s.labels(), None);
    }

    #[test]
    fn a_sample_depends_only_on_its_global_index() {
        let s = set(10, 0);
        let mut whole = vec![0.0; 64 * 6];
        s.fill(&key(5, 100), 0, &mut whole);
        let mut parts = vec![0.0; 64 * 6];
        for q in 0..4 {
            s.fill(&key(5, 100), 16 * q as u64, &mut parts[q * 16 * 6..(q + 1) * 16 * 6]);
        }
        assert_eq!(whole, parts);
        // Rows one at a time, and the same rows reached from another base.
        for r in 0..64 {
            let mut one = [0.0; 6];
            s.fill(&key(5, 90), 10 + r as u64, &mut one);
            assert_eq!(one[..], whole[r * 6..(r + 1) * 6], "row {r}");
        }
        let mut other = vec![0.0; 64 * 6];
        s.fill(&key(6, 100), 0, &mut other);
        assert_ne!(whole, other, "seeds 5 and 6 draw the same samples");
    }

    #[test]
    fn every_image_once_per_epoch() {
        let n = 7;
        let s = set(n, 1);
        let len = s.shape().len();
        let unpadded = |o: &[f32]| o[s.shape().w + 1];
        let mut out = vec![0.0; 5 * n * len];
        s.fill(&key(9, 0), 0, &mut out);
        let order: Vec<usize> = out.chunks(len).map(|o| which(&[unpadded(o)])).collect();
        for e in 0..5 {
            let mut seen: Vec<usize> = order[e * n..(e + 1) * n].to_vec();
            seen.sort();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "epoch {e}: {order:?}");
        }
        assert_ne!(order[..n], order[n..2 * n], "epochs 0 and 1 in the same order");
    }

    #[test]
    fn digest_follows_content_not_source() {
        let a = set(4, 0);
        let b = ImageSet::new(
            DataKind::FashionMnist,
            "elsewhere".into(),
            Shape::new(1, 3, 2),
            a.pixels.clone(),
            a.labels.clone(),
            0,
        )
        .unwrap();
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest().len(), 64);
        let mut px = a.pixels.clone();
        px[13] ^= 1;
        let c = ImageSet::new(DataKind::FashionMnist, "t".into(), Shape::new(1, 3, 2), px, a.labels.clone(), 0);
        assert_ne!(a.digest(), c.unwrap().digest(), "a changed pixel keeps the digest");
        let mut lb = a.labels.clone().unwrap();
        lb[0] = 9;
        let d = ImageSet::new(DataKind::FashionMnist, "t".into(), Shape::new(1, 3, 2), a.pixels.clone(), Some(lb), 0);
        assert_ne!(a.digest(), d.unwrap().digest(), "a changed label keeps the digest");
        let e = ImageSet::new(
            DataKind::FashionMnist,
            "t".into(),
            Shape::new(1, 2, 3),
            a.pixels.clone(),
            a.labels.clone(),
            0,
        );
        assert_ne!(a.digest(), e.unwrap().digest(), "another shape keeps the digest");
        assert_ne!(a.digest(), set(4, 2).digest(), "another padding keeps the digest");
    }

    #[test]
    fn image_u8_and_labels() {
        let s = set(3, 0);
        assert_eq!(s.len(), 3);
        assert_eq!(s.image_u8(2), &[20, 21, 22, 23, 24, 25]);
        assert_eq!(s.labels(), Some(&[0u8, 1, 2][..]));
        assert!(s.describe().contains("3 images of 1×3×2"), "{}", s.describe());
    }
}
