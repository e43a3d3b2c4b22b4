//! `lockstep bench`: times training steps (after a warm-up) and prints one JSON line.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

use crate::backend::BackendSpec;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::gan::trainer::{self, TrainState, Trainer};
use crate::telemetry;

pub struct BenchOptions<'a> {
    pub config: &'a Path,
    pub backend: BackendSpec,
    pub steps: u64,
    pub warmup: u64,
    pub workers: usize,
    pub transport: super::train::Transport,
    pub threads: usize,
    pub sets: Vec<String>,
    /// Drive every step from the host even when the backend can run whole steps (one CUDA graph).
    pub host_step: bool,
}

pub fn run(o: &BenchOptions) -> Result<serde_json::Value> {
    if o.workers == 0 {
        return Err(Error::input("--workers 0: give at least 1"));
    }
    if o.steps == 0 {
        return Err(Error::input("--steps must be at least 1"));
    }
    super::set_threads(o.threads)?;
    let mut cfg = Config::load(o.config, &o.sets)?;
    cfg.train.steps = o.steps + o.warmup;
    let setup = trainer::setup(&cfg);
    let (_loopback, workers) = super::train::local_workers(&cfg, o.workers, o.backend, o.transport)?;
    let state = TrainState::init(&cfg, &setup.game);
    let mut t = Trainer::new(cfg.clone(), setup.game, state, workers)?;
    if o.host_step {
        t.set_device_step(false)?;
    }
    for _ in 0..o.warmup {
        t.step()?;
    }
    let start = Instant::now();
    for _ in 0..o.steps {
        t.step()?;
    }
    let secs = start.elapsed().as_secs_f64();
    let sps = o.steps as f64 / secs;
    // Phase times: 200 more steps, each timed part by part (outside the timed loop).
    let profile = t.device_profile(200)?;
    Ok(json!({
        "config": cfg.name,
        "backend": t.backend().name(),
        "device": t.backend().device(),
        "workers": t.workers(),
        "transport": format!("{:?}", o.transport).to_lowercase(),
        "threads": rayon::current_num_threads(),
        "batch": cfg.train.batch,
        "eta": cfg.train.eta,
        "update": cfg.train.update,
        "steps": o.steps,
        "steps_per_second": (sps * 100.0).round() / 100.0,
        "samples_per_second": (sps * cfg.train.batch as f64).round(),
        "step_ms": secs * 1e3 / o.steps as f64,
        "peak_rss_mib": telemetry::peak_rss_mib(),
        // The device step (one CUDA graph per step), when the backend ran whole steps itself.
        "cuda_graph": profile.is_some(),
        "graph_nodes": profile.map(|p| p.graph_nodes),
        "graph_kernels": profile.map(|p| p.graph_kernels),
        "phase_ms": profile.map(|p| json!({"one": p.phase_ms[0], "two": p.phase_ms[1], "optimizer": p.phase_ms[2]})),
        "device_memory_mib": profile.map(|p| p.device_memory_mib),
    }))
}
