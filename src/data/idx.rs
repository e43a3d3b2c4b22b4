//! Fashion-MNIST from its IDX files, gzipped or not.
//!
//! An IDX file is a big-endian header (magic 0x00000803 and 3 dimensions for
//! images, 0x00000801 and 1 for labels) followed by exactly the bytes the
//! dimensions announce.  The reader streams the file (through gzip when it
//! starts with gzip's magic) straight into one byte buffer of that size, so
//! the peak memory is about the pixels themselves.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;

use super::ImageSet;
use crate::config::{DataKind, Split};
use crate::error::{Error, Result};
use crate::nn::Shape;

/// The magic number of an IDX file of u8 images (3 dimensions).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// The magic number of an IDX file of u8 labels (1 dimension).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// The side of a Fashion-MNIST image.
pub const FASHION_SIDE: usize = 28;
/// Fashion-MNIST's number of classes.
pub const FASHION_CLASSES: u8 = 10;

/// The fix for a missing file or folder.
const INSTALL: &str = "install Debian's package: apt-get install dataset-fashion-mnist \
                       (files in /usr/share/datasets/fashion-mnist/), or set data.path";

/// Images read from an IDX file: `count` images of `rows × cols` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows of each image.
    pub rows: usize,
    /// Columns of each image.
    pub cols: usize,
    /// The pixels, image after image, row after row.
    pub pixels: Vec<u8>,
}

/// Reads an IDX file of u8 images (magic 0x00000803).
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let (dims, pixels) = read_idx(path, IMAGES_MAGIC, "images")?;
    Ok(IdxImages { count: dims[0], rows: dims[1], cols: dims[2], pixels })
}

/// Reads an IDX file of u8 labels (magic 0x00000801).
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    Ok(read_idx(path, LABELS_MAGIC, "labels")?.1)
}

/// `dir/name`, else `dir/name.gz`; an error naming both and the fix when neither exists.
pub fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    if !dir.is_dir() {
        return Err(Error::input(format!("{}: no such folder of fashion-mnist files; {INSTALL}", dir.display())));
    }
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    for p in [&plain, &gz] {
        if p.is_file() {
            return Ok(p.clone());
        }
    }
    Err(Error::input(format!("{}[.gz]: no such file; {INSTALL}", plain.display())))
}

/// Loads a split of Fashion-MNIST from `dir` (the IDX files
/// `train-images-idx3-ubyte[.gz]` and `train-labels-idx1-ubyte[.gz]`, or
/// `t10k-...` for the test split): 28×28 grayscale images and labels 0..10.
pub fn fashion_mnist(dir: &Path, split: Split, pad: usize) -> Result<ImageSet> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read_images(&images_path)?;
    if (images.rows, images.cols) != (FASHION_SIDE, FASHION_SIDE) {
        return Err(Error::input(format!(
            "{}: images of {}×{}, but fashion-mnist's are {FASHION_SIDE}×{FASHION_SIDE}; point data.path at fashion-mnist's files",
            images_path.display(),
            images.rows,
            images.cols
        )));
    }
    if images.count == 0 {
        return Err(Error::input(format!("{}: the file holds no images", images_path.display())));
    }
    let labels = read_labels(&labels_path)?;
    if labels.len() != images.count {
        return Err(Error::input(format!(
            "{}: {} labels, but {} has {} images; both files must come from the same split",
            labels_path.display(),
            labels.len(),
            images_path.display(),
            images.count
        )));
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l >= FASHION_CLASSES) {
        return Err(Error::input(format!(
            "{}: label {l} of image {i} is not a class 0..{FASHION_CLASSES}; the file is corrupt",
            labels_path.display()
        )));
    }
    ImageSet::new(
        DataKind::FashionMnist,
        format!("fashion-mnist {} from {}", split.name(), dir.display()),
        Shape::new(1, images.rows, images.cols),
        images.pixels,
        Some(labels),
        pad,
    )
}

