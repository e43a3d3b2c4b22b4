//! A tiny RGB rasterizer that writes PNG files.
//!
//! No text, no anti-aliasing: just enough to draw scatter plots of samples
//! with the modes marked, and trajectories over a vector field.  A [`Canvas`]
//! maps a data rectangle `x_range x y_range` onto a `width x height` pixel grid
//! with y pointing up; everything drawn outside the grid is clipped silently.

use std::path::Path;

use crate::error::{Error, Result};

/// An 8-bit RGB colour.
pub type Rgb = [u8; 3];

pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [0, 0, 0];
/// The frame around the plot.
pub const FRAME_GREY: Rgb = [150, 150, 150];
/// The axis lines through 0 and the vector field.
pub const LIGHT_GREY: Rgb = [215, 215, 215];
pub const BLUE: Rgb = [30, 80, 200];
/// Semi-dark blue, for sample dots.
pub const DARK_BLUE: Rgb = [40, 60, 150];
pub const RED: Rgb = [220, 30, 30];
pub const GREEN: Rgb = [20, 160, 40];

/// An RGB image that maps a data rectangle onto pixels (y up).
#[derive(Debug, Clone)]
pub struct Canvas {
    width: u32,
    height: u32,
    x_range: (f64, f64),
    y_range: (f64, f64),
    pixels: Vec<u8>,
}

/// A usable range: finite, increasing, non-empty.
fn sanitize_range((lo, hi): (f64, f64)) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (-1.0, 1.0);
    }
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    if hi - lo > 0.0 && (hi - lo).is_finite() {
        (lo, hi)
    } else if (hi - lo).is_finite() {
        let pad = (lo.abs() * 1e-6).max(1.0);
        (lo - pad, hi + pad)
    } else {
        (-1.0, 1.0)
    }
}

impl Canvas {
    /// A white canvas with a thin grey frame and light grey axis lines
    /// through 0 where 0 lies inside the ranges.  Sizes below 2 pixels are
    /// raised to 2; an empty or non-finite range is widened to a usable one.
    pub fn new(width: u32, height: u32, x_range: (f64, f64), y_range: (f64, f64)) -> Canvas {
        let width = width.max(2);
        let height = height.max(2);
        let mut canvas = Canvas {
            width,
            height,
            x_range: sanitize_range(x_range),
            y_range: sanitize_range(y_range),
            pixels: vec![255; width as usize * height as usize * 3],
        };
        let (x0, x1) = canvas.x_range;
        let (y0, y1) = canvas.y_range;
        let (w, h) = (width as f64 - 1.0, height as f64 - 1.0);
        if x0 <= 0.0 && 0.0 <= x1 {
            let (px, _) = canvas.to_pixel(0.0, y0);
            canvas.line_px((px, 0.0), (px, h), LIGHT_GREY);
        }
        if y0 <= 0.0 && 0.0 <= y1 {
            let (_, py) = canvas.to_pixel(x0, 0.0);
            canvas.line_px((0.0, py), (w, py), LIGHT_GREY);
        }
        canvas.line_px((0.0, 0.0), (w, 0.0), FRAME_GREY);
        canvas.line_px((w, 0.0), (w, h), FRAME_GREY);
        canvas.line_px((w, h), (0.0, h), FRAME_GREY);
        canvas.line_px((0.0, h), (0.0, 0.0), FRAME_GREY);
        canvas
    }

