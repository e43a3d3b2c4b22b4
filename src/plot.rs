//! Pictures as PNG files: plots drawn with `plotters` (axes, ticks, axis
//! labels, legends, titles) and grids of sample images.
//!
//! * [`scatter_with_modes`]: 2-D samples over a mixture's modes.
//! * [`flow`]: a trajectory over a 2-D vector field (the toy systems).
//! * [`curves`]: a run's training curves from the rows of its metrics.jsonl.
//! * [`image_grid`]: sample images side by side, pixel for pixel (a picture,
//!   not a plot: no axes, no text).
//!
//! Text is set in DejaVu Sans, embedded from `assets/fonts/` and registered
//! with plotters once, so plots render the same on a machine without system
//! fonts.  Every picture is drawn into an RGB buffer in memory, encoded with
//! `png` and written with [`crate::fsutil::write_atomic`]: a crash never
//! leaves a torn PNG.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};

/// DejaVu Sans (license: assets/fonts/LICENSE-DejaVu.txt).
const FONT_DATA: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
/// The family plotters asks for by default, so every text uses the embedded font.
const FONT: &str = "sans-serif";

/// Text sizes in pixels.
const TITLE_PX: f64 = 18.0;
const PANEL_TITLE_PX: f64 = 17.0;
const AXIS_DESC_PX: f64 = 16.0;
const TICK_PX: f64 = 14.0;
const LEGEND_PX: f64 = 14.0;

/// matplotlib's "tab10" colours, for lines and dots.
const TAB_BLUE: RGBColor = RGBColor(31, 119, 180);
const TAB_ORANGE: RGBColor = RGBColor(255, 127, 14);
const TAB_GREEN: RGBColor = RGBColor(44, 160, 44);
const TAB_RED: RGBColor = RGBColor(214, 39, 40);
const TAB_PURPLE: RGBColor = RGBColor(148, 103, 189);
const TAB_BROWN: RGBColor = RGBColor(140, 86, 75);
/// The grid behind the data.
const GRID_GREY: RGBColor = RGBColor(228, 228, 228);
/// The frame and ticks.
const AXIS_GREY: RGBColor = RGBColor(90, 90, 90);
/// The vector field of [`flow`].
const FIELD_GREY: RGBColor = RGBColor(185, 185, 185);

/// The size of [`scatter_with_modes`]' pictures.
pub const SCATTER_SIZE: (u32, u32) = (720, 760);
/// The size of [`flow`]'s pictures.
pub const FLOW_SIZE: (u32, u32) = (760, 760);
/// One panel of [`curves`].
pub const CURVES_PANEL: (u32, u32) = (540, 380);
/// The band above [`curves`]' panels that holds the title.
pub const CURVES_TITLE_HEIGHT: u32 = 44;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type Chart<'a, X, Y> = ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>;
type Drawn<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Registers the embedded font with plotters (once per process).
fn register_font() -> Result<()> {
    static OK: OnceLock<bool> = OnceLock::new();
    if *OK.get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_DATA).is_ok()) {
        Ok(())
    } else {
        Err(Error::runtime("the embedded font assets/fonts/DejaVuSans.ttf does not parse"))
    }
}

/// Draws a `size` picture with `draw` on a white background and writes it
/// to `path` as a PNG.
fn render(path: &Path, size: (u32, u32), draw: impl FnOnce(&Area) -> Drawn) -> Result<()> {
    register_font()?;
    let mut rgb = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        draw(&root)
            .and_then(|()| Ok(root.present()?))
            .map_err(|e| Error::runtime(format!("{}: cannot draw the plot: {e}", path.display())))?;
    }
    save_rgb(path, size.0, size.1, &rgb)
}

/// `pixels` (RGB, row-major, `width × height × 3` bytes) encoded as an 8-bit RGB PNG.
fn encode_png(width: u32, height: u32, pixels: &[u8]) -> std::result::Result<Vec<u8>, png::EncodingError> {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(pixels)?;
        writer.finish()?;
    }
    Ok(bytes)
}

/// Writes `pixels` (RGB, row-major) as a PNG at `path`, atomically.
fn save_rgb(path: &Path, width: u32, height: u32, pixels: &[u8]) -> Result<()> {
    let bytes = encode_png(width, height, pixels)
        .map_err(|e| Error::io(path, "encode PNG", std::io::Error::other(e.to_string())))?;
    crate::fsutil::write_atomic(path, &bytes)
}

fn font(px: f64) -> FontDesc<'static> {
    (FONT, px).into_font()
}

/// `title` broken into lines at its " · " separators, each as wide as fits
/// `max_width` pixels by `width` (a part wider than that gets a line of its own).
fn wrap(title: &str, max_width: i32, width: impl Fn(&str) -> i32) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for part in title.split(" · ") {
        match lines.last_mut() {
            Some(last) if width(&format!("{last} · {part}")) <= max_width => {
                last.push_str(" · ");
                last.push_str(part);
            }
            _ => lines.push(part.to_string()),
        }
    }
    lines
}

/// Writes `title` centred at the top of `area` in at most `lines` lines
/// (broken at " · ", the font shrunk when that is not enough) and returns
/// the area below the title's band, whose height depends only on `lines`.
fn title_band<'a>(area: &Area<'a>, title: &str, lines: usize) -> Drawn<Area<'a>> {
    let line_height = (TITLE_PX * 1.3).ceil() as i32;
    let (top, rest) = area.split_vertically(12 + lines as i32 * line_height + 4);
    let (w, _) = top.dim_in_pixel();
    let max_width = w as i32 - 32;
    let mut px = TITLE_PX;
    let wrapped = loop {
        let f = TextStyle::from(font(px));
        let wrapped = wrap(title, max_width, |s| top.estimate_text_size(s, &f).map_or(0, |(w, _)| w as i32));
        if wrapped.len() <= lines || px <= 11.0 {
            break wrapped;
        }
        px -= 1.0;
    };
    let style = font(px).color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, line) in wrapped.iter().take(lines).enumerate() {
        top.draw_text(line, &style, (w as i32 / 2, 12 + i as i32 * line_height))?;
    }
    Ok(rest)
}

/// Labelled ticks per axis, at most.
const TICKS: usize = 6;

/// `s` with ASCII minus signs set as typographic ones.
fn minus(s: String) -> String {
    s.replace('-', "−")
}

