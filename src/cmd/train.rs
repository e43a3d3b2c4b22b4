//! `lockstep train`: local mode.  Resolves the config and the run directory,
//! trains with a progress bar, and writes metrics, sample plots, training
//! curves (curves.png, redrawn after each evaluation), checkpoints and
//! summary.json as it goes; `--resume` continues from the newest
//! checkpoint and ends bitwise where an uninterrupted run would.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::backend::{self, BackendChoice, BackendSpec};
use crate::checkpoint;
use crate::config::Config;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval;
use crate::gan::trainer::{self, StepReport, TrainState, Trainer};
use crate::telemetry::{self, MetricsLog};

#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The config file (optional with --resume: the checkpoint holds one).
    pub config: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub steps: Option<u64>,
    pub seed: Option<u64>,
    pub sets: Vec<String>,
    pub resume: bool,
    pub backend: BackendSpec,
    pub workers: usize,
    pub transport: Transport,
    pub threads: usize,
    /// No progress bar or progress lines.
    pub quiet: bool,
}

/// How the trainer reaches its workers in local mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Direct calls (no sockets).
    Inproc,
    /// gRPC over loopback: the cluster's code path.
    Grpc,
}

impl std::str::FromStr for Transport {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "inproc" => Ok(Transport::Inproc),
            "grpc" => Ok(Transport::Grpc),
            _ => Err(Error::input(format!("--transport {s}: expected inproc or grpc"))),
        }
    }
}

/// The loopback cluster of a `--transport grpc` run (kept alive as long as
/// its workers) and the workers.
pub type LocalWorkers = (Option<crate::dist::local::Loopback>, Vec<Box<dyn crate::backend::Backend>>);

/// The backend of each of `workers` in-process workers when the run asks
/// for `threads` threads: with several, each its own pool of that many (they
/// would share one otherwise, and `--workers 2 --threads 1` would give both
/// one thread together).
pub fn worker_spec(mut spec: BackendSpec, workers: usize, threads: usize) -> BackendSpec {
    if workers > 1 {
        spec.threads = threads;
    }
    spec
}

/// The workers of a local run.
pub fn local_workers(cfg: &Config, n: usize, choice: BackendSpec, transport: Transport) -> Result<LocalWorkers> {
    match transport {
        Transport::Inproc => {
            let setup = trainer::setup(cfg)?;
            Ok((None, (0..n).map(|_| backend::create(choice, &setup)).collect::<Result<Vec<_>>>()?))
        }
        Transport::Grpc => {
            let (lb, w) = crate::dist::local::start(cfg, n, choice)?;
            Ok((Some(lb), w))
        }
    }
}

/// The run's final figures, as written to summary.json.
pub type Summary = serde_json::Value;

/// `--steps` and `--seed` are shorthands for `--set train.steps=` and `train.seed=`.
fn overrides(o: &TrainOptions) -> Vec<String> {
    let mut s = o.sets.clone();
    if let Some(n) = o.steps {
        s.push(format!("train.steps={n}"));
    }
    if let Some(n) = o.seed {
        s.push(format!("train.seed={n}"));
    }
    s
}

/// The newest `runs/<name>-*` directory holding a checkpoint.
fn newest_run(name: &str) -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("runs")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{name}-"))))
        .filter(|p| checkpoint::latest(p).is_some())
        .collect();
    v.sort();
    v.pop()
}

/// The keys a resumed run may change (the length and the logging).
fn same_game(a: &Config, b: &Config) -> bool {
    let strip = |c: &Config| {
        let mut c = c.clone();
        c.train.steps = 0;
        c.log = Default::default();
        c
    };
    strip(a) == strip(b)
}

/// Local mode: prepare the run, start its workers, train.
pub fn run(o: &TrainOptions) -> Result<Summary> {
    if o.workers == 0 {
        return Err(Error::input("--workers 0: give at least 1"));
    }
    super::set_threads(o.threads)?;
    // A GPU that cannot be used is refused before the run directory exists
    // (`auto` without one falls back to the CPU later, saying so).
    if o.backend.choice == BackendChoice::Cuda || backend::cuda::unavailable().is_none() {
        backend::describe(o.backend)?;
    }
    let p = prepare(o)?;
    let spec = worker_spec(o.backend, o.workers, o.threads);
    let (_loopback, workers) = local_workers(&p.cfg, o.workers, spec, o.transport)?;
    train_on(p, workers, None, o.quiet)
}

