//! `lockstep plot`: redraws a run's pictures from its files: curves.png from
//! metrics.jsonl, and the samples picture of its newest checkpoint, drawn
//! as training draws it.

use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::eval;

/// Draws `run_dir/curves.png` from `run_dir/metrics.jsonl`, titled
/// "`name` · step N" with N the last row's step; returns its path.
pub fn curves(run_dir: &Path, name: &str) -> Result<PathBuf> {
    let rows = crate::telemetry::read_metrics(&run_dir.join("metrics.jsonl"))?;
    let title = match rows.iter().rev().find_map(|r| r.get("step")?.as_u64()) {
        Some(step) => format!("{name} · step {step}"),
        None => name.to_string(),
    };
    let path = run_dir.join("curves.png");
    crate::plot::curves(&path, &rows, &title)?;
    Ok(path)
}

/// Redraws the pictures of the run in `run_dir` and returns their paths:
/// curves.png when it has a metrics.jsonl, and `samples/step-NNNNNNN.png`
/// of the checkpoint `checkpoints/latest` names, drawn as training draws
/// it (a mixture's samples as a scatter plot titled with their scores,
/// images as a grid).
///
/// # Errors
/// An input error naming `run_dir` when it holds neither a metrics.jsonl
/// nor a checkpoint, or when its checkpoint or dataset cannot be read.
pub fn run(run_dir: &Path) -> Result<Vec<PathBuf>> {
    if !run_dir.is_dir() {
        return Err(Error::input(format!(
            "--run {}: no such directory; give the --out directory of a `lockstep train` run",
            run_dir.display()
        )));
    }
    let metrics = run_dir.join("metrics.jsonl");
    let ck = checkpoint::latest(run_dir);
    if !metrics.is_file() && ck.is_none() {
        return Err(Error::input(format!(
            "--run {}: not a run directory: it has no metrics.jsonl and no checkpoint (checkpoints/latest)",
            run_dir.display()
        )));
    }
    let loaded = ck.as_deref().map(checkpoint::load).transpose()?;
    let name = match &loaded {
        Some(l) => l.config.name.clone(),
        None => Config::load(&run_dir.join("config.toml"), &[])
            .map(|c| c.name)
            .unwrap_or_else(|_| crate::fsutil::file_label(run_dir)),
    };
    let mut written = Vec::new();
    if metrics.is_file() {
        written.push(curves(run_dir, &name)?);
    }
    if let Some(l) = loaded {
        let cfg = &l.config;
        let data = crate::data::open(&cfg.data)?;
        let dir = run_dir.join("samples");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "create", e))?;
        let path = dir.join(format!("step-{:07}.png", l.state.step));
        let judge = eval::judge_for(cfg, data, cfg.log.eval_samples);
        judge.evaluate(&l.game.gen, &l.state.gen, cfg.train.seed, l.state.step, false, Some(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// Draws the spectral abscissa along training of the runs in `runs` (each
/// labelled with its directory's name) into `out`.
///
/// # Errors
/// An input error naming a run without stability rows in its metrics.jsonl.
pub fn stability(runs: &[PathBuf], out: &Path) -> Result<()> {
    let mut series = Vec::new();
    for r in runs {
        let rows = crate::telemetry::read_metrics(&r.join("metrics.jsonl"))?;
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|row| {
                Some((row.get("step")?.as_f64()?, row.get("stability")?.get("spectral_abscissa")?.as_f64()?))
            })
            .collect();
        if points.is_empty() {
            return Err(Error::input(format!(
                "--stability {}: its metrics.jsonl has no stability estimates (train with --set log.stability_every=K)",
                r.display()
            )));
        }
        let label = crate::fsutil::file_label(r);
        series.push(crate::plot::Series { label, points });
    }
    // A log axis when every abscissa is positive (they span decades), else linear through 0.
    crate::plot::overlay(out, &series, "max Re λ", Some((0.0, 0.0)), true, "Jacobian spectral abscissa along training")
}