/// `v` in scientific notation with at most 3 decimals: `2.5e−4`.
fn sci_label(v: f64) -> String {
    let s = format!("{v:.3e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let m = if m.contains('.') { m.trim_end_matches('0').trim_end_matches('.') } else { m };
    minus(format!("{m}e{e}"))
}

/// The tick labels of a linear axis over `lo..hi`: every label with the
/// decimals its tick spacing needs (0, 0.5, 1.0 is "0.0", "0.5", "1.0"),
/// in scientific notation when the values are tiny or huge, and in
/// thousands ("25k") when `thousands` and the values reach 10,000.
fn linear_ticks(lo: f64, hi: f64, thousands: bool) -> impl Fn(&f64) -> String {
    use plotters::coord::ranged1d::BoldPoints;
    use plotters::coord::types::RangedCoordf64;
    let points = RangedCoordf64::from(lo..hi).key_points(BoldPoints(TICKS));
    let spacing = points.windows(2).map(|w| (w[1] - w[0]).abs()).fold(f64::INFINITY, f64::min);
    let magnitude = lo.abs().max(hi.abs());
    let scale = if thousands && magnitude >= 1e4 { 1e3 } else { 1.0 };
    let spacing = if spacing.is_finite() && spacing > 0.0 { spacing / scale } else { magnitude / scale / 10.0 };
    let decimals = (-spacing.log10() - 1e-9).ceil().clamp(0.0, 12.0) as usize;
    let sci = scale == 1.0 && (magnitude >= 1e5 || (magnitude < 1e-3 && magnitude > 0.0));
    move |&v| {
        let v = if v.abs() < 1e-9 * spacing * scale { 0.0 } else { v };
        match (sci, scale > 1.0) {
            (true, _) => sci_label(v),
            (false, true) => minus(format!("{:.*}k", decimals, v / scale)),
            (false, false) => minus(format!("{v:.decimals$}")),
        }
    }
}

/// `k` in superscript digits: `⁻³`.
fn superscript(k: i32) -> String {
    const DIGITS: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    let digits = k.unsigned_abs().to_string().chars().map(|d| DIGITS[d as usize - '0' as usize]).collect::<String>();
    if k < 0 {
        format!("⁻{digits}")
    } else {
        digits
    }
}

/// The ticks of a log axis over `lo..hi` (positive): the powers of ten in
/// it (every other one, or fewer, when there are more than [`TICKS`]);
/// where fewer than two, the 1-2-5 multiples; then all multiples; for a
/// range narrower than that, its ends.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let within = |v: f64| v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9);
    let all: [&[f64]; 3] = [&[1.0], &[1.0, 2.0, 5.0], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]];
    for mantissas in all {
        let v: Vec<f64> =
            (a..=b).flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k))).filter(|&v| within(v)).collect();
        if v.len() >= 2 {
            let stride = v.len().div_ceil(TICKS);
            return v.into_iter().step_by(stride).collect();
        }
    }
    vec![lo, hi]
}

/// The tick label of a log axis: `10⁻³`, `2×10⁻³`, else scientific.
fn log_tick(&v: &f64) -> String {
    if !(v > 0.0 && v.is_finite()) {
        return sci_label(v);
    }
    let k = v.log10().floor();
    // log10 of an exact power may land just below it.
    let k = if (v / 10f64.powf(k + 1.0) - 1.0).abs() < 1e-9 { k + 1.0 } else { k };
    let m = v / 10f64.powf(k);
    match (m - m.round()).abs() < 1e-6 {
        true if m.round() == 1.0 => format!("10{}", superscript(k as i32)),
        true => format!("{}×10{}", m.round(), superscript(k as i32)),
        false => sci_label(v),
    }
}

/// Axes, ticks, the grid, a frame and the axis descriptions of `chart`.
fn axes<X, Y>(
    chart: &mut Chart<'_, X, Y>,
    x_desc: &str,
    y_desc: &str,
    x_fmt: &dyn Fn(&f64) -> String,
    y_fmt: &dyn Fn(&f64) -> String,
) -> Drawn
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(TICKS)
        .y_labels(TICKS)
        .x_label_formatter(x_fmt)
        .y_label_formatter(y_fmt)
        .label_style(font(TICK_PX).color(&BLACK))
        .axis_desc_style(font(AXIS_DESC_PX).color(&BLACK))
        .bold_line_style(GRID_GREY)
        .light_line_style(TRANSPARENT)
        .axis_style(AXIS_GREY)
        .set_all_tick_mark_size(5)
        .draw()?;
    let area = chart.plotting_area().strip_coord_spec();
    let (w, h) = area.dim_in_pixel();
    area.draw(&Rectangle::new([(0, 0), (w as i32 - 1, h as i32 - 1)], AXIS_GREY))?;
    Ok(())
}

/// Where a legend goes in a plotting area.
struct LegendSpot {
    /// Its top-left corner, in the plotting area's pixels.
    at: (i32, i32),
    /// How many obstacles it covers there.
    covered: usize,
    height: i32,
}

const LEGEND_MARGIN: i32 = 8;
const LEGEND_SWATCH: i32 = 30;

/// The spot for a legend of `labels` in `chart`'s plotting area that covers
/// the fewest of `obstacles` (backend pixels of what is drawn): a corner,
/// the middle of the top or bottom edge, or the middle of a side; the upper
/// right when nothing is drawn.
fn legend_spot<X: Ranged, Y: Ranged>(
    chart: &Chart<'_, X, Y>,
    labels: &[&str],
    obstacles: &[(i32, i32)],
) -> Drawn<LegendSpot> {
    let area = chart.plotting_area();
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let (bx, by) = area.get_base_pixel();
    let mut text = MultiLineText::<(i32, i32), &str>::new((0, 0), font(LEGEND_PX));
    for l in labels {
        text.push_line(*l);
    }
    let (tw, th) = text.estimate_dimension()?;
    let (lw, lh) = (tw + LEGEND_SWATCH + 2 * LEGEND_MARGIN, th + 2 * LEGEND_MARGIN);
    let (left, right, mid) = (8, w - lw - 8, (w - lw) / 2);
    let (top, bottom, centre) = (8, h - lh - 8, (h - lh) / 2);
    let spots = [
        (right, top),
        (left, top),
        (right, bottom),
        (left, bottom),
        (mid, top),
        (mid, bottom),
        (right, centre),
        (left, centre),
    ];
    let covered = |&(x, y): &(i32, i32)| {
        obstacles
            .iter()
            .filter(|&&(px, py)| {
                let (px, py) = (px - bx, py - by);
                px >= x - 6 && px <= x + lw + 6 && py >= y - 6 && py <= y + lh + 6
            })
            .count()
    };
    let at = spots.iter().copied().min_by_key(covered).unwrap_or((right, top));
    Ok(LegendSpot { at, covered: covered(&at), height: lh })
}

/// The top of the axis range `lo..hi` raised so that the top
/// `legend_height` pixels (and a gap) of a `plot_height` pixel plotting
/// area lie above the data.
fn headroom((lo, hi): (f64, f64), legend_height: i32, plot_height: u32) -> f64 {
    let frac = ((legend_height + 20) as f64 / plot_height.max(1) as f64).clamp(0.0, 0.6);
    lo + (hi - lo) / (1.0 - frac)
}

/// Draws the legend of `chart`'s labelled series at `at` (from [`legend_spot`]).
fn draw_legend<X: Ranged, Y: Ranged>(chart: &mut Chart<'_, X, Y>, at: (i32, i32)) -> Drawn {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::Coordinate(at.0, at.1))
        .margin(LEGEND_MARGIN)
        .legend_area_size(LEGEND_SWATCH)
        .label_font(font(LEGEND_PX).color(&BLACK))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(170, 170, 170))
        .draw()?;
    Ok(())
}

