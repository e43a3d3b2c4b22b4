//! `lockstep stability`: the game Jacobian's leading eigenvalues at a
//! checkpoint, at its eta and at a compared one, on the same point and
//! minibatch (one JSON line each), and optionally their picture.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::gan::trainer;
use crate::stability::{self, Estimate, Options};

pub struct StabilityOptions {
    pub checkpoint: PathBuf,
    /// The eta of the first estimate (default: the run's).
    pub eta: Option<f64>,
    /// The eta of the second (None: no second).
    pub compare_eta: Option<f64>,
    /// The minibatch size (default: the run's train.batch).
    pub batch: Option<usize>,
    pub options: Options,
    /// A picture of the eigenvalues in the complex plane.
    pub plot: Option<PathBuf>,
    pub quiet: bool,
}

/// The "none" of `--compare-eta none`, or a number.
pub fn parse_compare(s: &str) -> std::result::Result<Option<f64>, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    s.parse::<f64>().map(Some).map_err(|_| format!("expected a number or `none`, got `{s}`"))
}

/// The estimates at `eta` then at `compare_eta` (when it differs).
pub fn run(o: &StabilityOptions) -> Result<Vec<Estimate>> {
    if o.options.k == 0 {
        return Err(Error::input("--k must be at least 1"));
    }
    if o.options.tol.is_nan() || o.options.tol <= 0.0 {
        return Err(Error::input(format!("--tol {}: expected a number > 0", o.options.tol)));
    }
    if let Some(p) = &o.plot {
        if p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()) != Some("png".into()) {
            return Err(Error::input(format!("--plot {}: expected a .png file", p.display())));
        }
    }
    let l = checkpoint::load(&o.checkpoint)?;
    let cfg = &l.config;
    let mut setup = trainer::setup(cfg)?;
    if let Some(n) = o.batch {
        let chunk = cfg.train.chunk.min(n);
        if n == 0 || n % chunk != 0 || n > crate::config::MAX_BATCH {
            return Err(Error::input(format!(
                "--batch {n}: expected a multiple of the run's train.chunk ({}), or at most it, and at most {}",
                cfg.train.chunk,
                crate::config::MAX_BATCH
            )));
        }
        setup.chunk = chunk;
        setup.chunks = n / chunk;
    }
    let eta = o.eta.unwrap_or(cfg.train.eta);
    let mut etas = vec![eta];
    if let Some(c) = o.compare_eta.filter(|&c| c != eta) {
        etas.push(c);
    }
    let lr = stability::map_lr(cfg);
    let n = l.game.gen.n_params + l.game.disc.n_params;
    let mut out = Vec::new();
    for &e in &etas {
        let bar = if o.quiet { ProgressBar::hidden() } else { ProgressBar::new(o.options.max_matvecs as u64) };
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} products J·u  {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("eta {e}, {n} parameters, batch {}", setup.chunk * setup.chunks));
        // Without a terminal, a line every 30 s instead of the bar.
        let plain = !o.quiet && bar.is_hidden();
        let started = std::time::Instant::now();
        let mut last_line = 0u64;
        let mut tick = |c: usize| {
            bar.set_position(c as u64);
            let secs = started.elapsed().as_secs();
            if plain && secs >= last_line + 30 {
                last_line = secs;
                eprintln!(
                    "lockstep: stability at eta {e}: {c} products J·u in {secs} s (at most {})",
                    o.options.max_matvecs
                );
            }
        };
        let est =
            stability::estimate(&setup, &l.state.gen, &l.state.disc, l.state.step, e, lr, &o.options, true, &mut tick);
        bar.finish_and_clear();
        out.push(est?);
    }
    if let Some(p) = &o.plot {
        draw(p, &out, &o.checkpoint)?;
    }
    Ok(out)
}

/// The eigenvalues of `estimates` in the complex plane.
pub fn draw(path: &Path, estimates: &[Estimate], checkpoint: &Path) -> Result<()> {
    let sets: Vec<crate::plot::EigenSet> = estimates
        .iter()
        .map(|e| crate::plot::EigenSet {
            label: format!("eta {} (max Re λ {:.3e})", e.eta, e.spectral_abscissa),
            rightmost: &e.rightmost,
            largest: &e.largest,
        })
        .collect();
    let name = crate::fsutil::file_label(checkpoint);
    let step = estimates.first().map_or(0, |e| e.step);
    crate::plot::spectrum(path, &sets, &format!("Jacobian eigenvalues of the game at {name} (step {step})"))
}