    /// A canvas holding `pixels` (RGB, row-major, `width × height × 3`
    /// bytes) as they are, mapping [0, width) × [0, height) (y up).
    pub fn from_pixels(width: u32, height: u32, pixels: Vec<u8>) -> Canvas {
        assert_eq!(pixels.len(), width as usize * height as usize * 3, "Canvas::from_pixels: wrong size");
        Canvas { width, height, x_range: (0.0, width as f64), y_range: (0.0, height as f64), pixels }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn x_range(&self) -> (f64, f64) {
        self.x_range
    }

    pub fn y_range(&self) -> (f64, f64) {
        self.y_range
    }

    /// Pixels per data unit along x and along y.
    pub fn scale(&self) -> (f64, f64) {
        (
            (self.width as f64 - 1.0) / (self.x_range.1 - self.x_range.0),
            (self.height as f64 - 1.0) / (self.y_range.1 - self.y_range.0),
        )
    }

    /// Data point to (fractional) pixel coordinates: `(x_min, y_max)` is the
    /// top-left pixel (0, 0), `(x_max, y_min)` the bottom-right one.
    pub fn to_pixel(&self, x: f64, y: f64) -> (f64, f64) {
        let (sx, sy) = self.scale();
        ((x - self.x_range.0) * sx, (self.y_range.1 - y) * sy)
    }

    /// The inverse of [`Canvas::to_pixel`].
    pub fn to_data(&self, px: f64, py: f64) -> (f64, f64) {
        let (sx, sy) = self.scale();
        (self.x_range.0 + px / sx, self.y_range.1 - py / sy)
    }

    /// The colour of pixel (px, py), or None outside the image.
    pub fn pixel(&self, px: u32, py: u32) -> Option<Rgb> {
        if px >= self.width || py >= self.height {
            return None;
        }
        let i = (py as usize * self.width as usize + px as usize) * 3;
        Some([self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]])
    }

    /// Colour one pixel; outside the image it does nothing.
    pub fn set_pixel(&mut self, px: i64, py: i64, rgb: Rgb) {
        if px < 0 || py < 0 || px >= self.width as i64 || py >= self.height as i64 {
            return;
        }
        let i = (py as usize * self.width as usize + px as usize) * 3;
        self.pixels[i..i + 3].copy_from_slice(&rgb);
    }

    /// A filled disc of `radius_px` pixels centred on data point (x, y).
    pub fn dot(&mut self, x: f64, y: f64, radius_px: f64, rgb: Rgb) {
        let (cx, cy) = self.to_pixel(x, y);
        self.disc_px(cx, cy, radius_px, rgb);
    }

    /// A filled disc in pixel coordinates.
    pub fn disc_px(&mut self, cx: f64, cy: f64, radius_px: f64, rgb: Rgb) {
        if !cx.is_finite() || !cy.is_finite() || !radius_px.is_finite() {
            return;
        }
        let r = radius_px.max(0.0);
        let lo_x = (cx - r).floor().max(0.0);
        let hi_x = (cx + r).ceil().min(self.width as f64 - 1.0);
        let lo_y = (cy - r).floor().max(0.0);
        let hi_y = (cy + r).ceil().min(self.height as f64 - 1.0);
        if lo_x > hi_x || lo_y > hi_y {
            return;
        }
        // A radius below half a pixel still colours the nearest pixel.
        let r2 = (r * r).max(0.25);
        for py in lo_y as i64..=hi_y as i64 {
            for px in lo_x as i64..=hi_x as i64 {
                let (dx, dy) = (px as f64 - cx, py as f64 - cy);
                if dx * dx + dy * dy <= r2 + 1e-9 {
                    self.set_pixel(px, py, rgb);
                }
            }
        }
    }

    /// An "x" shaped cross with arms `size_px` pixels long (from the centre)
    /// at data point (x, y).
    pub fn cross(&mut self, x: f64, y: f64, size_px: f64, rgb: Rgb) {
        // Centred on the nearest pixel, so both strokes cross there.
        let (cx, cy) = self.to_pixel(x, y);
        let (cx, cy) = (cx.round(), cy.round());
        let s = size_px.max(1.0).round();
        self.line_px((cx - s, cy - s), (cx + s, cy + s), rgb);
        self.line_px((cx - s, cy + s), (cx + s, cy - s), rgb);
    }

    /// A circle outline of `radius_px` pixels centred on data point (x, y).
    pub fn circle(&mut self, x: f64, y: f64, radius_px: f64, rgb: Rgb) {
        let (cx, cy) = self.to_pixel(x, y);
        if !radius_px.is_finite() || radius_px < 0.0 {
            return;
        }
        let segments = ((std::f64::consts::TAU * radius_px).ceil() as usize).clamp(24, 4096);
        let point = |k: usize| {
            let a = std::f64::consts::TAU * k as f64 / segments as f64;
            (cx + radius_px * a.cos(), cy + radius_px * a.sin())
        };
        for k in 0..segments {
            self.line_px(point(k), point(k + 1), rgb);
        }
    }