/// Backend pixels along the polyline `points` (at most `step` pixels
/// apart), as obstacles for [`legend_spot`].
fn trace<X, Y>(chart: &Chart<'_, X, Y>, points: &[(f64, f64)], step: i32, out: &mut Vec<(i32, i32)>)
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let px: Vec<(i32, i32)> = points.iter().map(|p| chart.backend_coord(p)).collect();
    out.extend(px.first());
    for w in px.windows(2) {
        let (a, b) = (w[0], w[1]);
        let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) / step.max(1)).clamp(1, 10_000);
        for k in 1..=n {
            out.push((a.0 + (b.0 - a.0) * k / n, a.1 + (b.1 - a.1) * k / n));
        }
    }
}

/// A wide polyline as one element per segment: plotters fills a wide path
/// as one polygon, which leaves gaps where the path crosses itself.
fn segments(points: &[(f64, f64)], style: ShapeStyle) -> impl Iterator<Item = PathElement<(f64, f64)>> + '_ {
    points.windows(2).map(move |w| PathElement::new(vec![w[0], w[1]], style))
}

/// Whether (x, y) lies in the box `xr × yr`.
fn within((x, y): (f64, f64), xr: (f64, f64), yr: (f64, f64)) -> bool {
    x >= xr.0 && x <= xr.1 && y >= yr.0 && y <= yr.1
}

