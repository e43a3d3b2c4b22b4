//! `lockstep eval` (scores a checkpoint) and `lockstep sample` (draws samples
//! to a picture, a CSV file or a NumPy array).

use std::path::Path;

use serde_json::json;

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::eval;

/// Scores of a checkpoint's generator on `n` samples (default: the config's eval_samples).
pub fn run_eval(ckpt: &Path, n: Option<usize>) -> Result<serde_json::Value> {
    let started = std::time::Instant::now();
    let l = checkpoint::load(ckpt)?;
    let n = n.unwrap_or(l.config.log.eval_samples);
    if n == 0 {
        return Err(Error::input("--n must be at least 1"));
    }
    let data = crate::data::open(&l.config.data)?;
    let judge = eval::judge_for(&l.config, data, n);
    let sc =
        judge.evaluate(&l.game.gen, &l.state.gen, l.config.train.seed, l.state.step, true, None)?.unwrap_or_default();
    let mut v = json!({ "checkpoint": ckpt.display().to_string(), "config": l.config.name, "step": l.state.step });
    for (k, x) in sc {
        v[k] = x;
    }
    v["seconds"] = json!(started.elapsed().as_secs_f64());
    Ok(v)
}

/// The floor of the image scores: the training split of `config`'s data
/// (default: fashion-mnist from its default folder) scored against its test split.
pub fn run_floor(config: Option<&Path>, n: Option<usize>) -> Result<serde_json::Value> {
    let started = std::time::Instant::now();
    let data = match config {
        Some(p) => crate::config::Config::load(p, &[])?.data,
        None => crate::config::DataConfig { kind: crate::config::DataKind::FashionMnist, ..Default::default() },
    };
    let mut v = json!({ "floor": true, "data": data.kind.name() });
    let n = n.unwrap_or(eval::images::REAL_SAMPLES);
    for (k, x) in eval::images::floor(&data, n)? {
        v[k] = x;
    }
    v["seconds"] = json!(started.elapsed().as_secs_f64());
    Ok(v)
}

/// Draws `n` samples from a checkpoint's generator into `out`: `.png` (a
/// scatter plot of 2-D points, or a grid of images), `.csv` (2-D points) or
/// `.npy` (float32 `[n, C, H, W]`, or `[n, features]` for flat samples).
pub fn run_sample(ckpt: &Path, n: usize, out: &Path, seed: Option<u64>) -> Result<()> {
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if !["png", "csv", "npy"].contains(&ext.as_str()) {
        return Err(Error::input(format!("--out {}: expected a .png, .csv or .npy file", out.display())));
    }
    if n == 0 {
        return Err(Error::input("--n must be at least 1"));
    }
    let l = checkpoint::load(ckpt)?;
    let gen = &l.game.gen;
    let shape = gen.output_shape();
    let points = l.config.data.kind.is_mixture();
    if ext == "csv" && !points {
        return Err(Error::input(format!(
            "--out {}: CSV holds 2-D points, but this generator makes {shape} samples; use .png or .npy",
            out.display()
        )));
    }
    let samples = eval::generate(gen, &l.state.gen, n, seed.unwrap_or(l.config.train.seed), l.state.step);
    match ext.as_str() {
        "npy" if shape.is_flat() => crate::npy::write_f32(out, &samples, &[n, shape.c]),
        "npy" => crate::npy::write_f32(out, &samples, &[n, shape.c, shape.h, shape.w]),
        "png" => {
            let name = crate::fsutil::file_label(ckpt);
            eval::draw(&l.config.data, &samples, shape, out, &format!("samples of {name}, step {}", l.state.step))
        }
        _ => {
            let mut s = String::from("x,y\n");
            for p in samples.chunks_exact(2) {
                s.push_str(&format!("{},{}\n", p[0], p[1]));
            }
            crate::fsutil::write_atomic(out, s.as_bytes())
        }
    }
}