/// A run ready to train: its config, its directory (created, with
/// config.toml written) and, when resumed, the state to continue from.
pub struct Prepared {
    pub cfg: Config,
    pub run_dir: PathBuf,
    state: Option<TrainState>,
    /// The dataset, opened and checked against the networks.
    pub data: Arc<dyn Dataset>,
}

/// Resolves the config and the run directory (`--resume`: the newest
/// checkpoint's).  Checks everything before writing anything.
pub fn prepare(o: &TrainOptions) -> Result<Prepared> {
    let sets = overrides(o);
    let given = match &o.config {
        Some(p) => Some(Config::load(p, &sets)?),
        None if o.resume => None,
        None => return Err(Error::input("no --config given; e.g. --config configs/mog-ring.toml")),
    };

    let (cfg, run_dir, state) = if o.resume {
        let run_dir = match (&o.out, &given) {
            (Some(d), _) => d.clone(),
            (None, Some(c)) => newest_run(&c.name).ok_or_else(|| {
                Error::input(format!(
                    "--resume: no run of `{}` with a checkpoint under runs/; give --out RUN_DIR",
                    c.name
                ))
            })?,
            (None, None) => return Err(Error::input("--resume needs --out RUN_DIR or --config")),
        };
        let (ck, loaded) = checkpoint::load_newest(&run_dir, |_, why| {
            eprintln!("lockstep: --resume: skipping a checkpoint: {why}");
        })?;
        let mut cfg = loaded.config;
        // The checkpoint's game, with this invocation's length and logging.
        let wanted = match given {
            Some(g) => {
                if !same_game(&g, &cfg) {
                    return Err(Error::input(format!(
                        "--resume: the config differs from the one {} was trained with (only train.steps and [log] may change); drop --config to use the checkpoint's",
                        ck.display()
                    )));
                }
                g
            }
            None => Config::from_toml_str(&cfg.to_toml(), "the checkpoint's config", &sets)?,
        };
        cfg.train.steps = wanted.train.steps;
        cfg.log = wanted.log;
        if !o.quiet {
            eprintln!("lockstep: resuming {} from step {} ({})", run_dir.display(), loaded.state.step, ck.display());
        }
        (cfg, run_dir, Some(loaded.state))
    } else {
        let cfg = given.expect("config given");
        let run_dir = o
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}", cfg.name, telemetry::timestamp())));
        if checkpoint::latest(&run_dir).is_some() {
            return Err(Error::input(format!(
                "{} already holds a run with checkpoints; add --resume to continue it, or choose another --out",
                run_dir.display()
            )));
        }
        (cfg, run_dir, None)
    };

    if let Some(st) = &state {
        if st.step > cfg.train.steps {
            return Err(Error::input(format!(
                "--resume: the checkpoint is at step {} but train.steps is {}; pass a larger --steps",
                st.step, cfg.train.steps
            )));
        }
    }
    // The data and both networks' shapes are checked before anything is written.
    let data = crate::data::open(&cfg.data)?;
    trainer::game(&cfg, data.shape()).map_err(|e| {
        let origin = o.config.as_ref().map_or("the checkpoint's config".into(), |p| p.display().to_string());
        Error::input(format!("{origin}: {e}"))
    })?;
    for d in [run_dir.clone(), run_dir.join("samples"), run_dir.join("checkpoints")] {
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, "create", e))?;
    }
    crate::fsutil::write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    Ok(Prepared { cfg, run_dir, state, data })
}

/// Trains a prepared run on `workers` to its last step.
pub fn train_on(
    p: Prepared,
    workers: Vec<Box<dyn crate::backend::Backend>>,
    joiner: Option<trainer::Joiner>,
    quiet: bool,
) -> Result<Summary> {
    let Prepared { cfg, run_dir, state, data } = p;
    let game = trainer::game(&cfg, data.shape())?;
    let state = state.unwrap_or_else(|| TrainState::init(&cfg, &game));
    let mut metrics = MetricsLog::open(&run_dir.join("metrics.jsonl"), state.step)?;
    let log = cfg.log.clone();
    let total = cfg.train.steps;
    let mut t = Trainer::new(cfg, game, state, workers)?;
    if let Some(j) = joiner {
        t.set_joiner(j);
    }
    // Where train_loop syncs: evaluations, sample plots, checkpoints, the end.
    let at = move |step: u64, every: u64| step == total || (every > 0 && step % every == 0);
    t.set_sync_points(Box::new(move |b| {
        at(b, log.eval_every) || at(b, log.sample_every) || at(b, log.checkpoint_every) || at(b, log.stability_every)
    }));
    train_loop(&mut t, &run_dir, &mut metrics, data, quiet)
}