/// The runs of consecutive points of `points` inside the box `x × y`
/// (a point outside, or not finite, ends a run).
fn inside_runs(points: &[(f64, f64)], x: (f64, f64), y: (f64, f64)) -> Vec<Vec<(f64, f64)>> {
    let mut runs = vec![Vec::new()];
    for &p in points {
        if within(p, x, y) {
            runs.last_mut().expect("one run").push(p);
        } else if !runs.last().expect("one run").is_empty() {
            runs.push(Vec::new());
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
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

/// `x × y` widened along one axis so that a data unit is as many pixels
/// along x as along y on a `w × h` pixel plotting area.
fn equal_aspect(x: (f64, f64), y: (f64, f64), (w, h): (u32, u32)) -> ((f64, f64), (f64, f64)) {
    let (sx, sy) = (w as f64 / (x.1 - x.0), h as f64 / (y.1 - y.0));
    let widen = |r: (f64, f64), span: f64| {
        let c = 0.5 * (r.0 + r.1);
        (c - 0.5 * span, c + 0.5 * span)
    };
    if sx > sy {
        (widen(x, w as f64 / sy), y)
    } else {
        (x, widen(y, h as f64 / sx))
    }
}

/// The margins and label areas of the square-ish plots.
fn plot_builder<'a, 'b>(area: &'a Area<'b>) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut b = ChartBuilder::on(area);
    b.margin_left(10).margin_right(28).margin_top(6).margin_bottom(10).x_label_area_size(52).y_label_area_size(72);
    b
}

/// A scatter plot of `samples` (small translucent dots) over the modes
/// (red crosses, each with its circle of radius `mode_radius` data units:
/// 3 std is the "high quality" region), with x/y axes at equal aspect, a
/// legend and `title` above (broken at " · " onto at most two lines).  The
/// window is [`scatter_window`]'s, widened for equal aspect (and raised
/// where the legend needs room); samples outside it are left out.  The
/// picture is [`SCATTER_SIZE`].
pub fn scatter_with_modes(
    path: &Path,
    samples: &[[f32; 2]],
    modes: &[[f32; 2]],
    mode_radius: f32,
    title: &str,
) -> Result<()> {
    const LABELS: [&str; 2] = ["samples", "modes (3σ circles)"];
    let (xr, yr) = scatter_window(samples, modes);
    let samples: Vec<(f64, f64)> = samples.iter().map(|s| (s[0] as f64, s[1] as f64)).collect();
    let modes: Vec<(f64, f64)> = modes.iter().map(|m| (m[0] as f64, m[1] as f64)).collect();
    let radius = if mode_radius.is_finite() { mode_radius.abs() as f64 } else { 0.0 };
    render(path, SCATTER_SIZE, |root| {
        let area = title_band(root, title, 2)?;
        let mut builder = plot_builder(&area);
        let plot_px = builder.build_cartesian_2d(0f64..1f64, 0f64..1f64)?.plotting_area().dim_in_pixel();
        let mut window = equal_aspect(xr, yr, plot_px);
        let (mut chart, spot, (xr, yr)) = loop {
            let (x, y) = window;
            let chart = builder.build_cartesian_2d(x.0..x.1, y.0..y.1)?;
            let obstacles: Vec<(i32, i32)> =
                samples.iter().chain(&modes).filter(|&&p| within(p, x, y)).map(|p| chart.backend_coord(p)).collect();
            let spot = legend_spot(&chart, &LABELS, &obstacles)?;
            if spot.covered == 0 || window.1 != yr {
                break (chart, spot, window);
            }
            window = equal_aspect(x, (y.0, headroom(y, spot.height, plot_px.1)), plot_px);
        };
        let (xf, yf) = (linear_ticks(xr.0, xr.1, false), linear_ticks(yr.0, yr.1, false));
        axes(&mut chart, "x", "y", &xf, &yf)?;

        chart
            .draw_series(
                samples.iter().filter(|&&p| within(p, xr, yr)).map(|&p| Circle::new(p, 2, TAB_BLUE.mix(0.3).filled())),
            )?
            .label(LABELS[0])
            .legend(|c| Circle::new(c, 3, TAB_BLUE.mix(0.7).filled()));
        let centres: Vec<(f64, f64)> = modes.iter().copied().filter(|&p| within(p, xr, yr)).collect();
        for &(cx, cy) in &centres {
            let ring: Vec<(f64, f64)> = (0..=96)
                .map(|k| {
                    let a = std::f64::consts::TAU * k as f64 / 96.0;
                    (cx + radius * a.cos(), cy + radius * a.sin())
                })
                .collect();
            for run in inside_runs(&ring, xr, yr) {
                chart.draw_series(std::iter::once(PathElement::new(run, TAB_RED.mix(0.8))))?;
            }
        }
        chart
            .draw_series(centres.iter().map(|&c| Cross::new(c, 4, TAB_RED.stroke_width(2))))?
            .label(LABELS[1])
            .legend(|c| Cross::new(c, 5, TAB_RED.stroke_width(2)));
        draw_legend(&mut chart, spot.at)
    })
}

/// A phase portrait for [`flow`]: a trajectory over a 2-D vector field.
pub struct Flow<'a> {
    /// Broken at " · " onto at most two lines.
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    /// The plotted window (raised where the legend needs room).
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    /// The vector field at a point.
    pub field: &'a dyn Fn([f64; 2]) -> [f64; 2],
    /// Drawn as a line from its first point (a dot).
    pub trajectory: &'a [[f64; 2]],
    /// Marked with crosses.
    pub equilibria: &'a [[f64; 2]],
}

/// Draws `f`: the field's directions as light grey arrows of one length on
/// a 20×20 grid, the trajectory in blue from a green dot at its start, the
/// equilibria as red crosses, with axes, a legend and the title; the
/// picture is [`FLOW_SIZE`].
pub fn flow(path: &Path, f: &Flow) -> Result<()> {
    const LABELS: [&str; 4] = ["flow direction", "trajectory", "start", "equilibrium"];
    let fix = |(lo, hi): (f64, f64)| {
        if lo.is_finite() && hi.is_finite() && hi > lo && (hi - lo).is_finite() {
            (lo, hi)
        } else {
            (-1.0, 1.0)
        }
    };
    let (xr, yr) = (fix(f.x_range), fix(f.y_range));
    let points: Vec<(f64, f64)> = f.trajectory.iter().map(|s| (s[0], s[1])).collect();
    let equilibria: Vec<(f64, f64)> = f.equilibria.iter().map(|e| (e[0], e[1])).collect();
    render(path, FLOW_SIZE, |root| {
        let area = title_band(root, f.title, 2)?;
        let mut builder = plot_builder(&area);
        let mut window = (xr, yr);
        let (mut chart, spot, (xr, yr)) = loop {
            let (x, y) = window;
            let chart = builder.build_cartesian_2d(x.0..x.1, y.0..y.1)?;
            let mut obstacles = Vec::new();
            for run in inside_runs(&points, x, y) {
                trace(&chart, &run, 6, &mut obstacles);
            }
            let marks = points.first().into_iter().chain(&equilibria).filter(|&&p| within(p, x, y));
            obstacles.extend(marks.map(|p| chart.backend_coord(p)));
            let spot = legend_spot(&chart, &LABELS, &obstacles)?;
            if spot.covered == 0 || window != (xr, yr) {
                break (chart, spot, window);
            }
            // Room above the data, with x widened alike to keep the shapes.
            let top = headroom(y, spot.height, chart.plotting_area().dim_in_pixel().1);
            let k = (top - y.0) / (y.1 - y.0);
            let (c, half) = (0.5 * (x.0 + x.1), 0.5 * k * (x.1 - x.0));
            window = ((c - half, c + half), (y.0, top));
        };
        let (xf, yf) = (linear_ticks(xr.0, xr.1, false), linear_ticks(yr.0, yr.1, false));
        axes(&mut chart, f.x_desc, f.y_desc, &xf, &yf)?;

        // The field: every arrow the same length in pixels, so in "pixel
        // units" (u, v) = ((x - x0) sx, (y - y0) sy), y up.
        const GRID: usize = 20;
        let (w, h) = chart.plotting_area().dim_in_pixel();
        let (sx, sy) = (w as f64 / (xr.1 - xr.0), h as f64 / (yr.1 - yr.0));
        let len = 0.42 * w.min(h) as f64 / GRID as f64;
        let head = 0.3 * len;
        let mut arrows = Vec::new();
        for gy in 0..GRID {
            for gx in 0..GRID {
                let x = xr.0 + (gx as f64 + 0.5) / GRID as f64 * (xr.1 - xr.0);
                let y = yr.0 + (gy as f64 + 0.5) / GRID as f64 * (yr.1 - yr.0);
                let d = (f.field)([x, y]);
                let (du, dv) = (d[0] * sx, d[1] * sy);
                let norm = du.hypot(dv);
                if !norm.is_finite() || norm == 0.0 {
                    continue;
                }
                let (du, dv) = (du / norm, dv / norm);
                // Centred on the grid point.
                let tail = (x - 0.5 * len * du / sx, y - 0.5 * len * dv / sy);
                let tip = (x + 0.5 * len * du / sx, y + 0.5 * len * dv / sy);
                let barb = |side: f64| {
                    let a = std::f64::consts::PI - 0.45 * side;
                    let (bu, bv) = (du * a.cos() - dv * a.sin(), du * a.sin() + dv * a.cos());
                    (tip.0 + head * bu / sx, tip.1 + head * bv / sy)
                };
                arrows.push(vec![tail, tip]);
                arrows.push(vec![barb(1.0), tip, barb(-1.0)]);
            }
        }
        chart.draw_series(arrows.into_iter().map(|a| PathElement::new(a, FIELD_GREY)))?.label(LABELS[0]).legend(
            |(x, y)| {
                PathElement::new(
                    vec![(x - 10, y), (x + 10, y), (x + 5, y - 4), (x + 10, y), (x + 5, y + 4)],
                    FIELD_GREY,
                )
            },
        );

        for run in inside_runs(&points, xr, yr) {
            chart.draw_series(segments(&run, TAB_BLUE.stroke_width(2)))?;
        }
        // The trajectory's legend entry, once even when it is drawn in runs.
        chart
            .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
            .label(LABELS[1])
            .legend(|(x, y)| PathElement::new(vec![(x - 10, y), (x + 10, y)], TAB_BLUE.stroke_width(2)));
        let start = points.first().copied().filter(|&p| within(p, xr, yr));
        chart
            .draw_series(start.map(|p| Circle::new(p, 6, TAB_GREEN.filled())))?
            .label(LABELS[2])
            .legend(|c| Circle::new(c, 5, TAB_GREEN.filled()));
        chart
            .draw_series(
                equilibria.iter().filter(|&&p| within(p, xr, yr)).map(|&p| Cross::new(p, 7, TAB_RED.stroke_width(3))),
            )?
            .label(LABELS[3])
            .legend(|c| Cross::new(c, 5, TAB_RED.stroke_width(2)));
        draw_legend(&mut chart, spot.at)
    })
}

/// One line of a [`curves`] panel: (step, value) points, and an optional
/// band (step, low, high) around it.
struct Line {
    label: String,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
    band: Vec<(f64, f64, f64)>,
}

/// One panel of [`curves`].
struct Panel {
    title: String,
    y_desc: String,
    lines: Vec<Line>,
    /// Values the y range covers at least (e.g. [0, 1] for fractions; 0
    /// for distances).
    y_bounds: Option<(f64, f64)>,
    /// A log y axis where every value is positive.
    log: bool,
}

/// The finite (step, value) pairs of `records` where `get` finds a number.
fn column<'r>(
    records: &'r [serde_json::Value],
    get: impl Fn(&'r serde_json::Value) -> Option<&'r serde_json::Value>,
) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|r| Some((r.get("step")?.as_f64()?, get(r)?.as_f64()?)))
        .filter(|(s, v)| s.is_finite() && v.is_finite())
        .collect()
}

fn line(label: &str, colour: RGBColor, points: Vec<(f64, f64)>) -> Line {
    Line { label: label.into(), colour, points, band: Vec::new() }
}