    /// A straight line between two data points.
    pub fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, rgb: Rgb) {
        let p0 = self.to_pixel(x0, y0);
        let p1 = self.to_pixel(x1, y1);
        self.line_px(p0, p1, rgb);
    }

    /// Consecutive points joined by lines; non-finite points break the line.
    pub fn polyline(&mut self, points: &[(f64, f64)], rgb: Rgb) {
        for pair in points.windows(2) {
            let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
            self.line(x0, y0, x1, y1, rgb);
        }
    }

    /// An arrow from data point (x, y) to (x + dx, y + dy), with a head
    /// drawn in pixel space.
    pub fn arrow(&mut self, x: f64, y: f64, dx: f64, dy: f64, rgb: Rgb) {
        let tail = self.to_pixel(x, y);
        let tip = self.to_pixel(x + dx, y + dy);
        self.line_px(tail, tip, rgb);
        let (ux, uy) = (tip.0 - tail.0, tip.1 - tail.1);
        let len = ux.hypot(uy);
        if !len.is_finite() || len < 1e-9 {
            return;
        }
        let head = (0.35 * len).min(6.0);
        let back = uy.atan2(ux) + std::f64::consts::PI;
        for side in [-0.45_f64, 0.45] {
            let a = back + side;
            self.line_px(tip, (tip.0 + head * a.cos(), tip.1 + head * a.sin()), rgb);
        }
    }

    /// A line in pixel coordinates: clipped to the image (Liang-Barsky),
    /// then rasterized with Bresenham's algorithm.
    pub fn line_px(&mut self, p0: (f64, f64), p1: (f64, f64), rgb: Rgb) {
        let Some((a, b)) = self.clip(p0, p1) else {
            return;
        };
        let (mut x, mut y) = (a.0.round() as i64, a.1.round() as i64);
        let (x1, y1) = (b.0.round() as i64, b.1.round() as i64);
        let dx = (x1 - x).abs();
        let dy = -(y1 - y).abs();
        let sx = if x < x1 { 1 } else { -1 };
        let sy = if y < y1 { 1 } else { -1 };
        let mut err = dx + dy;
        loop {
            self.set_pixel(x, y, rgb);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// The part of segment p0-p1 that lies within the pixel grid (a box
    /// half a pixel short of the outer edges, so rounding stays inside).
    fn clip(&self, p0: (f64, f64), p1: (f64, f64)) -> Option<((f64, f64), (f64, f64))> {
        if ![p0.0, p0.1, p1.0, p1.1].iter().all(|v| v.is_finite()) {
            return None;
        }
        let (x_lo, y_lo) = (-0.49, -0.49);
        let (x_hi, y_hi) = (self.width as f64 - 0.51, self.height as f64 - 0.51);
        let (dx, dy) = (p1.0 - p0.0, p1.1 - p0.1);
        if !dx.is_finite() || !dy.is_finite() {
            return None;
        }
        let (mut t0, mut t1) = (0.0_f64, 1.0_f64);
        for (p, q) in [(-dx, p0.0 - x_lo), (dx, x_hi - p0.0), (-dy, p0.1 - y_lo), (dy, y_hi - p0.1)] {
            if p == 0.0 {
                if q < 0.0 {
                    return None;
                }
            } else {
                let r = q / p;
                if p < 0.0 {
                    if r > t1 {
                        return None;
                    }
                    t0 = t0.max(r);
                } else {
                    if r < t0 {
                        return None;
                    }
                    t1 = t1.min(r);
                }
            }
        }
        Some(((p0.0 + t0 * dx, p0.1 + t0 * dy), (p0.0 + t1 * dx, p0.1 + t1 * dy)))
    }

    /// The image encoded as an 8-bit RGB PNG.
    pub fn encode_png(&self) -> std::result::Result<Vec<u8>, png::EncodingError> {
        let mut bytes = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut bytes, self.width, self.height);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header()?;
            writer.write_image_data(&self.pixels)?;
            writer.finish()?;
        }
        Ok(bytes)
    }

    /// Write the image as a PNG, atomically: first to `<path>.png.tmp`-style
    /// `path.with_extension("png.tmp")`, then renamed over `path`.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let bytes =
            self.encode_png().map_err(|e| Error::io(path, "encode PNG", std::io::Error::other(e.to_string())))?;
        crate::fsutil::write_atomic(path, &bytes)
    }
}

