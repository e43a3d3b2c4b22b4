//! `lockstep bench`: times training steps (after a warm-up) and prints one JSON line.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

use crate::backend::{self, BackendChoice};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::gan::trainer::{self, TrainState, Trainer};
use crate::telemetry;

pub struct BenchOptions<'a> {
    pub config: &'a Path,
    pub backend: BackendChoice,
    pub steps: u64,
    pub warmup: u64,
    pub workers: usize,
    pub threads: usize,
    pub sets: Vec<String>,
}

pub fn run(o: &BenchOptions) -> Result<serde_json::Value> {
    if o.workers != 1 {
        return Err(Error::input(format!(
            "--workers {}: this build benchmarks one worker; use --workers 1",
            o.workers
        )));
    }
    if o.steps == 0 {
        return Err(Error::input("--steps must be at least 1"));
    }
    super::set_threads(o.threads)?;
    let mut cfg = Config::load(o.config, &o.sets)?;
    cfg.train.steps = o.steps + o.warmup;
    let setup = trainer::setup(&cfg);
    let workers = (0..o.workers).map(|_| backend::create(o.backend, &setup)).collect::<Result<Vec<_>>>()?;
    let state = TrainState::init(&cfg, &setup.game);
    let mut t = Trainer::new(cfg.clone(), setup.game, state, workers)?;
    for _ in 0..o.warmup {
        t.step()?;
    }
    let start = Instant::now();
    for _ in 0..o.steps {
        t.step()?;
    }
    let secs = start.elapsed().as_secs_f64();
    let sps = o.steps as f64 / secs;
    Ok(json!({
        "config": cfg.name,
        "backend": t.backend().name(),
        "device": t.backend().device(),
        "workers": t.workers(),
        "threads": rayon::current_num_threads(),
        "batch": cfg.train.batch,
        "eta": cfg.train.eta,
        "update": cfg.train.update,
        "steps": o.steps,
        "steps_per_second": (sps * 100.0).round() / 100.0,
        "samples_per_second": (sps * cfg.train.batch as f64).round(),
        "step_ms": secs * 1e3 / o.steps as f64,
        "peak_rss_mib": telemetry::peak_rss_mib(),
    }))
}