/// The panels of [`curves`]: four of the step metrics, then one per score
/// found in the rows' `scores` objects.
fn panels(records: &[serde_json::Value]) -> Vec<Panel> {
    let metric = |key: &'static str| column(records, move |r| r.get(key));
    let score = |key: &'static str| column(records, move |r| r.get("scores")?.get(key));
    let total = |key: &str| records.iter().rev().find_map(|r| r.get("scores")?.get(key)?.as_f64());
    let panel = |title: &str, y_desc: &str, log: bool, y_bounds: Option<(f64, f64)>, lines: Vec<Line>| Panel {
        title: title.into(),
        y_desc: y_desc.into(),
        lines,
        y_bounds,
        log,
    };
    let mut out = vec![
        panel(
            "game value and generator loss",
            "value / loss",
            false,
            None,
            vec![line("V", TAB_BLUE, metric("value")), line("generator loss", TAB_ORANGE, metric("gen_loss"))],
        ),
        panel(
            "gradient norms",
            "‖∇‖",
            true,
            None,
            vec![
                line("discriminator", TAB_RED, metric("grad_norm_disc")),
                line("generator", TAB_BLUE, metric("grad_norm_gen")),
            ],
        ),
        panel(
            "regularizer ‖∇_D V‖²",
            "‖∇_D V‖²",
            true,
            None,
            vec![line("‖∇_D V‖²", TAB_PURPLE, metric("regularizer"))],
        ),
        panel(
            "discriminator accuracy",
            "accuracy",
            false,
            Some((0.0, 1.0)),
            vec![
                line("on real", TAB_GREEN, metric("d_accuracy_real")),
                line("on fake", TAB_RED, metric("d_accuracy_fake")),
            ],
        ),
    ];
    let of = |what: &str| match total("modes_total") {
        Some(n) => format!("{what} (of {n})"),
        None => what.to_string(),
    };
    let up_to_total = Some((0.0, total("modes_total").unwrap_or(0.0)));
    let fd = score("fd");
    if !fd.is_empty() {
        out.push(panel(
            "Fréchet distance (feature net)",
            "FD",
            false,
            Some((0.0, 0.0)),
            vec![line("FD", TAB_BLUE, fd)],
        ));
    }
    let kid = score("kid");
    if !kid.is_empty() {
        let std = score("kid_std");
        let band =
            kid.iter().filter_map(|&(s, k)| std.iter().find(|q| q.0 == s).map(|&(_, d)| (s, k - d, k + d))).collect();
        let label = if std.is_empty() { "KID" } else { "KID ± std" };
        out.push(panel("KID", "KID", false, Some((0.0, 0.0)), vec![Line { band, ..line(label, TAB_BLUE, kid) }]));
    }
    let (precision, recall) = (score("precision"), score("recall"));
    if !precision.is_empty() || !recall.is_empty() {
        let lines = vec![line("precision", TAB_BLUE, precision), line("recall", TAB_ORANGE, recall)];
        out.push(panel("precision / recall", "fraction", false, Some((0.0, 1.0)), lines));
    }
    let modes = score("modes");
    if !modes.is_empty() {
        out.push(panel(&of("modes"), "modes", false, up_to_total, vec![line("modes", TAB_BLUE, modes)]));
    }
    let kl = score("kl");
    if !kl.is_empty() {
        out.push(panel("KL to uniform", "KL", false, Some((0.0, 0.0)), vec![line("KL", TAB_BROWN, kl)]));
    }
    let covered = score("modes_covered");
    if !covered.is_empty() {
        let lines = vec![line("modes covered", TAB_BLUE, covered)];
        out.push(panel(&of("modes covered"), "modes", false, up_to_total, lines));
    }
    let hq = score("high_quality_fraction");
    if !hq.is_empty() {
        let lines = vec![line("within 3σ of a mode", TAB_GREEN, hq)];
        out.push(panel("high-quality fraction", "fraction", false, Some((0.0, 1.0)), lines));
    }
    let rkl = score("reverse_kl");
    if !rkl.is_empty() {
        out.push(panel("reverse KL", "KL", false, Some((0.0, 0.0)), vec![line("reverse KL", TAB_BROWN, rkl)]));
    }
    let stability = |key: &'static str| column(records, move |r| r.get("stability")?.get(key));
    let abscissa = stability("spectral_abscissa");
    if !abscissa.is_empty() {
        let lines = vec![line("max Re λ", TAB_RED, abscissa)];
        out.push(panel("Jacobian spectral abscissa (< 0: stable)", "max Re λ", false, Some((0.0, 0.0)), lines));
        let lines = vec![line("max |1 + lr·λ|", TAB_PURPLE, stability("discrete_radius"))];
        out.push(panel("gradient step's spectral radius (< 1: stable)", "radius", false, Some((1.0, 1.0)), lines));
    }
    out
}

/// Draws a run's training curves from the rows of its metrics.jsonl
/// (`records`, as [`crate::telemetry::read_metrics`] returns them) as a grid
/// of panels, each with axes, "step" along x, a title and a legend: V and
/// the generator's loss; both gradient norms; the regularizer; D's accuracy
/// on real and on fake; then one panel per score found in the rows'
/// `scores` objects (Fréchet distance, KID with its ±std band, precision and
/// recall, modes, KL to uniform; a mixture's modes covered, high-quality
/// fraction and reverse KL).  Non-finite values are left out.  Each panel is
/// [`CURVES_PANEL`], 2 to a row for up to 4 panels, else 3, below a band of
/// [`CURVES_TITLE_HEIGHT`] holding `title`.
///
/// # Errors
/// An input error when no record has a step; an I/O error from writing.
pub fn curves(path: &Path, records: &[serde_json::Value], title: &str) -> Result<()> {
    let steps: Vec<f64> = records.iter().filter_map(|r| r.get("step")?.as_f64()).filter(|s| s.is_finite()).collect();
    if steps.is_empty() {
        return Err(Error::input(format!(
            "cannot draw {}: no metrics rows with a step (metrics.jsonl is empty or holds no step rows yet)",
            path.display()
        )));
    }
    let (lo, hi) = steps.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &s| (a.min(s), b.max(s)));
    let pad = if hi > lo { 0.02 * (hi - lo) } else { 1.0_f64.max(0.05 * hi.abs()) };
    let x = (lo - pad, hi + pad);
    let panels = panels(records);
    let cols = if panels.len() <= 4 { 2 } else { 3 };
    let rows = panels.len().div_ceil(cols);
    let size = (cols as u32 * CURVES_PANEL.0, CURVES_TITLE_HEIGHT + rows as u32 * CURVES_PANEL.1);
    render(path, size, |root| {
        let (top, grid) = root.split_vertically(CURVES_TITLE_HEIGHT as i32);
        let (w, _) = top.dim_in_pixel();
        let style = font(TITLE_PX).color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center));
        top.draw_text(title, &style, (w as i32 / 2, CURVES_TITLE_HEIGHT as i32 / 2 + 2))?;
        for (area, p) in grid.split_evenly((rows, cols)).iter().zip(&panels) {
            draw_panel(area, p, x)?;
        }
        Ok(())
    })
}

