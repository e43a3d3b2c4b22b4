//! `lockstep eval` (scores a checkpoint) and `lockstep sample` (draws samples
//! to a PNG plot or a CSV file).

use std::path::Path;

use serde_json::json;

use crate::checkpoint;
use crate::data::Mixture;
use crate::error::{Error, Result};
use crate::eval;

/// Scores of a checkpoint's generator on `n` samples (default: the config's eval_samples).
pub fn run_eval(ckpt: &Path, n: Option<usize>) -> Result<serde_json::Value> {
    let l = checkpoint::load(ckpt)?;
    let n = n.unwrap_or(l.config.log.eval_samples);
    if n == 0 {
        return Err(Error::input("--n must be at least 1"));
    }
    let samples = eval::generate(&l.game.gen, &l.state.gen, n, l.config.train.seed, l.state.step);
    let sc = eval::score(&Mixture::from_config(&l.config.data), &samples);
    let mut v = json!({ "checkpoint": ckpt.display().to_string(), "config": l.config.name, "step": l.state.step });
    for (k, x) in serde_json::to_value(&sc).expect("scores serialize").as_object().expect("object") {
        v[k] = x.clone();
    }
    Ok(v)
}

/// Draws `n` samples from a checkpoint's generator into `out` (.png or .csv).
pub fn run_sample(ckpt: &Path, n: usize, out: &Path, seed: Option<u64>) -> Result<()> {
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if ext != "png" && ext != "csv" {
        return Err(Error::input(format!("--out {}: expected a .png or .csv file", out.display())));
    }
    if n == 0 {
        return Err(Error::input("--n must be at least 1"));
    }
    let l = checkpoint::load(ckpt)?;
    let samples = eval::generate(&l.game.gen, &l.state.gen, n, seed.unwrap_or(l.config.train.seed), l.state.step);
    if ext == "png" {
        let data = Mixture::from_config(&l.config.data);
        let centres: Vec<[f32; 2]> = data.centres.iter().map(|c| [c[0] as f32, c[1] as f32]).collect();
        crate::plot::scatter_with_modes(out, &samples, &centres, (3.0 * data.std) as f32)
    } else {
        let mut s = String::from("x,y\n");
        for p in &samples {
            s.push_str(&format!("{},{}\n", p[0], p[1]));
        }
        crate::fsutil::write_atomic(out, s.as_bytes())
    }
}