fn train_loop(
    t: &mut Trainer,
    run_dir: &Path,
    metrics: &mut MetricsLog,
    data: Arc<dyn Dataset>,
    quiet: bool,
) -> Result<Summary> {
    let cfg = t.cfg.clone();
    let total = cfg.train.steps;
    let start_step = t.state.step;
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}  {rate}  eta {eta}  {msg}")
            .expect("valid template")
            .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} steps/s", s.per_sec());
            })
            .progress_chars("=> "),
    );
    bar.set_position(start_step);
    let plain = !quiet && bar.is_hidden();
    let started = Instant::now();
    let mut last_scores = None;
    let mut last_picture: Option<PathBuf> = None;
    let (mut curves_png, mut curves_at) = (None, None);
    let at = |step: u64, every: u64| step == total || (every > 0 && step % every == 0);
    let judge = eval::judge_for(&cfg, data.clone(), cfg.log.eval_samples);
    judge.start(&run_dir.join("samples"), cfg.train.seed)?;
    let mut scores_msg = String::new();
    let checkpoint_seconds = metrics::histogram!(telemetry::names::CHECKPOINT_DURATION);
    let mut live = match cfg.log.stability_every {
        0 => None,
        _ => {
            let setup = trainer::setup_with(&cfg, data.clone())?;
            let lr = crate::stability::map_lr(&cfg);
            Some(crate::stability::live::Live::start(setup, cfg.train.eta, lr, crate::stability::live::options()))
        }
    };
    let mut stability_msg = String::new();
    let stability_due = |step: u64| cfg.log.stability_every > 0 && step % cfg.log.stability_every == 0 && step < total;

    while t.state.step < total {
        let rep = t.step()?;
        let step = t.state.step;
        bar.set_position(step);
        let elapsed = started.elapsed().as_secs_f64();
        let sps = (step - start_step) as f64 / elapsed.max(1e-9);
        let (log_now, eval_now, plot_now) =
            (at(step, cfg.log.every), at(step, cfg.log.eval_every), at(step, cfg.log.sample_every));
        let mut line = (log_now || eval_now).then(|| report_json(&rep, step, t.state.skipped, sps, elapsed));
        if eval_now || plot_now || at(step, cfg.log.checkpoint_every) || stability_due(step) {
            t.sync()?;
        }
        if let Some(l) = live.as_mut() {
            if stability_due(step) && !l.offer(step, &t.state.gen, &t.state.disc) && l.skipped == 1 {
                bar.suspend(|| {
                    eprintln!(
                        "lockstep: warning: skipping the stability estimate at step {step}: two are still pending \
                         (raise log.stability_every)"
                    )
                });
            }
            for (s, r) in l.poll() {
                stability_msg = log_stability(metrics, s, r, &bar)?;
            }
        }
        let (gen, p, seed) = (&t.game.gen, &t.state.gen, cfg.train.seed);
        let picture = plot_now.then(|| run_dir.join("samples").join(format!("step-{step:07}.png")));
        let scores = judge.evaluate(gen, p, seed, step, eval_now, picture.as_deref())?;
        last_picture = picture.or(last_picture);
        if let Some(sc) = scores {
            if let Some(l) = line.as_mut() {
                l["scores"] = serde_json::Value::Object(sc.clone());
            }
            scores_msg = judge.headline(&sc);
            if plain {
                eprintln!("lockstep: step {step}/{total}  {sps:.1} steps/s  V {:.4}  {scores_msg}", rep.value);
            }
            last_scores = Some(sc);
        }
        if log_now || eval_now {
            bar.set_message(format!(
                "V {:.4}  D acc {:.2}/{:.2}  {scores_msg}{stability_msg}",
                rep.value, rep.d_accuracy_real, rep.d_accuracy_fake
            ));
        }
        if let Some(l) = line {
            metrics.write(&l)?;
        }
        if eval_now {
            curves_png = redraw_curves(run_dir, &cfg.name, &bar);
            curves_at = Some(step);
        }
        if at(step, cfg.log.checkpoint_every) {
            let t0 = Instant::now();
            checkpoint::save_in_run(run_dir, &cfg, &t.game, &t.state, cfg.log.keep_checkpoints)?;
            checkpoint_seconds.record(t0.elapsed().as_secs_f64());
        }
    }
    // Training ends here; waiting for the last estimate is reported apart.
    let wall = started.elapsed().as_secs_f64();
    // (estimates skipped, seconds waited for the last one)
    let mut stability_end = None;
    if let Some(mut l) = live.take() {
        let t0 = Instant::now();
        let last = t.state.step == total;
        if last {
            t.sync()?;
            bar.set_message(format!("waiting for the stability estimate at step {total}"));
        }
        let final_point = last.then_some((total, t.state.gen.as_slice(), t.state.disc.as_slice()));
        for (s, r) in l.finish(final_point) {
            log_stability(metrics, s, r, &bar)?;
        }
        stability_end = Some((l.skipped, t0.elapsed().as_secs_f64()));
        curves_at = None;
    }
    if curves_at != Some(total) {
        curves_png = redraw_curves(run_dir, &cfg.name, &bar);
    }
    bar.finish_and_clear();
    t.sync()?;
    let steps_run = total - start_step;
    let mut summary = json!({
        "config": cfg.name,
        "steps": total,
        "steps_this_run": steps_run,
        "workers": t.workers(),
        "backend": t.backend().name(),
        "device": t.backend().device(),
        "wall_seconds": wall,
        "steps_per_second": steps_run as f64 / wall.max(1e-9),
        "skipped_steps": t.state.skipped,
        "run_dir": run_dir.display().to_string(),
        "dataset": data.describe(),
        "dataset_digest": data.digest(),
        "sample_shape": [data.shape().c, data.shape().h, data.shape().w],
    });
    if let Some(p) = last_picture {
        summary["samples_png"] = json!(p.display().to_string());
    }
    if let Some(p) = curves_png {
        summary["curves_png"] = json!(p.display().to_string());
    }
    let sc = match last_scores {
        Some(s) => s,
        None => judge.evaluate(&t.game.gen, &t.state.gen, cfg.train.seed, total, true, None)?.unwrap_or_default(),
    };
    for (k, v) in sc {
        summary[k] = v;
    }
    if let Some(m) = telemetry::peak_rss_mib() {
        summary["peak_rss_mib"] = json!(m);
    }
    if let Some((skipped, waited)) = stability_end {
        summary["stability_estimates_skipped"] = json!(skipped);
        summary["stability_final_wait_seconds"] = json!(waited);
    }
    let text = serde_json::to_string_pretty(&summary).expect("json");
    crate::fsutil::write_atomic(&run_dir.join("summary.json"), format!("{text}\n").as_bytes())?;
    Ok(summary)
}