/// Draws one panel over the steps `x`: a log y axis when the panel asks
/// for one and every value is positive, else a linear one.
fn draw_panel(area: &Area, p: &Panel, x: (f64, f64)) -> Drawn {
    let (top, body) = area.split_vertically(30);
    let (w, _) = top.dim_in_pixel();
    let style = font(PANEL_TITLE_PX).color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center));
    top.draw_text(&p.title, &style, (w as i32 / 2 + 30, 18))?;

    let values: Vec<f64> = p
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|q| q.1).chain(l.band.iter().flat_map(|b| [b.1, b.2])))
        .collect();
    let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if p.log && !values.is_empty() && lo > 0.0 {
        // In decades: padded by 5%, at least 0.3 decades tall.
        let (a, b) = (lo.log10(), hi.log10());
        let half = (0.5 * (b - a)).max(0.15) * 1.05;
        let (a, b) = (0.5 * (a + b) - half, 0.5 * (a + b) + half);
        let axis = |a: f64, b: f64| {
            let (lo, hi) = (10f64.powf(a), 10f64.powf(b));
            (lo..hi).log_scale().with_key_points(log_ticks(lo, hi))
        };
        return panel_in(&body, p, x, (a, b), axis, true);
    }
    let (mut lo, mut hi) = if values.is_empty() { (0.0, 1.0) } else { (lo, hi) };
    if let Some((a, b)) = p.y_bounds {
        lo = lo.min(a);
        hi = hi.max(b);
    }
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.5_f64.max(0.1 * hi.abs()) };
    panel_in(&body, p, x, (lo - pad, hi + pad), |a, b| a..b, false)
}

/// [`draw_panel`] on a y axis made by `axis` from a range in axis units
/// (log10 of the values when `log`), raised where the legend needs room.
fn panel_in<Y>(area: &Area, p: &Panel, x: (f64, f64), y: (f64, f64), axis: impl Fn(f64, f64) -> Y, log: bool) -> Drawn
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let labels: Vec<&str> = p.lines.iter().map(|l| l.label.as_str()).collect();
    let mut builder = ChartBuilder::on(area);
    builder.margin_left(8).margin_right(22).margin_top(4).margin_bottom(6).x_label_area_size(48).y_label_area_size(78);
    let mut y_shown = y;
    let (mut chart, spot) = loop {
        let chart = builder.build_cartesian_2d(x.0..x.1, axis(y_shown.0, y_shown.1))?;
        let mut obstacles = Vec::new();
        for l in &p.lines {
            trace(&chart, &l.points, 6, &mut obstacles);
            let band: Vec<(f64, f64)> = l.band.iter().flat_map(|b| [(b.0, b.1), (b.0, b.2)]).collect();
            trace(&chart, &band, 6, &mut obstacles);
        }
        let spot = legend_spot(&chart, &labels, &obstacles)?;
        if spot.covered == 0 || y_shown != y {
            break (chart, spot);
        }
        y_shown.1 = headroom(y, spot.height, chart.plotting_area().dim_in_pixel().1);
    };
    let (y_lo, y_hi) = {
        let r = chart.y_range();
        (r.start.min(r.end), r.start.max(r.end))
    };
    let x_fmt = linear_ticks(x.0, x.1, true);
    let linear = linear_ticks(y_lo, y_hi, false);
    let y_fmt = |v: &f64| if log { log_tick(v) } else { linear(v) };
    axes(&mut chart, "step", &p.y_desc, &x_fmt, &y_fmt)?;
    let shown = |v: f64| v >= y_lo && v <= y_hi;
    for l in &p.lines {
        let points: Vec<(f64, f64)> = l.points.iter().copied().filter(|q| shown(q.1)).collect();
        let band: Vec<(f64, f64, f64)> =
            l.band.iter().map(|&(s, a, b)| (s, a.max(y_lo), b.min(y_hi))).filter(|b| b.2 >= b.1).collect();
        if band.len() >= 2 {
            let outline: Vec<(f64, f64)> =
                band.iter().map(|b| (b.0, b.2)).chain(band.iter().rev().map(|b| (b.0, b.1))).collect();
            chart.draw_series(std::iter::once(Polygon::new(outline, l.colour.mix(0.18).filled())))?;
        }
        let colour = l.colour;
        chart
            .draw_series(segments(&points, colour.stroke_width(2)))?
            .label(l.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x - 10, y), (x + 10, y)], colour.stroke_width(2)));
        // Markers where the points are few (evaluations), so a single point shows.
        if points.len() <= 20 {
            chart.draw_series(points.iter().map(|&q| Circle::new(q, 3, colour.filled())))?;
        }
    }
    if p.lines.iter().all(|l| l.points.is_empty()) {
        let area = chart.plotting_area().strip_coord_spec();
        let (w, h) = area.dim_in_pixel();
        let style = font(TICK_PX).color(&AXIS_GREY).pos(Pos::new(HPos::Center, VPos::Center));
        area.draw_text("no finite values", &style, (w as i32 / 2, h as i32 / 2))?;
    }
    draw_legend(&mut chart, spot.at)
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
    save_rgb(path, width as u32, height as u32, &px)
}

/// One set of eigenvalues for [`spectrum`]: a label (e.g. "eta 0.5") and its
/// rightmost and largest-modulus eigenvalues, [re, im].
pub struct EigenSet<'a> {
    pub label: String,
    pub rightmost: &'a [[f64; 2]],
    pub largest: &'a [[f64; 2]],
}

/// Which eigenvalues of a set a [`spectrum`] panel shows.
type Pick = fn(&EigenSet) -> Vec<(f64, f64)>;

/// The picture of [`spectrum`].
pub const SPECTRUM_SIZE: (u32, u32) = (1240, 640);

