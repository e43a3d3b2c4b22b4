//! `lockstep bench`: times training steps (after a warm-up) and prints one JSON line.

use std::collections::HashMap;
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
    /// Report the phase breakdown and the bytes on the wire (`breakdown`).
    pub breakdown: bool,
}

pub fn run(o: &BenchOptions) -> Result<serde_json::Value> {
    if o.workers == 0 {
        return Err(Error::input("--workers 0: give at least 1"));
    }
    if o.steps == 0 {
        return Err(Error::input("--steps must be at least 1"));
    }
    super::set_threads(o.threads)?;
    // Installed before the trainer and the workers register their series.
    let recorder = if o.breakdown { Some(install_recorder()?) } else { None };
    let mut cfg = Config::load(o.config, &o.sets)?;
    cfg.train.steps = o.steps + o.warmup;
    let game = trainer::game_of(&cfg)?;
    let spec = super::train::worker_spec(o.backend, o.workers, o.threads);
    let (_loopback, workers) = super::train::local_workers(&cfg, o.workers, spec, o.transport)?;
    let state = TrainState::init(&cfg, &game);
    let mut t = Trainer::new(cfg.clone(), game, state, workers)?;
    if o.host_step {
        t.set_device_step(false)?;
    }
    // bench never reads the state: a worker running whole steps may always get the next one ahead.
    t.set_sync_points(Box::new(|_| false));
    for _ in 0..o.warmup {
        t.step()?;
    }
    let before = recorder.as_ref().map(|r| scrape(&r.render()));
    let (start, cpu) = (Instant::now(), telemetry::thread_cpu_seconds());
    for _ in 0..o.steps {
        t.step()?;
    }
    let secs = start.elapsed().as_secs_f64();
    // The trainer's thread: the coordinator's own work (with gRPC workers, its
    // service too, which that thread drives), apart from the workers' threads.
    let cpu_ms = (telemetry::thread_cpu_seconds() - cpu) * 1e3 / o.steps as f64;
    let breakdown = match (&recorder, &before) {
        (Some(r), Some(b)) => Some(breakdown(b, &scrape(&r.render()), o.steps)),
        _ => None,
    };
    let sps = o.steps as f64 / secs;
    let flops = t.game.step_flops().total;
    // Phase times: 200 more steps, each timed part by part (outside the timed loop).
    let profile = t.device_profile(200)?;
    // A captured CUDA graph (a remote worker's whole step reports only phase times).
    let graph = profile.filter(|p| p.graph_nodes > 0);
    Ok(json!({
        "config": cfg.name,
        "backend": t.backend().name(),
        "device": t.backend().device(),
        "workers": t.workers(),
        "transport": format!("{:?}", o.transport).to_lowercase(),
        "threads": rayon::current_num_threads(),
        "batch": cfg.train.batch,
        "params": t.game.gen.n_params + t.game.disc.n_params,
        "eta": cfg.train.eta,
        "update": cfg.train.update,
        "steps": o.steps,
        "steps_per_second": (sps * 100.0).round() / 100.0,
        "samples_per_second": (sps * cfg.train.batch as f64).round(),
        "step_ms": secs * 1e3 / o.steps as f64,
        "coordinator_cpu_ms": (cpu_ms * 1000.0).round() / 1000.0,
        "worker_threads": if spec.threads > 0 { spec.threads } else { rayon::current_num_threads() },
        // The step's multiply-adds (Game::step_flops, docs/perf.md) per second.
        "gflop_per_step": (flops * 1e-9 * 1000.0).round() / 1000.0,
        "gflop_per_second": (flops * sps * 1e-9 * 10.0).round() / 10.0,
        "peak_rss_mib": telemetry::peak_rss_mib(),
        // Whole steps run by the only worker itself (`DeviceStep`): one CUDA
        // graph per step, or a remote worker's own step over gRPC.
        "whole_steps": t.uses_device_step(),
        "cuda_graph": graph.is_some(),
        "graph_nodes": graph.map(|p| p.graph_nodes),
        "graph_kernels": graph.map(|p| p.graph_kernels),
        "phase_ms": profile.map(|p| json!({"one": p.phase_ms[0], "two": p.phase_ms[1], "optimizer": p.phase_ms[2]})),
        "device_memory_mib": graph.map(|p| p.device_memory_mib),
        "breakdown": breakdown,
    }))
}

/// A Prometheus recorder installed as the global one, read back by `render`.
fn install_recorder() -> Result<metrics_exporter_prometheus::PrometheusHandle> {
    let rec = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = rec.handle();
    metrics::set_global_recorder(rec)
        .map_err(|e| Error::runtime(format!("cannot install the metrics recorder: {e}")))?;
    Ok(handle)
}

/// The value of every series in a Prometheus text rendering, by its name and labels.
fn scrape(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Where the time of the `steps` steps between two scrapes went, in ms per
/// step, and the bytes per step on the wire (sent and received by the
/// coordinator).  `comm_ms` is a phase's wall time less the mean compute
/// time the workers reported for it: messages, encoding, waiting.
fn breakdown(before: &HashMap<String, f64>, after: &HashMap<String, f64>, steps: u64) -> serde_json::Value {
    let sum = |name: &str, labels: &[&str]| -> f64 {
        let total = |m: &HashMap<String, f64>| -> f64 {
            m.iter()
                .filter(|(k, _)| {
                    k.split_once('{').map_or(k.as_str(), |(n, _)| n) == name && labels.iter().all(|l| k.contains(l))
                })
                .map(|(_, v)| v)
                .sum()
        };
        total(after) - total(before)
    };
    use crate::telemetry::names as n;
    let per_step = |x: f64| (x * 1e3 / steps as f64 * 1000.0).round() / 1000.0;
    let duration = format!("{}_sum", n::STEP_DURATION);
    let phase = |p: &str| sum(&duration, &[&format!("phase=\"{p}\"")]);
    let compute = |p: &str| {
        let (s, c) = (
            sum(&format!("{}_sum", n::WORKER_COMPUTE), &[&format!("phase=\"{p}\"")]),
            sum(&format!("{}_count", n::WORKER_COMPUTE), &[&format!("phase=\"{p}\"")]),
        );
        // Mean per worker and phase, times the phases run per step.
        let runs = sum(&format!("{}_count", n::STEP_DURATION), &[&format!("phase=\"{p}\"")]);
        if c > 0.0 {
            s / c * runs
        } else {
            0.0
        }
    };
    let (one, two, opt, step) = (phase("one"), phase("two"), phase("optimizer"), phase("step"));
    let (c1, c2) = (compute("one"), compute("two"));
    let bytes = |dir: &str| sum(n::COMM_BYTES, &[&format!("direction=\"{dir}\"")]) / steps as f64;
    json!({
        "step_ms": per_step(step),
        "phase_one_ms": per_step(one),
        "phase_one_compute_ms": per_step(c1),
        "phase_one_comm_ms": per_step(one - c1),
        "phase_two_ms": per_step(two),
        "phase_two_compute_ms": per_step(c2),
        "phase_two_comm_ms": per_step(two - c2),
        "optimizer_ms": per_step(opt),
        "other_ms": per_step(step - one - two - opt),
        "bytes_sent_per_step": bytes("sent").round(),
        "bytes_received_per_step": bytes("received").round(),
        "fixed_point_retries": sum(n::FIXED_POINT_RETRIES, &[]),
    })
}
