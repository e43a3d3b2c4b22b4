//! A folder of PNG files as a dataset: every `*.png` (any case) directly in
//! the folder, sorted by file name, all of one size and channel count.
//! Grayscale images have 1 channel and colour ones 3; alpha is dropped,
//! palettes and bit depths below 8 are expanded and 16-bit samples keep their
//! high byte.  No labels.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use png::{ColorType, Transformations};

use super::ImageSet;
use crate::config::DataKind;
use crate::error::{Error, Result};
use crate::nn::Shape;

/// The PNG files of `dir` (not its subfolders), sorted by file name; an
/// error naming the folder when it is missing or holds none.
pub fn png_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let shown = dir.display();
    let entries = std::fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::input(format!("{shown}: no such folder (data.path); point data.path at a folder of PNG files"))
        }
        std::io::ErrorKind::NotADirectory => {
            Error::input(format!("{shown}: not a folder (data.path); point data.path at a folder of PNG files"))
        }
        _ => Error::io(dir, "list the folder", e),
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, "list the folder", e))?.path();
        let is_png = path.extension().is_some_and(|x| x.eq_ignore_ascii_case("png"));
        if is_png && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::input(format!(
            "{shown}: no PNG files (*.png) in this folder (subfolders are not searched); \
             point data.path at a folder of PNG files"
        )));
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// The shape `path` decodes to (C×H×W, alpha dropped), from its header only.
pub fn png_shape(path: &Path) -> Result<Shape> {
    let reader = reader(path)?;
    let info = reader.info();
    Ok(Shape::new(channels(reader.output_color_type().0), info.height as usize, info.width as usize))
}

/// Decodes `path` into C planes of H×W bytes.
pub fn decode(path: &Path) -> Result<(Shape, Vec<u8>)> {
    let mut reader = reader(path)?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let out = reader.next_frame(&mut buf).map_err(|e| not_png(path, e))?;
    let (h, w) = (out.height as usize, out.width as usize);
    let stride = match out.color_type {
        ColorType::Grayscale => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
        ColorType::Indexed => {
            return Err(Error::input(format!("{}: a palette image that did not expand", path.display())))
        }
    };
    let c = channels(out.color_type);
    let mut planes = vec![0u8; c * h * w];
    for y in 0..h {
        let row = &buf[y * out.line_size..][..w * stride];
        for (x, px) in row.chunks_exact(stride).enumerate() {
            for (k, &v) in px[..c].iter().enumerate() {
                planes[(k * h + y) * w + x] = v;
            }
        }
    }
    Ok((Shape::new(c, h, w), planes))
}

/// Loads every PNG of `dir` (see the module's doc); an error names the first
/// file whose size or channel count differs from the first file's.
pub fn load(dir: &Path, pad: usize) -> Result<ImageSet> {
    let files = png_files(dir)?;
    let first = png_shape(&files[0])?;
    let mut pixels = Vec::with_capacity(files.len() * first.len());
    for f in &files {
        let (shape, planes) = decode(f)?;
        if shape != first {
            return Err(Error::input(format!(
                "{}: {} (C×H×W) but {} is {first}; every PNG in data.path must have one size and channel count",
                f.display(),
                shape,
                files[0].display()
            )));
        }
        pixels.extend_from_slice(&planes);
    }
    ImageSet::new(DataKind::ImageFolder, format!("image-folder {}", dir.display()), first, pixels, None, pad)
}

fn reader(path: &Path) -> Result<png::Reader<BufReader<File>>> {
    let file = File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let mut dec = png::Decoder::new(BufReader::new(file));
    dec.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    dec.read_info().map_err(|e| not_png(path, e))
}

fn not_png(path: &Path, e: png::DecodingError) -> Error {
    Error::input(format!("{}: not a readable PNG file ({e}); re-save it as PNG or remove it", path.display()))
}