/// Eigenvalues in the complex plane, two panels: the rightmost ones (the
/// window fitted to them, the imaginary axis dashed where it shows) and
/// the largest in modulus; one marker and colour per set, a legend in
/// each, `title` above.
pub fn spectrum(path: &Path, sets: &[EigenSet], title: &str) -> Result<()> {
    const COLOURS: [RGBColor; 4] = [TAB_BLUE, TAB_RED, TAB_GREEN, TAB_PURPLE];
    if sets.is_empty() {
        return Err(Error::input(format!("cannot draw {}: no eigenvalues", path.display())));
    }
    render(path, SPECTRUM_SIZE, |root| {
        let area = title_band(root, title, 1)?;
        let (left, right) = area.split_horizontally(SPECTRUM_SIZE.0 / 2);
        let panels: [(&Area, &str, Pick); 2] = [
            (&left, "rightmost (largest real part)", |s| s.rightmost.iter().map(|p| (p[0], p[1])).collect()),
            (&right, "largest modulus", |s| s.largest.iter().map(|p| (p[0], p[1])).collect()),
        ];
        for (panel, name, pick) in panels {
            let (top, body) = panel.split_vertically(30);
            let (w, _) = top.dim_in_pixel();
            let style = font(PANEL_TITLE_PX).color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center));
            top.draw_text(name, &style, (w as i32 / 2 + 30, 18))?;
            let points: Vec<Vec<(f64, f64)>> = sets.iter().map(pick).collect();
            let all: Vec<(f64, f64)> =
                points.iter().flatten().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
            let span = |f: fn(&(f64, f64)) -> f64| {
                let (lo, hi) =
                    all.iter().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
                if lo > hi {
                    (-1.0, 1.0)
                } else {
                    let pad = (0.08 * (hi - lo)).max(1e-3 * hi.abs().max(lo.abs())).max(1e-12);
                    (lo - pad, hi + pad)
                }
            };
            let x = span(|p| p.0);
            // The imaginary axis at least a quarter of the real one each way.
            let y0 = span(|p| p.1);
            let reach = 0.25 * (x.1 - x.0);
            let mut y = (y0.0.min(-reach), y0.1.max(reach));
            let y_top = y.1;
            let labels: Vec<&str> = sets.iter().map(|s| s.label.as_str()).collect();
            let mut builder = plot_builder(&body);
            let (mut chart, spot) = loop {
                let chart = builder.build_cartesian_2d(x.0..x.1, y.0..y.1)?;
                let obstacles: Vec<(i32, i32)> = all.iter().map(|&p| chart.backend_coord(&p)).collect();
                let spot = legend_spot(&chart, &labels, &obstacles)?;
                let plot_h = chart.plotting_area().dim_in_pixel().1;
                if spot.covered == 0 || y.1 != y_top {
                    break (chart, spot);
                }
                y.1 = headroom(y, spot.height, plot_h);
            };
            let (xf, yf) = (linear_ticks(x.0, x.1, false), linear_ticks(y.0, y.1, false));
            axes(&mut chart, "Re λ", "Im λ", &xf, &yf)?;
            if x.0 < 0.0 && x.1 > 0.0 {
                let dashes: Vec<(f64, f64)> =
                    (0..40).map(|i| y.0 + (y.1 - y.0) * i as f64 / 40.0).map(|v| (0.0, v)).collect();
                for pair in dashes.chunks(2) {
                    chart.draw_series(std::iter::once(PathElement::new(pair.to_vec(), AXIS_GREY.mix(0.8))))?;
                }
            }
            for (i, (s, pts)) in sets.iter().zip(&points).enumerate() {
                let c = COLOURS[i % COLOURS.len()];
                let shown: Vec<(f64, f64)> = pts.iter().copied().filter(|&p| within(p, x, y)).collect();
                if i % 2 == 0 {
                    chart
                        .draw_series(shown.iter().map(|&p| Circle::new(p, 5, c.mix(0.85).filled())))?
                        .label(s.label.as_str())
                        .legend(move |p| Circle::new(p, 5, c.mix(0.85).filled()));
                } else {
                    chart
                        .draw_series(shown.iter().map(|&p| Cross::new(p, 6, c.stroke_width(2))))?
                        .label(s.label.as_str())
                        .legend(move |p| Cross::new(p, 6, c.stroke_width(2)));
                }
            }
            draw_legend(&mut chart, spot.at)?;
        }
        Ok(())
    })
}