/// Writes a finished stability estimate to metrics.jsonl and the gauges
/// (a failed one is a warning line); returns the progress bar's note.
fn log_stability(
    metrics: &mut MetricsLog,
    step: u64,
    r: Result<crate::stability::Estimate>,
    bar: &ProgressBar,
) -> Result<String> {
    match r {
        Ok(e) => {
            metrics::gauge!(telemetry::names::JACOBIAN_ABSCISSA).set(e.spectral_abscissa);
            metrics::gauge!(telemetry::names::JACOBIAN_RADIUS).set(e.discrete_radius);
            metrics.write(&json!({ "step": step, "stability": e }))?;
            Ok(format!("  max Re λ {:.3e} (step {step})", e.spectral_abscissa))
        }
        Err(e) => {
            bar.suspend(|| eprintln!("lockstep: warning: no stability estimate at step {step}: {e}"));
            Ok(String::new())
        }
    }
}

/// Redraws the run's curves.png from its metrics.jsonl (the path, or None
/// after printing why not): a picture that cannot be drawn is a warning,
/// never the end of a run.
fn redraw_curves(run_dir: &Path, name: &str, bar: &ProgressBar) -> Option<PathBuf> {
    match super::plot::curves(run_dir, name) {
        Ok(p) => Some(p),
        Err(e) => {
            bar.suspend(|| eprintln!("lockstep: warning: cannot draw curves.png: {e}"));
            None
        }
    }
}

fn report_json(r: &StepReport, step: u64, skipped: u64, sps: f64, elapsed: f64) -> serde_json::Value {
    json!({
        "step": step,
        "value": r.value,
        "gen_loss": r.gen_loss,
        "grad_norm_disc": r.grad_norm_disc,
        "grad_norm_gen": r.grad_norm_gen,
        "regularizer": r.regularizer,
        "d_accuracy_real": r.d_accuracy_real,
        "d_accuracy_fake": r.d_accuracy_fake,
        "skipped_steps": skipped,
        "steps_per_second": sps,
        "wall_seconds": elapsed,
    })
}