/// The square plot window for [`scatter_with_modes`]: the modes' bounding
/// box padded by 25% of its span (at least 1 data unit) on each side, made
/// square around its centre.  Without modes it covers the central 96% of
/// the samples (same padding); with neither it is [-1, 1]^2.
pub fn scatter_window(samples: &[[f32; 2]], modes: &[[f32; 2]]) -> ((f64, f64), (f64, f64)) {
    let finite = |p: &&[f32; 2]| p[0].is_finite() && p[1].is_finite();
    let bbox = if modes.iter().any(|m| finite(&m)) {
        let mut b = [f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY];
        for m in modes.iter().filter(finite) {
            b[0] = b[0].min(m[0] as f64);
            b[1] = b[1].max(m[0] as f64);
            b[2] = b[2].min(m[1] as f64);
            b[3] = b[3].max(m[1] as f64);
        }
        Some(b)
    } else {
        let mut xs: Vec<f64> = samples.iter().filter(finite).map(|s| s[0] as f64).collect();
        let mut ys: Vec<f64> = samples.iter().filter(finite).map(|s| s[1] as f64).collect();
        if xs.is_empty() {
            None
        } else {
            xs.sort_by(f64::total_cmp);
            ys.sort_by(f64::total_cmp);
            let q = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
            Some([q(&xs, 0.02), q(&xs, 0.98), q(&ys, 0.02), q(&ys, 0.98)])
        }
    };
    let Some([x0, x1, y0, y1]) = bbox else {
        return ((-1.0, 1.0), (-1.0, 1.0));
    };
    let half = 0.5 * (x1 - x0).max(y1 - y0);
    let pad = (0.5 * half).max(1.0);
    let half = half + pad;
    let (cx, cy) = (0.5 * (x0 + x1), 0.5 * (y0 + y1));
    ((cx - half, cx + half), (cy - half, cy + half))
}

/// A 512x512 scatter plot of `samples` (small semi-dark blue dots) with each
/// mode centre marked by a red circle of radius `mode_radius` data units
/// (at least 3 pixels; 3 std is the "high quality" region) and a small red
/// cross.  See [`scatter_window`] for the plotted range; samples outside it
/// are clipped.
pub fn scatter_with_modes(path: &Path, samples: &[[f32; 2]], modes: &[[f32; 2]], mode_radius: f32) -> Result<()> {
    let (xr, yr) = scatter_window(samples, modes);
    let mut canvas = Canvas::new(512, 512, xr, yr);
    for s in samples {
        canvas.dot(s[0] as f64, s[1] as f64, 1.2, DARK_BLUE);
    }
    let radius_px = if mode_radius.is_finite() { (mode_radius.abs() as f64 * canvas.scale().0).max(3.0) } else { 3.0 };
    for m in modes {
        canvas.circle(m[0] as f64, m[1] as f64, radius_px, RED);
        canvas.cross(m[0] as f64, m[1] as f64, 3.0, RED);
    }
    canvas.save_png(path)
}