/// Reads an IDX file of u8 data with `magic`: its dimensions and its bytes.
/// `what` ("images", "labels") words the errors.
fn read_idx(path: &Path, magic: u32, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Error::input(format!("{shown}: no such file; {INSTALL}")),
        _ => Error::io(path, "open", e),
    })?;
    let file_len = file.metadata().map_err(|e| Error::io(path, "read the size of", e))?.len();
    let mut buffered = BufReader::with_capacity(1 << 16, file);
    let head = buffered.fill_buf().map_err(|e| Error::io(path, "read", e))?;
    let gzipped = head.starts_with(&[0x1f, 0x8b]);
    let mut r: Box<dyn Read> = if gzipped { Box::new(MultiGzDecoder::new(buffered)) } else { Box::new(buffered) };
    // Errors past the first bytes: in a gzip stream, corruption; in a plain file, I/O.
    let read_err = |e: std::io::Error| {
        if gzipped && matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::InvalidData | ErrorKind::UnexpectedEof) {
            Error::input(format!("{shown}: corrupt gzip stream ({e}); re-download the file or reinstall the package"))
        } else {
            Error::io(path, "read", e)
        }
    };

    let ndims = if magic == IMAGES_MAGIC { 3 } else { 1 };
    let mut header = vec![0u8; 4 * (1 + ndims)];
    let got = read_full(&mut r, &mut header).map_err(read_err)?;
    if got >= 4 {
        let m = u32::from_be_bytes(header[..4].try_into().unwrap());
        if m != magic {
            let hint = match m {
                IMAGES_MAGIC => " (this is an images file)",
                LABELS_MAGIC => " (this is a labels file)",
                _ => " (not an IDX file)",
            };
            return Err(Error::input(format!(
                "{shown}: wrong magic number 0x{m:08x}{hint}, expected 0x{magic:08x} for IDX {what}"
            )));
        }
    }
    if got < header.len() {
        return Err(Error::input(format!(
            "{shown}: truncated: {got} bytes, shorter than the {}-byte header of IDX {what}",
            header.len()
        )));
    }
    let dims: Vec<usize> = header[4..].chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap()) as usize).collect();
    let dims_text = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×");
    let expected = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)).ok_or_else(|| {
        Error::input(format!("{shown}: the header's dimensions {dims_text} overflow; the file is corrupt"))
    })?;
    let announced = match dims[..] {
        [n, rows, cols] => format!("the header announces {n} images of {rows}×{cols} = {expected} bytes"),
        _ => format!("the header announces {dims_text} {what} = {expected} bytes"),
    };
    let bytes = |n: u64| if n == 1 { "1 byte".to_string() } else { format!("{n} bytes") };
    if !gzipped {
        let body = file_len.saturating_sub(header.len() as u64);
        if body < expected {
            return Err(Error::input(format!("{shown}: truncated: {announced}, the file has {}", bytes(body))));
        }
        if body > expected {
            return Err(Error::input(format!(
                "{shown}: {} too many: {announced}; the file is corrupt or not IDX {what}",
                bytes(body - expected)
            )));
        }
    }
    // Exact capacity for a plain file (its size is checked); for gzip, grow
    // as the bytes arrive, from at most 64 MiB (Fashion-MNIST's 47 MB fit),
    // so a corrupt header cannot ask for a huge buffer.
    let cap = if gzipped { expected.min(1 << 26) } else { expected };
    let mut data = Vec::with_capacity(cap as usize);
    r.by_ref().take(expected).read_to_end(&mut data).map_err(read_err)?;
    if (data.len() as u64) < expected {
        return Err(Error::input(format!(
            "{shown}: truncated: {announced}, the file has {}",
            bytes(data.len() as u64)
        )));
    }
    let extra = std::io::copy(&mut r, &mut std::io::sink()).map_err(read_err)?;
    if extra > 0 {
        return Err(Error::input(format!(
            "{shown}: {} too many: {announced}; the file is corrupt or not IDX {what}",
            bytes(extra)
        )));
    }
    Ok((dims, data))
}