/// One curve of [`overlay`]: a label and its (step, value) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Several runs' curves of one quantity in one panel (a colour each, a
/// legend, "step" along x, `y_desc` up on a log axis when `log` and every
/// value is positive, else linear and covering `y_bounds`), `title` above;
/// the picture is 900 × 560.
pub fn overlay(
    path: &Path,
    series: &[Series],
    y_desc: &str,
    y_bounds: Option<(f64, f64)>,
    log: bool,
    title: &str,
) -> Result<()> {
    const COLOURS: [RGBColor; 6] = [TAB_BLUE, TAB_RED, TAB_GREEN, TAB_PURPLE, TAB_ORANGE, TAB_BROWN];
    let steps: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).filter(|s| s.is_finite()).collect();
    if steps.is_empty() {
        return Err(Error::input(format!("cannot draw {}: no points", path.display())));
    }
    let (lo, hi) = steps.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &s| (a.min(s), b.max(s)));
    let pad = if hi > lo { 0.02 * (hi - lo) } else { 1.0 };
    let lines =
        series.iter().enumerate().map(|(i, s)| line(&s.label, COLOURS[i % COLOURS.len()], s.points.clone())).collect();
    let p = Panel { title: String::new(), y_desc: y_desc.into(), lines, y_bounds, log };
    render(path, (900, 560), |root| {
        let area = title_band(root, title, 1)?;
        draw_panel(&area, &p, (lo - pad, hi + pad))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn temp_path(name: &str) -> std::path::PathBuf {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        std::env::temp_dir().join(format!("lockstep-plot-{}-{nanos}-{name}", std::process::id()))
    }

    /// The PNG at `path` as (width, height, RGB bytes).
    fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
        let file = std::fs::File::open(path).unwrap();
        let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    /// Pixels of rows `rows` darker than mid grey (text, in a title band).
    fn dark_pixels(width: u32, rgb: &[u8], rows: std::ops::Range<u32>) -> usize {
        let row = width as usize * 3;
        rgb[rows.start as usize * row..rows.end as usize * row]
            .chunks_exact(3)
            .filter(|p| p.iter().all(|&c| c < 100))
            .count()
    }

    fn distinct_colours(rgb: &[u8]) -> usize {
        rgb.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect::<std::collections::HashSet<_>>().len()
    }

    #[test]
    fn image_grid_lays_out_and_scales_images() {
        let shape = crate::nn::Shape::new(1, 2, 3);
        // Two images: all black (-1) and all white (1).
        let imgs: Vec<f32> = [-1.0f32; 6].into_iter().chain([1.0f32; 6]).collect();
        let path = temp_path("grid.png");
        image_grid(&path, &imgs, shape, 2, 2).unwrap();
        assert!(!path.with_extension("png.tmp").exists());
        let (w, h, buf) = decode(&path);
        assert_eq!((w, h), (2 + 2 * (3 * 2 + 2), 2 + 2 * 2 + 2));
        let at = |x: usize, y: usize| buf[(y * w as usize + x) * 3];
        assert_eq!(at(2, 2), 0);
        assert_eq!(at(2 + 8, 2), 255);
        assert_eq!(at(0, 0), 128);
        let _ = std::fs::remove_file(path);
        assert!(image_grid(&temp_path("x.png"), &[0.0; 4], crate::nn::Shape::new(2, 1, 2), 1, 1).is_err());
        // A directory that does not exist: an I/O error (exit code 1).
        let err = image_grid(&temp_path("no-such-dir").join("x.png"), &imgs, shape, 2, 2).unwrap_err();
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn tick_labels_share_their_decimals() {
        let f = linear_ticks(-0.55, 1.05, false);
        assert_eq!([f(&-0.5), f(&0.0), f(&0.5), f(&1.0)], ["−0.5", "0.0", "0.5", "1.0"]);
        let f = linear_ticks(0.0, 8000.0, true);
        assert_eq!([f(&0.0), f(&2000.0)], ["0", "2000"]);
        let f = linear_ticks(0.0, 100_000.0, true);
        assert_eq!([f(&0.0), f(&20_000.0)], ["0k", "20k"]);
        let f = linear_ticks(0.0, 2e-4, false);
        assert_eq!(f(&1e-4), "1e−4");
        assert_eq!(f(&1.5e-4), "1.5e−4");
        assert_eq!([log_tick(&1e-3), log_tick(&1.0), log_tick(&100.0)], ["10⁻³", "10⁰", "10²"]);
        assert_eq!([log_tick(&3e-3), log_tick(&2e11)], ["3×10⁻³", "2×10¹¹"]);
        assert_eq!(log_tick(&3.7e-3), "3.7e−3");
        assert_eq!(log_ticks(9e-4, 0.2), [1e-3, 1e-2, 1e-1]);
        assert_eq!(log_ticks(1e-9, 1e3).len(), 5);
        assert_eq!(log_ticks(1.1e-3, 8e-3), [2e-3, 5e-3]);
        assert_eq!(log_ticks(1.1e-3, 4.5e-3).len(), 3);
        assert_eq!(log_ticks(1.11e-3, 1.12e-3), [1.11e-3, 1.12e-3]);
    }

    #[test]
    fn titles_wrap_at_separators() {
        let width = |s: &str| s.chars().count() as i32;
        assert_eq!(wrap("a · bb · ccc", 100, width), ["a · bb · ccc"]);
        assert_eq!(wrap("a · bb · ccc", 6, width), ["a · bb", "ccc"]);
        assert_eq!(wrap("aaaaaaaa · b", 3, width), ["aaaaaaaa", "b"]);
    }

    #[test]
    fn scatter_with_modes_draws_axes_legend_and_title() {
        let modes: Vec<[f32; 2]> = (0..8)
            .map(|k| {
                let a = std::f32::consts::TAU * k as f32 / 8.0;
                [2.0 * a.cos(), 2.0 * a.sin()]
            })
            .collect();
        let (xr, yr) = scatter_window(&[], &modes);
        assert!((xr.0 + 3.0).abs() < 1e-6 && (xr.1 - 3.0).abs() < 1e-6);
        assert!((yr.0 + 3.0).abs() < 1e-6 && (yr.1 - 3.0).abs() < 1e-6);
        let mut samples = vec![[2.0, 0.0], [100.0, 100.0], [f32::NAN, 0.0], [f32::INFINITY, 1.0]];
        samples.extend((0..500).map(|i| {
            let m = modes[i % 8];
            [m[0] + 0.01 * (i % 7) as f32, m[1] - 0.01 * (i % 5) as f32]
        }));
        let path = temp_path("scatter.png");
        scatter_with_modes(&path, &samples, &modes, 0.06, "a title · step 5 · modes 8/8").unwrap();
        let (w, h, rgb) = decode(&path);
        assert_eq!((w, h), SCATTER_SIZE);
        // The title band holds text, and the picture more than two colours.
        assert!(dark_pixels(w, &rgb, 0..40) > 100, "no title text");
        assert!(distinct_colours(&rgb) > 50);
        // Red crosses for the modes.
        let red = rgb.chunks_exact(3).filter(|p| p[0] > 180 && p[1] < 80 && p[2] < 80).count();
        assert!(red > 8 * 10, "{red} red pixels");
        std::fs::remove_file(&path).unwrap();
        // A single mode, or none at all, still gives a usable window.
        let (xr, _) = scatter_window(&[], &[[5.0, 5.0]]);
        assert_eq!(xr, (4.0, 6.0));
        assert_eq!(scatter_window(&[], &[]), ((-1.0, 1.0), (-1.0, 1.0)));
        scatter_with_modes(&path, &[], &[], f32::NAN, "").unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn equal_aspect_widens_one_axis() {
        let (x, y) = equal_aspect((-1.0, 1.0), (-1.0, 1.0), (400, 200));
        assert_eq!((x, y), ((-2.0, 2.0), (-1.0, 1.0)));
        let (x, y) = equal_aspect((0.0, 4.0), (0.0, 1.0), (100, 100));
        assert_eq!((x, y), ((0.0, 4.0), (-1.5, 2.5)));
    }

    fn row(step: u64, v: f64) -> serde_json::Value {
        json!({
            "step": step, "value": -1.38 + v, "gen_loss": -0.69, "grad_norm_disc": 0.1 + v, "grad_norm_gen": 0.02,
            "regularizer": 1e-3 * (1.0 + v), "d_accuracy_real": 0.5 + v, "d_accuracy_fake": 0.6,
        })
    }

    #[test]
    fn curves_draw_a_panel_per_metric_and_score() {
        let path = temp_path("curves.png");
        // Step metrics only: four panels, two to a row.
        let rows: Vec<serde_json::Value> = (1..=20).map(|i| row(50 * i, 0.01 * i as f64)).collect();
        curves(&path, &rows, "run · step 1000").unwrap();
        let (w, h, rgb) = decode(&path);
        assert_eq!((w, h), (2 * CURVES_PANEL.0, CURVES_TITLE_HEIGHT + 2 * CURVES_PANEL.1));
        assert!(dark_pixels(w, &rgb, 0..CURVES_TITLE_HEIGHT) > 50, "no title text");
        assert!(distinct_colours(&rgb) > 50);
        // Every score of the table: 4 + 9 panels, three to a row.
        let mut rows = rows;
        for (i, r) in rows.iter_mut().enumerate().filter(|(i, _)| i % 5 == 4) {
            let x = i as f64 / 20.0;
            r["scores"] = json!({
                "fd": 30.0 - x, "kid": 0.02 - 0.01 * x, "kid_std": 0.002, "precision": x, "recall": 0.5,
                "modes": 900.0 * x, "modes_total": 1000, "kl": 1.0 - x, "modes_covered": 7, "high_quality_fraction": x,
                "reverse_kl": 0.1, "dataset": "a description", "fd_ema": 3.0,
            });
        }
        curves(&path, &rows, "run").unwrap();
        let (w, h, _) = decode(&path);
        assert_eq!((w, h), (3 * CURVES_PANEL.0, CURVES_TITLE_HEIGHT + 4 * CURVES_PANEL.1));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn curves_skip_non_finite_values_and_draw_one_row() {
        let path = temp_path("curves-nan.png");
        let mut rows: Vec<serde_json::Value> = (1..=10).map(|i| row(10 * i, 0.01 * i as f64)).collect();
        rows[3]["value"] = json!(f64::NAN); // serde_json writes null
        rows[4]["grad_norm_disc"] = json!("NaN");
        rows[5]["regularizer"] = json!(0.0); // not positive: a linear axis
        rows.push(json!({"step": 200, "value": 1e308, "scores": {"reverse_kl": null, "modes_covered": 3}}));
        curves(&path, &rows, "nan").unwrap();
        curves(&path, &rows[..1], "one row").unwrap();
        let (w, h, rgb) = decode(&path);
        assert_eq!((w, h), (2 * CURVES_PANEL.0, CURVES_TITLE_HEIGHT + 2 * CURVES_PANEL.1));
        assert!(distinct_colours(&rgb) > 20);
        // A row without metrics still draws (empty panels say so).
        curves(&path, &[json!({"step": 7})], "bare").unwrap();
        std::fs::remove_file(&path).unwrap();
        // Nothing to draw: a clear error, and no file.
        let err = curves(&path, &[], "empty").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("no metrics rows"), "{err}");
        assert!(curves(&path, &[json!({"value": 1.0})], "no step").is_err());
        assert!(!path.exists());
    }
}