/// Writes `images` (each `shape`, NCHW values in [-1, 1]; 1 channel gray,
/// 3 RGB) as one PNG grid of `cols` columns, each image scaled up by
/// `zoom`, with 2-pixel grey gutters.  Values are clamped to [-1, 1].
pub fn image_grid(path: &Path, images: &[f32], shape: crate::nn::Shape, cols: usize, zoom: usize) -> Result<()> {
    let (c, h, w) = (shape.c, shape.h, shape.w);
    if c != 1 && c != 3 {
        return Err(Error::input(format!("cannot draw {shape} samples as images: 1 or 3 channels needed")));
    }
    let n = images.len() / shape.len().max(1);
    let (cols, zoom, gap) = (cols.clamp(1, n.max(1)), zoom.max(1), 2usize);
    let rows = n.div_ceil(cols).max(1);
    let (cw, ch) = (w * zoom + gap, h * zoom + gap);
    let (width, height) = (cols * cw + gap, rows * ch + gap);
    let mut px = vec![128u8; width * height * 3];
    let level = |v: f32| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
    for (i, img) in images.chunks_exact(shape.len()).enumerate() {
        let (gx, gy) = (gap + (i % cols) * cw, gap + (i / cols) * ch);
        for y in 0..h * zoom {
            for x in 0..w * zoom {
                let at = (y / zoom) * w + x / zoom;
                let o = ((gy + y) * width + gx + x) * 3;
                for k in 0..3 {
                    px[o + k] = level(img[(if c == 1 { 0 } else { k }) * h * w + at]);
                }
            }
        }
    }
    Canvas::from_pixels(width as u32, height as u32, px).save_png(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_grid_lays_out_and_scales_images() {
        let shape = crate::nn::Shape::new(1, 2, 3);
        // Two images: all black (-1) and all white (1).
        let imgs: Vec<f32> = [-1.0f32; 6].into_iter().chain([1.0f32; 6]).collect();
        let path = temp_path("grid.png");
        image_grid(&path, &imgs, shape, 2, 2).unwrap();
        let (info, buf) = decode(&path);
        assert_eq!((info.width, info.height), (2 + 2 * (3 * 2 + 2), 2 + 2 * 2 + 2));
        let at = |x: usize, y: usize| buf[(y * info.width as usize + x) * 3];
        assert_eq!(at(2, 2), 0);
        assert_eq!(at(2 + 8, 2), 255);
        assert_eq!(at(0, 0), 128);
        let _ = std::fs::remove_file(path);
        assert!(image_grid(&temp_path("x.png"), &[0.0; 4], crate::nn::Shape::new(2, 1, 2), 1, 1).is_err());
    }

    fn temp_path(name: &str) -> std::path::PathBuf {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        std::env::temp_dir().join(format!("lockstep-plot-{}-{nanos}-{name}", std::process::id()))
    }

    fn decode(path: &Path) -> (png::OutputInfo, Vec<u8>) {
        let file = std::fs::File::open(path).unwrap();
        let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    #[test]
    fn pixel_mapping_corners() {
        let c = Canvas::new(101, 51, (-2.0, 3.0), (10.0, 20.0));
        assert_eq!(c.to_pixel(-2.0, 20.0), (0.0, 0.0));
        assert_eq!(c.to_pixel(3.0, 10.0), (100.0, 50.0));
        assert_eq!(c.to_pixel(-2.0, 10.0), (0.0, 50.0));
        assert_eq!(c.to_pixel(3.0, 20.0), (100.0, 0.0));
        let (px, py) = c.to_pixel(0.5, 15.0);
        assert!((px - 50.0).abs() < 1e-12 && (py - 25.0).abs() < 1e-12);
        let (x, y) = c.to_data(px, py);
        assert!((x - 0.5).abs() < 1e-12 && (y - 15.0).abs() < 1e-12);
    }

    #[test]
    fn frame_and_axes() {
        let c = Canvas::new(21, 21, (-1.0, 1.0), (-1.0, 1.0));
        assert_eq!(c.pixel(0, 5), Some(FRAME_GREY));
        assert_eq!(c.pixel(20, 5), Some(FRAME_GREY));
        assert_eq!(c.pixel(10, 5), Some(LIGHT_GREY));
        assert_eq!(c.pixel(5, 10), Some(LIGHT_GREY));
        assert_eq!(c.pixel(5, 5), Some(WHITE));
        assert_eq!(c.pixel(21, 0), None);
        // 0 out of range: no axis line.
        let c = Canvas::new(21, 21, (1.0, 2.0), (1.0, 2.0));
        assert_eq!(c.pixel(10, 5), Some(WHITE));
    }

    #[test]
    fn dot_colours_expected_pixel() {
        let mut c = Canvas::new(100, 100, (0.0, 99.0), (0.0, 99.0));
        c.dot(30.0, 60.0, 0.0, RED);
        // y up: data y = 60 is pixel row 99 - 60 = 39.
        assert_eq!(c.pixel(30, 39), Some(RED));
        assert_eq!(c.pixel(31, 39), Some(WHITE));
        assert_eq!(c.pixel(30, 60), Some(WHITE));
        c.dot(70.0, 20.0, 2.0, BLUE);
        assert_eq!(c.pixel(70, 79), Some(BLUE));
        assert_eq!(c.pixel(72, 79), Some(BLUE));
        assert_eq!(c.pixel(73, 79), Some(WHITE));
        // Far outside and non-finite: clipped silently.
        c.dot(1e300, -1e300, 5.0, RED);
        c.dot(f64::NAN, 0.0, 5.0, RED);
    }

    #[test]
    fn lines_are_clipped_and_connected() {
        let mut c = Canvas::new(50, 50, (0.0, 49.0), (0.0, 49.0));
        c.line(-1e9, 25.0, 1e9, 25.0, BLACK);
        for px in 0..50 {
            assert_eq!(c.pixel(px, 24), Some(BLACK));
        }
        c.line(10.0, 0.0, 10.0, 49.0, RED);
        for py in 0..50 {
            assert_eq!(c.pixel(10, py), Some(RED));
        }
        c.line(100.0, 100.0, 200.0, 300.0, BLUE);
        c.line(f64::NAN, 0.0, 1.0, 1.0, BLUE);
        c.polyline(&[(0.0, 0.0), (5.0, 5.0), (5.0, 10.0)], GREEN);
        assert_eq!(c.pixel(5, 49 - 7), Some(GREEN));
        c.arrow(20.0, 20.0, 10.0, 0.0, BLUE);
        assert_eq!(c.pixel(30, 29), Some(BLUE));
        c.circle(40.0, 40.0, 5.0, RED);
        assert_eq!(c.pixel(45, 9), Some(RED));
        c.cross(40.0, 10.0, 3.0, RED);
        assert_eq!(c.pixel(43, 36), Some(RED));
    }

    #[test]
    fn save_png_writes_decodable_image() {
        let path = temp_path("canvas.png");
        let mut c = Canvas::new(64, 32, (-1.0, 1.0), (-1.0, 1.0));
        c.dot(0.5, 0.5, 1.0, RED);
        c.save_png(&path).unwrap();
        assert!(!path.with_extension("png.tmp").exists());
        let (info, buf) = decode(&path);
        assert_eq!((info.width, info.height), (64, 32));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let (px, py) = c.to_pixel(0.5, 0.5);
        let (px, py) = (px.round() as usize, py.round() as usize);
        let i = (py * 64 + px) * 3;
        assert_eq!(&buf[i..i + 3], &RED);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn save_png_reports_io_errors() {
        let path = temp_path("no-such-dir").join("x.png");
        let err = Canvas::new(4, 4, (0.0, 1.0), (0.0, 1.0)).save_png(&path).unwrap_err();
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn scatter_with_modes_writes_512() {
        let modes: Vec<[f32; 2]> = (0..8)
            .map(|k| {
                let a = std::f32::consts::TAU * k as f32 / 8.0;
                [2.0 * a.cos(), 2.0 * a.sin()]
            })
            .collect();
        let (xr, yr) = scatter_window(&[], &modes);
        assert!((xr.0 + 3.0).abs() < 1e-6 && (xr.1 - 3.0).abs() < 1e-6);
        assert!((yr.0 + 3.0).abs() < 1e-6 && (yr.1 - 3.0).abs() < 1e-6);
        let samples = vec![[2.0, 0.0], [100.0, 100.0], [f32::NAN, 0.0]];
        let path = temp_path("scatter.png");
        scatter_with_modes(&path, &samples, &modes, 0.06).unwrap();
        let (info, buf) = decode(&path);
        assert_eq!((info.width, info.height), (512, 512));
        // The mode at ~(0, 2) has a red cross at its centre.
        let c = Canvas::new(512, 512, xr, yr);
        let (px, py) = c.to_pixel(modes[2][0] as f64, modes[2][1] as f64);
        let i = (py.round() as usize * 512 + px.round() as usize) * 3;
        assert_eq!(&buf[i..i + 3], &RED);
        std::fs::remove_file(&path).unwrap();
        // A single mode, or none at all, still gives a usable window.
        let (xr, _) = scatter_window(&[], &[[5.0, 5.0]]);
        assert_eq!(xr, (4.0, 6.0));
        assert_eq!(scatter_window(&[], &[]), ((-1.0, 1.0), (-1.0, 1.0)));
    }
}