/// Channels kept: 1 for gray (± alpha), 3 for colour (± alpha).
fn channels(c: ColorType) -> usize {
    match c {
        ColorType::Grayscale | ColorType::GrayscaleAlpha => 1,
        ColorType::Rgb | ColorType::Rgba | ColorType::Indexed => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataConfig;
    use crate::data::testutil::TempDir;
    use crate::data::{Dataset, DrawKey};

    fn write_png(path: &Path, w: u32, h: u32, color: ColorType, depth: png::BitDepth, data: &[u8]) {
        let file = std::io::BufWriter::new(File::create(path).unwrap());
        let mut enc = png::Encoder::new(file, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        enc.write_header().unwrap().write_image_data(data).unwrap();
    }

    fn gray(path: &Path, w: u32, h: u32, base: u8) {
        let data: Vec<u8> = (0..w * h).map(|k| base.wrapping_add(k as u8)).collect();
        write_png(path, w, h, ColorType::Grayscale, png::BitDepth::Eight, &data);
    }

    fn input_err<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::Input(m)) => m,
            other => panic!("expected an Input error, got {other:?}"),
        }
    }

    #[test]
    fn gray_images_load_in_name_order() {
        let d = TempDir::new("png-gray");
        // 5 wide, 4 high; names sorted by bytes: "a.PNG" < "b.png" < "c.png"; the rest is skipped.
        gray(&d.path().join("c.png"), 5, 4, 100);
        gray(&d.path().join("a.PNG"), 5, 4, 0);
        // 16-bit gray + alpha: the high byte of the gray stays, the alpha goes.
        let ga16: Vec<u8> = (0..20u16).flat_map(|k| [200, k as u8, 0xff, 0x00]).collect();
        write_png(&d.path().join("b.png"), 5, 4, ColorType::GrayscaleAlpha, png::BitDepth::Sixteen, &ga16);
        std::fs::write(d.path().join("notes.txt"), "not an image").unwrap();
        std::fs::create_dir(d.path().join("sub.png")).unwrap();
        std::fs::create_dir(d.path().join("deeper")).unwrap();
        gray(&d.path().join("deeper").join("0.png"), 3, 3, 0);

        let cfg = DataConfig {
            kind: DataKind::ImageFolder,
            path: Some(d.path().display().to_string()),
            pad: 1,
            ..DataConfig::default()
        };
        assert_eq!(crate::data::sample_shape(&cfg).unwrap(), Shape::new(1, 6, 7));
        let s = load(d.path(), 0).unwrap();
        assert_eq!((s.len(), s.image_shape(), s.labels()), (3, Shape::new(1, 4, 5), None));
        assert_eq!(s.image_u8(0), (0..20).collect::<Vec<u8>>());
        assert_eq!(s.image_u8(1), [200; 20]);
        assert_eq!(s.image_u8(2), (100..120).collect::<Vec<u8>>());

        let padded = crate::data::open(&cfg).unwrap();
        assert_eq!(padded.shape(), Shape::new(1, 6, 7));
        let key = DrawKey { seed: 3, step: 0, purpose: crate::rng::Purpose::Real, base: 0 };
        let mut out = vec![0.0; 3 * 42];
        padded.fill(&key, 0, &mut out);
        let mut firsts: Vec<f32> = out.chunks(42).map(|o| o[7 + 1]).collect();
        firsts.sort_by(f32::total_cmp);
        assert_eq!(firsts, [0.0 / 127.5 - 1.0, 100.0 / 127.5 - 1.0, 200.0 / 127.5 - 1.0]);
        for o in out.chunks(42) {
            assert!(o[..7].iter().all(|&v| v == -1.0) && o[35..].iter().all(|&v| v == -1.0));
            assert!(o.iter().all(|v| (-1.0..=1.0).contains(v)));
        }
        // A copy elsewhere under other names has the same digest.
        let e = TempDir::new("png-gray-copy");
        for (from, to) in [("a.PNG", "1.png"), ("b.png", "2.png"), ("c.png", "3.png")] {
            std::fs::copy(d.path().join(from), e.path().join(to)).unwrap();
        }
        assert_eq!(load(e.path(), 0).unwrap().digest(), s.digest());
        gray(&e.path().join("3.png"), 5, 4, 101);
        assert_ne!(load(e.path(), 0).unwrap().digest(), s.digest());
    }

    #[test]
    fn rgb_images_are_three_planes() {
        let d = TempDir::new("png-rgb");
        // 2×2 RGB: pixel k = (10k, 10k+1, 10k+2); then the same as RGBA with alpha 7.
        let rgb: Vec<u8> = (0..4u8).flat_map(|k| [10 * k, 10 * k + 1, 10 * k + 2]).collect();
        write_png(&d.path().join("0.png"), 2, 2, ColorType::Rgb, png::BitDepth::Eight, &rgb);
        let rgba: Vec<u8> = (0..4u8).flat_map(|k| [10 * k, 10 * k + 1, 10 * k + 2, 7]).collect();
        write_png(&d.path().join("1.png"), 2, 2, ColorType::Rgba, png::BitDepth::Eight, &rgba);
        let s = load(d.path(), 0).unwrap();
        assert_eq!(s.shape(), Shape::new(3, 2, 2));
        let planes = [0, 10, 20, 30, 1, 11, 21, 31, 2, 12, 22, 32];
        assert_eq!(s.image_u8(0), planes);
        assert_eq!(s.image_u8(1), planes);
        let key = DrawKey { seed: 0, step: 0, purpose: crate::rng::Purpose::Real, base: 5 };
        let mut out = [0.0; 12];
        s.fill(&key, 0, &mut out);
        let want: Vec<f32> = planes.iter().map(|&p| p as f32 / 127.5 - 1.0).collect();
        assert_eq!(out[..], want[..]);
    }

    #[test]
    fn mixed_folders_and_empty_folders_are_errors() {
        let d = TempDir::new("png-mixed");
        gray(&d.path().join("0.png"), 5, 4, 0);
        gray(&d.path().join("1.png"), 5, 4, 0);
        gray(&d.path().join("2.png"), 4, 5, 0);
        gray(&d.path().join("3.png"), 3, 3, 0);
        let e = input_err(load(d.path(), 0));
        assert!(e.contains("2.png: 1×5×4") && e.contains("0.png is 1×4×5"), "{e}");
        std::fs::remove_file(d.path().join("2.png")).unwrap();
        std::fs::remove_file(d.path().join("3.png")).unwrap();
        let rgb = vec![0u8; 5 * 4 * 3];
        write_png(&d.path().join("2.png"), 5, 4, ColorType::Rgb, png::BitDepth::Eight, &rgb);
        let e = input_err(load(d.path(), 0));
        assert!(e.contains("2.png: 3×4×5") && e.contains("0.png is 1×4×5"), "{e}");
        std::fs::write(d.path().join("2.png"), b"GIF89a").unwrap();
        let e = input_err(load(d.path(), 0));
        assert!(e.contains("2.png: not a readable PNG"), "{e}");

        let empty = TempDir::new("png-empty");
        std::fs::write(empty.path().join("a.jpg"), b"").unwrap();
        let e = input_err(load(empty.path(), 0));
        assert!(e.contains(&empty.path().display().to_string()) && e.contains("no PNG files"), "{e}");
        let gone = empty.path().join("gone");
        let e = input_err(load(&gone, 0));
        assert!(e.contains("gone: no such folder"), "{e}");
    }
}