/// Reads until `buf` is full or the input ends; the number of bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::config::FASHION_MNIST_DIR;
    use crate::data::testutil::TempDir;
    use crate::data::{Dataset, DrawKey};

    /// An IDX file's bytes: magic, big-endian dims, data.
    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// n 28×28 images (pixel k of image i = (i + k) mod 256) and labels i mod 10.
    fn fashion(n: u32) -> (Vec<u8>, Vec<u8>) {
        let px: Vec<u8> = (0..n as usize).flat_map(|i| (0..784).map(move |k| ((i + k) % 256) as u8)).collect();
        let lb: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        (idx(IMAGES_MAGIC, &[n, 28, 28], &px), idx(LABELS_MAGIC, &[n], &lb))
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// The error's message, asserting it is an Input error.
    fn input_err<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::Input(m)) => m,
            other => panic!("expected an Input error, got {other:?}"),
        }
    }

    #[test]
    fn plain_and_gzipped_files_load_the_same() {
        let (images, labels) = fashion(5);
        let plain = TempDir::new("idx-plain");
        write(plain.path(), "train-images-idx3-ubyte", &images);
        write(plain.path(), "train-labels-idx1-ubyte", &labels);
        let zipped = TempDir::new("idx-gz");
        write(zipped.path(), "train-images-idx3-ubyte.gz", &gz(&images));
        write(zipped.path(), "train-labels-idx1-ubyte.gz", &gz(&labels));
        let a = fashion_mnist(plain.path(), Split::Train, 0).unwrap();
        let b = fashion_mnist(zipped.path(), Split::Train, 2).unwrap();
        assert_eq!(a.len(), 5);
        assert_eq!(a.shape(), Shape::new(1, 28, 28));
        assert_eq!(b.shape(), Shape::new(1, 32, 32));
        assert_eq!(a.labels(), Some(&[0u8, 1, 2, 3, 4][..]));
        assert_eq!(a.labels(), b.labels());
        for i in 0..5 {
            assert_eq!(a.image_u8(i), b.image_u8(i));
            assert_eq!(a.image_u8(i)[..3], [i as u8, i as u8 + 1, i as u8 + 2]);
        }
        // Gzip or not, the content is the same and so is the digest (same padding).
        let c = fashion_mnist(zipped.path(), Split::Train, 0).unwrap();
        assert_eq!(a.digest(), c.digest());
        assert!(a.describe().contains("fashion-mnist train"), "{}", a.describe());
        // The test split is the t10k files.
        let e = input_err(fashion_mnist(plain.path(), Split::Test, 0));
        assert!(e.contains("t10k-images-idx3-ubyte") && e.contains("apt-get install dataset-fashion-mnist"), "{e}");
        // Pixels come out in [-1, 1]: image 0's first pixel is 0 → -1, its pixel 255 is 255 → 1.
        let key = DrawKey { seed: 0, step: 0, purpose: crate::rng::Purpose::Real, base: 0 };
        let mut out = vec![0.0; 5 * 784];
        a.fill(&key, 0, &mut out);
        assert!(out.iter().all(|v| (-1.0..=1.0).contains(v)));
        let zero = out.chunks(784).find(|o| o[0] == -1.0).expect("image 0 is drawn in epoch 0");
        assert_eq!(zero[255], 1.0);
    }

    #[test]
    fn bad_files_are_input_errors_naming_the_file() {
        let (images, labels) = fashion(4);
        let d = TempDir::new("idx-bad");
        let check = |name: &str, bytes: &[u8], want: &[&str]| {
            let p = write(d.path(), name, bytes);
            let r = if name.contains("images") { read_images(&p).map(|_| ()) } else { read_labels(&p).map(|_| ()) };
            let e = input_err(r);
            assert!(e.contains(&p.display().to_string()), "{name}: {e}");
            for w in want {
                assert!(e.contains(w), "{name}: `{w}` not in: {e}");
            }
        };
        check("wrong-magic-images", &labels, &["wrong magic number 0x00000801", "labels file", "0x00000803"]);
        check("wrong-magic-labels", &images, &["wrong magic number 0x00000803", "expected 0x00000801"]);
        check("noise-images", b"hello, world", &["wrong magic", "not an IDX file"]);
        check(
            "truncated-images",
            &images[..images.len() - 1],
            &["truncated", "4 images of 28×28 = 3136 bytes", "has 3135 bytes"],
        );
        check("truncated-labels", &labels[..10], &["truncated", "4 labels = 4 bytes", "has 2 bytes"]);
        check("extra-images", &[&images[..], &[0, 0]].concat(), &["2 bytes too many"]);
        check("truncated-images.gz", &gz(&images[..images.len() - 9]), &["truncated", "has 3127 bytes"]);
        check("extra-labels.gz", &gz(&[&labels[..], &[7]].concat()), &["1 byte too many"]);
        let mut bad_crc = gz(&images);
        let crc = bad_crc.len() - 8;
        bad_crc[crc] ^= 0xff;
        check("bad-crc-images.gz", &bad_crc, &["corrupt gzip stream"]);
        let mut broken = gz(&images);
        let mid = broken.len() / 2;
        broken[mid] ^= 0xff;
        broken[mid + 1] ^= 0x5a;
        check("corrupt-images.gz", &broken, &[]);
        let z = gz(&images);
        check("cut-images.gz", &z[..z.len() - 20], &["gzip"]);
        check("huge-images", &idx(IMAGES_MAGIC, &[u32::MAX, 1000, 28], &[]), &["truncated"]);
        check("huge-images.gz", &gz(&idx(IMAGES_MAGIC, &[u32::MAX, 1000, 28], &[1])), &["truncated"]);
        check("overflow-images", &idx(IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[]), &["overflow"]);

        // Counts that differ, a bad label, a wrong size, a missing file.
        let mixed = TempDir::new("idx-mixed");
        write(mixed.path(), "train-images-idx3-ubyte", &images);
        let lp = write(mixed.path(), "train-labels-idx1-ubyte.gz", &gz(&fashion(3).1));
        let e = input_err(fashion_mnist(mixed.path(), Split::Train, 0));
        assert!(e.contains(&lp.display().to_string()) && e.contains("3 labels") && e.contains("4 images"), "{e}");
        std::fs::remove_file(&lp).unwrap();
        let lp = write(mixed.path(), "train-labels-idx1-ubyte", &idx(LABELS_MAGIC, &[4], &[0, 1, 10, 2]));
        let e = input_err(fashion_mnist(mixed.path(), Split::Train, 0));
        assert!(e.contains(&lp.display().to_string()) && e.contains("label 10 of image 2"), "{e}");
        let ip = write(mixed.path(), "train-images-idx3-ubyte", &idx(IMAGES_MAGIC, &[4, 2, 2], &[0; 16]));
        let e = input_err(fashion_mnist(mixed.path(), Split::Train, 0));
        assert!(e.contains(&ip.display().to_string()) && e.contains("2×2"), "{e}");
        std::fs::remove_file(&ip).unwrap();
        let e = input_err(fashion_mnist(mixed.path(), Split::Train, 0));
        assert!(e.contains("train-images-idx3-ubyte[.gz]: no such file"), "{e}");
        assert!(e.contains("apt-get install dataset-fashion-mnist") && e.contains("data.path"), "{e}");
        let e = input_err(read_labels(&mixed.path().join("nothing-here")));
        assert!(e.contains("nothing-here: no such file"), "{e}");
    }

    #[test]
    fn real_fashion_mnist_when_installed() {
        let dir = Path::new(FASHION_MNIST_DIR);
        if !dir.is_dir() {
            eprintln!("SKIPPED real_fashion_mnist_when_installed: {FASHION_MNIST_DIR} is missing ({INSTALL})");
            return;
        }
        for (split, n) in [(Split::Train, 60_000), (Split::Test, 10_000)] {
            let t = std::time::Instant::now();
            let s = fashion_mnist(dir, split, 0).unwrap();
            let took = t.elapsed();
            eprintln!("{} in {:.3} s, digest {}", s.describe(), took.as_secs_f64(), s.digest());
            assert_eq!(s.len(), n);
            assert_eq!(s.shape(), Shape::new(1, 28, 28));
            let labels = s.labels().unwrap();
            assert_eq!(labels.len(), n);
            let mut per_class = [0usize; 10];
            for &l in labels {
                per_class[l as usize] += 1;
            }
            assert!(per_class.iter().all(|&c| c == n / 10), "{per_class:?}");
        }
    }
}
